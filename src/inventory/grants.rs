//! Grants: which principal may do what with which key, until when; and their reviews.

use super::sql::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::integrity::{guarded, Table};
use super::{fmt_time, parse_time, Inventory, InventoryError};
use crate::model::{AuditEntry, Grant, GrantFilter, NewGrant};

pub(super) const SELECT: &str =
    "SELECT g.id, g.principal, k.name, g.ops, g.not_before, g.not_after, \
     g.ticket, g.justification, g.created_by, g.created_at, g.revoked_at, g.revoked_by, \
     g.revoke_reason, g.request_id, g.review_due, g.break_glass \
     FROM grants g JOIN keys k ON k.id = g.key_id";

impl Inventory {
    /// Record a grant. The principal and the key must exist.
    /// Record a grant and its audit record in one transaction. `g.id` names it.
    pub fn add_grant(
        &self,
        g: &NewGrant,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Grant, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let id = insert_grant(&tx, integrity.as_ref(), g, now)?;
        super::audit::insert(&tx, audit)?;
        let made = grant_on(&tx, &id)?;
        tx.commit()?;
        Ok(made)
    }

    pub fn grant(&self, id: &str) -> Result<Grant, InventoryError> {
        let conn = self.conn();
        grant_on(&conn, id)
    }

    /// Grants matching `filter`; without `all`, only those in force at `now`.
    pub fn grants(
        &self,
        filter: &GrantFilter,
        now: OffsetDateTime,
    ) -> Result<Vec<Grant>, InventoryError> {
        let conn = self.conn();
        // The hot path (a key use: this principal, this key) has its own statement, so SQLite
        // can use the indexes; `?1 IS NULL OR …` would make it scan every grant.
        let sql = match (&filter.principal, &filter.key_name) {
            (Some(_), Some(_)) => format!(
                "{SELECT} WHERE g.principal = ?1 AND k.name = ?2 ORDER BY g.created_at, g.id"
            ),
            _ => format!(
                "{SELECT} WHERE (CAST(?1 AS TEXT) IS NULL OR g.principal = ?1) AND (CAST(?2 AS TEXT) IS NULL OR k.name = ?2)
                 ORDER BY g.created_at, g.id"
            ),
        };
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![filter.principal, filter.key_name], read)?;
        let mut out = Vec::new();
        for r in rows {
            let g = r??;
            if filter.all || g.is_active(now) {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Revoke a grant now. Revoking twice is refused.
    pub fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Grant, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let n = guarded(
            &tx,
            integrity.as_ref(),
            Table::Grants,
            "id = ?1",
            &[&id],
            |tx| {
                Ok(tx.execute(
                    "UPDATE grants SET revoked_at = ?2, revoked_by = ?3, revoke_reason = ?4
                 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, fmt_time(now), by, reason],
                )?)
            },
        )?;
        let g = grant_on(&tx, id)?;
        if n == 0 {
            return Err(InventoryError::Conflict(format!(
                "grant {id} is already revoked"
            )));
        }
        super::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(g)
    }
}

/// A fresh grant id.
pub fn new_grant_id() -> String {
    format!("g-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Insert a grant inside the caller's transaction; returns its id.
pub(crate) fn insert_grant(
    conn: &Connection,
    integrity: Option<&std::sync::Arc<dyn super::integrity::RowIntegrity>>,
    g: &NewGrant,
    now: OffsetDateTime,
) -> Result<String, InventoryError> {
    let id = g.id.clone();
    let key_id: Option<String> = conn
        .query_row("SELECT id FROM keys WHERE name = ?1", [&g.key_name], |r| {
            r.get(0)
        })
        .optional()?;
    let key_id = key_id.ok_or_else(|| InventoryError::NoSuchKey(g.key_name.clone()))?;
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM principals WHERE name = ?1",
            [&g.principal],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Err(InventoryError::NoSuchPrincipal(g.principal.clone()));
    }
    conn.execute(
        "INSERT INTO grants (id, principal, key_id, ops, not_before, not_after, ticket,
             justification, created_by, created_at, request_id, review_due, break_glass)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            id,
            g.principal,
            key_id,
            g.ops.to_string(),
            fmt_time(g.not_before),
            fmt_time(g.not_after),
            g.ticket,
            g.justification,
            g.created_by,
            fmt_time(now),
            g.request_id,
            g.review_due.map(fmt_time),
            g.break_glass,
        ],
    )?;
    super::integrity::tag_where(
        conn,
        integrity,
        super::integrity::Table::Grants,
        "id = ?1",
        &[&id],
    )?;
    Ok(id)
}

pub(crate) fn grant_on(conn: &Connection, id: &str) -> Result<Grant, InventoryError> {
    conn.query_row(&format!("{SELECT} WHERE g.id = ?1"), [id], read)
        .optional()?
        .ok_or_else(|| InventoryError::NoSuchGrant(id.to_owned()))?
}

fn read(r: &Row) -> super::sql::Result<Result<Grant, InventoryError>> {
    let ops: String = r.get(3)?;
    let times: [Option<String>; 5] = [r.get(4)?, r.get(5)?, r.get(9)?, r.get(10)?, r.get(14)?];
    let (id, principal, key_name, ticket, justification, created_by, revoked_by, revoke_reason) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(11)?,
        r.get(12)?,
    );
    let (request_id, break_glass): (Option<String>, bool) = (r.get(13)?, r.get(15)?);
    Ok((|| {
        let t = |i: usize| -> Result<Option<OffsetDateTime>, InventoryError> {
            times[i].as_deref().map(parse_time).transpose()
        };
        let required = |i: usize| -> Result<OffsetDateTime, InventoryError> {
            t(i)?.ok_or_else(|| InventoryError::BadRow("grant time missing".into()))
        };
        Ok(Grant {
            id,
            principal,
            key_name,
            ops: ops
                .parse()
                .map_err(|e| InventoryError::BadRow(format!("grant ops: {e}")))?,
            not_before: required(0)?,
            not_after: required(1)?,
            ticket,
            justification,
            created_by,
            created_at: required(2)?,
            revoked_at: t(3)?,
            revoked_by,
            revoke_reason,
            request_id,
            review_due: t(4)?,
            break_glass,
        })
    })())
}
