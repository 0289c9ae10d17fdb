//! The procedures table: a multi-step procedure's intent (written before a token is touched),
//! its steps, its end, and the ones a crash left running.

use serde::Serialize;
use time::OffsetDateTime;

use super::RowResult;
use crate::inventory::integrity::{guarded, tag_where, Table};
use crate::inventory::sql::{params, Row};
use crate::inventory::{audit, fmt_time, parse_time, Inventory, InventoryError};
use crate::model::AuditEntry;

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

const PROC_COLUMNS: &str =
    "id, kind, key_id, version, step, state, data, started_by, started_at, updated_at";
/// How many columns PROC_COLUMNS names (a row's integrity tail starts after them).
const PROC_COLUMN_COUNT: usize = 10;

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
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
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
        let tx =
            conn.transaction_with_behavior(crate::inventory::sql::TransactionBehavior::Immediate)?;
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
            crate::inventory::integrity::tail(Table::Procedures, "")
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(crate::inventory::integrity::check_tail(
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
}

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
