//! Tagging rows as they are written: every matching row tagged as a new change, and a guarded
//! change (checked before, tagged after) so a row edited behind kms's back is never laundered.

use std::sync::Arc;

use super::canonical::canonical;
use super::change_log::{log_change, next_change};
use super::check::{check_where, select};
use super::{RowIntegrity, Table};
use crate::inventory::sql::{Connection, ToValue};
use crate::inventory::InventoryError;

/// Tag every row of `table` matching `where_` as it reads now, each as a new change.
pub(crate) fn tag_where(
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
    let sql = format!(
        "UPDATE {} SET integrity_tag = ?1, row_seq = ?2 WHERE rowid = ?3",
        table.name()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    for row in &rows {
        let seq = next_change(conn)?;
        let tag = integrity
            .tag(&canonical(table, &row.values, Some(seq)))
            .map_err(InventoryError::Integrity)?;
        stmt.execute(crate::inventory::sql::params![tag, seq, row.rowid])?;
        log_change(conn, integrity.as_ref(), table, row, seq, false)?;
    }
    Ok(rows.len())
}

/// Check the rows a change is about to touch, make the change, tag the rows after it. A row
/// that was edited behind kms's back makes the change fail instead of being laundered.
pub(crate) fn guarded<T>(
    conn: &Connection,
    integrity: Option<&Arc<dyn RowIntegrity>>,
    table: Table,
    where_: &str,
    params: &[&dyn ToValue],
    change: impl FnOnce(&Connection) -> Result<T, InventoryError>,
) -> Result<T, InventoryError> {
    check_where(conn, integrity, table, where_, params)?;
    let out = change(conn)?;
    tag_where(conn, integrity, table, where_, params)?;
    Ok(out)
}
