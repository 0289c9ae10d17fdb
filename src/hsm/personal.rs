//! A person's own token (a smartcard or a SoftHSM token standing in for one) holding their
//! approval key, addressed by a PKCS#11 URI: read its public key, and sign an approval with it.

use std::path::Path;

use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use sha2::{Digest, Sha256, Sha384};

use super::uri::Pkcs11Uri;
use super::{HsmError, Token};
use crate::config::{PinSource, TokenConfig, TokenSelector};
use crate::model::{KeyType, ObjectId};

/// An approval signature and what made it.
#[derive(Debug, Clone)]
pub struct CardSignature {
    /// DER ECDSA signature (SHA-384) or RSA-PSS (SHA-256, salt 32).
    pub signature: Vec<u8>,
    /// SubjectPublicKeyInfo DER of the signing key.
    pub public_key: Vec<u8>,
    pub key_type: KeyType,
    /// The token that signed (which card it is).
    pub token_serial: String,
    pub token_label: String,
}

/// A URI's `module-path` is honoured only when it names the configured card module: loading a
/// library named by a command-line argument would run its code inside kms.
fn check_module(uri: &Pkcs11Uri, default_module: &Path) -> Result<(), HsmError> {
    match &uri.module_path {
        Some(p) if p.as_path() != default_module => Err(HsmError::PublicKey {
            token: uri.token.clone().unwrap_or_default(),
            id: uri.to_string(),
            reason: format!(
                "module-path {} is not the configured card module ([access] card_module = {}); remove it from the URI",
                p.display(),
                default_module.display()
            ),
        }),
        _ => Ok(()),
    }
}

fn card_config(uri: &Pkcs11Uri, default_module: &Path, pin: PinSource) -> TokenConfig {
    let selector = match (&uri.token, &uri.serial) {
        (_, Some(s)) => TokenSelector::Serial(s.clone()),
        (Some(t), None) => TokenSelector::Label(t.clone()),
        (None, None) => TokenSelector::Label(String::new()),
    };
    TokenConfig {
        name: uri
            .token
            .clone()
            .or_else(|| uri.serial.clone())
            .unwrap_or_default(),
        module: uri
            .module_path
            .clone()
            .unwrap_or_else(|| default_module.to_owned()),
        selector,
        user_pin: pin,
        so_pin: crate::config::PinSource::Prompt,
        sessions: 1,
        site: None,
    }
}

/// Sign `message` with the private key `uri` names, logging in with `pin`. The public half is
/// returned too, so the caller can check it is the key registered for the person.
pub fn sign_with_card(
    uri: &Pkcs11Uri,
    default_module: &Path,
    pin: PinSource,
    message: &[u8],
) -> Result<CardSignature, HsmError> {
    check_module(uri, default_module)?;
    let cfg = card_config(uri, default_module, pin);
    let token = Token::open(&cfg)?;
    let (id, key_type) = locate(&token, uri)?;
    let public_key = token.public_key(&id, key_type)?;
    let signature = match key_type {
        // A PIV card's signature slot (9c) through OpenSC or ykcs11 wants the PIN again right
        // before each signature.
        KeyType::EcP384 if token.always_authenticate(&id).unwrap_or(false) => {
            token.sign_ecdsa_p384_always_authenticate(&id, message)?
        }
        KeyType::EcP384 => {
            let digest: [u8; 48] = Sha384::digest(message).into();
            token.sign_ecdsa_p384(&id, &digest)?
        }
        _ => {
            let digest: [u8; 32] = Sha256::digest(message).into();
            token.sign_rsa_pss_sha256(&id, &digest)?
        }
    };
    Ok(CardSignature {
        signature,
        public_key,
        key_type,
        token_serial: token.serial().to_owned(),
        token_label: token.label().to_owned(),
    })
}

/// The public key `uri` names, read after logging in with `pin` (some cards hide even public
/// objects before login).
pub fn card_public_key(
    uri: &Pkcs11Uri,
    default_module: &Path,
    pin: PinSource,
) -> Result<CardKey, HsmError> {
    check_module(uri, default_module)?;
    let cfg = card_config(uri, default_module, pin);
    let token = Token::open(&cfg)?;
    let (id, key_type) = locate(&token, uri)?;
    Ok(CardKey {
        public_key: token.public_key(&id, key_type)?,
        key_type,
        token_serial: token.serial().to_owned(),
        token_label: token.label().to_owned(),
    })
}

/// A key on a person's token, as found there.
#[derive(Debug, Clone)]
pub struct CardKey {
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    pub key_type: KeyType,
    /// The token holding it (which card it is).
    pub token_serial: String,
    pub token_label: String,
}

/// Find the private key the URI names (by CKA_LABEL and/or CKA_ID); return its CKA_ID and type.
fn locate(token: &Token, uri: &Pkcs11Uri) -> Result<(ObjectId, KeyType), HsmError> {
    token.run(|s| {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = s
            .find_objects(&template)
            .map_err(HsmError::ck(token.name(), "finding the approval key"))?;
        let handle = match found.as_slice() {
            [h] => *h,
            [] => {
                return Err(HsmError::ObjectNotFound {
                    token: token.name().to_owned(),
                    class: "approval private key",
                    id: uri.to_string(),
                })
            }
            _ => {
                return Err(HsmError::PublicKey {
                    token: token.name().to_owned(),
                    id: uri.to_string(),
                    reason: "the URI matches more than one private key; add id=".into(),
                })
            }
        };
        let attrs = s
            .get_attributes(
                handle,
                &[
                    AttributeType::Id,
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                ],
            )
            .map_err(HsmError::ck(token.name(), "reading the approval key"))?;
        let (mut id, mut kt, mut bits) = (None, None, 0usize);
        for a in attrs {
            match a {
                Attribute::Id(v) => id = Some(ObjectId(v)),
                Attribute::KeyType(t) => kt = Some(t),
                Attribute::Modulus(m) => bits = m.len() * 8,
                _ => {}
            }
        }
        let unsupported = || HsmError::PublicKey {
            token: token.name().to_owned(),
            id: uri.to_string(),
            reason: "approval keys must be EC P-384 or RSA 3072/4096".into(),
        };
        let key_type = match kt {
            Some(t) if t == CkKeyType::EC => KeyType::EcP384,
            Some(t) if t == CkKeyType::RSA && bits == 3072 => KeyType::Rsa3072,
            Some(t) if t == CkKeyType::RSA && bits == 4096 => KeyType::Rsa4096,
            _ => return Err(unsupported()),
        };
        // An EC key on another curve is refused later, when its public key is encoded as P-384.
        let id = id.ok_or_else(unsupported)?;
        Ok((id, key_type))
    })
}
