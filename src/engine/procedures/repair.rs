//! Finishing or rolling back what a crash interrupted (`kms reconcile --repair`, and the service
//! at each scheduler run). Rotations that had not switched are rolled back (nothing is lost: the
//! old version is still active); everything past the switch, and every destruction, rolls forward.

use serde::Serialize;

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError, Refusal};
use super::Authority;
use crate::inventory::Procedure;
use crate::model::{Role, VersionState};

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
                // Another procedure of the same key that a live process runs: this one is left
                // alone too (a second row naming that key's versions must not undo its work).
                let mut live_sibling = false;
                for q in running
                    .iter()
                    .filter(|q| q.id != p.id && q.key_id == p.key_id)
                {
                    if self.lock_procedure(&q.id)?.is_none() {
                        live_sibling = true;
                    }
                }
                if live_sibling {
                    report.in_progress.push(what);
                    continue;
                }
                match self.repair_one(caller, p) {
                    Ok(true) => report.finished.push(what),
                    Ok(false) => report.rolled_back.push(what),
                    Err(e) => {
                        // Each failure (a refusal above all) is on the record by itself.
                        let mut entry = self.entry(
                            caller,
                            "procedures.repair-failed",
                            None,
                            p.version,
                            if matches!(e, EngineError::Denied(..)) {
                                crate::inventory::Outcome::Denied
                            } else {
                                crate::inventory::Outcome::Error
                            },
                            Some(format!("{what}: {e}")),
                        );
                        entry.code = Some(e.code().to_owned());
                        if let Err(e2) = self.inventory.append_audit(&entry) {
                            tracing::error!(error = %e2, "could not audit a failed repair");
                        }
                        report.failed.push((what, e.to_string()))
                    }
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
                            // The row only says which version; the version's own tagged row
                            // must show its window over and a newer version in service.
                            self.destroy_version(
                                caller,
                                &key,
                                old,
                                "rotation, window 0 (repaired)",
                                Authority::Rotation,
                            )?;
                        }
                    }
                    self.inventory.end_procedure(&p.id, "done")?;
                    Ok(true)
                } else {
                    // Destroy what the generation made for the pending version (its own row
                    // says where and under which CKA_ID; the procedure row only which version),
                    // and remove the pending row.
                    match key.version(new_version) {
                        Some(v) if v.state == VersionState::Pending => {
                            self.roll_back_rotation(&key.name, &key.id, new_version)?;
                        }
                        Some(v) => {
                            return Err(EngineError::denied(
                                Refusal::InventoryTampered,
                                format!(
                                    "procedure {} says the rotation of '{}' to v{new_version} did not switch, but v{new_version} is {}; nothing was destroyed. The procedure row was changed outside kms: `kms inventory verify`, then investigate",
                                    p.id, key.name, v.state
                                ),
                            ));
                        }
                        // The crash came before the pending row: nothing was generated.
                        None => {}
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
                // The row names the version; its places, its target state and the authority
                // to destroy it come from the version's own rows, re-checked now.
                let version = p.version.ok_or_else(|| {
                    EngineError::Incomplete(format!("procedure {} names no version", p.id))
                })?;
                let v = key.version(version).ok_or_else(|| {
                    EngineError::Incomplete(format!(
                        "procedure {} names v{version} of '{}', which does not exist",
                        p.id, key.name
                    ))
                })?;
                let authority = if matches!(
                    v.state,
                    VersionState::Compromised | VersionState::DestroyedCompromised
                ) {
                    Authority::Compromise
                } else {
                    Authority::Rotation
                };
                self.check_destroy_authority(&key, v, authority)?;
                let target = super::destruction::target_state(v.state);
                let from = v.state;
                let r = self.destroy_places(caller, &key, v, target, authority)?;
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
                let d = self.inventory.disposal(&id)?;
                if d.key_id != key.id {
                    return Err(EngineError::denied(
                        Refusal::InventoryTampered,
                        format!(
                            "procedure {} names disposal {id}, which is of another key; nothing was destroyed",
                            p.id
                        ),
                    ));
                }
                // `execute_disposal` re-proves the disposal's signatures and waiting period.
                if d.state != "done" {
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
