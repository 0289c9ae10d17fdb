//! Reading a secret-data value back for its grantee (KMIP Get of Secret Data). The object on the
//! token stays CKA_SENSITIVE: PKCS#11 never shows its CKA_VALUE. kms makes a transient AES-256
//! session key on the token, wraps the secret under it (CKM_AES_KEY_WRAP_PAD), unwraps the blob
//! again *on the token* into a non-sensitive session object, reads that object's value and
//! destroys both session objects. The wrapped blob and the transient key never leave the token
//! session; the value leaves it once, to the caller, like a data key. A sensitive object can be
//! read this way only if it is extractable without CKA_WRAP_WITH_TRUSTED, which kms sets for
//! secret-data objects alone. Its backup copy is wrap-with-trusted all the same (the backup
//! KEK's unwrap template pins that for everything unwrapped under it), so a copy is proven by
//! HMAC and is not read back in place: a value is revealed from the token that made it.
//!
//! A value is kept on the token padded as ISO/IEC 7816-4 (0x80, then zeros, to a multiple of
//! 8 bytes): SoftHSM2 2.6.1's CKM_AES_KEY_WRAP_PAD unwrap does not strip RFC 5649's padding
//! (measured: a 46-byte value came back as 48 bytes, the last two zero), so a value whose length
//! is no multiple of 8 would come back longer, and so would its backup copy. Padded by kms, every
//! value is a multiple of 8 and goes through wrap and unwrap unchanged.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType as CkKeyType, ObjectClass};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::objects::KeyClass;
use super::wrap::{destroy_quietly, read_value};
use super::{HsmError, Token};
use crate::model::ObjectId;

/// A secret-data value as kept on the token: the value, 0x80, zeros to a multiple of 8 bytes.
pub(crate) fn encode_secret(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 8));
    out.extend_from_slice(value);
    out.push(0x80);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    out
}

/// The value of an encoded secret, or `None` if `kept` is not such an encoding.
fn decode_secret(mut kept: Zeroizing<Vec<u8>>) -> Option<Zeroizing<Vec<u8>>> {
    let end = kept.iter().rposition(|b| *b != 0)?;
    if kept[end] != 0x80 || kept.len() - end > 8 + 8 {
        return None;
    }
    kept.truncate(end);
    Some(kept)
}

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
            decode_secret(out?).ok_or_else(|| HsmError::Raw {
                token: self.name().to_owned(),
                what: "the object holds no kms secret-data value (not padded as kms pads them)"
                    .into(),
            })
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
    let value = read_value(token, s, readable);
    destroy_quietly(s, readable);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_round_trips_and_is_a_multiple_of_eight() {
        for n in 0..=40usize {
            let value: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31)).collect();
            let kept = encode_secret(&value);
            assert_eq!(kept.len() % 8, 0);
            assert!(kept.len() > n && kept.len() <= n + 8);
            // What SoftHSM2 may hand back: the encoding, perhaps with RFC 5649's zeros after it.
            let mut padded = kept.to_vec();
            padded.extend([0u8; 7]);
            for back in [kept.to_vec(), padded] {
                let got = decode_secret(Zeroizing::new(back));
                assert_eq!(got.as_deref().map(Vec::as_slice), Some(value.as_slice()));
            }
        }
        assert!(decode_secret(Zeroizing::new(vec![1, 2, 3, 0])).is_none());
        assert!(decode_secret(Zeroizing::new(vec![0; 8])).is_none());
    }
}
