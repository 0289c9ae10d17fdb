//! `kms inventory migrate --to postgres://…`: copy an SQLite inventory, row for row, into a new
//! PostgreSQL one (issue 13). Every column is copied as stored, so integrity tags and the audit
//! hash chain stay valid (neither covers SQLite's rowid); the counters SQLite keeps for
//! AUTOINCREMENT and PostgreSQL's sequences are carried over so no number is ever reused.

use super::sql::{Connection, TransactionBehavior};
use super::{Inventory, InventoryError};

/// Tables kms keeps no rows of across a move (node leases) or that the target makes itself.
const NOT_COPIED: &[&str] = &["sqlite_sequence", "schema_version", "leases"];

/// Serial columns whose PostgreSQL sequence must continue after the copied rows.
const SERIALS: &[(&str, &str)] = &[
    ("audit", "seq"),
    ("audit_checkpoints", "id"),
    ("signatures", "seq"),
    ("backup_pairs", "id"),
];

/// What a migration copied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    pub tables: usize,
    pub rows: usize,
}

impl Inventory {
    /// Copy this (SQLite) inventory into the empty PostgreSQL inventory at `url`.
    pub fn migrate_to_postgres(
        &self,
        url: &str,
        password: Option<&str>,
    ) -> Result<Migrated, InventoryError> {
        let src = self.conn();
        if src.is_postgres() {
            return Err(InventoryError::Conflict(
                "this inventory is already on PostgreSQL".into(),
            ));
        }
        let dest = Inventory::open_postgres(url, password, &self.path)?;
        let mut dconn = dest.conn();
        let tx = dconn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: i64 = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM keys) + (SELECT COUNT(*) FROM audit)
                  + (SELECT COUNT(*) FROM principals)",
            [],
            |r| r.get(0),
        )?;
        if existing > 0 {
            return Err(InventoryError::Conflict(format!(
                "the PostgreSQL inventory at {} already holds keys, principals or audit records; migrate into a new, empty database",
                super::redact(url)
            )));
        }
        // The new database's migrations seeded a few rows (the chain's start): the copy
        // replaces them.
        let mut seeded = tables(&src)?;
        seeded.reverse();
        for t in &seeded {
            tx.execute(&format!("DELETE FROM {t}"), [])?;
        }
        let (copied, rows) = copy_rows(&src, &tx, &src)?;
        fix_sequences(&tx)?;
        tx.commit()?;
        Ok(Migrated {
            tables: copied,
            rows,
        })
    }
}

impl Inventory {
    /// A consistent SQLite copy of this PostgreSQL inventory at `dest` (a new file), for the
    /// offline backup file; writers wait meanwhile (the copy holds the write lock).
    pub(super) fn pg_snapshot_to(&self, dest: &std::path::Path) -> Result<(), InventoryError> {
        let mut pg = self.conn();
        let raw = rusqlite::Connection::open(dest)?;
        super::migrations::claim(&raw).map_err(|_| {
            InventoryError::Conflict(format!("{} is not a new file", dest.display()))
        })?;
        let mut file = Connection::from_sqlite(raw);
        let from = super::migrations::current(&file)?;
        super::migrations::apply(&mut file, from)?;
        let read = pg.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let write = file.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The new file's migrations seeded a few rows (the chain's start): the copy replaces them.
        let mut seeded = tables(&write)?;
        seeded.reverse();
        for t in &seeded {
            write.execute(&format!("DELETE FROM {t}"), [])?;
        }
        copy_rows(&read, &write, &write)?;
        write.commit()?;
        read.commit()?;
        Ok(())
    }

    /// Replace this PostgreSQL inventory's rows with those of the SQLite inventory file `src`
    /// (an offline backup's snapshot), in one transaction.
    pub(super) fn pg_restore_from(&self, src: &std::path::Path) -> Result<(), InventoryError> {
        let file = Connection::from_sqlite(rusqlite::Connection::open(src)?);
        let mut pg = self.conn();
        let tx = pg.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut tables = tables(&file)?;
        tables.reverse();
        for t in &tables {
            tx.execute(&format!("DELETE FROM {t}"), [])?;
        }
        tx.execute("DELETE FROM sqlite_sequence", [])?;
        copy_rows(&file, &tx, &file)?;
        fix_sequences(&tx)?;
        tx.commit()?;
        Ok(())
    }
}

/// The tables of the SQLite inventory `schema` that carry rows across, in creation order (so
/// a row's references are copied before it).
fn tables(schema: &Connection) -> Result<Vec<String>, InventoryError> {
    let names: Vec<String> = schema
        .query_all(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid",
            [],
        )?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Result<_, _>>()?;
    Ok(names
        .into_iter()
        .filter(|t| !NOT_COPIED.contains(&t.as_str()))
        .collect())
}

/// Copy every row of every table (tables and columns as the SQLite side `schema` names them,
/// so PostgreSQL's extra `rowid` columns fill themselves) and the AUTOINCREMENT counters.
fn copy_rows(
    src: &Connection,
    dest: &Connection,
    schema: &Connection,
) -> Result<(usize, usize), InventoryError> {
    let (mut copied, mut rows) = (0, 0);
    for t in tables(schema)? {
        let columns = columns(schema, &t)?;
        let list = columns.join(", ");
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let insert = format!("INSERT INTO {t} ({list}) VALUES ({})", marks.join(", "));
        for row in src.query_all(&format!("SELECT {list} FROM {t}"), [])? {
            dest.execute(&insert, row.values().to_vec())?;
            rows += 1;
        }
        copied += 1;
    }
    for row in src.query_all("SELECT name, seq FROM sqlite_sequence", [])? {
        dest.execute(
            "DELETE FROM sqlite_sequence WHERE name = ?1",
            [row.get::<_, String>(0)?],
        )?;
        dest.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
            row.values().to_vec(),
        )?;
    }
    Ok((copied, rows))
}

/// PostgreSQL's sequences continue after the copied rows.
fn fix_sequences(tx: &Connection) -> Result<(), InventoryError> {
    for (t, c) in SERIALS {
        tx.query_row(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{t}', '{c}'),
                     COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)"
            ),
            [],
            |r| r.get::<_, i64>(0),
        )?;
    }
    Ok(())
}

/// The column names of SQLite table `t`.
fn columns(conn: &Connection, t: &str) -> Result<Vec<String>, InventoryError> {
    let cols: Vec<String> = conn
        .query_all(&format!("SELECT name FROM pragma_table_info('{t}')"), [])?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Result<_, _>>()?;
    if cols.is_empty() {
        return Err(InventoryError::BadRow(format!("table {t} has no columns")));
    }
    Ok(cols)
}
