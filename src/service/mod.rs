//! `kms serve`, composed: the async runtime, the three network doors (the JSON API, the AWS
//! XKS proxy, KMIP) on the one connection layer, and the service's background jobs (the
//! singleton lease, checkpoints and the anchor re-check, restore drills, the lifecycle
//! scheduler, audit shipping), all over one engine. The CLI only parses `kms serve`'s arguments
//! and prints where the doors listen.

mod doors;
mod error;
mod jobs;

use std::sync::Arc;

use crate::doors::json::Server;
use crate::engine::Engine;

pub use error::ServiceError;

/// Where the doors listen, once they are bound.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub api: std::net::SocketAddr,
    pub xks: Option<std::net::SocketAddr>,
    pub kmip: Option<std::net::SocketAddr>,
}

/// Run the service until SIGTERM/SIGINT: `listen` overrides `[server] listen`; `on_listening`
/// is told the bound addresses once every door listens.
pub fn serve(
    engine: Engine,
    listen: Option<std::net::SocketAddr>,
    on_listening: impl FnOnce(&Listening),
) -> Result<(), ServiceError> {
    let mut config = engine
        .config()
        .server
        .clone()
        .ok_or_else(|| ServiceError::NoServer(engine.config().path.clone()))?;
    if let Some(l) = listen {
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
        .map_err(|e| ServiceError::Start(format!("cannot start the async runtime: {e}")))?;
    let engine = Arc::new(engine);
    let (served, shipper) = runtime.block_on(async {
        let server = Server::bind(Arc::clone(&engine), &config)
            .await
            .map_err(|e| ServiceError::Start(e.to_string()))?;
        let addr = server
            .local_addr()
            .map_err(|e| ServiceError::Start(e.to_string()))?;
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
        let shipper = jobs::AuditShipper::start(Arc::clone(&engine), server.metrics())?;
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
                crate::doors::xks::XksServer::bind(Arc::clone(&engine), &x, server.metrics())
                    .await
                    .map_err(|e| ServiceError::Start(format!("[xks]: {e}")))?,
            ),
        };
        // KMIP for the clients that speak it, on its own port, through the same engine.
        let kmip = match engine.config().kmip.clone() {
            None => None,
            Some(k) => Some(
                crate::doors::kmip::server::KmipServer::bind(
                    Arc::clone(&engine),
                    &k,
                    &config,
                    server.metrics(),
                )
                .await
                .map_err(|e| ServiceError::Start(format!("[kmip]: {e}")))?,
            ),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let kmip = kmip
            .map(|k| doors::spawn_door("KMIP", k, &stop_rx))
            .transpose()?;
        let xks = xks
            .map(|x| doors::spawn_door("XKS", x, &stop_rx))
            .transpose()?;
        on_listening(&Listening {
            api: addr,
            xks: xks.as_ref().map(|(a, _)| *a),
            kmip: kmip.as_ref().map(|(a, _)| *a),
        });
        tracing::info!(%addr, "serving");
        let served = server
            .run(async move {
                crate::net::shutdown_signal().await;
                let _ = stop_tx.send(true);
            })
            .await
            .map_err(|e| ServiceError::Start(e.to_string()));
        for (_, task) in xks.into_iter().chain(kmip) {
            let _ = task.await;
        }
        drop(stop_rx);
        ticker.abort();
        lifecycle.abort();
        lease.abort();
        if let Some(d) = drill {
            d.abort();
        }
        Ok::<_, ServiceError>((served, shipper))
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
