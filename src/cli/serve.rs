//! `kms serve`: the mutual-TLS HTTPS service, and (with `[audit.syslog]`) the audit shipping
//! loop beside it.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;

use super::CliError;
use crate::engine::Engine;
use crate::server::{Metrics, Server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address, overriding [server] listen (e.g. 127.0.0.1:0 for any free port).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(engine: Engine, args: ServeArgs) -> Result<(), CliError> {
    let mut config = engine.config().server.clone().ok_or_else(|| {
        CliError::Usage(format!(
            "{} has no [server] section; see hsm-config/kms.toml",
            engine.config().path.display()
        ))
    })?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    // Marks this inventory's tokens as held by a running service (key ceremonies check it).
    let _lock = engine.hold_service_lock()?;
    // Blocking threads carry the PKCS#11 and SQLite calls; sessions bound the real concurrency.
    let sessions: usize = engine.config().tokens.values().map(|t| t.sessions).sum();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads((sessions * 2).clamp(4, 256))
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
    let engine = Arc::new(engine);
    let (served, shipper) = runtime.block_on(async {
        let server = Server::bind(Arc::clone(&engine), &config)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let addr = server
            .local_addr()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        // Once-only work (scheduler, drills, shipping, periodic checkpoints) runs on the holder
        // of the singleton lease; it is renewed every third of its length (engine/nodes.rs).
        {
            let e = Arc::clone(&engine);
            let _ = tokio::task::spawn_blocking(move || e.renew_singletons()).await;
        }
        let lease = {
            let e = Arc::clone(&engine);
            let every =
                std::time::Duration::from_millis(engine.config().node.lease_secs * 1000 / 3);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let e = Arc::clone(&e);
                    let _ = tokio::task::spawn_blocking(move || e.renew_singletons()).await;
                }
            })
        };
        let shipper = AuditShipper::start(Arc::clone(&engine), server.metrics())?;
        // Sign a checkpoint over the audit chain head every checkpoint_secs (when it moved).
        let ticker_engine = Arc::clone(&engine);
        let every = std::time::Duration::from_secs(engine.config().audit.checkpoint_secs);
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let e = Arc::clone(&ticker_engine);
                // Every node checks the inventory against the token's anchor (issue 23).
                let a = Arc::clone(&e);
                let _ = tokio::task::spawn_blocking(move || a.recheck_anchor()).await;
                if e.holds_singletons() {
                    let _ = tokio::task::spawn_blocking(move || e.checkpoint_on_exit()).await;
                }
            }
        });
        // The restore drill over every backup copy, every [backup] drill_every_secs.
        let drill = engine.config().backup.as_ref().map(|b| {
            let e = Arc::clone(&engine);
            let every = std::time::Duration::from_secs(b.drill_every_secs);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if !e.holds_singletons() {
                        continue;
                    }
                    let e = Arc::clone(&e);
                    match tokio::task::spawn_blocking(move || e.scheduled_drill()).await {
                        Ok(Ok(r)) if r.failures() > 0 => {
                            tracing::error!(
                                failures = r.failures(),
                                "restore drill found problems; see `kms backup verify`"
                            )
                        }
                        Ok(Ok(_)) => tracing::info!("restore drill passed"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "restore drill could not run"),
                        Err(_) => {}
                    }
                }
            })
        });
        // Lifecycle: finish interrupted procedures, rotate what is due, destroy versions whose
        // window ended, carry out approved disposals — at start and every check_every_secs.
        let lifecycle = {
            let e = Arc::clone(&engine);
            let every = std::time::Duration::from_secs(engine.config().lifecycle.check_every_secs);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if !e.holds_singletons() {
                        continue;
                    }
                    let e = Arc::clone(&e);
                    match tokio::task::spawn_blocking(move || e.run_due(&e.scheduler_caller()))
                        .await
                    {
                        Ok(Ok(r)) if !r.failed.is_empty() || !r.repaired.failed.is_empty() => {
                            tracing::error!(
                                failed = r.failed.len() + r.repaired.failed.len(),
                                "scheduled lifecycle procedures failed; see `kms schedule run`"
                            )
                        }
                        Ok(Ok(r)) => {
                            if !(r.rotated.is_empty()
                                && r.destroyed.is_empty()
                                && r.disposed.is_empty())
                            {
                                tracing::info!(
                                    rotated = r.rotated.len(),
                                    destroyed = r.destroyed.len(),
                                    disposed = r.disposed.len(),
                                    "lifecycle procedures done"
                                )
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "lifecycle scheduler could not run")
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        // The AWS KMS external key store proxy, on its own listener, through the same engine.
        let xks = match engine.config().xks.clone() {
            None => None,
            Some(x) => Some(
                crate::server::xks::XksServer::bind(Arc::clone(&engine), &x, server.metrics())
                    .await
                    .map_err(|e| CliError::Usage(format!("[xks]: {e}")))?,
            ),
        };
        // KMIP for the clients that speak it, on its own port, through the same engine.
        let kmip = match engine.config().kmip.clone() {
            None => None,
            Some(k) => Some(
                crate::kmip::server::KmipServer::bind(
                    Arc::clone(&engine),
                    &k,
                    &config,
                    server.metrics(),
                )
                .await
                .map_err(|e| CliError::Usage(format!("[kmip]: {e}")))?,
            ),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut kmip_addr = None;
        let kmip_task = match kmip {
            None => None,
            Some(k) => {
                let kaddr = k.local_addr().map_err(|e| CliError::Usage(e.to_string()))?;
                kmip_addr = Some(kaddr);
                tracing::info!(addr = %kaddr, "serving KMIP");
                let mut rx = stop_rx.clone();
                Some(tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    if let Err(e) = k.run(stop).await {
                        tracing::error!(error = %e, "the KMIP listener stopped");
                    }
                }))
            }
        };
        let mut xks_addr = None;
        let xks_task = match xks {
            None => None,
            Some(x) => {
                let xaddr = x.local_addr().map_err(|e| CliError::Usage(e.to_string()))?;
                xks_addr = Some(xaddr);
                tracing::info!(addr = %xaddr, "serving the XKS proxy");
                let mut rx = stop_rx.clone();
                Some(tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    if let Err(e) = x.run(stop).await {
                        tracing::error!(error = %e, "the XKS listener stopped");
                    }
                }))
            }
        };
        // One line on stdout that scripts and tests read to find the port (then the XKS one).
        outln!("kms listening on https://{addr}");
        if let Some(x) = xks_addr {
            outln!("kms xks listening on https://{x}");
        }
        if let Some(k) = kmip_addr {
            outln!("kms kmip listening on {k}");
        }
        tracing::info!(%addr, "serving");
        let served = server
            .run(async move {
                crate::server::shutdown_signal().await;
                let _ = stop_tx.send(true);
            })
            .await
            .map_err(|e| CliError::Usage(e.to_string()));
        if let Some(t) = xks_task {
            let _ = t.await;
        }
        if let Some(t) = kmip_task {
            let _ = t.await;
        }
        drop(stop_rx);
        ticker.abort();
        lifecycle.abort();
        lease.abort();
        if let Some(d) = drill {
            d.abort();
        }
        Ok::<_, CliError>((served, shipper))
    })?;
    // At shutdown: a last checkpoint over everything the service recorded.
    engine.checkpoint_on_exit();
    // In-flight requests have finished: ship what they recorded, once more, before exiting.
    if let Some(shipper) = shipper {
        shipper.finish();
    }
    // Another node takes the once-only work over at once instead of after the lease expires.
    engine.release_singletons();
    served
}

/// How often the same shipping error is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A thread that ships the audit trail every `interval_secs` while the service runs and once
/// more when it stops. A failure keeps the records in the outbox; the next round retries.
struct AuditShipper {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl AuditShipper {
    /// `None` when no log server is configured.
    fn start(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Result<Option<AuditShipper>, CliError> {
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
            .map_err(|e| CliError::Usage(format!("cannot start the audit shipping thread: {e}")))?;
        Ok(Some(AuditShipper { stop, thread }))
    }

    /// Run the last round and wait for it.
    fn finish(self) {
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
