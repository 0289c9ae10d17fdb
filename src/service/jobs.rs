//! The service's background work beside the doors: audit shipping to the log server (one node
//! ships: the singleton lease holder), with failures logged once per kind and interval.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ServiceError;
use crate::engine::Engine;
use crate::net::Metrics;

/// How often the same shipping error is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A thread that ships the audit trail every `interval_secs` while the service runs and once
/// more when it stops. A failure keeps the records in the outbox; the next round retries.
pub(super) struct AuditShipper {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl AuditShipper {
    /// `None` when no log server is configured.
    pub(super) fn start(
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<AuditShipper>, ServiceError> {
        let Some(syslog) = &engine.config().audit.syslog else {
            return Ok(None);
        };
        let interval = Duration::from_secs(syslog.interval_secs);
        tracing::info!(server = %syslog.address, ?interval, "shipping the audit trail");
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kms-audit-ship".into())
            .spawn(move || {
                let mut log = FailureLog::default();
                loop {
                    ship_once(&engine, &metrics, &mut log);
                    match stopped.recv_timeout(interval) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                ship_once(&engine, &metrics, &mut log);
            })
            .map_err(|e| {
                ServiceError::Start(format!("cannot start the audit shipping thread: {e}"))
            })?;
        Ok(Some(AuditShipper { stop, thread }))
    }

    /// Run the last round and wait for it.
    pub(super) fn finish(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the audit shipping thread panicked");
        }
    }
}

fn ship_once(engine: &Engine, metrics: &Metrics, log: &mut FailureLog) {
    // One node ships (the singleton lease holder): two shippers would send records twice.
    if !engine.holds_singletons() {
        return;
    }
    match engine.ship_audit() {
        Ok(report) => {
            metrics.set_audit_backlog(report.backlog);
            log.recovered(report.sent);
        }
        Err(e) => {
            if let Ok(backlog) = engine.audit_backlog() {
                metrics.set_audit_backlog(backlog);
            }
            log.failed(&e.to_string());
        }
    }
}

/// A failure message with every run of digits, whatever its length, as one '#': a backlog growing
/// from 7 to 10 records is still the same failure.
fn failure_key(message: &str) -> String {
    let mut key = String::with_capacity(message.len());
    let mut in_digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                key.push('#');
            }
            in_digits = true;
        } else {
            key.push(c);
            in_digits = false;
        }
    }
    key
}

/// Logs a shipping failure at warn, but the same failure at most once per [`WARN_EVERY`].
#[derive(Default)]
struct FailureLog {
    /// The last failure (digits masked, so a growing backlog count is still "the same error")
    /// and when it was last logged.
    last: Option<(String, Instant)>,
}

impl FailureLog {
    fn failed(&mut self, message: &str) {
        let key = failure_key(message);
        let repeat = self
            .last
            .as_ref()
            .is_some_and(|(k, at)| *k == key && at.elapsed() < WARN_EVERY);
        if !repeat {
            tracing::warn!(error = %message, "cannot ship the audit trail now; the records stay in the outbox and are retried");
            self.last = Some((key, Instant::now()));
        }
    }

    fn recovered(&mut self, sent: usize) {
        if self.last.take().is_some() {
            tracing::info!(sent, "audit shipping resumed");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_growing_backlog_is_the_same_failure() {
        let a =
            super::failure_key("127.0.0.1:37339: refused (os error 111); 7 wait (after record 23)");
        let b = super::failure_key(
            "127.0.0.1:37339: refused (os error 111); 10 wait (after record 23)",
        );
        assert_eq!(a, b);
        assert_ne!(a, super::failure_key("127.0.0.1:37339: timed out; 7 wait"));
    }
}
