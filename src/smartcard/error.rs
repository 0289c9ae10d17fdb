//! Errors of the smartcard layer, each saying what to do.

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("no smartcard reader: is pcscd running and the reader plugged in? (`kms card list` lists what PC/SC sees)")]
    NoReader,
    #[error("{}", no_card(.serial, .present))]
    NoCard {
        serial: Option<u32>,
        present: Vec<u32>,
    },
    #[error("several cards are present ({}); say which with --serial", .0.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))]
    SeveralCards(Vec<u32>),
    #[error("wrong PIN; tries left before the PIN is blocked: {tries_left}")]
    WrongPin { tries_left: u8 },
    #[error("the card says one PIN try is left; kms will not risk blocking it. Check the PIN source, then set KMS_ALLOW_FINAL_PIN_TRY=1 for one run")]
    PinFinalTry,
    #[error("the card's PIN is blocked; a security officer unblocks it with the PUK: `kms card unblock --serial SERIAL` (asks for the PUK and a new PIN)")]
    PinBlocked,
    #[error("wrong PUK; tries left before the PUK is blocked too: {tries_left}. Check the PUK source before trying again (kms refuses the last try without --last-try)")]
    WrongPuk { tries_left: u8 },
    #[error("the card says one PUK try is left; kms will not risk blocking the PUK (a blocked PUK and PIN leave only a reset that erases the card). Check the PUK source, then run `kms card unblock` again with --last-try")]
    PukFinalTry,
    #[error("this card does not report its PUK tries (Yubico GET METADATA, YubiKey 5.3+), so kms cannot tell whether this try is the last; check the PUK source, then run `kms card unblock` again with --last-try")]
    PukTriesUnknown,
    #[error("the card's PUK is blocked: the PIN cannot be unblocked any more. Only a PIV reset recovers the card, and it erases every key and certificate on it: reset it (`ykman piv reset`, once PIN and PUK are both blocked), set a new PIN, PUK and management key, re-enrol its owner (`kms card enrol --force`), and have keys that lived on it revoked or re-created")]
    PukBlocked,
    #[error("the card refused the management key (wrong key, or a card with a non-default key: pass it with --mgm-key-source, or set `mgm_key` in its [cards.SERIAL] entry for rotation and destruction)")]
    WrongManagementKey,
    #[error("a management key is 24 bytes (3DES) or 16/24/32 bytes (AES) written in hex")]
    BadManagementKey,
    #[error("slot {slot} already holds a key (certificate '{subject}'); refusing to overwrite it without --force (which is recorded)")]
    SlotInUse { slot: String, subject: String },
    #[error("slot {0} holds no key (no certificate)")]
    EmptySlot(String),
    #[error("'{0}' is not a usable PIV slot: use 9a, 9c, 9d, 9e or 82..95")]
    BadSlot(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("smartcard: {0}")]
    Card(String),
}

fn no_card(serial: &Option<u32>, present: &[u32]) -> String {
    let present = if present.is_empty() {
        "no card is present".to_owned()
    } else {
        format!(
            "cards present: {}",
            present
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    match serial {
        Some(s) => format!("no card with serial {s}; {present}"),
        None => format!("no smartcard found; {present}"),
    }
}

impl CardError {
    pub(crate) fn from_yk(e: yubikey::Error) -> CardError {
        match e {
            yubikey::Error::WrongPin { tries: 0 } => CardError::PinBlocked,
            yubikey::Error::WrongPin { tries } => CardError::WrongPin { tries_left: tries },
            yubikey::Error::PinLocked => CardError::PinBlocked,
            yubikey::Error::PcscError {
                inner: Some(pcsc::Error::NoReadersAvailable),
            } => CardError::NoReader,
            yubikey::Error::PcscError {
                inner: Some(pcsc::Error::NoService | pcsc::Error::ServiceStopped),
            } => CardError::NoReader,
            other => CardError::Card(other.to_string()),
        }
    }
}
