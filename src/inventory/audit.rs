//! Audit rows: appended, never updated or deleted by the KMS. Each row carries the SHA-384 of
//! the previous row and its own hash over a canonical form, so an altered, removed or inserted
//! row breaks the chain; checkpoints over the chain head are signed by the audit key on the HSM.

use super::sql::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use sha2::{Digest, Sha384};

use super::{fmt_time, parse_time, Inventory, InventoryError};
use crate::model::{AuditCheckpoint, AuditEntry, AuditFilter, AuditRow, Outcome};

/// `prev_hash` of the first record.
pub const GENESIS: &str = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

/// The canonical form a record's hash covers: every stored column but the two hashes, in this
/// order, as JSON.
#[derive(Serialize)]
struct Canon<'a> {
    seq: i64,
    at: &'a str,
    actor: &'a str,
    host: &'a str,
    action: &'a str,
    key_name: Option<&'a str>,
    key_version: Option<u32>,
    reason: Option<&'a str>,
    outcome: &'a str,
    detail: Option<&'a str>,
    role: Option<&'a str>,
    os_user: Option<&'a str>,
    cert_fingerprint: Option<&'a str>,
    code: Option<&'a str>,
    diff: Option<&'a str>,
    /// Only records written by a configured node carry it, so older records hash as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
}

/// The stored columns of one row, as text, for hashing and verification.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub host: String,
    pub action: String,
    pub key_name: Option<String>,
    pub key_version: Option<u32>,
    pub reason: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub role: Option<String>,
    pub os_user: Option<String>,
    pub cert_fingerprint: Option<String>,
    pub code: Option<String>,
    pub diff: Option<String>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
    pub node: Option<String>,
}

impl StoredRecord {
    /// SHA-384 over `prev_hash` and the canonical form (hex).
    pub fn compute_hash(&self, prev_hash: &str) -> String {
        let canon = Canon {
            seq: self.seq,
            at: &self.at,
            actor: &self.actor,
            host: &self.host,
            action: &self.action,
            key_name: self.key_name.as_deref(),
            key_version: self.key_version,
            reason: self.reason.as_deref(),
            outcome: &self.outcome,
            detail: self.detail.as_deref(),
            role: self.role.as_deref(),
            os_user: self.os_user.as_deref(),
            cert_fingerprint: self.cert_fingerprint.as_deref(),
            code: self.code.as_deref(),
            diff: self.diff.as_deref(),
            node: self.node.as_deref(),
        };
        let mut h = Sha384::new();
        h.update(prev_hash.as_bytes());
        h.update(b"\n");
        h.update(serde_json::to_vec(&canon).unwrap_or_default());
        hex::encode(h.finalize())
    }
}

const COLUMNS: &str = "seq, at, actor, host, action, key_name, key_version, reason, outcome, \
     detail, role, os_user, cert_fingerprint, code, diff, prev_hash, hash, node";

/// Append `e` inside the caller's (immediate) transaction, chained to the last row.
pub(crate) fn insert(conn: &Connection, e: &AuditEntry) -> super::sql::Result<i64> {
    let prev: Option<String> = conn
        .prepare_cached("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .flatten();
    let prev = prev.unwrap_or_else(|| GENESIS.to_owned());
    // The next sequence number, as AUTOINCREMENT would give it (never reused), so the hash can
    // be computed before the row is written and the row written once.
    let last: Option<i64> = if conn.is_postgres() {
        // Rows put in with the column's own sequence count too, as AUTOINCREMENT's would.
        conn.query_row(
            "SELECT GREATEST(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit'), 0),
                             COALESCE((SELECT MAX(seq) FROM audit), 0))",
            [],
            |r| r.get(0),
        )
        .optional()?
    } else {
        conn.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")?
            .query_row([], |r| r.get(0))
            .optional()?
    };
    let record = StoredRecord {
        seq: last.unwrap_or(0) + 1,
        at: fmt_time(e.at),
        actor: e.actor.clone(),
        host: e.host.clone(),
        action: e.action.clone(),
        key_name: e.key_name.clone(),
        key_version: e.key_version,
        reason: e.reason.clone(),
        outcome: e.outcome.as_str().to_owned(),
        detail: e.detail.clone(),
        role: e.role.clone(),
        os_user: e.os_user.clone(),
        cert_fingerprint: e.cert_fingerprint.clone(),
        code: e.code.clone(),
        diff: e.diff.as_ref().map(|d| d.to_string()),
        prev_hash: Some(prev.clone()),
        hash: None,
        node: e.node.clone(),
    };
    let hash = record.compute_hash(&prev);
    conn.prepare_cached(
        "INSERT INTO audit (seq, at, actor, host, action, key_name, key_version, reason, outcome,
             detail, role, os_user, cert_fingerprint, code, diff, prev_hash, hash, node)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        record.seq,
        record.at,
        record.actor,
        record.host,
        record.action,
        record.key_name,
        record.key_version,
        record.reason,
        record.outcome,
        record.detail,
        record.role,
        record.os_user,
        record.cert_fingerprint,
        record.code,
        record.diff,
        prev,
        hash,
        record.node,
    ])?;
    bump_sequence(conn, "audit", "seq", record.seq)?;
    if let Some(t) = &e.tally {
        t.add();
    }
    Ok(record.seq)
}

impl Inventory {
    /// Append one audit row. Callers treat a failure here as failure of the whole operation.
    /// Rows of concurrent operations are group-committed (see `audit_writer`).
    pub fn append_audit(&self, e: &AuditEntry) -> Result<i64, InventoryError> {
        self.audit.append(e)
    }

    /// Audit rows matching `filter`: the newest `limit`, oldest first (or, with `after_seq`,
    /// the first `limit` after it).
    pub fn audit_rows_filtered(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, InventoryError> {
        let conn = self.conn();
        let order = if f.after_seq.is_some() { "ASC" } else { "DESC" };
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit
             WHERE (CAST(?1 AS TEXT) IS NULL OR key_name = ?1) AND (CAST(?2 AS TEXT) IS NULL OR actor = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR at >= ?3) AND (CAST(?4 AS TEXT) IS NULL OR at <= ?4)
               AND (CAST(?5 AS BIGINT) IS NULL OR seq > ?5)
             ORDER BY seq {order} LIMIT ?6"
        ))?;
        let rows = stmt.query_map(
            params![
                f.key_name,
                f.actor,
                f.since.map(fmt_time),
                f.until.map(fmt_time),
                f.after_seq,
                f.limit
            ],
            read_stored,
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(to_row(r?)?);
        }
        if f.after_seq.is_none() {
            out.reverse();
        }
        Ok(out)
    }

    /// The newest `limit` audit rows, optionally for one key, oldest first.
    pub fn audit_rows(
        &self,
        key_name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, InventoryError> {
        self.audit_rows_filtered(&AuditFilter {
            key_name: key_name.map(str::to_owned),
            limit,
            ..Default::default()
        })
    }

    /// Every stored record in sequence order, raw, for chain verification.
    pub fn audit_chain(&self) -> Result<Vec<StoredRecord>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
        let rows = stmt.query_map([], read_stored)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }

    /// The newest record's sequence number and hash.
    pub fn audit_head(&self) -> Result<Option<(i64, String)>, InventoryError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()?
            .map(|(s, h)| (s, h.unwrap_or_default())))
    }

    /// Store checkpoint `c` (format 2, `c.id` chosen with [`Inventory::next_checkpoint_id`])
    /// and append its audit record `record` in one transaction, so a checkpoint never exists
    /// without its record or the other way round. Nothing is stored, and `None` is returned,
    /// when another checkpoint was stored since `c` was prepared (its predecessor or its id are
    /// no longer the latest): the caller prepares and signs again. Returns the record's seq.
    pub fn add_checkpoint(
        &self,
        c: &AuditCheckpoint,
        record: &AuditEntry,
    ) -> Result<Option<i64>, InventoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let last: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM audit_checkpoints",
            [],
            |r| r.get(0),
        )?;
        if last != c.prev_checkpoint_id.unwrap_or(0) || next_checkpoint_id(&tx)? != c.id {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO audit_checkpoints (id, seq, head_hash, at, key_name, key_version,
                 signature, format, prev_checkpoint_id, prev_head_hash, covered)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                c.id,
                c.seq,
                c.head_hash,
                fmt_time(c.at),
                c.key_name,
                c.key_version,
                c.signature,
                c.format,
                c.prev_checkpoint_id,
                c.prev_head_hash,
                c.covered,
            ],
        )?;
        bump_sequence(&tx, "audit_checkpoints", "id", c.id)?;
        let seq = insert(&tx, record)?;
        tx.commit()?;
        Ok(Some(seq))
    }

    /// The id the next checkpoint gets: ids are never reused, also after rows were deleted.
    pub fn next_checkpoint_id(&self) -> Result<i64, InventoryError> {
        Ok(next_checkpoint_id(&self.conn())?)
    }

    /// The first record of the hash chain (`audit_state.chain_from`, set by migration 5): 1,
    /// unless the database holds records from before migration 4, which carry no hash.
    pub fn chain_start(&self) -> Result<i64, InventoryError> {
        Ok(self.audit_state("chain_from")?.max(1))
    }

    /// `(seq, hash)` of the stored records `from..=to`, in order.
    pub fn audit_hashes(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Option<String>)>, InventoryError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT seq, hash FROM audit WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq")?;
        let rows = stmt.query_map([from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }

    pub fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, InventoryError> {
        Ok(self.checkpoints_where("ORDER BY id DESC LIMIT 1")?.pop())
    }

    pub fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, InventoryError> {
        self.checkpoints_where("ORDER BY id")
    }

    fn checkpoints_where(&self, tail: &str) -> Result<Vec<AuditCheckpoint>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, seq, head_hash, at, key_name, key_version, signature, format,
                    prev_checkpoint_id, prev_head_hash, covered
             FROM audit_checkpoints {tail}"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, Vec<u8>>(6)?,
                ),
                (
                    r.get::<_, u32>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ),
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (
                (id, seq, head_hash, at, key_name, key_version, signature),
                (format, prev_checkpoint_id, prev_head_hash, covered),
            ) = r?;
            out.push(AuditCheckpoint {
                id,
                seq,
                head_hash,
                at: parse_time(&at)?,
                key_name,
                key_version,
                signature,
                format,
                prev_checkpoint_id,
                prev_head_hash,
                covered,
            });
        }
        Ok(out)
    }

    /// Whether the trail holds a successful `action` record whose detail starts with `prefix`
    /// (how a grant proves it was created by kms).
    pub fn has_record_starting(&self, action: &str, prefix: &str) -> Result<bool, InventoryError> {
        let conn = self.conn();
        let n: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM audit WHERE action = ?1 AND outcome = 'ok'
                 AND substr(detail, 1, length(CAST(?2 AS TEXT))) = CAST(?2 AS TEXT)",
            )?
            .query_row(params![action, prefix], |r| r.get(0))?;
        Ok(n > 0)
    }

    /// A named counter (e.g. the shipping cursor), 0 when unset.
    pub fn audit_state(&self, name: &str) -> Result<i64, InventoryError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT value FROM audit_state WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    pub fn set_audit_state(&self, name: &str, value: i64) -> Result<(), InventoryError> {
        self.conn().execute(
            "INSERT INTO audit_state (name, value) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }
}

/// One more than the highest checkpoint id ever used (AUTOINCREMENT's counter, or the rows).
fn next_checkpoint_id(conn: &Connection) -> super::sql::Result<i64> {
    // SQLite's two-argument MAX is PostgreSQL's GREATEST.
    let greatest = if conn.is_postgres() {
        "GREATEST"
    } else {
        "MAX"
    };
    conn.query_row(
        &format!(
            "SELECT {greatest}(
                 COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_checkpoints'), 0),
                 COALESCE((SELECT MAX(id) FROM audit_checkpoints), 0)) + 1"
        ),
        [],
        |r| r.get(0),
    )
}

/// On PostgreSQL, keep the `sqlite_sequence` counters SQLite's AUTOINCREMENT keeps by itself
/// (the highest number ever used, so a number is never reused even after rows are removed), and
/// the column's own sequence with it (one statement).
fn bump_sequence(conn: &Connection, table: &str, column: &str, seq: i64) -> super::sql::Result<()> {
    if conn.is_postgres() {
        conn.execute(
            &format!(
                "INSERT INTO sqlite_sequence (name, seq)
                 SELECT ?1, setval(pg_get_serial_sequence('{table}', '{column}'), ?2)
                 ON CONFLICT (name) DO UPDATE SET seq = GREATEST(sqlite_sequence.seq, excluded.seq)"
            ),
            params![table, seq],
        )?;
    }
    Ok(())
}

fn read_stored(r: &Row) -> super::sql::Result<StoredRecord> {
    Ok(StoredRecord {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        host: r.get(3)?,
        action: r.get(4)?,
        key_name: r.get(5)?,
        key_version: r.get(6)?,
        reason: r.get(7)?,
        outcome: r.get(8)?,
        detail: r.get(9)?,
        role: r.get(10)?,
        os_user: r.get(11)?,
        cert_fingerprint: r.get(12)?,
        code: r.get(13)?,
        diff: r.get(14)?,
        prev_hash: r.get(15)?,
        hash: r.get(16)?,
        node: r.get(17)?,
    })
}

fn to_row(s: StoredRecord) -> Result<AuditRow, InventoryError> {
    Ok(AuditRow {
        seq: s.seq,
        entry: AuditEntry {
            tally: None,
            at: parse_time(&s.at)?,
            actor: s.actor,
            host: s.host,
            action: s.action,
            key_name: s.key_name,
            key_version: s.key_version,
            reason: s.reason,
            outcome: match s.outcome.as_str() {
                "ok" => Outcome::Ok,
                "denied" => Outcome::Denied,
                _ => Outcome::Error,
            },
            detail: s.detail,
            role: s.role,
            os_user: s.os_user,
            cert_fingerprint: s.cert_fingerprint,
            code: s.code,
            diff: s.diff.and_then(|d| serde_json::from_str(&d).ok()),
            node: s.node,
        },
        prev_hash: s.prev_hash,
        hash: s.hash,
    })
}
