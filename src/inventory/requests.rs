//! Access requests and their signed steps. Each transition checks the state it starts from inside
//! its transaction, so two approvers racing cannot both succeed.

use super::sql::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::grants::{grant_on, insert_grant};
use super::{fmt_time, parse_time, Inventory, InventoryError};
use crate::duration::HumanDuration;
use crate::model::{AccessRequest, AuditEntry, Grant, NewGrant, RequestState, SignedStep};

const SELECT: &str = "SELECT r.id, r.requester, r.grantee, k.name, r.key_id, r.ops, \
     r.duration_secs, r.ticket, r.justification, r.state, r.created_at, r.grant_id \
     FROM access_requests r JOIN keys k ON k.id = r.key_id";

impl Inventory {
    /// Record a new request in state `pending`.
    pub fn add_request(&self, r: &AccessRequest, audit: &AuditEntry) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO access_requests (id, requester, grantee, key_id, ops, duration_secs,
                 ticket, justification, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
            params![
                r.id,
                r.requester,
                r.grantee,
                r.key_id,
                r.ops.to_string(),
                i64::try_from(r.duration.as_secs()).unwrap_or(i64::MAX),
                r.ticket,
                r.justification,
                fmt_time(r.created_at),
            ],
        )?;
        super::integrity::tag_where(
            &tx,
            integrity.as_ref(),
            super::integrity::Table::Requests,
            "id = ?1",
            &[&r.id],
        )?;
        super::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// The request, its row's tag checked.
    pub fn request(&self, id: &str) -> Result<AccessRequest, InventoryError> {
        let conn = self.conn();
        super::integrity::check_where(
            &conn,
            self.integrity().as_ref(),
            super::integrity::Table::Requests,
            "id = ?1",
            &[&id],
        )?;
        conn.query_row(&format!("{SELECT} WHERE r.id = ?1"), [id], read)
            .optional()?
            .ok_or_else(|| InventoryError::NoSuchRequest(id.to_owned()))?
    }

    /// Requests, newest first, optionally only those in `state`.
    pub fn requests(
        &self,
        state: Option<RequestState>,
    ) -> Result<Vec<AccessRequest>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE (CAST(?1 AS TEXT) IS NULL OR r.state = ?1) ORDER BY r.created_at DESC"
        ))?;
        let rows = stmt.query_map([state.map(RequestState::as_str)], read)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Every signed step about `subject` (a request or grant id), oldest first.
    /// The signed steps of a request, grant or disposal; each row's tag is checked.
    pub fn signed_steps(&self, subject: &str) -> Result<Vec<SignedStep>, InventoryError> {
        let conn = self.conn();
        super::integrity::check_where(
            &conn,
            self.integrity().as_ref(),
            super::integrity::Table::Signatures,
            "subject = ?1",
            &[&subject],
        )?;
        let mut stmt = conn.prepare(
            "SELECT subject, step, signer, message, signature, public_key, signed_at, note
             FROM signatures WHERE subject = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([subject], |r| {
            let at: String = r.get(6)?;
            Ok((
                SignedStep {
                    subject: r.get(0)?,
                    step: r.get(1)?,
                    signer: r.get(2)?,
                    message: r.get(3)?,
                    signature: r.get(4)?,
                    public_key: r.get(5)?,
                    signed_at: OffsetDateTime::UNIX_EPOCH,
                    note: r.get(7)?,
                },
                at,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (mut step, at) = r?;
            step.signed_at = parse_time(&at)?;
            out.push(step);
        }
        Ok(out)
    }

    /// `pending` → `verified`, with the security admin's signature.
    pub fn verify_request(
        &self,
        id: &str,
        step: &SignedStep,
        audit: &AuditEntry,
    ) -> Result<(), InventoryError> {
        self.transition(id, &["pending"], "verified", step, None, audit)
            .map(drop)
    }

    /// `pending`/`verified` → `denied`, with the signature of whoever denied it.
    pub fn deny_request(
        &self,
        id: &str,
        step: &SignedStep,
        audit: &AuditEntry,
    ) -> Result<(), InventoryError> {
        self.transition(id, &["pending", "verified"], "denied", step, None, audit)
            .map(drop)
    }

    /// `verified` → `approved`: the manager's signature and the grant, in one transaction.
    pub fn approve_request(
        &self,
        id: &str,
        step: &SignedStep,
        grant: &NewGrant,
        audit: &AuditEntry,
    ) -> Result<Grant, InventoryError> {
        let g = self.transition(id, &["verified"], "approved", step, Some(grant), audit)?;
        g.ok_or_else(|| InventoryError::BadRow("approval made no grant".into()))
    }

    /// Record a re-certification and move the grant's review deadline.
    pub fn recertify_grant(
        &self,
        id: &str,
        step: &SignedStep,
        review_due: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Grant, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let n = super::integrity::guarded(
            &tx,
            integrity.as_ref(),
            super::integrity::Table::Grants,
            "id = ?1",
            &[&id],
            |tx| {
                Ok(tx.execute(
                    "UPDATE grants SET review_due = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, fmt_time(review_due)],
                )?)
            },
        )?;
        if n == 0 {
            return Err(InventoryError::Conflict(format!(
                "grant {id} does not exist or is revoked"
            )));
        }
        insert_step(&tx, integrity.as_ref(), step)?;
        let g = grant_on(&tx, id)?;
        super::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(g)
    }

    fn transition(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        step: &SignedStep,
        grant: Option<&NewGrant>,
        audit: &AuditEntry,
    ) -> Result<Option<Grant>, InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM access_requests WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        let state = state.ok_or_else(|| InventoryError::NoSuchRequest(id.to_owned()))?;
        super::integrity::check_where(
            &tx,
            integrity.as_ref(),
            super::integrity::Table::Requests,
            "id = ?1",
            &[&id],
        )?;
        if !from.contains(&state.as_str()) {
            return Err(InventoryError::Conflict(format!(
                "request {id} is {state}; this step needs it {}",
                from.join(" or ")
            )));
        }
        insert_step(&tx, integrity.as_ref(), step)?;
        let made = match grant {
            Some(g) => {
                let gid = insert_grant(&tx, integrity.as_ref(), g, step.signed_at)?;
                tx.execute(
                    "UPDATE access_requests SET grant_id = ?2 WHERE id = ?1",
                    params![id, gid],
                )?;
                Some(grant_on(&tx, &gid)?)
            }
            None => None,
        };
        tx.execute(
            "UPDATE access_requests SET state = ?2 WHERE id = ?1",
            params![id, to],
        )?;
        super::integrity::tag_where(
            &tx,
            integrity.as_ref(),
            super::integrity::Table::Requests,
            "id = ?1",
            &[&id],
        )?;
        super::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(made)
    }
}

pub(super) fn insert_step(
    conn: &Connection,
    integrity: Option<&std::sync::Arc<dyn super::integrity::RowIntegrity>>,
    s: &SignedStep,
) -> Result<(), InventoryError> {
    conn.execute(
        "INSERT INTO signatures (subject, step, signer, message, signature, public_key, signed_at, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            s.subject,
            s.step,
            s.signer,
            s.message,
            s.signature,
            s.public_key,
            fmt_time(s.signed_at),
            s.note
        ],
    )?;
    super::integrity::tag_where(
        conn,
        integrity,
        super::integrity::Table::Signatures,
        "seq = (SELECT MAX(seq) FROM signatures)",
        &[],
    )?;
    Ok(())
}

fn read(r: &Row) -> super::sql::Result<Result<AccessRequest, InventoryError>> {
    let ops: String = r.get(5)?;
    let secs: i64 = r.get(6)?;
    let state: String = r.get(9)?;
    let created: String = r.get(10)?;
    let (id, requester, grantee, key_name, key_id, ticket, justification, grant_id) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(7)?,
        r.get(8)?,
        r.get(11)?,
    );
    Ok((|| {
        let bad = |w: &str| InventoryError::BadRow(format!("access request {w}"));
        Ok(AccessRequest {
            id,
            requester,
            grantee,
            key_name,
            key_id,
            ops: ops.parse().map_err(|_| bad("ops"))?,
            duration: u64::try_from(secs)
                .ok()
                .and_then(HumanDuration::from_secs)
                .ok_or_else(|| bad("duration"))?,
            ticket,
            justification,
            state: match state.as_str() {
                "pending" => RequestState::Pending,
                "verified" => RequestState::Verified,
                "approved" => RequestState::Approved,
                "denied" => RequestState::Denied,
                _ => return Err(bad("state")),
            },
            created_at: parse_time(&created)?,
            grant_id,
        })
    })())
}
