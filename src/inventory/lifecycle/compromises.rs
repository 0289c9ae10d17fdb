//! Declared compromises: the version marked compromised, the record of what is known about its
//! use, and its closing once the version is destroyed.

use serde::Serialize;
use time::OffsetDateTime;

use super::RowResult;
use crate::inventory::integrity::{check_where, guarded, tag_where, Table};
use crate::inventory::sql::{params, Row};
use crate::inventory::{audit, fmt_time, parse_time, Inventory, InventoryError};
use crate::model::AuditEntry;

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

/// How many columns COMPROMISE_COLUMNS names.
const COMPROMISE_COLUMN_COUNT: usize = 10;
const COMPROMISE_COLUMNS: &str = "id, key_id, version, reason, declared_by, declared_at, \
     replaced_by, report, closed_at, closed_by";

impl Inventory {
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
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
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
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
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
            crate::inventory::integrity::tail(Table::Compromises, "")
        ))?;
        let rows = stmt.query_map([key_id], |r| {
            Ok(crate::inventory::integrity::check_tail(
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
