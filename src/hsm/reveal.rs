//! Reading a secret-data value back for its grantee (KMIP Get of Secret Data). The object on the
//! token stays CKA_SENSITIVE: PKCS#11 never shows its CKA_VALUE. kms makes a transient AES-256
//! session key on the token, wraps the secret under it (CKM_AES_KEY_WRAP_PAD), unwraps the blob
//! again *on the token* into a non-sensitive session object, reads that object's value and
//! destroys both session objects. The wrapped blob and the transient key never leave the token
//! session; the value leaves it once, to the caller, like a data key. A sensitive object can be
//! read this way only if it is extractable without CKA_WRAP_WITH_TRUSTED, which kms sets for
//! secret-data objects alone.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::objects::KeyClass;
use super::{HsmError, Token};
use crate::model::ObjectId;

impl Token {
    /// The value of the secret-data object `id`.
    pub fn reveal_secret(&self, id: &ObjectId) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.run(|s| {
            let secret = self.handle(s, id, KeyClass::Secret)?;
            let transport = s
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(CkKeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(false),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Wrap(true),
                        Attribute::Unwrap(true),
                        Attribute::Encrypt(false),
                        Attribute::Decrypt(false),
                    ],
                )
                .map_err(HsmError::ck(self.name(), "making a transient wrapping key"))?;
            let out = read_through(self.name(), s, transport, secret);
            destroy_quietly(s, transport);
            out
        })
    }
}

fn read_through(
    token: &str,
    s: &Session,
    transport: cryptoki::object::ObjectHandle,
    secret: cryptoki::object::ObjectHandle,
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let wrapped = Zeroizing::new(
        s.wrap_key(&Mechanism::AesKeyWrapPad, transport, secret)
            .map_err(HsmError::ck(
                token,
                "wrapping the secret under the transient key (is it a secret-data object?)",
            ))?,
    );
    let readable = s
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            transport,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(CkKeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
            ],
        )
        .map_err(HsmError::ck(
            token,
            "unwrapping the secret into a session object",
        ))?;
    let value = s
        .get_attributes(readable, &[AttributeType::Value])
        .map_err(HsmError::ck(token, "reading the secret's value"));
    destroy_quietly(s, readable);
    value?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(Zeroizing::new(v)),
            _ => None,
        })
        .ok_or_else(|| HsmError::Raw {
            token: token.to_owned(),
            what: "the token returned no CKA_VALUE for the unwrapped secret".into(),
        })
}

fn destroy_quietly(s: &Session, h: cryptoki::object::ObjectHandle) {
    if let Err(e) = s.destroy_object(h) {
        tracing::warn!(error = %e, "could not destroy a transient session object");
    }
}
