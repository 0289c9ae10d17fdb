//! Signing on the token. Digests are computed in software by the caller and only the digest goes
//! to the token: SoftHSM2 2.6.1 lacks CKM_ECDSA_SHA384, and a digest interface also serves callers
//! that send a precomputed digest.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};

use super::objects::KeyClass;
use super::{HsmError, Token};
use crate::model::ObjectId;

impl Token {
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
