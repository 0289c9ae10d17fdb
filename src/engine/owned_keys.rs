//! Keys as objects a door hands out by ID (issue 16): the key an inventory ID names (to a caller
//! with a grant on it), the caller's keys by filter, a key made or registered by kms itself for a
//! principal a standing decision names (owner: that principal, who gets a break-glass grant of
//! the key's usage, audited as such), a key's labels as its owner's attributes, deactivating the
//! current version, and carrying out an approved disposal. Every one authorized and audited here;
//! what a door calls them and how it frames them is the door's.

use time::OffsetDateTime;

use super::keys::CreateKey;
use super::{Caller, Engine, EngineError, NewGrantRequest, Refusal};
use crate::inventory::KeyRecord;
use crate::model::{Classification, KeyType, OperationSet, Role, VersionState};

/// A key kms makes (or puts on the token, with `material`) for the principal asking, when a
/// standing decision lists that principal.
pub struct OwnedKey<'a> {
    /// The audit action.
    pub action: &'a str,
    /// The door, in words for texts and labels (`origin` is its lowercase).
    pub door: &'a str,
    /// The principals that may create keys this way, and where that list is kept (for texts).
    pub may_create: &'a [String],
    pub may_create_source: &'a str,
    /// The name the client gave; kept as the label `name_label`. The kms name is that name when
    /// it is a free, valid kms name, else `{name_prefix}` and a fresh suffix.
    pub requested_name: Option<String>,
    pub name_label: &'a str,
    pub name_prefix: &'a str,
    pub key_type: KeyType,
    pub usage: OperationSet,
    pub material: Option<super::PlainKey>,
    /// Labels to set; the one named `classification_label` (if any) is the key's A8
    /// classification instead, parsed here; without it `classification` applies.
    pub labels: Vec<(String, String)>,
    pub classification_label: &'a str,
    pub classification: Classification,
}

/// A key's state for a door's metadata call.
pub struct KeyStatus {
    pub key: KeyRecord,
    /// Not disposed of, with a current version, not past its expiry.
    pub enabled: bool,
}

/// A change of one label, by the key's owner.
pub struct LabelChange<'a> {
    pub action: &'a str,
    /// The attribute as the door names it (for texts and the audit diff).
    pub attribute: &'a str,
    /// The label it is kept in.
    pub label: &'a str,
    /// `None` deletes.
    pub value: Option<&'a str>,
    /// `Some(true)`: must exist (modify); `Some(false)`: must not (add); `None`: either.
    pub must_exist: Option<bool>,
    /// The attribute every key has (its kms name stands for it while the label is unset): it
    /// can be modified without the label and never added.
    pub always_present: bool,
}

impl Engine {
    /// The key an ID names, if the caller holds any grant on it. A disposed key is gone (its
    /// grants went with it; its record stays).
    pub fn key_by_id(&self, caller: &Caller, id: &str) -> Result<KeyRecord, EngineError> {
        let name = self
            .inventory
            .key_name_by_id(id)?
            .ok_or_else(|| crate::inventory::InventoryError::NoSuchKey(id.to_owned()))?;
        let key = self.inventory.key(&name)?;
        if key.disposed_at.is_some() {
            return Err(crate::inventory::InventoryError::NoSuchKey(format!(
                "{id} (destroyed by its disposal)"
            ))
            .into());
        }
        self.check_grant(caller, &name, None, OffsetDateTime::now_utc())?;
        Ok(key)
    }

    /// [`Engine::key_by_id`], audited as `action`.
    pub fn describe_key(
        &self,
        caller: &Caller,
        id: &str,
        action: &str,
    ) -> Result<KeyRecord, EngineError> {
        self.audited(caller, action, None, |note| {
            let key = self.key_by_id(caller, id)?;
            note.detail = Some(format!("key '{}' ({})", key.name, key.key_type));
            Ok(key)
        })
    }

    /// A key by name with whether it can serve now, for a caller with any grant on it; `accept`
    /// refuses what the door cannot serve.
    pub fn key_status(
        &self,
        caller: &Caller,
        action: &str,
        name: &str,
        accept: &dyn Fn(&KeyRecord) -> Result<(), EngineError>,
    ) -> Result<KeyStatus, EngineError> {
        self.audited(caller, action, Some(name), |note| {
            let key = self.inventory.key(name)?;
            self.check_grant(caller, name, None, OffsetDateTime::now_utc())?;
            accept(&key)?;
            let enabled = key.disposed_at.is_none()
                && key.current_version().is_some()
                && key
                    .expires
                    .is_none_or(|d| crate::clock::lifecycle_now().date() <= d);
            note.key_version = key.current_version().map(|v| v.version);
            note.detail = Some(format!(
                "{} usage {} {}",
                key.key_type,
                key.usage,
                if enabled { "enabled" } else { "disabled" }
            ));
            Ok(KeyStatus { key, enabled })
        })
    }

    /// The caller's keys (any grant, not disposed of) that `filter` keeps. `name` is what the
    /// audit record names.
    pub fn locate(
        &self,
        caller: &Caller,
        action: &str,
        name: Option<&str>,
        filter: &dyn Fn(&KeyRecord) -> bool,
    ) -> Result<Vec<KeyRecord>, EngineError> {
        self.audited(caller, action, name, |note| {
            let now = OffsetDateTime::now_utc();
            let keys: Vec<KeyRecord> = self
                .inventory
                .keys(&Default::default())?
                .into_iter()
                .filter(|k| k.disposed_at.is_none())
                .filter(|k| filter(k))
                .filter(|k| self.check_grant(caller, &k.name, None, now).is_ok())
                .collect();
            note.detail = Some(format!("{} key(s) found", keys.len()));
            Ok(keys)
        })
    }

    /// A key generated on the token (or put there, with `material`), owned by the caller, if
    /// `may_create` names the caller.
    pub fn create_owned_key(
        &self,
        caller: &Caller,
        req: OwnedKey,
    ) -> Result<KeyRecord, EngineError> {
        let door = req.door;
        let given = req.requested_name;
        let name = match given.as_deref() {
            Some(n)
                if super::access::validate_name(n, "key").is_ok()
                    && self.inventory.key(n).is_err() =>
            {
                n.to_owned()
            }
            _ => format!(
                "{}{}",
                req.name_prefix,
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
        };
        let (key_type, usage) = (req.key_type, req.usage);
        self.audited(caller, req.action, Some(&name), |note| {
            if !req.may_create.iter().any(|p| p == &caller.actor) {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    format!(
                        "'{}' may not create or register keys over {door}: a security officer lists the principals that may in {}",
                        caller.actor, req.may_create_source
                    ),
                ));
            }
            let class_label = req.classification_label;
            let classification = match req.labels.iter().find(|(k, _)| k == class_label) {
                Some((_, v)) => v.parse().map_err(|e: crate::model::ParseError| {
                    EngineError::InvalidInput(format!("{class_label}: {e}"))
                })?,
                None => req.classification,
            };
            let mut create = CreateKey::new(
                &name,
                key_type,
                caller.actor.clone(),
                classification,
                usage.clone(),
            );
            create.purpose = format!("created over {door} by '{}'", caller.actor);
            create.handling = format!("kept on the HSM; used over {door} by its owner");
            create.disposal = "dispose with kms key dispose (approvals as for every key)".into();
            create
                .labels
                .insert("origin".into(), door.to_lowercase());
            if let Some(n) = &given {
                create.labels.insert(req.name_label.into(), n.clone());
            }
            for (k, v) in req.labels.iter().filter(|(k, _)| k != class_label) {
                create.labels.insert(k.clone(), v.clone());
            }
            if key_type.rotated_by_owner() {
                create.handling = "a value its owner registered: given back only to its grantees (reveal), never rotated by kms; its owner registers a new value".into();
            }
            create.import = req.material.map(|m| super::Import {
                wrapped: Vec::new(),
                public_key: None,
                plain: Some(m),
            });
            let mut system = self.system_caller();
            system.reason = Some(format!(
                "{door} Create by '{}', allowed by {}",
                caller.actor, req.may_create_source
            ));
            self.create_key(&system, create)?;
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
                    ticket: format!("{door}-CREATE"),
                    justification: format!(
                        "the creator of a key made over {door} ({} lists '{}')",
                        req.may_create_source, caller.actor
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

    /// Destroy a key the only way kms destroys keys: by carrying out its approved disposal (as
    /// `kms key dispose --execute` would: a security officer, after the waiting period; or the
    /// key's owner, as the scheduler does). Without one it is refused. `door` names who asks,
    /// for texts.
    pub fn destroy_by_id(
        &self,
        caller: &Caller,
        id: &str,
        action: &str,
        door: &str,
    ) -> Result<(), EngineError> {
        let key = self.describe_key(caller, id, action)?;
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
                    "{door} by the key's owner '{}': carrying out approved disposal {}",
                    caller.actor, d.id
                ));
                self.execute_disposal(&system, &d.id).map(drop)
            }
            Some(d) => self.execute_disposal(caller, &d.id).map(drop),
            None => Err(EngineError::denied(
                Refusal::WrongState,
                format!(
                    "key '{}' has no approved disposal: kms destroys keys only through the disposal procedure (kms key dispose {} --contract-ref ... --justification ..., verified and approved by two other people); {door} then carries it out",
                    key.name, key.name
                ),
            )),
        }
    }

    /// Set (or delete) one label of a key, by its owner with a grant on it; `accept` refuses
    /// what the door does not let change (checked first, audited). Returns the value it had.
    pub fn set_key_label(
        &self,
        caller: &Caller,
        id: &str,
        change: LabelChange,
        accept: &dyn Fn(&KeyRecord) -> Result<(), EngineError>,
    ) -> Result<Option<String>, EngineError> {
        let LabelChange {
            action,
            attribute,
            label,
            value,
            must_exist,
            always_present,
        } = change;
        self.audited(caller, action, None, |note| {
            let key = self.key_by_id(caller, id)?;
            accept(&key)?;
            if key.owner != caller.actor {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    format!(
                        "only the key's owner ('{}') changes its attributes",
                        key.owner
                    ),
                ));
            }
            let old = key.labels.get(label).cloned();
            match (must_exist, &old) {
                (Some(true), None) if always_present => {}
                (Some(false), None) if always_present => {
                    return Err(EngineError::InvalidInput(format!(
                        "key '{}' has its {attribute} already ('{}'): kms keeps one {attribute} per key (modify it)",
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
                        "key '{}' already has attribute '{attribute}' (modify it instead)",
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

    /// Deactivate the key's current version (a revocation other than compromise): it still
    /// decrypts and verifies what it made, makes nothing new, and is ready for its disposal. By
    /// the key's owner or an officer.
    pub fn deactivate_current(
        &self,
        caller: &Caller,
        id: &str,
        action: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        self.audited(caller, action, None, |note| {
            let key = self.key_by_id(caller, id)?;
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
            let entry = self.change_entry(caller, action, Some(&key.name), note);
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
}
