//! YubiKey PIV smartcards, driven natively over PC/SC with the `yubikey` crate — the only module
//! that imports it. Two uses: people's approval keys (they sign access approvals, reviews and
//! disposals on the card they hold) and keys that must live offline on a card (a root or escrow
//! key, generated on the card and inventoried like any other key).
//!
//! The same cards also work as PKCS#11 tokens through OpenSC or ykcs11 (`hsm/personal.rs` and a
//! `[tokens.NAME]` entry); this module is for what PKCS#11 cannot do on a card: enrolment with
//! the management key, PIN/PUK tries, slot inventory.
//!
//! PINs, PUKs and management keys arrive as `SecretString` from PIN sources (never argv), are
//! passed to the card and dropped (zeroized).

mod error;
mod readers;
mod stuck;
mod tries;
mod watchdog;

/// How long a reader may take to say which card it holds (connect, SELECT, version, serial:
/// well under 200 ms on a YubiKey or the virtual card). A reader slower than this is reported
/// as not answering, never waited for longer.
pub(crate) const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_millis(1500);

use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use yubikey::certificate::{CertInfo, Certificate};
use yubikey::piv::{self, AlgorithmId, SlotId};
use yubikey::{MgmKey, PinPolicy, TouchPolicy, YubiKey};

pub use error::{CardError, Unreachable};
pub use tries::check_puk_tries;
use tries::verify_pin;
use watchdog::{Watch, KEYGEN, UNCHANGED};

/// A card the PC/SC stack sees.
#[derive(Debug, Clone, Serialize)]
pub struct CardInfo {
    pub serial: u32,
    pub version: String,
    pub reader: String,
}

/// One slot holding a certificate (and so, by PIV convention, a key).
#[derive(Debug, Clone, Serialize)]
pub struct SlotUse {
    pub slot: String,
    pub subject: String,
    /// SubjectPublicKeyInfo DER of the slot's key, from its certificate.
    #[serde(skip)]
    pub public_key: Vec<u8>,
}

/// What `kms card status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct CardStatus {
    #[serde(flatten)]
    pub info: CardInfo,
    pub pin_tries_left: Option<u8>,
    /// PUK tries left, when the card reports it (Yubico GET METADATA, YubiKey 5.3+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub puk_tries_left: Option<u8>,
    pub slots: Vec<SlotUse>,
}

/// The slots kms uses: 9a, 9c, 9d, 9e and the retired 82..95.
pub fn parse_slot(s: &str) -> Result<SlotId, CardError> {
    let bad = || CardError::BadSlot(s.to_owned());
    let byte = u8::from_str_radix(s.trim().trim_start_matches("0x"), 16).map_err(|_| bad())?;
    if !matches!(byte, 0x9a | 0x9c | 0x9d | 0x9e | 0x82..=0x95) {
        return Err(bad());
    }
    SlotId::try_from(byte).map_err(|_| bad())
}

/// The slot as kms writes it (`9c`, `82`, ...).
pub fn slot_name(slot: SlotId) -> String {
    format!("{:02x}", u8::from(slot))
}

/// What `kms card list` finds: the cards that answered, and readers holding a card that did
/// not (frozen, or held by another program). Empty readers are not listed.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub cards: Vec<CardInfo>,
    pub unreachable: Vec<Unreachable>,
}

/// Every card on every reader that holds one (each read in parallel, within the probe deadline).
pub fn list() -> Result<Listing, CardError> {
    let p = readers::probe(None, false)?;
    Ok(Listing {
        cards: p.cards,
        unreachable: p.unreachable,
    })
}

/// Connect to the card with `serial`, or to the only card present. Only readers holding a card
/// are asked, all at once, and the first answer of the card asked for wins; a reader that does
/// not answer within the probe deadline is reported, not waited for.
fn open(serial: Option<u32>, op: &'static str) -> Result<YubiKey, CardError> {
    let mut p = readers::probe(serial, serial.is_none())?;
    if let Some(yk) = p.opened.take() {
        return Ok(yk);
    }
    let present: Vec<u32> = p.cards.iter().map(|c| c.serial).collect();
    if serial.is_none() && p.unreachable.is_empty() {
        match p.connected.len() {
            1 => {
                if let Some(yk) = p.connected.pop() {
                    return Ok(yk);
                }
            }
            0 => {}
            _ => return Err(CardError::SeveralCards(present)),
        }
    }
    // One reader's card did not answer and the card asked for is not elsewhere (or none was
    // named and no other card answered): that is the card, busy or not answering.
    if p.unreachable.len() == 1 && (serial.is_some() || present.is_empty()) {
        let u = p.unreachable.remove(0);
        return Err(if u.busy {
            CardError::Busy {
                serial,
                reader: u.reader,
            }
        } else {
            CardError::NotAnswering {
                serial,
                reader: u.reader,
                op,
                step: "finding the card",
                waited: PROBE_DEADLINE,
                consequence: UNCHANGED,
            }
        });
    }
    Err(CardError::NoCard {
        serial,
        present,
        unreachable: p.unreachable,
    })
}

fn info(yk: &YubiKey) -> CardInfo {
    CardInfo {
        serial: yk.serial().0,
        version: yk.version().to_string(),
        reader: yk.name().to_owned(),
    }
}

/// A read failed because of the connection (card gone, reader gone, PC/SC trouble), not because
/// of what the card holds.
fn lost(e: &yubikey::Error) -> bool {
    matches!(e, yubikey::Error::PcscError { .. })
}

fn slots_in_use(yk: &mut YubiKey, w: &Watch) -> Result<Vec<SlotUse>, CardError> {
    let mut out = Vec::new();
    let mut candidates = vec![0x9a, 0x9c, 0x9d, 0x9e];
    candidates.extend(0x82..=0x95);
    for b in candidates {
        let Ok(slot) = SlotId::try_from(b) else {
            continue;
        };
        w.step("reading the slots' certificates");
        // Certificate::read panics on an empty certificate object (what a deleted certificate
        // leaves behind), so the object is fetched first and only a non-empty one parsed.
        let present = match yk.fetch_object(cert_object_id(b)) {
            Ok(buf) => buf.len() > 4,
            Err(e) if lost(&e) => return Err(CardError::from_yk(e)),
            Err(_) => false,
        };
        if !present {
            continue;
        }
        match Certificate::read(yk, slot) {
            Ok(cert) => {
                use x509_cert::der::Encode as _;
                out.push(SlotUse {
                    slot: slot_name(slot),
                    subject: cert.subject().to_string(),
                    public_key: cert.subject_pki().to_der().unwrap_or_default(),
                });
            }
            Err(e) if lost(&e) => return Err(CardError::from_yk(e)),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// The PIV data object holding a slot's certificate (SP 800-73-4 table 3; retired slots 82..95
/// are 5FC10D..5FC120).
fn cert_object_id(slot: u8) -> u32 {
    match slot {
        0x9a => 0x005f_c105,
        0x9c => 0x005f_c10a,
        0x9d => 0x005f_c10b,
        0x9e => 0x005f_c101,
        r => 0x005f_c10d + u32::from(r.saturating_sub(0x82)),
    }
}

/// Serial, firmware, PIN tries left, slots in use.
pub fn status(serial: Option<u32>) -> Result<CardStatus, CardError> {
    status_for("card status", serial)
}

/// [`status`] as the first step of operation `op` (named in error messages).
pub fn status_for(op: &'static str, serial: Option<u32>) -> Result<CardStatus, CardError> {
    watchdog::run(op, serial, move |w| {
        let mut yk = w.open(serial)?;
        w.step("reading the PIN tries counter");
        let pin_tries_left = match yk.get_pin_retries() {
            Ok(t) => Some(t),
            Err(e) if lost(&e) => return Err(CardError::from_yk(e)),
            Err(_) => None,
        };
        w.step("reading the PUK tries counter");
        let puk_tries_left = tries::puk_tries(&mut yk)?;
        let slots = slots_in_use(&mut yk, w)?;
        Ok(CardStatus {
            info: info(&yk),
            pin_tries_left,
            puk_tries_left,
            slots,
        })
    })
}

/// An owned copy of a secret for a worker thread (zeroized when the worker drops it).
fn owned(secret: &SecretString) -> SecretString {
    SecretString::from(secret.expose_secret())
}

fn mgm_key(mgm: Option<&SecretString>) -> Result<MgmKey, CardError> {
    match mgm {
        None => Ok(MgmKey::default()),
        Some(hex_key) => {
            let bytes = zeroize::Zeroizing::new(
                hex::decode(hex_key.expose_secret().trim())
                    .map_err(|_| CardError::BadManagementKey)?,
            );
            MgmKey::from_bytes(bytes.as_slice()).map_err(|_| CardError::BadManagementKey)
        }
    }
}

/// A key generated on a card.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolled {
    pub serial: u32,
    pub slot: String,
    /// SubjectPublicKeyInfo DER.
    #[serde(skip)]
    pub public_key: Vec<u8>,
    /// The slot held a key before (only with `force`).
    pub replaced: Option<String>,
}

/// Generate an EC P-384 key in `slot` (management key and PIN asked of the caller), store a
/// self-signed certificate for it there, and return its public key. A slot in use is refused
/// unless `force`.
pub fn generate(
    serial: Option<u32>,
    slot: SlotId,
    pin: &SecretString,
    mgm: Option<&SecretString>,
    subject_cn: &str,
    force: bool,
) -> Result<Enrolled, CardError> {
    let (pin, mgm) = (owned(pin), mgm.map(owned));
    let subject_cn = subject_cn.to_owned();
    watchdog::run("card enrolment", serial, move |w| {
        generate_on(w, serial, slot, &pin, mgm.as_ref(), &subject_cn, force)
    })
}

fn generate_on(
    w: &Watch,
    serial: Option<u32>,
    slot: SlotId,
    pin: &SecretString,
    mgm: Option<&SecretString>,
    subject_cn: &str,
    force: bool,
) -> Result<Enrolled, CardError> {
    let mut yk = w.open(serial)?;
    let existing = slots_in_use(&mut yk, w)?
        .into_iter()
        .find(|s| s.slot == slot_name(slot));
    if existing.is_some() && !force {
        return Err(CardError::SlotInUse {
            slot: slot_name(slot),
            subject: existing.map(|s| s.subject).unwrap_or_default(),
        });
    }
    // The PIN first: a wrong PIN must not leave a freshly generated key without its certificate.
    w.step("verifying the PIN");
    verify_pin(&mut yk, pin)?;
    w.step("authenticating with the management key");
    yk.authenticate(mgm_key(mgm)?).map_err(|e| match e {
        yubikey::Error::AuthenticationError => CardError::WrongManagementKey,
        other => CardError::from_yk(other),
    })?;
    w.step_for("generating the key on the card", KEYGEN);
    w.changed("the slot's previous key may already be replaced by a new key without a certificate, and kms registered nothing: run the enrolment again (with --force if `kms card status` still shows a certificate in the slot)");
    let spki = piv::generate(
        &mut yk,
        slot,
        AlgorithmId::EccP384,
        PinPolicy::Default,
        TouchPolicy::Default,
    )
    .map_err(CardError::from_yk)?;
    // Slots like 9c want the PIN right before every signature (the certificate's included).
    // Verified directly: reading the tries counter re-selects the applet on some cards, which
    // drops the management-key authentication the certificate write still needs.
    w.step("verifying the PIN before the certificate");
    yk.verify_pin(pin.expose_secret().as_bytes())
        .map_err(CardError::from_yk)?;
    let name: x509_cert::name::Name = format!("CN={subject_cn}")
        .parse()
        .map_err(|e| CardError::Certificate(format!("subject: {e}")))?;
    let serial_number =
        x509_cert::serial_number::SerialNumber::new(&rand::random::<[u8; 16]>()[..])
            .map_err(|e| CardError::Certificate(e.to_string()))?;
    let validity =
        x509_cert::time::Validity::from_now(std::time::Duration::from_secs(10 * 365 * 86_400))
            .map_err(|e| CardError::Certificate(e.to_string()))?;
    w.step("signing the slot's certificate");
    let cert = Certificate::generate_self_signed::<_, p384::NistP384>(
        &mut yk,
        slot,
        serial_number,
        validity,
        name,
        spki.clone(),
        |_| Ok(()),
    )
    .map_err(CardError::from_yk)?;
    w.step("writing the slot's certificate");
    cert.write(&mut yk, slot, CertInfo::Uncompressed)
        .map_err(CardError::from_yk)?;
    use x509_cert::der::Encode as _;
    Ok(Enrolled {
        serial: yk.serial().0,
        slot: slot_name(slot),
        public_key: spki
            .to_der()
            .map_err(|e| CardError::Certificate(e.to_string()))?,
        replaced: existing.map(|s| s.subject),
    })
}

/// The public key of the key in `slot` (from its certificate).
pub fn public_key(serial: Option<u32>, slot: SlotId) -> Result<Vec<u8>, CardError> {
    watchdog::run("reading a card key", serial, move |w| {
        let mut yk = w.open(serial)?;
        slots_in_use(&mut yk, w)?
            .into_iter()
            .find(|s| s.slot == slot_name(slot))
            .map(|s| s.public_key)
            .ok_or(CardError::EmptySlot(slot_name(slot)))
    })
}

/// ECDSA P-384 over a SHA-384 digest with the key in `slot`, after the PIN; DER signature.
pub fn sign_p384(
    serial: Option<u32>,
    slot: SlotId,
    pin: &SecretString,
    digest: &[u8; 48],
) -> Result<(u32, Vec<u8>), CardError> {
    let pin = owned(pin);
    let digest = *digest;
    watchdog::run("a card signature", serial, move |w| {
        let mut yk = w.open(serial)?;
        w.step("verifying the PIN");
        verify_pin(&mut yk, &pin)?;
        w.step("signing on the card");
        let sig = piv::sign_data(&mut yk, &digest, AlgorithmId::EccP384, slot)
            .map_err(CardError::from_yk)?;
        Ok((yk.serial().0, sig.to_vec()))
    })
}

/// Destroy the key in `slot`: PIV has no "delete key", so a throwaway key is generated over it
/// (the old private key is gone) and the slot's certificate deleted. Returns whether the slot
/// holds no certificate afterwards (the validation).
pub fn wipe(
    serial: Option<u32>,
    slot: SlotId,
    pin: &SecretString,
    mgm: Option<&SecretString>,
) -> Result<bool, CardError> {
    let (pin, mgm) = (owned(pin), mgm.map(owned));
    watchdog::run("wiping a card slot", serial, move |w| {
        wipe_on(w, serial, slot, &pin, mgm.as_ref())
    })
}

fn wipe_on(
    w: &Watch,
    serial: Option<u32>,
    slot: SlotId,
    pin: &SecretString,
    mgm: Option<&SecretString>,
) -> Result<bool, CardError> {
    let mut yk = w.open(serial)?;
    w.step("verifying the PIN");
    verify_pin(&mut yk, pin)?;
    w.step("authenticating with the management key");
    yk.authenticate(mgm_key(mgm)?).map_err(|e| match e {
        yubikey::Error::AuthenticationError => CardError::WrongManagementKey,
        other => CardError::from_yk(other),
    })?;
    w.step_for("overwriting the slot's key", KEYGEN);
    w.changed("the slot's key may already be overwritten (destroyed) while its certificate remains: run the command again to finish");
    piv::generate(
        &mut yk,
        slot,
        AlgorithmId::EccP384,
        PinPolicy::Default,
        TouchPolicy::Default,
    )
    .map_err(CardError::from_yk)?;
    w.step("deleting the slot's certificate");
    match Certificate::delete(&mut yk, slot) {
        Ok(()) | Err(yubikey::Error::NotFound) => {}
        Err(e) => return Err(CardError::from_yk(e)),
    }
    Ok(!slots_in_use(&mut yk, w)?
        .iter()
        .any(|s| s.slot == slot_name(slot)))
}

/// The first retired slot (82..95) holding no certificate and not in `taken`.
pub fn free_retired_slot(serial: Option<u32>, taken: &[String]) -> Result<SlotId, CardError> {
    let taken = taken.to_vec();
    watchdog::run("finding a free card slot", serial, move |w| {
        let mut yk = w.open(serial)?;
        let used: Vec<String> = slots_in_use(&mut yk, w)?
            .into_iter()
            .map(|s| s.slot)
            .collect();
        for b in 0x82..=0x95u8 {
            let name = format!("{b:02x}");
            if !used.contains(&name) && !taken.contains(&name) {
                return SlotId::try_from(b).map_err(|_| CardError::BadSlot(name));
            }
        }
        Err(CardError::NoFreeSlot)
    })
}

/// PIN tries left.
pub fn pin_tries(serial: Option<u32>) -> Result<u8, CardError> {
    watchdog::run("reading the PIN tries counter", serial, move |w| {
        let mut yk = w.open(serial)?;
        w.step("reading the PIN tries counter");
        yk.get_pin_retries().map_err(CardError::from_yk)
    })
}

/// Unblock a blocked PIN with the PUK, setting a new PIN — after the PUK guard (src/smartcard/
/// tries.rs): a blocked PUK, or its last try without `last_try`, is refused before any try.
pub fn unblock(
    serial: Option<u32>,
    puk: &SecretString,
    new_pin: &SecretString,
    last_try: bool,
) -> Result<(), CardError> {
    let (puk, new_pin) = (owned(puk), owned(new_pin));
    watchdog::run("unblocking a card PIN", serial, move |w| {
        let mut yk = w.open(serial)?;
        w.step("unblocking the PIN with the PUK");
        tries::unblock(&mut yk, &puk, &new_pin, last_try)
    })
}
