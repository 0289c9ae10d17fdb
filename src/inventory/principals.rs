//! Principals: who may call the service.

use super::sql::{params, OptionalExtension, Row};
use time::OffsetDateTime;

use super::approval_keys::{end_open_periods, insert_approval_key, NewApprovalKey};
use super::integrity::{check_tail, guarded, tag_where, tail, Table};
use super::{fmt_time, parse_time, Inventory, InventoryError};
use crate::model::{AuditEntry, Principal};

const COLUMNS: &str = "name, role, cert_fingerprint, cert_subject, disabled_at, disabled_by, \
     created_by, created_at, approval_key, approval_key_uri, allowed_networks";
/// How many columns COLUMNS names (a row's integrity tail starts after them).
const COLUMN_COUNT: usize = 11;

impl Inventory {
    /// Register a principal. A duplicate name or certificate is refused.
    /// The audit record of the registration is written in the same transaction: no principal
    /// exists without its record.
    /// The approval key, if any, starts its history (issue 31) on `card`.
    pub fn add_principal(
        &self,
        p: &Principal,
        card: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let res = tx.execute(
            &format!(
                "INSERT INTO principals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                p.name,
                p.role.as_str(),
                p.cert_fingerprint,
                p.cert_subject,
                p.disabled_at.map(fmt_time),
                p.disabled_by,
                p.created_by,
                fmt_time(p.created_at),
                p.approval_key,
                p.approval_key_uri,
                (!p.allowed_networks.is_empty()).then(|| p.allowed_networks.join(",")),
            ],
        );
        match res {
            Err(e) if e.is_constraint_violation() => {
                let what = e.detail();
                Err(InventoryError::Conflict(
                    if what.contains("cert_fingerprint") {
                        "this certificate is already registered to another principal".to_owned()
                    } else {
                        format!("a principal named '{}' already exists", p.name)
                    },
                ))
            }
            Err(e) => Err(e.into()),
            Ok(_) => {
                tag_where(
                    &tx,
                    integrity.as_ref(),
                    Table::Principals,
                    "name = ?1",
                    &[&p.name],
                )?;
                if let Some(spki) = &p.approval_key {
                    insert_approval_key(
                        &tx,
                        integrity.as_ref(),
                        &NewApprovalKey {
                            principal: &p.name,
                            public_key: spki,
                            uri: p.approval_key_uri.as_deref(),
                            card,
                            valid_from: p.created_at,
                        },
                    )?;
                }
                super::audit::insert(&tx, audit)?;
                tx.commit()?;
                Ok(())
            }
        }
    }

    /// Replace a principal's approval key (a card enrolment), with the audit record. The key's
    /// history keeps the old key, ended `replaced` now (`legacy` is the old key's row for a
    /// principal registered before the history existed), so signatures made with it still count.
    pub fn set_approval_key(
        &self,
        new: &NewApprovalKey<'_>,
        legacy: Option<&NewApprovalKey<'_>>,
        by: &str,
        audit: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let name = new.principal;
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let n = guarded(
            &tx,
            integrity.as_ref(),
            Table::Principals,
            "name = ?1",
            &[&name],
            |tx| {
                Ok(tx.execute(
                "UPDATE principals SET approval_key = ?2, approval_key_uri = ?3 WHERE name = ?1",
                params![name, new.public_key, new.uri],
            )?)
            },
        )?;
        if n != 1 {
            return Err(InventoryError::Conflict(format!(
                "no principal named '{name}'"
            )));
        }
        if let Some(old) = legacy {
            insert_approval_key(&tx, integrity.as_ref(), old)?;
        }
        end_open_periods(
            &tx,
            integrity.as_ref(),
            name,
            None,
            "replaced",
            by,
            new.valid_from,
        )?;
        insert_approval_key(&tx, integrity.as_ref(), new)?;
        super::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    pub fn principal(&self, name: &str) -> Result<Principal, InventoryError> {
        self.checked_principal("name", name)?
            .ok_or_else(|| InventoryError::NoSuchPrincipal(name.to_owned()))
    }

    /// The principal registered with this certificate fingerprint, if any.
    pub fn principal_by_fingerprint(&self, fp: &str) -> Result<Option<Principal>, InventoryError> {
        self.checked_principal("cert_fingerprint", fp)
    }

    /// The principal whose `column` is `value`, its integrity tag checked in the same read.
    fn checked_principal(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<Principal>, InventoryError> {
        let integrity = self.integrity();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS}{} FROM principals WHERE {column} = ?1",
            tail(Table::Principals, "")
        ))?;
        stmt.query_row([value], |r| {
            Ok(check_tail(
                &conn,
                integrity.as_ref(),
                Table::Principals,
                r,
                COLUMN_COUNT,
            )
            .and_then(|()| read(r)?))
        })
        .optional()?
        .transpose()
    }

    /// Whether a security officer was ever registered (bootstrap — the first one registered by
    /// whoever operates the KMS host — happens once, even if officers are later disabled).
    pub fn has_security_officer(&self) -> Result<bool, InventoryError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM principals WHERE role = 'security-officer'",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Enabled security officers.
    pub fn enabled_security_officers(&self) -> Result<i64, InventoryError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM principals WHERE role = 'security-officer' AND disabled_at IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// The principal an approval key (SPKI DER) is or was registered to, if any.
    pub fn principal_by_approval_key(&self, spki: &[u8]) -> Result<Option<String>, InventoryError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name FROM principals WHERE approval_key = ?1
                 UNION SELECT principal FROM approval_keys WHERE public_key = ?1",
                [spki],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn principals(&self) -> Result<Vec<Principal>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM principals ORDER BY name"))?;
        let rows = stmt.query_map([], read)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Disable a principal: it is refused from now on; its grants stay on record.
    pub fn disable_principal(
        &self,
        name: &str,
        by: &str,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<(), InventoryError> {
        let integrity = self.integrity();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
        let n = guarded(
            &tx,
            integrity.as_ref(),
            Table::Principals,
            "name = ?1",
            &[&name],
            |tx| {
                Ok(tx.execute(
                "UPDATE principals SET disabled_at = ?2, disabled_by = ?3 WHERE name = ?1 AND disabled_at IS NULL",
                params![name, fmt_time(now), by],
            )?)
            },
        )?;
        if n == 0 {
            drop(tx);
            drop(conn);
            self.principal(name)?;
            return Err(InventoryError::Conflict(format!(
                "principal '{name}' is already disabled"
            )));
        }
        super::audit::insert(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }
}

fn read(r: &Row) -> super::sql::Result<Result<Principal, InventoryError>> {
    let role: String = r.get(1)?;
    let disabled_at: Option<String> = r.get(4)?;
    let created_at: String = r.get(7)?;
    let (name, cert_fingerprint, cert_subject, disabled_by, created_by) =
        (r.get(0)?, r.get(2)?, r.get(3)?, r.get(5)?, r.get(6)?);
    let (approval_key, approval_key_uri, networks): (
        Option<Vec<u8>>,
        Option<String>,
        Option<String>,
    ) = (r.get(8)?, r.get(9)?, r.get(10)?);
    Ok((|| {
        Ok(Principal {
            name,
            role: role
                .parse()
                .map_err(|e| InventoryError::BadRow(format!("role: {e}")))?,
            cert_fingerprint,
            cert_subject,
            approval_key,
            approval_key_uri,
            allowed_networks: networks
                .map(|n| n.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            disabled_at: disabled_at.as_deref().map(parse_time).transpose()?,
            disabled_by,
            created_by,
            created_at: parse_time(&created_at)?,
        })
    })())
}
