//! Keys brought in (BYOK): `kms key import-key` gives the public half of kms's import key (an
//! RSA-3072 key that only unwraps, made on the key token and inventoried like every key);
//! `kms key import` unwraps key material wrapped to it *on the token* (see `hsm/import.rs`) and
//! records it with the same A8 fields, backup copy and audit as a generated key.

use super::keys::{CreateKey, Import};
use super::policy::require_role;
use super::{Caller, Engine, EngineError, Refusal};
use crate::hsm::{GeneratedKey, HsmError, Token};
use crate::inventory::KeyRecord;
use crate::model::{KeyType, ObjectId, Operation, Role};

/// The inventory name of kms's import key.
pub const IMPORT_KEY: &str = "kms-import";

impl Engine {
    /// The import key's public half (PEM), made on first use; what importers wrap to with
    /// RSA-OAEP (SHA-1, MGF1-SHA-1).
    pub fn import_key_pem(&self, caller: &Caller) -> Result<(String, u32), EngineError> {
        require_role(
            &self.inventory,
            caller,
            &[Role::SecurityOfficer],
            "fetch the import key",
        )?;
        let key = self.import_key_record()?;
        let v = key.current_version().ok_or_else(|| {
            EngineError::denied(
                Refusal::KeyState,
                format!("the import key '{IMPORT_KEY}' has no active version (`kms reconcile`)"),
            )
        })?;
        let der = v.public_key.as_deref().ok_or_else(|| {
            EngineError::Incomplete("the import key has no recorded public key".into())
        })?;
        let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, der)
            .map_err(|e| EngineError::InvalidInput(format!("cannot encode PEM: {e}")))?;
        Ok((pem, v.version))
    }

    /// `kms key import`: a key of `req.key_type` from material wrapped to the import key.
    pub fn import_key(
        &self,
        caller: &Caller,
        mut req: CreateKey,
        import: Import,
    ) -> Result<KeyRecord, EngineError> {
        req.import = Some(import);
        self.create_key(caller, req)
    }

    fn import_key_record(&self) -> Result<KeyRecord, EngineError> {
        match self.inventory.key(IMPORT_KEY) {
            Ok(k) => Ok(k),
            Err(crate::inventory::InventoryError::NoSuchKey(_)) => {
                let req = CreateKey::internal(
                    IMPORT_KEY,
                    KeyType::Rsa3072,
                    "unwrap",
                    "unwraps keys brought in wrapped to it (kms key import, BYOK); never decrypts data",
                    "replace (and destroy) once no importer holds its public key any more",
                )?;
                let mut system = self.system_caller();
                system.reason = Some("import key, made on first use".into());
                self.create_key(&system, req)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Unwrap the material on `token` under the import key, then prove a key pair is whole: a
    /// signature made with the imported private key verifies with the public key.
    pub(super) fn import_material(
        &self,
        token: &Token,
        req: &CreateKey,
        import: &Import,
        id: &ObjectId,
        label: &str,
    ) -> Result<GeneratedKey, HsmError> {
        let wrong = |what: String| HsmError::Raw {
            token: token.name().to_owned(),
            what,
        };
        if let Some(plain) = &import.plain {
            return token.create_secret(req.key_type, id, label, &req.usage, &plain.0);
        }
        let key = self
            .import_key_record()
            .map_err(|e| wrong(format!("the import key: {e}")))?;
        let v = key
            .current_version()
            .ok_or_else(|| wrong("the import key has no active version".into()))?;
        if v.token_serial != token.serial() {
            return Err(wrong(format!(
                "the import key lives on token '{}', not on the key token '{}'",
                v.token,
                token.name()
            )));
        }
        let made = token.import_wrapped(
            &v.object_id,
            &import.wrapped,
            req.key_type,
            id,
            label,
            &req.usage,
            import.public_key.as_deref(),
        )?;
        if let (Some(spki), true) = (&made.public_key_der, req.usage.contains(Operation::Sign)) {
            let scheme = req
                .signature
                .or_else(|| req.key_type.signature_schemes().first().copied());
            if let Some(scheme) = scheme {
                let challenge: [u8; 32] = rand::random();
                let proven = super::crypto::prepare(
                    scheme,
                    super::ToSign::Message(&challenge),
                    (&req.name, req.key_type),
                )
                .ok()
                .and_then(|p| super::crypto::sign_prepared(token, id, scheme, &p).ok())
                .and_then(|sig| {
                    crate::softverify::verify_scheme(
                        scheme,
                        spki,
                        crate::softverify::Signed::Message(&challenge),
                        &sig,
                    )
                    .ok()
                })
                .unwrap_or(false);
                if !proven {
                    token.destroy(id)?;
                    return Err(wrong(
                        "the imported private key does not match the public key given: a signature made with it does not verify; nothing was kept".into(),
                    ));
                }
            }
        }
        Ok(made)
    }
}

/// What an officer asks for with `kms key adopt`.
#[derive(Debug, Clone)]
pub struct Adopt {
    /// `pkcs11:token=…;id=…` or `…;object=…` on a configured token (parsed here: a malformed
    /// one is refused as bad input, and audited).
    pub uri: String,
    /// Accept a weak key (extractable in the clear, not sensitive, …) for this reason.
    pub accept_weak: Option<String>,
}

impl Engine {
    /// `kms key adopt`: take a key already on a configured token into the inventory, with the
    /// same A8 fields as a new one. Its protection is checked first: a key that is not sensitive,
    /// or extractable under any key, or was once in the clear, is refused unless an officer
    /// accepts it with a reason (recorded, shown by `key show`). The object is never destroyed
    /// by a failed or abandoned adoption.
    pub fn adopt_key(
        &self,
        caller: &Caller,
        req: CreateKey,
        adopt: Adopt,
    ) -> Result<KeyRecord, EngineError> {
        self.audited(caller, "key.adopt", Some(&req.name), |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "adopt keys",
            )?;
            super::keys::validate(&req, time::OffsetDateTime::now_utc().date())?;
            if super::internal_key(&req.name) {
                return Err(EngineError::InvalidInput(format!(
                    "'{}' is the name of a key kms makes for itself; choose another name",
                    req.name
                )));
            }
            let uri: crate::hsm::Pkcs11Uri = adopt
                .uri
                .parse()
                .map_err(|e: crate::hsm::UriError| EngineError::InvalidInput(e.to_string()))?;
            let token_name = self.token_of_uri(&uri)?;
            let token = self.hsm.token(&token_name)?;
            let found =
                token.inspect_for_adoption(uri.id.as_deref(), uri.object.as_deref())?;
            match found.key_type {
                Some(t) if t == req.key_type => {}
                Some(t) => {
                    return Err(EngineError::InvalidInput(format!(
                        "the key at {} is {t}, not {}: declare --type {t}",
                        uri, req.key_type
                    )))
                }
                None => {
                    return Err(EngineError::InvalidInput(format!(
                        "the key at {} ({}) is not a type kms manages",
                        uri, found.described
                    )))
                }
            }
            let weak = found.weaknesses();
            let weak_reason = match (&adopt.accept_weak, weak.is_empty()) {
                (_, true) => None,
                (Some(why), false) if !why.trim().is_empty() => {
                    Some(format!("{}; accepted: {why}", weak.join("; ")))
                }
                _ => {
                    return Err(EngineError::denied(
                        Refusal::KeyState,
                        format!(
                            "the key at {} is weaker than kms's own keys: {}. Adopt it anyway only with --accept-weak \"REASON\" (recorded in the inventory), or bring it in with `kms key import` as a fresh, sensitive copy",
                            uri,
                            weak.join("; ")
                        ),
                    ))
                }
            };
            for k in self.inventory.keys(&Default::default())? {
                if k.versions
                    .iter()
                    .any(|v| v.token_serial == token.serial() && v.object_id == found.id)
                {
                    return Err(EngineError::denied(
                        Refusal::KeyState,
                        format!(
                            "CKA_ID {} on token '{token_name}' is already key '{}' of the inventory",
                            found.id, k.name
                        ),
                    ));
                }
            }
            let mut new = self.new_key_record(caller, &req);
            new.origin = crate::model::KeyOrigin::Adopted;
            new.weak_reason = weak_reason.clone();
            let pending = crate::inventory::PendingVersion {
                token: token_name.clone(),
                token_label: token.label().to_owned(),
                token_serial: token.serial().to_owned(),
                object_id: found.id.clone(),
            };
            let intent = self.entry(
                caller,
                "key.adopt-intent",
                Some(&req.name),
                Some(1),
                crate::inventory::Outcome::Ok,
                Some(format!(
                    "about to adopt {} at {} (CKA_ID {}) on token {token_name}",
                    req.key_type, uri, found.id
                )),
            );
            let now = time::OffsetDateTime::now_utc();
            let key_id = self
                .inventory
                .insert_pending_key(&new, &pending, now, &intent)?;
            note.key_version = Some(1);
            let label = crate::model::object_label(&req.name, 1);
            let public = token.relabel(&found.id, &label).and_then(|()| {
                if req.key_type.has_public_key() {
                    token.public_key(&found.id, req.key_type).map(Some)
                } else {
                    Ok(None)
                }
            });
            let public = match public {
                Ok(p) => p,
                Err(e) => {
                    self.inventory.delete_pending_key(&key_id)?;
                    return Err(EngineError::Incomplete(format!(
                        "key at {} was not adopted: {e}; the object is left as it was (a key that cannot be relabelled, or has no public-key object under the same CKA_ID, cannot be adopted)",
                        uri
                    )));
                }
            };
            let backed_up = found.extractable && found.wrap_with_trusted;
            let copy = match (backed_up, self.backup_target()) {
                (true, Ok(Some(pair))) => {
                    let pending_key = self.inventory.key(&req.name)?;
                    let copied = pending_key
                        .version(1)
                        .ok_or_else(|| {
                            EngineError::Incomplete(format!("key '{}' lost its pending version", req.name))
                        })
                        .and_then(|v| self.copy_version(&pending_key, v, public.as_deref(), &pair));
                    match copied {
                        Ok(c) => Some(c),
                        Err(e) => return Err(self.copy_failed(caller, &key_id, &req.name, e)),
                    }
                }
                (_, Err(e)) if backed_up => {
                    return Err(self.copy_failed(caller, &key_id, &req.name, e))
                }
                _ => None,
            };
            let mut entry = self.entry(
                caller,
                "key.adopt",
                Some(&req.name),
                Some(1),
                crate::inventory::Outcome::Ok,
                Some(format!(
                    "adopted {} key at {} (CKA_ID {}) on token {token_name}: owner={} classification={} usage={}; {}{}",
                    req.key_type,
                    uri,
                    found.id,
                    req.owner,
                    req.classification,
                    req.usage,
                    match (&copy, backed_up) {
                        (Some(c), _) => format!("backup copy on token '{}' proven by drill", c.token),
                        (None, true) => "no backup pairing yet".to_owned(),
                        (None, false) => "NOT backed up: the key cannot be wrapped out of its token (not extractable under a trusted key)".to_owned(),
                    },
                    weak_reason
                        .as_deref()
                        .map(|w| format!("; WEAK, accepted: {w}"))
                        .unwrap_or_default()
                )),
            );
            entry.diff = super::audit::diff(
                serde_json::Value::Null,
                serde_json::json!({"name": new.name, "type": new.key_type, "owner": new.owner,
                    "classification": new.classification, "usage": new.usage,
                    "origin": "adopted", "token": token_name, "cka_id": found.id.to_hex(),
                    "weak": weak_reason}),
            );
            self.inventory.activate_version(
                &key_id,
                1,
                public.as_deref(),
                copy.as_ref(),
                crate::clock::lifecycle_now(),
                &entry,
            )?;
            note.recorded = true;
            let adopted = self.inventory.key(&req.name)?;
            if !found.extractable {
                // Read from the token just now: this version can never have a backup copy.
                // Recorded once (`backup status` shows it); `backup sync` asks the token again.
                let why = format!(
                    "the {} key is not extractable (CKA_EXTRACTABLE=false on token '{token_name}', read when it was adopted): it can never be wrapped out of its token, so it has no backup copy. Losing that token loses the key; replace it with a key kms generates (`kms key rotate`) if it needs a copy",
                    req.key_type
                );
                let recorded = adopted.version(1).map(|v| {
                    self.record_never_copyable(
                        caller,
                        &adopted,
                        v,
                        token.serial(),
                        crate::hsm::NoCopy::NotExtractable,
                        &why,
                    )
                });
                if let Some(Err(e)) = recorded {
                    tracing::warn!(key = %req.name, error = %e, "could not record that an adopted key can never be copied; the next `kms backup sync` records it");
                }
            }
            Ok(adopted)
        })
    }

    /// The configured token a URI names (by token label or serial).
    fn token_of_uri(&self, uri: &crate::hsm::Pkcs11Uri) -> Result<String, EngineError> {
        if uri.token.is_none() && uri.serial.is_none() {
            return Err(EngineError::InvalidInput(format!(
                "the URI {uri} names no token: add token=LABEL or serial=SERIAL of a configured token"
            )));
        }
        let names: Vec<String> = self.hsm.names().map(str::to_owned).collect();
        for name in &names {
            let d = self.hsm.describe(name)?;
            let label_ok = uri.token.as_deref().is_none_or(|l| l == d.label);
            let serial_ok = uri.serial.as_deref().is_none_or(|s| s == d.serial);
            if label_ok && serial_ok {
                return Ok(name.clone());
            }
        }
        Err(EngineError::InvalidInput(format!(
            "no configured token matches {uri} (configured: {}); kms adopts keys only from tokens in its config",
            names.join(", ")
        )))
    }
}
