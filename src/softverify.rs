//! Signature verification and public-key encryption in software, from the SubjectPublicKeyInfo the
//! inventory stored at generation time: no token round trip, and the same checks anyone holding the
//! public key can make.

use p384::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use sha1::Sha1;
use sha2::Sha256;

use crate::model::KeyType;

#[derive(Debug, thiserror::Error)]
pub enum SoftCryptoError {
    #[error("the stored public key cannot be decoded: {0}")]
    BadPublicKey(String),
    #[error("{0} keys have no public half")]
    NotAsymmetric(KeyType),
    #[error("RSA-OAEP with this key encrypts at most {max} bytes, not {given}; use an aes-256 key for bulk data")]
    TooLong { max: usize, given: usize },
    #[error("RSA-OAEP encryption failed: {0}")]
    Encrypt(String),
}

/// Verify `signature` over `message`: ECDSA P-384 / SHA-384 (DER signature) or RSA-PSS / SHA-256
/// with a 32-byte salt. `Ok(false)` for a well-formed call whose signature does not match.
pub fn verify(
    key_type: KeyType,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<bool, SoftCryptoError> {
    let bad_key = |e: &dyn std::fmt::Display| SoftCryptoError::BadPublicKey(e.to_string());
    match key_type {
        KeyType::EcP384 => {
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                .map_err(|e| bad_key(&e))?;
            let Ok(sig) = p384::ecdsa::Signature::from_der(signature) else {
                return Ok(false);
            };
            Ok(key.verify(message, &sig).is_ok())
        }
        KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let key = rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
            let key = rsa::pss::VerifyingKey::<Sha256>::new(key);
            let Ok(sig) = rsa::pss::Signature::try_from(signature) else {
                return Ok(false);
            };
            Ok(key.verify(message, &sig).is_ok())
        }
        KeyType::Aes256 => Err(SoftCryptoError::NotAsymmetric(key_type)),
    }
}

/// What a signature covers: the message itself, or its digest (SHA-384 for EC P-384, SHA-256 for
/// RSA) computed by the caller.
#[derive(Debug, Clone, Copy)]
pub enum Signed<'a> {
    Message(&'a [u8]),
    Digest(&'a [u8]),
}

/// Like [`verify`], over a message or a precomputed digest.
pub fn verify_signed(
    key_type: KeyType,
    spki_der: &[u8],
    signed: Signed<'_>,
    signature: &[u8],
) -> Result<bool, SoftCryptoError> {
    use rsa::signature::hazmat::PrehashVerifier as _;
    match signed {
        Signed::Message(m) => verify(key_type, spki_der, m, signature),
        Signed::Digest(d) => {
            let bad_key = |e: &dyn std::fmt::Display| SoftCryptoError::BadPublicKey(e.to_string());
            match key_type {
                KeyType::EcP384 => {
                    let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der)
                        .map_err(|e| bad_key(&e))?;
                    let Ok(sig) = p384::ecdsa::Signature::from_der(signature) else {
                        return Ok(false);
                    };
                    Ok(key.verify_prehash(d, &sig).is_ok())
                }
                KeyType::Rsa3072 | KeyType::Rsa4096 => {
                    let key = rsa::RsaPublicKey::from_public_key_der(spki_der)
                        .map_err(|e| bad_key(&e))?;
                    let key = rsa::pss::VerifyingKey::<Sha256>::new(key);
                    let Ok(sig) = rsa::pss::Signature::try_from(signature) else {
                        return Ok(false);
                    };
                    Ok(key.verify_prehash(d, &sig).is_ok())
                }
                KeyType::Aes256 => Err(SoftCryptoError::NotAsymmetric(key_type)),
            }
        }
    }
}

/// SubjectPublicKeyInfo DER from a PEM public key (EC P-384 or RSA).
pub fn spki_from_pem(pem: &[u8]) -> Result<Vec<u8>, SoftCryptoError> {
    let text =
        std::str::from_utf8(pem).map_err(|e| SoftCryptoError::BadPublicKey(e.to_string()))?;
    let (label, der) = der::pem::decode_vec(text.as_bytes())
        .map_err(|e| SoftCryptoError::BadPublicKey(e.to_string()))?;
    if label != "PUBLIC KEY" {
        return Err(SoftCryptoError::BadPublicKey(format!(
            "expected a PEM PUBLIC KEY, found {label}"
        )));
    }
    key_type_of_spki(&der)?;
    Ok(der)
}

/// The kind of key an SPKI holds: EC P-384, or RSA (3072/4096 bits).
pub fn key_type_of_spki(der: &[u8]) -> Result<KeyType, SoftCryptoError> {
    use rsa::traits::PublicKeyParts as _;
    if p384::PublicKey::from_public_key_der(der).is_ok() {
        return Ok(KeyType::EcP384);
    }
    match rsa::RsaPublicKey::from_public_key_der(der) {
        Ok(k) if k.size() == 384 => Ok(KeyType::Rsa3072),
        Ok(k) if k.size() == 512 => Ok(KeyType::Rsa4096),
        _ => Err(SoftCryptoError::BadPublicKey(
            "approval keys must be EC P-384 or RSA 3072/4096".into(),
        )),
    }
}

/// RSA-OAEP (SHA-1, MGF1-SHA-1: what SoftHSM2 can decrypt) encryption to the stored public key.
pub fn rsa_oaep_encrypt(spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SoftCryptoError> {
    use rsa::traits::PublicKeyParts as _;
    let key = rsa::RsaPublicKey::from_public_key_der(spki_der)
        .map_err(|e| SoftCryptoError::BadPublicKey(e.to_string()))?;
    let max = key.size().saturating_sub(2 * 20 + 2);
    if plaintext.len() > max {
        return Err(SoftCryptoError::TooLong {
            max,
            given: plaintext.len(),
        });
    }
    key.encrypt(&mut rand::rngs::OsRng, rsa::Oaep::new::<Sha1>(), plaintext)
        .map_err(|e| SoftCryptoError::Encrypt(e.to_string()))
}
