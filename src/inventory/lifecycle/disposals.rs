//! Disposal requests (contract termination): filing, the signed steps, cancelling, and the
//! last transaction that destroys every version and leaves the key a tombstone.

use serde::Serialize;
use time::OffsetDateTime;

use super::RowResult;
use crate::inventory::integrity::{check_where, guarded, tag_where, Table};
use crate::inventory::sql::{params, OptionalExtension, Row};
use crate::inventory::{audit, fmt_time, parse_time, Inventory, InventoryError};
use crate::model::AuditEntry;

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

/// How many columns DISPOSAL_COLUMNS names.
const DISPOSAL_COLUMN_COUNT: usize = 12;
const DISPOSAL_COLUMNS: &str = "id, key_id, contract_ref, justification, requested_by, \
     requested_at, state, not_before, done_at, record, record_signature, wait_secs";

impl Inventory {
    /// File a disposal request, with its audit record.
    pub fn insert_disposal(&self, d: &Disposal, entry: &AuditEntry) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
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
                crate::inventory::integrity::tail(Table::Disposals, "")
            ))?
            .query_row([id], |r| {
                Ok(crate::inventory::integrity::check_tail(
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
            crate::inventory::integrity::tail(Table::Disposals, "")
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(crate::inventory::integrity::check_tail(
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
        step: &crate::inventory::SignedStep,
        to_state: &str,
        not_before: Option<OffsetDateTime>,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
        crate::inventory::requests::insert_step(&tx, integrity.as_ref(), step)?;
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
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
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
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
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
        crate::inventory::integrity::record_deleted(
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
