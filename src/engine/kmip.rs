//! The KMIP door's engine side (issue 16): KMIP unique identifiers are inventory key IDs, the
//! caller is the principal of the client certificate, every use needs its A9 grant and is one
//! audit record. Creating keys over KMIP is allowed only to the principals `[kmip] may_create`
//! names — an officer's standing decision, recorded with every key it creates: the key is made by
//! kms itself (owner: the principal), and the principal gets a break-glass grant of the key's
//! usage, audited as such.

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::keys::CreateKey;
use super::policy::authorize_key;
use super::{Caller, Engine, EngineError, NewGrantRequest, Refusal};
use crate::inventory::KeyRecord;
use crate::model::{KeyFamily, KeyType, Operation, OperationSet, Role, VersionState};

/// The template attribute that sets a KMIP-made key's A8 classification (text: confidential,
/// restricted or public); without it, `[kmip] classification` applies.
pub const CLASSIFICATION_ATTRIBUTE: &str = "x-classification";

/// The label that keeps a key's KMIP Name (what a client named it, or renamed it to).
pub const KMIP_NAME: &str = "kmip-name";

/// A key's KMIP Name: its `kmip-name` label, or else its kms name.
pub fn kmip_name(key: &KeyRecord) -> &str {
    key.labels
        .get(KMIP_NAME)
        .map_or(key.name.as_str(), String::as_str)
}

/// An AES-GCM encryption's parts, as KMIP returns them.
pub struct KmipSealed {
    pub ciphertext: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
}

impl Engine {
    /// The key a KMIP unique identifier names, if the caller holds any grant on it.
    pub fn kmip_key(&self, caller: &Caller, uid: &str) -> Result<KeyRecord, EngineError> {
        let name = self
            .inventory
            .key_name_by_id(uid)?
            .ok_or_else(|| crate::inventory::InventoryError::NoSuchKey(uid.to_owned()))?;
        let key = self.inventory.key(&name)?;
        // A destroyed object is gone for KMIP (its grants went with it; the record stays).
        if key.disposed_at.is_some() {
            return Err(crate::inventory::InventoryError::NoSuchKey(format!(
                "{uid} (destroyed by its disposal)"
            ))
            .into());
        }
        self.check_grant(caller, &name, None, OffsetDateTime::now_utc())?;
        Ok(key)
    }

    /// KMIP GetAttributes / Get: the key, audited.
    pub fn kmip_describe(
        &self,
        caller: &Caller,
        uid: &str,
        action: &str,
    ) -> Result<KeyRecord, EngineError> {
        self.audited(caller, action, None, |note| {
            let key = self.kmip_key(caller, uid)?;
            note.detail = Some(format!("key '{}' ({})", key.name, key.key_type));
            Ok(key)
        })
    }

    /// KMIP Locate: the caller's keys (any grant), by name and/or type.
    pub fn kmip_locate(
        &self,
        caller: &Caller,
        name: Option<&str>,
        types: &[KeyFamily],
    ) -> Result<Vec<KeyRecord>, EngineError> {
        self.audited(caller, "kmip.locate", name, |note| {
            let now = OffsetDateTime::now_utc();
            let keys: Vec<KeyRecord> = self
                .inventory
                .keys(&Default::default())?
                .into_iter()
                .filter(|k| k.disposed_at.is_none())
                .filter(|k| name.is_none_or(|n| kmip_name(k) == n || k.name == n))
                .filter(|k| types.is_empty() || types.contains(&k.key_type.family()))
                .filter(|k| self.check_grant(caller, &k.name, None, now).is_ok())
                .collect();
            note.detail = Some(format!("{} key(s) found", keys.len()));
            Ok(keys)
        })
    }

    /// KMIP Create: a key generated on the token, owned by the caller, if `[kmip] may_create`
    /// names the caller.
    pub fn kmip_create(
        &self,
        caller: &Caller,
        name: Option<String>,
        key_type: KeyType,
        usage: OperationSet,
        labels: &[(&str, String)],
    ) -> Result<KeyRecord, EngineError> {
        self.kmip_make(caller, name, key_type, usage, None, labels)
    }

    /// KMIP Register of a symmetric key: the bytes go onto the token as a sensitive object (the
    /// same permission as Create).
    pub fn kmip_register(
        &self,
        caller: &Caller,
        name: Option<String>,
        key_type: KeyType,
        usage: OperationSet,
        material: super::PlainKey,
        labels: &[(&str, String)],
    ) -> Result<KeyRecord, EngineError> {
        self.kmip_make(caller, name, key_type, usage, Some(material), labels)
    }

    fn kmip_make(
        &self,
        caller: &Caller,
        name: Option<String>,
        key_type: KeyType,
        usage: OperationSet,
        material: Option<super::PlainKey>,
        labels: &[(&str, String)],
    ) -> Result<KeyRecord, EngineError> {
        let action = if material.is_some() {
            "kmip.register"
        } else {
            "kmip.create"
        };
        // The KMIP Name is kept as the `kmip-name` label (clients rename what they register);
        // the kms name is that Name when it is a free, valid kms name, else a fresh one.
        let kmip_given = name;
        let name = match kmip_given.as_deref() {
            Some(n)
                if super::access::validate_name(n, "key").is_ok()
                    && self.inventory.key(n).is_err() =>
            {
                n.to_owned()
            }
            _ => format!("kmip-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        self.audited(caller, action, Some(&name), |note| {
            let allowed = self
                .config
                .kmip
                .as_ref()
                .is_some_and(|k| k.may_create.iter().any(|p| p == &caller.actor));
            if !allowed {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    format!(
                        "'{}' may not create or register keys over KMIP: a security officer lists the principals that may in [kmip] may_create",
                        caller.actor
                    ),
                ));
            }
            let kmip = self.config.kmip.as_ref().ok_or_else(|| {
                EngineError::InvalidInput("no [kmip] section".into())
            })?;
            // The A8 classification: `[kmip] classification`, or the client's x-classification.
            let classification = match labels.iter().find(|(k, _)| *k == CLASSIFICATION_ATTRIBUTE) {
                Some((_, v)) => v.parse().map_err(|e: crate::model::ParseError| {
                    EngineError::InvalidInput(format!("{CLASSIFICATION_ATTRIBUTE}: {e}"))
                })?,
                None => kmip.classification,
            };
            let mut req = CreateKey::new(
                &name,
                key_type,
                caller.actor.clone(),
                classification,
                usage.clone(),
            );
            req.purpose = format!("created over KMIP by '{}'", caller.actor);
            req.handling = "kept on the HSM; used over KMIP by its owner".into();
            req.disposal = "dispose with kms key dispose (approvals as for every key)".into();
            req.labels.insert("origin".into(), "kmip".into());
            if let Some(n) = &kmip_given {
                req.labels.insert(KMIP_NAME.into(), n.clone());
            }
            for (k, v) in labels.iter().filter(|(k, _)| *k != CLASSIFICATION_ATTRIBUTE) {
                req.labels.insert((*k).to_owned(), v.clone());
            }
            if key_type.rotated_by_owner() {
                req.handling = "a value its owner registered: given back only to its grantees (reveal), never rotated by kms; its owner registers a new value".into();
            }
            req.import = material.map(|m| super::Import {
                wrapped: Vec::new(),
                public_key: None,
                plain: Some(m),
            });
            let mut system = self.system_caller();
            system.reason = Some(format!(
                "KMIP Create by '{}', allowed by [kmip] may_create",
                caller.actor
            ));
            self.create_key(&system, req)?;
            let mut ops: Vec<&str> = usage.iter().map(|o| o.as_str()).collect();
            ops.push("read-inventory");
            let until = (OffsetDateTime::now_utc() + time::Duration::days(29)).date();
            self.add_grant(
                &system,
                NewGrantRequest {
                    principal: caller.actor.clone(),
                    key: name.clone(),
                    ops: ops.join(",").parse().map_err(|e: crate::model::ParseError| {
                        EngineError::InvalidInput(e.to_string())
                    })?,
                    until,
                    ticket: "KMIP-CREATE".into(),
                    justification: format!(
                        "the creator of a key made over KMIP ([kmip] may_create lists '{}')",
                        caller.actor
                    ),
                },
            )?;
            note.detail = Some(format!(
                "created {key_type} key '{name}' (usage {usage}) for '{}', who holds a grant of its usage until {until}",
                caller.actor
            ));
            Ok(self.inventory.key(&name)?)
        })
    }

    /// KMIP Encrypt: AES-GCM on the token with the current version (IV from the client or
    /// fresh), the tag apart.
    pub fn kmip_encrypt(
        &self,
        caller: &Caller,
        uid: &str,
        plaintext: &[u8],
        iv: Option<&[u8]>,
        aad: &[u8],
    ) -> Result<KmipSealed, EngineError> {
        self.audited(caller, "kmip.encrypt", None, |note| {
            let key = self.kmip_key(caller, uid)?;
            if key.key_type.family() != KeyFamily::Aes {
                return Err(EngineError::denied(
                    Refusal::NotSupported,
                    format!(
                        "key '{}' is {}: KMIP Encrypt is AES-GCM",
                        key.name, key.key_type
                    ),
                ));
            }
            let now = OffsetDateTime::now_utc();
            authorize_key(&key, Operation::Encrypt, None, now)?;
            let v = self.authorize_use(caller, &key, Operation::Encrypt, None, now, note)?;
            note.key_version = Some(v.version);
            let iv: [u8; 12] = match iv {
                None => rand::random(),
                Some(i) => i.try_into().map_err(|_| {
                    EngineError::InvalidInput(format!(
                        "the GCM IV must be 12 bytes, not {}",
                        i.len()
                    ))
                })?,
            };
            let mut sealed = self.on_version(note, &key, v, |t, id| {
                t.aes_gcm_encrypt(id, &iv, aad, plaintext)
            })?;
            let tag = sealed.split_off(sealed.len().saturating_sub(16));
            note.detail = Some(format!(
                "key '{}': encrypted {} bytes",
                key.name,
                plaintext.len()
            ));
            Ok(KmipSealed {
                ciphertext: sealed,
                iv: iv.to_vec(),
                tag,
            })
        })
    }

    /// KMIP Decrypt: AES-GCM, with the newest version that may decrypt and whose tag checks (a
    /// KMIP ciphertext does not say which version made it).
    pub fn kmip_decrypt(
        &self,
        caller: &Caller,
        uid: &str,
        ciphertext: &[u8],
        iv: &[u8],
        tag: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EngineError> {
        self.audited(caller, "kmip.decrypt", None, |note| {
            let key = self.kmip_key(caller, uid)?;
            if key.key_type.family() != KeyFamily::Aes {
                return Err(EngineError::denied(
                    Refusal::NotSupported,
                    format!(
                        "key '{}' is {}: KMIP Decrypt is AES-GCM",
                        key.name, key.key_type
                    ),
                ));
            }
            let iv: [u8; 12] = iv.try_into().map_err(|_| {
                EngineError::InvalidInput(format!("the GCM IV must be 12 bytes, not {}", iv.len()))
            })?;
            let now = OffsetDateTime::now_utc();
            authorize_key(&key, Operation::Decrypt, None, now)?;
            let mut whole = ciphertext.to_vec();
            whole.extend_from_slice(tag);
            let mut last = None;
            // The grant is checked once, with the first version the key's policy lets decrypt;
            // the older ones are then tried under the key's policy alone.
            let mut granted = false;
            for v in key.versions.iter().rev() {
                if authorize_key(&key, Operation::Decrypt, Some(v.version), now).is_err() {
                    continue;
                }
                if !granted {
                    self.authorize_use(
                        caller,
                        &key,
                        Operation::Decrypt,
                        Some(v.version),
                        now,
                        note,
                    )?;
                    granted = true;
                }
                match self.on_version(note, &key, v, |t, id| {
                    t.aes_gcm_decrypt(id, &iv, aad, &whole)
                }) {
                    Ok(pt) => {
                        note.key_version = Some(v.version);
                        note.detail =
                            Some(format!("key '{}': decrypted {} bytes", key.name, pt.len()));
                        return Ok(pt);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                EngineError::denied(
                    Refusal::KeyState,
                    format!("no version of key '{}' may decrypt", key.name),
                )
            }))
        })
    }

    /// KMIP Destroy: kms destroys a key only through its disposal procedure. With an approved
    /// disposal of this key, Destroy carries it out (as `kms key dispose --execute` would: a
    /// security officer, after the waiting period); without one it is refused.
    pub fn kmip_destroy(&self, caller: &Caller, uid: &str) -> Result<(), EngineError> {
        let key = self.kmip_describe(caller, uid, "kmip.destroy")?;
        let approved = self
            .inventory
            .disposals()?
            .into_iter()
            .find(|d| d.key_id == key.id && d.state == "approved");
        match approved {
            // The approvals are the authority (an officer's request, a security admin's and a
            // manager's signatures, the waiting period); the key's owner may trigger the
            // execution, as the scheduler does.
            Some(d) if key.owner == caller.actor && caller.role != Some(Role::SecurityOfficer) => {
                let mut system = self.system_caller();
                system.reason = Some(format!(
                    "KMIP Destroy by the key's owner '{}': carrying out approved disposal {}",
                    caller.actor, d.id
                ));
                self.execute_disposal(&system, &d.id).map(drop)
            }
            Some(d) => self.execute_disposal(caller, &d.id).map(drop),
            None => Err(EngineError::denied(
                Refusal::WrongState,
                format!(
                    "key '{}' has no approved disposal: kms destroys keys only through the disposal procedure (kms key dispose {} --contract-ref ... --justification ..., verified and approved by two other people); KMIP Destroy then carries it out",
                    key.name, key.name
                ),
            )),
        }
    }

    /// KMIP Add/Modify/DeleteAttribute of a custom attribute (`x-…`), kept as a label of the
    /// key: only by the key's owner, with a grant on it. `None` deletes. Returns the value it had.
    pub fn kmip_set_attribute(
        &self,
        caller: &Caller,
        uid: &str,
        attribute: &str,
        value: Option<&str>,
        must_exist: Option<bool>,
    ) -> Result<Option<String>, EngineError> {
        let action = match (value, must_exist) {
            (None, _) => "kmip.delete-attribute",
            (Some(_), Some(true)) => "kmip.modify-attribute",
            _ => "kmip.add-attribute",
        };
        self.audited(caller, action, None, |note| {
            let key = self.kmip_key(caller, uid)?;
            // The KMIP Name is the `kmip-name` label; without one, the kms name stands for it.
            let is_name = attribute == "Name";
            let label = if is_name { KMIP_NAME } else { attribute };
            if !is_name && !attribute.starts_with("x-") {
                return Err(EngineError::denied(
                    Refusal::NotSupported,
                    format!(
                        "'{attribute}' cannot be changed: kms keeps a key's cryptographic attributes and state to its own procedures; Name and custom attributes (x-...) can be"
                    ),
                ));
            }
            if key.owner != caller.actor {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    format!(
                        "only the key's owner ('{}') changes its attributes over KMIP",
                        key.owner
                    ),
                ));
            }
            if let (true, Some(v)) = (is_name, value) {
                if v.trim().is_empty() || v.len() > 255 {
                    return Err(EngineError::InvalidInput(
                        "a Name is 1 to 255 characters".into(),
                    ));
                }
            }
            let old = key.labels.get(label).cloned();
            match (must_exist, &old) {
                // Every key has a Name: its kms name until it is given another.
                (Some(true), None) if is_name => {}
                (Some(false), None) if is_name => {
                    return Err(EngineError::InvalidInput(format!(
                        "key '{}' has its Name already ('{}'): kms keeps one Name per object (use ModifyAttribute)",
                        key.name, key.name
                    )))
                }
                (Some(true), None) => {
                    return Err(EngineError::InvalidInput(format!(
                        "key '{}' has no attribute '{attribute}' to modify",
                        key.name
                    )))
                }
                (Some(false), Some(_)) => {
                    return Err(EngineError::InvalidInput(format!(
                        "key '{}' already has attribute '{attribute}' (use ModifyAttribute)",
                        key.name
                    )))
                }
                _ => {}
            }
            if value.is_none() && old.is_none() {
                return Err(EngineError::InvalidInput(format!(
                    "key '{}' has no attribute '{attribute}' to delete",
                    key.name
                )));
            }
            note.detail = Some(format!(
                "key '{}': {attribute} {} -> {}",
                key.name,
                old.as_deref().unwrap_or("(none)"),
                value.unwrap_or("(deleted)")
            ));
            note.diff = super::audit::diff(
                serde_json::json!({ attribute: old }),
                serde_json::json!({ attribute: value }),
            );
            let entry = self.change_entry(caller, action, Some(&key.name), note);
            self.inventory.set_label(&key.id, label, value, &entry)?;
            note.recorded = true;
            Ok(old)
        })
    }

    /// KMIP Revoke for a reason other than compromise (Cessation of Operation, Superseded,
    /// ...): the current version is deactivated — it still decrypts and verifies what it made,
    /// makes nothing new, and is ready for its disposal. By the key's owner or an officer.
    pub fn kmip_revoke(&self, caller: &Caller, uid: &str, reason: &str) -> Result<(), EngineError> {
        self.audited(caller, "kmip.revoke", None, |note| {
            let key = self.kmip_key(caller, uid)?;
            if key.owner != caller.actor && caller.role != Some(Role::SecurityOfficer) {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    format!(
                        "only the key's owner ('{}') or a security officer revokes it",
                        key.owner
                    ),
                ));
            }
            let Some(v) = key.current_version() else {
                note.detail = Some(format!(
                    "key '{}' has no active version: nothing to revoke ({reason})",
                    key.name
                ));
                return Ok(());
            };
            note.key_version = Some(v.version);
            note.detail = Some(format!(
                "key '{}' v{} revoked ({reason}): deactivated, processes what it made, makes nothing new",
                key.name, v.version
            ));
            note.diff = super::audit::diff(
                serde_json::json!({ "state": v.state.as_str() }),
                serde_json::json!({ "state": VersionState::Deactivated.as_str() }),
            );
            let entry = self.change_entry(caller, "kmip.revoke", Some(&key.name), note);
            self.inventory.set_version_state(
                &key.id,
                v.version,
                &[VersionState::Active],
                VersionState::Deactivated,
                &entry,
            )?;
            note.recorded = true;
            Ok(())
        })
    }

    /// The kms name of a KMIP unique identifier the caller may use (for sign and verify, which
    /// go through the ordinary engine calls).
    pub fn kmip_name(&self, caller: &Caller, uid: &str) -> Result<String, EngineError> {
        Ok(self.kmip_key(caller, uid)?.name)
    }
}
