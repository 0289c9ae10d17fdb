//! People's approval keys over time (issue 31): which key was whose when a signature was made,
//! which card holds which person's keys, and the rule that the two signatures of a request come
//! from two people on two cards.
//!
//! - A signature counts if its key was the signer's registered approval key *when it was made*
//!   (the history in `approval_keys`); re-enrolling a lost or replaced card keeps every grant
//!   signed before valid. A card reported lost ends its keys and revokes, in one command, the
//!   grants they signed (`card_lost`).
//! - A card (PIV serial, or a personal token's serial) holds the approval keys of one person:
//!   enrolment refuses another person's key on it, and approval (and every later use of the
//!   grant) refuses a verification and an approval signed on one card.

use time::OffsetDateTime;

use super::{Engine, EngineError, Refusal};
use crate::inventory::{ApprovalKeyPeriod, Inventory, InventoryError, Principal, SignedStep};

/// The card a key URI names: `piv:SERIAL` for a PIV slot, `pkcs11:serial=S` for a token named by
/// serial, `pkcs11:token=LABEL` for one named by label.
pub(crate) fn card_of_uri(uri: &str) -> Option<String> {
    if let Ok(piv) = uri.parse::<super::piv_uri::PivUri>() {
        return Some(piv_card(piv.serial));
    }
    let parsed: crate::hsm::Pkcs11Uri = uri.parse().ok()?;
    match (&parsed.serial, &parsed.token) {
        (Some(s), _) => Some(format!("pkcs11:serial={s}")),
        (None, Some(t)) => Some(format!("pkcs11:token={t}")),
        (None, None) => None,
    }
}

/// The card id of PIV card `serial`.
pub(crate) fn piv_card(serial: u32) -> String {
    format!("piv:{serial}")
}

/// The ids a personal token is known by: its serial, and its label (how keys registered before
/// serials were recorded name it).
pub(crate) fn token_card_ids(serial: &str, label: &str) -> Vec<String> {
    vec![
        format!("pkcs11:serial={serial}"),
        format!("pkcs11:token={label}"),
    ]
}

/// Every approval key period of `p`: the recorded history, or — for a principal registered
/// before the history existed and never re-enrolled since — their current key as one open
/// period from their registration.
pub(crate) fn key_history(
    inventory: &Inventory,
    p: &Principal,
) -> Result<Vec<ApprovalKeyPeriod>, EngineError> {
    let rows = inventory.approval_keys_of(&p.name)?;
    if !rows.is_empty() {
        return Ok(rows);
    }
    Ok(p.approval_key
        .as_ref()
        .map(|spki| legacy_period(p, spki))
        .into_iter()
        .collect())
}

pub(crate) fn legacy_period(p: &Principal, spki: &[u8]) -> ApprovalKeyPeriod {
    ApprovalKeyPeriod {
        id: crate::inventory::approval_key_id(spki),
        principal: p.name.clone(),
        public_key: spki.to_vec(),
        uri: p.approval_key_uri.clone(),
        card: p.approval_key_uri.as_deref().and_then(card_of_uri),
        valid_from: p.created_at,
        valid_until: None,
        end_reason: None,
        ended_by: None,
    }
}

/// The period in which `spki` was `signer`'s approval key, if it was theirs at `at`.
pub(crate) fn key_of_signer_at(
    inventory: &Inventory,
    signer: &str,
    spki: &[u8],
    at: OffsetDateTime,
) -> Result<Option<ApprovalKeyPeriod>, EngineError> {
    let p = match inventory.principal(signer) {
        Ok(p) => p,
        Err(InventoryError::NoSuchPrincipal(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(key_history(inventory, &p)?
        .into_iter()
        .find(|k| k.public_key == spki && k.valid_at(at)))
}

/// The card `p`'s current approval key lives on, if known.
pub(crate) fn current_card(
    inventory: &Inventory,
    p: &Principal,
) -> Result<Option<String>, EngineError> {
    let Some(spki) = &p.approval_key else {
        return Ok(None);
    };
    Ok(key_history(inventory, p)?
        .into_iter()
        .find(|k| &k.public_key == spki)
        .and_then(|k| k.card))
}

/// The first signature of a request (its verification) and the second (its approval) must come
/// from two people on two cards; `second_card` is the card of the second signer's key.
pub(crate) fn check_two_cards(
    inventory: &Inventory,
    first: &SignedStep,
    second_signer: &str,
    second_card: Option<&str>,
) -> Result<(), EngineError> {
    if first.signer == second_signer {
        return Err(EngineError::denied(
            Refusal::SeparationOfDuties,
            format!(
                "'{second_signer}' made the {} signature and may not also make the next one",
                first.step
            ),
        ));
    }
    let first_card =
        key_of_signer_at(inventory, &first.signer, &first.public_key, first.signed_at)?
            .and_then(|k| k.card);
    if let (Some(a), Some(b)) = (first_card.as_deref(), second_card) {
        if a == b {
            return Err(EngineError::denied(
                Refusal::SeparationOfDuties,
                format!(
                    "the {} signature of '{}' and the signature of '{second_signer}' come from the same card ({a}): two people must sign on two cards",
                    first.step, first.signer
                ),
            ));
        }
    }
    Ok(())
}

/// [`check_two_cards`] for two stored signatures (at every later use of what they authorized).
pub(crate) fn check_two_signed(
    inventory: &Inventory,
    first: &SignedStep,
    second: &SignedStep,
) -> Result<(), EngineError> {
    let second_card = key_of_signer_at(
        inventory,
        &second.signer,
        &second.public_key,
        second.signed_at,
    )?
    .and_then(|k| k.card);
    check_two_cards(inventory, first, &second.signer, second_card.as_deref())
}

/// The people whose still-valid approval keys live on one of `cards`, other than `except`.
pub(crate) fn other_holders(
    inventory: &Inventory,
    cards: &[String],
    except: &str,
) -> Result<Vec<String>, EngineError> {
    let mut out = Vec::new();
    for p in inventory.principals()? {
        if p.name == except || p.disabled_at.is_some() {
            continue;
        }
        let p = inventory.principal(&p.name)?;
        let holds = key_history(inventory, &p)?
            .iter()
            .any(|k| k.valid_until.is_none() && k.card.as_ref().is_some_and(|c| cards.contains(c)));
        if holds {
            out.push(p.name.clone());
        }
    }
    Ok(out)
}

/// Refuse registering `principal`'s approval key on a card that holds another person's.
pub(crate) fn refuse_shared_card(
    inventory: &Inventory,
    principal: &str,
    cards: &[String],
) -> Result<(), EngineError> {
    let others = other_holders(inventory, cards, principal)?;
    if let Some(other) = others.first() {
        return Err(EngineError::denied(
            Refusal::SeparationOfDuties,
            format!(
                "card {} already holds the approval key of '{other}': one card carries one person's approvals (give '{principal}' a card of their own, or end '{other}''s key on it first with `kms card lost {other}`)",
                cards.first().map(String::as_str).unwrap_or("?")
            ),
        ));
    }
    Ok(())
}

impl Engine {
    /// The card a signature by `signer`'s current key counts as made on: the card recorded for
    /// the key, or — for a key registered by its public key alone — the card it was just seen
    /// signing on (`observed`, all its ids), recorded now, once, after checking that this card
    /// holds no other person's approval key.
    pub(crate) fn signing_card(
        &self,
        signer: &Principal,
        observed: &[String],
    ) -> Result<Option<String>, EngineError> {
        let Some(spki) = &signer.approval_key else {
            return Ok(None);
        };
        let rows = self.inventory.approval_keys_of(&signer.name)?;
        let period = if rows.is_empty() {
            legacy_period(signer, spki)
        } else {
            match rows.into_iter().find(|k| &k.public_key == spki) {
                Some(k) => k,
                None => return Ok(None),
            }
        };
        if period.card.is_some() {
            return Ok(period.card);
        }
        let Some(card) = observed.first() else {
            return Ok(None);
        };
        refuse_shared_card(&self.inventory, &signer.name, observed)?;
        let recorded = !self.inventory.approval_keys_of(&signer.name)?.is_empty();
        let legacy = (!recorded).then(|| crate::inventory::NewApprovalKey {
            principal: &signer.name,
            public_key: spki,
            uri: signer.approval_key_uri.as_deref(),
            card: Some(card),
            valid_from: signer.created_at,
        });
        self.inventory
            .bind_approval_card(legacy.as_ref(), &period.id, card)?;
        tracing::info!(principal = %signer.name, card = %card, "approval key bound to the card it signed on");
        Ok(Some(card.clone()))
    }
}
