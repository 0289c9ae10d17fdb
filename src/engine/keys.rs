//! Creating keys on the token and reading the inventory.

use std::collections::BTreeMap;

use time::{Date, OffsetDateTime};

use super::policy::{require_role, INVENTORY_READERS};
use super::procedures::{Authority, Place};
use super::{Caller, Engine, EngineError, Refusal};
use crate::duration::HumanDuration;
use crate::inventory::{KeyFilter, KeyRecord, NewKey, PendingVersion};
use crate::model::Role;
use crate::model::{Classification, GrantOp, KeyOrigin, KeyType, OperationSet, SignatureScheme};

/// What an officer asks for with `kms key create`.
#[derive(Debug, Clone)]
pub struct CreateKey {
    pub name: String,
    pub key_type: KeyType,
    pub owner: String,
    pub classification: Classification,
    pub usage: OperationSet,
    pub purpose: String,
    pub handling: String,
    pub disposal: String,
    pub rotate_every: Option<HumanDuration>,
    pub expires: Option<Date>,
    pub labels: BTreeMap<String, String>,
    /// Re-encryption window after a rotation, seconds (default: `[lifecycle] reencrypt_window`).
    pub reencrypt_window_secs: Option<u64>,
    /// Originator usage period of each version (no new sign/encrypt/wrap after it).
    pub protect_for: Option<HumanDuration>,
    /// Recipient usage period of each version (no decrypt/unwrap/verify after it either).
    pub process_for: Option<HumanDuration>,
    /// Generate on a PIV smartcard instead of the HSM.
    pub on_card: Option<OnCard>,
    /// The one signature scheme of an RSA key (default rsa-pss-sha256; rsa-pkcs1-sha256 for
    /// verifiers that need PKCS#1 v1.5).
    pub signature: Option<SignatureScheme>,
    /// Acknowledges a legacy type (des3): needed to create one.
    pub legacy: bool,
    /// A legacy key may still encrypt (otherwise it only decrypts).
    pub allow_legacy_encrypt: bool,
    /// Import wrapped key material instead of generating (BYOK).
    pub import: Option<Import>,
}

/// Key material brought in wrapped under kms's import key (see `hsm/import.rs` for the format).
#[derive(Debug, Clone)]
pub struct Import {
    /// RSA-OAEP(AES key) || AES-KWP(material). Wrapped: no plaintext key here.
    pub wrapped: Vec<u8>,
    /// SubjectPublicKeyInfo DER of an EC or Ed25519 key pair (RSA's comes from the key).
    pub public_key: Option<Vec<u8>>,
    /// A secret key handed over in the clear (KMIP Register over mutual TLS): put on the token
    /// as a sensitive object at once, the buffer zeroised when dropped. `wrapped` is then empty.
    pub plain: Option<PlainKey>,
}

/// Key bytes in the clear, on their way to a token: zeroised on drop, never printed.
#[derive(Clone)]
pub struct PlainKey(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlainKey(<{} bytes>)", self.0.len())
    }
}

/// Where on a card a card-resident key is generated, and how to reach it.
#[derive(Debug, Clone)]
pub struct OnCard {
    pub serial: u32,
    pub slot: String,
    /// Default: the `[cards.SERIAL]` pin source, else prompt.
    pub pin: Option<crate::config::PinSource>,
    pub mgm: Option<crate::config::PinSource>,
    pub force: bool,
}

/// The `token` of a card-resident version in the inventory; its serial is the card's, its CKA_ID
/// the slot number.
pub const CARD_TOKEN: &str = "card";

impl CreateKey {
    /// A request with the required fields; the descriptive ones start empty and rotation and
    /// expiry take the defaults.
    pub fn new(
        name: impl Into<String>,
        key_type: KeyType,
        owner: impl Into<String>,
        classification: Classification,
        usage: OperationSet,
    ) -> CreateKey {
        CreateKey {
            name: name.into(),
            key_type,
            owner: owner.into(),
            classification,
            usage,
            purpose: String::new(),
            handling: String::new(),
            disposal: String::new(),
            rotate_every: None,
            expires: None,
            labels: BTreeMap::new(),
            reencrypt_window_secs: None,
            protect_for: None,
            process_for: None,
            on_card: None,
            signature: None,
            legacy: false,
            allow_legacy_encrypt: false,
            import: None,
        }
    }

    /// A key kms makes for itself (audit checkpoints, the offline-file seal, row integrity):
    /// owned by "kms", restricted, never granted to anyone, kept on the HSM.
    pub(crate) fn internal(
        name: &str,
        key_type: KeyType,
        usage: &str,
        purpose: &str,
        disposal: &str,
    ) -> Result<CreateKey, EngineError> {
        let usage = usage
            .parse()
            .map_err(|e: crate::model::ParseError| EngineError::InvalidInput(e.to_string()))?;
        let mut req = CreateKey::new(name, key_type, "kms", Classification::Restricted, usage);
        req.purpose = format!("{purpose}; used by kms itself only");
        req.handling = "never granted to anyone; generated and kept on the HSMs".into();
        req.disposal = disposal.into();
        Ok(req)
    }
}

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
            if super::internal_key(&req.name) && caller.kind != super::CallerKind::System {
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
            entry.diff = super::audit::diff(
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

    /// A key generated on a PIV card: intent recorded, generated on the card, activated with its
    /// public key. No backup copy: the key cannot leave the card (wrapping does not apply).
    fn create_on_card(
        &self,
        caller: &Caller,
        req: &CreateKey,
        card: &OnCard,
        note: &mut super::audit::AuditNote,
    ) -> Result<KeyRecord, EngineError> {
        if req.key_type != KeyType::EcP384
            || req.usage.iter().any(|op| {
                !matches!(
                    op,
                    crate::model::Operation::Sign | crate::model::Operation::Verify
                )
            })
        {
            return Err(EngineError::InvalidInput(format!(
                "a card-resident key is ec-p384 with usage sign,verify (not {} {})",
                req.key_type, req.usage
            )));
        }
        let slot = crate::smartcard::parse_slot(&card.slot)?;
        let slot_byte = crate::smartcard::slot_name(slot);
        // A slot holding an inventory key or a person's approval key is never overwritten
        // (--force or not): that key would be lost while kms still relies on it.
        if let Some(owner) = self.card_slot_owner(card.serial, &slot_byte)? {
            return Err(EngineError::denied(
                Refusal::KeyState,
                format!(
                    "slot {slot_byte} of card {} already holds {owner}; choose another slot",
                    card.serial
                ),
            ));
        }
        let pin_source = card
            .pin
            .clone()
            .unwrap_or_else(|| self.card_pin_source(card.serial));
        let pin = pin_source.resolve_kind(&format!("card {}", card.serial), "PIV")?;
        let mgm = card
            .mgm
            .as_ref()
            .map(|m| m.resolve_kind(&format!("card {}", card.serial), "management key"))
            .transpose()?;
        let now = OffsetDateTime::now_utc();
        let new = self.new_key_record(caller, req);
        let pending = PendingVersion {
            token: CARD_TOKEN.to_owned(),
            token_label: format!("PIV card {}", card.serial),
            token_serial: card.serial.to_string(),
            object_id: crate::model::ObjectId(hex::decode(&slot_byte).unwrap_or_default()),
        };
        let intent = self.entry(
            caller,
            "key.create-intent",
            Some(&req.name),
            Some(1),
            crate::inventory::Outcome::Ok,
            Some(format!(
                "about to generate ec-p384 on PIV card {} slot {slot_byte}",
                card.serial
            )),
        );
        let key_id = self
            .inventory
            .insert_pending_key(&new, &pending, now, &intent)?;
        note.key_version = Some(1);
        let generated = match crate::smartcard::generate(
            Some(card.serial),
            slot,
            &pin,
            mgm.as_ref(),
            &format!("kms key {} v1", req.name),
            card.force,
        ) {
            Ok(g) => g,
            Err(e) => {
                self.inventory.delete_pending_key(&key_id)?;
                return Err(e.into());
            }
        };
        let mut entry = self.entry(
            caller,
            "key.create",
            Some(&req.name),
            Some(1),
            crate::inventory::Outcome::Ok,
            Some(format!(
                "created ec-p384 key on PIV card {} slot {slot_byte}: owner={} classification={} usage={}; not backed up (a card key cannot be wrapped out of the card){}",
                card.serial,
                req.owner,
                req.classification,
                req.usage,
                generated
                    .replaced
                    .as_deref()
                    .map(|s| format!("; FORCED over the key that was in the slot ({s})"))
                    .unwrap_or_default()
            )),
        );
        entry.diff = super::audit::diff(
            serde_json::Value::Null,
            serde_json::json!({"name": new.name, "type": new.key_type, "owner": new.owner,
                "classification": new.classification, "usage": new.usage,
                "card": card.serial, "slot": slot_byte}),
        );
        self.inventory.activate_version(
            &key_id,
            1,
            Some(&generated.public_key),
            None,
            crate::clock::lifecycle_now(),
            &entry,
        )?;
        note.recorded = true;
        Ok(self.inventory.key(&req.name)?)
    }

    /// The PIN source of card `serial`: its `[cards.SERIAL]` entry, else a prompt.
    pub(crate) fn card_pin_source(&self, serial: u32) -> crate::config::PinSource {
        self.config
            .cards
            .get(&serial.to_string())
            .cloned()
            .unwrap_or(crate::config::PinSource::Prompt)
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

    /// PIN and management key of card `serial`, from the `[cards.SERIAL]` sources.
    pub(crate) fn card_secrets(
        &self,
        serial: u32,
    ) -> Result<(secrecy::SecretString, Option<secrecy::SecretString>), EngineError> {
        let pin = self
            .card_pin_source(serial)
            .resolve_kind(&format!("card {serial}"), "PIV")?;
        let mgm = self
            .config
            .card_mgm_keys
            .get(&serial.to_string())
            .map(|m| m.resolve_kind(&format!("card {serial}"), "management key"))
            .transpose()?;
        Ok((pin, mgm))
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

    /// Remove a key whose creation never finished (every version still `pending`, e.g. after a
    /// crash): destroy whatever the token holds under its CKA_IDs, then delete its rows.
    pub fn abandon_key(&self, caller: &Caller, name: &str) -> Result<usize, EngineError> {
        self.audited(caller, "key.abandon", Some(name), |note| {
            require_role(&self.inventory, caller, &[Role::SecurityOfficer], "abandon keys")?;
            let key = self.inventory.key(name)?;
            if key
                .versions
                .iter()
                .any(|v| v.state != crate::model::VersionState::Pending)
            {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{name}' has a finished version; only an unfinished creation can be abandoned"),
                ));
            }
            if key.origin == KeyOrigin::Adopted {
                // An unfinished adoption: the object was there before kms and stays; only the
                // rows go (its label may already be kms's).
                let grants = self.inventory.delete_pending_key(&key.id)?;
                note.detail = Some(format!(
                    "abandoned an unfinished adoption: the adopted object was left on its token; removed {grants} grant(s) that named it"
                ));
                return Ok(0);
            }
            // Every copy on every token: the version's own token, the copies the inventory
            // records, and every other configured token (a creation killed after its backup copy
            // was made but before activation recorded it leaves an unrecorded copy). The rows go
            // only once a CKA_ID search finds nothing left anywhere, so a failure can be re-run.
            // Each object is destroyed through the one choke point (`destroy_at`): only what
            // is labelled as this pending version, of its type, under its own CKA_ID, and only
            // once every place has been checked.
            let pairs = self.inventory.backup_pairs()?;
            let mut destroyed = 0;
            let mut places: Vec<String> = Vec::new();
            for v in &key.versions {
                self.check_destroy_authority(&key, v, Authority::Abandon)?;
                let own = self.token_for(v)?;
                let mut at = vec![Place {
                    token: v.token.clone(),
                    serial: own.serial().to_owned(),
                    object_id: v.object_id.clone(),
                    copy: false,
                }];
                // Tokens that may hold a copy: the recorded ones, and the backup token when a
                // pairing from this version's token exists (the copy precedes its record).
                let mut required: Vec<&str> = v.copies.iter().map(|c| c.token.as_str()).collect();
                if let Some(b) = &self.config.backup {
                    if pairs.iter().any(|p| p.from_serial == v.token_serial) {
                        required.push(b.token.as_str());
                    }
                }
                for c in &v.copies {
                    at.push(Place {
                        token: c.token.clone(),
                        serial: c.token_serial.clone(),
                        object_id: c.object_id.clone(),
                        copy: true,
                    });
                }
                let names: Vec<String> = self.hsm.names().map(str::to_owned).collect();
                for name in names
                    .iter()
                    .filter(|n| **n != v.token && !v.copies.iter().any(|c| &c.token == *n))
                {
                    let token = match self.hsm.token(name) {
                        Ok(t) => t,
                        Err(e) if required.contains(&name.as_str()) => {
                            return Err(EngineError::Incomplete(format!(
                                "key '{name_k}' v{ver} may have a copy on token '{name}', which cannot be opened ({e}); nothing was removed from the inventory: make the token available and run `kms key abandon {name_k}` again",
                                name_k = key.name,
                                ver = v.version
                            )));
                        }
                        Err(e) => {
                            tracing::warn!(token = %name, error = %e, "abandon: token not reachable; it holds no recorded copy");
                            places.push(format!("'{name}' not reachable (no recorded copy)"));
                            continue;
                        }
                    };
                    at.push(Place {
                        token: name.clone(),
                        serial: token.serial().to_owned(),
                        object_id: v.object_id.clone(),
                        copy: true,
                    });
                }
                let report = self
                    .destroy_at(caller, &key, v, v.state, Authority::Abandon, &at)
                    .map_err(|e| match e {
                        EngineError::Incomplete(m) => EngineError::Incomplete(format!(
                            "{m}; key '{}' stays in the inventory, run `kms key abandon {}` again",
                            key.name, key.name
                        )),
                        other => other,
                    })?;
                for d in &report.tokens {
                    destroyed += d.objects_destroyed;
                    if d.token == v.token
                        || d.objects_destroyed > 0
                        || required.contains(&d.token.as_str())
                    {
                        places.push(format!("'{}' v{}: {}", d.token, v.version, d.objects_destroyed));
                    }
                }
            }
            let grants = self.inventory.delete_pending_key(&key.id)?;
            note.detail = Some(format!(
                "abandoned unfinished key; destroyed {destroyed} token object(s) ({}), none left under its CKA_IDs on any reachable token; removed {grants} grant(s) that named it",
                places.join(", ")
            ));
            Ok(destroyed)
        })
    }

    /// The inventory, filtered. Reading the inventory is audited.
    pub fn list_keys(
        &self,
        caller: &Caller,
        filter: &KeyFilter,
    ) -> Result<Vec<KeyRecord>, EngineError> {
        self.audited(caller, "key.list", None, |note| {
            let mut keys = self.inventory.keys(filter)?;
            let me = super::policy::acting_principal(&self.inventory, caller)?;
            if !INVENTORY_READERS.contains(&me.role) {
                // Others see only the keys they may read; none at all is a refusal.
                let now = OffsetDateTime::now_utc();
                keys.retain(|k| {
                    self.check_grant(caller, &k.name, Some(GrantOp::ReadInventory), now)
                        .is_ok()
                });
                if keys.is_empty() {
                    return Err(EngineError::denied(
                        Refusal::NoGrant,
                        format!("'{}' holds no read-inventory grant", caller.actor),
                    ));
                }
            }
            note.detail = Some(format!("{} keys listed", keys.len()));
            Ok(keys)
        })
    }

    /// One key with all its versions.
    pub fn show_key(&self, caller: &Caller, name: &str) -> Result<KeyRecord, EngineError> {
        self.audited(caller, "key.show", Some(name), |_| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            self.check_inventory_read(caller, name, now)?;
            Ok(key)
        })
    }

    /// The current public key as PEM SubjectPublicKeyInfo.
    /// Any active grant on the key lets a principal read its public key.
    pub fn public_key_pem(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(String, u32), EngineError> {
        self.audited(caller, "key.public", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            // Public keys: anyone who may read the inventory entry or holds any grant on it.
            if self.check_inventory_read(caller, name, now).is_err() {
                self.check_grant(caller, name, None, now)?;
            }
            let version = key.current_version().ok_or_else(|| {
                EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{name}' has no active version"),
                )
            })?;
            note.key_version = Some(version.version);
            let der = version.public_key.as_deref().ok_or_else(|| {
                EngineError::denied(
                    Refusal::NotSupported,
                    format!(
                        "key '{name}' is {} (symmetric) and has no public key",
                        key.key_type
                    ),
                )
            })?;
            let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, der)
                .map_err(|e| EngineError::InvalidInput(format!("cannot encode PEM: {e}")))?;
            Ok((pem, version.version))
        })
    }
}

pub(crate) fn validate(req: &CreateKey, today: Date) -> Result<(), EngineError> {
    let bad = |m: String| Err(EngineError::InvalidInput(m));
    super::access::validate_name(&req.name, "key")?;
    if req.owner.trim().is_empty() {
        return bad("--owner must name the responsible person or team".into());
    }
    if req.usage.is_empty() {
        return bad("--usage must list at least one operation (e.g. sign,verify)".into());
    }
    let supported = req.key_type.supported_operations();
    let unsupported: Vec<&str> = req
        .usage
        .iter()
        .filter(|op| !supported.contains(op))
        .map(|op| op.as_str())
        .collect();
    if !unsupported.is_empty() {
        let can: Vec<&str> = supported.iter().map(|o| o.as_str()).collect();
        return bad(format!(
            "an {} key cannot {}; {} keys support: {}",
            req.key_type,
            unsupported.join(", "),
            req.key_type,
            can.join(", ")
        ));
    }
    validate_type_options(req)?;
    // An imported key may be decrypt-only: it reads what was encrypted elsewhere.
    if req.key_type.family() == crate::model::KeyFamily::Aes
        && req.import.is_none()
        && !req.usage.contains(crate::model::Operation::Encrypt)
        && !(req.usage.contains(crate::model::Operation::Wrap)
            && req.usage.contains(crate::model::Operation::Unwrap))
    {
        return bad(format!(
            "an {} key with usage {} could never protect anything: include encrypt, or both wrap and unwrap",
            req.key_type, req.usage
        ));
    }
    if let (Some(p), Some(q)) = (req.protect_for, req.process_for) {
        if q < p {
            return bad(format!(
                "--process-for {q} is shorter than --protect-for {p}: data protected near the end could never be read"
            ));
        }
    }
    if let Some(expires) = req.expires {
        if expires <= today {
            return bad(format!(
                "--expires {expires} is not in the future (today is {today})"
            ));
        }
    }
    for k in req.labels.keys() {
        if k.is_empty() {
            return bad("labels are written key=value with a non-empty key".into());
        }
    }
    Ok(())
}

/// The options that depend on the key type: the signature scheme, legacy acknowledgement and
/// legacy encryption, HMAC usage.
pub(crate) fn validate_type_options(req: &CreateKey) -> Result<(), EngineError> {
    let bad = |m: String| Err(EngineError::InvalidInput(m));
    let t = req.key_type;
    if let Some(scheme) = req.signature {
        if !t.signature_schemes().contains(&scheme) {
            let can: Vec<&str> = t.signature_schemes().iter().map(|s| s.as_str()).collect();
            return bad(if can.is_empty() {
                format!("--signature {scheme}: {t} keys make no signatures")
            } else {
                format!(
                    "--signature {scheme} does not fit a {t} key; it signs with: {}",
                    can.join(", ")
                )
            });
        }
    }
    if t.is_legacy() && !req.legacy {
        return bad(format!(
            "{t} is a legacy type, kept only to read old data and move it to AES: pass --legacy to create one (a security officer's decision, audited), and plan `kms key migrate NAME --to aes-256`"
        ));
    }
    if !t.is_legacy() && req.legacy {
        return bad(format!(
            "--legacy is for legacy types (des3); {t} is not one"
        ));
    }
    if req.allow_legacy_encrypt && !t.is_legacy() {
        return bad(format!(
            "--allow-legacy-encrypt is for legacy types (des3); {t} is not one"
        ));
    }
    let producing: Vec<&str> = req
        .usage
        .iter()
        .filter(|op| t.legacy_producing(*op))
        .map(|op| op.as_str())
        .collect();
    if !producing.is_empty() && !req.allow_legacy_encrypt {
        return bad(format!(
            "a legacy {t} key only decrypts by default; usage {} needs --allow-legacy-encrypt (recorded in the inventory)",
            producing.join(",")
        ));
    }
    if t.family() == crate::model::KeyFamily::Hmac
        && req.import.is_none()
        && !req.usage.contains(crate::model::Operation::Mac)
    {
        return bad(format!(
            "an {t} key generated on the token needs mac in its usage (mac,verify-mac): a tag nobody can make can never be checked"
        ));
    }
    Ok(())
}
