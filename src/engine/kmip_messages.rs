//! An audit record for every KMIP message (issue 23). A message whose operations were audited
//! (every engine call is) needs nothing more; this file covers the rest — a message that could
//! not be read (bad header, truncated, not TTLV), one that is TTLV but no valid request, and one
//! answered without an engine call (Query, Discover Versions, a request missing its Unique
//! Identifier). Each gets a `kmip.malformed` or `kmip.message` record with the principal and
//! certificate fingerprint (through `identify`), the peer address, the message's length and why
//! it was refused — never its bytes, which may carry key material.
//!
//! Rate-limited per connection so a flood cannot fill the disk: the first [`RECORDED_EACH`] such
//! messages of a connection get one record each; after that they are counted, and one
//! `kmip.messages-summarised` record (how many, how many malformed, the last reason) is written
//! at most every [`SUMMARY_EVERY`] and when the connection closes. A connection that sends a
//! message kms cannot frame is closed after its answer, so each further flood message costs the
//! sender a TLS handshake and an admission.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Caller, Engine, EngineError};
use crate::identity::CertIdentity;
use crate::inventory::{written_on_this_thread, Outcome};

/// Records written one by one per connection before its messages are only counted.
pub const RECORDED_EACH: u32 = 16;
/// While counting, at most one summary record per connection this often (and one at close).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// One KMIP connection's identity and its count of messages no operation recorded.
#[derive(Debug)]
pub struct KmipConnection {
    cert: Arc<CertIdentity>,
    peer: String,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Door records written one by one.
    recorded: u32,
    /// Messages counted, not recorded, since the last summary.
    counted: u64,
    malformed: u64,
    first_counted_at: Option<OffsetDateTime>,
    last_why: String,
    last_summary: Option<Instant>,
    /// The caller of this connection's last identified message, for summaries.
    caller: Option<Caller>,
}

/// How kms answered a message it read, for its record (no bytes of the message).
#[derive(Debug, Clone)]
pub struct Answered {
    pub ok: bool,
    /// e.g. "Query: Success" or "Invalid Message: not a KMIP Request Message".
    pub summary: String,
}

impl KmipConnection {
    pub fn new(cert: Arc<CertIdentity>, peer: &str) -> KmipConnection {
        KmipConnection {
            cert,
            peer: peer.to_owned(),
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Take a slot for one record; `false`: this message is counted instead.
    fn take_slot(&self, why: &str, malformed: bool) -> bool {
        let mut c = self.lock();
        if c.recorded < RECORDED_EACH {
            c.recorded += 1;
            return true;
        }
        c.counted += 1;
        if malformed {
            c.malformed += 1;
        }
        c.first_counted_at
            .get_or_insert_with(OffsetDateTime::now_utc);
        c.last_why = why.chars().take(200).collect();
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding the lock leaves plain counters: keep counting.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine {
    /// A message the KMIP door could not read (header, length, truncated, not TTLV): recorded
    /// (or counted) before the door answers and closes the connection. `received` is how many
    /// bytes of it arrived; none of them is recorded.
    pub fn kmip_malformed(
        &self,
        conn: &KmipConnection,
        received: usize,
        why: &str,
    ) -> Result<(), EngineError> {
        let detail = format!(
            "KMIP message from {} could not be read ({received} bytes received): {why}",
            conn.peer
        );
        if !conn.take_slot(why, true) {
            return self.kmip_summary_if_due(conn);
        }
        // A refused identity is recorded by `identify` itself.
        let caller = self.identify(&conn.cert, &conn.peer, Some("KMIP message".into()))?;
        conn.lock().caller = Some(caller.clone());
        self.kmip_door_record(&caller, "kmip.malformed", Outcome::Error, detail)
    }

    /// A message read as TTLV: identify its sender (a refusal is audited there and returned),
    /// serve it with `serve`, and if no audit record came of it, record (or count) it.
    pub fn kmip_message<T>(
        &self,
        conn: &KmipConnection,
        len: usize,
        serve: impl FnOnce(&Caller) -> (T, Answered),
    ) -> Result<T, EngineError> {
        let caller = self.identify(&conn.cert, &conn.peer, Some("KMIP request".into()))?;
        conn.lock().caller = Some(caller.clone());
        let before = written_on_this_thread();
        let (answer, answered) = serve(&caller);
        if written_on_this_thread() != before {
            return Ok(answer);
        }
        let malformed = !answered.ok && answered.summary.starts_with("Invalid Message");
        if conn.take_slot(&answered.summary, malformed) {
            let detail = format!(
                "KMIP message of {len} bytes from {}, answered without an operation record: {}",
                conn.peer, answered.summary
            );
            let outcome = if answered.ok {
                Outcome::Ok
            } else {
                Outcome::Error
            };
            let action = if malformed {
                "kmip.malformed"
            } else {
                "kmip.message"
            };
            self.kmip_door_record(&caller, action, outcome, detail)?;
        } else {
            self.kmip_summary_if_due(conn)?;
        }
        Ok(answer)
    }

    /// The connection ended: one summary of what was counted and not yet summarised.
    pub fn kmip_connection_closed(&self, conn: &KmipConnection) {
        if let Err(e) = self.kmip_summary(conn) {
            tracing::error!(error = %e, peer = %conn.peer, "could not record the summary of a KMIP connection's messages");
        }
    }

    fn kmip_summary_if_due(&self, conn: &KmipConnection) -> Result<(), EngineError> {
        let due = conn
            .lock()
            .last_summary
            .is_some_and(|t| t.elapsed() >= SUMMARY_EVERY);
        if due {
            self.kmip_summary(conn)?;
        }
        Ok(())
    }

    fn kmip_summary(&self, conn: &KmipConnection) -> Result<(), EngineError> {
        let (counted, malformed, since, why, caller) = {
            let mut c = conn.lock();
            if c.counted == 0 {
                return Ok(());
            }
            c.last_summary = Some(Instant::now());
            let taken = (
                c.counted,
                c.malformed,
                c.first_counted_at.take(),
                std::mem::take(&mut c.last_why),
                c.caller.clone(),
            );
            c.counted = 0;
            c.malformed = 0;
            taken
        };
        let Some(caller) = caller else {
            // Only counted messages follow recorded ones, which identified the caller.
            return Ok(());
        };
        let since = since
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let detail = format!(
            "{counted} further KMIP messages from {} on one connection since {since} were counted, not recorded one by one (the first {RECORDED_EACH} were): {malformed} malformed, {} answered without an operation record; the last: {why}",
            conn.peer,
            counted - malformed
        );
        let outcome = if malformed > 0 {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        self.kmip_door_record(&caller, "kmip.messages-summarised", outcome, detail)
    }

    fn kmip_door_record(
        &self,
        caller: &Caller,
        action: &str,
        outcome: Outcome,
        detail: String,
    ) -> Result<(), EngineError> {
        let entry = self.entry(caller, action, None, None, outcome, Some(detail));
        self.inventory
            .append_audit(&entry)
            .map(drop)
            .map_err(EngineError::AuditFailed)
    }
}
