//! Rotation as generate-then-destroy: a new version is generated on the device (and copied to the
//! backup token), the inventory switches to it in one transaction — the old version becomes
//! deactivated (decrypt / unwrap / verify only) for the key's re-encryption window — and the old
//! version is destroyed on every token when the window ends (at once with a window of 0).
//!
//! Grants name the key, not a version: at the switch every active grant applies to the new
//! version, and what the old version may still do is limited by its state. The audit record says
//! which grants moved.

use serde::Serialize;
use time::OffsetDateTime;

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError, Refusal};
use super::{Authority, Place};
use crate::clock::{failpoint, lifecycle_now};
use crate::inventory::{GrantFilter, KeyCopy, KeyRecord, Outcome, PendingVersion};
use crate::model::{Role, VersionState};

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct RotationReport {
    pub key: String,
    pub old_version: u32,
    pub new_version: u32,
    /// Grants (by id) that apply to the new version now.
    pub grants_moved: Vec<String>,
    /// When the old version will be destroyed (None: destroyed now).
    #[serde(with = "time::serde::rfc3339::option")]
    pub old_destroy_after: Option<OffsetDateTime>,
    pub old_destroyed: Option<super::DestructionReport>,
    /// The new version's backup copy, if backup is paired.
    pub backup_copy: Option<String>,
}

/// How the old version leaves service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retire {
    /// Deactivated for the re-encryption window, then destroyed.
    Deactivate,
    /// Already compromised (its state changed first): only the new version is activated.
    AlreadyCompromised,
}

impl Engine {
    /// `kms key rotate NAME` and the scheduler: generate, copy, switch, and (window 0) destroy.
    pub fn rotate_key(
        &self,
        caller: &Caller,
        name: &str,
        why: &str,
    ) -> Result<RotationReport, EngineError> {
        self.audited(caller, "key.rotate", Some(name), |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "rotate keys",
            )?;
            let key = self.inventory.key(name)?;
            if key.key_type.is_legacy() {
                return Err(EngineError::denied(
                    super::super::Refusal::NotSupported,
                    format!(
                        "key '{name}' is legacy {}: it is not rotated into another {} key but migrated: `kms key migrate {name} --to aes-256`",
                        key.key_type, key.key_type
                    ),
                ));
            }
            if key.key_type.rotated_by_owner() {
                return Err(EngineError::denied(
                    super::super::Refusal::NotSupported,
                    format!(
                        "key '{name}' is {}: its value came from its owner, and a value kms made up would lose what it protects; its owner registers the new value (Register) and the old one is disposed of (kms key dispose {name} ...)",
                        key.key_type
                    ),
                ));
            }
            let report = self.rotate_inner(caller, &key, Retire::Deactivate, why)?;
            note.key_version = Some(report.new_version);
            note.detail = Some(format!(
                "rotated ({why}): v{} -> v{}; {} grant(s) now apply to v{}; v{} {}",
                report.old_version,
                report.new_version,
                report.grants_moved.len(),
                report.new_version,
                report.old_version,
                match (&report.old_destroyed, report.old_destroy_after) {
                    (Some(_), _) => "destroyed at once (window 0)".to_owned(),
                    (None, Some(t)) => format!(
                        "decrypts/unwraps/verifies only, destroyed after {}",
                        crate::inventory::fmt_time(t)
                    ),
                    (None, None) => String::new(),
                }
            ));
            Ok(report)
        })
    }

    pub(crate) fn rotate_inner(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        retire: Retire,
        why: &str,
    ) -> Result<RotationReport, EngineError> {
        if super::super::internal_key(&key.name) {
            return Err(EngineError::denied(
                Refusal::NotSupported,
                format!(
                    "'{}' is kms's own key: rotating it would leave what it signed or sealed unverifiable; it is not rotated",
                    key.name
                ),
            ));
        }
        if key.disposed_at.is_some() {
            return Err(EngineError::denied(
                Refusal::KeyState,
                format!("key '{}' was disposed of", key.name),
            ));
        }
        // A key left with only a compromised version (its replacement was interrupted) is
        // rotated the compromise way: the new version simply becomes the active one.
        let retire = if retire == Retire::Deactivate
            && key.current_version().is_none()
            && key
                .versions
                .iter()
                .any(|v| v.state == VersionState::Compromised)
        {
            Retire::AlreadyCompromised
        } else {
            retire
        };
        let old = match retire {
            Retire::Deactivate => key.current_version().cloned().ok_or_else(|| {
                EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{}' has no active version to rotate", key.name),
                )
            })?,
            Retire::AlreadyCompromised => key
                .versions
                .iter()
                .filter(|v| v.state == VersionState::Compromised)
                .max_by_key(|v| v.version)
                .cloned()
                .ok_or_else(|| EngineError::Incomplete("no compromised version".into()))?,
        };
        if key
            .versions
            .iter()
            .any(|v| v.state == VersionState::Pending)
        {
            return Err(EngineError::denied(
                Refusal::KeyState,
                format!(
                    "key '{}' has an unfinished version (pending); `kms reconcile --repair` or `kms backup sync` first",
                    key.name
                ),
            ));
        }
        let new_version = key.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        if old.token == super::super::CARD_TOKEN {
            return self.rotate_on_card(caller, key, &old, new_version, retire, why);
        }
        let token_name = self.config.key_token.clone();
        let token = self.hsm.token(&token_name)?;
        let object_id = token.new_object_id()?;
        let window = key.reencrypt_window_secs;
        let data = serde_json::json!({
            "why": why,
            "old_version": old.version,
            "new_version": new_version,
            "token": token_name,
            "serial": token.serial(),
            "cka_id": object_id.to_hex(),
            "window_secs": window,
            "retire": match retire { Retire::Deactivate => "deactivate", Retire::AlreadyCompromised => "compromised" },
        });
        let intent = self.entry(
            caller,
            "key.rotate-intent",
            Some(&key.name),
            Some(new_version),
            Outcome::Ok,
            Some(format!(
                "about to generate v{new_version} of {} on token {token_name} (serial {}) as cka_id={object_id}, replacing v{} ({why})",
                key.key_type,
                token.serial(),
                old.version
            )),
        );
        let (proc_id, _owner) = self.new_procedure()?;
        let proc_id = self.inventory.start_procedure(
            &proc_id,
            "rotation",
            &key.id,
            Some(new_version),
            &data,
            &caller.actor,
            &intent,
        )?;
        failpoint("rotate:intent");
        let pending = PendingVersion {
            token: token_name.clone(),
            token_label: token.label().to_owned(),
            token_serial: token.serial().to_owned(),
            object_id: object_id.clone(),
        };
        self.inventory
            .insert_pending_version(&key.id, new_version, &pending, &proc_id, &data)?;
        failpoint("rotate:pending");
        let made = (|| -> Result<(Option<Vec<u8>>, Option<KeyCopy>), EngineError> {
            let label = crate::model::object_label(&key.name, new_version);
            let generated = token.generate(key.key_type, &object_id, &label, &key.usage)?;
            self.inventory
                .procedure_step(&proc_id, "generated", &data)?;
            failpoint("rotate:generated");
            let copy = match self.backup_target()? {
                None => None,
                Some(pair) => {
                    let fresh = self.inventory.key(&key.name)?;
                    let v = fresh.version(new_version).ok_or_else(|| {
                        EngineError::Incomplete(format!(
                            "v{new_version} of '{}' vanished",
                            key.name
                        ))
                    })?;
                    Some(self.copy_version(
                        &fresh,
                        v,
                        generated.public_key_der.as_deref(),
                        &pair,
                    )?)
                }
            };
            self.inventory.procedure_step(&proc_id, "copied", &data)?;
            failpoint("rotate:copied");
            Ok((generated.public_key_der, copy))
        })();
        let (public_key, copy) = match made {
            Ok(x) => x,
            Err(e) => {
                self.roll_back_rotation(&key.name, &key.id, new_version)?;
                self.inventory.end_procedure(&proc_id, "rolled-back")?;
                return Err(e);
            }
        };
        let grants: Vec<String> = self
            .inventory
            .grants(
                &GrantFilter {
                    key_name: Some(key.name.clone()),
                    principal: None,
                    all: false,
                },
                OffsetDateTime::now_utc(),
            )?
            .into_iter()
            .filter(|g| g.revoked_at.is_none() && g.not_after > OffsetDateTime::now_utc())
            .map(|g| g.id)
            .collect();
        let destroy_after = lifecycle_now() + time::Duration::seconds(window as i64);
        let mut entry = self.entry(
            caller,
            "key.rotate-switch",
            Some(&key.name),
            Some(new_version),
            Outcome::Ok,
            Some(format!(
                "v{new_version} active{}; v{} {}; grants now applying to v{new_version}: {}",
                copy.as_ref()
                    .map(|c| format!(" (backup copy on '{}' proven)", c.token))
                    .unwrap_or_default(),
                old.version,
                match retire {
                    Retire::Deactivate => format!(
                        "deactivated (decrypt/unwrap/verify only) until {}",
                        crate::inventory::fmt_time(destroy_after)
                    ),
                    Retire::AlreadyCompromised => "stays compromised".to_owned(),
                },
                if grants.is_empty() {
                    "none".to_owned()
                } else {
                    grants.join(", ")
                }
            )),
        );
        entry.diff = super::super::audit::diff(
            serde_json::json!({"current_version": old.version}),
            serde_json::json!({"current_version": new_version}),
        );
        let switched = match retire {
            Retire::Deactivate => self.inventory.rotate_switch(
                &key.id,
                new_version,
                public_key.as_deref(),
                copy.as_ref(),
                Some(old.version),
                destroy_after,
                &proc_id,
                lifecycle_now(),
                &entry,
            ),
            Retire::AlreadyCompromised => self.inventory.rotate_switch(
                &key.id,
                new_version,
                public_key.as_deref(),
                copy.as_ref(),
                None,
                destroy_after,
                &proc_id,
                lifecycle_now(),
                &entry,
            ),
        };
        if let Err(e) = switched {
            self.roll_back_rotation(&key.name, &key.id, new_version)?;
            self.inventory.end_procedure(&proc_id, "rolled-back")?;
            return Err(e.into());
        }
        failpoint("rotate:switched");
        let mut report = RotationReport {
            key: key.name.clone(),
            old_version: old.version,
            new_version,
            grants_moved: grants,
            old_destroy_after: Some(destroy_after),
            old_destroyed: None,
            backup_copy: copy.map(|c| format!("{} (serial {})", c.token, c.token_serial)),
        };
        if window == 0 && retire == Retire::Deactivate {
            let fresh = self.inventory.key(&key.name)?;
            report.old_destroyed = Some(self.destroy_version(
                caller,
                &fresh,
                old.version,
                "rotation, window 0",
                super::Authority::Rotation,
            )?);
            report.old_destroy_after = None;
        }
        self.inventory.end_procedure(&proc_id, "done")?;
        Ok(report)
    }

    /// Rotation of a card-resident key: the new version is generated on the same card, in a free
    /// retired slot (82..95); the old one keeps its slot until it is destroyed (wiped).
    fn rotate_on_card(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        old: &crate::inventory::KeyVersion,
        new_version: u32,
        retire: Retire,
        why: &str,
    ) -> Result<RotationReport, EngineError> {
        let serial = super::super::cards::card_serial(&old.token_serial)?;
        let taken: Vec<String> = self
            .inventory
            .keys(&Default::default())?
            .iter()
            .flat_map(|k| k.versions.iter())
            .filter(|v| {
                v.token == super::super::CARD_TOKEN
                    && v.token_serial == old.token_serial
                    && !v.state.is_destroyed()
            })
            .map(|v| v.object_id.to_hex())
            .collect();
        let slot = crate::smartcard::free_retired_slot(Some(serial), &taken)?;
        let slot_hex = crate::smartcard::slot_name(slot);
        let (pin, mgm) = self.card_secrets(serial)?;
        let window = key.reencrypt_window_secs;
        let data = serde_json::json!({
            "why": why, "old_version": old.version, "new_version": new_version,
            "token": super::super::CARD_TOKEN, "serial": old.token_serial, "cka_id": slot_hex,
            "window_secs": window,
            "retire": match retire { Retire::Deactivate => "deactivate", Retire::AlreadyCompromised => "compromised" },
        });
        let intent = self.entry(
            caller,
            "key.rotate-intent",
            Some(&key.name),
            Some(new_version),
            Outcome::Ok,
            Some(format!("about to generate v{new_version} on PIV card {serial} slot {slot_hex}, replacing v{} ({why})", old.version)),
        );
        let (proc_id, _owner) = self.new_procedure()?;
        self.inventory.start_procedure(
            &proc_id,
            "rotation",
            &key.id,
            Some(new_version),
            &data,
            &caller.actor,
            &intent,
        )?;
        let pending = PendingVersion {
            token: super::super::CARD_TOKEN.to_owned(),
            token_label: old.token_label.clone(),
            token_serial: old.token_serial.clone(),
            object_id: crate::model::ObjectId(hex::decode(&slot_hex).unwrap_or_default()),
        };
        self.inventory
            .insert_pending_version(&key.id, new_version, &pending, &proc_id, &data)?;
        failpoint("rotate:pending");
        let generated = match crate::smartcard::generate(
            Some(serial),
            slot,
            &pin,
            mgm.as_ref(),
            &format!("kms key {} v{new_version}", key.name),
            false,
        ) {
            Ok(g) => g,
            Err(e) => {
                self.inventory
                    .delete_pending_version(&key.id, new_version)?;
                self.inventory.end_procedure(&proc_id, "rolled-back")?;
                return Err(e.into());
            }
        };
        failpoint("rotate:generated");
        let destroy_after = lifecycle_now() + time::Duration::seconds(window as i64);
        let entry = self.entry(
            caller,
            "key.rotate-switch",
            Some(&key.name),
            Some(new_version),
            Outcome::Ok,
            Some(format!(
                "v{new_version} active on PIV card {serial} slot {slot_hex} (not backed up: a card key cannot be wrapped out); v{} {}",
                old.version,
                match retire {
                    Retire::Deactivate => format!("deactivated (verify only) until {}", crate::inventory::fmt_time(destroy_after)),
                    Retire::AlreadyCompromised => "stays compromised".to_owned(),
                }
            )),
        );
        self.inventory.rotate_switch(
            &key.id,
            new_version,
            Some(&generated.public_key),
            None,
            (retire == Retire::Deactivate).then_some(old.version),
            destroy_after,
            &proc_id,
            lifecycle_now(),
            &entry,
        )?;
        let mut report = RotationReport {
            key: key.name.clone(),
            old_version: old.version,
            new_version,
            grants_moved: Vec::new(),
            old_destroy_after: Some(destroy_after),
            old_destroyed: None,
            backup_copy: None,
        };
        if window == 0 && retire == Retire::Deactivate {
            let fresh = self.inventory.key(&key.name)?;
            report.old_destroyed = Some(self.destroy_version(
                caller,
                &fresh,
                old.version,
                "rotation, window 0",
                super::Authority::Rotation,
            )?);
            report.old_destroy_after = None;
        }
        self.inventory.end_procedure(&proc_id, "done")?;
        Ok(report)
    }

    /// Undo a rotation that did not reach its switch: destroy what was made for the pending
    /// version — on its own token and on the backup token paired with it, under its own CKA_ID,
    /// and only objects labelled as that version (`kms:NAME:vN`) — then remove its pending row.
    /// The places come from the pending version's row and the pairing, never from a procedure.
    pub(super) fn roll_back_rotation(
        &self,
        name: &str,
        key_id: &str,
        new_version: u32,
    ) -> Result<(), EngineError> {
        let key = self.inventory.key(name)?;
        let Some(v) = key.version(new_version) else {
            return Ok(());
        };
        if v.state != VersionState::Pending {
            return Ok(());
        }
        let caller = self.system_caller();
        self.check_destroy_authority(&key, v, Authority::RollBack)?;
        let mut places = super::destruction::places_of(v);
        if v.token != super::super::CARD_TOKEN {
            if let Some(b) = &self.config.backup {
                let pair = self
                    .inventory
                    .backup_pairs()?
                    .into_iter()
                    .rfind(|p| p.from_serial == v.token_serial && p.to_token == b.token);
                if let Some(pair) = pair {
                    if !places.iter().any(|p| p.token == b.token) {
                        places.push(Place {
                            token: b.token.clone(),
                            serial: pair.to_serial,
                            object_id: v.object_id.clone(),
                            copy: true,
                        });
                    }
                }
            }
        }
        let report = self.destroy_at(
            &caller,
            &key,
            v,
            VersionState::Pending,
            Authority::RollBack,
            &places,
        )?;
        let entry = self.entry(
            &caller,
            "key.rotate-rolled-back",
            Some(name),
            Some(new_version),
            Outcome::Ok,
            Some(format!(
                "rotation to v{new_version} rolled back: objects labelled {} under cka_id={} destroyed on {}, pending version removed",
                crate::model::object_label(&key.name, new_version),
                v.object_id,
                report
                    .tokens
                    .iter()
                    .map(|d| format!("'{}' (serial {}, {} object(s))", d.token, d.serial, d.objects_destroyed))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        self.inventory.append_audit(&entry)?;
        self.inventory.delete_pending_version(key_id, new_version)?;
        Ok(())
    }
}
