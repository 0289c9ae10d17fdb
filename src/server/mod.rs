//! The HTTPS service for applications (`kms serve`): tokio + hyper + axum over rustls with
//! client certificates required. Handlers are thin calls into the engine on blocking threads.
//!
//! - `tls`: rustls server config, client CA, private-key file checks.
//! - `api`: routes and handlers; `ROUTES` lists them for the OpenAPI check.
//! - `problem`: RFC 9457 errors with stable codes.
//! - `metrics`: Prometheus counters and histograms.

pub mod api;
mod metrics;
mod problem;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::identity::CertIdentity;
pub use api::{ConnInfo, ROUTES};
pub use metrics::Metrics;
pub use problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("accepting connections failed: {0}")]
    Accept(std::io::Error),
}

/// A bound, not yet running, service.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    config: ServerConfig,
    metrics: Arc<Metrics>,
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Server {
    /// Load TLS material and bind the listener (port 0 picks a free port).
    pub async fn bind(engine: Arc<Engine>, config: &ServerConfig) -> Result<Server, ServerError> {
        let tls = tls::server_config(&config.cert, &config.key, &config.client_ca)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let metrics = Arc::new(Metrics::new());
        let state = api::AppState {
            engine,
            metrics: Arc::clone(&metrics),
        };
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            app: api::router(state, config.max_body_bytes),
            config: config.clone(),
            metrics,
        })
    }

    /// The metrics `/metrics` serves (for gauges fed from outside the request path).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(ServerError::Accept)
    }

    /// Serve until `shutdown` completes, then stop accepting and give in-flight requests up to
    /// `shutdown_grace_secs` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let permits = Arc::new(Semaphore::new(self.config.max_connections));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (tcp, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Per-connection accept errors (e.g. EMFILE) must not stop the service.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let acceptor = self.acceptor.clone();
            let app = self.app.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| CertIdentity::from_der(c.as_ref()));
                let cert = match cert {
                    Some(Ok(c)) => Arc::new(c),
                    _ => {
                        tracing::warn!(%peer, "client certificate missing or unreadable");
                        return;
                    }
                };
                let svc = app.layer(Extension(ConnInfo { cert, peer }));
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), svc);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
        }
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
