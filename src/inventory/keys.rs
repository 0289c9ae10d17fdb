//! Key rows and their versions.

use std::collections::BTreeMap;

use super::sql::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::integrity::{guarded, tag_where, Table};
use super::{audit, fmt_time, parse_time, Inventory, InventoryError};
use crate::duration::HumanDuration;
use crate::model::{AuditEntry, KeyCopy, KeyFilter, KeyRecord, KeyVersion, NewKey};
use crate::model::{ObjectId, VersionState};

/// Where a new version will live, recorded before the token is touched.
#[derive(Debug, Clone)]
pub struct PendingVersion {
    pub token: String,
    pub token_label: String,
    pub token_serial: String,
    pub object_id: ObjectId,
}

const KEY_COLUMNS: &str = "id, name, key_type, owner, classification, usage, purpose, handling, \
     disposal, expires, rotate_every_secs, labels, created_by, created_at, updated_at, \
     reencrypt_window_secs, protect_for_secs, process_for_secs, disposed_at, signature, \
     legacy_encrypt, origin, weak_reason, migrated_to";
const VERSION_COLUMNS: &str = "version, token, token_label, token_serial, object_id, state, \
     public_key, created_at, activated_at, destroyed_at, pending_reason, deactivated_at, \
     destroy_after, compromised_at";
/// How many columns KEY_COLUMNS names (a row's integrity tail starts after them).
const KEY_COLUMN_COUNT: usize = 24;
/// How many columns VERSION_COLUMNS names (a row's integrity tail starts after them).
const VERSION_COLUMN_COUNT: usize = 14;

impl Inventory {
    /// Record the intent to create `key` as version 1 on a token, state `pending`, and return its
    /// inventory ID. A duplicate name is refused here, before anything touches a token.
    pub fn insert_pending_key(
        &self,
        key: &NewKey,
        version: &PendingVersion,
        now: OffsetDateTime,
        intent: &AuditEntry,
    ) -> Result<String, InventoryError> {
        let id = uuid::Uuid::new_v4().to_string();
        let labels = serde_json::to_string(&key.labels)
            .map_err(|e| InventoryError::BadRow(e.to_string()))?;
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            &format!(
                "INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16, ?17, NULL, ?18, ?19, ?20, ?21, NULL)"
            ),
            params![
                id,
                key.name,
                key.key_type.as_str(),
                key.owner,
                key.classification.as_str(),
                key.usage.to_string(),
                key.purpose,
                key.handling,
                key.disposal,
                key.expires.map(|d| d.to_string()),
                i64::try_from(key.rotate_every.as_secs())
                    .map_err(|_| InventoryError::BadRow("rotation period out of range".into()))?,
                labels,
                key.created_by,
                fmt_time(now),
                i64::try_from(key.reencrypt_window_secs)
                    .map_err(|_| InventoryError::BadRow("re-encryption window out of range".into()))?,
                key.protect_for.map(|d| d.as_secs() as i64),
                key.process_for.map(|d| d.as_secs() as i64),
                key.signature.map(|s| s.as_str()),
                i64::from(key.allow_legacy_encrypt),
                key.origin.as_str(),
                key.weak_reason,
            ],
        );
        match inserted {
            Err(e) if e.is_constraint_violation() => {
                return Err(InventoryError::DuplicateName(key.name.clone()))
            }
            other => other?,
        };
        insert_version(&tx, &id, 1, version, now)?;
        tag_where(&tx, integrity.as_ref(), Table::Keys, "id = ?1", &[&id])?;
        tag_where(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1",
            &[&id],
        )?;
        audit::insert(&tx, intent)?;
        tx.commit()?;
        Ok(id)
    }

    /// Make a pending version active, storing its public key, and write the audit row in the same
    /// transaction: the key is usable only once its creation is on the record.
    pub fn activate_version(
        &self,
        key_id: &str,
        version: u32,
        public_key: Option<&[u8]>,
        copy: Option<&KeyCopy>,
        now: OffsetDateTime,
        audit_entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let changed = guarded(
            &tx,
            integrity.as_ref(),
            Table::KeyVersions,
            "key_id = ?1 AND version = ?2",
            &[&key_id, &version],
            |tx| {
                Ok(tx.execute(
                    "UPDATE key_versions SET state = 'active', public_key = ?3, activated_at = ?4,
                        pending_reason = NULL
                 WHERE key_id = ?1 AND version = ?2 AND state = 'pending'",
                    params![key_id, version, public_key, fmt_time(now)],
                )?)
            },
        )?;
        if changed != 1 {
            return Err(InventoryError::BadRow(format!(
                "version {version} of key {key_id} is not pending"
            )));
        }
        if let Some(copy) = copy {
            super::backups::upsert_copy(&tx, integrity.as_ref(), key_id, version, copy)?;
        }
        tx.execute(
            "UPDATE keys SET updated_at = ?2 WHERE id = ?1",
            params![key_id, fmt_time(now)],
        )?;
        audit::insert(&tx, audit_entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Remove a key whose creation failed before it became active (only pending versions),
    /// with any grants, requests and their signatures that named it (they could never be used).
    /// Returns how many grants were removed.
    pub fn delete_pending_key(&self, key_id: &str) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let integrity = integrity.as_ref();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let active: i64 = tx.query_row(
            "SELECT COUNT(*) FROM key_versions WHERE key_id = ?1 AND state <> 'pending'",
            [key_id],
            |r| r.get(0),
        )?;
        let mut grants = 0;
        if active == 0 {
            use super::integrity::record_deleted;
            record_deleted(
                &tx,
                integrity,
                Table::Signatures,
                "subject IN (SELECT id FROM access_requests WHERE key_id = ?1)
                    OR subject IN (SELECT id FROM grants WHERE key_id = ?1)",
                &[&key_id],
            )?;
            record_deleted(&tx, integrity, Table::Grants, "key_id = ?1", &[&key_id])?;
            record_deleted(&tx, integrity, Table::Requests, "key_id = ?1", &[&key_id])?;
            record_deleted(&tx, integrity, Table::KeyCopies, "key_id = ?1", &[&key_id])?;
            record_deleted(
                &tx,
                integrity,
                Table::KeyVersions,
                "key_id = ?1",
                &[&key_id],
            )?;
            record_deleted(&tx, integrity, Table::Keys, "id = ?1", &[&key_id])?;
            tx.execute(
                "DELETE FROM signatures WHERE subject IN (SELECT id FROM access_requests WHERE key_id = ?1)
                    OR subject IN (SELECT id FROM grants WHERE key_id = ?1)",
                [key_id],
            )?;
            grants = tx.execute("DELETE FROM grants WHERE key_id = ?1", [key_id])?;
            tx.execute("DELETE FROM access_requests WHERE key_id = ?1", [key_id])?;
            tx.execute("DELETE FROM key_versions WHERE key_id = ?1", [key_id])?;
            tx.execute("DELETE FROM keys WHERE id = ?1", [key_id])?;
        }
        tx.commit()?;
        Ok(grants)
    }

    /// Record the AES successor a legacy key's data moves to, with its audit row.
    pub fn set_migrated_to(
        &self,
        key_id: &str,
        successor: &str,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        guarded(
            &tx,
            integrity.as_ref(),
            Table::Keys,
            "id = ?1",
            &[&key_id],
            |tx| {
                Ok(tx.execute(
                    "UPDATE keys SET migrated_to = ?2, updated_at = ?3 WHERE id = ?1",
                    params![key_id, successor, fmt_time(OffsetDateTime::now_utc())],
                )?)
            },
        )?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// Set (or, with `None`, remove) one free label of a key, with its audit row.
    pub fn set_label(
        &self,
        key_id: &str,
        label: &str,
        value: Option<&str>,
        entry: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        super::integrity::check_where(&tx, integrity.as_ref(), Table::Keys, "id = ?1", &[&key_id])?;
        let labels: Option<String> = tx
            .query_row("SELECT labels FROM keys WHERE id = ?1", [key_id], |r| {
                r.get(0)
            })
            .optional()?;
        let labels = labels.ok_or_else(|| InventoryError::NoSuchKey(key_id.to_owned()))?;
        let mut map: BTreeMap<String, String> =
            serde_json::from_str(&labels).map_err(|e| bad("labels", e))?;
        match value {
            Some(v) => map.insert(label.to_owned(), v.to_owned()),
            None => map.remove(label),
        };
        let labels =
            serde_json::to_string(&map).map_err(|e| InventoryError::BadRow(e.to_string()))?;
        tx.execute(
            "UPDATE keys SET labels = ?2, updated_at = ?3 WHERE id = ?1",
            params![key_id, labels, fmt_time(OffsetDateTime::now_utc())],
        )?;
        tag_where(&tx, integrity.as_ref(), Table::Keys, "id = ?1", &[&key_id])?;
        audit::insert(&tx, entry)?;
        tx.commit()?;
        Ok(())
    }

    /// The name of the key with inventory ID `id`, if there is one.
    pub fn key_name_by_id(&self, id: &str) -> Result<Option<String>, InventoryError> {
        let conn = self.conn();
        let name: Option<String> = conn
            .prepare_cached("SELECT name FROM keys WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        Ok(name)
    }

    /// The key named `name`, with all its versions.
    pub fn key(&self, name: &str) -> Result<KeyRecord, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let row = conn
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS}{} FROM keys WHERE name = ?1",
                super::integrity::tail(Table::Keys, "")
            ))?
            .query_row([name], |r| {
                Ok(super::integrity::check_tail(
                    &conn,
                    integrity.as_ref(),
                    Table::Keys,
                    r,
                    KEY_COLUMN_COUNT,
                )
                .and_then(|()| read_key(r)?))
            })
            .optional()?;
        let mut key = row.ok_or_else(|| InventoryError::NoSuchKey(name.to_owned()))??;
        key.versions = versions(&conn, &key.id, integrity.as_ref())?;
        Ok(key)
    }

    /// Every key matching `filter`, by name. Each row (key, versions, copies) is checked like
    /// [`Inventory::key`]: the engine acts on listings too (repair, reconcile, the scheduler,
    /// backup sync), so one forged row fails the listing, named.
    pub fn keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {KEY_COLUMNS}{} FROM keys
             WHERE (CAST(?1 AS TEXT) IS NULL OR owner = ?1) AND (CAST(?2 AS TEXT) IS NULL OR classification = ?2)
             ORDER BY name",
            super::integrity::tail(Table::Keys, "")
        ))?;
        let rows = stmt.query_map(
            params![filter.owner, filter.classification.map(|c| c.as_str())],
            |r| {
                Ok(super::integrity::check_tail(
                    &conn,
                    integrity.as_ref(),
                    Table::Keys,
                    r,
                    KEY_COLUMN_COUNT,
                )
                .and_then(|()| read_key(r)?))
            },
        )?;
        let mut out = Vec::new();
        for r in rows {
            let mut key = r??;
            key.versions = versions(&conn, &key.id, integrity.as_ref())?;
            out.push(key);
        }
        Ok(out)
    }
}

fn insert_version(
    conn: &Connection,
    key_id: &str,
    version: u32,
    v: &PendingVersion,
    now: OffsetDateTime,
) -> super::sql::Result<()> {
    conn.execute(
        "INSERT INTO key_versions (key_id, version, token, token_label, token_serial, object_id, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
        params![
            key_id,
            version,
            v.token,
            v.token_label,
            v.token_serial,
            v.object_id.to_hex(),
            fmt_time(now)
        ],
    )?;
    Ok(())
}

/// A key's versions; with `integrity`, each row's tag is checked in the same read.
fn versions(
    conn: &Connection,
    key_id: &str,
    integrity: Option<&std::sync::Arc<dyn super::integrity::RowIntegrity>>,
) -> Result<Vec<KeyVersion>, InventoryError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS}{} FROM key_versions WHERE key_id = ?1 ORDER BY version",
        super::integrity::tail(Table::KeyVersions, "")
    ))?;
    let rows = stmt.query_map([key_id], |r| {
        Ok(super::integrity::check_tail(
            conn,
            integrity,
            Table::KeyVersions,
            r,
            VERSION_COLUMN_COUNT,
        )
        .and_then(|()| read_version(r)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let mut v = r??;
        v.copies = super::backups::copies_of(conn, integrity, key_id, v.version)?;
        out.push(v);
    }
    Ok(out)
}

type RowResult<T> = super::sql::Result<Result<T, InventoryError>>;

fn bad(what: &str, e: impl std::fmt::Display) -> InventoryError {
    InventoryError::BadRow(format!("{what}: {e}"))
}

fn read_key(r: &Row) -> RowResult<KeyRecord> {
    let key_type: String = r.get(2)?;
    let classification: String = r.get(4)?;
    let usage: String = r.get(5)?;
    let expires: Option<String> = r.get(9)?;
    let rotate: i64 = r.get(10)?;
    let labels: String = r.get(11)?;
    let created_at: String = r.get(13)?;
    let updated_at: String = r.get(14)?;
    let window: i64 = r.get(15)?;
    let protect_for: Option<i64> = r.get(16)?;
    let process_for: Option<i64> = r.get(17)?;
    let disposed_at: Option<String> = r.get(18)?;
    let signature: Option<String> = r.get(19)?;
    let legacy_encrypt: i64 = r.get(20)?;
    let origin: String = r.get(21)?;
    let weak_reason: Option<String> = r.get(22)?;
    let migrated_to: Option<String> = r.get(23)?;
    let (id, name, owner, purpose, handling, disposal, created_by): (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    ) = (
        r.get(0)?,
        r.get(1)?,
        r.get(3)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(12)?,
    );
    let build = || -> Result<KeyRecord, InventoryError> {
        let key_type: crate::model::KeyType = key_type.parse().map_err(|e| bad("key_type", e))?;
        let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
        Ok(KeyRecord {
            id,
            name,
            key_type,
            kind: if key_type.is_symmetric() {
                "symmetric"
            } else {
                "asymmetric"
            },
            owner,
            classification: classification
                .parse()
                .map_err(|e| bad("classification", e))?,
            usage: usage.parse().map_err(|e| bad("usage", e))?,
            purpose,
            handling,
            disposal,
            expires: expires
                .map(|d| time::Date::parse(&d, date_fmt))
                .transpose()
                .map_err(|e| bad("expires", e))?,
            rotate_every: u64::try_from(rotate)
                .ok()
                .and_then(HumanDuration::from_secs)
                .ok_or_else(|| bad("rotate_every", rotate))?,
            labels: serde_json::from_str::<BTreeMap<String, String>>(&labels)
                .map_err(|e| bad("labels", e))?,
            created_by,
            created_at: parse_time(&created_at)?,
            updated_at: parse_time(&updated_at)?,
            reencrypt_window_secs: u64::try_from(window).unwrap_or(0),
            protect_for: protect_for
                .and_then(|s| u64::try_from(s).ok())
                .and_then(HumanDuration::from_secs),
            process_for: process_for
                .and_then(|s| u64::try_from(s).ok())
                .and_then(HumanDuration::from_secs),
            disposed_at: disposed_at.as_deref().map(parse_time).transpose()?,
            signature: signature
                .map(|s| s.parse())
                .transpose()
                .map_err(|e| bad("signature", e))?,
            allow_legacy_encrypt: legacy_encrypt != 0,
            origin: origin.parse().map_err(|e| bad("origin", e))?,
            weak_reason,
            migrated_to,
            versions: Vec::new(),
        })
    };
    Ok(build())
}

fn read_version(r: &Row) -> RowResult<KeyVersion> {
    let object_id: String = r.get(4)?;
    let state: String = r.get(5)?;
    let created_at: String = r.get(7)?;
    let activated_at: Option<String> = r.get(8)?;
    let destroyed_at: Option<String> = r.get(9)?;
    let pending_reason: Option<String> = r.get(10)?;
    let deactivated_at: Option<String> = r.get(11)?;
    let destroy_after: Option<String> = r.get(12)?;
    let compromised_at: Option<String> = r.get(13)?;
    let (version, token, token_label, token_serial, public_key): (
        u32,
        String,
        String,
        String,
        Option<Vec<u8>>,
    ) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(6)?);
    let build = || -> Result<KeyVersion, InventoryError> {
        Ok(KeyVersion {
            version,
            token,
            token_label,
            token_serial,
            object_id: ObjectId(hex::decode(&object_id).map_err(|e| bad("object_id", e))?),
            state: state.parse::<VersionState>().map_err(|e| bad("state", e))?,
            public_key,
            created_at: parse_time(&created_at)?,
            activated_at: activated_at.as_deref().map(parse_time).transpose()?,
            destroyed_at: destroyed_at.as_deref().map(parse_time).transpose()?,
            pending_reason,
            copies: Vec::new(),
            deactivated_at: deactivated_at.as_deref().map(parse_time).transpose()?,
            destroy_after: destroy_after.as_deref().map(parse_time).transpose()?,
            compromised_at: compromised_at.as_deref().map(parse_time).transpose()?,
        })
    };
    Ok(build())
}
