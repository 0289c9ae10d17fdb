//! Key generation on the device. Every private or secret key is created CKA_TOKEN, CKA_PRIVATE,
//! CKA_SENSITIVE=true, and backup-eligible: CKA_EXTRACTABLE=true *with* CKA_WRAP_WITH_TRUSTED=true,
//! so the only key that can ever wrap it is a CKA_TRUSTED one, which only the token's security
//! officer can create (the backup ceremony's KEK); no user session can export it, in plaintext or
//! under a key of its own. Both attributes are fixed at creation (SoftHSM2 refuses to change them
//! later), so a key made non-extractable could never be backed up. Each key gets a fresh random
//! 16-byte CKA_ID and a readable CKA_LABEL; its CKA_SIGN/DECRYPT/... flags follow the key's usage
//! policy, so the token itself refuses what the inventory does not allow.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType as CkKeyType, ObjectClass};
use cryptoki::session::Session;

use super::{public_key, HsmError, Token};
use crate::model::{Curve, KeyFamily, KeyType, ObjectId, Operation, OperationSet};

/// DER of the namedCurve OID secp384r1 (1.3.132.0.34), as CKA_EC_PARAMS wants it.
pub(crate) const SECP384R1_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// prime256v1 / secp256r1 (1.2.840.10045.3.1.7).
const PRIME256V1_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp521r1 (1.3.132.0.35).
const SECP521R1_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
/// id-Ed25519 (1.3.101.112, RFC 8410): SoftHSM2 2.6 takes the OID form of CKA_EC_PARAMS.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// CKA_EC_PARAMS of an EC or Edwards key type.
pub(crate) fn ec_params(key_type: KeyType) -> Option<&'static [u8]> {
    match key_type.family() {
        KeyFamily::Ec(Curve::P256) => Some(&PRIME256V1_PARAMS),
        KeyFamily::Ec(Curve::P384) => Some(&SECP384R1_PARAMS),
        KeyFamily::Ec(Curve::P521) => Some(&SECP521R1_PARAMS),
        KeyFamily::Ed25519 => Some(&ED25519_PARAMS),
        _ => None,
    }
}

/// The PKCS#11 CKA_KEY_TYPE of a kms key type.
pub(crate) fn ck_key_type(key_type: KeyType) -> CkKeyType {
    match key_type.family() {
        KeyFamily::Aes => CkKeyType::AES,
        KeyFamily::Ec(_) => CkKeyType::EC,
        KeyFamily::Ed25519 => CkKeyType::EC_EDWARDS,
        KeyFamily::Rsa => CkKeyType::RSA,
        KeyFamily::Hmac | KeyFamily::Secret => CkKeyType::GENERIC_SECRET,
        KeyFamily::Des3 => CkKeyType::DES3,
    }
}

/// CKA_WRAP_WITH_TRUSTED of a key of `key_type`: true for every key but a revealable secret,
/// which kms reads out for its grantees under a transient session key (see `reveal.rs`).
pub(crate) fn wrap_with_trusted(key_type: KeyType) -> bool {
    !key_type.is_revealable()
}

/// The capability flags of a secret key, from its usage policy: every one set explicitly.
pub(crate) fn secret_flags(usage: &OperationSet) -> [Attribute; 7] {
    [
        Attribute::Encrypt(usage.contains(Operation::Encrypt)),
        Attribute::Decrypt(usage.contains(Operation::Decrypt)),
        Attribute::Wrap(usage.contains(Operation::Wrap)),
        Attribute::Unwrap(usage.contains(Operation::Unwrap)),
        // A secret-data object may HMAC: how its backup copy is proven (engine/backup.rs).
        Attribute::Sign(usage.contains(Operation::Mac) || usage.contains(Operation::Reveal)),
        Attribute::Verify(usage.contains(Operation::VerifyMac)),
        Attribute::Derive(false),
    ]
}

/// What generation produced: where to find it again and, for key pairs, the public key.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub id: ObjectId,
    /// SubjectPublicKeyInfo DER, for asymmetric keys.
    pub public_key_der: Option<Vec<u8>>,
}

impl Token {
    /// Generate a key of `key_type` on this token. On any failure after the objects exist they are
    /// destroyed again, so no half-made key stays behind.
    pub fn generate(
        &self,
        key_type: KeyType,
        id: &ObjectId,
        label: &str,
        usage: &OperationSet,
    ) -> Result<GeneratedKey, HsmError> {
        self.run(|session| {
            let id = id.clone();
            let label = label.as_bytes().to_vec();
            let public_key_der = match key_type.is_symmetric() {
                true => {
                    generate_secret(self.name(), session, key_type, &id, label, usage)?;
                    None
                }
                false => {
                    generate_pair(self.name(), session, key_type, &id, label, usage)?;
                    match public_key::export(self.name(), session, &id, key_type) {
                        Ok(der) => Some(der),
                        Err(e) => {
                            // Best effort: the export error is what the caller needs to see.
                            let _ = super::objects::destroy_id(self.name(), session, &id);
                            return Err(e);
                        }
                    }
                }
            };
            Ok(GeneratedKey { id, public_key_der })
        })
    }
}

impl Token {
    /// A fresh random 16-byte CKA_ID from the token's RNG, not used by any object on the token.
    /// Callers record it before generating, so a crash in between leaves a findable trace.
    pub fn new_object_id(&self) -> Result<ObjectId, HsmError> {
        self.run(|s| fresh_id(self.name(), s))
    }
}

fn fresh_id(token: &str, session: &Session) -> Result<ObjectId, HsmError> {
    loop {
        let bytes = session
            .generate_random_vec(16)
            .map_err(HsmError::ck(token, "generating a CKA_ID"))?;
        let taken = session
            .find_objects(&[Attribute::Id(bytes.clone())])
            .map_err(HsmError::ck(token, "checking a CKA_ID"))?;
        if taken.is_empty() {
            return Ok(ObjectId(bytes));
        }
    }
}

fn common_private(key_type: KeyType, id: &ObjectId, label: Vec<u8>) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(wrap_with_trusted(key_type)),
        Attribute::Modifiable(false),
        Attribute::Id(id.0.clone()),
        Attribute::Label(label),
    ]
}

fn generate_secret(
    token: &str,
    session: &Session,
    key_type: KeyType,
    id: &ObjectId,
    label: Vec<u8>,
    usage: &OperationSet,
) -> Result<(), HsmError> {
    let mut template = common_private(key_type, id, label);
    template.push(Attribute::Class(ObjectClass::SECRET_KEY));
    template.push(Attribute::KeyType(ck_key_type(key_type)));
    template.extend(secret_flags(usage));
    let mechanism = match key_type.family() {
        KeyFamily::Aes => Mechanism::AesKeyGen,
        KeyFamily::Hmac | KeyFamily::Secret => Mechanism::GenericSecretKeyGen,
        KeyFamily::Des3 => Mechanism::Des3KeyGen,
        _ => {
            return Err(HsmError::Raw {
                token: token.to_owned(),
                what: format!("{key_type} is not a secret-key type"),
            })
        }
    };
    if key_type.is_revealable() {
        // Random bytes from the token, kept padded as every secret-data value (see reveal.rs).
        let random = zeroize::Zeroizing::new(
            session
                .generate_random_vec(key_type.secret_len().unwrap_or(32) as u32)
                .map_err(HsmError::ck(token, "drawing a secret value"))?,
        );
        template.push(Attribute::Value(
            super::reveal::encode_secret(&random).to_vec(),
        ));
        let made = session.create_object(&template);
        for a in &mut template {
            if let Attribute::Value(v) = a {
                zeroize::Zeroize::zeroize(v);
            }
        }
        made.map_err(HsmError::ck(
            token,
            "putting a generated secret on the token",
        ))?;
        return Ok(());
    }
    if key_type.family() != KeyFamily::Des3 {
        let len = key_type.secret_len().unwrap_or(32) as u64;
        template.push(Attribute::ValueLen(len.into()));
    }
    session
        .generate_key(&mechanism, &template)
        .map_err(HsmError::ck(token, "generating a secret key"))?;
    Ok(())
}

fn generate_pair(
    token: &str,
    session: &Session,
    key_type: KeyType,
    id: &ObjectId,
    label: Vec<u8>,
    usage: &OperationSet,
) -> Result<(), HsmError> {
    // Every capability flag is set explicitly from the usage policy: left out, a module picks its
    // own default (SoftHSM2 marks an EC private key decrypt+unwrap capable).
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Id(id.0.clone()),
        Attribute::Label(label.clone()),
        Attribute::Verify(usage.contains(Operation::Verify)),
        Attribute::Encrypt(usage.contains(Operation::Encrypt)),
        Attribute::Wrap(usage.contains(Operation::Wrap)),
    ];
    let mut private = common_private(key_type, id, label);
    private.extend([
        Attribute::Sign(usage.contains(Operation::Sign)),
        Attribute::Decrypt(usage.contains(Operation::Decrypt)),
        Attribute::Unwrap(usage.contains(Operation::Unwrap)),
        Attribute::Derive(false),
    ]);
    let mechanism = match (key_type.rsa_bits(), ec_params(key_type)) {
        (Some(bits), _) => {
            public.extend([
                Attribute::ModulusBits(u64::from(bits).into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ]);
            Mechanism::RsaPkcsKeyPairGen
        }
        (None, Some(params)) => {
            public.push(Attribute::EcParams(params.to_vec()));
            if key_type == KeyType::Ed25519 {
                Mechanism::EccEdwardsKeyPairGen
            } else {
                Mechanism::EccKeyPairGen
            }
        }
        (None, None) => {
            return Err(HsmError::Raw {
                token: token.to_owned(),
                what: format!("{key_type} is not a key-pair type"),
            })
        }
    };
    session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(HsmError::ck(token, "generating a key pair"))?;
    Ok(())
}
