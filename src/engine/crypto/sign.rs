//! Sign and verify: signing on the token (or a PIV card), verification in software from the
//! stored public keys.

use sha2::{Digest, Sha256, Sha384, Sha512};
use time::OffsetDateTime;

use super::{Signed, ToSign, VerifyOutcome};
use crate::engine::{Caller, Engine, EngineError};
use crate::hsm::Token;
use crate::inventory::{KeyRecord, KeyVersion};
use crate::model::{Curve, KeyFamily, ObjectId, Operation, SignatureScheme, VersionState};
use crate::softverify::{self, Signed as SignedData};

impl Engine {
    /// Sign `message`: ECDSA P-384 over SHA-384 (DER) or RSA-PSS over SHA-256, salt 32.
    pub fn sign(&self, caller: &Caller, name: &str, message: &[u8]) -> Result<Signed, EngineError> {
        self.sign_data(caller, name, ToSign::Message(message))
    }

    /// Sign a message or a precomputed digest (48 bytes for ec-p384, 32 for RSA).
    pub fn sign_data(
        &self,
        caller: &Caller,
        name: &str,
        data: ToSign<'_>,
    ) -> Result<Signed, EngineError> {
        self.audited(caller, "key.sign", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            let version = self.authorize_use(caller, &key, Operation::Sign, None, now, note)?;
            note.key_version = Some(version.version);
            let scheme = key.signature_scheme().ok_or_else(|| {
                EngineError::InvalidInput(format!(
                    "key '{name}' is {} and cannot sign{}",
                    key.key_type,
                    if key.key_type.family() == KeyFamily::Hmac {
                        " (use `kms key mac`)"
                    } else {
                        ""
                    }
                ))
            })?;
            let algorithm = scheme.as_str();
            let (signature, digest_hex) = if version.token == crate::engine::CARD_TOKEN {
                let digest: [u8; 48] = match data {
                    ToSign::Message(m) => Sha384::digest(m).into(),
                    ToSign::Digest(d) => digest_of(d, "SHA-384", &key)?,
                };
                (
                    self.card_sign(version, &digest)?,
                    format!("digest {}", hex::encode(digest)),
                )
            } else {
                let prepared = prepare(scheme, data, (&key.name, key.key_type))?;
                let sig = self.on_version(note, &key, version, |t, id| {
                    sign_prepared(t, id, scheme, &prepared)
                })?;
                (sig, prepared.describe())
            };
            note.detail = Some(format!("signed {digest_hex} ({algorithm})"));
            Ok(Signed {
                signature,
                key_version: version.version,
                algorithm,
            })
        })
    }

    /// Verify in software against every version of the key that still has a public key, newest
    /// first, so signatures made before a rotation still verify.
    pub fn verify(
        &self,
        caller: &Caller,
        name: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<VerifyOutcome, EngineError> {
        self.verify_data(caller, name, ToSign::Message(message), signature)
    }

    /// Verify over a message or a precomputed digest.
    pub fn verify_data(
        &self,
        caller: &Caller,
        name: &str,
        data: ToSign<'_>,
        signature: &[u8],
    ) -> Result<VerifyOutcome, EngineError> {
        self.audited(caller, "key.verify", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            self.authorize_use(caller, &key, Operation::Verify, None, now, note)?;
            let scheme = key.signature_scheme().ok_or_else(|| {
                EngineError::InvalidInput(format!(
                    "key '{name}' is {} and verifies no signatures",
                    key.key_type
                ))
            })?;
            let signed = match data {
                ToSign::Message(m) => SignedData::Message(m),
                ToSign::Digest(d) => {
                    let Some(want) = scheme.digest_len() else {
                        return Err(EngineError::InvalidInput(format!(
                            "key '{name}' ({scheme}) verifies the message itself; send the message, not a digest"
                        )));
                    };
                    if d.len() != want {
                        return Err(EngineError::InvalidInput(format!(
                            "a digest for key '{name}' ({}) must be {want} bytes, not {}",
                            key.key_type,
                            d.len()
                        )));
                    }
                    SignedData::Digest(d)
                }
            };
            let mut outcome = VerifyOutcome {
                valid: false,
                key_version: None,
            };
            let lifecycle_now = crate::clock::lifecycle_now();
            let mut untrusted = None;
            for v in key.versions.iter().rev() {
                let Some(spki) = v.public_key.as_deref() else {
                    continue;
                };
                if v.state == VersionState::Pending {
                    continue;
                }
                if !softverify::verify_scheme(scheme, spki, signed, signature)? {
                    continue;
                }
                match crate::engine::policy::version_allows(&key, v, Operation::Verify, lifecycle_now) {
                    Ok(()) => {
                        outcome = VerifyOutcome {
                            valid: true,
                            key_version: Some(v.version),
                        };
                    }
                    Err(e) => untrusted = Some(e.to_string()),
                }
                break;
            }
            note.key_version = outcome.key_version;
            note.detail = Some(match (&outcome.valid, &untrusted) {
                (true, _) => "signature valid".to_owned(),
                (false, Some(why)) => {
                    format!("signature made by a version that is no longer trusted: {why}")
                }
                (false, None) => "signature NOT valid".to_owned(),
            });
            Ok(outcome)
        })
    }

    /// Sign a SHA-384 digest with a card-resident version (PIN from `[cards.SERIAL]`).
    fn card_sign(&self, version: &KeyVersion, digest: &[u8; 48]) -> Result<Vec<u8>, EngineError> {
        let serial = crate::engine::cards::card_serial(&version.token_serial)?;
        let slot = crate::smartcard::parse_slot(&version.object_id.to_hex())?;
        let pin = self
            .card_pin_source(serial)
            .resolve_kind(&format!("card {serial}"), "PIV")?;
        let (_, sig) = crate::smartcard::sign_p384(Some(serial), slot, &pin, digest)?;
        // The slot must still hold this version's key (one overwritten behind kms's back would
        // sign with another key).
        let spki = version.public_key.as_deref().ok_or_else(|| {
            EngineError::Incomplete("the inventory has no public key for this card version".into())
        })?;
        let ok = crate::softverify::verify_signed(
            crate::model::KeyType::EcP384,
            spki,
            crate::softverify::Signed::Digest(digest),
            &sig,
        )?;
        if !ok {
            return Err(EngineError::Incomplete(format!(
                "card {serial} slot {} no longer holds version {}'s key (its signature does not verify with the recorded public key): the card was changed outside kms",
                version.object_id, version.version
            )));
        }
        Ok(sig)
    }
}

/// What goes to the token for one signature: a digest of the scheme's hash, or (Ed25519) the
/// message itself.
pub(crate) enum Prepared<'a> {
    Digest(Vec<u8>),
    Message(&'a [u8]),
}

impl Prepared<'_> {
    /// For the audit detail: the digest in hex, or the message's length (never its bytes).
    pub(crate) fn describe(&self) -> String {
        match self {
            Prepared::Digest(d) => format!("digest {}", hex::encode(d)),
            Prepared::Message(m) => format!("a {}-byte message", m.len()),
        }
    }
}

/// Hash a message with the scheme's hash, or check a caller's digest has its length.
pub(crate) fn prepare<'a>(
    scheme: SignatureScheme,
    data: ToSign<'a>,
    key: (&str, crate::model::KeyType),
) -> Result<Prepared<'a>, EngineError> {
    let (name, key_type) = key;
    let hash = |m: &[u8]| -> Vec<u8> {
        match scheme {
            SignatureScheme::EcdsaP384Sha384 => Sha384::digest(m).to_vec(),
            SignatureScheme::EcdsaP521Sha512 => Sha512::digest(m).to_vec(),
            _ => Sha256::digest(m).to_vec(),
        }
    };
    match (scheme, data) {
        (SignatureScheme::Ed25519, ToSign::Message(m)) => Ok(Prepared::Message(m)),
        (SignatureScheme::Ed25519, ToSign::Digest(_)) => Err(EngineError::InvalidInput(format!(
            "key '{name}' is ed25519 (pure EdDSA): it signs the message itself; send the message, not a digest"
        ))),
        (_, ToSign::Message(m)) => Ok(Prepared::Digest(hash(m))),
        (_, ToSign::Digest(d)) => {
            let want = scheme.digest_len().unwrap_or(0);
            if d.len() != want {
                return Err(EngineError::InvalidInput(format!(
                    "a digest for key '{name}' ({key_type}, {scheme}) must be {want} bytes, not {}",
                    d.len()
                )));
            }
            Ok(Prepared::Digest(d.to_vec()))
        }
    }
}

/// Sign on `token` with `scheme` what [`prepare`] made.
pub(crate) fn sign_prepared(
    token: &Token,
    id: &ObjectId,
    scheme: SignatureScheme,
    prepared: &Prepared<'_>,
) -> Result<Vec<u8>, crate::hsm::HsmError> {
    match (scheme, prepared) {
        (SignatureScheme::Ed25519, Prepared::Message(m)) => token.sign_ed25519(id, m),
        (SignatureScheme::EcdsaP256Sha256, Prepared::Digest(d)) => {
            token.sign_ecdsa(id, Curve::P256, d)
        }
        (SignatureScheme::EcdsaP384Sha384, Prepared::Digest(d)) => {
            token.sign_ecdsa(id, Curve::P384, d)
        }
        (SignatureScheme::EcdsaP521Sha512, Prepared::Digest(d)) => {
            token.sign_ecdsa(id, Curve::P521, d)
        }
        (SignatureScheme::RsaPssSha256, Prepared::Digest(d)) => {
            token.sign_rsa_pss_sha256(id, &fixed(token, d)?)
        }
        (SignatureScheme::RsaPkcs1Sha256, Prepared::Digest(d)) => {
            token.sign_rsa_pkcs1_sha256(id, &fixed(token, d)?)
        }
        _ => Err(crate::hsm::HsmError::Raw {
            token: token.name().to_owned(),
            what: format!("{scheme} cannot sign this input"),
        }),
    }
}

fn fixed(token: &Token, d: &[u8]) -> Result<[u8; 32], crate::hsm::HsmError> {
    d.try_into().map_err(|_| crate::hsm::HsmError::Raw {
        token: token.name().to_owned(),
        what: format!("a SHA-256 digest is 32 bytes, not {}", d.len()),
    })
}

fn digest_of<const N: usize>(d: &[u8], alg: &str, key: &KeyRecord) -> Result<[u8; N], EngineError> {
    d.try_into().map_err(|_| {
        EngineError::InvalidInput(format!(
            "a digest for key '{}' ({}) must be a {alg} digest of {N} bytes, not {}",
            key.name,
            key.key_type,
            d.len()
        ))
    })
}
