//! Smartcards (issue 8): listing and inspecting PIV cards, enrolling a person's approval key on
//! their card, unblocking a PIN — and signing with a card key named by a `piv:` URI
//! (`piv:serial=12345678;slot=9c`), used for approvals and for card-resident keys.

use secrecy::SecretString;
use sha2::{Digest as _, Sha384};

use super::access::{ApprovalKey, NewPrincipal};
use super::piv_uri::PivUri;
use super::policy::require_role;
use super::{Caller, Engine, EngineError, Refusal};
use crate::config::PinSource;
use crate::model::Role;
use crate::smartcard::{self, CardStatus, Enrolled, Listing};

/// What `kms card enrol` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrolment {
    pub principal: String,
    pub uri: String,
    #[serde(flatten)]
    pub card: Enrolled,
}

impl Engine {
    /// Cards the PC/SC stack sees, and readers holding a card that did not answer.
    pub fn card_list(&self, caller: &Caller) -> Result<Listing, EngineError> {
        self.audited(caller, "card.list", None, |note| {
            super::policy::acting_principal(&self.inventory, caller)?;
            let listing = smartcard::list()?;
            note.detail = Some(format!(
                "{} card(s){}",
                listing.cards.len(),
                if listing.unreachable.is_empty() {
                    String::new()
                } else {
                    format!("; {} reader(s) not answering", listing.unreachable.len())
                }
            ));
            Ok(listing)
        })
    }

    /// Serial, firmware, PIN tries left, slots in use.
    pub fn card_status(
        &self,
        caller: &Caller,
        serial: Option<u32>,
    ) -> Result<CardStatus, EngineError> {
        self.audited(caller, "card.status", None, |note| {
            // Slot certificates name keys and people: inventory readers only.
            require_role(
                &self.inventory,
                caller,
                super::policy::INVENTORY_READERS,
                "read card status",
            )?;
            let s = smartcard::status(serial)?;
            note.detail = Some(format!(
                "card {} firmware {}: {} slot(s) in use, {} PIN tries left",
                s.info.serial,
                s.info.version,
                s.slots.len(),
                s.pin_tries_left
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into())
            ));
            Ok(s)
        })
    }

    /// Generate an EC P-384 key on `principal`'s card and register it as their approval key
    /// (creating the principal with `role` if they are new). The card's PIN and management key
    /// come from PIN sources (prompted by default), never from argv.
    #[allow(clippy::too_many_arguments)]
    pub fn card_enrol(
        &self,
        caller: &Caller,
        principal: &str,
        role: Option<Role>,
        serial: Option<u32>,
        slot: &str,
        pin: &PinSource,
        mgm: Option<&PinSource>,
        force: bool,
    ) -> Result<Enrolment, EngineError> {
        self.audited(caller, "card.enrol", None, |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "enrol cards",
            )?;
            super::access::validate_name(principal, "principal")?;
            let existing = self.inventory.principal(principal).ok();
            if existing.is_none() && role.is_none() {
                return Err(EngineError::InvalidInput(format!(
                    "'{principal}' is not registered; pass --role to register them with this card"
                )));
            }
            if existing.as_ref().is_some_and(|p| p.approval_key.is_some()) && !force {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!(
                        "'{principal}' already has an approval key; --force replaces it (recorded)"
                    ),
                ));
            }
            let slot_id = smartcard::parse_slot(slot)?;
            // Which card, and is the slot someone's? A slot holding an inventory key or another
            // person's approval key is never overwritten, --force or not.
            let card_serial = smartcard::status_for("card enrolment", serial)?.info.serial;
            let slot_hex = smartcard::slot_name(slot_id);
            let own_uri = PivUri { serial: card_serial, slot: slot_hex.clone() }.to_string();
            if let Some(owner) = self.card_slot_owner(card_serial, &slot_hex)? {
                let own = existing.as_ref().and_then(|p| p.approval_key_uri.as_deref())
                    == Some(own_uri.as_str());
                if !own {
                    return Err(EngineError::denied(
                        Refusal::KeyState,
                        format!("slot {slot_hex} of card {card_serial} holds {owner}; choose another slot"),
                    ));
                }
            }
            // One card, one person: no other person's approval key may live on it.
            super::approval_keys::refuse_shared_card(
                &self.inventory,
                principal,
                &[super::approval_keys::piv_card(card_serial)],
            )?;
            let pin = pin.resolve_kind(&format!("card of {principal}"), "PIV")?;
            let mgm = mgm
                .map(|m| m.resolve_kind(&format!("card of {principal}"), "management key"))
                .transpose()?;
            let enrolled = smartcard::generate(
                Some(card_serial),
                slot_id,
                &pin,
                mgm.as_ref(),
                &format!("kms approval key of {principal}"),
                force,
            )?;
            let uri = PivUri {
                serial: enrolled.serial,
                slot: enrolled.slot.clone(),
            }
            .to_string();
            if let Some(owner) = self
                .inventory
                .principal_by_approval_key(&enrolled.public_key)?
            {
                return Err(EngineError::denied(
                    Refusal::SeparationOfDuties,
                    format!("this key is already registered to '{owner}'"),
                ));
            }
            let fingerprint = hex::encode(sha2::Sha256::digest(&enrolled.public_key));
            match existing {
                None => {
                    self.add_principal(
                        caller,
                        NewPrincipal {
                            name: principal.to_owned(),
                            role: role.unwrap_or(Role::User),
                            cert_pem: None,
                            approval_key: Some(ApprovalKey::Piv {
                                spki: enrolled.public_key.clone(),
                                uri: uri.clone(),
                            }),
                            allowed_networks: Vec::new(),
                        },
                    )?;
                }
                Some(p) => {
                    note.detail = Some(format!(
                        "approval key of '{principal}' set to {uri} (sha256 {fingerprint}){}",
                        enrolled
                            .replaced
                            .as_deref()
                            .map(|s| format!("; FORCED over the key in the slot ({s})"))
                            .unwrap_or_default()
                    ));
                    let entry = self.change_entry(caller, "card.enrol", None, note);
                    let card = super::approval_keys::piv_card(enrolled.serial);
                    self.set_approval_key_of(
                        &p,
                        &enrolled.public_key,
                        Some(&uri),
                        Some(&card),
                        &entry,
                    )?;
                    note.recorded = true;
                }
            }
            if note.detail.is_none() {
                note.detail = Some(format!(
                    "enrolled {uri} for new principal '{principal}' (sha256 {fingerprint}){}",
                    enrolled
                        .replaced
                        .as_deref()
                        .map(|s| format!("; FORCED over the key that was in the slot ({s})"))
                        .unwrap_or_default()
                ));
            }
            Ok(Enrolment {
                principal: principal.to_owned(),
                uri,
                card: enrolled,
            })
        })
    }

    /// Unblock a card's PIN with its PUK. The PUK's last try (or a try on a card that cannot
    /// report its PUK counter) is only spent with `last_try`, which the audit records.
    pub fn card_unblock(
        &self,
        caller: &Caller,
        serial: Option<u32>,
        puk: &PinSource,
        new_pin: &PinSource,
        last_try: bool,
    ) -> Result<(), EngineError> {
        self.audited(caller, "card.unblock", None, |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "unblock cards",
            )?;
            let status = smartcard::status_for("unblocking a card PIN", serial)?;
            // Refused before the PUK is asked for; checked again right before the try.
            smartcard::check_puk_tries(status.puk_tries_left, last_try)?;
            let serial = Some(status.info.serial);
            let puk = puk.resolve_kind("card", "PUK")?;
            let new_pin = new_pin.resolve_kind("card", "new PIV")?;
            smartcard::unblock(serial, &puk, &new_pin, last_try)?;
            note.detail = Some(format!(
                "PIN of card {} unblocked with the PUK{}",
                serial
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "(the only one)".into()),
                if last_try {
                    " (--last-try: the PUK's last try was allowed)"
                } else {
                    ""
                }
            ));
            Ok(())
        })
    }
}

impl Engine {
    /// What holds slot `slot` of card `serial` according to kms: a live inventory key version or
    /// a person's approval key.
    pub(crate) fn card_slot_owner(
        &self,
        serial: u32,
        slot: &str,
    ) -> Result<Option<String>, EngineError> {
        for k in self.inventory.keys(&Default::default())? {
            for v in &k.versions {
                if v.token == super::CARD_TOKEN
                    && v.token_serial == serial.to_string()
                    && v.object_id.to_hex() == slot
                    && !v.state.is_destroyed()
                {
                    return Ok(Some(format!("kms key '{}' v{}", k.name, v.version)));
                }
            }
        }
        let uri = PivUri {
            serial,
            slot: slot.to_owned(),
        }
        .to_string();
        for p in self.inventory.principals()? {
            if p.approval_key_uri.as_deref() == Some(uri.as_str()) && p.disabled_at.is_none() {
                return Ok(Some(format!("the approval key of '{}'", p.name)));
            }
        }
        Ok(None)
    }
}

/// The card serial of an inventory row (`token_serial` of a card-resident version).
pub(crate) fn card_serial(s: &str) -> Result<u32, EngineError> {
    s.parse()
        .map_err(|_| EngineError::Misconfigured(format!("card serial '{s}' in the inventory")))
}

impl Engine {
    /// Destroy the key in a card slot (overwrite it, delete its certificate) with the card's
    /// configured secrets; true when the slot holds no certificate afterwards.
    pub(crate) fn wipe_card_slot(
        &self,
        serial: &str,
        slot: &crate::model::ObjectId,
    ) -> Result<bool, EngineError> {
        let card = card_serial(serial)?;
        let slot = smartcard::parse_slot(&slot.to_hex())?;
        let (pin, mgm) = self.card_secrets(card)?;
        Ok(smartcard::wipe(Some(card), slot, &pin, mgm.as_ref())?)
    }
}

/// Sign `message` (ECDSA P-384 over SHA-384) with the card key `uri` after the PIN.
pub(crate) fn sign_with_piv(
    uri: &PivUri,
    pin: &SecretString,
    message: &[u8],
) -> Result<Vec<u8>, EngineError> {
    let digest: [u8; 48] = Sha384::digest(message).into();
    let slot = smartcard::parse_slot(&uri.slot)?;
    let (_, sig) = smartcard::sign_p384(Some(uri.serial), slot, pin, &digest)?;
    Ok(sig)
}
