//! Data keys: a fresh key generated and wrapped on the token, unwrapped there, and data moved
//! to a key's current version (rewrap, on the token where it can be).

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{split_cbc, uuid_bytes, IssuedDataKey};
use crate::engine::audit::AuditNote;
use crate::engine::{Caller, Engine, EngineError};
use crate::envelope::{self, Algorithm, Header};
use crate::inventory::{KeyRecord, KeyVersion};
use crate::model::{KeyFamily, Operation};
use crate::softverify;

impl Engine {
    /// A fresh 256-bit data key, generated and wrapped on the token under aes-256 key `name`.
    pub fn data_key(&self, caller: &Caller, name: &str) -> Result<IssuedDataKey, EngineError> {
        self.audited(caller, "key.data-key", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            let version = self.authorize_use(caller, &key, Operation::Wrap, None, now, note)?;
            note.key_version = Some(version.version);
            let issued = self.wrap_new_data_key(&key, version, note)?;
            note.detail = Some("issued a 256-bit data key, wrapped on the token".into());
            Ok(issued)
        })
    }

    /// Unwrap (on the token) a data key wrapped under key `name`.
    pub fn unwrap(
        &self,
        caller: &Caller,
        name: &str,
        wrapped: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, u32), EngineError> {
        self.audited(caller, "key.unwrap", Some(name), |note| {
            let (plaintext, version) = self.unwrap_inner(caller, name, wrapped, note)?;
            note.key_version = Some(version);
            note.detail = Some("unwrapped a data key on the token".into());
            Ok((plaintext, version))
        })
    }

    /// Re-wrap a data key under the key's current version (after a rotation). The data key is
    /// unwrapped into a token session object and wrapped again without leaving the token.
    pub fn rewrap(
        &self,
        caller: &Caller,
        name: &str,
        wrapped: &[u8],
    ) -> Result<(Vec<u8>, u32), EngineError> {
        self.rewrap_with(caller, name, wrapped, b"", false)
    }

    /// Move data made with an older version of `name` to its current version: a wrapped data key
    /// (re-wrapped on the token), an AES-GCM ciphertext (decrypted and re-encrypted on the token,
    /// same AAD) or an RSA-OAEP ciphertext. With `break_glass`, a security officer (with a
    /// reason) moves data off a **compromised** version — the one way such data is still read.
    pub fn rewrap_with(
        &self,
        caller: &Caller,
        name: &str,
        data: &[u8],
        aad: &[u8],
        break_glass: bool,
    ) -> Result<(Vec<u8>, u32), EngineError> {
        let action = if break_glass {
            "key.rewrap-break-glass"
        } else {
            "key.rewrap"
        };
        self.audited(caller, action, Some(name), |note| {
            let (header, body) = envelope::parse(data)?;
            let key = self.inventory.key(name)?;
            if header.algorithm == Algorithm::Des3Cbc {
                // Legacy data moves to the key's AES successor (`kms key migrate`).
                let from = if break_glass {
                    self.break_glass_version(caller, &key, &header)?
                } else {
                    self.version_for(caller, &key, &header, Operation::Decrypt, note)?
                };
                let (iv, ct) = split_cbc(body)?;
                return self.migrate_ciphertext(caller, &key, from, &iv, ct, aad, note);
            }
            let now = OffsetDateTime::now_utc();
            let op_from = if header.algorithm == Algorithm::AesKeyWrapPad {
                Operation::Unwrap
            } else {
                Operation::Decrypt
            };
            let from = if break_glass {
                self.break_glass_version(caller, &key, &header)?
            } else {
                self.version_for(caller, &key, &header, op_from, note)?
            };
            let op_to = if header.algorithm == Algorithm::AesKeyWrapPad {
                Operation::Wrap
            } else {
                Operation::Encrypt
            };
            let to = if break_glass {
                crate::engine::policy::authorize_key(&key, op_to, None, now)?
            } else {
                self.authorize_use(caller, &key, op_to, None, now, note)?
            };
            note.key_version = Some(to.version);
            let key_id = uuid_bytes(&key.id)?;
            let out = match (header.algorithm, header.iv) {
                (Algorithm::AesKeyWrapPad, _) => {
                    let from_token = self.token_for(from)?;
                    let to_token = self.token_for(to)?;
                    if from_token.serial() != to_token.serial() {
                        return Err(EngineError::InvalidInput(
                            "re-wrapping across tokens is not supported".into(),
                        ));
                    }
                    let rewrapped =
                        to_token.rewrap_data_key(&from.object_id, body, &to.object_id)?;
                    let h = Header {
                        algorithm: Algorithm::AesKeyWrapPad,
                        key_id,
                        key_version: to.version,
                        iv: None,
                    };
                    note.detail = Some(format!(
                        "re-wrapped a data key from v{} to v{}",
                        from.version, to.version
                    ));
                    let mut out = h.encode();
                    out.extend_from_slice(&rewrapped);
                    out
                }
                (Algorithm::AesGcm, Some(iv)) if key.key_type.family() == KeyFamily::Aes => {
                    let old_aad = header.gcm_aad(aad);
                    let plaintext = self.gcm_open(note, &key, from, &iv, &old_aad, body, &[])?;
                    let mut new_iv = [0u8; envelope::GCM_IV_LEN];
                    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut new_iv);
                    let h = Header {
                        algorithm: Algorithm::AesGcm,
                        key_id,
                        key_version: to.version,
                        iv: Some(new_iv),
                    };
                    let new_aad = h.gcm_aad(aad);
                    let sealed = self.gcm_seal(note, &key, to, &new_iv, &new_aad, &plaintext)?;
                    note.detail = Some(format!(
                        "re-encrypted a ciphertext from v{} to v{} on the token",
                        from.version, to.version
                    ));
                    let mut out = h.encode();
                    out.extend_from_slice(&sealed);
                    out
                }
                (Algorithm::RsaOaepSha1, None) if key.key_type.rsa_bits().is_some() => {
                    let plaintext =
                        self.on_version(note, &key, from, |t, id| t.rsa_oaep_decrypt(id, body))?;
                    let spki = to.public_key.as_deref().ok_or_else(|| {
                        EngineError::InvalidInput(format!("key '{name}' has no stored public key"))
                    })?;
                    let h = Header {
                        algorithm: Algorithm::RsaOaepSha1,
                        key_id,
                        key_version: to.version,
                        iv: None,
                    };
                    note.detail = Some(format!(
                        "re-encrypted a ciphertext from v{} to v{}",
                        from.version, to.version
                    ));
                    let mut out = h.encode();
                    out.extend_from_slice(&softverify::rsa_oaep_encrypt(spki, &plaintext)?);
                    out
                }
                _ => {
                    return Err(EngineError::InvalidInput(format!(
                        "this data's algorithm does not match key '{name}' ({})",
                        key.key_type
                    )))
                }
            };
            if break_glass {
                note.detail = note
                    .detail
                    .take()
                    .map(|d| format!("BREAK-GLASS off compromised v{}: {d}", from.version));
            }
            Ok((out, to.version))
        })
    }

    fn wrap_new_data_key(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        note: &mut AuditNote,
    ) -> Result<IssuedDataKey, EngineError> {
        if key.key_type.family() != KeyFamily::Aes {
            return Err(EngineError::denied(
                crate::engine::Refusal::NotSupported,
                format!(
                    "data keys are wrapped under AES keys (aes-256, aes-128); '{}' is {}",
                    key.name, key.key_type
                ),
            ));
        }
        let dk = self.on_version(note, key, version, |t, id| t.generate_data_key(id))?;
        let header = Header {
            algorithm: Algorithm::AesKeyWrapPad,
            key_id: uuid_bytes(&key.id)?,
            key_version: version.version,
            iv: None,
        };
        let mut wrapped = header.encode();
        wrapped.extend_from_slice(&dk.wrapped);
        Ok(IssuedDataKey {
            plaintext: dk.plaintext,
            wrapped,
            key_version: version.version,
        })
    }

    fn unwrap_inner(
        &self,
        caller: &Caller,
        name: &str,
        wrapped: &[u8],
        note: &mut AuditNote,
    ) -> Result<(Zeroizing<Vec<u8>>, u32), EngineError> {
        let (header, body) = envelope::parse(wrapped)?;
        let key = self.inventory.key(name)?;
        let version = self.version_for(caller, &key, &header, Operation::Unwrap, note)?;
        if header.algorithm != Algorithm::AesKeyWrapPad {
            return Err(EngineError::InvalidInput(
                "this is not a wrapped data key (use decrypt for ciphertexts)".into(),
            ));
        }
        let plaintext =
            self.on_version(note, &key, version, |t, id| t.unwrap_data_key(id, body))?;
        Ok((plaintext, version.version))
    }
}
