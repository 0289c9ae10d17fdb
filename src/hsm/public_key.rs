//! Public-key export as SubjectPublicKeyInfo DER, built from the token's public attributes
//! (CKA_EC_POINT, or CKA_MODULUS + CKA_PUBLIC_EXPONENT) with the RustCrypto encoders.

use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::Session;
use p384::pkcs8::EncodePublicKey as _;

use super::objects::{find, KeyClass};
use super::{HsmError, Token};
use crate::model::{KeyType, ObjectId};

impl Token {
    /// The SPKI DER of the public half of key pair `id`.
    pub fn public_key(&self, id: &ObjectId, key_type: KeyType) -> Result<Vec<u8>, HsmError> {
        self.run(|s| export(self.name(), s, id, key_type))
    }
}

pub(crate) fn export(
    token: &str,
    session: &Session,
    id: &ObjectId,
    key_type: KeyType,
) -> Result<Vec<u8>, HsmError> {
    let bad = |reason: String| HsmError::PublicKey {
        token: token.to_owned(),
        id: id.to_hex(),
        reason,
    };
    let handle = find(token, session, id, KeyClass::Public)?;
    if key_type.rsa_bits().is_some() {
        let attrs = session
            .get_attributes(
                handle,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(HsmError::ck(token, "reading the RSA public key"))?;
        let (mut n, mut e) = (None, None);
        for a in attrs {
            match a {
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                _ => {}
            }
        }
        let (Some(n), Some(e)) = (n, e) else {
            return Err(bad("modulus or exponent missing".into()));
        };
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&n),
            rsa::BigUint::from_bytes_be(&e),
        )
        .map_err(|e| bad(e.to_string()))?;
        let der = key.to_public_key_der().map_err(|e| bad(e.to_string()))?;
        Ok(der.as_bytes().to_vec())
    } else if key_type.has_public_key() {
        let attrs = session
            .get_attributes(handle, &[AttributeType::EcPoint])
            .map_err(HsmError::ck(token, "reading the EC public key"))?;
        let point = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| bad("CKA_EC_POINT missing".into()))?;
        crate::softverify::spki_from_point(key_type, unwrap_octet_string(&point))
            .map_err(|e| bad(e.to_string()))
    } else {
        Err(bad(format!("{key_type} keys have no public half")))
    }
}

/// CKA_EC_POINT is a DER OCTET STRING holding the SEC1 point (PKCS#11 2.40); some modules return
/// the bare point. Accept both.
fn unwrap_octet_string(v: &[u8]) -> &[u8] {
    use der::Decode as _;
    match der::asn1::OctetStringRef::from_der(v) {
        Ok(os) => os.as_bytes(),
        Err(_) => v,
    }
}
