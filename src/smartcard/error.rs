//! Errors of the smartcard layer, each saying what to do.

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("no smartcard reader: is pcscd running and the reader plugged in? (`kms card list` lists what PC/SC sees)")]
    NoReader,
    /// The card asked for is not among those that answered (wrong card, or none inserted).
    /// `unreachable` names readers holding a card that did not answer or that another program
    /// holds: the card asked for may be one of them.
    #[error("{}", no_card(.serial, .present, .unreachable))]
    NoCard {
        serial: Option<u32>,
        present: Vec<u32>,
        unreachable: Vec<Unreachable>,
    },
    /// The card left its reader while kms was using it.
    #[error("card {} was removed during {op} ({step}); insert it and run the command again — {consequence}", card(.serial))]
    Removed {
        serial: Option<u32>,
        op: &'static str,
        step: &'static str,
        consequence: &'static str,
    },
    /// The reader itself went away (unplugged) while kms was using its card.
    #[error("the reader of card {} ({reader}) went away during {op} ({step}); plug it in, insert the card and run the command again — {consequence}", card(.serial))]
    ReaderGone {
        serial: Option<u32>,
        reader: String,
        op: &'static str,
        step: &'static str,
        consequence: &'static str,
    },
    /// A step got no answer within its time budget: the card is frozen, or another program
    /// holds it for a long transaction.
    #[error("card {} did not answer within {:.1} s during {op} ({step}; reader '{reader}'): it is busy (another program holds it) or not responding; remove and re-insert it, then run the command again — {consequence}", card(.serial), .waited.as_secs_f32())]
    NotAnswering {
        serial: Option<u32>,
        reader: String,
        op: &'static str,
        step: &'static str,
        waited: std::time::Duration,
        consequence: &'static str,
    },
    /// An earlier operation on this card is still waiting for it (in this process): fail fast
    /// rather than pile up another waiting thread.
    #[error("card {} is still not answering (reader '{reader}'): an earlier {op} has waited {} s for it; remove and re-insert it", card(.serial), .since.as_secs())]
    StillStuck {
        serial: Option<u32>,
        reader: String,
        op: &'static str,
        since: std::time::Duration,
    },
    /// Another program reset the card (or took it over) in the middle of the operation.
    #[error("card {} was reset by another program during {op} ({step}); run the command again — {consequence}", card(.serial))]
    Interrupted {
        serial: Option<u32>,
        op: &'static str,
        step: &'static str,
        consequence: &'static str,
    },
    /// A PC/SC reset or sharing violation, before [`CardError::Interrupted`]/[`CardError::Busy`]
    /// say on which card and during what.
    #[error("the card was reset or taken by another program; run the command again")]
    Contended { sharing_violation: bool },
    /// `kms card list`: readers holding a card that did not answer (the cards that did are
    /// listed).
    #[error("{}; the cards that answered are listed", .0.iter().map(Unreachable::to_string).collect::<Vec<_>>().join("; "))]
    Unlisted(Vec<Unreachable>),
    /// Another program holds the card exclusively (PC/SC sharing violation).
    #[error("card {} is busy: another program holds it exclusively (reader '{reader}'; e.g. gpg's scdaemon, a browser or a PKCS#11 application); close it and run the command again — nothing was changed on the card", card(.serial))]
    Busy { serial: Option<u32>, reader: String },
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
    #[error("no free retired slot (82..95) on the card")]
    NoFreeSlot,
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("smartcard: {0}")]
    Card(String),
}

/// A reader holding a card kms could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub reader: String,
    /// Another program holds it exclusively (otherwise: it did not answer in time).
    pub busy: bool,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.busy {
            write!(
                f,
                "the card in reader '{}' is held by another program (busy)",
                self.reader
            )
        } else {
            write!(
                f,
                "the card in reader '{}' does not answer (busy or not responding: remove and re-insert it)",
                self.reader
            )
        }
    }
}

fn card(serial: &Option<u32>) -> String {
    serial
        .map(|s| s.to_string())
        .unwrap_or_else(|| "(the only one)".into())
}

fn no_card(serial: &Option<u32>, present: &[u32], unreachable: &[Unreachable]) -> String {
    let answered = if present.is_empty() {
        "no other card answered".to_owned()
    } else {
        format!(
            "cards that answered: {}",
            present
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
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
    if let (Some(s), false) = (serial, unreachable.is_empty()) {
        // The card asked for did not answer, and readers hold cards that did not either: it
        // is most likely one of them.
        return format!(
            "card {s} did not answer within {:.1} s; {}: one of them is probably card {s} — close the program holding it, or remove and re-insert it, then run the command again ({answered})",
            super::PROBE_DEADLINE.as_secs_f32(),
            unreachable
                .iter()
                .map(Unreachable::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    let mut out = match serial {
        Some(s) => format!("no card with serial {s}; {present}"),
        None if !unreachable.is_empty() => {
            format!("cannot tell which card to use; {present}")
        }
        None => format!("no smartcard found; {present}"),
    };
    if !unreachable.is_empty() {
        out.push_str("; ");
        out.push_str(
            &unreachable
                .iter()
                .map(Unreachable::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        );
        out.push_str("; say which card with --serial");
    } else if serial.is_some() {
        out.push_str(": insert it (or name the card that is present with --serial)");
    }
    out
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
            yubikey::Error::PcscError {
                inner: Some(pcsc::Error::ResetCard),
            } => CardError::Contended {
                sharing_violation: false,
            },
            yubikey::Error::PcscError {
                inner: Some(pcsc::Error::SharingViolation),
            } => CardError::Contended {
                sharing_violation: true,
            },
            other => CardError::Card(other.to_string()),
        }
    }

    /// Errors that say something about the card's content or the caller's input, not about
    /// the connection: kept as they are, never re-diagnosed as a removal.
    pub(crate) fn is_semantic(&self) -> bool {
        matches!(
            self,
            CardError::WrongPin { .. }
                | CardError::PinFinalTry
                | CardError::PinBlocked
                | CardError::WrongPuk { .. }
                | CardError::PukBlocked
                | CardError::BadManagementKey
                | CardError::SlotInUse { .. }
                | CardError::BadSlot(_)
                | CardError::EmptySlot(_)
                | CardError::NoFreeSlot
                | CardError::SeveralCards(_)
                | CardError::NoCard { .. }
                | CardError::Removed { .. }
                | CardError::ReaderGone { .. }
                | CardError::NotAnswering { .. }
                | CardError::StillStuck { .. }
                | CardError::Busy { .. }
                | CardError::Interrupted { .. }
                | CardError::Unlisted(_)
                | CardError::NoReader
        )
    }
}
