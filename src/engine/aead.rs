//! AES-GCM on the token, one path for every door. [`Engine::aead_encrypt`] and
//! [`Engine::aead_decrypt`] find the key, let the door refuse what it cannot serve, authorize
//! (the key's own policy first — what a key cannot do is refused whoever asks — then the
//! caller's grant), run AES-GCM on the token through the failover path and are one audit record.
//! The door supplies its framing of the additional data as a function of the key version, so a
//! door may bind the version into the AAD (or not) without the engine knowing its format.
//!
//! [`Engine::gcm_seal`] and [`Engine::gcm_open`] are the token work alone, for the engine's own
//! envelope format (`crypto/encrypt.rs`), which authorizes before it picks the algorithm.

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::audit::AuditNote;
use super::policy::authorize_key;
use super::{Caller, Engine, EngineError, Refusal};
use crate::envelope::{GCM_IV_LEN, GCM_TAG_LEN};
use crate::inventory::{KeyRecord, KeyVersion};
use crate::model::Operation;

/// Which key an operation names.
#[derive(Debug, Clone, Copy)]
pub enum KeyRef<'a> {
    /// Its kms name.
    Name(&'a str),
    /// Its inventory ID: found only if the caller holds a grant on it and it is not disposed of.
    Id(&'a str),
}

/// The door's part of an AEAD operation.
pub struct Aead<'a> {
    /// The audit action, e.g. `key.encrypt`.
    pub action: &'a str,
    pub key: KeyRef<'a>,
    /// What the door cannot serve (key type, state, malformed input), checked on the key once it
    /// is found and before it is authorized; its refusal is audited like any other.
    pub accept: &'a dyn Fn(&KeyRecord) -> Result<(), EngineError>,
    /// The GCM additional data for a key version.
    pub aad_for_version: &'a dyn Fn(u32) -> Result<Vec<u8>, EngineError>,
}

/// An AES-GCM encryption's parts.
#[derive(Debug)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub iv: [u8; GCM_IV_LEN],
    pub tag: [u8; GCM_TAG_LEN],
    /// The key version that encrypted.
    pub version: u32,
}

impl Engine {
    fn aead_key(&self, caller: &Caller, key: KeyRef) -> Result<KeyRecord, EngineError> {
        match key {
            KeyRef::Name(name) => Ok(self.inventory.key(name)?),
            KeyRef::Id(id) => self.key_by_id(caller, id),
        }
    }

    /// AES-GCM encryption under the key's current version, with the IV given (12 bytes) or a
    /// fresh random one. With `check`, the ciphertext is decrypted once more on the token and
    /// compared with the plaintext before it is returned.
    pub fn aead_encrypt(
        &self,
        caller: &Caller,
        op: Aead,
        plaintext: &[u8],
        iv: Option<&[u8]>,
        check: bool,
    ) -> Result<Sealed, EngineError> {
        let audit_name = match op.key {
            KeyRef::Name(n) => Some(n),
            KeyRef::Id(_) => None,
        };
        self.audited(caller, op.action, audit_name, |note| {
            let key = self.aead_key(caller, op.key)?;
            (op.accept)(&key)?;
            let now = OffsetDateTime::now_utc();
            authorize_key(&key, Operation::Encrypt, None, now)?;
            let version = self.authorize_use(caller, &key, Operation::Encrypt, None, now, note)?;
            note.key_version = Some(version.version);
            let iv = match iv {
                None => rand::random(),
                Some(i) => gcm_iv(i)?,
            };
            let aad = (op.aad_for_version)(version.version)?;
            let mut ciphertext = self.gcm_seal(note, &key, version, &iv, &aad, plaintext)?;
            if ciphertext.len() < GCM_TAG_LEN {
                return Err(EngineError::Incomplete(
                    "the token returned no GCM tag".into(),
                ));
            }
            let tag_bytes = ciphertext.split_off(ciphertext.len() - GCM_TAG_LEN);
            let mut tag = [0u8; GCM_TAG_LEN];
            tag.copy_from_slice(&tag_bytes);
            if check {
                authorize_key(&key, Operation::Decrypt, Some(version.version), now)?;
                let back = self.gcm_open(note, &key, version, &iv, &aad, &ciphertext, &tag)?;
                if back.as_slice() != plaintext {
                    return Err(EngineError::Incomplete(
                        "the ciphertext did not decrypt back to the plaintext on the token".into(),
                    ));
                }
            }
            note.detail = Some(format!(
                "key '{}': encrypted {} bytes (AAD {} bytes){}",
                key.name,
                plaintext.len(),
                aad.len(),
                if check {
                    ", checked by decrypting it back on the token"
                } else {
                    ""
                }
            ));
            Ok(Sealed {
                ciphertext,
                iv,
                tag,
                version: version.version,
            })
        })
    }

    /// AES-GCM decryption with `version`, or (`None`: the ciphertext does not say) with the
    /// newest version that may decrypt and whose tag checks. Returns the plaintext and the
    /// version that decrypted.
    #[allow(clippy::too_many_arguments)]
    pub fn aead_decrypt(
        &self,
        caller: &Caller,
        op: Aead,
        ciphertext: &[u8],
        iv: &[u8],
        tag: &[u8],
        version: Option<u32>,
    ) -> Result<(Zeroizing<Vec<u8>>, u32), EngineError> {
        let audit_name = match op.key {
            KeyRef::Name(n) => Some(n),
            KeyRef::Id(_) => None,
        };
        self.audited(caller, op.action, audit_name, |note| {
            let key = self.aead_key(caller, op.key)?;
            (op.accept)(&key)?;
            let iv = gcm_iv(iv)?;
            let now = OffsetDateTime::now_utc();
            let done = |note: &mut super::audit::AuditNote, v: &KeyVersion, pt: &[u8]| {
                note.key_version = Some(v.version);
                note.detail = Some(format!(
                    "key '{}': decrypted {} bytes with v{}",
                    key.name,
                    pt.len(),
                    v.version
                ));
            };
            if let Some(version) = version {
                authorize_key(&key, Operation::Decrypt, Some(version), now)?;
                let v =
                    self.authorize_use(caller, &key, Operation::Decrypt, Some(version), now, note)?;
                note.key_version = Some(v.version);
                let aad = (op.aad_for_version)(v.version)?;
                let pt = self.gcm_open(note, &key, v, &iv, &aad, ciphertext, tag)?;
                done(note, v, &pt);
                return Ok((pt, v.version));
            }
            authorize_key(&key, Operation::Decrypt, None, now)?;
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
                let aad = (op.aad_for_version)(v.version)?;
                match self.gcm_open(note, &key, v, &iv, &aad, ciphertext, tag) {
                    Ok(pt) => {
                        done(note, v, &pt);
                        return Ok((pt, v.version));
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

    /// AES-GCM encryption on the token with `version` (already authorized): ciphertext || tag.
    pub(crate) fn gcm_seal(
        &self,
        note: &mut AuditNote,
        key: &KeyRecord,
        version: &KeyVersion,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
        self.on_version(note, key, version, |t, id| {
            t.aes_gcm_encrypt(id, iv, aad, plaintext)
        })
    }

    /// AES-GCM decryption on the token with `version` (already authorized); `tag` may be empty
    /// when `ciphertext` ends with it.
    // The token call's own inputs, each distinct; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gcm_open(
        &self,
        note: &mut AuditNote,
        key: &KeyRecord,
        version: &KeyVersion,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EngineError> {
        let joined;
        let whole = if tag.is_empty() {
            ciphertext
        } else {
            let mut w = Vec::with_capacity(ciphertext.len() + tag.len());
            w.extend_from_slice(ciphertext);
            w.extend_from_slice(tag);
            joined = w;
            joined.as_slice()
        };
        self.on_version(note, key, version, |t, id| {
            t.aes_gcm_decrypt(id, iv, aad, whole)
        })
    }
}

fn gcm_iv(iv: &[u8]) -> Result<[u8; GCM_IV_LEN], EngineError> {
    iv.try_into().map_err(|_| {
        EngineError::InvalidInput(format!(
            "the GCM IV must be {GCM_IV_LEN} bytes, not {}",
            iv.len()
        ))
    })
}
