//! PIN and PUK try counters, and the guards that never spend a last try unasked.
//!
//! - PIN: the counter is read first (GET PIN RETRIES costs no try); with one try left kms stops
//!   unless `KMS_ALLOW_FINAL_PIN_TRY` is set (a stale PIN in a config must not block a card).
//! - PUK: PIV has no free PUK-counter read except Yubico's GET METADATA (YubiKey 5.3+), read
//!   before every unblock. 0 tries: the PUK is blocked, only a PIV reset recovers the card. One
//!   try: refused unless the officer passes `--last-try`. A card that cannot report the counter
//!   (older firmware, other PIV cards): kms cannot tell whether the try is the last, so it is
//!   treated like the last one — refused unless `--last-try`.

use secrecy::{ExposeSecret as _, SecretString};
use yubikey::piv::{self, ManagementSlotId, SlotId};
use yubikey::YubiKey;

use super::CardError;

/// The PIN guard, then VERIFY.
pub(crate) fn verify_pin(yk: &mut YubiKey, pin: &SecretString) -> Result<(), CardError> {
    let left = yk.get_pin_retries();
    tracing::debug!(serial = yk.serial().0, tries_left = ?left.as_ref().ok(), "PIN tries before VERIFY");
    if let Ok(left) = left {
        if left == 0 {
            return Err(CardError::PinBlocked);
        }
        if left == 1 && std::env::var_os("KMS_ALLOW_FINAL_PIN_TRY").is_none() {
            return Err(CardError::PinFinalTry);
        }
    }
    yk.verify_pin(pin.expose_secret().as_bytes())
        .map_err(CardError::from_yk)
}

/// PUK tries left, from GET METADATA (costs no try); `None` when the card cannot say (no GET
/// METADATA, or no retry counter in its answer). A PC/SC failure (card gone) is an error.
pub(crate) fn puk_tries(yk: &mut YubiKey) -> Result<Option<u8>, CardError> {
    match piv::metadata(yk, SlotId::Management(ManagementSlotId::Puk)) {
        Ok(m) => Ok(m.retries.map(|r| r.remaining_count)),
        Err(e @ yubikey::Error::PcscError { .. }) => Err(CardError::from_yk(e)),
        Err(_) => Ok(None),
    }
}

/// The PUK guard: blocked → [`CardError::PukBlocked`]; one try left, or a count the card cannot
/// report → refused unless `last_try`. Returns the count read.
pub(crate) fn puk_guard(yk: &mut YubiKey, last_try: bool) -> Result<Option<u8>, CardError> {
    let left = puk_tries(yk)?;
    tracing::debug!(serial = yk.serial().0, tries_left = ?left, last_try, "PUK tries before unblock");
    check_puk_tries(left, last_try)?;
    Ok(left)
}

/// The PUK guard's rule on a count already read (`kms card status`'s `puk_tries_left`): the
/// engine checks it before asking for the PUK, so a refused unblock never prompts for it.
pub fn check_puk_tries(left: Option<u8>, last_try: bool) -> Result<(), CardError> {
    match left {
        Some(0) => Err(CardError::PukBlocked),
        Some(1) if !last_try => Err(CardError::PukFinalTry),
        None if !last_try => Err(CardError::PukTriesUnknown),
        _ => Ok(()),
    }
}

/// RESET RETRY COUNTER (unblock the PIN with the PUK, setting a new PIN), after the PUK guard.
pub(crate) fn unblock(
    yk: &mut YubiKey,
    puk: &SecretString,
    new_pin: &SecretString,
    last_try: bool,
) -> Result<(), CardError> {
    puk_guard(yk, last_try)?;
    yk.unblock_pin(
        puk.expose_secret().as_bytes(),
        new_pin.expose_secret().as_bytes(),
    )
    .map_err(|e| match e {
        // 63C0: that was the last try; 6983: already blocked.
        yubikey::Error::WrongPin { tries: 0 } | yubikey::Error::PinLocked => CardError::PukBlocked,
        yubikey::Error::WrongPin { tries } => CardError::WrongPuk { tries_left: tries },
        other => CardError::from_yk(other),
    })
}

#[cfg(test)]
mod tests {
    use super::check_puk_tries;
    use crate::smartcard::CardError;

    #[test]
    fn the_puk_guard_never_spends_the_last_or_an_unknown_try_unasked() {
        assert!(matches!(
            check_puk_tries(Some(0), true),
            Err(CardError::PukBlocked)
        ));
        assert!(matches!(
            check_puk_tries(Some(1), false),
            Err(CardError::PukFinalTry)
        ));
        assert!(matches!(
            check_puk_tries(None, false),
            Err(CardError::PukTriesUnknown)
        ));
        assert!(check_puk_tries(Some(1), true).is_ok());
        assert!(check_puk_tries(None, true).is_ok());
        assert!(check_puk_tries(Some(2), false).is_ok());
    }
}
