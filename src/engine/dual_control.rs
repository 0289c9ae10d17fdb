//! Dual control: every two-person signature kms asks for (an access request's verification and
//! approval, a disposal's, and what comes later) goes through here, so its rules are written
//! once:
//! - nobody signs what they asked for or would receive;
//! - the second signature is another person's, with another key, on another card, and the first
//!   still holds for the subject as it reads when the second is made;
//! - each signature is made on the signer's own card and checked against their registered key
//!   (`Engine::sign_on_card`); the stored step names the key it was made with.

use time::OffsetDateTime;

use super::requests::{CardAccess, Step};
use super::{approval_keys, Engine, EngineError, Refusal};
use crate::inventory::{Principal, SignedStep};

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
