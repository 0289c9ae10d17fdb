//! Key lifecycle rows: version state transitions, multi-step procedures with their progress,
//! compromise records and disposal requests. Every change writes its audit record in the same
//! transaction.

use super::sql::{params, OptionalExtension, Row};
use serde::Serialize;
use time::OffsetDateTime;

use super::integrity::{check_where, guarded, tag_where, Table};
use super::keys::PendingVersion;
use super::{audit, fmt_time, parse_time, Inventory, InventoryError};
use crate::model::VersionState;
use crate::model::{AuditEntry, KeyCopy};

/// A multi-step procedure: what it is doing and how far it got. Written before a token is
/// touched; a crash leaves it `running` for `kms reconcile --repair` (or the service) to finish or
/// roll back.
#[derive(Debug, Clone, Serialize)]
pub struct Procedure {
    pub id: String,
    pub kind: String,
    pub key_id: String,
    pub version: Option<u32>,
    pub step: String,
    pub state: String,
    pub data: serde_json::Value,
    pub started_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A declared compromise and what is known about the compromised version's use.
#[derive(Debug, Clone, Serialize)]
pub struct Compromise {
    pub id: String,
    pub key_id: String,
    pub version: u32,
    pub reason: String,
    pub declared_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub declared_at: OffsetDateTime,
    pub replaced_by: Option<u32>,
    pub report: serde_json::Value,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    pub closed_by: Option<String>,
}

/// A disposal request (contract termination) and its progress.
#[derive(Debug, Clone, Serialize)]
pub struct Disposal {
    pub id: String,
    pub key_id: String,
    pub contract_ref: String,
    pub justification: String,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// Waiting period between approval and destruction.
    pub wait_secs: u64,
    pub state: String,
    /// Destruction may not happen before this (set at approval).
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub done_at: Option<OffsetDateTime>,
    /// The destruction record (JSON text) and its signature by the audit key.
    pub record: Option<String>,
    #[serde(skip)]
    pub record_signature: Option<Vec<u8>>,
}

const PROC_COLUMNS: &str =
    "id, kind, key_id, version, step, state, data, started_by, started_at, updated_at";
/// How many columns PROC_COLUMNS names (a row's integrity tail starts after them).
const PROC_COLUMN_COUNT: usize = 10;
/// How many columns COMPROMISE_COLUMNS names.
const COMPROMISE_COLUMN_COUNT: usize = 10;
/// How many columns DISPOSAL_COLUMNS names.
const DISPOSAL_COLUMN_COUNT: usize = 12;
const COMPROMISE_COLUMNS: &str = "id, key_id, version, reason, declared_by, declared_at, \
     replaced_by, report, closed_at, closed_by";
const DISPOSAL_COLUMNS: &str = "id, key_id, contract_ref, justification, requested_by, \
     requested_at, state, not_before, done_at, record, record_signature, wait_secs";

impl Inventory {
    /// Record a procedure's intent (and its audit record) before anything is touched.
    #[allow(clippy::too_many_arguments)] // one column each, plus the audit record
    pub fn start_procedure(
        &self,
        id: &str,
        kind: &str,
        key_id: &str,
        version: Option<u32>,
        data: &serde_json::Value,
        started_by: &str,
        entry: &AuditEntry,
    ) -> Result<String, InventoryError> {
        let now = fmt_time(OffsetDateTime::now_utc());
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        tx.execute(
            &format!(
                "INSERT INTO procedures ({PROC_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'intent', 'running', ?5, ?6, ?7, ?7)"
            ),
            params![id, kind, key_id, version, data.to_string(), started_by, now],
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::Procedures,
            "id = ?1",
            &[&id],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(id.to_owned())
    }

    /// A disposal's execution: the disposal moves approved -> executing (when `disposal` is
    /// given) in the transaction that records the procedure's intent.
    pub fn start_procedure_for_disposal(
        &self,
        id: &str,
        disposal: Option<&str>,
        key_id: &str,
        data: &serde_json::Value,
        started_by: &str,
        entry: &AuditEntry,
    ) -> Result<String, InventoryError> {
        let now = fmt_time(OffsetDateTime::now_utc());
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        if let Some(d) = disposal {
            let n = guarded(
                &tx,
                integrity.as_ref(),
                Table::Disposals,
                "id = ?1",
                &[&d],
                |tx| {
                    Ok(tx.execute(
                        "UPDATE disposals SET state = 'executing' WHERE id = ?1 AND state = 'approved'",
                        [d],
                    )?)
                },
            )?;
            if n != 1 {
                return Err(InventoryError::BadRow(format!(
                    "disposal {d} is no longer approved (cancelled?)"
                )));
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO procedures ({PROC_COLUMNS}) VALUES (?1, 'disposal', ?2, NULL, 'intent', 'running', ?3, ?4, ?5, ?5)"
            ),
            params![id, key_id, data.to_string(), started_by, now],
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::Procedures,
            "id = ?1",
            &[&id],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(id.to_owned())
    }

    /// Record that procedure `id` reached `step` (with updated data).
    pub fn procedure_step(
        &self,
        id: &str,
        step: &str,
        data: &serde_json::Value,
    ) -> Result<(), InventoryError> {
        self.update_tagged_row(
            Table::Procedures,
            id,
            "UPDATE procedures SET step = ?2, data = ?3, updated_at = ?4 WHERE id = ?1",
            &[
                &id,
                &step,
                &data.to_string(),
                &fmt_time(OffsetDateTime::now_utc()),
            ],
        )?;
        Ok(())
    }

    /// End procedure `id` (`done` or `rolled-back`).
    pub fn end_procedure(&self, id: &str, state: &str) -> Result<(), InventoryError> {
        self.update_tagged_row(
            Table::Procedures,
            id,
            "UPDATE procedures SET state = ?2, updated_at = ?3 WHERE id = ?1",
            &[&id, &state, &fmt_time(OffsetDateTime::now_utc())],
        )?;
        Ok(())
    }

    /// Procedures a crash left running, oldest first.
    /// Each row's tag is checked: a procedure row kms did not write is refused, named.
    pub fn running_procedures(&self) -> Result<Vec<Procedure>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {PROC_COLUMNS}{} FROM procedures WHERE state = 'running' ORDER BY started_at",
            super::integrity::tail(Table::Procedures, "")
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(super::integrity::check_tail(
                &conn,
                integrity.as_ref(),
                Table::Procedures,
                r,
                PROC_COLUMN_COUNT,
            )
            .and_then(|()| read_procedure(r)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

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
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
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
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let where_ = "key_id = ?1 AND version = ?2 AND state = 'pending'";
        super::integrity::record_deleted(
            &tx,
            integrity.as_ref(),
            Table::KeyCopies,
            "key_id = ?1 AND version = ?2",
            &[&key_id, &version],
        )?;
        super::integrity::record_deleted(
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
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
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
            super::backups::upsert_copy(&tx, integrity.as_ref(), key_id, new_version, c)?;
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
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
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

    /// Declare a compromise: the version becomes compromised and the compromise record is kept,
    /// with the audit record, in one transaction.
    pub fn declare_compromise(
        &self,
        c: &Compromise,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let now = fmt_time(c.declared_at);
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        check_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&c.key_id],
        )?;
        let n = tx.execute(
            "UPDATE key_versions SET state = 'compromised', compromised_at = ?3
             WHERE key_id = ?1 AND version = ?2 AND state IN ('active','deactivated')",
            params![c.key_id, c.version, now],
        )?;
        if n != 1 {
            return Err(InventoryError::BadRow(format!(
                "version {} is not active or deactivated",
                c.version
            )));
        }
        tx.execute(
            &format!("INSERT INTO compromises ({COMPROMISE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL)"),
            params![
                c.id,
                c.key_id,
                c.version,
                c.reason,
                c.declared_by,
                now,
                c.replaced_by,
                c.report.to_string()
            ],
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::Compromises,
            "id = ?1",
            &[&c.id],
        )?;
        tx.execute(
            "UPDATE keys SET updated_at = ?2 WHERE id = ?1",
            params![c.key_id, now],
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&c.key_id],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    pub fn update_compromise_report(
        &self,
        id: &str,
        report: &serde_json::Value,
        replaced_by: Option<u32>,
    ) -> Result<(), InventoryError> {
        self.update_tagged_row(
            Table::Compromises,
            id,
            "UPDATE compromises SET report = ?2, replaced_by = COALESCE(?3, replaced_by) WHERE id = ?1",
            &[&id, &report.to_string(), &replaced_by],
        )?;
        Ok(())
    }

    /// Close a compromise (its version is destroyed), with the audit record.
    pub fn close_compromise(
        &self,
        id: &str,
        by: &str,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        guarded(
            &tx,
            integrity.as_ref(),
            Table::Compromises,
            "id = ?1",
            &[&id],
            |tx| {
                Ok(tx.execute(
                    "UPDATE compromises SET closed_at = ?2, closed_by = ?3 WHERE id = ?1 AND closed_at IS NULL",
                    params![id, fmt_time(OffsetDateTime::now_utc()), by],
                )?)
            },
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Compromises of a key, newest first.
    pub fn compromises(&self, key_id: &str) -> Result<Vec<Compromise>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COMPROMISE_COLUMNS}{} FROM compromises WHERE key_id = ?1 ORDER BY declared_at DESC",
            super::integrity::tail(Table::Compromises, "")
        ))?;
        let rows = stmt.query_map([key_id], |r| {
            Ok(super::integrity::check_tail(
                &conn,
                integrity.as_ref(),
                Table::Compromises,
                r,
                COMPROMISE_COLUMN_COUNT,
            )
            .and_then(|()| read_compromise(r)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// File a disposal request, with its audit record.
    pub fn insert_disposal(&self, d: &Disposal, entry: &AuditEntry) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        tx.execute(
            &format!("INSERT INTO disposals ({DISPOSAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'requested', NULL, NULL, NULL, NULL, ?7)"),
            params![
                d.id,
                d.key_id,
                d.contract_ref,
                d.justification,
                d.requested_by,
                fmt_time(d.requested_at),
                d.wait_secs as i64
            ],
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::Disposals,
            "id = ?1",
            &[&d.id],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// The disposal, its row's tag checked.
    pub fn disposal(&self, id: &str) -> Result<Disposal, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let row = conn
            .prepare_cached(&format!(
                "SELECT {DISPOSAL_COLUMNS}{} FROM disposals WHERE id = ?1",
                super::integrity::tail(Table::Disposals, "")
            ))?
            .query_row([id], |r| {
                Ok(super::integrity::check_tail(
                    &conn,
                    integrity.as_ref(),
                    Table::Disposals,
                    r,
                    DISPOSAL_COLUMN_COUNT,
                )
                .and_then(|()| read_disposal(r)?))
            })
            .optional()?;
        row.ok_or_else(|| InventoryError::BadRow(format!("no disposal request '{id}'")))?
    }

    /// Every disposal request, newest first.
    /// Each row's tag is checked: a disposal row kms did not write is refused, named.
    pub fn disposals(&self) -> Result<Vec<Disposal>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DISPOSAL_COLUMNS}{} FROM disposals ORDER BY requested_at DESC",
            super::integrity::tail(Table::Disposals, "")
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(super::integrity::check_tail(
                &conn,
                integrity.as_ref(),
                Table::Disposals,
                r,
                DISPOSAL_COLUMN_COUNT,
            )
            .and_then(|()| read_disposal(r)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// A signed disposal step (verify / approve) and the new state, with the audit record.
    pub fn disposal_step(
        &self,
        id: &str,
        step: &super::SignedStep,
        to_state: &str,
        not_before: Option<OffsetDateTime>,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        super::requests::insert_step(&tx, integrity.as_ref(), step)?;
        guarded(
            &tx,
            integrity.as_ref(),
            Table::Disposals,
            "id = ?1",
            &[&id],
            |tx| {
                Ok(tx.execute(
                    "UPDATE disposals SET state = ?2, not_before = COALESCE(?3, not_before) WHERE id = ?1",
                    params![id, to_state, not_before.map(fmt_time)],
                )?)
            },
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Cancel a disposal that has not been carried out.
    pub fn cancel_disposal(&self, id: &str, entry: &AuditEntry) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let n = guarded(
            &tx,
            integrity.as_ref(),
            Table::Disposals,
            "id = ?1",
            &[&id],
            |tx| {
                Ok(tx.execute(
                    "UPDATE disposals SET state = 'cancelled' WHERE id = ?1 AND state IN ('requested','verified','approved')",
                    [id],
                )?)
            },
        )?;
        if n != 1 {
            return Err(InventoryError::BadRow(format!(
                "disposal {id} is done or cancelled already"
            )));
        }
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// The end of a disposal: every version destroyed, the key a tombstone, the signed
    /// destruction record stored, and the audit record — one transaction.
    pub fn finish_disposal(
        &self,
        id: &str,
        key_id: &str,
        record: &str,
        signature: &[u8],
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let now = fmt_time(OffsetDateTime::now_utc());
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        check_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&key_id],
        )?;
        check_where(
            &tx,
            integrity.as_ref(),
            Table::Grants,
            "key_id = ?1",
            &[&key_id],
        )?;
        check_where(&tx, integrity.as_ref(), Table::Keys, "id = ?1", &[&key_id])?;
        check_where(&tx, integrity.as_ref(), Table::Disposals, "id = ?1", &[&id])?;
        super::integrity::record_deleted(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1 AND state = 'pending'",
            &[&key_id],
        )?;
        tx.execute(
            "UPDATE key_versions SET state = CASE WHEN state IN ('compromised','destroyed-compromised')
                    THEN 'destroyed-compromised' ELSE 'destroyed' END,
                    destroyed_at = COALESCE(destroyed_at, ?2)
             WHERE key_id = ?1 AND state <> 'pending'",
            params![key_id, now],
        )?;
        tx.execute(
            "DELETE FROM key_versions WHERE key_id = ?1 AND state = 'pending'",
            [key_id],
        )?;
        tx.execute(
            "UPDATE keys SET disposed_at = ?2, updated_at = ?2 WHERE id = ?1",
            params![key_id, now],
        )?;
        tx.execute(
            "UPDATE grants SET revoked_at = ?2, revoked_by = 'kms', revoke_reason = 'key disposed'
             WHERE key_id = ?1 AND revoked_at IS NULL",
            params![key_id, now],
        )?;
        let n = tx.execute(
            "UPDATE disposals SET state = 'done', done_at = ?2, record = ?3, record_signature = ?4
             WHERE id = ?1 AND state = 'executing'",
            params![id, now, record, signature],
        )?;
        if n != 1 {
            return Err(InventoryError::BadRow(format!(
                "disposal {id} is not executing"
            )));
        }
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&key_id],
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::Grants,
            "key_id = ?1",
            &[&key_id],
        )?;
        tag_where(&tx, integrity.as_ref(), Table::Keys, "id = ?1", &[&key_id])?;
        tag_where(&tx, integrity.as_ref(), Table::Disposals, "id = ?1", &[&id])?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }
}

type RowResult<T> = super::sql::Result<Result<T, InventoryError>>;

fn read_procedure(r: &Row) -> RowResult<Procedure> {
    let data: String = r.get(6)?;
    let started_at: String = r.get(8)?;
    let updated_at: String = r.get(9)?;
    let (id, kind, key_id, version, step, state, started_by) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(7)?,
    );
    Ok((|| {
        Ok(Procedure {
            id,
            kind,
            key_id,
            version,
            step,
            state,
            data: serde_json::from_str(&data)
                .map_err(|e| InventoryError::BadRow(format!("procedure data: {e}")))?,
            started_by,
            started_at: parse_time(&started_at)?,
            updated_at: parse_time(&updated_at)?,
        })
    })())
}

fn read_compromise(r: &Row) -> RowResult<Compromise> {
    let declared_at: String = r.get(5)?;
    let report: String = r.get(7)?;
    let closed_at: Option<String> = r.get(8)?;
    let (id, key_id, version, reason, declared_by, replaced_by, closed_by) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(6)?,
        r.get(9)?,
    );
    Ok((|| {
        Ok(Compromise {
            id,
            key_id,
            version,
            reason,
            declared_by,
            declared_at: parse_time(&declared_at)?,
            replaced_by,
            report: serde_json::from_str(&report)
                .map_err(|e| InventoryError::BadRow(format!("compromise report: {e}")))?,
            closed_at: closed_at.as_deref().map(parse_time).transpose()?,
            closed_by,
        })
    })())
}

fn read_disposal(r: &Row) -> RowResult<Disposal> {
    let requested_at: String = r.get(5)?;
    let not_before: Option<String> = r.get(7)?;
    let done_at: Option<String> = r.get(8)?;
    let wait: i64 = r.get(11)?;
    let (id, key_id, contract_ref, justification, requested_by, state, record, record_signature) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(6)?,
        r.get(9)?,
        r.get(10)?,
    );
    Ok((|| {
        Ok(Disposal {
            id,
            key_id,
            contract_ref,
            justification,
            requested_by,
            requested_at: parse_time(&requested_at)?,
            wait_secs: u64::try_from(wait).unwrap_or(0),
            state,
            not_before: not_before.as_deref().map(parse_time).transpose()?,
            done_at: done_at.as_deref().map(parse_time).transpose()?,
            record,
            record_signature,
        })
    })())
}
