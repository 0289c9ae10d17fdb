//! Object identity: before a version's object is used, the object found under its CKA_ID must be
//! the one the inventory recorded — its label, its key type and, for key pairs, its public key.
//! A CKA_ID re-pointed at another key's object, or an object swapped on the token, is refused.
//! Checked once per token session set (the `Token` instance), then remembered.

use cryptoki::object::{Attribute, AttributeType};
use sha2::{Digest, Sha384};

use super::objects::KeyClass;
use super::{public_key, HsmError, Token};
use crate::model::{KeyType, ObjectId};

/// What the inventory says the object under a CKA_ID is.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub label: &'a str,
    pub key_type: KeyType,
    /// The recorded SubjectPublicKeyInfo (key pairs).
    pub public_key: Option<&'a [u8]>,
}

impl Expected<'_> {
    fn memo(&self, id: &ObjectId) -> [u8; 48] {
        let mut h = Sha384::new();
        h.update(&id.0);
        h.update([0]);
        h.update(self.label.as_bytes());
        h.update([0]);
        h.update(self.key_type.as_str().as_bytes());
        h.update([0]);
        h.update(self.public_key.unwrap_or_default());
        h.finalize().into()
    }
}

impl Token {
    /// Refuse unless the object under `id` is the one `expected` describes.
    pub fn check_identity(&self, id: &ObjectId, expected: &Expected<'_>) -> Result<(), HsmError> {
        let memo = expected.memo(id);
        self.run(|s| {
            let wrong = |why: String| HsmError::WrongObject {
                token: self.name().to_owned(),
                id: id.to_hex(),
                why,
            };
            let class = if expected.key_type.is_symmetric() {
                KeyClass::Secret
            } else {
                KeyClass::Private
            };
            let handle = self.handle(s, id, class)?;
            if self.identity_checked(&memo, handle) {
                return Ok(());
            }
            let attrs = s
                .get_attributes(handle, &[AttributeType::Label, AttributeType::KeyType])
                .map_err(HsmError::ck(
                    self.name(),
                    "reading the key's label and type",
                ))?;
            let (mut label, mut ck_type) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Label(l) => label = Some(String::from_utf8_lossy(&l).into_owned()),
                    Attribute::KeyType(t) => ck_type = Some(t),
                    _ => {}
                }
            }
            if label.as_deref() != Some(expected.label) {
                return Err(wrong(format!(
                    "it is labelled '{}', not '{}'",
                    label.unwrap_or_default(),
                    expected.label
                )));
            }
            let want = super::keygen::ck_key_type(expected.key_type);
            if ck_type != Some(want) {
                return Err(wrong(format!(
                    "its key type is {ck_type:?}, not {}",
                    expected.key_type
                )));
            }
            if let Some(recorded) = expected.public_key {
                let spki = public_key::export(self.name(), s, id, expected.key_type)?;
                if spki != recorded {
                    return Err(wrong(
                        "its public key is not the one the inventory recorded".into(),
                    ));
                }
            }
            self.remember_identity(memo, handle);
            Ok(())
        })
    }
}

/// The checks of [`Token::check_identity`] that a session without a login can make, on the
/// public half of key pair `id`: its label, key type and public key. (The private half, and any
/// secret key, is a private object: only a login shows it.) `Ok(false)` when the token holds no
/// public object under `id`.
pub(crate) fn check_public_identity(
    token: &str,
    s: &cryptoki::session::Session,
    id: &ObjectId,
    expected: &Expected<'_>,
) -> Result<bool, HsmError> {
    let wrong = |why: String| HsmError::WrongObject {
        token: token.to_owned(),
        id: id.to_hex(),
        why,
    };
    let handle = match super::objects::find(token, s, id, KeyClass::Public) {
        Ok(h) => h,
        Err(HsmError::ObjectNotFound { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let attrs = s
        .get_attributes(handle, &[AttributeType::Label, AttributeType::KeyType])
        .map_err(HsmError::ck(
            token,
            "reading the public key's label and type",
        ))?;
    let (mut label, mut ck_type) = (None, None);
    for a in attrs {
        match a {
            Attribute::Label(l) => label = Some(String::from_utf8_lossy(&l).into_owned()),
            Attribute::KeyType(t) => ck_type = Some(t),
            _ => {}
        }
    }
    if label.as_deref() != Some(expected.label) {
        return Err(wrong(format!(
            "its public half is labelled '{}', not '{}'",
            label.unwrap_or_default(),
            expected.label
        )));
    }
    if ck_type != Some(super::keygen::ck_key_type(expected.key_type)) {
        return Err(wrong(format!(
            "its key type is {ck_type:?}, not {}",
            expected.key_type
        )));
    }
    if let Some(recorded) = expected.public_key {
        if public_key::export(token, s, id, expected.key_type)? != recorded {
            return Err(wrong(
                "its public key is not the one the inventory recorded".into(),
            ));
        }
    }
    Ok(true)
}
