//! Data keys wrapped on the token: a fresh AES-256 data key is generated *on the token* as a
//! session object, wrapped there under the key-encryption key (CKM_AES_KEY_WRAP_PAD, RFC 5649),
//! and only then read out — the plaintext data key is the one secret the KMS returns, by design.
//! Unwrapping likewise happens on the token (C_UnwrapKey into a session object).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::objects::KeyClass;
use super::{HsmError, Token};
use crate::model::ObjectId;

/// A data key: its plaintext and the same key wrapped under the KEK.
pub struct DataKey {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"[redacted]")
            .field("wrapped_len", &self.wrapped.len())
            .finish()
    }
}

/// Template of a transient data key: a session object (never on the token's storage), readable
/// so it can be returned to the application.
fn data_key_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(CkKeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ]
}

impl Token {
    /// Generate a 256-bit data key on the token and wrap it under KEK `kek`.
    pub fn generate_data_key(&self, kek: &ObjectId) -> Result<DataKey, HsmError> {
        self.run(|s| {
            let kek = self.handle(s, kek, KeyClass::Secret)?;
            let mut template = data_key_template();
            template.push(Attribute::ValueLen(32.into()));
            let dk = s
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(HsmError::ck(self.name(), "generating a data key"))?;
            let result = (|| {
                let wrapped =
                    s.wrap_key(&Mechanism::AesKeyWrapPad, kek, dk)
                        .map_err(HsmError::ck(
                            self.name(),
                            "wrapping a data key (CKM_AES_KEY_WRAP_PAD)",
                        ))?;
                let plaintext = read_value(self.name(), s, dk)?;
                Ok(DataKey { plaintext, wrapped })
            })();
            destroy_quietly(s, dk);
            result
        })
    }

    /// Unwrap a data key wrapped under `kek`, on the token, and return its value.
    pub fn unwrap_data_key(
        &self,
        kek: &ObjectId,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.run(|s| {
            let kek = self.handle(s, kek, KeyClass::Secret)?;
            let dk = s
                .unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    kek,
                    wrapped,
                    &data_key_template(),
                )
                .map_err(|e| unwrap_error(self.name(), e))?;
            let value = read_value(self.name(), s, dk);
            destroy_quietly(s, dk);
            value
        })
    }
}

pub(super) fn read_value(
    token: &str,
    s: &Session,
    h: ObjectHandle,
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let attrs = s
        .get_attributes(h, &[AttributeType::Value])
        .map_err(HsmError::ck(
            token,
            "reading a transient key's value (data key or revealed secret)",
        ))?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Value(v) => Some(Zeroizing::new(v)),
            _ => None,
        })
        .ok_or_else(|| HsmError::PublicKey {
            token: token.to_owned(),
            id: "transient key".into(),
            reason: "the token returned no CKA_VALUE".into(),
        })
}

/// Session objects vanish with the session anyway; destroying now keeps the window short.
pub(super) fn destroy_quietly(s: &Session, h: ObjectHandle) {
    if let Err(e) = s.destroy_object(h) {
        tracing::warn!(error = %e, "could not destroy a transient data-key object");
    }
}

impl Token {
    /// Unwrap a data key under `from` and wrap it again under `to`, all on the token.
    pub fn rewrap_data_key(
        &self,
        from: &ObjectId,
        wrapped: &[u8],
        to: &ObjectId,
    ) -> Result<Vec<u8>, HsmError> {
        self.run(|s| {
            let from = self.handle(s, from, KeyClass::Secret)?;
            let to = self.handle(s, to, KeyClass::Secret)?;
            let mut template = data_key_template();
            // The transient copy need not be readable: it only goes from one wrap to the next.
            template.retain(|a| !matches!(a, Attribute::Sensitive(_)));
            template.push(Attribute::Sensitive(true));
            let dk = s
                .unwrap_key(&Mechanism::AesKeyWrapPad, from, wrapped, &template)
                .map_err(|e| unwrap_error(self.name(), e))?;
            let out = s
                .wrap_key(&Mechanism::AesKeyWrapPad, to, dk)
                .map_err(HsmError::ck(self.name(), "re-wrapping a data key"));
            destroy_quietly(s, dk);
            out
        })
    }
}

fn unwrap_error(token: &str, e: cryptoki::error::Error) -> HsmError {
    use cryptoki::error::{Error, RvError};
    match e {
        Error::Pkcs11(
            RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::GeneralError,
            _,
        ) => HsmError::DecryptionFailed {
            token: token.to_owned(),
        },
        other => HsmError::ck(token, "unwrapping a data key")(other),
    }
}
