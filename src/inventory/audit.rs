//! Audit rows: appended, never updated or deleted by the KMS.

use rusqlite::{params, Connection, Row};

use super::records::{AuditEntry, AuditRow, Outcome};
use super::{fmt_time, parse_time, Inventory, InventoryError};

pub(crate) fn insert(conn: &Connection, e: &AuditEntry) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO audit (at, actor, host, action, key_name, key_version, reason, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            fmt_time(e.at),
            e.actor,
            e.host,
            e.action,
            e.key_name,
            e.key_version,
            e.reason,
            e.outcome.as_str(),
            e.detail
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

impl Inventory {
    /// Append one audit row. Callers treat a failure here as failure of the whole operation.
    /// Rows of concurrent operations are group-committed (see `audit_writer`).
    pub fn append_audit(&self, e: &AuditEntry) -> Result<i64, InventoryError> {
        self.audit.append(e)
    }

    /// The newest `limit` audit rows, optionally for one key, oldest first.
    pub fn audit_rows(
        &self,
        key_name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, host, action, key_name, key_version, reason, outcome, detail
             FROM audit WHERE (?1 IS NULL OR key_name = ?1) ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![key_name, limit], read_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        out.reverse();
        Ok(out)
    }
}

fn read_row(r: &Row<'_>) -> rusqlite::Result<Result<AuditRow, InventoryError>> {
    let at: String = r.get(1)?;
    let outcome: String = r.get(8)?;
    let build = || -> Result<AuditRow, InventoryError> {
        Ok(AuditRow {
            seq: r.get(0)?,
            entry: AuditEntry {
                at: parse_time(&at)?,
                actor: r.get(2)?,
                host: r.get(3)?,
                action: r.get(4)?,
                key_name: r.get(5)?,
                key_version: r.get(6)?,
                reason: r.get(7)?,
                outcome: match outcome.as_str() {
                    "ok" => Outcome::Ok,
                    "denied" => Outcome::Denied,
                    _ => Outcome::Error,
                },
                detail: r.get(9)?,
            },
        })
    };
    Ok(build())
}
