//! The places of a destruction: each checked (serial, owner of the CKA_ID, the objects under
//! it) before anything is destroyed, then destroyed and searched for again.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::super::super::{Caller, Engine, EngineError, Refusal};
use super::{Authority, DestroyedOn, DestructionReport, Place};
use crate::clock::failpoint;
use crate::inventory::{KeyRecord, KeyVersion, Outcome};
use crate::model::VersionState;

impl Engine {
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
            if p.token == super::super::super::CARD_TOKEN {
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
        let card = super::super::super::cards::card_serial(&p.serial).map_err(Mismatch::Error)?;
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
}

/// Why a card slot check did not pass.
enum Mismatch {
    Wrong(String),
    Error(EngineError),
}
