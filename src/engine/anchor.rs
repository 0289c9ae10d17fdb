//! The anti-rollback anchor (issue 23). The inventory is untrusted storage: whoever can write
//! it can put back an older copy of it — a backup, a lagging PostgreSQL standby promoted — in
//! which revoked grants, disabled principals and compromised versions are whole again, each row
//! with the valid tag kms once made. Row tags cannot tell; the token can.
//!
//! After every change, the engine writes to the token(s) of the integrity key a public data
//! object (`hsm/anchor.rs`) holding the inventory's change log as it stands: the last change
//! number, how many changes there are, and a SHA-384 chained over them in order — signed by the
//! integrity key. At open, and in `kms inventory verify`, the change log must still hold every
//! change the newest anchor counts, in the same order: an inventory older than the token's
//! anchor, or one whose change log lost or altered an entry, is refused and named.
//!
//! What it costs: per change, one signature and one object written per token (the older of two
//! slots, so a killed process leaves the other whole); per open, one pass over the change log;
//! per request, nothing (rows are checked against the change log and this process's memory).

use std::sync::atomic::Ordering;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Engine, EngineError};
use crate::inventory::{ChangeLogState, CheckFailure};

/// Where an inventory's anchor lives: the integrity key's tokens (name, serial) and its CKA_ID
/// (hex).
pub(crate) type AnchorPlaces = (Vec<(String, String)>, String);

/// The CKA_APPLICATION of anchor objects.
const APPLICATION: &str = "kms-anchor";

/// What an anchor says (the signed body).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Body {
    format: String,
    /// CKA_ID (hex) of the integrity key version that signs it: the inventory it belongs to.
    integrity: String,
    /// Increases with each anchor written (picks the newest slot).
    counter: u64,
    log: ChangeLogState,
    at: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    body: String,
    sig: String,
}

/// What the anchor check found.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorReport {
    /// The newest valid anchor's change count and last change, if there is one.
    pub anchored_changes: Option<i64>,
    pub anchored_last: Option<i64>,
    /// The inventory's change log now.
    pub changes: i64,
    pub last: i64,
    /// Why the inventory does not match its anchor (None: it does).
    pub problem: Option<String>,
}

impl Engine {
    /// Tokens (name, serial) holding the integrity key, and its CKA_ID (hex).
    fn anchor_places(&self) -> Option<AnchorPlaces> {
        self.anchor_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The newest anchor of this inventory that verifies, read without logging in.
    fn newest_anchor(&self) -> Option<Body> {
        let (places, integrity) = self.anchor_places()?;
        let checker = self.inventory.integrity()?;
        let mut best: Option<Body> = None;
        for (name, serial) in places {
            let Ok((found_serial, values)) = self.hsm.anchors_without_login(&name, APPLICATION)
            else {
                continue;
            };
            if found_serial != serial {
                continue;
            }
            for v in values {
                let Ok(stored) = serde_json::from_slice::<Stored>(&v) else {
                    continue;
                };
                let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(&stored.sig) else {
                    continue;
                };
                let Ok(body) = serde_json::from_str::<Body>(&stored.body) else {
                    continue;
                };
                if body.integrity != integrity {
                    continue;
                }
                match checker.check(stored.body.as_bytes(), &sig) {
                    Ok(()) => {}
                    Err(CheckFailure::Tampered(why)) => {
                        tracing::warn!(token = %name, reason = %why, "an inventory anchor on the token does not verify; ignored");
                        continue;
                    }
                    Err(CheckFailure::Unavailable { .. }) => continue,
                }
                // The anchor that covers the most changes wins (two writers at once can write
                // the same counter); the counter breaks ties.
                if best
                    .as_ref()
                    .is_none_or(|b| (body.log.last, body.counter) > (b.log.last, b.counter))
                {
                    best = Some(body);
                }
            }
        }
        best
    }

    /// Compare the inventory's change log with the newest anchor on the token.
    pub(crate) fn check_anchor(&self) -> Result<AnchorReport, EngineError> {
        // The anchor first: another process may commit and anchor a change in between, and an
        // anchor read after the log could then be ahead of it.
        let newest = self.newest_anchor();
        let last = self.inventory.last_change()?;
        let mut report = AnchorReport {
            anchored_changes: None,
            anchored_last: None,
            changes: self.inventory.change_count()?,
            last,
            problem: None,
        };
        let Some(anchor) = newest else {
            return Ok(report);
        };
        let now = ChangeLogState {
            last,
            count: report.changes,
            digest: String::new(),
        };
        report.anchored_changes = Some(anchor.log.count);
        report.anchored_last = Some(anchor.log.last);
        if now.last < anchor.log.last {
            report.problem = Some(format!(
                "the inventory is older than the token's anchor: its change log ends at change #{} but the token (anchored {}) says change #{} was made — an older copy of the inventory was put in place (a restored backup, a lagging standby promoted) and may bring back revoked access",
                now.last, anchor.at, anchor.log.last
            ));
            return Ok(report);
        }
        let prefix = self
            .inventory
            .change_log_state(None, Some(anchor.log.last))?;
        if prefix != anchor.log {
            report.problem = Some(format!(
                "the inventory's change log up to change #{} is not the one the token anchored ({} changes anchored, {} found, digests {}): entries were deleted or altered",
                anchor.log.last,
                anchor.log.count,
                prefix.count,
                if prefix.digest == anchor.log.digest { "equal" } else { "differ" }
            ));
        }
        Ok(report)
    }

    /// Whether a token holds an anchor of this inventory.
    pub(super) fn anchor_exists(&self) -> bool {
        self.newest_anchor().is_some()
    }

    /// At open: refuse an inventory that does not match its anchor (every checked read fails,
    /// naming why); false when it was refused.
    pub(super) fn enforce_anchor(&self) -> Result<bool, EngineError> {
        let report = self.check_anchor()?;
        if let Some(problem) = report.problem {
            tracing::error!(reason = %problem, "inventory does not match the token's anchor");
            self.refuse_inventory(problem);
            return Ok(false);
        }
        self.anchored.store(report.last, Ordering::Relaxed);
        Ok(true)
    }

    /// `kms serve`, at each checkpoint tick: the change log is checked against the token's
    /// anchor again, so an inventory put back or a log edited while the service runs is refused
    /// from then on (and recorded), not only at the next start.
    pub fn recheck_anchor(&self) {
        if self.anchor_places().is_none() {
            return;
        }
        let problem = match self.check_anchor() {
            Ok(r) => r.problem,
            Err(e) => {
                tracing::warn!(error = %e, "the inventory's change log could not be checked against the token's anchor");
                return;
            }
        };
        if let Some(problem) = problem {
            tracing::error!(reason = %problem, "inventory does not match the token's anchor");
            let caller = self.system_caller();
            let mut entry = self.entry(
                &caller,
                "inventory.rolled-back",
                None,
                None,
                crate::inventory::Outcome::Denied,
                Some(problem.clone()),
            );
            entry.code = Some("inventory-tampered".into());
            let _ = self.inventory.append_audit(&entry);
            self.refuse_inventory(problem);
        }
    }

    /// After a change: anchor the change log if it moved past what this process anchored.
    /// A failure is logged, not returned (the change itself is committed and recorded); the
    /// next change or open anchors again.
    pub(crate) fn anchor_after_change(&self) {
        let Ok(last) = self.inventory.last_change() else {
            return;
        };
        if last <= self.anchored.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.write_anchor(None) {
            tracing::warn!(error = %e, "the inventory anchor could not be written to the token");
        }
    }

    /// Write the anchor of the change log as it is now (extending the newest anchor when it is
    /// a prefix of it; from the whole log otherwise). `reset` names why a restore starts afresh.
    pub(crate) fn write_anchor(&self, reset: Option<&str>) -> Result<(), EngineError> {
        let Some((places, integrity)) = self.anchor_places() else {
            return Ok(());
        };
        let Some(checker) = self.inventory.integrity() else {
            return Ok(());
        };
        let previous = self.newest_anchor();
        let from = previous
            .as_ref()
            .filter(|_| reset.is_none())
            .map(|p| p.log.clone());
        let log = self.inventory.change_log_state(from.as_ref(), None)?;
        let body = Body {
            format: "kms-anchor/1".into(),
            integrity: integrity.clone(),
            counter: previous.as_ref().map_or(1, |p| p.counter + 1),
            log,
            at: crate::inventory::fmt_time(OffsetDateTime::now_utc()),
        };
        let text = serde_json::to_string(&body)
            .map_err(|e| EngineError::Incomplete(format!("encoding the anchor: {e}")))?;
        let sig = checker
            .tag(text.as_bytes())
            .map_err(EngineError::Incomplete)?;
        let stored = serde_json::to_vec(&Stored {
            body: text,
            sig: base64::engine::general_purpose::STANDARD.encode(sig),
        })
        .map_err(|e| EngineError::Incomplete(format!("encoding the anchor: {e}")))?;
        let slot = |ab: &str| format!("kms-anchor-{}-{ab}", &integrity[..integrity.len().min(16)]);
        // A restore replaces both slots: the older inventory's anchors must not outrank it.
        let slots = match (reset.is_some(), body.counter.is_multiple_of(2)) {
            (true, _) => vec![slot("a"), slot("b")],
            (false, true) => vec![slot("a")],
            (false, false) => vec![slot("b")],
        };
        // Another process may anchor more meanwhile: its object is kept (and, covering more
        // changes, it is the newest), never replaced by this one.
        let ours = body.log.last;
        let keep = |v: &[u8]| {
            reset.is_none()
                && serde_json::from_slice::<Stored>(v)
                    .ok()
                    .and_then(|s| serde_json::from_str::<Body>(&s.body).ok())
                    .is_some_and(|b| b.log.last > ours)
        };
        let mut written = 0;
        let mut errors = Vec::new();
        for (name, serial) in places {
            match self.hsm.token(&name) {
                Ok(t) if t.serial() == serial => {
                    let all = slots
                        .iter()
                        .try_for_each(|slot| t.write_anchor(APPLICATION, slot, &stored, &keep));
                    match all {
                        Ok(()) => written += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                Ok(_) => errors.push(format!("token '{name}' is not serial {serial}")),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if written == 0 {
            return Err(EngineError::Incomplete(format!(
                "no token took the inventory anchor ({})",
                errors.join("; ")
            )));
        }
        self.anchored.store(body.log.last, Ordering::Relaxed);
        Ok(())
    }
}
