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

use std::collections::HashMap;

use serde::Serialize;
use time::OffsetDateTime;

use super::super::{Caller, Engine, EngineError, Refusal};
use crate::clock::{failpoint, lifecycle_now};
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

/// What gives a destruction its authority; each is re-checked from evidence at the moment of
/// destruction (see ARCHITECTURE.md, "Destruction re-proves its authority").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authority {
    /// A rotation: the version is deactivated and its re-encryption window is over (both in
    /// its HSM-tagged row), and the key's current active version is newer and present on its
    /// token. A version already recorded destroyed only has its leftovers removed.
    Rotation,
    /// Closing a compromise: the version is recorded compromised and a compromise record
    /// names it.
    Compromise,
    /// A disposal whose two card signatures, signers and waiting period were re-checked just
    /// now (`execute_disposal`).
    Disposal,
    /// Rolling back a rotation that never switched: the version is still pending and the key
    /// has an older, finished version.
    RollBack,
    /// `kms key abandon` of an unfinished creation: the version is still pending.
    Abandon,
}

impl Authority {
    fn as_str(self) -> &'static str {
        match self {
            Authority::Rotation => "rotation",
            Authority::Compromise => "compromise",
            Authority::Disposal => "disposal",
            Authority::RollBack => "rotation roll-back",
            Authority::Abandon => "abandoned creation",
        }
    }
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

    /// Re-prove, from evidence, that `authority` allows destroying version `v` of `key` now.
    /// Disposal's evidence (signatures, signers, waiting period) is checked by
    /// `execute_disposal` before it calls here; the rest is checked here.
    pub(crate) fn check_destroy_authority(
        &self,
        key: &KeyRecord,
        v: &KeyVersion,
        authority: Authority,
    ) -> Result<(), EngineError> {
        let refuse = |code: Refusal, why: String| {
            Err(EngineError::denied(
                code,
                format!(
                    "v{} of '{}' is not destroyed ({}): {why}",
                    v.version,
                    key.name,
                    authority.as_str()
                ),
            ))
        };
        if authority != Authority::Abandon && super::super::internal_key(&key.name) {
            return refuse(
                Refusal::NotSupported,
                "it is kms's own key; no rotation, compromise, disposal or repair destroys it"
                    .into(),
            );
        }
        match authority {
            Authority::Disposal => Ok(()),
            Authority::Rotation => match v.state {
                VersionState::Destroyed => Ok(()),
                VersionState::Deactivated => {
                    let now = lifecycle_now();
                    match v.destroy_after {
                        Some(t) if t <= now => {}
                        Some(t) => {
                            return refuse(
                                Refusal::KeyState,
                                format!(
                                    "its re-encryption window runs until {}",
                                    crate::inventory::fmt_time(t)
                                ),
                            )
                        }
                        None => {
                            return refuse(
                                Refusal::KeyState,
                                "its row records no end of its re-encryption window".into(),
                            )
                        }
                    }
                    let Some(newer) = key.current_version().filter(|n| n.version > v.version)
                    else {
                        return refuse(
                            Refusal::KeyState,
                            "the key has no newer active version to replace it".into(),
                        );
                    };
                    if let Err(e) = self.newer_version_present(key, newer) {
                        return refuse(
                            Refusal::KeyState,
                            format!(
                                "the newer version v{} could not be shown on its token '{}' (serial {}): {e}",
                                newer.version, newer.token, newer.token_serial
                            ),
                        );
                    }
                    Ok(())
                }
                other => refuse(
                    Refusal::KeyState,
                    format!("it is {other}; a rotation destroys only a deactivated version"),
                ),
            },
            Authority::Compromise => {
                if !matches!(
                    v.state,
                    VersionState::Compromised | VersionState::DestroyedCompromised
                ) {
                    return refuse(
                        Refusal::KeyState,
                        format!("it is {}, not compromised", v.state),
                    );
                }
                if !self
                    .inventory
                    .compromises(&key.id)?
                    .iter()
                    .any(|c| c.version == v.version)
                {
                    return refuse(Refusal::KeyState, "no compromise record names it".into());
                }
                Ok(())
            }
            Authority::Abandon => {
                if v.state != VersionState::Pending {
                    return refuse(
                        Refusal::KeyState,
                        format!(
                            "it is {}; only an unfinished creation is abandoned",
                            v.state
                        ),
                    );
                }
                Ok(())
            }
            Authority::RollBack => {
                if v.state != VersionState::Pending {
                    return refuse(
                        Refusal::KeyState,
                        format!("it is {}; only a pending version is rolled back", v.state),
                    );
                }
                if !key
                    .versions
                    .iter()
                    .any(|o| o.version < v.version && o.state != VersionState::Pending)
                {
                    return refuse(
                        Refusal::KeyState,
                        "the key has no older finished version, so this is no rotation (an unfinished creation is removed with `kms key abandon`)".into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// The newer version's object is on its token and is that version's object.
    fn newer_version_present(
        &self,
        key: &KeyRecord,
        newer: &KeyVersion,
    ) -> Result<(), EngineError> {
        if newer.token == super::super::CARD_TOKEN {
            let card = super::super::cards::card_serial(&newer.token_serial)?;
            let slot = crate::smartcard::parse_slot(&newer.object_id.to_hex())?;
            let pk = crate::smartcard::public_key(Some(card), slot)?;
            if newer.public_key.as_deref() != Some(pk.as_slice()) {
                return Err(EngineError::Incomplete(
                    "the card slot holds another key".into(),
                ));
            }
            return Ok(());
        }
        let token = self.token_for(newer)?;
        super::super::failover::check_object(&token, key, newer, &newer.object_id)?;
        Ok(())
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

    /// [`Engine::destroy_places`] over `places` (the version's own rows, or for a rotation's
    /// roll-back its own token and the paired backup token).
    pub(crate) fn destroy_at(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        v: &KeyVersion,
        target: VersionState,
        authority: Authority,
        places: &[Place],
    ) -> Result<DestructionReport, EngineError> {
        let version = v.version;
        let owners = self.cka_id_owners(key, v)?;
        let label = crate::model::object_label(&key.name, version);
        let expected = crate::hsm::Expected {
            label: &label,
            key_type: key.key_type,
            public_key: v.public_key.as_deref(),
        };
        // 1. Check every place; nothing is destroyed unless all pass.
        let mut checked = Vec::new();
        for p in places {
            let refuse =
                |what: String| self.refuse_destruction(caller, key, version, authority, p, what);
            if let Some(owner) = owners.get(&p.object_id.0) {
                return Err(refuse(format!("that CKA_ID belongs to {owner}")));
            }
            if p.copy && p.object_id != v.object_id {
                return Err(refuse(format!(
                    "the copy row names CKA_ID {}, but every copy of v{version} carries the version's own CKA_ID {}",
                    p.object_id, v.object_id
                )));
            }
            if p.token == super::super::CARD_TOKEN {
                if p.copy {
                    return Err(refuse("a backup copy is never on a PIV card".into()));
                }
                let present = self.card_slot_matches(key, v, p).map_err(|e| match e {
                    Mismatch::Wrong(what) => refuse(what),
                    Mismatch::Error(e) => e,
                })?;
                checked.push((p, None, present));
                continue;
            }
            let t = self.hsm.token(&p.token)?;
            if t.serial() != p.serial {
                return Err(EngineError::Misconfigured(format!(
                    "token '{}' is now serial {}, but v{version} of '{}' is recorded on serial {} there; nothing was destroyed",
                    p.token,
                    t.serial(),
                    key.name,
                    p.serial
                )));
            }
            match t.check_destroyable(&p.object_id, &expected) {
                Ok(n) => checked.push((p, Some(t), n > 0)),
                Err(crate::hsm::HsmError::WrongObject { why, .. }) => return Err(refuse(why)),
                Err(e) => return Err(e.into()),
            }
        }
        // 2. Destroy, re-checking each object as it is destroyed.
        let mut tokens = Vec::new();
        for (i, (p, t, present)) in checked.into_iter().enumerate() {
            let (n, gone) = match t {
                None => {
                    // A PIV card slot proven to hold this version (or empty already).
                    if present {
                        let gone = self.wipe_card_slot(&p.serial, &p.object_id)?;
                        if !gone {
                            return Err(EngineError::Incomplete(format!(
                                "card {} slot {} still holds a certificate after the wipe",
                                p.serial, p.object_id
                            )));
                        }
                        (1, true)
                    } else {
                        (0, true)
                    }
                }
                Some(t) => {
                    let n = match t.destroy_verified(&p.object_id, &expected) {
                        Ok(n) => n,
                        Err(crate::hsm::HsmError::WrongObject { why, .. }) => {
                            return Err(
                                self.refuse_destruction(caller, key, version, authority, p, why)
                            )
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let gone = !t.exists(&p.object_id)?;
                    if !gone {
                        return Err(EngineError::Incomplete(format!(
                            "token '{}' still holds CKA_ID {} after destroying it; the destruction of '{}' v{version} stays open for `kms reconcile --repair`",
                            p.token, p.object_id, key.name
                        )));
                    }
                    (n, gone)
                }
            };
            tokens.push(DestroyedOn {
                token: p.token.clone(),
                serial: p.serial.clone(),
                object_id: p.object_id.clone(),
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

    /// Every CKA_ID that something other than version `v` of `key` owns: the other versions of
    /// every key (and their copies) and every ceremony's KEK and transport pair.
    fn cka_id_owners(
        &self,
        key: &KeyRecord,
        v: &KeyVersion,
    ) -> Result<HashMap<Vec<u8>, String>, EngineError> {
        let mut owners = HashMap::new();
        for k in self.inventory.keys(&Default::default())? {
            for o in &k.versions {
                if k.id == key.id && o.version == v.version {
                    continue;
                }
                let who = format!("'{}' v{}", k.name, o.version);
                owners.insert(o.object_id.0.clone(), who.clone());
                for c in &o.copies {
                    owners.insert(
                        c.object_id.0.clone(),
                        format!("the copy of {who} on '{}'", c.token),
                    );
                }
            }
        }
        for p in self.inventory.backup_pairs()? {
            owners.insert(
                p.kek_id.0.clone(),
                format!("the backup KEK of ceremony {}", p.id),
            );
            owners.insert(
                p.transport_id.0.clone(),
                format!("the transport key of ceremony {}", p.id),
            );
        }
        // The version's own CKA_ID is never "another's", even if a forged copy row claims it.
        owners.remove(&v.object_id.0);
        Ok(owners)
    }

    /// Whether the card slot `p` holds version `v` (Ok(true)), is empty (Ok(false)), or holds
    /// something else (Mismatch::Wrong).
    fn card_slot_matches(
        &self,
        key: &KeyRecord,
        v: &KeyVersion,
        p: &Place,
    ) -> Result<bool, Mismatch> {
        let card = super::super::cards::card_serial(&p.serial).map_err(Mismatch::Error)?;
        let slot = crate::smartcard::parse_slot(&p.object_id.to_hex())
            .map_err(|e| Mismatch::Error(e.into()))?;
        let name = crate::smartcard::slot_name(slot);
        let status = crate::smartcard::status(Some(card)).map_err(|e| Mismatch::Error(e.into()))?;
        let Some(s) = status.slots.into_iter().find(|s| s.slot == name) else {
            return Ok(false);
        };
        let ok = match v.public_key.as_deref() {
            Some(pk) => s.public_key == pk,
            None => s.subject == format!("CN=kms key {} v{}", key.name, v.version),
        };
        if ok {
            Ok(true)
        } else {
            Err(Mismatch::Wrong(format!(
                "card {card} slot {name} holds '{}', whose public key is not the one recorded for this version",
                s.subject
            )))
        }
    }

    /// A refused destruction: its own audit record (a denial, whatever the enclosing operation
    /// does with the error) and the error naming token, serial, CKA_ID and what was found.
    fn refuse_destruction(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        version: u32,
        authority: Authority,
        p: &Place,
        what: String,
    ) -> EngineError {
        let msg = format!(
            "refused to destroy anything under CKA_ID {} on token '{}' (serial {}) for '{}' v{version} ({}): {what}. Nothing was destroyed by this step; the inventory (a version's copy or procedure row) or the token was changed outside kms: run `kms inventory verify` and `kms reconcile`",
            p.object_id,
            p.token,
            p.serial,
            key.name,
            authority.as_str()
        );
        let mut entry = self.entry(
            caller,
            "key.destroy-refused",
            Some(&key.name),
            Some(version),
            Outcome::Denied,
            Some(msg.clone()),
        );
        entry.code = Some(Refusal::InventoryTampered.code().to_owned());
        if let Err(e) = self.inventory.append_audit(&entry) {
            tracing::error!(error = %e, "could not audit a refused destruction");
        }
        EngineError::denied(Refusal::InventoryTampered, msg)
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

/// Why a card slot check did not pass.
enum Mismatch {
    Wrong(String),
    Error(EngineError),
}
