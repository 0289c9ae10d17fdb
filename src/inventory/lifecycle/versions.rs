//! A key version's state in the lifecycle: a rotation's pending version (recorded, or removed
//! when rolled back), the rotation's switch, and checked state moves.

use time::OffsetDateTime;

use crate::inventory::integrity::{check_where, guarded, tag_where, Table};
use crate::inventory::keys::PendingVersion;
use crate::inventory::sql::{params, OptionalExtension};
use crate::inventory::{audit, fmt_time, Inventory, InventoryError};
use crate::model::VersionState;
use crate::model::{AuditEntry, KeyCopy};

impl Inventory {
    /// A new pending version of an existing key (rotation), recorded before the token is touched.
    pub fn insert_pending_version(
        &self,
        key_id: &str,
        version: u32,
        pending: &PendingVersion,
        procedure: &str,
        data: &serde_json::Value,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO key_versions (key_id, version, token, token_label, token_serial, object_id, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
            params![
                key_id,
                version,
                pending.token,
                pending.token_label,
                pending.token_serial,
                pending.object_id.to_hex(),
                fmt_time(OffsetDateTime::now_utc())
            ],
        )?;
        guarded(
            &tx,
            integrity.as_ref(),
            Table::Procedures,
            "id = ?1",
            &[&procedure],
            |tx| {
                Ok(tx.execute(
                    "UPDATE procedures SET step = 'pending-recorded', data = ?2, updated_at = ?3 WHERE id = ?1",
                    params![procedure, data.to_string(), fmt_time(OffsetDateTime::now_utc())],
                )?)
            },
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&key_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remove a pending version whose generation was rolled back.
    pub fn delete_pending_version(&self, key_id: &str, version: u32) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
        let where_ = "key_id = ?1 AND version = ?2 AND state = 'pending'";
        crate::inventory::integrity::record_deleted(
            &tx,
            integrity.as_ref(),
            Table::KeyCopies,
            "key_id = ?1 AND version = ?2",
            &[&key_id, &version],
        )?;
        crate::inventory::integrity::record_deleted(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            where_,
            &[&key_id, &version],
        )?;
        tx.execute(
            &format!("DELETE FROM key_copies WHERE key_id = ?1 AND version = ?2 AND EXISTS (SELECT 1 FROM key_versions WHERE {where_})"),
            params![key_id, version],
        )?;
        tx.execute(
            &format!("DELETE FROM key_versions WHERE {where_}"),
            params![key_id, version],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The rotation's switch, in one transaction: the new version becomes active (with its backup
    /// copy), the old one deactivated until `destroy_after`, the procedure step recorded, and the
    /// audit record written.
    #[allow(clippy::too_many_arguments)]
    pub fn rotate_switch(
        &self,
        key_id: &str,
        new_version: u32,
        public_key: Option<&[u8]>,
        copy: Option<&KeyCopy>,
        old_version: Option<u32>,
        destroy_after: OffsetDateTime,
        procedure: &str,
        now: OffsetDateTime,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let now = fmt_time(now);
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
        check_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&key_id],
        )?;
        let n = tx.execute(
            "UPDATE key_versions SET state = 'active', public_key = ?3, activated_at = ?4,
                    pending_reason = NULL
             WHERE key_id = ?1 AND version = ?2 AND state = 'pending'",
            params![key_id, new_version, public_key, now],
        )?;
        let m = match old_version {
            Some(old) => tx.execute(
                "UPDATE key_versions SET state = 'deactivated', deactivated_at = ?3, destroy_after = ?4
                 WHERE key_id = ?1 AND version = ?2 AND state = 'active'",
                params![key_id, old, now, fmt_time(destroy_after)],
            )?,
            None => 1,
        };
        if n != 1 || m != 1 {
            return Err(InventoryError::BadRow(format!(
                "rotation of key {key_id}: v{new_version} was not pending or v{old_version:?} not active"
            )));
        }
        if let Some(c) = copy {
            crate::inventory::backups::upsert_copy(
                &tx,
                integrity.as_ref(),
                key_id,
                new_version,
                c,
            )?;
        }
        tx.execute(
            "UPDATE keys SET updated_at = ?2 WHERE id = ?1",
            params![key_id, now],
        )?;
        guarded(
            &tx,
            integrity.as_ref(),
            Table::Procedures,
            "id = ?1",
            &[&procedure],
            |tx| {
                Ok(tx.execute(
                    "UPDATE procedures SET step = 'switched', updated_at = ?2 WHERE id = ?1",
                    params![procedure, now],
                )?)
            },
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&key_id],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Move a version from `from` to `to` state (checked), with its audit record.
    pub fn set_version_state(
        &self,
        key_id: &str,
        version: u32,
        from: &[VersionState],
        to: VersionState,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let now = fmt_time(crate::clock::lifecycle_now());
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
        check_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&key_id],
        )?;
        let current: Option<String> = tx
            .query_row(
                "SELECT state FROM key_versions WHERE key_id = ?1 AND version = ?2",
                params![key_id, version],
                |r| r.get(0),
            )
            .optional()?;
        let current = current.ok_or_else(|| {
            InventoryError::BadRow(format!("no version {version} of key {key_id}"))
        })?;
        let current: VersionState = current
            .parse()
            .map_err(|e: crate::model::ParseError| InventoryError::BadRow(e.to_string()))?;
        if !from.contains(&current) {
            return Err(InventoryError::BadRow(format!(
                "version {version} is {current}; it cannot become {to}"
            )));
        }
        let column = match to {
            VersionState::Compromised => "compromised_at",
            VersionState::Deactivated => "deactivated_at",
            VersionState::Destroyed | VersionState::DestroyedCompromised => "destroyed_at",
            VersionState::Active => "activated_at",
            VersionState::Pending => "created_at",
        };
        tx.execute(
            &format!(
                "UPDATE key_versions SET state = ?3, {column} = ?4 WHERE key_id = ?1 AND version = ?2"
            ),
            params![key_id, version, to.as_str(), now],
        )?;
        tx.execute(
            "UPDATE keys SET updated_at = ?2 WHERE id = ?1",
            params![key_id, now],
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&key_id],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }
}
