//! Reading the inventory: listing keys (filtered by what the caller may read), showing one,
//! and a key's current public key as PEM.

use time::OffsetDateTime;

use crate::engine::policy::INVENTORY_READERS;
use crate::engine::{Caller, Engine, EngineError, Refusal};
use crate::inventory::{KeyFilter, KeyRecord};
use crate::model::GrantOp;

impl Engine {
    /// The inventory, filtered. Reading the inventory is audited.
    pub fn list_keys(
        &self,
        caller: &Caller,
        filter: &KeyFilter,
    ) -> Result<Vec<KeyRecord>, EngineError> {
        self.audited(caller, "key.list", None, |note| {
            let mut keys = self.inventory.keys(filter)?;
            let me = crate::engine::policy::acting_principal(&self.inventory, caller)?;
            if !INVENTORY_READERS.contains(&me.role) {
                // Others see only the keys they may read; none at all is a refusal.
                let now = OffsetDateTime::now_utc();
                keys.retain(|k| {
                    self.check_grant(caller, &k.name, Some(GrantOp::ReadInventory), now)
                        .is_ok()
                });
                if keys.is_empty() {
                    return Err(EngineError::denied(
                        Refusal::NoGrant,
                        format!("'{}' holds no read-inventory grant", caller.actor),
                    ));
                }
            }
            note.detail = Some(format!("{} keys listed", keys.len()));
            Ok(keys)
        })
    }

    /// One key with all its versions.
    pub fn show_key(&self, caller: &Caller, name: &str) -> Result<KeyRecord, EngineError> {
        self.audited(caller, "key.show", Some(name), |_| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            self.check_inventory_read(caller, name, now)?;
            Ok(key)
        })
    }

    /// The current public key as PEM SubjectPublicKeyInfo.
    /// Any active grant on the key lets a principal read its public key.
    pub fn public_key_pem(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(String, u32), EngineError> {
        self.audited(caller, "key.public", Some(name), |note| {
            let key = self.inventory.key(name)?;
            let now = OffsetDateTime::now_utc();
            // Public keys: anyone who may read the inventory entry or holds any grant on it.
            if self.check_inventory_read(caller, name, now).is_err() {
                self.check_grant(caller, name, None, now)?;
            }
            let version = key.current_version().ok_or_else(|| {
                EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{name}' has no active version"),
                )
            })?;
            note.key_version = Some(version.version);
            let der = version.public_key.as_deref().ok_or_else(|| {
                EngineError::denied(
                    Refusal::NotSupported,
                    format!(
                        "key '{name}' is {} (symmetric) and has no public key",
                        key.key_type
                    ),
                )
            })?;
            let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, der)
                .map_err(|e| EngineError::InvalidInput(format!("cannot encode PEM: {e}")))?;
            Ok((pem, version.version))
        })
    }
}
