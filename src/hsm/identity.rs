//! Object identity: before a version's object is used, the object found under its CKA_ID must be
//! the one the inventory recorded — its label, its key type and, for key pairs, its public key.
//! A CKA_ID re-pointed at another key's object, or an object swapped on the token, is refused.
//! Checked once per token session set (the `Token` instance), then remembered.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
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

impl Token {
    /// Destroy every object under `id`, but only if each of them is the object `expected`
    /// describes: of the class its key type has (a secret key, or a private and a public key),
    /// labelled `expected.label`, of `expected.key_type`, and, when a public key is recorded
    /// and the public object is there, with that public key. Anything else under the CKA_ID
    /// (another key's object, a certificate, a data object, a private key whose public half is
    /// gone while a public key is recorded) is refused and nothing is destroyed:
    /// `HsmError::WrongObject`, saying what was found. Nothing under `id` is `Ok(0)`: already
    /// destroyed. Private and secret halves go first and the public half last, so a crash in
    /// between leaves the half that can still be checked.
    pub fn destroy_verified(
        &self,
        id: &ObjectId,
        expected: &Expected<'_>,
    ) -> Result<usize, HsmError> {
        self.forget_identities();
        self.forget_handles();
        self.verify_for_destroy(id, expected, true)
    }

    /// The check of [`Token::destroy_verified`] alone: how many objects it would destroy, or
    /// `HsmError::WrongObject`. Destroys nothing.
    pub fn check_destroyable(
        &self,
        id: &ObjectId,
        expected: &Expected<'_>,
    ) -> Result<usize, HsmError> {
        self.verify_for_destroy(id, expected, false)
    }

    fn verify_for_destroy(
        &self,
        id: &ObjectId,
        expected: &Expected<'_>,
        destroy: bool,
    ) -> Result<usize, HsmError> {
        self.run(|s| {
            let handles = s
                .find_objects(&[Attribute::Id(id.0.clone())])
                .map_err(HsmError::ck(self.name(), "finding objects to destroy"))?;
            let symmetric = expected.key_type.is_symmetric();
            let want_type = super::keygen::ck_key_type(expected.key_type);
            let mut found = Vec::new();
            let mut problems = Vec::new();
            let (mut privates, mut publics) = (Vec::new(), Vec::new());
            for h in handles {
                let attrs = s
                    .get_attributes(
                        h,
                        &[AttributeType::Class, AttributeType::Label, AttributeType::KeyType],
                    )
                    .map_err(HsmError::ck(self.name(), "reading an object's class, label and type"))?;
                let (mut class, mut label, mut ck_type) = (None, String::new(), None);
                for a in attrs {
                    match a {
                        Attribute::Class(c) => class = Some(c),
                        Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                        Attribute::KeyType(t) => ck_type = Some(t),
                        _ => {}
                    }
                }
                let class_name = match class {
                    Some(c) if c == ObjectClass::SECRET_KEY => "secret key",
                    Some(c) if c == ObjectClass::PRIVATE_KEY => "private key",
                    Some(c) if c == ObjectClass::PUBLIC_KEY => "public key",
                    Some(c) if c == ObjectClass::CERTIFICATE => "certificate",
                    Some(c) if c == ObjectClass::DATA => "data object",
                    _ => "object of another class",
                };
                let type_name = ck_type.map(|t| format!("{t:?}")).unwrap_or_else(|| "no key type".into());
                found.push(format!("{class_name} '{label}' ({type_name})"));
                let class_ok = match class {
                    Some(c) if symmetric => c == ObjectClass::SECRET_KEY,
                    Some(c) => c == ObjectClass::PRIVATE_KEY || c == ObjectClass::PUBLIC_KEY,
                    None => false,
                };
                if !class_ok {
                    problems.push(format!("a {class_name} does not belong to a {} key", expected.key_type));
                    continue;
                }
                if label != expected.label {
                    problems.push(format!("a {class_name} is labelled '{label}', not '{}'", expected.label));
                }
                if ck_type != Some(want_type) {
                    problems.push(format!("a {class_name} is of type {type_name}, not {}", expected.key_type));
                }
                if class == Some(ObjectClass::PUBLIC_KEY) {
                    publics.push(h);
                } else {
                    privates.push(h);
                }
            }
            if problems.is_empty() && (privates.len() > 1 || publics.len() > 1) {
                problems.push("more than one object of a class carries this CKA_ID".into());
            }
            if problems.is_empty() {
                if let Some(recorded) = expected.public_key {
                    if !publics.is_empty() {
                        let spki = super::public_key::export(self.name(), s, id, expected.key_type)?;
                        if spki != recorded {
                            problems.push("its public key is not the one the inventory recorded".into());
                        }
                    } else if !privates.is_empty() {
                        problems.push(
                            "a private key without its public half: it cannot be shown to be the recorded key".into(),
                        );
                    }
                }
            }
            if !problems.is_empty() {
                return Err(HsmError::WrongObject {
                    token: self.name().to_owned(),
                    id: id.to_hex(),
                    why: format!("found {}: {}", found.join(", "), problems.join("; ")),
                });
            }
            let n = privates.len() + publics.len();
            if !destroy {
                return Ok(n);
            }
            for h in privates.into_iter().chain(publics) {
                s.destroy_object(h)
                    .map_err(HsmError::ck(self.name(), "destroying an object"))?;
            }
            Ok(n)
        })
    }
}
