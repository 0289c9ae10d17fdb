//! Wrapping every engine operation in its audit row.

use time::OffsetDateTime;

use super::{Caller, Engine, EngineError};
use crate::inventory::{AuditEntry, Outcome};

/// What an operation tells its audit row while it runs.
#[derive(Debug, Default)]
pub(crate) struct AuditNote {
    pub key_version: Option<u32>,
    /// What changed or what was done, in words. Never secrets.
    pub detail: Option<String>,
    /// Set when the operation already wrote its success row inside its own transaction.
    pub recorded: bool,
    /// For changes: the metadata before and after.
    pub diff: Option<serde_json::Value>,
    /// The grant that authorized a key use (`Engine::authorize_use`), for the record's reason.
    pub grant: Option<String>,
    /// Which backup copy served the operation when its token was down (`Engine::on_version`).
    pub served_by: Option<String>,
}

impl Engine {
    /// The audit record of a change, built from its note before the change is made, so the
    /// inventory can write both in one transaction (no change without its record).
    pub(crate) fn change_entry(
        &self,
        caller: &Caller,
        action: &str,
        key_name: Option<&str>,
        note: &AuditNote,
    ) -> AuditEntry {
        let mut e = self.entry(
            caller,
            action,
            key_name,
            note.key_version,
            Outcome::Ok,
            note.detail.clone(),
        );
        e.diff = note.diff.clone();
        e
    }
}

/// `{"before": …, "after": …}` for an audit row's diff.
pub(crate) fn diff(
    before: serde_json::Value,
    after: serde_json::Value,
) -> Option<serde_json::Value> {
    Some(serde_json::json!({ "before": before, "after": after }))
}

/// Audit fields come partly from callers (names, reasons): control characters are replaced so
/// one row can never pose as two in a listing or a shipped log line.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

impl Engine {
    /// Run `op` and append its audit row: `ok` with the note's detail, or `denied`/`error` with the
    /// error message. If the success row cannot be written the result is discarded.
    pub(crate) fn audited<T>(
        &self,
        caller: &Caller,
        action: &str,
        key_name: Option<&str>,
        op: impl FnOnce(&mut AuditNote) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut note = AuditNote::default();
        let result = op(&mut note);
        let grant = note.grant.take();
        if let Some(served) = note.served_by.take() {
            note.detail = Some(match note.detail.take() {
                Some(d) => format!("{d}; {served}"),
                None => served,
            });
        }
        let (outcome, detail, code) = match &result {
            Ok(_) if note.recorded => {
                // Written in the change's own transaction; it counts towards the next checkpoint.
                self.checkpoint_if_due();
                self.anchor_after_change();
                return result;
            }
            Ok(_) => {
                self.anchor_after_change();
                (Outcome::Ok, note.detail.clone(), None)
            }
            Err(e) => (e.outcome(), Some(e.to_string()), Some(e.code())),
        };
        let mut entry = self.entry(caller, action, key_name, note.key_version, outcome, detail);
        entry.code = code.map(str::to_owned);
        entry.diff = note.diff.take();
        if let Some(g) = grant {
            // The reason for a key use includes the grant's ticket and justification.
            entry.reason = Some(match entry.reason.take() {
                Some(r) => format!("{r}; {}", printable(&g)),
                None => printable(&g),
            });
        }
        if outcome == Outcome::Denied {
            self.note_denial(&entry);
        }
        match (self.inventory.append_audit(&entry), result) {
            (Ok(_), result) => {
                self.checkpoint_if_due();
                result
            }
            (Err(audit_err), Ok(_)) => Err(EngineError::AuditFailed(audit_err)),
            (Err(audit_err), Err(e)) => {
                tracing::error!(action, error = %audit_err, "could not audit a failed operation");
                Err(e)
            }
        }
    }

    pub(crate) fn entry(
        &self,
        caller: &Caller,
        action: &str,
        key_name: Option<&str>,
        key_version: Option<u32>,
        outcome: Outcome,
        detail: Option<String>,
    ) -> AuditEntry {
        AuditEntry {
            tally: Some(caller.tally.clone()),
            at: OffsetDateTime::now_utc(),
            actor: printable(&caller.actor),
            host: printable(&caller.host),
            action: action.to_owned(),
            key_name: key_name.map(printable),
            key_version,
            reason: caller.reason.as_deref().map(printable),
            outcome,
            detail: detail.as_deref().map(printable),
            role: caller.role.map(|r| r.as_str().to_owned()).or_else(|| {
                self.inventory
                    .principal(&caller.actor)
                    .ok()
                    .map(|p| p.role.as_str().to_owned())
            }),
            os_user: caller.os_user.clone(),
            cert_fingerprint: caller.cert_fingerprint.clone(),
            code: None,
            diff: None,
            node: self
                .config
                .node
                .configured
                .then(|| self.config.node.label()),
        }
    }
}

/// Denials per actor in the current minute, to notice bursts (one per [`Engine`]).
#[derive(Debug, Default)]
pub(crate) struct DenialCounts(
    std::sync::Mutex<Option<(i64, std::collections::HashMap<String, u32>)>>,
);

/// How many denials of one actor within a minute make a burst worth a warning.
const DENIAL_BURST: u32 = 5;

impl Engine {
    /// Log every denial at warn level, and a burst of denials for one actor once per minute.
    fn note_denial(&self, e: &AuditEntry) {
        tracing::warn!(
            actor = %e.actor,
            role = e.role.as_deref().unwrap_or("-"),
            from = %e.host,
            action = %e.action,
            key = e.key_name.as_deref().unwrap_or("-"),
            code = e.code.as_deref().unwrap_or("-"),
            "access denied"
        );
        let minute = e.at.unix_timestamp() / 60;
        let mut d = self.denials.0.lock().unwrap_or_else(|p| p.into_inner());
        let (m, counts) = d.get_or_insert_with(|| (minute, Default::default()));
        if *m != minute {
            *m = minute;
            counts.clear();
        }
        let n = counts.entry(e.actor.clone()).or_default();
        *n += 1;
        if *n == DENIAL_BURST {
            tracing::warn!(
                actor = %e.actor,
                from = %e.host,
                denials = *n,
                last_action = %e.action,
                last_key = e.key_name.as_deref().unwrap_or("-"),
                "denied-access burst: {} refusals for '{}' within a minute; check `kms audit list --actor {}`",
                n, e.actor, e.actor
            );
        }
    }

    /// Record a request the service refused before it reached an operation (malformed body, bad
    /// base64, too large): the attempt is on the record like any other.
    pub fn audit_rejected_request(
        &self,
        caller: &Caller,
        action: &str,
        key_name: Option<&str>,
        why: &str,
    ) -> Result<(), EngineError> {
        let entry = self.entry(
            caller,
            action,
            key_name,
            None,
            Outcome::Error,
            Some(format!("rejected request: {why}")),
        );
        self.inventory
            .append_audit(&entry)
            .map(drop)
            .map_err(EngineError::AuditFailed)
    }
}
