//! Backup by trusted wrapping (see docs/backup-groundwork.md for the SoftHSM2 facts behind it).
//!
//! A key ceremony pairs a `from` token with a `to` token:
//! 1. `to` (user) generates an RSA-3072 transport pair ([`Token::generate_transport_pair`]);
//! 2. `from`'s security officer ([`so_make_trusted_kek`]) imports the transport public key as a
//!    trusted *session* object, generates a session AES-256 key K, wraps K under the transport key
//!    (RSA-OAEP/SHA-1) for `to`, and installs K on `from` as the persistent key-encryption key
//!    (KEK): trusted, **never extractable**, wrap and unwrap, with a CKA_UNWRAP_TEMPLATE;
//! 3. `to` (user) unwraps K under the same CKA_ID as an unwrap-only, never extractable key with
//!    the same CKA_UNWRAP_TEMPLATE, and destroys the transport pair ([`Token::receive_kek`]).
//!
//! Why this shape (found by review and measured on SoftHSM2 2.6.1): a trusted KEK that were itself
//! extractable could be wrapped — even under itself — and unwrapped somewhere without the template;
//! and an unwrap-capable KEK without a CKA_UNWRAP_TEMPLATE lets any user session unwrap a key's
//! backup blob as a *non-sensitive* object and read it. The template forces every key unwrapped
//! under a KEK to be private, sensitive, wrappable only under a trusted key and not derivable.
//!
//! From then on each key version is wrapped on `from` under the KEK with CKM_AES_KEY_WRAP_PAD
//! ([`Token::wrap_for_copy`]) and unwrapped on `to` under the same CKA_ID with every attribute
//! set explicitly ([`Token::unwrap_copy`]). Keys carry CKA_WRAP_WITH_TRUSTED, so only a trusted
//! key — one only the SO can make — can ever wrap them.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::objects::{find, KeyClass};
use super::{module, raw, token, HsmError, Token};
use crate::config::TokenConfig;
use crate::model::{KeyType, ObjectId, Operation, OperationSet};

/// The public half of the transport pair, as the `from` token's SO imports it.
#[derive(Debug, Clone)]
pub struct TransportPublicKey {
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
}

/// A key version wrapped under a KEK, plus the public attributes of a key pair (public values
/// only). Never plaintext key material.
pub struct WrappedKey {
    blob: Zeroizing<Vec<u8>>,
    public: Vec<Attribute>,
}

impl WrappedKey {
    /// The wrapped bytes (AES_KEY_WRAP_PAD ciphertext), for an offline backup file.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The public half's attributes as (CKA type, value) for an offline backup file.
    pub fn public_parts(&self) -> Vec<(String, Vec<u8>)> {
        self.public
            .iter()
            .filter_map(|a| match a {
                Attribute::Modulus(v) => Some(("modulus".into(), v.clone())),
                Attribute::PublicExponent(v) => Some(("public_exponent".into(), v.clone())),
                Attribute::EcParams(v) => Some(("ec_params".into(), v.clone())),
                Attribute::EcPoint(v) => Some(("ec_point".into(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// Rebuild from an offline backup file's fields.
    pub fn from_parts(blob: Vec<u8>, public: &[(String, Vec<u8>)]) -> Result<WrappedKey, String> {
        let mut attrs = Vec::new();
        for (name, v) in public {
            attrs.push(match name.as_str() {
                "modulus" => Attribute::Modulus(v.clone()),
                "public_exponent" => Attribute::PublicExponent(v.clone()),
                "ec_params" => Attribute::EcParams(v.clone()),
                "ec_point" => Attribute::EcPoint(v.clone()),
                other => return Err(format!("unknown public attribute '{other}'")),
            });
        }
        Ok(WrappedKey {
            blob: Zeroizing::new(blob),
            public: attrs,
        })
    }
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("wrapped_len", &self.blob.len())
            .field("public_attributes", &self.public.len())
            .finish()
    }
}

fn oaep_sha1() -> Mechanism<'static> {
    // SoftHSM2 2.6.1 wraps with RSA-OAEP only with SHA-1 (SHA-256 gives CKR_ARGUMENTS_BAD). It
    // carries one random AES key once per ceremony; OAEP-SHA-1 has no known weakness there.
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ))
}

impl Token {
    /// Step 1 (on `to`): an RSA-3072 transport pair whose private half can only unwrap.
    pub fn generate_transport_pair(
        &self,
        id: &ObjectId,
        label: &str,
    ) -> Result<TransportPublicKey, HsmError> {
        self.run(|s| {
            let public = vec![
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Id(id.0.clone()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::ModulusBits(3072u64.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                Attribute::Wrap(true),
                Attribute::Encrypt(false),
                Attribute::Verify(false),
            ];
            let private = vec![
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Id(id.0.clone()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Unwrap(true),
                Attribute::Decrypt(false),
                Attribute::Sign(false),
                Attribute::Derive(false),
            ];
            let (pub_h, _) = s
                .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
                .map_err(HsmError::ck(
                    self.name(),
                    "generating the RSA-3072 transport pair",
                ))?;
            let attrs = s
                .get_attributes(
                    pub_h,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(HsmError::ck(
                    self.name(),
                    "reading the transport public key",
                ))?;
            let mut out = TransportPublicKey {
                modulus: Vec::new(),
                exponent: Vec::new(),
            };
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => out.modulus = v,
                    Attribute::PublicExponent(v) => out.exponent = v,
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    /// Step 3 (on `to`): unwrap the KEK under its CKA_ID as an unwrap-only, never extractable key
    /// carrying the pinned CKA_UNWRAP_TEMPLATE, then destroy the transport pair (its job is done).
    pub fn receive_kek(
        &self,
        transport: &ObjectId,
        kek: &ObjectId,
        label: &str,
        wrapped: &[u8],
    ) -> Result<(), HsmError> {
        use cryptoki_sys as sys;
        use raw::Value::{Bool, Bytes, Ulong};
        self.run(|s| {
            let unwrapping = find(self.name(), s, transport, KeyClass::Private)?;
            let template = vec![
                (sys::CKA_CLASS, Ulong(sys::CKO_SECRET_KEY)),
                (sys::CKA_KEY_TYPE, Ulong(sys::CKK_AES)),
                (sys::CKA_TOKEN, Bool(true)),
                (sys::CKA_PRIVATE, Bool(true)),
                (sys::CKA_SENSITIVE, Bool(true)),
                (sys::CKA_EXTRACTABLE, Bool(false)),
                (sys::CKA_WRAP, Bool(false)),
                (sys::CKA_UNWRAP, Bool(true)),
                (sys::CKA_ENCRYPT, Bool(false)),
                (sys::CKA_DECRYPT, Bool(false)),
                (sys::CKA_SIGN, Bool(false)),
                (sys::CKA_VERIFY, Bool(false)),
                (sys::CKA_DERIVE, Bool(false)),
                (sys::CKA_UNWRAP_TEMPLATE, raw::pinned_unwrap_template()),
                (sys::CKA_ID, Bytes(kek.0.clone())),
                (sys::CKA_LABEL, Bytes(label.as_bytes().to_vec())),
                // SoftHSM2 applies unwrap templates in order: MODIFIABLE=false must come last.
                (sys::CKA_MODIFIABLE, Bool(false)),
            ];
            raw::unwrap_key(
                self.module(),
                self.name(),
                s,
                raw::Unwrapping::RsaOaepSha1,
                unwrapping,
                wrapped,
                &template,
                "unwrapping the key-encryption key",
            )?;
            super::objects::destroy_id(self.name(), s, transport)?;
            Ok(())
        })
    }

    /// Whether the KEK `kek` is on this token and usable as the ceremony made it: on the `from`
    /// side trusted and able to wrap, on the `to` side able to unwrap.
    pub fn kek_state(&self, kek: &ObjectId) -> Result<KekState, HsmError> {
        self.run(|s| {
            let found = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Id(kek.0.clone()),
                ])
                .map_err(HsmError::ck(self.name(), "finding the key-encryption key"))?;
            let Some(h) = found.into_iter().next() else {
                return Ok(KekState::default());
            };
            let attrs = s
                .get_attributes(
                    h,
                    &[
                        AttributeType::Trusted,
                        AttributeType::Wrap,
                        AttributeType::Unwrap,
                    ],
                )
                .map_err(HsmError::ck(self.name(), "reading the key-encryption key"))?;
            let mut st = KekState {
                present: true,
                ..KekState::default()
            };
            for a in attrs {
                match a {
                    Attribute::Trusted(v) => st.trusted = v,
                    Attribute::Wrap(v) => st.wrap = v,
                    Attribute::Unwrap(v) => st.unwrap = v,
                    _ => {}
                }
            }
            Ok(st)
        })
    }

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
                let _ = super::objects::destroy_id(self.name(), s, id);
            }
            result
        })
    }

    /// Whether this token answers at all right now (token info readable, a session usable).
    /// Tells a failed token from a failed request.
    pub fn responds(&self) -> bool {
        self.description().is_ok()
            && self
                .run(|s| {
                    s.get_session_info()
                        .map(drop)
                        .map_err(HsmError::ck(self.name(), "reading session info"))
                })
                .is_ok()
    }
}

/// What a token holds of a ceremony's KEK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KekState {
    pub present: bool,
    pub trusted: bool,
    pub wrap: bool,
    pub unwrap: bool,
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
    let kt = super::keygen::ck_key_type(key_type);
    if key_type.is_symmetric() {
        template.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(kt),
        ]);
        // CKA_DERIVE is set below, after the flags.
        template.extend(super::keygen::secret_flags(usage).into_iter().take(6));
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
        let kt = super::keygen::ck_key_type(key_type);
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

/// Step 2 (on `from`, as its security officer): returns the KEK wrapped under the transport key.
///
/// Everything but the KEK is a session object of this SO session (gone when it closes): the
/// trusted transport public key, the KEK's transient extractable twin K, and the session key W
/// that carries K into the persistent, non-extractable KEK. The SO login needs the user logged
/// out of the token in this process, and no read-only session open: the caller must not hold the
/// token open (see `Hsm::so_make_trusted_kek`).
pub fn so_make_trusted_kek(
    cfg: &TokenConfig,
    so_pin: &SecretString,
    transport: &TransportPublicKey,
    transport_id: &ObjectId,
    kek_id: &ObjectId,
    label: &str,
) -> Result<Vec<u8>, HsmError> {
    let _gate = module::gate();
    let ctx = module::load(&cfg.module)?;
    let (slot, _) = token::find_slot(&ctx, cfg)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(HsmError::ck(&cfg.name, "opening the SO session"))?;
    so_login(&ctx, slot, &session, so_pin, &cfg.name)?;
    let result = so_steps(cfg, &session, transport, transport_id, kek_id, label);
    let _ = session.logout();
    drop(session);
    result
}

fn so_steps(
    cfg: &TokenConfig,
    session: &Session,
    transport: &TransportPublicKey,
    transport_id: &ObjectId,
    kek_id: &ObjectId,
    label: &str,
) -> Result<Vec<u8>, HsmError> {
    use cryptoki_sys as sys;
    use raw::Value::{Bool, Bytes, Ulong};
    let name = cfg.name.as_str();
    let trusted_pub = session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(CkKeyType::RSA),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Trusted(true),
            Attribute::Wrap(true),
            Attribute::Encrypt(false),
            Attribute::Verify(false),
            Attribute::Modulus(transport.modulus.clone()),
            Attribute::PublicExponent(transport.exponent.clone()),
            Attribute::Id(transport_id.0.clone()),
        ])
        .map_err(HsmError::ck(
            name,
            "importing the transport key as a trusted wrapping key (SO)",
        ))?;
    let transient = |wrap: bool, extractable: bool| {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(CkKeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(extractable),
            Attribute::WrapWithTrusted(false),
            Attribute::Wrap(wrap),
            Attribute::Unwrap(wrap),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
        ]
    };
    let k = session
        .generate_key(&Mechanism::AesKeyGen, &transient(false, true))
        .map_err(HsmError::ck(name, "generating the key-encryption key (SO)"))?;
    let w = session
        .generate_key(&Mechanism::AesKeyGen, &transient(true, false))
        .map_err(HsmError::ck(name, "generating a session wrapping key (SO)"))?;
    let for_to = session
        .wrap_key(&oaep_sha1(), trusted_pub, k)
        .map_err(HsmError::ck(
            name,
            "wrapping the key-encryption key for transport (RSA-OAEP SHA-1)",
        ))?;
    let local = Zeroizing::new(session.wrap_key(&Mechanism::AesKeyWrapPad, w, k).map_err(
        HsmError::ck(name, "wrapping the key-encryption key locally"),
    )?);
    let template = vec![
        (sys::CKA_CLASS, Ulong(sys::CKO_SECRET_KEY)),
        (sys::CKA_KEY_TYPE, Ulong(sys::CKK_AES)),
        (sys::CKA_TOKEN, Bool(true)),
        (sys::CKA_PRIVATE, Bool(false)),
        (sys::CKA_TRUSTED, Bool(true)),
        (sys::CKA_SENSITIVE, Bool(true)),
        (sys::CKA_EXTRACTABLE, Bool(false)),
        (sys::CKA_WRAP, Bool(true)),
        (sys::CKA_UNWRAP, Bool(true)),
        (sys::CKA_ENCRYPT, Bool(false)),
        (sys::CKA_DECRYPT, Bool(false)),
        (sys::CKA_SIGN, Bool(false)),
        (sys::CKA_VERIFY, Bool(false)),
        (sys::CKA_DERIVE, Bool(false)),
        (sys::CKA_UNWRAP_TEMPLATE, raw::pinned_unwrap_template()),
        (sys::CKA_ID, Bytes(kek_id.0.clone())),
        (sys::CKA_LABEL, Bytes(label.as_bytes().to_vec())),
        (sys::CKA_MODIFIABLE, Bool(false)),
    ];
    raw::unwrap_key(
        &cfg.module,
        name,
        session,
        raw::Unwrapping::AesKeyWrapPad,
        w,
        &local,
        &template,
        "installing the trusted key-encryption key (SO)",
    )?;
    for h in [k, w, trusted_pub] {
        let _ = session.destroy_object(h);
    }
    Ok(for_to)
}

fn so_login(
    ctx: &Pkcs11,
    slot: cryptoki::slot::Slot,
    session: &Session,
    pin: &SecretString,
    token: &str,
) -> Result<(), HsmError> {
    match session.login(UserType::So, Some(pin)) {
        Ok(()) => Ok(()),
        Err(CkError::Pkcs11(RvError::UserAnotherAlreadyLoggedIn, _))
        | Err(CkError::Pkcs11(RvError::SessionReadOnlyExists, _)) => {
            Err(HsmError::UserHoldsToken {
                token: token.to_owned(),
            })
        }
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            let info = ctx.get_token_info(slot).ok();
            Err(HsmError::WrongSoPin {
                token: token.to_owned(),
                final_try: info.as_ref().is_some_and(|i| i.so_pin_final_try()),
            })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::SoPinLocked {
            token: token.to_owned(),
        }),
        Err(e) => Err(HsmError::ck(token, "logging in as security officer")(e)),
    }
}

/// Why a key version can never have a backup copy, as its token answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCopy {
    /// CKA_EXTRACTABLE is false (C_WrapKey: CKR_KEY_UNEXTRACTABLE); fixed for the object's life.
    NotExtractable,
    /// The token wraps no key of this type, even under its trusted KEK (C_WrapKey:
    /// CKR_KEY_NOT_WRAPPABLE; SoftHSM2 2.6.1 and Ed25519 private keys).
    NotWrappable,
}

impl NoCopy {
    pub fn as_str(self) -> &'static str {
        match self {
            NoCopy::NotExtractable => "not-extractable",
            NoCopy::NotWrappable => "not-wrappable",
        }
    }
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
