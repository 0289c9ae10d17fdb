//! The key ceremony on the tokens: the transport pair (`to`), the trusted KEK made by the
//! security officer of `from`, its receipt on `to`, and what each token holds of it.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::super::objects::{find, KeyClass};
use super::super::{module, raw, token, HsmError, Token};
use super::{KekState, TransportPublicKey};
use crate::config::TokenConfig;
use crate::model::ObjectId;

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
            super::super::objects::destroy_id(self.name(), s, transport)?;
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
