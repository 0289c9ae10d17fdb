//! Using keys: sign and decrypt on the token, verify and RSA-encrypt in software from the stored
//! public key, AES-GCM on the token. Each one authorized, audited, and fail-closed.

use sha2::{Digest, Sha256, Sha384};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::policy::authorize;
use super::{Caller, Engine, EngineError};
use crate::envelope::{self, Algorithm, Header};
use crate::model::{KeyType, Operation, VersionState};
use crate::softverify;

/// A signature and the key version that made it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub signature: Vec<u8>,
    pub key_version: u32,
}

/// The result of a verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyOutcome {
    pub valid: bool,
    /// The version whose public key verified the signature.
    pub key_version: Option<u32>,
}

impl Engine {
    /// Sign `message`: ECDSA P-384 over SHA-384 (DER) or RSA-PSS over SHA-256, salt 32.
    pub fn sign(&self, caller: &Caller, name: &str, message: &[u8]) -> Result<Signed, EngineError> {
        self.audited(caller, "key.sign", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let version = authorize(&key, Operation::Sign, None, OffsetDateTime::now_utc())?;
            note.key_version = Some(version.version);
            let token = self.token_for(version)?;
            let signature = match key.key_type {
                KeyType::EcP384 => {
                    let digest: [u8; 48] = Sha384::digest(message).into();
                    token.sign_ecdsa_p384(&version.object_id, &digest)?
                }
                KeyType::Rsa3072 | KeyType::Rsa4096 => {
                    let digest: [u8; 32] = Sha256::digest(message).into();
                    token.sign_rsa_pss_sha256(&version.object_id, &digest)?
                }
                KeyType::Aes256 => unreachable_by_policy(name)?,
            };
            note.detail = Some(format!(
                "signed {} bytes (sha256 of message {})",
                message.len(),
                hex::encode(Sha256::digest(message))
            ));
            Ok(Signed {
                signature,
                key_version: version.version,
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
        self.audited(caller, "key.verify", Some(name), |note| {
            let key = self.inventory.key(name)?;
            authorize(&key, Operation::Verify, None, OffsetDateTime::now_utc())?;
            let mut outcome = VerifyOutcome {
                valid: false,
                key_version: None,
            };
            for v in key.versions.iter().rev() {
                let Some(spki) = v.public_key.as_deref() else {
                    continue;
                };
                if v.state == VersionState::Pending {
                    continue;
                }
                if softverify::verify(key.key_type, spki, message, signature)? {
                    outcome = VerifyOutcome {
                        valid: true,
                        key_version: Some(v.version),
                    };
                    break;
                }
            }
            note.key_version = outcome.key_version;
            note.detail = Some(if outcome.valid {
                "signature valid".to_owned()
            } else {
                "signature NOT valid".to_owned()
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
    ) -> Result<Vec<u8>, EngineError> {
        self.audited(caller, "key.encrypt", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let version = authorize(&key, Operation::Encrypt, None, OffsetDateTime::now_utc())?;
            note.key_version = Some(version.version);
            let key_id = uuid_bytes(&key.id)?;
            let algorithm = Algorithm::for_key(key.key_type);
            let out = match algorithm {
                Algorithm::Aes256Gcm => {
                    let mut iv = [0u8; envelope::GCM_IV_LEN];
                    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut iv);
                    let header = Header {
                        algorithm,
                        key_id,
                        key_version: version.version,
                        iv: Some(iv),
                    };
                    let token = self.token_for(version)?;
                    let body = token.aes_gcm_encrypt(
                        &version.object_id,
                        &iv,
                        &header.gcm_aad(aad),
                        plaintext,
                    )?;
                    let mut out = header.encode();
                    out.extend_from_slice(&body);
                    out
                }
                Algorithm::RsaOaepSha1 => {
                    if !aad.is_empty() {
                        return Err(EngineError::InvalidInput(
                            "RSA-OAEP ciphertexts cannot carry additional authenticated data; drop --aad or use an aes-256 key".into(),
                        ));
                    }
                    let spki = version.public_key.as_deref().ok_or_else(|| {
                        EngineError::InvalidInput(format!("key '{name}' has no stored public key"))
                    })?;
                    let header = Header {
                        algorithm,
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
            Ok(out)
        })
    }

    /// Decrypt a ciphertext made by [`Engine::encrypt`] with this key (any still-active version).
    pub fn decrypt(
        &self,
        caller: &Caller,
        name: &str,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EngineError> {
        self.audited(caller, "key.decrypt", Some(name), |note| {
            let (header, body) = envelope::parse(ciphertext)?;
            let key = self.inventory.key(name)?;
            if header.key_id != uuid_bytes(&key.id)? {
                return Err(EngineError::InvalidInput(format!(
                    "this ciphertext was not made with key '{name}' (it names key ID {})",
                    uuid::Uuid::from_bytes(header.key_id)
                )));
            }
            note.key_version = Some(header.key_version);
            let version = authorize(
                &key,
                Operation::Decrypt,
                Some(header.key_version),
                OffsetDateTime::now_utc(),
            )?;
            let token = self.token_for(version)?;
            let plaintext = match (header.algorithm, header.iv) {
                (Algorithm::Aes256Gcm, Some(iv)) if key.key_type == KeyType::Aes256 => {
                    token.aes_gcm_decrypt(&version.object_id, &iv, &header.gcm_aad(aad), body)?
                }
                (Algorithm::RsaOaepSha1, None) if key.key_type.rsa_bits().is_some() => {
                    token.rsa_oaep_decrypt(&version.object_id, body)?
                }
                _ => {
                    return Err(EngineError::InvalidInput(format!(
                        "ciphertext algorithm does not match key '{name}' ({})",
                        key.key_type
                    )))
                }
            };
            note.detail = Some(format!("decrypted {} bytes", plaintext.len()));
            Ok(plaintext)
        })
    }
}

fn uuid_bytes(id: &str) -> Result<[u8; 16], EngineError> {
    uuid::Uuid::parse_str(id)
        .map(|u| *u.as_bytes())
        .map_err(|e| {
            EngineError::InvalidInput(format!("inventory key ID '{id}' is not a UUID: {e}"))
        })
}

fn unreachable_by_policy<T>(name: &str) -> Result<T, EngineError> {
    Err(EngineError::Denied(format!("key '{name}' cannot sign")))
}
