//! MACs on the token: HMAC-SHA-256/384 with a generic secret (CKM_SHA256_HMAC, CKM_SHA384_HMAC).
//! Verification is C_Verify, so the comparison with the expected tag happens inside the token and
//! a verify-only key (CKA_SIGN=false) can check tags it could never make.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;

use super::objects::KeyClass;
use super::{HsmError, Token};
use crate::model::{KeyType, ObjectId};

fn mechanism(token: &str, key_type: KeyType) -> Result<Mechanism<'static>, HsmError> {
    match key_type {
        KeyType::HmacSha256 => Ok(Mechanism::Sha256Hmac),
        KeyType::HmacSha384 => Ok(Mechanism::Sha384Hmac),
        other => Err(HsmError::Raw {
            token: token.to_owned(),
            what: format!("{other} keys make no MAC"),
        }),
    }
}

impl Token {
    /// The token's key check value of secret key `id` (CKA_CHECK_VALUE, PKCS#11 2.40: three bytes
    /// derived from the key), or `None` when the token keeps none.
    pub fn check_value(&self, id: &ObjectId) -> Result<Option<Vec<u8>>, HsmError> {
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Secret)?;
            let attrs = s
                .get_attributes(key, &[cryptoki::object::AttributeType::CheckValue])
                .map_err(HsmError::ck(self.name(), "reading CKA_CHECK_VALUE"))?;
            Ok(attrs.into_iter().find_map(|a| match a {
                cryptoki::object::Attribute::CheckValue(v) if !v.is_empty() => Some(v),
                _ => None,
            }))
        })
    }

    /// The full-length HMAC tag of `data` under the secret key `id`.
    pub fn mac(&self, id: &ObjectId, key_type: KeyType, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mech = mechanism(self.name(), key_type)?;
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Secret)?;
            s.sign(&mech, key, data)
                .map_err(HsmError::ck(self.name(), "computing a MAC (C_Sign)"))
        })
    }

    /// Whether `tag` is the HMAC of `data` under `id`, checked by the token (C_Verify).
    pub fn verify_mac(
        &self,
        id: &ObjectId,
        key_type: KeyType,
        data: &[u8],
        tag: &[u8],
    ) -> Result<bool, HsmError> {
        let mech = mechanism(self.name(), key_type)?;
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Secret)?;
            match s.verify(&mech, key, data, tag) {
                Ok(()) => Ok(true),
                Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                    Ok(false)
                }
                Err(e) => Err(HsmError::ck(self.name(), "checking a MAC (C_Verify)")(e)),
            }
        })
    }
}
