//! MACs (HMAC keys) and legacy keys (3DES): `kms key mac` / `verify-mac`, the legacy report, and
//! `kms key migrate`, which gives a legacy key an AES successor that its data is re-encrypted to
//! through the rewrap path (3DES-CBC in, AES-GCM out).

use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::audit::AuditNote;
use super::keys::CreateKey;
use super::policy::require_role;
use super::{Caller, Engine, EngineError, Refusal};
use crate::envelope::{self, Algorithm, Header};
use crate::inventory::{KeyRecord, KeyVersion};
use crate::model::{KeyFamily, KeyType, Operation, Role};

/// A MAC and the key version that made it.
#[derive(Debug, Clone, Serialize)]
pub struct Mac {
    #[serde(with = "hex_bytes")]
    pub tag: Vec<u8>,
    pub key_version: u32,
    /// `hmac-sha256` or `hmac-sha384`.
    pub algorithm: &'static str,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

/// One legacy key for `kms report legacy`.
#[derive(Debug, Clone, Serialize)]
pub struct LegacyKey {
    pub key: String,
    pub key_type: KeyType,
    pub owner: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its data should have moved to AES: a legacy key is due from its creation.
    #[serde(with = "time::serde::rfc3339")]
    pub due: OffsetDateTime,
    /// `legacy-in-use`, `migrating` (has an AES successor) or `disposed`.
    pub status: &'static str,
    pub allow_legacy_encrypt: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrated_to: Option<String>,
}

impl Engine {
    /// A MAC of `data` made on the token with the key's current version (HMAC keys).
    pub fn mac(&self, caller: &Caller, name: &str, data: &[u8]) -> Result<Mac, EngineError> {
        self.audited(caller, "key.mac", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            let version = self.authorize_use(caller, &key, Operation::Mac, None, now, note)?;
            note.key_version = Some(version.version);
            let tag =
                self.on_version(note, &key, version, |t, id| t.mac(id, key.key_type, data))?;
            note.detail = Some(format!("made a MAC over {} bytes", data.len()));
            Ok(Mac {
                tag,
                key_version: version.version,
                algorithm: key.key_type.as_str(),
            })
        })
    }

    /// Check a MAC on the token (C_Verify): every version that may still verify, newest first,
    /// so tags made before a rotation still check.
    pub fn verify_mac(
        &self,
        caller: &Caller,
        name: &str,
        data: &[u8],
        tag: &[u8],
    ) -> Result<super::VerifyOutcome, EngineError> {
        self.audited(caller, "key.verify-mac", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            let current =
                self.authorize_use(caller, &key, Operation::VerifyMac, None, now, note)?;
            let mut outcome = super::VerifyOutcome {
                valid: false,
                key_version: None,
            };
            let lifecycle_now = crate::clock::lifecycle_now();
            let mut candidates: Vec<&KeyVersion> = key
                .versions
                .iter()
                .filter(|v| {
                    super::policy::version_allows(&key, v, Operation::VerifyMac, lifecycle_now)
                        .is_ok()
                })
                .collect();
            candidates.sort_by_key(|v| std::cmp::Reverse(v.version));
            if candidates.is_empty() {
                candidates.push(current);
            }
            for v in candidates {
                if self.on_version(note, &key, v, |t, id| {
                    t.verify_mac(id, key.key_type, data, tag)
                })? {
                    outcome = super::VerifyOutcome {
                        valid: true,
                        key_version: Some(v.version),
                    };
                    break;
                }
            }
            note.key_version = outcome.key_version;
            note.detail = Some(if outcome.valid {
                "MAC valid".to_owned()
            } else {
                "MAC NOT valid".to_owned()
            });
            Ok(outcome)
        })
    }

    /// `kms report legacy`: every legacy key, its owner and since when its data is due to move.
    pub fn legacy_report(&self, caller: &Caller) -> Result<Vec<LegacyKey>, EngineError> {
        self.audited(caller, "report.legacy", None, |note| {
            require_role(
                &self.inventory,
                caller,
                &[
                    Role::SecurityOfficer,
                    Role::Auditor,
                    Role::SecurityAdmin,
                    Role::Manager,
                ],
                "read the legacy-key report",
            )?;
            let out: Vec<LegacyKey> = self
                .inventory
                .keys(&Default::default())?
                .into_iter()
                .filter(|k| k.key_type.is_legacy())
                .map(|k| LegacyKey {
                    status: if k.disposed_at.is_some() {
                        "disposed"
                    } else if k.migrated_to.is_some() {
                        "migrating"
                    } else {
                        "legacy-in-use"
                    },
                    due: k.created_at,
                    key: k.name,
                    key_type: k.key_type,
                    owner: k.owner,
                    created_at: k.created_at,
                    allow_legacy_encrypt: k.allow_legacy_encrypt,
                    migrated_to: k.migrated_to,
                })
                .collect();
            note.detail = Some(format!("{} legacy key(s)", out.len()));
            Ok(out)
        })
    }

    /// `kms key migrate NAME --to aes-256`: create the AES successor of legacy key `name` (same
    /// owner, classification and A8 fields; usage encrypt,decrypt) and record it, so `kms key
    /// rewrap NAME` moves 3DES ciphertexts to AES-GCM under it and the legacy key encrypts
    /// nothing more. Re-running after a crash finds the successor it made.
    pub fn migrate_key(
        &self,
        caller: &Caller,
        name: &str,
        to: KeyType,
        successor: Option<&str>,
    ) -> Result<KeyRecord, EngineError> {
        self.audited(caller, "key.migrate", Some(name), |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "migrate legacy keys",
            )?;
            let key = self.inventory.key(name)?;
            if !key.key_type.is_legacy() {
                return Err(EngineError::InvalidInput(format!(
                    "key '{name}' is {}, not a legacy type; rotate it instead (`kms key rotate {name}`)",
                    key.key_type
                )));
            }
            if to.family() != KeyFamily::Aes {
                return Err(EngineError::InvalidInput(format!(
                    "a legacy {} key migrates to an AES key (aes-256 or aes-128), not {to}",
                    key.key_type
                )));
            }
            if key.disposed_at.is_some() {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{name}' was disposed of; there is no data left to migrate"),
                ));
            }
            let successor_name = successor
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{name}.{}", to.as_str().replace('-', "")));
            if let Some(existing) = &key.migrated_to {
                if existing != &successor_name {
                    return Err(EngineError::denied(
                        Refusal::KeyState,
                        format!("key '{name}' is already migrating to '{existing}'"),
                    ));
                }
            }
            let successor = match self.inventory.key(&successor_name) {
                Ok(k) if k.labels.get("migrated-from").map(String::as_str) == Some(name) => k,
                Ok(_) => {
                    return Err(EngineError::InvalidInput(format!(
                        "a key named '{successor_name}' exists and is not this key's successor; choose another with --successor"
                    )))
                }
                Err(crate::inventory::InventoryError::NoSuchKey(_)) => {
                    let usage = "encrypt,decrypt"
                        .parse()
                        .map_err(|e: crate::model::ParseError| {
                            EngineError::InvalidInput(e.to_string())
                        })?;
                    let mut req = CreateKey::new(
                        &successor_name,
                        to,
                        key.owner.clone(),
                        key.classification,
                        usage,
                    );
                    req.purpose = format!("AES successor of legacy key '{name}': {}", key.purpose);
                    req.handling = key.handling.clone();
                    req.disposal = key.disposal.clone();
                    req.labels = key.labels.clone();
                    req.labels
                        .insert("migrated-from".into(), name.to_owned());
                    self.create_key(caller, req)?
                }
                Err(e) => return Err(e.into()),
            };
            if key.migrated_to.is_none() {
                note.detail = Some(format!(
                    "legacy {} key '{name}' migrates to {} key '{}': `kms key rewrap {name}` re-encrypts its ciphertexts to AES-GCM; it decrypts only from now on",
                    key.key_type, successor.key_type, successor.name
                ));
                note.diff = super::audit::diff(
                    serde_json::json!({ "migrated_to": null }),
                    serde_json::json!({ "migrated_to": successor.name }),
                );
                let entry = self.change_entry(caller, "key.migrate", Some(name), note);
                self.inventory
                    .set_migrated_to(&key.id, &successor.name, &entry)?;
                note.recorded = true;
            } else {
                note.detail = Some(format!("already migrating to '{}'", successor.name));
            }
            Ok(self.inventory.key(name)?)
        })
    }

    /// The rewrap of a 3DES-CBC ciphertext: decrypted on the token with the legacy key, then
    /// encrypted with AES-GCM on the token under its successor (the caller needs decrypt on the
    /// legacy key and encrypt on the successor). The plaintext exists only in this process's
    /// memory, zeroised when dropped, as for an RSA-OAEP rewrap.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn migrate_ciphertext(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        from: &KeyVersion,
        iv: &[u8; 8],
        ct: &[u8],
        aad: &[u8],
        note: &mut AuditNote,
    ) -> Result<(Vec<u8>, u32), EngineError> {
        let Some(successor_name) = &key.migrated_to else {
            return Err(EngineError::denied(
                Refusal::KeyState,
                format!(
                    "key '{}' has no AES successor yet: `kms key migrate {} --to aes-256` first",
                    key.name, key.name
                ),
            ));
        };
        let successor = self.inventory.key(successor_name)?;
        let now = OffsetDateTime::now_utc();
        let to = self.authorize_use(caller, &successor, Operation::Encrypt, None, now, note)?;
        let plaintext: Zeroizing<Vec<u8>> =
            self.on_version(note, key, from, |t, id| t.des3_cbc_decrypt(id, iv, ct))?;
        let mut new_iv = [0u8; envelope::GCM_IV_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut new_iv);
        let h = Header {
            algorithm: Algorithm::AesGcm,
            key_id: *uuid::Uuid::parse_str(&successor.id)
                .map_err(|e| {
                    EngineError::InvalidInput(format!(
                        "inventory key ID '{}' is not a UUID: {e}",
                        successor.id
                    ))
                })?
                .as_bytes(),
            key_version: to.version,
            iv: Some(new_iv),
        };
        let gcm_aad = h.gcm_aad(aad);
        let sealed = self.gcm_seal(note, &successor, to, &new_iv, &gcm_aad, &plaintext)?;
        note.key_version = Some(from.version);
        note.detail = Some(format!(
            "migrated a 3DES-CBC ciphertext of v{} to AES-GCM under '{}' v{}",
            from.version, successor.name, to.version
        ));
        let mut out = h.encode();
        out.extend_from_slice(&sealed);
        Ok((out, to.version))
    }

    /// A raw 3DES-CBC ciphertext (what `openssl enc -des-ede3-cbc` writes, IV given apart) as the
    /// kms envelope of key `name`'s version `version` (default: the newest that is not
    /// destroyed), so decrypt and rewrap take it. Builds bytes only; the operation that then uses
    /// them is authorized and audited as usual.
    pub fn legacy_envelope(
        &self,
        name: &str,
        version: Option<u32>,
        iv: &[u8; 8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
        let key = self.inventory.key(name)?;
        if key.key_type.family() != KeyFamily::Des3 {
            return Err(EngineError::InvalidInput(format!(
                "--iv is for raw 3DES-CBC ciphertexts of des3 keys; '{name}' is {}",
                key.key_type
            )));
        }
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(8) {
            return Err(EngineError::InvalidInput(format!(
                "a 3DES-CBC ciphertext is whole 8-byte blocks, not {} bytes",
                ciphertext.len()
            )));
        }
        let version = match version {
            Some(v) => v,
            None => key
                .versions
                .iter()
                .rev()
                .find(|v| !v.state.is_destroyed())
                .map(|v| v.version)
                .ok_or_else(|| {
                    EngineError::denied(
                        Refusal::KeyState,
                        format!("key '{name}' has no version left to decrypt with"),
                    )
                })?,
        };
        let h = Header {
            algorithm: Algorithm::Des3Cbc,
            key_id: *uuid::Uuid::parse_str(&key.id)
                .map_err(|e| EngineError::InvalidInput(format!("inventory key ID: {e}")))?
                .as_bytes(),
            key_version: version,
            iv: None,
        };
        let mut out = h.encode();
        out.extend_from_slice(iv);
        out.extend_from_slice(ciphertext);
        Ok(out)
    }
}
