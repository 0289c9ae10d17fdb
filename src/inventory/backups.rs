//! Backup pairings (key ceremonies), backup copies of key versions and their drills.

use std::path::Path;

use super::sql::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::integrity::{check_where, guarded, tag_where, Table};
use super::{audit, fmt_time, parse_time, Inventory, InventoryError};
use crate::model::ObjectId;
use crate::model::{AuditEntry, BackupPair, KeyCopy};

/// A version its token says can never be wrapped for a backup copy (`kms backup status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NeverCopyable {
    pub key: String,
    pub version: u32,
    pub token_serial: String,
    /// CKA_ID (hex).
    pub object_id: String,
    /// `not-extractable` or `not-wrappable`.
    pub code: String,
    /// The token's answer, in words.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// A pairing about to be recorded (its id is assigned by the inventory).
#[derive(Debug, Clone)]
pub struct NewBackupPair {
    pub from_token: String,
    pub from_serial: String,
    pub to_token: String,
    pub to_serial: String,
    pub kek_id: ObjectId,
    pub transport_id: ObjectId,
    pub created_by: String,
}

const PAIR_COLUMNS: &str = "id, from_token, from_serial, to_token, to_serial, kek_id, \
     transport_id, created_at, created_by";
const COPY_COLUMNS: &str = "token, token_label, token_serial, object_id, pair_id, copied_at, \
     verified_at, drill_failed_at, drill_error";
/// How many columns COPY_COLUMNS names (a row's integrity tail starts after them).
const COPY_COLUMN_COUNT: usize = 9;

impl Inventory {
    /// Record a finished key ceremony together with its audit record.
    pub fn insert_backup_pair(
        &self,
        pair: &NewBackupPair,
        now: OffsetDateTime,
        entry: &AuditEntry,
    ) -> Result<BackupPair, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let id: i64 = tx.query_row(
            "INSERT INTO backup_pairs (from_token, from_serial, to_token, to_serial, kek_id,
                transport_id, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            params![
                pair.from_token,
                pair.from_serial,
                pair.to_token,
                pair.to_serial,
                pair.kek_id.to_hex(),
                pair.transport_id.to_hex(),
                fmt_time(now),
                pair.created_by
            ],
            |r| r.get(0),
        )?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::BackupPairs,
            "id = ?1",
            &[&id],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(BackupPair {
            id,
            from_token: pair.from_token.clone(),
            from_serial: pair.from_serial.clone(),
            to_token: pair.to_token.clone(),
            to_serial: pair.to_serial.clone(),
            kek_id: pair.kek_id.clone(),
            transport_id: pair.transport_id.clone(),
            created_at: now,
            created_by: pair.created_by.clone(),
        })
    }

    /// Every pairing, oldest first.
    pub fn backup_pairs(&self) -> Result<Vec<BackupPair>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        check_where(&conn, integrity.as_ref(), Table::BackupPairs, "1 = 1", &[])?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {PAIR_COLUMNS} FROM backup_pairs ORDER BY id"
        ))?;
        let rows = stmt.query_map([], read_pair)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// The newest pairing from the token with serial `from_serial` to the token with serial
    /// `to_serial`.
    pub fn backup_pair(
        &self,
        from_serial: &str,
        to_serial: &str,
    ) -> Result<Option<BackupPair>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let row = conn
            .prepare_cached(&format!(
                "SELECT {PAIR_COLUMNS} FROM backup_pairs WHERE from_serial = ?1 AND to_serial = ?2
                 ORDER BY id DESC LIMIT 1"
            ))?
            .query_row([from_serial, to_serial], read_pair)
            .optional()?
            .transpose()?;
        if let Some(p) = &row {
            check_where(
                &conn,
                integrity.as_ref(),
                Table::BackupPairs,
                "id = ?1",
                &[&p.id],
            )?;
        }
        Ok(row)
    }

    /// Say why a version is not active (yet), with its audit record.
    pub fn set_pending_reason(
        &self,
        key_id: &str,
        version: u32,
        reason: &str,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE key_versions SET pending_reason = ?3
             WHERE key_id = ?1 AND version = ?2 AND state = 'pending'",
            params![key_id, version, reason],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Record a backup copy of an active version (made by `kms backup sync` or a restore).
    pub fn record_copy(
        &self,
        key_id: &str,
        version: u32,
        copy: &KeyCopy,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        upsert_copy(&tx, integrity.as_ref(), key_id, version, copy)?;
        tx.execute(
            "DELETE FROM never_copyable WHERE key_id = ?1 AND version = ?2",
            params![key_id, version],
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Remember that the token answered that a version can never be copied, with its audit
    /// record, the first time only. Returns whether this call recorded it (false: already known).
    #[allow(clippy::too_many_arguments)]
    pub fn record_never_copyable(
        &self,
        key_id: &str,
        version: u32,
        token_serial: &str,
        object_id: &ObjectId,
        code: &str,
        reason: &str,
        now: OffsetDateTime,
        entry: &AuditEntry,
    ) -> Result<bool, InventoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let added = tx.execute(
            "INSERT INTO never_copyable (key_id, version, token_serial, object_id, code, reason,
                recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            params![
                key_id,
                version,
                token_serial,
                object_id.to_hex(),
                code,
                reason,
                fmt_time(now)
            ],
        )?;
        if added == 0 {
            return Ok(false);
        }
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(true)
    }

    /// Every version recorded as never copyable, by key name and version.
    pub fn never_copyable(&self) -> Result<Vec<NeverCopyable>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT k.name, n.version, n.token_serial, n.object_id, n.code, n.reason,
                n.recorded_at
             FROM never_copyable n JOIN keys k ON k.id = n.key_id
             ORDER BY k.name, n.version",
        )?;
        let rows = stmt.query_map([], |r| {
            let at: String = r.get(6)?;
            let id: String = r.get(3)?;
            Ok((
                NeverCopyable {
                    key: r.get(0)?,
                    version: r.get(1)?,
                    token_serial: r.get(2)?,
                    object_id: id.clone(),
                    code: r.get(4)?,
                    reason: r.get(5)?,
                    recorded_at: OffsetDateTime::UNIX_EPOCH,
                },
                at,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (mut n, at) = r?;
            n.recorded_at = parse_time(&at)?;
            out.push(n);
        }
        Ok(out)
    }

    /// Forget a never-copyable finding once a copy exists after all (the token changed its mind,
    /// e.g. a newer token that can wrap the type).
    pub fn forget_never_copyable(&self, key_id: &str, version: u32) -> Result<(), InventoryError> {
        self.conn().execute(
            "DELETE FROM never_copyable WHERE key_id = ?1 AND version = ?2",
            params![key_id, version],
        )?;
        Ok(())
    }

    /// Record a restore drill's outcome on the copy held by the token with serial `serial`.
    pub fn record_drill(
        &self,
        key_id: &str,
        version: u32,
        serial: &str,
        outcome: Result<(), &str>,
        now: OffsetDateTime,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        match outcome {
            Ok(()) => tx.execute(
                "UPDATE key_copies SET verified_at = ?4, drill_failed_at = NULL, drill_error = NULL
                 WHERE key_id = ?1 AND version = ?2 AND token_serial = ?3",
                params![key_id, version, serial, fmt_time(now)],
            )?,
            Err(why) => tx.execute(
                "UPDATE key_copies SET drill_failed_at = ?4, drill_error = ?5
                 WHERE key_id = ?1 AND version = ?2 AND token_serial = ?3",
                params![key_id, version, serial, fmt_time(now), why],
            )?,
        };
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// After a restore: the version now lives on another token (same CKA_ID); the inventory
    /// follows, with the audit record in the same transaction.
    pub fn relocate_version(
        &self,
        key_id: &str,
        version: u32,
        token: &str,
        token_label: &str,
        token_serial: &str,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        guarded(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1 AND version = ?2",
            &[&key_id, &version],
            |tx| {
                Ok(tx.execute(
                    "UPDATE key_versions SET token = ?3, token_label = ?4, token_serial = ?5
                 WHERE key_id = ?1 AND version = ?2",
                    params![key_id, version, token, token_label, token_serial],
                )?)
            },
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// A consistent copy of the whole inventory written to `dest` with SQLite's online backup,
    /// while other connections keep working.
    pub fn snapshot_to(&self, dest: &Path) -> Result<(), InventoryError> {
        if self.conn().is_postgres() {
            return self.pg_snapshot_to(dest);
        }
        let conn = self.conn();
        conn.sqlite()
            .ok_or_else(sqlite_only)?
            .backup(rusqlite::MAIN_DB, dest, None)?;
        Ok(())
    }

    /// Replace this inventory's content with the database at `src` (SQLite online backup in the
    /// other direction). The caller has checked `src` (authenticated, a KMS inventory).
    pub fn restore_from(&self, src: &Path) -> Result<(), InventoryError> {
        if self.conn().is_postgres() {
            return self.pg_restore_from(src);
        }
        let mut conn = self.conn();
        conn.sqlite_mut().ok_or_else(sqlite_only)?.restore(
            rusqlite::MAIN_DB,
            src,
            None::<fn(rusqlite::backup::Progress)>,
        )?;
        Ok(())
    }
}

/// The offline backup file carries an SQLite snapshot of the inventory; a PostgreSQL inventory
/// is backed up with PostgreSQL's own tools.
fn sqlite_only() -> InventoryError {
    InventoryError::Conflict(
        "the inventory is on PostgreSQL: back it up with pg_dump (and its replicas); the backup file's inventory snapshot is for an SQLite inventory".into(),
    )
}

/// Insert or replace a copy's row, checking the row it replaces and tagging the result.
pub(super) fn upsert_copy(
    conn: &Connection,
    integrity: Option<&std::sync::Arc<dyn super::integrity::RowIntegrity>>,
    key_id: &str,
    version: u32,
    c: &KeyCopy,
) -> Result<(), InventoryError> {
    let serial = c.token_serial.as_str();
    guarded(
        conn,
        integrity,
        Table::KeyCopies,
        "key_id = ?1 AND version = ?2 AND token_serial = ?3",
        &[&key_id, &version, &serial],
        |conn| upsert_copy_row(conn, key_id, version, c).map_err(InventoryError::from),
    )
}

fn upsert_copy_row(
    conn: &Connection,
    key_id: &str,
    version: u32,
    c: &KeyCopy,
) -> super::sql::Result<()> {
    conn.execute(
        "INSERT INTO key_copies (key_id, version, token, token_label, token_serial, object_id,
            pair_id, copied_at, verified_at, drill_failed_at, drill_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL)
         ON CONFLICT (key_id, version, token_serial) DO UPDATE SET
            token = excluded.token, token_label = excluded.token_label,
            object_id = excluded.object_id, pair_id = excluded.pair_id,
            copied_at = excluded.copied_at, verified_at = excluded.verified_at,
            drill_failed_at = NULL, drill_error = NULL",
        params![
            key_id,
            version,
            c.token,
            c.token_label,
            c.token_serial,
            c.object_id.to_hex(),
            c.pair_id,
            fmt_time(c.copied_at),
            c.verified_at.map(fmt_time),
        ],
    )?;
    Ok(())
}

/// A version's copies; with `integrity`, each row's tag is checked in the same read.
pub(super) fn copies_of(
    conn: &Connection,
    integrity: Option<&std::sync::Arc<dyn super::integrity::RowIntegrity>>,
    key_id: &str,
    version: u32,
) -> Result<Vec<KeyCopy>, InventoryError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COPY_COLUMNS}{} FROM key_copies WHERE key_id = ?1 AND version = ?2 ORDER BY token",
        super::integrity::tail(Table::KeyCopies, "")
    ))?;
    let rows = stmt.query_map(params![key_id, version], |r| {
        Ok(
            super::integrity::check_tail(conn, integrity, Table::KeyCopies, r, COPY_COLUMN_COUNT)
                .and_then(|()| read_copy(r)?),
        )
    })?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

type RowResult<T> = super::sql::Result<Result<T, InventoryError>>;

fn object_id(hex_id: &str, what: &str) -> Result<ObjectId, InventoryError> {
    hex::decode(hex_id)
        .map(ObjectId)
        .map_err(|e| InventoryError::BadRow(format!("{what}: {e}")))
}

fn read_pair(r: &Row) -> RowResult<BackupPair> {
    let kek: String = r.get(5)?;
    let transport: String = r.get(6)?;
    let created_at: String = r.get(7)?;
    let (id, from_token, from_serial, to_token, to_serial, created_by) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(8)?,
    );
    Ok((|| {
        Ok(BackupPair {
            id,
            from_token,
            from_serial,
            to_token,
            to_serial,
            kek_id: object_id(&kek, "kek_id")?,
            transport_id: object_id(&transport, "transport_id")?,
            created_at: parse_time(&created_at)?,
            created_by,
        })
    })())
}

fn read_copy(r: &Row) -> RowResult<KeyCopy> {
    let oid: String = r.get(3)?;
    let copied_at: String = r.get(5)?;
    let verified_at: Option<String> = r.get(6)?;
    let failed_at: Option<String> = r.get(7)?;
    let (token, token_label, token_serial, pair_id, drill_error) =
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(4)?, r.get(8)?);
    Ok((|| {
        Ok(KeyCopy {
            token,
            token_label,
            token_serial,
            object_id: object_id(&oid, "object_id")?,
            pair_id,
            copied_at: parse_time(&copied_at)?,
            verified_at: verified_at.as_deref().map(parse_time).transpose()?,
            drill_failed_at: failed_at.as_deref().map(parse_time).transpose()?,
            drill_error,
        })
    })())
}
