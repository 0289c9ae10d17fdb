//! Reading a tagged row and checking its tag and its freshness against the change log; a row
//! that fails is refused, named.

use std::sync::Arc;

use super::canonical::{canonical, identity};
use super::{BadRow, CheckFailure, RowIntegrity, Table};
use crate::inventory::sql::{Connection, OptionalExtension, ToValue, Value};
use crate::inventory::InventoryError;

/// `, <alias>integrity_tag, <alias>row_seq, <alias>col, …`: appended to a row read so the same
/// statement gives what the tag check needs ([`check_tail`]).
pub(crate) fn tail(table: Table, alias: &str) -> String {
    let mut s = format!(", {alias}integrity_tag, {alias}row_seq");
    for c in table.columns() {
        s.push_str(", ");
        s.push_str(alias);
        s.push_str(c);
    }
    s
}

/// Check the row whose [`tail`] starts at column `start` of `row`.
pub(crate) fn check_tail(
    conn: &Connection,
    integrity: Option<&Arc<dyn RowIntegrity>>,
    table: Table,
    row: &crate::inventory::sql::Row,
    start: usize,
) -> Result<(), InventoryError> {
    let Some(integrity) = integrity else {
        return Ok(());
    };
    let tagged = Tagged {
        rowid: 0,
        tag: row.get(start)?,
        row_seq: row.get(start + 1)?,
        values: (0..table.columns().len())
            .map(|i| row.get::<_, Value>(start + 2 + i))
            .collect::<Result<_, _>>()?,
    };
    check_one(conn, integrity.as_ref(), table, &tagged)
}

pub(super) struct Tagged {
    pub(super) rowid: i64,
    pub(super) tag: Option<Vec<u8>>,
    pub(super) row_seq: Option<i64>,
    pub(super) values: Vec<Value>,
}

pub(super) fn select(
    conn: &Connection,
    table: Table,
    where_: &str,
    params: &[&dyn ToValue],
) -> Result<Vec<Tagged>, InventoryError> {
    let cols = table.columns();
    let sql = format!(
        "SELECT rowid, integrity_tag, row_seq, {} FROM {} WHERE {where_}",
        cols.join(", "),
        table.name()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |r| {
        let mut values = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            values.push(r.get::<_, Value>(i + 3)?);
        }
        Ok(Tagged {
            rowid: r.get(0)?,
            tag: r.get(1)?,
            row_seq: r.get(2)?,
            values,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The number of the last recorded change of a row, and whether that change deleted it.
fn last_change(
    conn: &Connection,
    table: Table,
    ident: &str,
) -> Result<Option<(i64, bool)>, InventoryError> {
    Ok(conn
        .prepare_cached(
            "SELECT seq, gone FROM row_changes WHERE tbl = ?1 AND ident = ?2 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(crate::inventory::sql::params![table.name(), ident], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? != 0))
        })
        .optional()?)
}

pub(super) fn check_one(
    conn: &Connection,
    integrity: &dyn RowIntegrity,
    table: Table,
    row: &Tagged,
) -> Result<(), InventoryError> {
    let ident = identity(table, &row.values);
    let bad = |why: String| {
        InventoryError::Tampered(BadRow {
            table: table.name(),
            row: ident.clone(),
            why,
        })
    };
    let stale = |why: String| {
        integrity.failed(&why);
        bad(why)
    };
    let Some(tag) = &row.tag else {
        return Err(stale(
            "it carries no integrity tag (written outside kms?)".into(),
        ));
    };
    integrity
        .check(&canonical(table, &row.values, row.row_seq), tag)
        .map_err(|f| match f {
            CheckFailure::Tampered(why) => bad(why),
            CheckFailure::Unavailable { config, why } => {
                InventoryError::IntegrityUnavailable { config, why }
            }
        })?;
    // Freshness: the row must be the one its last recorded change wrote. The change log is
    // read here; the highest number this process has seen for the row is remembered, so a
    // log edited after that is no way around it (and the token's anchor pins the log).
    let key = format!("{}:{ident}", table.name());
    let seen = integrity.seen(&key);
    let last = last_change(conn, table, &ident)?;
    let own = row.row_seq.unwrap_or(0);
    let (logged, gone) = last.unwrap_or((0, false));
    if gone {
        return Err(stale(format!(
            "it was deleted by change #{logged}, and a copy of it was written back (a replay)"
        )));
    }
    let newest = logged.max(seen);
    if own < newest {
        return Err(stale(format!(
            "it is an older copy (written by change #{own}) of a row last changed by change #{newest}: replayed or rolled back"
        )));
    }
    if own > logged {
        return Err(stale(format!(
            "it says change #{own} wrote it, but the inventory's change log ends at #{logged} for it: the change log was edited"
        )));
    }
    integrity.raise(&key, own);
    Ok(())
}

/// Check every row of `table` matching `where_`; the first bad one is an error.
pub(crate) fn check_where(
    conn: &Connection,
    integrity: Option<&Arc<dyn RowIntegrity>>,
    table: Table,
    where_: &str,
    params: &[&dyn ToValue],
) -> Result<(), InventoryError> {
    let Some(integrity) = integrity else {
        return Ok(());
    };
    for row in select(conn, table, where_, params)? {
        check_one(conn, integrity.as_ref(), table, &row)?;
    }
    Ok(())
}
