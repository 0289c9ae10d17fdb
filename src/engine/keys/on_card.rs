//! A key generated on a PIV card (no backup copy: the key cannot leave the card), and the
//! card's PIN and management key sources.

use time::OffsetDateTime;

use super::request::{CreateKey, OnCard, CARD_TOKEN};
use crate::engine::{Caller, Engine, EngineError, Refusal};
use crate::inventory::{KeyRecord, PendingVersion};
use crate::model::KeyType;

impl Engine {
    /// A key generated on a PIV card: intent recorded, generated on the card, activated with its
    /// public key. No backup copy: the key cannot leave the card (wrapping does not apply).
    pub(super) fn create_on_card(
        &self,
        caller: &Caller,
        req: &CreateKey,
        card: &OnCard,
        note: &mut crate::engine::audit::AuditNote,
    ) -> Result<KeyRecord, EngineError> {
        if req.key_type != KeyType::EcP384
            || req.usage.iter().any(|op| {
                !matches!(
                    op,
                    crate::model::Operation::Sign | crate::model::Operation::Verify
                )
            })
        {
            return Err(EngineError::InvalidInput(format!(
                "a card-resident key is ec-p384 with usage sign,verify (not {} {})",
                req.key_type, req.usage
            )));
        }
        let slot = crate::smartcard::parse_slot(&card.slot)?;
        let slot_byte = crate::smartcard::slot_name(slot);
        // A slot holding an inventory key or a person's approval key is never overwritten
        // (--force or not): that key would be lost while kms still relies on it.
        if let Some(owner) = self.card_slot_owner(card.serial, &slot_byte)? {
            return Err(EngineError::denied(
                Refusal::KeyState,
                format!(
                    "slot {slot_byte} of card {} already holds {owner}; choose another slot",
                    card.serial
                ),
            ));
        }
        let pin_source = card
            .pin
            .clone()
            .unwrap_or_else(|| self.card_pin_source(card.serial));
        let pin = pin_source.resolve_kind(&format!("card {}", card.serial), "PIV")?;
        let mgm = card
            .mgm
            .as_ref()
            .map(|m| m.resolve_kind(&format!("card {}", card.serial), "management key"))
            .transpose()?;
        let now = OffsetDateTime::now_utc();
        let new = self.new_key_record(caller, req);
        let pending = PendingVersion {
            token: CARD_TOKEN.to_owned(),
            token_label: format!("PIV card {}", card.serial),
            token_serial: card.serial.to_string(),
            object_id: crate::model::ObjectId(hex::decode(&slot_byte).unwrap_or_default()),
        };
        let intent = self.entry(
            caller,
            "key.create-intent",
            Some(&req.name),
            Some(1),
            crate::inventory::Outcome::Ok,
            Some(format!(
                "about to generate ec-p384 on PIV card {} slot {slot_byte}",
                card.serial
            )),
        );
        let key_id = self
            .inventory
            .insert_pending_key(&new, &pending, now, &intent)?;
        note.key_version = Some(1);
        let generated = match crate::smartcard::generate(
            Some(card.serial),
            slot,
            &pin,
            mgm.as_ref(),
            &format!("kms key {} v1", req.name),
            card.force,
        ) {
            Ok(g) => g,
            Err(e) => {
                self.inventory.delete_pending_key(&key_id)?;
                return Err(e.into());
            }
        };
        let mut entry = self.entry(
            caller,
            "key.create",
            Some(&req.name),
            Some(1),
            crate::inventory::Outcome::Ok,
            Some(format!(
                "created ec-p384 key on PIV card {} slot {slot_byte}: owner={} classification={} usage={}; not backed up (a card key cannot be wrapped out of the card){}",
                card.serial,
                req.owner,
                req.classification,
                req.usage,
                generated
                    .replaced
                    .as_deref()
                    .map(|s| format!("; FORCED over the key that was in the slot ({s})"))
                    .unwrap_or_default()
            )),
        );
        entry.diff = crate::engine::audit::diff(
            serde_json::Value::Null,
            serde_json::json!({"name": new.name, "type": new.key_type, "owner": new.owner,
                "classification": new.classification, "usage": new.usage,
                "card": card.serial, "slot": slot_byte}),
        );
        self.inventory.activate_version(
            &key_id,
            1,
            Some(&generated.public_key),
            None,
            crate::clock::lifecycle_now(),
            &entry,
        )?;
        note.recorded = true;
        Ok(self.inventory.key(&req.name)?)
    }

    /// The PIN source of card `serial`: its `[cards.SERIAL]` entry, else a prompt.
    pub(crate) fn card_pin_source(&self, serial: u32) -> crate::config::PinSource {
        self.config
            .cards
            .get(&serial.to_string())
            .cloned()
            .unwrap_or(crate::config::PinSource::Prompt)
    }

    /// PIN and management key of card `serial`, from the `[cards.SERIAL]` sources.
    pub(crate) fn card_secrets(
        &self,
        serial: u32,
    ) -> Result<(secrecy::SecretString, Option<secrecy::SecretString>), EngineError> {
        let pin = self
            .card_pin_source(serial)
            .resolve_kind(&format!("card {serial}"), "PIV")?;
        let mgm = self
            .config
            .card_mgm_keys
            .get(&serial.to_string())
            .map(|m| m.resolve_kind(&format!("card {serial}"), "management key"))
            .transpose()?;
        Ok((pin, mgm))
    }
}
