//! Approval keys (issue 31): every key a person ever signed approvals with, the card it lives
//! on and the period it was theirs. Rows are tagged like principals: the history decides which
//! signatures count, so an edit of it behind kms's back must fail like an edited grant.
//!
//! A signature counts if its key was the signer's when it was made (`valid_from <= signed_at`
//! and no `valid_until`, or `signed_at < valid_until`). A principal registered before this
//! table has no rows until their key first changes; until then their current key (in the tagged
//! principals row) stands for the whole history.

use super::sql::{params, Connection, Row};
use time::OffsetDateTime;

use super::integrity::{check_tail, guarded, tag_where, tail, Table};
use super::{fmt_time, parse_time, Inventory, InventoryError};
use crate::model::AuditEntry;

const COLUMNS: &str =
    "id, principal, public_key, uri, card, valid_from, valid_until, end_reason, ended_by";
const COLUMN_COUNT: usize = 9;

/// One approval key of one person, and when it was theirs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApprovalKeyPeriod {
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex.
    pub id: String,
    pub principal: String,
    #[serde(skip)]
    pub public_key: Vec<u8>,
    pub uri: Option<String>,
    /// The card (or personal token) the key lives on: `piv:SERIAL`, `pkcs11:serial=…`, or
    /// `pkcs11:token=LABEL` for one registered before serials were recorded; none for a key
    /// registered by its public key alone.
    pub card: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub valid_until: Option<OffsetDateTime>,
    /// `replaced` (re-enrolment), `lost` (the card was reported lost), ...
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
}

impl ApprovalKeyPeriod {
    /// Whether the key was its principal's at `at`.
    pub fn valid_at(&self, at: OffsetDateTime) -> bool {
        self.valid_from <= at && self.valid_until.is_none_or(|u| at < u)
    }
}

/// What a new approval key row says (the id is derived from the key).
pub struct NewApprovalKey<'a> {
    pub principal: &'a str,
    pub public_key: &'a [u8],
    pub uri: Option<&'a str>,
    pub card: Option<&'a str>,
    pub valid_from: OffsetDateTime,
}

/// The id of an approval key: SHA-256 of its SubjectPublicKeyInfo, hex.
pub fn approval_key_id(spki: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(spki))
}

/// Insert an approval key row (tagged) inside the caller's transaction.
pub(crate) fn insert_approval_key(
    conn: &Connection,
    integrity: Option<&std::sync::Arc<dyn super::integrity::RowIntegrity>>,
    k: &NewApprovalKey<'_>,
) -> Result<(), InventoryError> {
    let id = approval_key_id(k.public_key);
    let res = conn.execute(
        &format!("INSERT INTO approval_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, NULL)"),
        params![id, k.principal, k.public_key, k.uri, k.card, fmt_time(k.valid_from)],
    );
    match res {
        Err(e) if e.is_constraint_violation() => {
            return Err(InventoryError::Conflict(
                "this approval key was already registered once (to this or another person); one key, one person, once".into(),
            ))
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    tag_where(conn, integrity, Table::ApprovalKeys, "id = ?1", &[&id])?;
    Ok(())
}

/// End the open periods of `principal`'s keys (`reason`), checked first, inside the caller's
/// transaction; returns how many ended.
pub(crate) fn end_open_periods(
    conn: &Connection,
    integrity: Option<&std::sync::Arc<dyn super::integrity::RowIntegrity>>,
    principal: &str,
    ids: Option<&[String]>,
    reason: &str,
    by: &str,
    now: OffsetDateTime,
) -> Result<usize, InventoryError> {
    let mut n = 0;
    let open = select_where(
        conn,
        integrity,
        "principal = ?1 AND valid_until IS NULL",
        &[&principal],
    )?;
    for k in open {
        if ids.is_some_and(|ids| !ids.contains(&k.id)) {
            continue;
        }
        n += guarded(
            conn,
            integrity,
            Table::ApprovalKeys,
            "id = ?1",
            &[&k.id],
            |tx| {
                Ok(tx.execute(
                    "UPDATE approval_keys SET valid_until = ?2, end_reason = ?3, ended_by = ?4
                     WHERE id = ?1 AND valid_until IS NULL",
                    params![k.id, fmt_time(now), reason, by],
                )?)
            },
        )?;
    }
    Ok(n)
}

fn select_where(
    conn: &Connection,
    integrity: Option<&std::sync::Arc<dyn super::integrity::RowIntegrity>>,
    where_: &str,
    params: &[&dyn super::sql::ToValue],
) -> Result<Vec<ApprovalKeyPeriod>, InventoryError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}{} FROM approval_keys WHERE {where_} ORDER BY valid_from, id",
        tail(Table::ApprovalKeys, "")
    ))?;
    let rows = stmt.query_map(params, |r| {
        Ok(
            check_tail(conn, integrity, Table::ApprovalKeys, r, COLUMN_COUNT)
                .and_then(|()| read(r)?),
        )
    })?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

impl Inventory {
    /// Record the card an approval key was first seen signing on (a key registered by its public
    /// key alone): the row's `card` is set once. `legacy` is the row of a key registered before
    /// the history existed (inserted with the card).
    pub fn bind_approval_card(
        &self,
        legacy: Option<&NewApprovalKey<'_>>,
        id: &str,
        card: &str,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        match legacy {
            Some(k) => insert_approval_key(&tx, integrity.as_ref(), k)?,
            None => {
                guarded(
                    &tx,
                    integrity.as_ref(),
                    Table::ApprovalKeys,
                    "id = ?1",
                    &[&id],
                    |tx| {
                        Ok(tx.execute(
                            "UPDATE approval_keys SET card = ?2 WHERE id = ?1 AND card IS NULL",
                            params![id, card],
                        )?)
                    },
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every approval key row (checked), oldest first.
    pub fn approval_keys(&self) -> Result<Vec<ApprovalKeyPeriod>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        select_where(&conn, integrity.as_ref(), "1 = 1", &[])
    }

    /// The approval key rows of `principal` (checked), oldest first.
    pub fn approval_keys_of(
        &self,
        principal: &str,
    ) -> Result<Vec<ApprovalKeyPeriod>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        select_where(&conn, integrity.as_ref(), "principal = ?1", &[&principal])
    }

    /// A card was reported lost: end `ids` (keys of `principal`; `legacy` is the row of a key
    /// registered before the history existed), clear the principal's current
    /// approval key if it is one of them, and revoke `grants` — one transaction, with its audit
    /// record, so nothing is half-done.
    #[allow(clippy::too_many_arguments)]
    pub fn report_card_lost(
        &self,
        principal: &str,
        legacy: Option<&NewApprovalKey<'_>>,
        ids: &[String],
        clear_current: bool,
        grants: &[String],
        by: &str,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<usize, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        // A key recorded only as the principal's current key (registered before the history)
        // gets its row first, so that its end is on record.
        if let Some(k) = legacy {
            insert_approval_key(&tx, integrity.as_ref(), k)?;
        }
        let ended = end_open_periods(
            &tx,
            integrity.as_ref(),
            principal,
            Some(ids),
            "lost",
            by,
            now,
        )?;
        // Keys ended before (a card replaced, then reported lost) keep their end, now marked lost.
        for id in ids {
            guarded(
                &tx,
                integrity.as_ref(),
                Table::ApprovalKeys,
                "id = ?1 AND principal = ?2",
                &[id, &principal],
                |tx| {
                    Ok(tx.execute(
                        "UPDATE approval_keys SET end_reason = 'lost', ended_by = ?3
                         WHERE id = ?1 AND principal = ?2 AND (end_reason IS NULL OR end_reason <> 'lost')",
                        params![id, principal, by],
                    )?)
                },
            )?;
        }
        if clear_current {
            guarded(
                &tx,
                integrity.as_ref(),
                Table::Principals,
                "name = ?1",
                &[&principal],
                |tx| {
                    Ok(tx.execute(
                        "UPDATE principals SET approval_key = NULL, approval_key_uri = NULL WHERE name = ?1",
                        params![principal],
                    )?)
                },
            )?;
        }
        let reason = "the card that signed it was reported lost";
        for g in grants {
            guarded(
                &tx,
                integrity.as_ref(),
                Table::Grants,
                "id = ?1",
                &[g],
                |tx| {
                    Ok(tx.execute(
                        "UPDATE grants SET revoked_at = ?2, revoked_by = ?3, revoke_reason = ?4
                         WHERE id = ?1 AND revoked_at IS NULL",
                        params![g, fmt_time(now), by, reason],
                    )?)
                },
            )?;
        }
        super::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(ended)
    }
}

fn read(r: &Row) -> super::sql::Result<Result<ApprovalKeyPeriod, InventoryError>> {
    let (id, principal, public_key, uri, card): (
        String,
        String,
        Vec<u8>,
        Option<String>,
        Option<String>,
    ) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    let (from, until, end_reason, ended_by): (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?);
    Ok((|| {
        Ok(ApprovalKeyPeriod {
            id,
            principal,
            public_key,
            uri,
            card,
            valid_from: parse_time(&from)?,
            valid_until: until.as_deref().map(parse_time).transpose()?,
            end_reason,
            ended_by,
        })
    })())
}
