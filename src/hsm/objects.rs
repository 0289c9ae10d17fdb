//! Finding objects by CKA_ID (handles are never kept: they change across sessions and processes),
//! listing what a token holds, and destroying objects.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::{HsmError, Token};
use crate::model::ObjectId;

/// Which half of a key an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    Secret,
    Private,
    Public,
}

impl KeyClass {
    fn ck(self) -> ObjectClass {
        match self {
            KeyClass::Secret => ObjectClass::SECRET_KEY,
            KeyClass::Private => ObjectClass::PRIVATE_KEY,
            KeyClass::Public => ObjectClass::PUBLIC_KEY,
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyClass::Secret => "secret key",
            KeyClass::Private => "private key",
            KeyClass::Public => "public key",
        }
    }
}

/// One object as the token lists it, for reconciliation and reports. No key material.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenObject {
    pub id: ObjectId,
    pub label: String,
    pub class: String,
    pub sensitive: Option<bool>,
    pub extractable: Option<bool>,
}

/// The CKA_LABEL of the public object with CKA_ID `id`.
pub(crate) fn label_of(token: &str, session: &Session, id: &ObjectId) -> Result<String, HsmError> {
    let handle = find(token, session, id, KeyClass::Public)?;
    let attrs = session
        .get_attributes(handle, &[AttributeType::Label])
        .map_err(HsmError::ck(token, "reading the object label"))?;
    Ok(attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
            _ => None,
        })
        .unwrap_or_default())
}

/// The handle of the `class` object with CKA_ID `id`, valid only within `session`.
pub(crate) fn find(
    token: &str,
    session: &Session,
    id: &ObjectId,
    class: KeyClass,
) -> Result<ObjectHandle, HsmError> {
    let found = session
        .find_objects(&[Attribute::Class(class.ck()), Attribute::Id(id.0.clone())])
        .map_err(HsmError::ck(token, "finding an object"))?;
    found
        .into_iter()
        .next()
        .ok_or_else(|| HsmError::ObjectNotFound {
            token: token.to_owned(),
            class: class.name(),
            id: id.to_hex(),
        })
}

/// Destroy every object carrying CKA_ID `id`; returns how many were destroyed.
pub(crate) fn destroy_id(token: &str, session: &Session, id: &ObjectId) -> Result<usize, HsmError> {
    let handles = session
        .find_objects(&[Attribute::Id(id.0.clone())])
        .map_err(HsmError::ck(token, "finding objects to destroy"))?;
    let n = handles.len();
    for h in handles {
        session
            .destroy_object(h)
            .map_err(HsmError::ck(token, "destroying an object"))?;
    }
    Ok(n)
}

impl Token {
    /// Destroy every object with this CKA_ID (both halves of a key pair).
    pub fn destroy(&self, id: &ObjectId) -> Result<usize, HsmError> {
        self.forget_identities();
        self.run(|s| destroy_id(self.name(), s, id))
    }

    /// Whether any object with this CKA_ID exists.
    pub fn exists(&self, id: &ObjectId) -> Result<bool, HsmError> {
        self.run(|s| {
            let found = s
                .find_objects(&[Attribute::Id(id.0.clone())])
                .map_err(HsmError::ck(self.name(), "finding an object"))?;
            Ok(!found.is_empty())
        })
    }

    /// Every key object on the token visible to the logged-in user.
    pub fn list_objects(&self) -> Result<Vec<TokenObject>, HsmError> {
        self.run(|s| {
            let handles = s
                .find_objects(&[])
                .map_err(HsmError::ck(self.name(), "listing objects"))?;
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                let attrs = s
                    .get_attributes(
                        h,
                        &[
                            AttributeType::Class,
                            AttributeType::Id,
                            AttributeType::Label,
                            AttributeType::Sensitive,
                            AttributeType::Extractable,
                        ],
                    )
                    .map_err(HsmError::ck(self.name(), "reading object attributes"))?;
                let mut obj = TokenObject {
                    id: ObjectId(Vec::new()),
                    label: String::new(),
                    class: String::new(),
                    sensitive: None,
                    extractable: None,
                };
                for a in attrs {
                    match a {
                        Attribute::Class(c) => obj.class = class_name(c).to_owned(),
                        Attribute::Id(id) => obj.id = ObjectId(id),
                        Attribute::Label(l) => obj.label = String::from_utf8_lossy(&l).into_owned(),
                        Attribute::Sensitive(b) => obj.sensitive = Some(b),
                        Attribute::Extractable(b) => obj.extractable = Some(b),
                        _ => {}
                    }
                }
                out.push(obj);
            }
            Ok(out)
        })
    }
}

fn class_name(c: ObjectClass) -> &'static str {
    if c == ObjectClass::SECRET_KEY {
        "secret-key"
    } else if c == ObjectClass::PRIVATE_KEY {
        "private-key"
    } else if c == ObjectClass::PUBLIC_KEY {
        "public-key"
    } else if c == ObjectClass::CERTIFICATE {
        "certificate"
    } else if c == ObjectClass::DATA {
        "data"
    } else {
        "other"
    }
}
