//! What the doors record that no operation does (issue 23): a message a binary door could not
//! read (bad header, truncated, not its encoding), one it read but could not serve, one answered
//! without an engine call; a request whose signature failed; the caller a signed request's
//! credential names. A message whose operations were audited (every engine call is) needs nothing
//! more. Each record carries the principal and certificate fingerprint (through `identify`), the
//! peer address, the message's length and why it was refused — never its bytes, which may carry
//! key material.
//!
//! Rate-limited per connection so a flood cannot fill the disk: the first [`RECORDED_EACH`] such
//! messages of a connection get one record each; after that they are counted, and one
//! `{door}.messages-summarised` record (how many, how many malformed, the last reason) is written
//! at most every [`SUMMARY_EVERY`] and when the connection closes. A door closes a connection
//! that sends a message it cannot frame after its answer, so each further flood message costs
//! the sender a TLS handshake and an admission.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Caller, CallerKind, Engine, EngineError, Refusal};
use crate::identity::CertIdentity;
use crate::inventory::Outcome;
use crate::model::Role;

/// Records written one by one per connection before its messages are only counted.
pub const RECORDED_EACH: u32 = 16;
/// While counting, at most one summary record per connection this often (and one at close).
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// One connection's identity and its count of messages no operation recorded.
#[derive(Debug)]
pub struct DoorConnection {
    cert: Arc<CertIdentity>,
    peer: String,
    /// The door's audit action prefix (`{door}.malformed`) and its name in texts.
    action_prefix: &'static str,
    label: &'static str,
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
    /// The message was no valid request (counted as malformed).
    pub malformed: bool,
    /// Each operation and its result in the door's words, e.g. "Get: Success".
    pub summary: String,
}

impl DoorConnection {
    /// `action_prefix`: what the door's records are called (`{action_prefix}.malformed`);
    /// `label`: the door's name in texts.
    pub fn new(
        cert: Arc<CertIdentity>,
        peer: &str,
        action_prefix: &'static str,
        label: &'static str,
    ) -> DoorConnection {
        DoorConnection {
            cert,
            peer: peer.to_owned(),
            action_prefix,
            label,
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

/// A request authenticated by a shared-secret credential that names its principal, who acts as
/// an application.
pub struct SignedRequest<'a> {
    pub principal: &'a str,
    pub source: &'a str,
    pub reason: String,
    /// The door's name in texts (`the {door} credential's principal ...`).
    pub door: &'a str,
    /// The audit action of a refusal.
    pub action: &'a str,
}

impl Engine {
    /// The caller a signed request's credential acts as: its principal, which must exist, be
    /// enabled, be an application and be allowed from the request's source. A refusal is
    /// audited.
    pub fn identify_signed(&self, req: SignedRequest) -> Result<Caller, EngineError> {
        let SignedRequest {
            principal,
            source,
            reason,
            door,
            action,
        } = req;
        let found = match self.inventory.principal(principal) {
            Ok(p) => Some(p),
            Err(crate::inventory::InventoryError::NoSuchPrincipal(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let refusal = match &found {
            None => Some((
                Refusal::UnknownPrincipal,
                format!("the {door} credential's principal '{principal}' is not registered (`kms principal add {principal} --role application`)"),
            )),
            Some(p) if p.disabled_at.is_some() => Some((
                Refusal::PrincipalDisabled,
                format!("principal '{}' is disabled", p.name),
            )),
            Some(p) if p.role != Role::Application => Some((
                Refusal::WrongRole,
                format!("principal '{}' is {}, not an application: {door} credentials act as applications", p.name, p.role),
            )),
            Some(p) if !super::access::source_allowed(&p.allowed_networks, source) => Some((
                Refusal::SourceNotAllowed,
                format!(
                    "principal '{}' may connect only from {}, not from {source}",
                    p.name,
                    p.allowed_networks.join(", ")
                ),
            )),
            Some(_) => None,
        };
        let caller = Caller {
            tally: Default::default(),
            actor: principal.to_owned(),
            host: source.to_owned(),
            reason: Some(reason),
            kind: CallerKind::Principal {
                role: Role::Application,
            },
            role: Some(Role::Application),
            os_user: None,
            cert_fingerprint: None,
        };
        if let Some((why, message)) = refusal {
            self.door_record(&caller, action, Outcome::Denied, message.clone())?;
            return Err(EngineError::denied(why, message));
        }
        Ok(caller)
    }

    /// A request refused before it had a caller (its signature failed, or it named nothing
    /// this door serves), on the record as `actor` from `source`.
    pub fn record_refusal(
        &self,
        actor: String,
        source: &str,
        action: &str,
        what: &str,
    ) -> Result<(), EngineError> {
        let caller = Caller {
            tally: Default::default(),
            actor,
            host: source.to_owned(),
            reason: None,
            kind: CallerKind::Principal {
                role: Role::Application,
            },
            role: None,
            os_user: None,
            cert_fingerprint: None,
        };
        self.door_record(&caller, action, Outcome::Denied, what.to_owned())
    }

    /// A message the door could not read (header, length, truncated, not its encoding):
    /// recorded (or counted) before the door answers and closes the connection. `received` is how many
    /// bytes of it arrived; none of them is recorded.
    pub fn door_malformed(
        &self,
        conn: &DoorConnection,
        received: usize,
        why: &str,
    ) -> Result<(), EngineError> {
        let detail = format!(
            "{} message from {} could not be read ({received} bytes received): {why}",
            conn.label, conn.peer
        );
        if !conn.take_slot(why, true) {
            return self.summary_if_due(conn);
        }
        // A refused identity is recorded by `identify` itself.
        let caller = self.identify(
            &conn.cert,
            &conn.peer,
            Some(format!("{} message", conn.label)),
        )?;
        conn.lock().caller = Some(caller.clone());
        let action = format!("{}.malformed", conn.action_prefix);
        self.door_record(&caller, &action, Outcome::Error, detail)
    }

    /// A message read in the door's encoding: identify its sender (a refusal is audited there and returned),
    /// serve it with `serve`, and if no audit record came of it, record (or count) it.
    pub fn door_message<T>(
        &self,
        conn: &DoorConnection,
        len: usize,
        serve: impl FnOnce(&Caller) -> (T, Answered),
    ) -> Result<T, EngineError> {
        let caller = self.identify(
            &conn.cert,
            &conn.peer,
            Some(format!("{} request", conn.label)),
        )?;
        conn.lock().caller = Some(caller.clone());
        let before = caller.tally.count();
        let (answer, answered) = serve(&caller);
        if caller.tally.count() != before {
            return Ok(answer);
        }
        let malformed = answered.malformed;
        if conn.take_slot(&answered.summary, malformed) {
            let detail = format!(
                "{} message of {len} bytes from {}, answered without an operation record: {}",
                conn.label, conn.peer, answered.summary
            );
            let outcome = if answered.ok {
                Outcome::Ok
            } else {
                Outcome::Error
            };
            let action = if malformed {
                format!("{}.malformed", conn.action_prefix)
            } else {
                format!("{}.message", conn.action_prefix)
            };
            self.door_record(&caller, &action, outcome, detail)?;
        } else {
            self.summary_if_due(conn)?;
        }
        Ok(answer)
    }

    /// The connection ended: one summary of what was counted and not yet summarised.
    pub fn door_connection_closed(&self, conn: &DoorConnection) {
        if let Err(e) = self.summary(conn) {
            tracing::error!(error = %e, peer = %conn.peer, door = conn.label, "could not record the summary of a connection's messages");
        }
    }

    fn summary_if_due(&self, conn: &DoorConnection) -> Result<(), EngineError> {
        let due = conn
            .lock()
            .last_summary
            .is_some_and(|t| t.elapsed() >= SUMMARY_EVERY);
        if due {
            self.summary(conn)?;
        }
        Ok(())
    }

    fn summary(&self, conn: &DoorConnection) -> Result<(), EngineError> {
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
            "{counted} further {} messages from {} on one connection since {since} were counted, not recorded one by one (the first {RECORDED_EACH} were): {malformed} malformed, {} answered without an operation record; the last: {why}",
            conn.label,
            conn.peer,
            counted - malformed
        );
        let outcome = if malformed > 0 {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        let action = format!("{}.messages-summarised", conn.action_prefix);
        self.door_record(&caller, &action, outcome, detail)
    }

    fn door_record(
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
