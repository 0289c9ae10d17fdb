//! Destroying one key version on every token that holds it — the original and each backup copy —
//! validated by searching each token for the CKA_ID afterwards.

use serde::Serialize;
use time::OffsetDateTime;

use super::super::{Caller, Engine, EngineError};
use crate::clock::failpoint;
use crate::inventory::{KeyRecord, Outcome};
use crate::model::{ObjectId, VersionState};

/// One token's part in a destruction.
#[derive(Debug, Clone, Serialize)]
pub struct DestroyedOn {
    pub token: String,
    pub serial: String,
    pub object_id: ObjectId,
    /// Objects destroyed now (0 if already gone).
    pub objects_destroyed: usize,
    /// A search for the CKA_ID afterwards found nothing.
    pub validated: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// What a destruction did, token by token.
#[derive(Debug, Clone, Serialize)]
pub struct DestructionReport {
    pub key: String,
    pub version: u32,
    pub state: VersionState,
    pub tokens: Vec<DestroyedOn>,
}

impl Engine {
    /// Destroy version `version` of `key` everywhere and record it as destroyed (or
    /// destroyed-compromised). Idempotent: objects already gone count as destroyed, so a crashed
    /// destruction is finished by running it again. Runs inside the caller's audited operation.
    pub(crate) fn destroy_version(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        version: u32,
        why: &str,
    ) -> Result<DestructionReport, EngineError> {
        let v = key.version(version).ok_or_else(|| {
            EngineError::InvalidInput(format!("key '{}' has no version {version}", key.name))
        })?;
        let target = match v.state {
            VersionState::Compromised | VersionState::DestroyedCompromised => {
                VersionState::DestroyedCompromised
            }
            _ => VersionState::Destroyed,
        };
        let mut places = vec![(v.token.clone(), v.token_serial.clone(), v.object_id.clone())];
        for c in &v.copies {
            places.push((c.token.clone(), c.token_serial.clone(), c.object_id.clone()));
        }
        let data = serde_json::json!({
            "why": why,
            "target": target.as_str(),
            "places": places.iter().map(|(t, s, o)| serde_json::json!({"token": t, "serial": s, "cka_id": o.to_hex()})).collect::<Vec<_>>(),
        });
        let intent = self.entry(
            caller,
            "key.destroy-intent",
            Some(&key.name),
            Some(version),
            Outcome::Ok,
            Some(format!(
                "about to destroy v{version} ({why}) on {}",
                places
                    .iter()
                    .map(|(t, s, o)| format!("'{t}' (serial {s}) cka_id={o}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        let (proc_id, _owner) = self.new_procedure()?;
        let proc_id = self.inventory.start_procedure(
            &proc_id,
            "destroy-version",
            &key.id,
            Some(version),
            &data,
            &caller.actor,
            &intent,
        )?;
        failpoint("destroy:intent");
        let report = self.destroy_places(key, version, target, &places)?;
        self.record_destroyed(caller, key, version, v.state, &report, why)?;
        self.inventory.end_procedure(&proc_id, "done")?;
        Ok(report)
    }

    /// The token part: destroy, then validate, on each place. Fails (leaving the procedure
    /// running, to be finished later) if any token is unreachable or still holds the CKA_ID.
    pub(super) fn destroy_places(
        &self,
        key: &KeyRecord,
        version: u32,
        target: VersionState,
        places: &[(String, String, ObjectId)],
    ) -> Result<DestructionReport, EngineError> {
        let mut tokens = Vec::new();
        for (i, (name, serial, oid)) in places.iter().enumerate() {
            if name == super::super::CARD_TOKEN {
                // On a PIV card: overwrite the slot's key and delete its certificate.
                let gone = self.wipe_card_slot(serial, oid)?;
                if !gone {
                    return Err(EngineError::Incomplete(format!(
                        "card {serial} slot {oid} still holds a certificate after the wipe"
                    )));
                }
                tokens.push(DestroyedOn {
                    token: name.clone(),
                    serial: serial.clone(),
                    object_id: oid.clone(),
                    objects_destroyed: 1,
                    validated: gone,
                    at: OffsetDateTime::now_utc(),
                });
                continue;
            }
            let t = self.hsm.token(name)?;
            if t.serial() != serial {
                return Err(EngineError::Misconfigured(format!(
                    "token '{name}' is now serial {}, but v{version} of '{}' is recorded on serial {serial}; nothing further was destroyed",
                    t.serial(),
                    key.name
                )));
            }
            let n = t.destroy(oid)?;
            let gone = !t.exists(oid)?;
            if !gone {
                return Err(EngineError::Incomplete(format!(
                    "token '{name}' still holds CKA_ID {oid} after destroying it; the destruction of '{}' v{version} stays open for `kms reconcile --repair`",
                    key.name
                )));
            }
            tokens.push(DestroyedOn {
                token: name.clone(),
                serial: serial.clone(),
                object_id: oid.clone(),
                objects_destroyed: n,
                validated: gone,
                at: OffsetDateTime::now_utc(),
            });
            if i == 0 {
                failpoint("destroy:first-token");
            }
        }
        Ok(DestructionReport {
            key: key.name.clone(),
            version,
            state: target,
            tokens,
        })
    }

    pub(super) fn record_destroyed(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        version: u32,
        from: VersionState,
        report: &DestructionReport,
        why: &str,
    ) -> Result<(), EngineError> {
        let mut entry = self.entry(
            caller,
            "key.destroy",
            Some(&key.name),
            Some(version),
            Outcome::Ok,
            Some(format!(
                "v{version} destroyed ({why}) and validated absent on {}",
                report
                    .tokens
                    .iter()
                    .map(|d| format!(
                        "'{}' (serial {}, cka_id={}, {} object(s))",
                        d.token, d.serial, d.object_id, d.objects_destroyed
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        entry.diff = super::super::audit::diff(
            serde_json::json!({"version": version, "state": from.as_str()}),
            serde_json::json!({"version": version, "state": report.state.as_str()}),
        );
        let allowed = [
            VersionState::Active,
            VersionState::Deactivated,
            VersionState::Compromised,
            report.state,
        ];
        self.inventory
            .set_version_state(&key.id, version, &allowed, report.state, &entry)?;
        Ok(())
    }
}
