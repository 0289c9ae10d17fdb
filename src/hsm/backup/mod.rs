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
//!
//! `ceremony.rs` holds the three ceremony steps and the KEK checks; `copy.rs` the wrapping and
//! unwrapping of each key version and the token's answer that a version can never be copied.

mod ceremony;
mod copy;

pub use ceremony::so_make_trusted_kek;

use cryptoki::object::Attribute;
use zeroize::Zeroizing;

use super::{HsmError, Token};

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

impl Token {
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
