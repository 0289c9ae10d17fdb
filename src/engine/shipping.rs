//! Shipping the audit trail to the log server through a durable outbox.
//!
//! The outbox is the audit table itself plus one cursor in the inventory (`audit_state`
//! `shipped_seq`): the sequence number of the last record the log server has taken. A run sends
//! the records after the cursor in sequence order, in batches of [`BATCH`], one connection per
//! batch, and advances the cursor only after the server has read the whole batch (see
//! [`crate::audit::ship`]). A network failure, a stopped log server or a restart of `kms` leaves
//! the cursor where it was, so the next run sends the same records again: every record arrives,
//! in order, at least once, and the `seq` parameter lets the log server drop duplicates.
//!
//! Shipping itself is not audited (a record per run would keep the backlog from ever reaching
//! zero); `kms audit ship --status` is.

use super::{Caller, Engine, EngineError};
use crate::audit::{ship, syslog};
use crate::inventory::AuditFilter;
use crate::model::Role;

/// Records per connection; the cursor advances after each.
pub const BATCH: u32 = 200;

/// The `audit_state` counter holding the cursor.
pub const SHIPPED_SEQ: &str = "shipped_seq";

/// What one shipping run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShipReport {
    pub sent: usize,
    /// Sequence number of the last record the log server has taken.
    pub cursor: i64,
    /// Records not yet shipped.
    pub backlog: i64,
}

/// Where shipping stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShipStatus {
    /// The configured log server, if any.
    pub server: Option<String>,
    pub cursor: i64,
    pub head: i64,
    pub backlog: i64,
}

impl Engine {
    /// `kms audit ship`: an officer or auditor ships the backlog now.
    pub fn ship_audit_for(&self, caller: &Caller) -> Result<ShipReport, EngineError> {
        super::policy::require_role(
            &self.inventory,
            caller,
            &[
                crate::model::Role::SecurityOfficer,
                crate::model::Role::Auditor,
            ],
            "ship the audit trail",
        )?;
        self.ship_audit()
    }
}

impl Engine {
    /// Ship every record after the cursor, in order; advance the cursor as the server takes them.
    /// Without `[audit.syslog]` nothing is sent and the backlog is reported. On failure the
    /// records not taken stay in the outbox for the next run, and the error says how many.
    pub fn ship_audit(&self) -> Result<ShipReport, EngineError> {
        let _one = self.shipping.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.audit_head_seq()?;
        let mut cursor = self.inventory.audit_state(SHIPPED_SEQ)?;
        let Some(cfg) = &self.config.audit.syslog else {
            return Ok(ShipReport {
                sent: 0,
                cursor,
                backlog: (head - cursor).max(0),
            });
        };
        let hostname = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let mut sent = 0usize;
        // Records appended while this run goes are left for the next one, so a busy service
        // cannot keep a run going for ever.
        while cursor < head {
            let rows = self.inventory.audit_rows_filtered(&AuditFilter {
                after_seq: Some(cursor),
                limit: BATCH,
                ..Default::default()
            })?;
            let Some(last) = rows.last().map(|r| r.seq) else {
                break;
            };
            let frames: Vec<Vec<u8>> = rows
                .iter()
                .map(|r| syslog::frame(&syslog::format(r, &cfg.app_name, &hostname)))
                .collect();
            if let Err(e) = ship::send_all(cfg, &frames) {
                let backlog = (self.audit_head_seq()? - cursor).max(0);
                // Logged by the caller: the service's loop limits how often it repeats this.
                tracing::debug!(error = %e, sent, cursor, backlog, "audit shipping failed");
                return Err(EngineError::Incomplete(format!(
                    "audit shipping failed: {e}; {sent} record(s) sent in this run, {backlog} wait in the outbox (after record {cursor}) and will be sent again"
                )));
            }
            // Another process may have shipped further meanwhile: never move the cursor back.
            if last > self.inventory.audit_state(SHIPPED_SEQ)? {
                self.inventory.set_audit_state(SHIPPED_SEQ, last)?;
            }
            cursor = last;
            sent += rows.len();
        }
        let backlog = (self.audit_head_seq()? - cursor).max(0);
        Ok(ShipReport {
            sent,
            cursor,
            backlog,
        })
    }

    /// The backlog, for `kms audit ship --status` and the metrics. Security officers and
    /// auditors only; audited.
    pub fn ship_status(&self, caller: &Caller) -> Result<ShipStatus, EngineError> {
        self.audited(caller, "audit.ship-status", None, |_| {
            super::policy::require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer, Role::Auditor],
                "read the audit shipping status",
            )?;
            let head = self.audit_head_seq()?;
            let cursor = self.inventory.audit_state(SHIPPED_SEQ)?;
            Ok(ShipStatus {
                server: self.config.audit.syslog.as_ref().map(|s| s.address.clone()),
                cursor,
                head,
                backlog: (head - cursor).max(0),
            })
        })
    }

    /// Records not yet shipped, for the service's `kms_audit_backlog` gauge (not audited: it is
    /// read every few seconds by the service itself).
    pub(crate) fn audit_backlog(&self) -> Result<i64, EngineError> {
        let cursor = self.inventory.audit_state(SHIPPED_SEQ)?;
        Ok((self.audit_head_seq()? - cursor).max(0))
    }

    fn audit_head_seq(&self) -> Result<i64, EngineError> {
        Ok(self.inventory.audit_head()?.map_or(0, |(seq, _)| seq))
    }
}
