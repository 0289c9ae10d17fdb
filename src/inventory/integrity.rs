//! Rows that prove themselves: every row whose content grants power (principals, grants, key
//! versions, backup pairings) carries `integrity_tag`, a signature made on the HSM over a
//! canonical encoding of the row's identity and every field that matters.
//!
//! The inventory does not know how tags are made: the engine installs a [`RowIntegrity`] (an
//! HSM-held key) once the inventory is open. Writers tag each row they write, inside the same
//! transaction; a write that changes existing rows first checks their tags, so a legitimate
//! update never launders a row edited behind kms's back. Readers the engine relies on check the
//! tag and refuse a row that fails ([`InventoryError::Tampered`]).

use std::sync::Arc;

use super::sql::Connection;
use super::sql::{ToValue, Value};

use super::{Inventory, InventoryError};

/// Makes and checks tags. Implemented by the engine with a key on the HSM.
pub trait RowIntegrity: Send + Sync {
    /// The tag of `message` (a canonical row encoding).
    fn tag(&self, message: &[u8]) -> Result<Vec<u8>, String>;
    /// Ok if `tag` is a valid tag of `message`; Err says why not.
    fn check(&self, message: &[u8], tag: &[u8]) -> Result<(), CheckFailure>;
}

/// Why a check did not pass.
#[derive(Debug, Clone)]
pub enum CheckFailure {
    /// The tag is missing or does not match the row: the row was changed outside kms.
    Tampered(String),
    /// The check could not be made (the integrity key's token is unreachable or the
    /// configuration points elsewhere): refused, but not called tampering.
    Unavailable { config: bool, why: String },
}

/// The tables whose rows carry tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Principals,
    Grants,
    KeyVersions,
    BackupPairs,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Principals,
        Table::Grants,
        Table::KeyVersions,
        Table::BackupPairs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Principals => "principals",
            Table::Grants => "grants",
            Table::KeyVersions => "key_versions",
            Table::BackupPairs => "backup_pairs",
        }
    }

    /// The columns a tag covers: the row's identity first, then everything that grants power.
    fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Principals => &[
                "name",
                "role",
                "cert_fingerprint",
                "approval_key",
                "approval_key_uri",
                "allowed_networks",
                "disabled_at",
                "created_at",
            ],
            Table::Grants => &[
                "id",
                "principal",
                "key_id",
                "ops",
                "not_before",
                "not_after",
                "ticket",
                "justification",
                "created_by",
                "created_at",
                "revoked_at",
                "request_id",
                "review_due",
                "break_glass",
            ],
            Table::KeyVersions => &[
                "key_id",
                "version",
                "token",
                "token_label",
                "token_serial",
                "object_id",
                "state",
                "public_key",
                "activated_at",
                "deactivated_at",
                "destroy_after",
                "compromised_at",
                "destroyed_at",
            ],
            Table::BackupPairs => &[
                "id",
                "from_token",
                "from_serial",
                "to_token",
                "to_serial",
                "kek_id",
                "transport_id",
                "created_at",
                "created_by",
            ],
        }
    }

    /// How many leading columns identify the row.
    fn identity_len(self) -> usize {
        match self {
            Table::KeyVersions => 2,
            _ => 1,
        }
    }
}

/// A row that failed its check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadRow {
    pub table: &'static str,
    /// The row's identity, e.g. `grant g-…` or `key_versions key=… version=2`.
    pub row: String,
    pub why: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}: {}", self.table, self.row, self.why)
    }
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Real(r) => serde_json::Value::from(*r),
        Value::Text(t) => serde_json::Value::from(t.as_str()),
        Value::Blob(b) => serde_json::json!({ "hex": hex::encode(b) }),
    }
}

/// The canonical encoding a tag signs: a format name, the table, then each column's name, the
/// value's SQLite type and its length-prefixed bytes, so no two rows or tables share an
/// encoding (written directly: it is computed on every checked read).
pub(crate) fn canonical(table: Table, values: &[Value]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(256);
    field(&mut out, b"kms-row/2");
    field(&mut out, table.name().as_bytes());
    for (col, v) in table.columns().iter().zip(values) {
        field(&mut out, col.as_bytes());
        match v {
            Value::Null => out.push(0),
            Value::Integer(i) => {
                out.push(1);
                field(&mut out, &i.to_be_bytes());
            }
            Value::Real(r) => {
                out.push(2);
                field(&mut out, &r.to_be_bytes());
            }
            Value::Text(t) => {
                out.push(3);
                field(&mut out, t.as_bytes());
            }
            Value::Blob(b) => {
                out.push(4);
                field(&mut out, b);
            }
        }
    }
    out
}

/// `, <alias>integrity_tag, <alias>col, …`: appended to a row read so the same statement
/// gives what the tag check needs ([`check_tail`]).
pub(crate) fn tail(table: Table, alias: &str) -> String {
    let mut s = format!(", {alias}integrity_tag");
    for c in table.columns() {
        s.push_str(", ");
        s.push_str(alias);
        s.push_str(c);
    }
    s
}

/// Check the row whose [`tail`] starts at column `start` of `row`.
pub(crate) fn check_tail(
    integrity: Option<&Arc<dyn RowIntegrity>>,
    table: Table,
    row: &super::sql::Row,
    start: usize,
) -> Result<(), InventoryError> {
    let Some(integrity) = integrity else {
        return Ok(());
    };
    let tagged = Tagged {
        rowid: 0,
        tag: row.get(start)?,
        values: (0..table.columns().len())
            .map(|i| row.get::<_, Value>(start + 1 + i))
            .collect::<Result<_, _>>()?,
    };
    check_one(integrity.as_ref(), table, &tagged)
}

fn identity(table: Table, values: &[Value]) -> String {
    let cols = table.columns();
    values
        .iter()
        .zip(cols)
        .take(table.identity_len())
        .map(|(v, c)| match v {
            Value::Text(t) => format!("{c}={t}"),
            Value::Integer(i) => format!("{c}={i}"),
            other => format!("{c}={}", json_value(other)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Tagged {
    rowid: i64,
    tag: Option<Vec<u8>>,
    values: Vec<Value>,
}

fn select(
    conn: &Connection,
    table: Table,
    where_: &str,
    params: &[&dyn ToValue],
) -> Result<Vec<Tagged>, InventoryError> {
    let cols = table.columns();
    let sql = format!(
        "SELECT rowid, integrity_tag, {} FROM {} WHERE {where_}",
        cols.join(", "),
        table.name()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |r| {
        let mut values = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            values.push(r.get::<_, Value>(i + 2)?);
        }
        Ok(Tagged {
            rowid: r.get(0)?,
            tag: r.get(1)?,
            values,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn check_one(
    integrity: &dyn RowIntegrity,
    table: Table,
    row: &Tagged,
) -> Result<(), InventoryError> {
    let bad = |why: String| {
        InventoryError::Tampered(BadRow {
            table: table.name(),
            row: identity(table, &row.values),
            why,
        })
    };
    let Some(tag) = &row.tag else {
        return Err(bad(
            "it carries no integrity tag (written outside kms?)".into()
        ));
    };
    integrity
        .check(&canonical(table, &row.values), tag)
        .map_err(|f| match f {
            CheckFailure::Tampered(why) => bad(why),
            CheckFailure::Unavailable { config, why } => {
                InventoryError::IntegrityUnavailable { config, why }
            }
        })
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
        check_one(integrity.as_ref(), table, &row)?;
    }
    Ok(())
}

/// Tag every row of `table` matching `where_` as it reads now.
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
        "UPDATE {} SET integrity_tag = ?1 WHERE rowid = ?2",
        table.name()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    for row in &rows {
        let tag = integrity
            .tag(&canonical(table, &row.values))
            .map_err(InventoryError::Integrity)?;
        stmt.execute(super::sql::params![tag, row.rowid])?;
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

impl Inventory {
    /// Install the tag maker/checker (the engine does this once the HSM key is known).
    pub fn set_integrity(&self, integrity: Arc<dyn RowIntegrity>) {
        *self.integrity.write().unwrap_or_else(|p| p.into_inner()) = Some(integrity);
    }

    /// Remove the installed checker (before the inventory's content is replaced by another's,
    /// whose rows carry that inventory's tags).
    pub fn clear_integrity(&self) {
        *self.integrity.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn integrity(&self) -> Option<Arc<dyn RowIntegrity>> {
        self.integrity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether any tagged table holds a row without a tag (a partial index answers it).
    pub fn any_untagged(&self) -> Result<bool, InventoryError> {
        let conn = self.conn();
        for t in Table::ALL {
            let found: bool = conn.query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE integrity_tag IS NULL)",
                    t.name()
                ),
                [],
                |r| r.get(0),
            )?;
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Tag every row that has no tag yet, in one transaction, with `audit` as its record (the
    /// one-time migration of an inventory made before rows carried tags).
    pub fn tag_untagged(&self, audit: &super::AuditEntry) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut n = 0;
        for t in Table::ALL {
            n += tag_where(&tx, integrity.as_ref(), t, "integrity_tag IS NULL", &[])?;
        }
        super::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(n)
    }

    /// Check every tagged row; the bad ones, named.
    pub fn verify_rows(&self) -> Result<(usize, Vec<BadRow>), InventoryError> {
        let Some(integrity) = self.integrity() else {
            return Err(InventoryError::Integrity(
                "the inventory's integrity key is not set up".into(),
            ));
        };
        let conn = self.conn();
        let mut checked = 0;
        let mut bad = Vec::new();
        for t in Table::ALL {
            for row in select(&conn, t, "1 = 1", &[])? {
                checked += 1;
                match check_one(integrity.as_ref(), t, &row) {
                    Ok(()) => {}
                    Err(InventoryError::Tampered(b)) => bad.push(b),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((checked, bad))
    }

    /// Check one grant row (used before a grant authorizes anything).
    pub fn check_grant_row(&self, id: &str) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        check_where(
            &self.conn(),
            integrity.as_ref(),
            Table::Grants,
            "id = ?1",
            &[&id],
        )
    }

    /// Re-tag every row as it reads now, whatever its tag (`testing` builds only: integration
    /// tests that simulate the passing of time by editing rows re-seal them this way).
    #[cfg(feature = "testing")]
    pub fn retag_all_for_tests(&self) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let mut n = 0;
        for t in Table::ALL {
            n += tag_where(&conn, integrity.as_ref(), t, "1 = 1", &[])?;
        }
        Ok(n)
    }
}
