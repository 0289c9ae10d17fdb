//! Using keys: sign and decrypt on the token, verify and RSA-encrypt in software from the stored
//! public key, AES-GCM (through `aead.rs`) and data-key wrapping on the token. Each one authorized, audited, and
//! fail-closed.

use sha2::{Digest, Sha256, Sha384, Sha512};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::audit::AuditNote;
use super::{Caller, Engine, EngineError};
use crate::envelope::{self, Algorithm, Header};
use crate::hsm::Token;
use crate::inventory::{KeyRecord, KeyVersion};
use crate::model::{Curve, KeyFamily, ObjectId, Operation, SignatureScheme, VersionState};
use crate::softverify::{self, Signed as SignedData};

/// A signature and the key version that made it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub signature: Vec<u8>,
    pub key_version: u32,
    /// `ecdsa-p384-sha384` or `rsa-pss-sha256`.
    pub algorithm: &'static str,
}

/// The result of a verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyOutcome {
    pub valid: bool,
    /// The version whose public key verified the signature.
    pub key_version: Option<u32>,
}

/// A data key for an application: the plaintext (returned once, by design) and the same key
/// wrapped under the named key, in the self-describing envelope format.
pub struct IssuedDataKey {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub wrapped: Vec<u8>,
    pub key_version: u32,
}

/// What to sign: a message (hashed here) or a digest the caller computed.
#[derive(Debug, Clone, Copy)]
pub enum ToSign<'a> {
    Message(&'a [u8]),
    Digest(&'a [u8]),
}

impl Engine {
    /// Sign `message`: ECDSA P-384 over SHA-384 (DER) or RSA-PSS over SHA-256, salt 32.
    pub fn sign(&self, caller: &Caller, name: &str, message: &[u8]) -> Result<Signed, EngineError> {
        self.sign_data(caller, name, ToSign::Message(message))
    }

    /// Sign a message or a precomputed digest (48 bytes for ec-p384, 32 for RSA).
    pub fn sign_data(
        &self,
        caller: &Caller,
        name: &str,
        data: ToSign<'_>,
    ) -> Result<Signed, EngineError> {
        self.audited(caller, "key.sign", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            let version = self.authorize_use(caller, &key, Operation::Sign, None, now, note)?;
            note.key_version = Some(version.version);
            let scheme = key.signature_scheme().ok_or_else(|| {
                EngineError::InvalidInput(format!(
                    "key '{name}' is {} and cannot sign{}",
                    key.key_type,
                    if key.key_type.family() == KeyFamily::Hmac {
                        " (use `kms key mac`)"
                    } else {
                        ""
                    }
                ))
            })?;
            let algorithm = scheme.as_str();
            let (signature, digest_hex) = if version.token == super::CARD_TOKEN {
                let digest: [u8; 48] = match data {
                    ToSign::Message(m) => Sha384::digest(m).into(),
                    ToSign::Digest(d) => digest_of(d, "SHA-384", &key)?,
                };
                (
                    self.card_sign(version, &digest)?,
                    format!("digest {}", hex::encode(digest)),
                )
            } else {
                let prepared = prepare(scheme, data, (&key.name, key.key_type))?;
                let sig = self.on_version(note, &key, version, |t, id| {
                    sign_prepared(t, id, scheme, &prepared)
                })?;
                (sig, prepared.describe())
            };
            note.detail = Some(format!("signed {digest_hex} ({algorithm})"));
            Ok(Signed {
                signature,
                key_version: version.version,
                algorithm,
            })
        })
    }

    /// Verify in software against every version of the key that still has a public key, newest
    /// first, so signatures made before a rotation still verify.
    pub fn verify(
        &self,
        caller: &Caller,
        name: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<VerifyOutcome, EngineError> {
        self.verify_data(caller, name, ToSign::Message(message), signature)
    }

    /// Verify over a message or a precomputed digest.
    pub fn verify_data(
        &self,
        caller: &Caller,
        name: &str,
        data: ToSign<'_>,
        signature: &[u8],
    ) -> Result<VerifyOutcome, EngineError> {
        self.audited(caller, "key.verify", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            self.authorize_use( caller, &key, Operation::Verify, None, now, note)?;
            let scheme = key.signature_scheme().ok_or_else(|| {
                EngineError::InvalidInput(format!(
                    "key '{name}' is {} and verifies no signatures",
                    key.key_type
                ))
            })?;
            let signed = match data {
                ToSign::Message(m) => SignedData::Message(m),
                ToSign::Digest(d) => {
                    let Some(want) = scheme.digest_len() else {
                        return Err(EngineError::InvalidInput(format!(
                            "key '{name}' ({scheme}) verifies the message itself; send the message, not a digest"
                        )));
                    };
                    if d.len() != want {
                        return Err(EngineError::InvalidInput(format!(
                            "a digest for key '{name}' ({}) must be {want} bytes, not {}",
                            key.key_type,
                            d.len()
                        )));
                    }
                    SignedData::Digest(d)
                }
            };
            let mut outcome = VerifyOutcome {
                valid: false,
                key_version: None,
            };
            let lifecycle_now = crate::clock::lifecycle_now();
            let mut untrusted = None;
            for v in key.versions.iter().rev() {
                let Some(spki) = v.public_key.as_deref() else {
                    continue;
                };
                if v.state == VersionState::Pending {
                    continue;
                }
                if !softverify::verify_scheme(scheme, spki, signed, signature)? {
                    continue;
                }
                match super::policy::version_allows(&key, v, Operation::Verify, lifecycle_now) {
                    Ok(()) => {
                        outcome = VerifyOutcome {
                            valid: true,
                            key_version: Some(v.version),
                        };
                    }
                    Err(e) => untrusted = Some(e.to_string()),
                }
                break;
            }
            note.key_version = outcome.key_version;
            note.detail = Some(match (&outcome.valid, &untrusted) {
                (true, _) => "signature valid".to_owned(),
                (false, Some(why)) => {
                    format!("signature made by a version that is no longer trusted: {why}")
                }
                (false, None) => "signature NOT valid".to_owned(),
            });
            Ok(outcome)
        })
    }

    /// Encrypt to the key's current version, in the self-describing format of [`envelope`].
    pub fn encrypt(
        &self,
        caller: &Caller,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(Vec<u8>, u32), EngineError> {
        self.audited(caller, "key.encrypt", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            let version =
                self.authorize_use( caller, &key, Operation::Encrypt, None, now, note)?;
            note.key_version = Some(version.version);
            let key_id = uuid_bytes(&key.id)?;
            let algorithm = Algorithm::for_key(key.key_type);
            let out = match algorithm {
                Algorithm::AesGcm => {
                    let mut iv = [0u8; envelope::GCM_IV_LEN];
                    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut iv);
                    let header = Header {
                        algorithm,
                        key_id,
                        key_version: version.version,
                        iv: Some(iv),
                    };
                    let gcm_aad = header.gcm_aad(aad);
                    let body = self.gcm_seal(note, &key, version, &iv, &gcm_aad, plaintext)?;
                    let mut out = header.encode();
                    out.extend_from_slice(&body);
                    out
                }
                Algorithm::Des3Cbc => {
                    if !aad.is_empty() {
                        return Err(EngineError::InvalidInput(
                            "3DES-CBC ciphertexts cannot carry additional authenticated data; use an AES key".into(),
                        ));
                    }
                    let iv: [u8; 8] = rand::random();
                    let header = Header {
                        algorithm,
                        key_id,
                        key_version: version.version,
                        iv: None,
                    };
                    let body =
                        self.on_version(note, &key, version, |t, id| t.des3_cbc_encrypt(id, &iv, plaintext))?;
                    let mut out = header.encode();
                    out.extend_from_slice(&iv);
                    out.extend_from_slice(&body);
                    out
                }
                _ => {
                    if !aad.is_empty() {
                        return Err(EngineError::InvalidInput(
                            "RSA-OAEP ciphertexts cannot carry additional authenticated data; drop the AAD or use an aes-256 key".into(),
                        ));
                    }
                    let spki = version.public_key.as_deref().ok_or_else(|| {
                        EngineError::InvalidInput(format!("key '{name}' has no stored public key"))
                    })?;
                    let header = Header {
                        algorithm: Algorithm::RsaOaepSha1,
                        key_id,
                        key_version: version.version,
                        iv: None,
                    };
                    let mut out = header.encode();
                    out.extend_from_slice(&softverify::rsa_oaep_encrypt(spki, plaintext)?);
                    out
                }
            };
            note.detail = Some(format!("encrypted {} bytes", plaintext.len()));
            Ok((out, version.version))
        })
    }

    /// Decrypt a ciphertext made by [`Engine::encrypt`] with this key (any still-active version).
    pub fn decrypt(
        &self,
        caller: &Caller,
        name: &str,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, u32), EngineError> {
        self.audited(caller, "key.decrypt", Some(name), |note| {
            let (header, body) = envelope::parse(ciphertext)?;
            let key = self.inventory.key(name)?;
            let version = self.version_for(caller, &key, &header, Operation::Decrypt, note)?;
            note.key_version = Some(version.version);
            let plaintext = match (header.algorithm, header.iv) {
                (Algorithm::AesGcm, Some(iv)) if key.key_type.family() == KeyFamily::Aes => {
                    let gcm_aad = header.gcm_aad(aad);
                    self.gcm_open(note, &key, version, &iv, &gcm_aad, body, &[])?
                }
                (Algorithm::Des3Cbc, None) if key.key_type.family() == KeyFamily::Des3 => {
                    let (iv, ct) = split_cbc(body)?;
                    self.on_version(note, &key, version, |t, id| t.des3_cbc_decrypt(id, &iv, ct))?
                }
                (Algorithm::RsaOaepSha1, None) if key.key_type.rsa_bits().is_some() => {
                    let modulus_bytes = key.key_type.rsa_bits().unwrap_or(0) as usize / 8;
                    if body.len() != modulus_bytes {
                        return Err(EngineError::InvalidInput(format!(
                            "an RSA-OAEP ciphertext for key '{name}' is {modulus_bytes} bytes, not {}",
                            body.len()
                        )));
                    }
                    self.on_version(note, &key, version, |t, id| t.rsa_oaep_decrypt(id, body))?
                }
                _ => {
                    return Err(EngineError::InvalidInput(format!(
                        "ciphertext algorithm does not match key '{name}' ({})",
                        key.key_type
                    )))
                }
            };
            note.detail = Some(format!("decrypted {} bytes", plaintext.len()));
            Ok((plaintext, version.version))
        })
    }

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
                super::policy::authorize_key(&key, op_to, None, now)?
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

    /// `kms key decrypt --break-glass`: a security officer, with a reason, decrypts data made
    /// with a **compromised** version (to re-encrypt it elsewhere). Audited as break-glass.
    pub fn decrypt_break_glass(
        &self,
        caller: &Caller,
        name: &str,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, u32), EngineError> {
        self.audited(caller, "key.decrypt-break-glass", Some(name), |note| {
            let (header, body) = envelope::parse(ciphertext)?;
            let key = self.inventory.key(name)?;
            let v = self.break_glass_version(caller, &key, &header)?;
            note.key_version = Some(v.version);
            // Plaintext out of a compromised version: never by the officer who declared the
            // compromise (otherwise one officer could compromise any key and read its data).
            let declared_by = self
                .inventory
                .compromises(&key.id)?
                .into_iter()
                .find(|c| c.version == v.version && c.closed_at.is_none())
                .map(|c| c.declared_by);
            if declared_by.as_deref() == Some(caller.actor.as_str()) {
                return Err(EngineError::denied(
                    super::Refusal::SeparationOfDuties,
                    format!(
                        "'{}' declared v{} of '{name}' compromised; a second security officer performs break-glass decryption (or use `kms key rewrap --break-glass`, which never releases the plaintext)",
                        caller.actor, v.version
                    ),
                ));
            }
            let plaintext = match (header.algorithm, header.iv) {
                (Algorithm::AesGcm, Some(iv)) if key.key_type.family() == KeyFamily::Aes => {
                    let a = header.gcm_aad(aad);
                    self.gcm_open(note, &key, v, &iv, &a, body, &[])?
                }
                (Algorithm::RsaOaepSha1, None) if key.key_type.rsa_bits().is_some() => {
                    self.on_version(note, &key, v, |t, id| t.rsa_oaep_decrypt(id, body))?
                }
                (Algorithm::Des3Cbc, None) if key.key_type.family() == KeyFamily::Des3 => {
                    let (iv, ct) = split_cbc(body)?;
                    self.on_version(note, &key, v, |t, id| t.des3_cbc_decrypt(id, &iv, ct))?
                }
                _ => {
                    return Err(EngineError::InvalidInput(format!(
                        "ciphertext algorithm does not match key '{name}' ({})",
                        key.key_type
                    )))
                }
            };
            note.detail = Some(format!(
                "BREAK-GLASS decryption of {} bytes with compromised v{}",
                plaintext.len(),
                v.version
            ));
            Ok((plaintext, v.version))
        })
    }

    /// Sign a SHA-384 digest with a card-resident version (PIN from `[cards.SERIAL]`).
    fn card_sign(&self, version: &KeyVersion, digest: &[u8; 48]) -> Result<Vec<u8>, EngineError> {
        let serial = super::cards::card_serial(&version.token_serial)?;
        let slot = crate::smartcard::parse_slot(&version.object_id.to_hex())?;
        let pin = self
            .card_pin_source(serial)
            .resolve_kind(&format!("card {serial}"), "PIV")?;
        let (_, sig) = crate::smartcard::sign_p384(Some(serial), slot, &pin, digest)?;
        // The slot must still hold this version's key (one overwritten behind kms's back would
        // sign with another key).
        let spki = version.public_key.as_deref().ok_or_else(|| {
            EngineError::Incomplete("the inventory has no public key for this card version".into())
        })?;
        let ok = crate::softverify::verify_signed(
            crate::model::KeyType::EcP384,
            spki,
            crate::softverify::Signed::Digest(digest),
            &sig,
        )?;
        if !ok {
            return Err(EngineError::Incomplete(format!(
                "card {serial} slot {} no longer holds version {}'s key (its signature does not verify with the recorded public key): the card was changed outside kms",
                version.object_id, version.version
            )));
        }
        Ok(sig)
    }

    /// The compromised version a break-glass operation may read: officer, reason, compromised.
    fn break_glass_version<'k>(
        &self,
        caller: &Caller,
        key: &'k KeyRecord,
        header: &Header,
    ) -> Result<&'k KeyVersion, EngineError> {
        super::policy::require_role(
            &self.inventory,
            caller,
            &[crate::model::Role::SecurityOfficer],
            "use the break-glass path",
        )?;
        if caller.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(EngineError::InvalidInput(
                "break-glass needs --reason (the incident and why the data must be read)".into(),
            ));
        }
        if header.key_id != uuid_bytes(&key.id)? {
            return Err(EngineError::InvalidInput(format!(
                "this data was not made with key '{}'",
                key.name
            )));
        }
        let v = key.version(header.key_version).ok_or_else(|| {
            EngineError::InvalidInput(format!(
                "key '{}' has no version {}",
                key.name, header.key_version
            ))
        })?;
        if v.state != VersionState::Compromised {
            return Err(EngineError::denied(
                super::Refusal::KeyState,
                format!(
                    "break-glass is only for data of a compromised version; v{} of '{}' is {} (use the normal path)",
                    v.version, key.name, v.state
                ),
            ));
        }
        Ok(v)
    }

    fn wrap_new_data_key(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        note: &mut AuditNote,
    ) -> Result<IssuedDataKey, EngineError> {
        if key.key_type.family() != KeyFamily::Aes {
            return Err(EngineError::denied(
                super::Refusal::NotSupported,
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

    /// Check a ciphertext/wrapped key names this key, then authorize `op` on the version it names.
    fn version_for<'k>(
        &self,
        caller: &Caller,
        key: &'k KeyRecord,
        header: &Header,
        op: Operation,
        note: &mut AuditNote,
    ) -> Result<&'k KeyVersion, EngineError> {
        if header.key_id != uuid_bytes(&key.id)? {
            return Err(EngineError::InvalidInput(format!(
                "this ciphertext was not made with key '{}' (it names key ID {})",
                key.name,
                uuid::Uuid::from_bytes(header.key_id)
            )));
        }
        let now = OffsetDateTime::now_utc();
        self.authorize_use(caller, key, op, Some(header.key_version), now, note)
    }
}

/// The IV and ciphertext of a 3DES-CBC envelope body.
pub(crate) fn split_cbc(body: &[u8]) -> Result<([u8; 8], &[u8]), EngineError> {
    if body.len() < 16 || !body.len().is_multiple_of(8) {
        return Err(EngineError::InvalidInput(format!(
            "a 3DES-CBC body is an 8-byte IV and whole 8-byte blocks, not {} bytes",
            body.len()
        )));
    }
    let (iv, ct) = body.split_at(8);
    let mut out = [0u8; 8];
    out.copy_from_slice(iv);
    Ok((out, ct))
}

/// What goes to the token for one signature: a digest of the scheme's hash, or (Ed25519) the
/// message itself.
pub(crate) enum Prepared<'a> {
    Digest(Vec<u8>),
    Message(&'a [u8]),
}

impl Prepared<'_> {
    /// For the audit detail: the digest in hex, or the message's length (never its bytes).
    pub(crate) fn describe(&self) -> String {
        match self {
            Prepared::Digest(d) => format!("digest {}", hex::encode(d)),
            Prepared::Message(m) => format!("a {}-byte message", m.len()),
        }
    }
}

/// Hash a message with the scheme's hash, or check a caller's digest has its length.
pub(crate) fn prepare<'a>(
    scheme: SignatureScheme,
    data: ToSign<'a>,
    key: (&str, crate::model::KeyType),
) -> Result<Prepared<'a>, EngineError> {
    let (name, key_type) = key;
    let hash = |m: &[u8]| -> Vec<u8> {
        match scheme {
            SignatureScheme::EcdsaP384Sha384 => Sha384::digest(m).to_vec(),
            SignatureScheme::EcdsaP521Sha512 => Sha512::digest(m).to_vec(),
            _ => Sha256::digest(m).to_vec(),
        }
    };
    match (scheme, data) {
        (SignatureScheme::Ed25519, ToSign::Message(m)) => Ok(Prepared::Message(m)),
        (SignatureScheme::Ed25519, ToSign::Digest(_)) => Err(EngineError::InvalidInput(format!(
            "key '{name}' is ed25519 (pure EdDSA): it signs the message itself; send the message, not a digest"
        ))),
        (_, ToSign::Message(m)) => Ok(Prepared::Digest(hash(m))),
        (_, ToSign::Digest(d)) => {
            let want = scheme.digest_len().unwrap_or(0);
            if d.len() != want {
                return Err(EngineError::InvalidInput(format!(
                    "a digest for key '{name}' ({key_type}, {scheme}) must be {want} bytes, not {}",
                    d.len()
                )));
            }
            Ok(Prepared::Digest(d.to_vec()))
        }
    }
}

/// Sign on `token` with `scheme` what [`prepare`] made.
pub(crate) fn sign_prepared(
    token: &Token,
    id: &ObjectId,
    scheme: SignatureScheme,
    prepared: &Prepared<'_>,
) -> Result<Vec<u8>, crate::hsm::HsmError> {
    match (scheme, prepared) {
        (SignatureScheme::Ed25519, Prepared::Message(m)) => token.sign_ed25519(id, m),
        (SignatureScheme::EcdsaP256Sha256, Prepared::Digest(d)) => {
            token.sign_ecdsa(id, Curve::P256, d)
        }
        (SignatureScheme::EcdsaP384Sha384, Prepared::Digest(d)) => {
            token.sign_ecdsa(id, Curve::P384, d)
        }
        (SignatureScheme::EcdsaP521Sha512, Prepared::Digest(d)) => {
            token.sign_ecdsa(id, Curve::P521, d)
        }
        (SignatureScheme::RsaPssSha256, Prepared::Digest(d)) => {
            token.sign_rsa_pss_sha256(id, &fixed(token, d)?)
        }
        (SignatureScheme::RsaPkcs1Sha256, Prepared::Digest(d)) => {
            token.sign_rsa_pkcs1_sha256(id, &fixed(token, d)?)
        }
        _ => Err(crate::hsm::HsmError::Raw {
            token: token.name().to_owned(),
            what: format!("{scheme} cannot sign this input"),
        }),
    }
}

fn fixed(token: &Token, d: &[u8]) -> Result<[u8; 32], crate::hsm::HsmError> {
    d.try_into().map_err(|_| crate::hsm::HsmError::Raw {
        token: token.name().to_owned(),
        what: format!("a SHA-256 digest is 32 bytes, not {}", d.len()),
    })
}

fn digest_of<const N: usize>(d: &[u8], alg: &str, key: &KeyRecord) -> Result<[u8; N], EngineError> {
    d.try_into().map_err(|_| {
        EngineError::InvalidInput(format!(
            "a digest for key '{}' ({}) must be a {alg} digest of {N} bytes, not {}",
            key.name,
            key.key_type,
            d.len()
        ))
    })
}

fn uuid_bytes(id: &str) -> Result<[u8; 16], EngineError> {
    uuid::Uuid::parse_str(id)
        .map(|u| *u.as_bytes())
        .map_err(|e| {
            EngineError::InvalidInput(format!("inventory key ID '{id}' is not a UUID: {e}"))
        })
}
