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

use super::sql::{Connection, OptionalExtension};
use super::sql::{ToValue, Value};

use super::{Inventory, InventoryError};

/// Makes and checks tags. Implemented by the engine with a key on the HSM.
pub trait RowIntegrity: Send + Sync {
    /// The tag of `message` (a canonical row encoding).
    fn tag(&self, message: &[u8]) -> Result<Vec<u8>, String>;
    /// Ok if `tag` is a valid tag of `message`; Err says why not.
    fn check(&self, message: &[u8], tag: &[u8]) -> Result<(), CheckFailure>;
    /// The highest change number this process has seen for the row `key` (0 if none).
    fn seen(&self, _key: &str) -> i64 {
        0
    }
    /// Remember that the row `key` was seen (or written) at change `seq`.
    fn raise(&self, _key: &str, _seq: i64) {}
    /// A row failed its check (counted, logged).
    fn failed(&self, _why: &str) {}
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
    Keys,
    KeyCopies,
    Requests,
    Signatures,
    Compromises,
    Disposals,
    Procedures,
    ApprovalKeys,
}

impl Table {
    pub const ALL: [Table; 12] = [
        Table::Principals,
        Table::Grants,
        Table::KeyVersions,
        Table::BackupPairs,
        Table::Keys,
        Table::KeyCopies,
        Table::Requests,
        Table::Signatures,
        Table::Compromises,
        Table::Disposals,
        Table::Procedures,
        Table::ApprovalKeys,
    ];

    /// The tables that carry tags since issue 23 (their rows from before are tagged once).
    pub const SINCE_23: [Table; 7] = [
        Table::Keys,
        Table::KeyCopies,
        Table::Requests,
        Table::Signatures,
        Table::Compromises,
        Table::Disposals,
        Table::Procedures,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Principals => "principals",
            Table::Grants => "grants",
            Table::KeyVersions => "key_versions",
            Table::BackupPairs => "backup_pairs",
            Table::Keys => "keys",
            Table::KeyCopies => "key_copies",
            Table::Requests => "access_requests",
            Table::Signatures => "signatures",
            Table::Compromises => "compromises",
            Table::Disposals => "disposals",
            Table::Procedures => "procedures",
            Table::ApprovalKeys => "approval_keys",
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
            // Not `purpose`, `handling`, `disposal` (descriptive text) nor `updated_at`.
            Table::Keys => &[
                "id",
                "name",
                "key_type",
                "owner",
                "classification",
                "usage",
                "expires",
                "rotate_every_secs",
                "labels",
                "created_by",
                "created_at",
                "reencrypt_window_secs",
                "protect_for_secs",
                "process_for_secs",
                "disposed_at",
                "signature",
                "legacy_encrypt",
                "origin",
                "weak_reason",
                "migrated_to",
            ],
            // Not the drill columns, which change at every drill and steer nothing.
            Table::KeyCopies => &[
                "key_id",
                "version",
                "token_serial",
                "token",
                "token_label",
                "object_id",
                "pair_id",
                "copied_at",
            ],
            Table::Requests => &[
                "id",
                "requester",
                "grantee",
                "key_id",
                "ops",
                "duration_secs",
                "ticket",
                "justification",
                "state",
                "created_at",
                "grant_id",
            ],
            Table::Signatures => &[
                "seq",
                "subject",
                "step",
                "signer",
                "message",
                "signature",
                "public_key",
                "signed_at",
                "note",
            ],
            Table::Compromises => &[
                "id",
                "key_id",
                "version",
                "reason",
                "declared_by",
                "declared_at",
                "replaced_by",
                "report",
                "closed_at",
                "closed_by",
            ],
            Table::Disposals => &[
                "id",
                "key_id",
                "contract_ref",
                "justification",
                "requested_by",
                "requested_at",
                "wait_secs",
                "state",
                "not_before",
                "done_at",
                "record",
                "record_signature",
            ],
            // Not `updated_at`.
            Table::Procedures => &[
                "id",
                "kind",
                "key_id",
                "version",
                "step",
                "state",
                "data",
                "started_by",
                "started_at",
            ],
            Table::ApprovalKeys => &[
                "id",
                "principal",
                "public_key",
                "uri",
                "card",
                "valid_from",
                "valid_until",
                "end_reason",
                "ended_by",
            ],
        }
    }

    /// How many leading columns identify the row.
    fn identity_len(self) -> usize {
        match self {
            Table::KeyVersions => 2,
            Table::KeyCopies => 3,
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
/// encoding (written directly: it is computed on every checked read). A row written since issue
/// 23 also carries `row_seq`, the number of the change that wrote it (format `kms-row/3`); a
/// row tagged before has none and keeps its `kms-row/2` tag until its next change.
pub(crate) fn canonical(table: Table, values: &[Value], row_seq: Option<i64>) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(256);
    field(
        &mut out,
        if row_seq.is_some() {
            b"kms-row/3"
        } else {
            b"kms-row/2"
        },
    );
    field(&mut out, table.name().as_bytes());
    if let Some(seq) = row_seq {
        field(&mut out, b"row_seq");
        field(&mut out, &seq.to_be_bytes());
    }
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
    row: &super::sql::Row,
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
    row_seq: Option<i64>,
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
        .query_row(super::sql::params![table.name(), ident], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? != 0))
        })
        .optional()?)
}

fn check_one(
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

/// The next change number (inside the caller's write transaction, which serialises writers).
fn next_change(conn: &Connection) -> Result<i64, InventoryError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM row_changes")?
        .query_row([], |r| r.get(0))?;
    Ok(last.unwrap_or(0) + 1)
}

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
        stmt.execute(super::sql::params![tag, seq, row.rowid])?;
        log_change(conn, integrity.as_ref(), table, row, seq, false)?;
    }
    Ok(rows.len())
}

/// Append change `seq` of `row` (or its deletion) to the change log, and remember it.
fn log_change(
    conn: &Connection,
    integrity: &dyn RowIntegrity,
    table: Table,
    row: &Tagged,
    seq: i64,
    gone: bool,
) -> Result<(), InventoryError> {
    let ident = identity(table, &row.values);
    conn.prepare_cached("INSERT INTO row_changes (seq, tbl, ident, gone) VALUES (?1, ?2, ?3, ?4)")?
        .execute(super::sql::params![
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

/// The change log's state, as the token's anchor records it: the last change number, how many
/// changes there are up to it, and a SHA-384 chained over them in order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeLogState {
    pub last: i64,
    pub count: i64,
    pub digest: String,
}

impl Inventory {
    /// One UPDATE (`sql`, whose `?1` is `id`) of the `table` row `id = ?1`, checked before and
    /// tagged after, in a transaction of its own; returns how many rows changed.
    pub(crate) fn update_tagged_row(
        &self,
        table: Table,
        id: &str,
        sql: &str,
        params: &[&dyn ToValue],
    ) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let n = guarded(&tx, integrity.as_ref(), table, "id = ?1", &[&id], |tx| {
            Ok(tx.execute(sql, params)?)
        })?;
        tx.commit()?;
        Ok(n)
    }

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

    /// Whether any of `tables` holds a row without a tag (a partial index answers it).
    pub fn any_untagged(&self, tables: &[Table]) -> Result<bool, InventoryError> {
        let conn = self.conn();
        for &t in tables {
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
    pub fn tag_untagged(
        &self,
        tables: &[Table],
        audit: &super::AuditEntry,
    ) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut n = 0;
        for &t in tables {
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
                match check_one(&conn, integrity.as_ref(), t, &row) {
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
        let rows = stmt.query_map(super::sql::params![last, up_to.unwrap_or(i64::MAX)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
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
