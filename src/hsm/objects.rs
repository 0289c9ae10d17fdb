//! Finding objects by CKA_ID (handles are never kept: they change across sessions and processes),
//! listing what a token holds, and destroying objects.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::{HsmError, Token};
use crate::model::ObjectId;

/// Every anchor slot's label starts so.
pub(crate) const ANCHOR_LABEL_PREFIX: &str = "kms-anchor-";

/// Which half of a key an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Object searches (C_FindObjectsInit) made by this process, on every token: the
/// `kms_token_lookups_total` metric. With the handle cache it stays flat once keys are warm.
/// Process-wide on purpose: the metric counts the process's calls into the PKCS#11 modules.
static LOOKUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many object searches this process made.
pub fn lookups_total() -> u64 {
    LOOKUPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The handle of the `class` object with CKA_ID `id` (a search on the token each time; the
/// hot paths go through [`Token::handle`], which caches it).
pub(crate) fn find(
    token: &str,
    session: &Session,
    id: &ObjectId,
    class: KeyClass,
) -> Result<ObjectHandle, HsmError> {
    LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

/// Every object `session` can see: all of them when the user is logged in, only the public ones
/// (public keys, and the KEK a security officer installed) in a session without a login.
pub(crate) fn list_in(token: &str, s: &Session) -> Result<Vec<TokenObject>, HsmError> {
    let handles = s
        .find_objects(&[])
        .map_err(HsmError::ck(token, "listing objects"))?;
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        let attrs = match s.get_attributes(
            h,
            &[
                AttributeType::Class,
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        ) {
            Ok(a) => a,
            // An object whose attributes cannot be read (seen: a creation SIGKILLed inside
            // SoftHSM2's db store) is listed as such, so the rest of the token is still checked.
            Err(e) => {
                out.push(TokenObject {
                    id: ObjectId(Vec::new()),
                    label: format!("(its attributes cannot be read: {e})"),
                    class: "unreadable".into(),
                    sensitive: None,
                    extractable: None,
                });
                continue;
            }
        };
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
        // The inventory's anchor (hsm/anchor.rs) is kms's own bookkeeping, not a key.
        if obj.class == "data" && obj.label.starts_with(ANCHOR_LABEL_PREFIX) {
            continue;
        }
        out.push(obj);
    }
    Ok(out)
}

impl Token {
    /// Destroy every object with this CKA_ID (both halves of a key pair).
    pub fn destroy(&self, id: &ObjectId) -> Result<usize, HsmError> {
        self.forget_identities();
        self.forget_handles();
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
        self.run(|s| list_in(self.name(), s))
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

impl Token {
    /// The handle of the `class` object with CKA_ID `id`, from this token's cache or, the first
    /// time, from a search whose result is checked to carry that CKA_ID. The cache lives in
    /// this `Token` (one module, one slot, one login): it goes with a logout, a failover or a
    /// module reset, is cleared by a destroy, and [`Token::run`] clears it and retries once when
    /// the token calls a handle invalid.
    pub(crate) fn handle(
        &self,
        session: &Session,
        id: &ObjectId,
        class: KeyClass,
    ) -> Result<ObjectHandle, HsmError> {
        if let Some(h) = self.cached_handle(id, class) {
            // A module may give a handle to another object once the one it named is gone
            // (SoftHSM2 does, when another process destroys it): a cached handle is used only
            // while it still names an object of this class with this CKA_ID (one attribute
            // read, not a search).
            if still_names(session, h, id, class) {
                return Ok(h);
            }
            tracing::warn!(token = %self.name(), id = %id.to_hex(), "a cached object handle no longer names its object; looking it up again");
            self.forget_handles();
            self.forget_identities();
        }
        let h = find(self.name(), session, id, class)?;
        if !still_names(session, h, id, class) {
            return Err(HsmError::WrongObject {
                token: self.name().to_owned(),
                id: id.to_hex(),
                why: "the token's search returned an object with another CKA_ID or class".into(),
            });
        }
        self.cache_handle(id, class, h);
        Ok(h)
    }
}

/// Whether handle `h` names an object of `class` with CKA_ID `id` in this session.
fn still_names(session: &Session, h: ObjectHandle, id: &ObjectId, class: KeyClass) -> bool {
    let Ok(attrs) = session.get_attributes(h, &[AttributeType::Class, AttributeType::Id]) else {
        return false;
    };
    let (mut c, mut i) = (None, None);
    for a in attrs {
        match a {
            Attribute::Class(v) => c = Some(v),
            Attribute::Id(v) => i = Some(v),
            _ => {}
        }
    }
    c == Some(class.ck()) && i.as_deref() == Some(id.0.as_slice())
}
