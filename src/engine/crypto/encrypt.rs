//! Encrypt and decrypt in the self-describing envelope format: AES-GCM and 3DES-CBC on the
//! token, RSA-OAEP encryption in software; and a security officer's break-glass decryption of
//! data made with a compromised version.

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{split_cbc, uuid_bytes};
use crate::engine::{Caller, Engine, EngineError};
use crate::envelope::{self, Algorithm, Header};
use crate::model::{KeyFamily, Operation};
use crate::softverify;

impl Engine {
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
                self.authorize_use(caller, &key, Operation::Encrypt, None, now, note)?;
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
                    crate::engine::Refusal::SeparationOfDuties,
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
}
