//! Signing on the token. Digests are computed in software by the caller and only the digest goes
//! to the token: SoftHSM2 2.6.1 lacks CKM_ECDSA_SHA384, and a digest interface also serves callers
//! that send a precomputed digest.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};

use super::objects::KeyClass;
use super::{HsmError, Token};
use crate::model::{Curve, ObjectId};

/// DigestInfo prefix of SHA-256 (RFC 8017 §9.2 note 1): CKM_RSA_PKCS signs DigestInfo || hash.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

impl Token {
    /// ECDSA on any NIST curve over a digest the caller computed with the curve's hash
    /// (CKM_ECDSA); the DER `Ecdsa-Sig-Value` openssl reads.
    pub fn sign_ecdsa(
        &self,
        id: &ObjectId,
        curve: Curve,
        digest: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let raw = self.run(|s| {
            let key = self.handle(s, id, KeyClass::Private)?;
            s.sign(&Mechanism::Ecdsa, key, digest)
                .map_err(HsmError::ck(self.name(), "signing (CKM_ECDSA)"))
        })?;
        crate::softverify::ecdsa_raw_to_der(curve, &raw).map_err(|_| HsmError::BadTokenOutput {
            token: self.name().to_owned(),
            what: "ECDSA signature (expected r||s)",
            len: raw.len(),
        })
    }

    /// Pure Ed25519 over the message itself (CKM_EDDSA, no parameters): 64 bytes, RFC 8032.
    pub fn sign_ed25519(&self, id: &ObjectId, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Private)?;
            let params = EddsaParams::new(EddsaSignatureScheme::Pure);
            s.sign(&Mechanism::Eddsa(params), key, message)
                .map_err(HsmError::ck(self.name(), "signing (CKM_EDDSA)"))
        })
    }

    /// RSASSA-PKCS1-v1_5 over a SHA-256 digest (CKM_RSA_PKCS over the DigestInfo).
    pub fn sign_rsa_pkcs1_sha256(
        &self,
        id: &ObjectId,
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, HsmError> {
        let mut info = SHA256_DIGEST_INFO.to_vec();
        info.extend_from_slice(digest);
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Private)?;
            s.sign(&Mechanism::RsaPkcs, key, &info)
                .map_err(HsmError::ck(self.name(), "signing (CKM_RSA_PKCS)"))
        })
    }

    /// ECDSA P-384 over a SHA-384 digest (CKM_ECDSA); returns the DER `Ecdsa-Sig-Value` that
    /// `openssl dgst -sha384 -verify` reads.
    pub fn sign_ecdsa_p384(&self, id: &ObjectId, digest: &[u8; 48]) -> Result<Vec<u8>, HsmError> {
        let raw = self.run(|s| {
            let key = self.handle(s, id, KeyClass::Private)?;
            s.sign(&Mechanism::Ecdsa, key, digest)
                .map_err(HsmError::ck(self.name(), "signing (CKM_ECDSA)"))
        })?;
        let sig =
            p384::ecdsa::Signature::from_slice(&raw).map_err(|_| HsmError::BadTokenOutput {
                token: self.name().to_owned(),
                what: "ECDSA signature (expected 96 bytes r||s)",
                len: raw.len(),
            })?;
        Ok(sig.to_der().as_bytes().to_vec())
    }

    /// ECDSA P-384 over `message` with a key marked CKA_ALWAYS_AUTHENTICATE (a PIV card's slot 9c
    /// through OpenSC or ykcs11): C_SignInit, then the context-specific login with this token's
    /// PIN, then the signature (CKM_ECDSA_SHA384, the card middleware hashing). DER result.
    pub fn sign_ecdsa_p384_always_authenticate(
        &self,
        id: &ObjectId,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let raw = self.run(|s| {
            let key = self.handle(s, id, KeyClass::Private)?;
            s.sign_init(&Mechanism::EcdsaSha384, key)
                .map_err(HsmError::ck(
                    self.name(),
                    "starting a signature (CKM_ECDSA_SHA384)",
                ))?;
            s.login(
                cryptoki::session::UserType::ContextSpecific,
                Some(self.pin()),
            )
            .map_err(HsmError::ck(
                self.name(),
                "the context-specific login (always-authenticate key)",
            ))?;
            s.sign_update(message)
                .map_err(HsmError::ck(self.name(), "signing (CKM_ECDSA_SHA384)"))?;
            s.sign_final()
                .map_err(HsmError::ck(self.name(), "signing (CKM_ECDSA_SHA384)"))
        })?;
        let sig =
            p384::ecdsa::Signature::from_slice(&raw).map_err(|_| HsmError::BadTokenOutput {
                token: self.name().to_owned(),
                what: "ECDSA signature (expected 96 bytes r||s)",
                len: raw.len(),
            })?;
        Ok(sig.to_der().as_bytes().to_vec())
    }

    /// Whether the private key `id` demands a login before every use (CKA_ALWAYS_AUTHENTICATE).
    pub fn always_authenticate(&self, id: &ObjectId) -> Result<bool, HsmError> {
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Private)?;
            let attrs = s
                .get_attributes(key, &[cryptoki::object::AttributeType::AlwaysAuthenticate])
                .map_err(HsmError::ck(self.name(), "reading CKA_ALWAYS_AUTHENTICATE"))?;
            Ok(attrs
                .iter()
                .any(|a| matches!(a, cryptoki::object::Attribute::AlwaysAuthenticate(true))))
        })
    }

    /// RSASSA-PSS over a SHA-256 digest: MGF1-SHA-256, 32-byte salt (CKM_RSA_PKCS_PSS).
    pub fn sign_rsa_pss_sha256(
        &self,
        id: &ObjectId,
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, HsmError> {
        let params = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        };
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Private)?;
            s.sign(&Mechanism::RsaPkcsPss(params), key, digest)
                .map_err(HsmError::ck(self.name(), "signing (CKM_RSA_PKCS_PSS)"))
        })
    }
}
