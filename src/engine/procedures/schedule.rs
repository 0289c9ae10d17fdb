//! What is due, and doing it: rotations whose period has passed, deactivated versions whose
//! re-encryption window has ended, approved disposals whose waiting period is over — and, first,
//! finishing what a crash interrupted. `kms serve` runs this every `[lifecycle] check_every_secs`
//! as kms itself; `kms schedule run` runs it once; `kms report rotation` shows what is due.

use serde::Serialize;
use time::OffsetDateTime;

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError};
use crate::clock::lifecycle_now;
use crate::model::{Role, VersionState};

/// How soon "due" starts before the rotation date.
const DUE_AHEAD_DAYS: i64 = 14;

/// One key's rotation state for `kms report rotation`.
#[derive(Debug, Clone, Serialize)]
pub struct RotationStatus {
    pub key: String,
    pub current_version: Option<u32>,
    pub rotate_every: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotation_due: Option<OffsetDateTime>,
    /// `ok`, `due` (within 14 days), `overdue`, or `not-rotated` (kms's own keys, disposed keys).
    pub status: &'static str,
    /// Deactivated versions and when each is destroyed.
    pub retiring: Vec<(u32, Option<String>)>,
}

/// What one scheduler run did.
#[derive(Debug, Default, Serialize)]
pub struct DueReport {
    pub repaired: super::RepairReport,
    pub rotated: Vec<String>,
    pub destroyed: Vec<String>,
    pub disposed: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl Engine {
    /// `kms report rotation`: every key's rotation date and state.
    pub fn rotation_report(&self, caller: &Caller) -> Result<Vec<RotationStatus>, EngineError> {
        self.audited(caller, "report.rotation", None, |note| {
            require_role(
                &self.inventory,
                caller,
                &[
                    Role::SecurityOfficer,
                    Role::Auditor,
                    Role::SecurityAdmin,
                    Role::Manager,
                ],
                "read the rotation report",
            )?;
            let now = lifecycle_now();
            let mut out = Vec::new();
            for k in self.inventory.keys(&Default::default())? {
                let due = k.rotation_due();
                let status = if super::super::internal_key(&k.name) || k.disposed_at.is_some() {
                    "not-rotated"
                } else {
                    match due {
                        Some(d) if d <= now => "overdue",
                        Some(d) if d <= now + time::Duration::days(DUE_AHEAD_DAYS) => "due",
                        _ => "ok",
                    }
                };
                out.push(RotationStatus {
                    current_version: k.current_version().map(|v| v.version),
                    rotate_every: k.rotate_every.to_string(),
                    rotation_due: due,
                    status,
                    retiring: k
                        .versions
                        .iter()
                        .filter(|v| v.state == VersionState::Deactivated)
                        .map(|v| (v.version, v.destroy_after.map(crate::inventory::fmt_time)))
                        .collect(),
                    key: k.name,
                });
            }
            note.detail = Some(format!(
                "{} keys: {} overdue, {} due",
                out.len(),
                out.iter().filter(|s| s.status == "overdue").count(),
                out.iter().filter(|s| s.status == "due").count()
            ));
            Ok(out)
        })
    }

    /// Do what is due now, as `caller` (the scheduler passes kms's own System caller).
    pub fn run_due(&self, caller: &Caller) -> Result<DueReport, EngineError> {
        require_role(
            &self.inventory,
            caller,
            &[Role::SecurityOfficer],
            "run scheduled procedures",
        )?;
        let mut report = DueReport {
            repaired: self.repair(caller)?,
            ..Default::default()
        };
        let now = lifecycle_now();
        for k in self.inventory.keys(&Default::default())? {
            if super::super::internal_key(&k.name) || k.disposed_at.is_some() {
                continue;
            }
            // A legacy key is never rotated into another legacy key: it is migrated (by an
            // officer, `kms key migrate`) and shows as overdue until it is disposed of.
            // A secret-data value is replaced by its owner, never by kms (the report shows it due).
            if !k.key_type.is_legacy()
                && !k.key_type.rotated_by_owner()
                && k.rotation_due().is_some_and(|d| d <= now)
            {
                match self.rotate_key(caller, &k.name, "scheduled: rotation period reached") {
                    Ok(r) => report.rotated.push(format!(
                        "{} v{} -> v{}",
                        r.key, r.old_version, r.new_version
                    )),
                    Err(e) => report
                        .failed
                        .push((format!("rotate {}", k.name), e.to_string())),
                }
            }
        }
        for k in self.inventory.keys(&Default::default())? {
            for v in &k.versions {
                if v.state == VersionState::Deactivated && v.destroy_after.is_some_and(|t| t <= now)
                {
                    match self.destroy_due(caller, &k.name, v.version) {
                        Ok(()) => report.destroyed.push(format!("{} v{}", k.name, v.version)),
                        Err(e) => report
                            .failed
                            .push((format!("destroy {} v{}", k.name, v.version), e.to_string())),
                    }
                }
            }
        }
        for d in self.inventory.disposals()? {
            let due = d.state == "approved" && d.not_before.is_some_and(|t| t <= now);
            // An `executing` disposal with no live procedure was interrupted before its intent
            // was recorded: roll it forward too.
            let stalled = d.state == "executing"
                && !self
                    .inventory
                    .running_procedures()?
                    .iter()
                    .any(|p| p.kind == "disposal" && p.data["disposal"] == d.id.as_str());
            if due || stalled {
                match self.execute_disposal(caller, &d.id) {
                    Ok(_) => report.disposed.push(d.id.clone()),
                    Err(e) => report
                        .failed
                        .push((format!("dispose {}", d.id), e.to_string())),
                }
            }
        }
        Ok(report)
    }

    /// Destroy a deactivated version whose re-encryption window is over.
    fn destroy_due(&self, caller: &Caller, name: &str, version: u32) -> Result<(), EngineError> {
        self.audited(caller, "key.destroy-due", Some(name), |note| {
            let key = self.inventory.key(name)?;
            note.key_version = Some(version);
            let r = self.destroy_version(
                caller,
                &key,
                version,
                "re-encryption window ended",
                super::Authority::Rotation,
            )?;
            note.detail = Some(format!(
                "v{version} destroyed on {} token(s) after its re-encryption window",
                r.tokens.len()
            ));
            Ok(())
        })
    }

    /// The scheduler's caller: kms itself.
    pub fn scheduler_caller(&self) -> Caller {
        let mut c = self.system_caller();
        c.reason = Some("scheduled lifecycle procedures".into());
        c
    }
}
