//! A person's approval key as given (on a PKCS#11 token, as PEM, or on a PIV card), and a new
//! one for a person whose card was replaced (issue 31): the old key stays in their history.

use time::OffsetDateTime;

use super::access::ApprovalKey;
use super::policy::require_role;
use super::{Caller, Engine, EngineError, Refusal};
use crate::hsm::{card_public_key, Pkcs11Uri};
use crate::inventory::Principal;
use crate::model::Role;

/// An approval key's SubjectPublicKeyInfo, where it lives, and the ids of its card.
type ResolvedKey = (Vec<u8>, Option<String>, Vec<String>);

impl Engine {
    /// An approval key as given (on a PKCS#11 token, as PEM, or on a PIV card): its public key,
    /// where it lives, and the ids of the card holding it (none for a bare public key).
    pub(crate) fn resolve_approval_key(
        &self,
        key: &ApprovalKey,
    ) -> Result<ResolvedKey, EngineError> {
        Ok(match key {
            ApprovalKey::Card { uri, pin } => {
                let parsed: Pkcs11Uri = uri
                    .parse()
                    .map_err(|e: crate::hsm::UriError| EngineError::InvalidInput(e.to_string()))?;
                let found = card_public_key(&parsed, &self.config.access.card_module, pin.clone())?;
                let cards =
                    super::approval_keys::token_card_ids(&found.token_serial, &found.token_label);
                (found.public_key, Some(uri.clone()), cards)
            }
            ApprovalKey::Pem(pem) => (crate::softverify::spki_from_pem(pem)?, None, Vec::new()),
            ApprovalKey::Piv { spki, uri } => (
                spki.clone(),
                Some(uri.clone()),
                super::approval_keys::card_of_uri(uri).into_iter().collect(),
            ),
        })
    }

    /// Give a person a new approval key (a replaced or lost card, on a PKCS#11 token or as a
    /// public key; PIV cards are enrolled with `card enrol`). Their old key stays in their key
    /// history, so what it signed still counts.
    pub fn rekey_principal(
        &self,
        caller: &Caller,
        name: &str,
        key: &ApprovalKey,
    ) -> Result<Principal, EngineError> {
        self.audited(caller, "principal.rekey", None, |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "change approval keys",
            )?;
            let p = self.inventory.principal(name)?;
            let (spki, uri, cards) = self.resolve_approval_key(key)?;
            if let Some(owner) = self.inventory.principal_by_approval_key(&spki)? {
                return Err(EngineError::denied(
                    Refusal::SeparationOfDuties,
                    format!(
                        "this approval key is or was registered to '{owner}'; a new key is needed"
                    ),
                ));
            }
            super::approval_keys::refuse_shared_card(&self.inventory, name, &cards)?;
            note.detail = Some(format!(
                "approval key of '{name}' replaced by sha256 {}{}",
                crate::inventory::approval_key_id(&spki),
                cards
                    .first()
                    .map(|c| format!(" on card {c}"))
                    .unwrap_or_default()
            ));
            let entry = self.change_entry(caller, "principal.rekey", None, note);
            self.set_approval_key_of(
                &p,
                &spki,
                uri.as_deref(),
                cards.first().map(String::as_str),
                &entry,
            )?;
            note.recorded = true;
            Ok(self.inventory.principal(name)?)
        })
    }

    /// Record `p`'s new approval key; the old one stays in the history (a principal from before
    /// the history gets its old key's row now).
    pub(crate) fn set_approval_key_of(
        &self,
        p: &Principal,
        spki: &[u8],
        uri: Option<&str>,
        card: Option<&str>,
        entry: &crate::inventory::AuditEntry,
    ) -> Result<(), EngineError> {
        let legacy = match (
            &p.approval_key,
            self.inventory.approval_keys_of(&p.name)?.is_empty(),
        ) {
            (Some(old), true) => Some(old.clone()),
            _ => None,
        };
        let legacy_card = p
            .approval_key_uri
            .as_deref()
            .and_then(super::approval_keys::card_of_uri);
        let legacy_row = legacy.as_ref().map(|old| crate::inventory::NewApprovalKey {
            principal: &p.name,
            public_key: old,
            uri: p.approval_key_uri.as_deref(),
            card: legacy_card.as_deref(),
            valid_from: p.created_at,
        });
        self.inventory.set_approval_key(
            &crate::inventory::NewApprovalKey {
                principal: &p.name,
                public_key: spki,
                uri,
                card,
                valid_from: OffsetDateTime::now_utc(),
            },
            legacy_row.as_ref(),
            &entry.actor,
            entry,
        )?;
        Ok(())
    }
}
