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

use super::{Caller, Engine, EngineError, Refusal};
use crate::inventory::{ApprovalKeyPeriod, Inventory, InventoryError, Principal, SignedStep};
use crate::model::Role;

/// The card a key URI names: `piv:SERIAL` for a PIV slot, `pkcs11:serial=S` for a token named by
/// serial, `pkcs11:token=LABEL` for one named by label.
pub(crate) fn card_of_uri(uri: &str) -> Option<String> {
    if let Ok(piv) = uri.parse::<super::cards::PivUri>() {
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

fn legacy_period(p: &Principal, spki: &[u8]) -> ApprovalKeyPeriod {
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

/// What `kms card lost` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CardLoss {
    pub principal: String,
    pub card: String,
    /// The approval keys ended (SHA-256 of each public key).
    pub keys_ended: Vec<String>,
    /// The grants revoked because a signature of theirs was made with one of those keys.
    pub grants_revoked: Vec<String>,
    /// Requests still open with a signature from the lost card (shown, not changed: the
    /// signatures were valid when made; deny them if in doubt).
    pub open_requests: Vec<String>,
    /// Whether the person's current approval key was on the card (they need a new one).
    pub current_key_lost: bool,
}

impl Engine {
    /// A card was reported lost: end `principal`'s approval keys on it (`card`: a PIV serial or
    /// a token serial; by default the card of their current key), and revoke every grant in
    /// force whose verification, approval or re-certification was signed with one of them.
    pub fn card_lost(
        &self,
        caller: &Caller,
        principal: &str,
        card: Option<&str>,
        justification: &str,
    ) -> Result<CardLoss, EngineError> {
        self.audited(caller, "card.lost", None, |note| {
            let officer = super::policy::require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "report cards lost",
            )?;
            if justification.trim().is_empty() {
                return Err(EngineError::InvalidInput(
                    "--justification is required: say how the card was lost (ticket, report)".into(),
                ));
            }
            let p = self.inventory.principal(principal)?;
            let history = key_history(&self.inventory, &p)?;
            let wanted: Vec<String> = match card {
                Some(c) if c.contains(':') => vec![c.to_owned()],
                Some(c) => vec![format!("piv:{c}"), format!("pkcs11:serial={c}")],
                None => current_card(&self.inventory, &p)?.into_iter().collect(),
            };
            if wanted.is_empty() {
                return Err(EngineError::InvalidInput(format!(
                    "'{principal}' has no current card on record; name it with --serial (kms principal keys {principal} lists their cards)"
                )));
            }
            let lost: Vec<&ApprovalKeyPeriod> = history
                .iter()
                .filter(|k| k.card.as_ref().is_some_and(|c| wanted.contains(c)))
                .collect();
            if lost.is_empty() {
                return Err(EngineError::InvalidInput(format!(
                    "no approval key of '{principal}' is on card {}; their cards: {}",
                    wanted.join(" / "),
                    history
                        .iter()
                        .filter_map(|k| k.card.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let card_name = lost[0].card.clone().unwrap_or_default();
            let lost_keys: Vec<&[u8]> = lost.iter().map(|k| k.public_key.as_slice()).collect();
            let current_key_lost = p
                .approval_key
                .as_deref()
                .is_some_and(|k| lost_keys.contains(&k));
            let now = OffsetDateTime::now_utc();
            // Grants in force signed with a lost key (their request's steps, or a re-certification).
            let mut grants_revoked = Vec::new();
            for g in self.inventory.grants(&Default::default(), now)? {
                if g.revoked_at.is_some() || g.not_after <= now {
                    continue;
                }
                let mut steps = self.inventory.signed_steps(&g.id)?;
                if let Some(rid) = &g.request_id {
                    steps.extend(self.inventory.signed_steps(rid)?);
                }
                if steps
                    .iter()
                    .any(|s| s.signer == p.name && lost_keys.contains(&s.public_key.as_slice()))
                {
                    grants_revoked.push(g.id.clone());
                }
            }
            let mut open_requests = Vec::new();
            for r in self.inventory.requests(None)? {
                if !matches!(
                    r.state,
                    crate::inventory::RequestState::Pending | crate::inventory::RequestState::Verified
                ) {
                    continue;
                }
                if self
                    .inventory
                    .signed_steps(&r.id)?
                    .iter()
                    .any(|s| s.signer == p.name && lost_keys.contains(&s.public_key.as_slice()))
                {
                    open_requests.push(r.id.clone());
                }
            }
            let recorded = !self.inventory.approval_keys_of(&p.name)?.is_empty();
            let ids: Vec<String> = lost.iter().map(|k| k.id.clone()).collect();
            note.detail = Some(format!(
                "card {card_name} of '{principal}' reported lost by '{}' ({justification}): {} approval key(s) ended ({}), {} grant(s) revoked ({}){}{}",
                officer.name,
                ids.len(),
                ids.iter().map(|i| format!("sha256 {i}")).collect::<Vec<_>>().join(", "),
                grants_revoked.len(),
                grants_revoked.join(", "),
                if current_key_lost { "; their current approval key is gone: enrol a new card" } else { "" },
                if open_requests.is_empty() { String::new() } else { format!("; open requests signed on it: {}", open_requests.join(", ")) }
            ));
            let entry = self.change_entry(caller, "card.lost", None, note);
            let legacy = if recorded {
                None
            } else {
                p.approval_key.as_deref().map(|spki| legacy_period(&p, spki))
            };
            let legacy_row = legacy.as_ref().map(|k| crate::inventory::NewApprovalKey {
                principal: &k.principal,
                public_key: &k.public_key,
                uri: k.uri.as_deref(),
                card: k.card.as_deref(),
                valid_from: k.valid_from,
            });
            self.inventory.report_card_lost(
                &p.name,
                legacy_row.as_ref(),
                &ids,
                current_key_lost,
                &grants_revoked,
                &officer.name,
                now,
                &entry,
            )?;
            note.recorded = true;
            Ok(CardLoss {
                principal: p.name.clone(),
                card: card_name,
                keys_ended: ids,
                grants_revoked,
                open_requests,
                current_key_lost,
            })
        })
    }

    /// Every approval key `principal` ever had, with its card and period.
    pub fn approval_key_history(
        &self,
        caller: &Caller,
        principal: &str,
    ) -> Result<Vec<ApprovalKeyPeriod>, EngineError> {
        self.audited(caller, "principal.keys", None, |note| {
            super::policy::require_role(
                &self.inventory,
                caller,
                super::policy::INVENTORY_READERS,
                "read approval keys",
            )?;
            let p = self.inventory.principal(principal)?;
            let h = key_history(&self.inventory, &p)?;
            note.detail = Some(format!("{} approval key(s) of '{principal}'", h.len()));
            Ok(h)
        })
    }
}
