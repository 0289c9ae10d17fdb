//! What an officer asks for with `kms key create` (or an import), the keys kms makes for
//! itself, and the checks a request passes before anything is touched.

use std::collections::BTreeMap;

use time::Date;

use crate::duration::HumanDuration;
use crate::engine::EngineError;
use crate::model::{Classification, KeyType, OperationSet, SignatureScheme};

/// What an officer asks for with `kms key create`.
#[derive(Debug, Clone)]
pub struct CreateKey {
    pub name: String,
    pub key_type: KeyType,
    pub owner: String,
    pub classification: Classification,
    pub usage: OperationSet,
    pub purpose: String,
    pub handling: String,
    pub disposal: String,
    pub rotate_every: Option<HumanDuration>,
    pub expires: Option<Date>,
    pub labels: BTreeMap<String, String>,
    /// Re-encryption window after a rotation, seconds (default: `[lifecycle] reencrypt_window`).
    pub reencrypt_window_secs: Option<u64>,
    /// Originator usage period of each version (no new sign/encrypt/wrap after it).
    pub protect_for: Option<HumanDuration>,
    /// Recipient usage period of each version (no decrypt/unwrap/verify after it either).
    pub process_for: Option<HumanDuration>,
    /// Generate on a PIV smartcard instead of the HSM.
    pub on_card: Option<OnCard>,
    /// The one signature scheme of an RSA key (default rsa-pss-sha256; rsa-pkcs1-sha256 for
    /// verifiers that need PKCS#1 v1.5).
    pub signature: Option<SignatureScheme>,
    /// Acknowledges a legacy type (des3): needed to create one.
    pub legacy: bool,
    /// A legacy key may still encrypt (otherwise it only decrypts).
    pub allow_legacy_encrypt: bool,
    /// Import wrapped key material instead of generating (BYOK).
    pub import: Option<Import>,
}

/// Key material brought in wrapped under kms's import key (see `hsm/import.rs` for the format).
#[derive(Debug, Clone)]
pub struct Import {
    /// RSA-OAEP(AES key) || AES-KWP(material). Wrapped: no plaintext key here.
    pub wrapped: Vec<u8>,
    /// SubjectPublicKeyInfo DER of an EC or Ed25519 key pair (RSA's comes from the key).
    pub public_key: Option<Vec<u8>>,
    /// A secret key handed over in the clear (a door's Register over mutual TLS): put on the token
    /// as a sensitive object at once, the buffer zeroised when dropped. `wrapped` is then empty.
    pub plain: Option<PlainKey>,
}

/// Key bytes in the clear, on their way to a token: zeroised on drop, never printed.
#[derive(Clone)]
pub struct PlainKey(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlainKey(<{} bytes>)", self.0.len())
    }
}

/// Where on a card a card-resident key is generated, and how to reach it.
#[derive(Debug, Clone)]
pub struct OnCard {
    pub serial: u32,
    pub slot: String,
    /// Default: the `[cards.SERIAL]` pin source, else prompt.
    pub pin: Option<crate::config::PinSource>,
    pub mgm: Option<crate::config::PinSource>,
    pub force: bool,
}

/// The `token` of a card-resident version in the inventory; its serial is the card's, its CKA_ID
/// the slot number.
pub const CARD_TOKEN: &str = "card";

impl CreateKey {
    /// A request with the required fields; the descriptive ones start empty and rotation and
    /// expiry take the defaults.
    pub fn new(
        name: impl Into<String>,
        key_type: KeyType,
        owner: impl Into<String>,
        classification: Classification,
        usage: OperationSet,
    ) -> CreateKey {
        CreateKey {
            name: name.into(),
            key_type,
            owner: owner.into(),
            classification,
            usage,
            purpose: String::new(),
            handling: String::new(),
            disposal: String::new(),
            rotate_every: None,
            expires: None,
            labels: BTreeMap::new(),
            reencrypt_window_secs: None,
            protect_for: None,
            process_for: None,
            on_card: None,
            signature: None,
            legacy: false,
            allow_legacy_encrypt: false,
            import: None,
        }
    }

    /// A key kms makes for itself (audit checkpoints, the offline-file seal, row integrity):
    /// owned by "kms", restricted, never granted to anyone, kept on the HSM.
    pub(crate) fn internal(
        name: &str,
        key_type: KeyType,
        usage: &str,
        purpose: &str,
        disposal: &str,
    ) -> Result<CreateKey, EngineError> {
        let usage = usage
            .parse()
            .map_err(|e: crate::model::ParseError| EngineError::InvalidInput(e.to_string()))?;
        let mut req = CreateKey::new(name, key_type, "kms", Classification::Restricted, usage);
        req.purpose = format!("{purpose}; used by kms itself only");
        req.handling = "never granted to anyone; generated and kept on the HSMs".into();
        req.disposal = disposal.into();
        Ok(req)
    }
}

pub(crate) fn validate(req: &CreateKey, today: Date) -> Result<(), EngineError> {
    let bad = |m: String| Err(EngineError::InvalidInput(m));
    crate::engine::access::validate_name(&req.name, "key")?;
    if req.owner.trim().is_empty() {
        return bad("--owner must name the responsible person or team".into());
    }
    if req.usage.is_empty() {
        return bad("--usage must list at least one operation (e.g. sign,verify)".into());
    }
    let supported = req.key_type.supported_operations();
    let unsupported: Vec<&str> = req
        .usage
        .iter()
        .filter(|op| !supported.contains(op))
        .map(|op| op.as_str())
        .collect();
    if !unsupported.is_empty() {
        let can: Vec<&str> = supported.iter().map(|o| o.as_str()).collect();
        return bad(format!(
            "an {} key cannot {}; {} keys support: {}",
            req.key_type,
            unsupported.join(", "),
            req.key_type,
            can.join(", ")
        ));
    }
    validate_type_options(req)?;
    // An imported key may be decrypt-only: it reads what was encrypted elsewhere.
    if req.key_type.family() == crate::model::KeyFamily::Aes
        && req.import.is_none()
        && !req.usage.contains(crate::model::Operation::Encrypt)
        && !(req.usage.contains(crate::model::Operation::Wrap)
            && req.usage.contains(crate::model::Operation::Unwrap))
    {
        return bad(format!(
            "an {} key with usage {} could never protect anything: include encrypt, or both wrap and unwrap",
            req.key_type, req.usage
        ));
    }
    if let (Some(p), Some(q)) = (req.protect_for, req.process_for) {
        if q < p {
            return bad(format!(
                "--process-for {q} is shorter than --protect-for {p}: data protected near the end could never be read"
            ));
        }
    }
    if let Some(expires) = req.expires {
        if expires <= today {
            return bad(format!(
                "--expires {expires} is not in the future (today is {today})"
            ));
        }
    }
    for k in req.labels.keys() {
        if k.is_empty() {
            return bad("labels are written key=value with a non-empty key".into());
        }
    }
    Ok(())
}

/// The options that depend on the key type: the signature scheme, legacy acknowledgement and
/// legacy encryption, HMAC usage.
pub(crate) fn validate_type_options(req: &CreateKey) -> Result<(), EngineError> {
    let bad = |m: String| Err(EngineError::InvalidInput(m));
    let t = req.key_type;
    if let Some(scheme) = req.signature {
        if !t.signature_schemes().contains(&scheme) {
            let can: Vec<&str> = t.signature_schemes().iter().map(|s| s.as_str()).collect();
            return bad(if can.is_empty() {
                format!("--signature {scheme}: {t} keys make no signatures")
            } else {
                format!(
                    "--signature {scheme} does not fit a {t} key; it signs with: {}",
                    can.join(", ")
                )
            });
        }
    }
    if t.is_legacy() && !req.legacy {
        return bad(format!(
            "{t} is a legacy type, kept only to read old data and move it to AES: pass --legacy to create one (a security officer's decision, audited), and plan `kms key migrate NAME --to aes-256`"
        ));
    }
    if !t.is_legacy() && req.legacy {
        return bad(format!(
            "--legacy is for legacy types (des3); {t} is not one"
        ));
    }
    if req.allow_legacy_encrypt && !t.is_legacy() {
        return bad(format!(
            "--allow-legacy-encrypt is for legacy types (des3); {t} is not one"
        ));
    }
    let producing: Vec<&str> = req
        .usage
        .iter()
        .filter(|op| t.legacy_producing(*op))
        .map(|op| op.as_str())
        .collect();
    if !producing.is_empty() && !req.allow_legacy_encrypt {
        return bad(format!(
            "a legacy {t} key only decrypts by default; usage {} needs --allow-legacy-encrypt (recorded in the inventory)",
            producing.join(",")
        ));
    }
    if t.family() == crate::model::KeyFamily::Hmac
        && req.import.is_none()
        && !req.usage.contains(crate::model::Operation::Mac)
    {
        return bad(format!(
            "an {t} key generated on the token needs mac in its usage (mac,verify-mac): a tag nobody can make can never be checked"
        ));
    }
    Ok(())
}
