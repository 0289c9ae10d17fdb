//! Copying one key version: wrapped on `from` under the KEK, unwrapped on `to` under the same
//! CKA_ID, and the token's answer when a version can never be copied.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::super::objects::{find, KeyClass};
use super::super::{HsmError, Token};
use super::{NoCopy, WrappedKey};
use crate::model::{KeyType, ObjectId, Operation, OperationSet};

impl Token {
    /// Wrap key version `id` under the trusted KEK `kek` (CKM_AES_KEY_WRAP_PAD), with its public
    /// half's attributes for a key pair.
    pub fn wrap_for_copy(
        &self,
        kek: &ObjectId,
        id: &ObjectId,
        key_type: KeyType,
    ) -> Result<WrappedKey, HsmError> {
        self.run(|s| {
            let wrapping = find(self.name(), s, kek, KeyClass::Secret)?;
            let class = if key_type.is_symmetric() {
                KeyClass::Secret
            } else {
                KeyClass::Private
            };
            let key = find(self.name(), s, id, class)?;
            let blob = match s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key) {
                Ok(blob) => blob,
                Err(e) => {
                    // The token's own answer that this object can never be copied, confirmed by
                    // reading the object (or the KEK) back, so that nothing but the token decides
                    // it: `NeverCopyable`, which `kms backup sync` records once and reports.
                    if let CkError::Pkcs11(
                        rv @ (RvError::KeyUnextractable | RvError::KeyNotWrappable),
                        _,
                    ) = e
                    {
                        if let Some(never) =
                            never_copyable(self.name(), s, wrapping, key, key_type, rv)?
                        {
                            return Err(never);
                        }
                    }
                    return Err(HsmError::ck(
                        self.name(),
                        "wrapping a key for its backup copy (CKM_AES_KEY_WRAP_PAD)",
                    )(e));
                }
            };
            let public = if key_type.is_symmetric() {
                Vec::new()
            } else {
                let h = find(self.name(), s, id, KeyClass::Public)?;
                let wanted = if key_type.rsa_bits().is_some() {
                    vec![AttributeType::Modulus, AttributeType::PublicExponent]
                } else {
                    vec![AttributeType::EcParams, AttributeType::EcPoint]
                };
                s.get_attributes(h, &wanted)
                    .map_err(HsmError::ck(self.name(), "reading the public key"))?
            };
            Ok(WrappedKey {
                blob: Zeroizing::new(blob),
                public,
            })
        })
    }

    /// Unwrap a copy under the same CKA_ID: sensitive, extractable only under a trusted key, the
    /// usage flags of the original; for a key pair also the public object. Reads the attributes
    /// back; on any failure whatever was created is destroyed again.
    pub fn unwrap_copy(
        &self,
        kek: &ObjectId,
        id: &ObjectId,
        key_type: KeyType,
        label: &str,
        usage: &OperationSet,
        wrapped: &WrappedKey,
    ) -> Result<(), HsmError> {
        self.run(|s| {
            let result = unwrap_copy_in(self.name(), s, kek, id, key_type, label, usage, wrapped);
            if result.is_err() {
                let _ = super::super::objects::destroy_id(self.name(), s, id);
            }
            result
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn unwrap_copy_in(
    token: &str,
    s: &Session,
    kek: &ObjectId,
    id: &ObjectId,
    key_type: KeyType,
    label: &str,
    usage: &OperationSet,
    wrapped: &WrappedKey,
) -> Result<(), HsmError> {
    let unwrapping = find(token, s, kek, KeyClass::Secret)?;
    let label = label.as_bytes().to_vec();
    let mut template = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        // Every copy, a secret-data one too: the KEK's unwrap template pins it (raw.rs).
        Attribute::WrapWithTrusted(true),
    ];
    let kt = super::super::keygen::ck_key_type(key_type);
    if key_type.is_symmetric() {
        template.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(kt),
        ]);
        // CKA_DERIVE is set below, after the flags.
        template.extend(
            super::super::keygen::secret_flags(usage)
                .into_iter()
                .take(6),
        );
    } else {
        template.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(kt),
            Attribute::Sign(usage.contains(Operation::Sign)),
            Attribute::Decrypt(usage.contains(Operation::Decrypt)),
            Attribute::Unwrap(usage.contains(Operation::Unwrap)),
        ]);
    }
    template.extend([
        Attribute::Derive(false),
        Attribute::Id(id.0.clone()),
        Attribute::Label(label.clone()),
        // SoftHSM2 applies unwrap templates in order: MODIFIABLE=false must come last.
        Attribute::Modifiable(false),
    ]);
    let handle = s
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            unwrapping,
            &wrapped.blob,
            &template,
        )
        .map_err(HsmError::ck(
            token,
            "unwrapping a backup copy (CKM_AES_KEY_WRAP_PAD)",
        ))?;
    // Read back: a module that ignored part of the template must not leave a weaker copy.
    let got = s
        .get_attributes(
            handle,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::WrapWithTrusted,
                AttributeType::Token,
            ],
        )
        .map_err(HsmError::ck(token, "reading the copy's attributes back"))?;
    let all_true = got.iter().all(|a| {
        matches!(
            a,
            Attribute::Sensitive(true)
                | Attribute::Extractable(true)
                | Attribute::WrapWithTrusted(true)
                | Attribute::Token(true)
        )
    });
    if !all_true || got.len() != 4 {
        return Err(HsmError::BadTokenOutput {
            token: token.to_owned(),
            what: "backup copy (not sensitive, token and wrap-with-trusted as asked)",
            len: got.len(),
        });
    }
    if !key_type.is_symmetric() {
        let kt = super::super::keygen::ck_key_type(key_type);
        let mut public = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(kt),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(id.0.clone()),
            Attribute::Label(label),
            Attribute::Verify(usage.contains(Operation::Verify)),
            Attribute::Encrypt(usage.contains(Operation::Encrypt)),
            Attribute::Wrap(usage.contains(Operation::Wrap)),
        ];
        public.extend(wrapped.public.iter().cloned());
        public.push(Attribute::Modifiable(false));
        s.create_object(&public)
            .map_err(HsmError::ck(token, "creating the copy's public key"))?;
    }
    Ok(())
}

/// After C_WrapKey answered `rv` for `key` under the KEK `wrapping`: `Some(NeverCopyable)` when
/// the token confirms the object itself can never be wrapped — CKA_EXTRACTABLE=false read back
/// from the object, or CKR_KEY_NOT_WRAPPABLE although the KEK is trusted (so the refusal is not
/// about the wrapping key) — and `None` when the answer was about something else.
fn never_copyable(
    token: &str,
    s: &Session,
    wrapping: cryptoki::object::ObjectHandle,
    key: cryptoki::object::ObjectHandle,
    key_type: KeyType,
    rv: RvError,
) -> Result<Option<HsmError>, HsmError> {
    let read = |h, what: AttributeType| -> Result<Option<bool>, HsmError> {
        let attrs = s
            .get_attributes(h, &[what])
            .map_err(HsmError::ck(token, "reading why a key cannot be wrapped"))?;
        Ok(attrs.into_iter().find_map(|a| match a {
            Attribute::Extractable(v) | Attribute::Trusted(v) => Some(v),
            _ => None,
        }))
    };
    let found = match rv {
        RvError::KeyUnextractable if read(key, AttributeType::Extractable)? == Some(false) => {
            Some((
                NoCopy::NotExtractable,
                format!(
                    "the {key_type} key is not extractable (CKA_EXTRACTABLE=false on token '{token}'; C_WrapKey answered CKR_KEY_UNEXTRACTABLE): it can never be wrapped out of its token, so it has no backup copy. Losing that token loses the key; replace it with a key kms generates (`kms key rotate`) if it needs a copy"
                ),
            ))
        }
        RvError::KeyNotWrappable if read(wrapping, AttributeType::Trusted)? == Some(true) => Some((
            NoCopy::NotWrappable,
            if key_type.family() == crate::model::KeyFamily::Ed25519 {
                format!(
                    "this token cannot wrap {key_type} private keys (C_WrapKey: CKR_KEY_NOT_WRAPPABLE; SoftHSM2 2.6.1 wraps no Edwards-curve key), so a {key_type} key on it can have no backup copy; with a backup pairing, use a type the token can copy (ec-p256 or ec-p384)"
                )
            } else {
                format!(
                    "token '{token}' cannot wrap this {key_type} key even under its trusted key-encryption key (C_WrapKey: CKR_KEY_NOT_WRAPPABLE), so it can have no backup copy"
                )
            },
        )),
        _ => None,
    };
    Ok(found.map(|(code, why)| HsmError::NeverCopyable {
        token: token.to_owned(),
        code,
        why,
    }))
}
