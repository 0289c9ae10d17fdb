//! A card reported lost (issue 31): its keys end and the grants they signed are revoked, in one
//! command; and what a person's approval keys have been.

use time::OffsetDateTime;

use super::approval_keys::{current_card, key_history, legacy_period};
use super::{Caller, Engine, EngineError};
use crate::inventory::ApprovalKeyPeriod;
use crate::model::Role;

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
