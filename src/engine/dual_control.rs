//! Dual control: every two-person signature kms asks for (an access request's verification and
//! approval, a disposal's, and what comes later) goes through here, so its rules are written
//! once:
//! - nobody signs what they asked for or would receive;
//! - the second signature is another person's, with another key, on another card, and the first
//!   still holds for the subject as it reads when the second is made;
//! - each signature is made on the signer's own card and checked against their registered key
//!   (`Engine::sign_on_card`); the stored step names the key it was made with.

use time::OffsetDateTime;

use super::{approval_keys, Engine, EngineError, Refusal};
use crate::config::PinSource;
use crate::hsm::{sign_with_card, Pkcs11Uri};
use crate::inventory::{Principal, SignedStep};
use crate::softverify;

/// A signing step of the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Verify,
    Approve,
    Deny,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Verify => "verify",
            Step::Approve => "approve",
            Step::Deny => "deny",
        }
    }
}

/// How to reach the signer's token: its URI (default: the one registered for the signer) and
/// where its PIN comes from.
#[derive(Debug, Clone)]
pub struct CardAccess {
    pub uri: Option<String>,
    pub pin: PinSource,
}

/// What is being signed: its noun and id (for messages) and who may not sign it at all.
pub(crate) struct Subject<'a> {
    /// `request`, `disposal`.
    pub noun: &'static str,
    pub id: &'a str,
    /// People who may not sign it, and what they are to it (said in the refusal).
    pub excluded: &'a [&'a str],
    pub excluded_as: &'static str,
}

impl Engine {
    /// Refuse a signer the subject excludes (its requester, its beneficiary).
    pub(crate) fn dual_check_signer(
        &self,
        s: &Subject<'_>,
        signer: &Principal,
        step: Step,
    ) -> Result<(), EngineError> {
        if s.excluded.contains(&signer.name.as_str()) {
            return Err(EngineError::denied(
                Refusal::SeparationOfDuties,
                format!(
                    "'{}' {} and may not {} it",
                    signer.name,
                    s.excluded_as,
                    step.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Before the second signature touches a card: the first (`first_step`) exists, is another
    /// person's with another key, still holds (`first_holds`, the subject's own check), and the
    /// signer's key is registered on another card. Returns the first signature.
    pub(crate) fn dual_check_second<'e>(
        &self,
        s: &Subject<'_>,
        signer: &Principal,
        earlier: &'e [SignedStep],
        first_step: &str,
        first_holds: impl FnOnce(&SignedStep) -> Result<(), EngineError>,
    ) -> Result<&'e SignedStep, EngineError> {
        let first = earlier
            .iter()
            .find(|e| e.step == first_step)
            .ok_or_else(|| {
                EngineError::denied(
                    Refusal::WrongState,
                    format!("{} {} has no verification", s.noun, s.id),
                )
            })?;
        if first.signer == signer.name
            || signer.approval_key.as_deref() == Some(first.public_key.as_slice())
        {
            return Err(EngineError::denied(
                Refusal::SeparationOfDuties,
                format!(
                    "'{}' verified this {} and may not also approve it",
                    signer.name, s.noun
                ),
            ));
        }
        first_holds(first)?;
        // Two people on two cards, as far as the registry knows before the card is used
        // (checked again with the card that signs).
        let card = approval_keys::current_card(&self.inventory, signer)?;
        approval_keys::check_two_cards(&self.inventory, first, &signer.name, card.as_deref())?;
        Ok(first)
    }

    /// Sign `message` on the signer's card. For a second signature (`first` given), the card
    /// that signed must not be the first signature's. Returns the step to store.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dual_sign(
        &self,
        s: &Subject<'_>,
        signer: &Principal,
        step: Step,
        first: Option<&SignedStep>,
        message: Vec<u8>,
        note: Option<&str>,
        card: &CardAccess,
    ) -> Result<SignedStep, EngineError> {
        let (signature, on_card) = self.sign_on_card(signer, card, &message)?;
        if let Some(first) = first {
            approval_keys::check_two_cards(
                &self.inventory,
                first,
                &signer.name,
                on_card.as_deref(),
            )?;
        }
        Ok(SignedStep {
            subject: s.id.to_owned(),
            step: step.as_str().to_owned(),
            signer: signer.name.clone(),
            message,
            signature,
            public_key: signer.approval_key.clone().unwrap_or_default(),
            signed_at: OffsetDateTime::now_utc(),
            note: note.map(str::to_owned),
        })
    }
}

impl Engine {
    /// Sign on the signer's card and check the signature against their *registered* key.
    /// Returns the signature and the card it counts as made on ([`Engine::signing_card`]).
    pub(crate) fn sign_on_card(
        &self,
        signer: &Principal,
        card: &CardAccess,
        message: &[u8],
    ) -> Result<(Vec<u8>, Option<String>), EngineError> {
        let registered = signer.approval_key.as_deref().ok_or_else(|| {
            EngineError::denied(
                Refusal::BadSignature,
                format!("'{}' has no registered approval key", signer.name),
            )
        })?;
        let uri_text = card
            .uri
            .clone()
            .or_else(|| signer.approval_key_uri.clone())
            .ok_or_else(|| {
                EngineError::InvalidInput(format!(
                    "no token URI for '{}': pass --card pkcs11:...",
                    signer.name
                ))
            })?;
        if uri_text.starts_with("piv:") {
            // A YubiKey PIV card, natively over PC/SC.
            let piv: super::piv_uri::PivUri = uri_text.parse()?;
            let pin = card
                .pin
                .resolve_kind(&format!("card of {}", signer.name), "PIV")?;
            let signature = super::cards::sign_with_piv(&piv, &pin, message)?;
            let kt = softverify::key_type_of_spki(registered)?;
            if !softverify::verify(kt, registered, message, &signature)? {
                return Err(EngineError::denied(
                    Refusal::BadSignature,
                    format!(
                        "the key in {uri_text} is not the approval key registered for '{}'",
                        signer.name
                    ),
                ));
            }
            let on = self.signing_card(signer, &[super::approval_keys::piv_card(piv.serial)])?;
            return Ok((signature, on));
        }
        let uri: Pkcs11Uri = uri_text
            .parse()
            .map_err(|e: crate::hsm::UriError| EngineError::InvalidInput(e.to_string()))?;
        let signed = sign_with_card(
            &uri,
            &self.config.access.card_module,
            card.pin.clone(),
            message,
        )?;
        let kt = softverify::key_type_of_spki(registered)?;
        if signed.public_key != registered
            || !softverify::verify(kt, registered, message, &signed.signature)?
        {
            return Err(EngineError::denied(
                Refusal::BadSignature,
                format!(
                    "the key on {uri_text} is not the approval key registered for '{}'",
                    signer.name
                ),
            ));
        }
        let on = self.signing_card(
            signer,
            &super::approval_keys::token_card_ids(&signed.token_serial, &signed.token_label),
        )?;
        Ok((signed.signature, on))
    }
}
