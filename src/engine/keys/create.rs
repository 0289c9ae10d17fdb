//! Creating a key on the configured key token (or importing one): intent, generation, backup
//! copy, activation; and the inventory row a request becomes.

use time::OffsetDateTime;

use super::request::{validate, CreateKey};
use crate::engine::policy::require_role;
use crate::engine::{Caller, Engine, EngineError};
use crate::inventory::{KeyRecord, NewKey, PendingVersion};
use crate::model::{KeyOrigin, Role};

impl Engine {
    /// Generate a key on the configured key token and record it in the inventory.
    ///
    /// Order: validate; record the intent (a `pending` version with its CKA_ID — a duplicate name
    /// fails here, before the token is touched); generate on the token; activate the version and
    /// write the audit row in one transaction. If generation fails the pending rows are removed;
    /// if activation fails the new objects are destroyed. A crash in between leaves a `pending`
    /// version that `kms reconcile` reports.
    pub fn create_key(&self, caller: &Caller, req: CreateKey) -> Result<KeyRecord, EngineError> {
        let (action, intent_action) = if req.import.is_some() {
            ("key.import", "key.import-intent")
        } else {
            ("key.create", "key.create-intent")
        };
        self.audited(caller, action, Some(&req.name), |note| {
            require_role(&self.inventory, caller, &[Role::SecurityOfficer], "create keys")?;
            validate(&req, OffsetDateTime::now_utc().date())?;
            if crate::engine::internal_key(&req.name) && caller.kind != crate::engine::CallerKind::System {
                return Err(EngineError::InvalidInput(format!(
                    "'{}' is the name of a key kms makes for itself; choose another name",
                    req.name
                )));
            }
            if let Some(card) = &req.on_card {
                if req.import.is_some() {
                    return Err(EngineError::InvalidInput(
                        "a key is imported to the HSM, not to a card".into(),
                    ));
                }
                return self.create_on_card(caller, &req, card, note);
            }
            let token_name = self.config.key_token.clone();
            let token = self.hsm.token(&token_name)?;
            let object_id = token.new_object_id()?;
            let now = OffsetDateTime::now_utc();
            let new = self.new_key_record(caller, &req);
            let pending = PendingVersion {
                token: token_name.clone(),
                token_label: token.label().to_owned(),
                token_serial: token.serial().to_owned(),
                object_id: object_id.clone(),
            };
            let intent = self.entry(
                caller,
                intent_action,
                Some(&req.name),
                Some(1),
                crate::inventory::Outcome::Ok,
                Some(format!(
                    "about to {} {} on token {token_name} (serial {}) as cka_id={object_id}",
                    if req.import.is_some() { "import" } else { "generate" },
                    req.key_type,
                    token.serial()
                )),
            );
            let key_id = self
                .inventory
                .insert_pending_key(&new, &pending, now, &intent)?;
            note.key_version = Some(1);

            let label = crate::model::object_label(&req.name, 1);
            let made = match &req.import {
                None => token.generate(req.key_type, &object_id, &label, &req.usage),
                Some(import) => self.import_material(&token, &req, import, &object_id, &label),
            };
            let generated = match made {
                Ok(g) => g,
                Err(e) => {
                    // Remove the intent only once the token provably holds nothing under the id;
                    // otherwise the pending row stays for `kms reconcile` / `kms key abandon`.
                    let clean = match token.exists(&object_id) {
                        Ok(false) => true,
                        Ok(true) => token.destroy(&object_id).is_ok(),
                        Err(_) => false,
                    };
                    if clean {
                        self.inventory.delete_pending_key(&key_id)?;
                    }
                    return Err(e.into());
                }
            };
            let detail = format!(
                "{} {} key: owner={} classification={} usage={} token={} ({}, serial {}) cka_id={}",
                match &req.import {
                    Some(i) if i.plain.is_some() => {
                        "registered (handed over in the clear over mutual TLS, put on the token as a sensitive object)"
                    }
                    Some(_) => "imported (unwrapped on the token under the import key)",
                    None => "created",
                },
                req.key_type,
                req.owner,
                req.classification,
                req.usage,
                token_name,
                token.label(),
                token.serial(),
                object_id
            );
            let entry = self.entry(
                caller,
                action,
                Some(&req.name),
                Some(1),
                crate::inventory::Outcome::Ok,
                Some(detail),
            );
            let mut entry = entry;
            entry.diff = crate::engine::audit::diff(
                serde_json::Value::Null,
                serde_json::json!({
                    "name": new.name, "type": new.key_type, "owner": new.owner,
                    "classification": new.classification, "usage": new.usage,
                    "purpose": new.purpose, "handling": new.handling, "disposal": new.disposal,
                    "expires": new.expires.map(|d| d.to_string()), "rotate_every": new.rotate_every,
                    "labels": new.labels, "token": token_name, "cka_id": object_id.to_hex(),
                }),
            );
            // Every key is backed up before it counts: with a pairing in place, the version is
            // copied to the backup token (and the copy proven) before it becomes active. A failed
            // copy leaves the version pending with the reason; `kms backup sync` finishes it.
            let copy = match self.backup_target() {
                Ok(None) => None,
                Ok(Some(pair)) => {
                    let pending_key = self.inventory.key(&req.name)?;
                    let copied = pending_key
                        .version(1)
                        .ok_or_else(|| {
                            EngineError::Incomplete(format!("key '{}' lost its pending version", req.name))
                        })
                        .and_then(|v| {
                            self.copy_version(
                                &pending_key,
                                v,
                                generated.public_key_der.as_deref(),
                                &pair,
                            )
                        });
                    match copied {
                        Ok(c) => Some(c),
                        Err(e) => return Err(self.copy_failed(caller, &key_id, &req.name, e)),
                    }
                }
                Err(e) => return Err(self.copy_failed(caller, &key_id, &req.name, e)),
            };
            crate::clock::failpoint("create:copied");
            if let Some(c) = &copy {
                entry.detail = entry.detail.take().map(|d| {
                    format!(
                        "{d}; backup copy on token '{}' (serial {}) proven by drill",
                        c.token, c.token_serial
                    )
                });
            }
            let activated = self.inventory.activate_version(
                &key_id,
                1,
                generated.public_key_der.as_deref(),
                copy.as_ref(),
                crate::clock::lifecycle_now(),
                &entry,
            );
            if let Err(e) = activated {
                // Roll the tokens back so no key exists that the record does not show: the
                // backup copy first, then the original.
                if let Some(c) = &copy {
                    if let Err(e2) = self.hsm.token(&c.token).and_then(|t| t.destroy(&c.object_id)) {
                        tracing::error!(error = %e2, token = %c.token, "could not destroy the backup copy of a key that was not created");
                    }
                }
                let undone = token.destroy(&object_id);
                let cleaned = self.inventory.delete_pending_key(&key_id).map(drop);
                let name = &req.name;
                return Err(match (undone, cleaned) {
                    (Ok(_), Ok(())) => EngineError::Incomplete(format!(
                        "key '{name}' was not created: recording it failed ({e}); the objects generated on token '{token_name}' were destroyed and nothing was kept"
                    )),
                    (Ok(_), Err(e2)) => EngineError::Incomplete(format!(
                        "key '{name}' was not created: recording it failed ({e}); its objects on token '{token_name}' were destroyed, but its pending inventory row could not be removed ({e2}); `kms reconcile` reports it"
                    )),
                    (Err(e2), _) => EngineError::Incomplete(format!(
                        "key '{name}' was not created: recording it failed ({e}) and its objects (CKA_ID {object_id}) could not be destroyed on token '{token_name}' ({e2}); `kms reconcile` reports them"
                    )),
                });
            }
            note.recorded = true;
            Ok(self.inventory.key(&req.name)?)
        })
    }

    /// The inventory row of a requested key, with the configured defaults filled in.
    pub(crate) fn new_key_record(&self, caller: &Caller, req: &CreateKey) -> NewKey {
        NewKey {
            name: req.name.clone(),
            key_type: req.key_type,
            owner: req.owner.clone(),
            classification: req.classification,
            usage: req.usage.clone(),
            purpose: req.purpose.clone(),
            handling: req.handling.clone(),
            disposal: req.disposal.clone(),
            expires: req.expires,
            rotate_every: req.rotate_every.unwrap_or(self.config.rotate_every),
            labels: req.labels.clone(),
            created_by: caller.actor.clone(),
            reencrypt_window_secs: req
                .reencrypt_window_secs
                .unwrap_or(self.config.lifecycle.reencrypt_window_secs),
            protect_for: req.protect_for,
            process_for: req.process_for,
            signature: req.signature,
            allow_legacy_encrypt: req.allow_legacy_encrypt,
            origin: if req.import.is_some() {
                KeyOrigin::Imported
            } else {
                KeyOrigin::Generated
            },
            weak_reason: None,
        }
    }

    /// The backup copy of a new version failed: the version stays pending, with the reason on
    /// record, and is not usable. The error says what to do.
    pub(crate) fn copy_failed(
        &self,
        caller: &Caller,
        key_id: &str,
        name: &str,
        e: EngineError,
    ) -> EngineError {
        let reason = format!("backup copy failed: {e}");
        let entry = self.entry(
            caller,
            "key.backup-failed",
            Some(name),
            Some(1),
            crate::inventory::Outcome::Error,
            Some(reason.clone()),
        );
        if let Err(e2) = self
            .inventory
            .set_pending_reason(key_id, 1, &reason, &entry)
        {
            tracing::error!(error = %e2, "could not record why a key is pending");
        }
        EngineError::Incomplete(format!(
            "key '{name}' was generated but is NOT active: its {reason}. It stays pending until `kms backup sync` copies it (or `kms key abandon {name}` removes it)"
        ))
    }
}
