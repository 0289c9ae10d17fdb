//! Signature verification and public-key encryption in software, from the SubjectPublicKeyInfo the
//! inventory stored at generation time: no token round trip, and the same checks anyone holding the
//! public key can make.

use p384::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use sha1::Sha1;
use sha2::Sha256;

use crate::model::{Curve, KeyFamily, KeyType, SignatureScheme};

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
    #[error("{0} signs the message itself (pure EdDSA); send the message, not a digest")]
    NoDigest(SignatureScheme),
    #[error("the token's {curve} signature is {len} bytes, not r||s")]
    BadRawSignature { curve: &'static str, len: usize },
}

/// Verify `signature` over `message` with the default scheme of `key_type` (ECDSA with the
/// curve's hash, Ed25519, RSA-PSS / SHA-256 salt 32). `Ok(false)` for a well-formed call whose
/// signature does not match.
pub fn verify(
    key_type: KeyType,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<bool, SoftCryptoError> {
    verify_signed(key_type, spki_der, Signed::Message(message), signature)
}

/// What a signature covers: the message itself, or its digest (the scheme's hash) computed by
/// the caller.
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
    let scheme = key_type
        .signature_schemes()
        .first()
        .copied()
        .ok_or(SoftCryptoError::NotAsymmetric(key_type))?;
    verify_scheme(scheme, spki_der, signed, signature)
}

/// Verify with an explicit signature scheme: what `openssl dgst -verify` / `pkeyutl -verify`
/// accepts for the same key, DER-encoded ECDSA included.
pub fn verify_scheme(
    scheme: SignatureScheme,
    spki_der: &[u8],
    signed: Signed<'_>,
    signature: &[u8],
) -> Result<bool, SoftCryptoError> {
    use rsa::signature::hazmat::PrehashVerifier as _;
    let bad_key = |e: &dyn std::fmt::Display| SoftCryptoError::BadPublicKey(e.to_string());
    macro_rules! ecdsa {
        ($curve:ident, $key:expr) => {{
            let key = $key;
            let Ok(sig) = $curve::ecdsa::Signature::from_der(signature) else {
                return Ok(false);
            };
            Ok(match signed {
                Signed::Message(m) => key.verify(m, &sig).is_ok(),
                Signed::Digest(d) => key.verify_prehash(d, &sig).is_ok(),
            })
        }};
    }
    match scheme {
        SignatureScheme::EcdsaP256Sha256 => ecdsa!(
            p256,
            p256::ecdsa::VerifyingKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?
        ),
        SignatureScheme::EcdsaP384Sha384 => ecdsa!(
            p384,
            p384::ecdsa::VerifyingKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?
        ),
        SignatureScheme::EcdsaP521Sha512 => {
            let public = p521::PublicKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
            ecdsa!(
                p521,
                p521::ecdsa::VerifyingKey::from_affine(*public.as_affine())
                    .map_err(|e| bad_key(&e))?
            )
        }
        SignatureScheme::Ed25519 => {
            let Signed::Message(m) = signed else {
                return Err(SoftCryptoError::NoDigest(scheme));
            };
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(spki_der)
                .map_err(|e| bad_key(&e))?;
            let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                return Ok(false);
            };
            Ok(key.verify_strict(m, &sig).is_ok())
        }
        SignatureScheme::RsaPssSha256 => {
            let key = rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
            let key = rsa::pss::VerifyingKey::<Sha256>::new(key);
            let Ok(sig) = rsa::pss::Signature::try_from(signature) else {
                return Ok(false);
            };
            Ok(match signed {
                Signed::Message(m) => key.verify(m, &sig).is_ok(),
                Signed::Digest(d) => key.verify_prehash(d, &sig).is_ok(),
            })
        }
        SignatureScheme::RsaPkcs1Sha256 => {
            let key = rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
            let key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
            let Ok(sig) = rsa::pkcs1v15::Signature::try_from(signature) else {
                return Ok(false);
            };
            Ok(match signed {
                Signed::Message(m) => key.verify(m, &sig).is_ok(),
                Signed::Digest(d) => key.verify_prehash(d, &sig).is_ok(),
            })
        }
    }
}

/// A token's raw ECDSA signature (r||s, CKM_ECDSA) as the DER Ecdsa-Sig-Value openssl reads.
pub fn ecdsa_raw_to_der(curve: Curve, raw: &[u8]) -> Result<Vec<u8>, SoftCryptoError> {
    let bad = |name| SoftCryptoError::BadRawSignature {
        curve: name,
        len: raw.len(),
    };
    Ok(match curve {
        Curve::P256 => p256::ecdsa::Signature::from_slice(raw)
            .map_err(|_| bad("P-256"))?
            .to_der()
            .as_bytes()
            .to_vec(),
        Curve::P384 => p384::ecdsa::Signature::from_slice(raw)
            .map_err(|_| bad("P-384"))?
            .to_der()
            .as_bytes()
            .to_vec(),
        Curve::P521 => p521::ecdsa::Signature::from_slice(raw)
            .map_err(|_| bad("P-521"))?
            .to_der()
            .as_bytes()
            .to_vec(),
    })
}

/// The SubjectPublicKeyInfo of an EC public point (SEC1) on `curve`, or of an Ed25519 key.
pub fn spki_from_point(key_type: KeyType, point: &[u8]) -> Result<Vec<u8>, SoftCryptoError> {
    use p384::pkcs8::EncodePublicKey as _;
    let bad = |e: &dyn std::fmt::Display| SoftCryptoError::BadPublicKey(e.to_string());
    let der = match key_type.family() {
        KeyFamily::Ec(Curve::P256) => p256::PublicKey::from_sec1_bytes(point)
            .map_err(|e| bad(&e))?
            .to_public_key_der(),
        KeyFamily::Ec(Curve::P384) => p384::PublicKey::from_sec1_bytes(point)
            .map_err(|e| bad(&e))?
            .to_public_key_der(),
        KeyFamily::Ec(Curve::P521) => p521::PublicKey::from_sec1_bytes(point)
            .map_err(|e| bad(&e))?
            .to_public_key_der(),
        KeyFamily::Ed25519 => {
            let bytes: [u8; 32] = point.try_into().map_err(|_| {
                bad(&format!(
                    "an Ed25519 point is 32 bytes, not {}",
                    point.len()
                ))
            })?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|e| bad(&e))?
                .to_public_key_der()
        }
        _ => return Err(SoftCryptoError::NotAsymmetric(key_type)),
    };
    Ok(der.map_err(|e| bad(&e))?.as_bytes().to_vec())
}

/// The raw public point of an EC (SEC1, uncompressed) or Ed25519 (32 bytes) SubjectPublicKeyInfo,
/// checked to be a key of `key_type`.
pub fn point_of_spki(key_type: KeyType, spki_der: &[u8]) -> Result<Vec<u8>, SoftCryptoError> {
    use p384::elliptic_curve::sec1::ToEncodedPoint as _;
    let bad = |e: &dyn std::fmt::Display| {
        SoftCryptoError::BadPublicKey(format!("not a {key_type} public key: {e}"))
    };
    Ok(match key_type.family() {
        KeyFamily::Ec(Curve::P256) => p256::PublicKey::from_public_key_der(spki_der)
            .map_err(|e| bad(&e))?
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
        KeyFamily::Ec(Curve::P384) => p384::PublicKey::from_public_key_der(spki_der)
            .map_err(|e| bad(&e))?
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
        KeyFamily::Ec(Curve::P521) => p521::PublicKey::from_public_key_der(spki_der)
            .map_err(|e| bad(&e))?
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
        KeyFamily::Ed25519 => ed25519_dalek::VerifyingKey::from_public_key_der(spki_der)
            .map_err(|e| bad(&e))?
            .to_bytes()
            .to_vec(),
        _ => return Err(SoftCryptoError::NotAsymmetric(key_type)),
    })
}

/// SubjectPublicKeyInfo DER from any PEM PUBLIC KEY (no type check).
pub fn any_spki_from_pem(pem: &[u8]) -> Result<Vec<u8>, SoftCryptoError> {
    let text =
        std::str::from_utf8(pem).map_err(|e| SoftCryptoError::BadPublicKey(e.to_string()))?;
    let (label, der) = der::pem::decode_vec(text.as_bytes())
        .map_err(|e| SoftCryptoError::BadPublicKey(e.to_string()))?;
    if label != "PUBLIC KEY" {
        return Err(SoftCryptoError::BadPublicKey(format!(
            "expected a PEM PUBLIC KEY, found {label}"
        )));
    }
    Ok(der)
}

/// SubjectPublicKeyInfo DER from a PEM public key (EC P-384 or RSA).
pub fn spki_from_pem(pem: &[u8]) -> Result<Vec<u8>, SoftCryptoError> {
    let der = any_spki_from_pem(pem)?;
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
