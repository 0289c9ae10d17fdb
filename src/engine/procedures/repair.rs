//! Finishing or rolling back what a crash interrupted (`kms reconcile --repair`, and the service
//! at each scheduler run). Rotations that had not switched are rolled back (nothing is lost: the
//! old version is still active); everything past the switch, and every destruction, rolls forward.

use serde::Serialize;

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError};
use crate::inventory::Procedure;
use crate::model::{ObjectId, Role, VersionState};

/// What a repair did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairReport {
    pub finished: Vec<String>,
    pub rolled_back: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Procedures another live process is running (left alone).
    pub in_progress: Vec<String>,
}

impl Engine {
    /// Finish or roll back every procedure a crash left running.
    pub fn repair(&self, caller: &Caller) -> Result<RepairReport, EngineError> {
        let running = self.inventory.running_procedures()?;
        if running.is_empty() {
            return Ok(RepairReport::default());
        }
        self.audited(caller, "procedures.repair", None, |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "repair procedures",
            )?;
            let mut report = RepairReport::default();
            for p in &running {
                let what = format!("{} {} ({})", p.kind, p.id, p.step);
                let Some(_owner) = self.lock_procedure(&p.id)? else {
                    report.in_progress.push(what);
                    continue;
                };
                match self.repair_one(caller, p) {
                    Ok(true) => report.finished.push(what),
                    Ok(false) => report.rolled_back.push(what),
                    Err(e) => report.failed.push((what, e.to_string())),
                }
            }
            note.detail = Some(format!(
                "{} finished, {} rolled back, {} failed",
                report.finished.len(),
                report.rolled_back.len(),
                report.failed.len()
            ));
            Ok(report)
        })
    }

    /// Ok(true): finished; Ok(false): rolled back.
    fn repair_one(&self, caller: &Caller, p: &Procedure) -> Result<bool, EngineError> {
        let key = self
            .inventory
            .keys(&Default::default())?
            .into_iter()
            .find(|k| k.id == p.key_id)
            .ok_or_else(|| EngineError::Incomplete(format!("procedure {} names no key", p.id)))?;
        match p.kind.as_str() {
            "rotation" => {
                let new_version = p.version.unwrap_or(0);
                if p.step == "switched" {
                    // Past the switch: only the window-0 destruction may be missing.
                    let old = p.data["old_version"]
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok());
                    let window = p.data["window_secs"].as_u64().unwrap_or(1);
                    let retire = p.data["retire"].as_str().unwrap_or("deactivate");
                    if let Some(old) = old {
                        let state = key.version(old).map(|v| v.state);
                        if window == 0
                            && retire == "deactivate"
                            && state.is_some_and(|s| !s.is_destroyed())
                        {
                            self.destroy_version(
                                caller,
                                &key,
                                old,
                                "rotation, window 0 (repaired)",
                            )?;
                        }
                    }
                    self.inventory.end_procedure(&p.id, "done")?;
                    Ok(true)
                } else {
                    // Destroy what the generation made under the new CKA_ID, on the key token
                    // and on the backup, and remove the pending row.
                    if let Some(oid) = p.data["cka_id"].as_str().and_then(|h| hex::decode(h).ok()) {
                        let oid = ObjectId(oid);
                        let mut names = vec![p.data["token"]
                            .as_str()
                            .unwrap_or(&self.config.key_token)
                            .to_owned()];
                        if let Some(b) = &self.config.backup {
                            names.push(b.token.clone());
                        }
                        for n in names {
                            if n == super::super::CARD_TOKEN {
                                // A card slot: overwrite whatever was generated there.
                                self.wipe_card_slot(
                                    p.data["serial"].as_str().unwrap_or_default(),
                                    &oid,
                                )?;
                                break;
                            }
                            self.hsm.token(&n)?.destroy(&oid)?;
                        }
                    }
                    if key
                        .version(new_version)
                        .is_some_and(|v| v.state == VersionState::Pending)
                    {
                        self.inventory
                            .delete_pending_version(&key.id, new_version)?;
                    }
                    self.inventory.end_procedure(&p.id, "rolled-back")?;
                    // A compromise's replacement cannot be rolled back to "nothing": the
                    // compromised version is out of service, so generate the replacement now.
                    if p.data["retire"].as_str() == Some("compromised") {
                        let fresh = self.inventory.key(&key.name)?;
                        if fresh.current_version().is_none() {
                            self.rotate_inner(
                                caller,
                                &fresh,
                                super::rotation::Retire::AlreadyCompromised,
                                "compromise replacement (repaired)",
                            )?;
                            return Ok(true);
                        }
                    }
                    Ok(false)
                }
            }
            "destroy-version" => {
                let version = p.version.unwrap_or(0);
                let target = p.data["target"]
                    .as_str()
                    .and_then(|t| t.parse::<VersionState>().ok())
                    .unwrap_or(VersionState::Destroyed);
                let mut places = Vec::new();
                for pl in p.data["places"].as_array().cloned().unwrap_or_default() {
                    let oid = pl["cka_id"]
                        .as_str()
                        .and_then(|h| hex::decode(h).ok())
                        .unwrap_or_default();
                    places.push((
                        pl["token"].as_str().unwrap_or_default().to_owned(),
                        pl["serial"].as_str().unwrap_or_default().to_owned(),
                        ObjectId(oid),
                    ));
                }
                let from = key
                    .version(version)
                    .map(|v| v.state)
                    .unwrap_or(VersionState::Destroyed);
                let r = self.destroy_places(&key, version, target, &places)?;
                self.record_destroyed(
                    caller,
                    &key,
                    version,
                    from,
                    &r,
                    "destruction finished by repair",
                )?;
                self.inventory.end_procedure(&p.id, "done")?;
                if target == VersionState::DestroyedCompromised {
                    for c in self.inventory.compromises(&key.id)? {
                        if c.version == version && c.closed_at.is_none() {
                            let entry = self.entry(
                                caller,
                                "key.compromise-closed",
                                Some(&key.name),
                                Some(version),
                                crate::inventory::Outcome::Ok,
                                Some(format!(
                                    "compromise {} of v{version} closed by repair after its destruction finished",
                                    c.id
                                )),
                            );
                            self.inventory
                                .close_compromise(&c.id, &caller.actor, &entry)?;
                        }
                    }
                }
                Ok(true)
            }
            "disposal" => {
                let id = p.data["disposal"].as_str().unwrap_or_default().to_owned();
                if self.inventory.disposal(&id)?.state != "done" {
                    self.execute_disposal(caller, &id)?;
                }
                self.inventory.end_procedure(&p.id, "done")?;
                Ok(true)
            }
            other => Err(EngineError::Incomplete(format!(
                "unknown procedure kind '{other}'"
            ))),
        }
    }
}
