//! Destroying one key version on every token that holds it — the original and each backup copy —
//! validated by searching each token for the CKA_ID afterwards.
//!
//! Every destruction of a kms key object on a token goes through one choke point,
//! [`Engine::destroy_places`]: the places come from the version's own rows (`key_versions`,
//! `key_copies`), never from a procedure row's JSON; each place is checked first (serial of the
//! token, no other version or ceremony owns the CKA_ID, and every object under it is this
//! version's object: class, label `kms:NAME:vN`, key type, recorded public key) and only when
//! every place passes is anything destroyed. What authorises the destruction is re-proved from
//! evidence at that moment ([`Authority`], [`Engine::check_destroy_authority`]), whether the
//! procedure is new or resumed after a crash.

//!
//! `authority.rs` re-proves what authorises a destruction; `places.rs` checks every place and
//! destroys the objects there.

mod authority;
mod places;

pub(crate) use authority::Authority;

use serde::Serialize;
use time::OffsetDateTime;

use super::super::{Caller, Engine, EngineError};
use crate::clock::failpoint;
use crate::inventory::{KeyRecord, KeyVersion, Outcome};
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

/// One place a version's object lives: the token (config name), its serial, the CKA_ID, and
/// whether it is a recorded backup copy.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub token: String,
    pub serial: String,
    pub object_id: ObjectId,
    pub copy: bool,
}

/// The version's own place and every recorded copy (`key_versions` + `key_copies`).
pub(super) fn places_of(v: &KeyVersion) -> Vec<Place> {
    let mut places = vec![Place {
        token: v.token.clone(),
        serial: v.token_serial.clone(),
        object_id: v.object_id.clone(),
        copy: false,
    }];
    for c in &v.copies {
        places.push(Place {
            token: c.token.clone(),
            serial: c.token_serial.clone(),
            object_id: c.object_id.clone(),
            copy: true,
        });
    }
    places
}

impl Engine {
    /// Destroy version `version` of `key` everywhere and record it as destroyed (or
    /// destroyed-compromised), after re-proving `authority`. Idempotent: objects already gone
    /// count as destroyed, so a crashed destruction is finished by running it again. Runs
    /// inside the caller's audited operation.
    pub(crate) fn destroy_version(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        version: u32,
        why: &str,
        authority: Authority,
    ) -> Result<DestructionReport, EngineError> {
        let v = key.version(version).ok_or_else(|| {
            EngineError::InvalidInput(format!("key '{}' has no version {version}", key.name))
        })?;
        self.check_destroy_authority(key, v, authority)?;
        let target = target_state(v.state);
        let places = places_of(v);
        let data = serde_json::json!({
            "why": why,
            "target": target.as_str(),
            "places": places.iter().map(|p| serde_json::json!({"token": p.token, "serial": p.serial, "cka_id": p.object_id.to_hex()})).collect::<Vec<_>>(),
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
                    .map(|p| format!("'{}' (serial {}) cka_id={}", p.token, p.serial, p.object_id))
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
        let report = self.destroy_places(caller, key, v, target, authority)?;
        self.record_destroyed(caller, key, version, v.state, &report, why)?;
        self.inventory.end_procedure(&proc_id, "done")?;
        Ok(report)
    }

    /// THE choke point: destroy version `v` of `key` on every place its own rows record,
    /// after checking every place first. Fails (leaving the procedure running, to be finished
    /// later) if any token is unreachable or still holds the CKA_ID; refuses, destroying
    /// nothing, if any place holds anything but this version's object.
    pub(super) fn destroy_places(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        v: &KeyVersion,
        target: VersionState,
        authority: Authority,
    ) -> Result<DestructionReport, EngineError> {
        self.destroy_at(caller, key, v, target, authority, &places_of(v))
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

/// The state a destroyed version ends in.
pub(super) fn target_state(from: VersionState) -> VersionState {
    match from {
        VersionState::Compromised | VersionState::DestroyedCompromised => {
            VersionState::DestroyedCompromised
        }
        _ => VersionState::Destroyed,
    }
}
