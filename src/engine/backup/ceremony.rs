//! The key ceremony: pairing a key token with a backup token (`kms backup init`).

use time::OffsetDateTime;

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError};
use super::BACKUP_ADMINS;
use crate::inventory::{BackupPair, NewBackupPair};

impl Engine {
    /// The key ceremony: pair token `from` with token `to` so that keys on `from` can be copied to
    /// `to`. `say` receives an explanation of each step as it happens.
    pub fn backup_init(
        &self,
        caller: &Caller,
        from: &str,
        to: &str,
        say: &dyn Fn(&str),
    ) -> Result<BackupPair, EngineError> {
        self.audited(caller, "backup.init", None, |note| {
            require_role(&self.inventory, caller, BACKUP_ADMINS, "run a key ceremony")?;
            if from == to {
                return Err(EngineError::InvalidInput(format!(
                    "--from and --to are both '{from}'; a backup pairs two different tokens"
                )));
            }
            let from_cfg = self.hsm.config(from).cloned().ok_or_else(|| {
                EngineError::InvalidInput(format!("no token '{from}' in the configuration"))
            })?;
            if self.hsm.config(to).is_none() {
                return Err(EngineError::InvalidInput(format!(
                    "no token '{to}' in the configuration"
                )));
            }
            let _no_service = self.refuse_while_serving(from)?;
            let from_desc = self.hsm.describe(from)?;
            say(&format!(
                "1/4  Opening '{to}' as its user and generating an RSA-3072 transport key pair there. Its private half can only unwrap, never leaves '{to}', and is destroyed at the end."
            ));
            let dst = self.hsm.token(to)?;
            if dst.serial() == from_desc.serial {
                return Err(EngineError::InvalidInput(format!(
                    "'{from}' and '{to}' are the same token (serial {}); a backup needs a second token",
                    dst.serial()
                )));
            }
            let transport_id = dst.new_object_id()?;
            let kek_id = dst.new_object_id()?;
            // Unique per ceremony: a token may hold the KEKs of several pairings.
            let label = format!("kms:backup:{from}->{to}:{}", &kek_id.to_hex()[..8]);
            let transport = dst.generate_transport_pair(&transport_id, &label)?;
            say(&format!(
                "2/4  The KEK will go to '{to}' = token '{}' serial {} ({}). Check this is your backup HSM before typing the SO PIN. Logging in to '{from}' = token '{}' serial {} as its security officer: importing the transport public key as a trusted session key, generating an AES-256 key-encryption key (KEK), wrapping it under the transport key (RSA-OAEP) for '{to}', and installing it on '{from}' as a trusted, never-extractable key whose unwrap template forces every key unwrapped under it to stay sensitive. Only a trusted key can wrap kms keys, and only the SO can make one.",
                dst.label(),
                dst.serial(),
                dst.description().map(|d| d.model).unwrap_or_default(),
                from_desc.label,
                from_desc.serial
            ));
            let so_pin = from_cfg.so_pin.resolve_kind(from, "SO")?;
            let wrapped = match self.hsm.so_make_trusted_kek(
                from,
                &so_pin,
                &transport,
                &transport_id,
                &kek_id,
                &label,
            ) {
                Ok(w) => w,
                Err(e) => {
                    let _ = dst.destroy(&transport_id);
                    return Err(e.into());
                }
            };
            drop(so_pin);
            say(&format!(
                "3/4  Unwrapping the KEK on '{to}' under the same CKA_ID ({kek_id}) as an unwrap-only, non-extractable key; destroying the transport pair."
            ));
            if let Err(e) = dst.receive_kek(&transport_id, &kek_id, &label, &wrapped) {
                let _ = dst.destroy(&transport_id);
                return Err(EngineError::Incomplete(format!(
                    "the KEK was made on '{from}' but could not be unwrapped on '{to}' ({e}); no pairing was recorded. The unused KEK labelled '{label}' stays on '{from}' (non-extractable; anything wrapped under it can only be unwrapped sensitive), and `kms reconcile` lists it as an orphan until the SO removes it. Run the ceremony again"
                )));
            }
            say(&format!(
                "4/4  Checking both sides and recording the pairing. From now on new keys on '{from}' are copied to '{to}' before they become active; run `kms backup sync` for keys made before."
            ));
            let src = self.hsm.token(from)?;
            let src_kek = src.kek_state(&kek_id)?;
            let dst_kek = dst.kek_state(&kek_id)?;
            if !(src_kek.present && src_kek.trusted && src_kek.wrap && dst_kek.present && dst_kek.unwrap) {
                return Err(EngineError::Incomplete(format!(
                    "after the ceremony the KEK is not as it must be (on '{from}': {src_kek:?}; on '{to}': {dst_kek:?}); nothing was recorded"
                )));
            }
            let pair = NewBackupPair {
                from_token: from.to_owned(),
                from_serial: src.serial().to_owned(),
                to_token: to.to_owned(),
                to_serial: dst.serial().to_owned(),
                kek_id: kek_id.clone(),
                transport_id,
                created_by: caller.actor.clone(),
            };
            note.detail = Some(format!(
                "paired token '{from}' (serial {}) -> '{to}' (serial {}); trusted KEK cka_id={kek_id}",
                pair.from_serial, pair.to_serial
            ));
            let mut entry = self.change_entry(caller, "backup.init", None, note);
            entry.diff = super::super::audit::diff(
                serde_json::Value::Null,
                serde_json::json!({"from": from, "from_serial": pair.from_serial,
                    "to": to, "to_serial": pair.to_serial, "kek_id": kek_id.to_hex()}),
            );
            let stored = self
                .inventory
                .insert_backup_pair(&pair, OffsetDateTime::now_utc(), &entry)?;
            note.recorded = true;
            Ok(stored)
        })
    }
}
