//! The change log `row_changes`: each row change numbered (deletions too), and the log's state
//! as the token's anchor records it.

use std::sync::Arc;

use super::canonical::identity;
use super::check::{select, Tagged};
use super::{RowIntegrity, Table};
use crate::inventory::sql::{Connection, ToValue};
use crate::inventory::{Inventory, InventoryError};

/// The next change number (inside the caller's write transaction, which serialises writers).
pub(super) fn next_change(conn: &Connection) -> Result<i64, InventoryError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM row_changes")?
        .query_row([], |r| r.get(0))?;
    Ok(last.unwrap_or(0) + 1)
}

/// Append change `seq` of `row` (or its deletion) to the change log, and remember it.
pub(super) fn log_change(
    conn: &Connection,
    integrity: &dyn RowIntegrity,
    table: Table,
    row: &Tagged,
    seq: i64,
    gone: bool,
) -> Result<(), InventoryError> {
    let ident = identity(table, &row.values);
    conn.prepare_cached("INSERT INTO row_changes (seq, tbl, ident, gone) VALUES (?1, ?2, ?3, ?4)")?
        .execute(crate::inventory::sql::params![
            seq,
            table.name(),
            ident,
            i64::from(gone)
        ])?;
    integrity.raise(&format!("{}:{ident}", table.name()), seq);
    Ok(())
}

/// Record that the rows of `table` matching `where_` are about to be deleted (call before the
/// DELETE, inside its transaction), so a copy of one written back later is refused.
pub(crate) fn record_deleted(
    conn: &Connection,
    integrity: Option<&Arc<dyn RowIntegrity>>,
    table: Table,
    where_: &str,
    params: &[&dyn ToValue],
) -> Result<usize, InventoryError> {
    let Some(integrity) = integrity else {
        return Ok(0);
    };
    let rows = select(conn, table, where_, params)?;
    for row in &rows {
        log_change(
            conn,
            integrity.as_ref(),
            table,
            row,
            next_change(conn)?,
            true,
        )?;
    }
    Ok(rows.len())
}

/// The change log's state, as the token's anchor records it: the last change number, how many
/// changes there are up to it, and a SHA-384 chained over them in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeLogState {
    pub last: i64,
    pub count: i64,
    pub digest: String,
}

impl Inventory {
    /// The change log's state up to change `up_to` (every change when `None`), the digest
    /// chained from `from` (a state already known) when given.
    pub fn change_log_state(
        &self,
        from: Option<&ChangeLogState>,
        up_to: Option<i64>,
    ) -> Result<ChangeLogState, InventoryError> {
        use sha2::{Digest, Sha384};
        let conn = self.conn();
        let (mut last, mut count, mut digest) = match from {
            Some(s) => (s.last, s.count, s.digest.clone()),
            None => (0, 0, String::new()),
        };
        let mut stmt = conn.prepare_cached(
            "SELECT seq, tbl, ident, gone FROM row_changes WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(
            crate::inventory::sql::params![last, up_to.unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )?;
        for row in rows {
            let (seq, tbl, ident, gone) = row?;
            let mut h = Sha384::new();
            h.update(digest.as_bytes());
            h.update(format!("\n{seq}\t{tbl}\t{ident}\t{gone}").as_bytes());
            digest = hex::encode(h.finalize());
            last = seq;
            count += 1;
        }
        Ok(ChangeLogState {
            last,
            count,
            digest,
        })
    }

    /// How many changes the log holds.
    pub fn change_count(&self) -> Result<i64, InventoryError> {
        let conn = self.conn();
        let n: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM row_changes")?
            .query_row([], |r| r.get(0))?;
        Ok(n)
    }

    /// The last change number in the log (0 for none).
    pub fn last_change(&self) -> Result<i64, InventoryError> {
        let conn = self.conn();
        let last: Option<i64> = conn
            .prepare_cached("SELECT MAX(seq) FROM row_changes")?
            .query_row([], |r| r.get(0))?;
        Ok(last.unwrap_or(0))
    }
}
