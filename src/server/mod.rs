//! The HTTPS service for applications (`kms serve`): tokio + hyper + axum over rustls with
//! client certificates required. Handlers are thin calls into the engine on blocking threads.
//!
//! - `tls`: rustls server config, client CA, private-key file checks.
//! - `api`: routes and handlers; `ROUTES` lists them for the OpenAPI check.
//! - `problem`: RFC 9457 errors with stable codes.
//! - `metrics`: Prometheus counters and histograms.
//! - `conn`: per-address connection limits, header-read and idle timeouts.

pub mod api;
mod conn;
mod metrics;
mod problem;
pub mod sigv4;
pub(crate) mod tls;
pub mod xks;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::engine::{Admission, Engine};
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
    #[error("{0}")]
    Config(String),
}

/// A bound, not yet running, service.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Server {
    /// Load TLS material and bind the listener (port 0 picks a free port).
    pub async fn bind(engine: Arc<Engine>, config: &ServerConfig) -> Result<Server, ServerError> {
        let tls = tls::server_config(&config.cert, &config.key, Some(&config.client_ca))?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let metrics = Arc::new(Metrics::new());
        let state = api::AppState {
            engine: Arc::clone(&engine),
            metrics: Arc::clone(&metrics),
        };
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            app: api::router(state, config.max_body_bytes),
            config: config.clone(),
            metrics,
            engine,
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
    ///
    /// Each connection is bounded: at most `max_connections_per_address` open from one IP
    /// address (counted from accept), [`HANDSHAKE_TIMEOUT`] for the TLS handshake, then closed at
    /// once unless its certificate belongs to a registered, enabled principal
    /// ([`Engine::admit_connection`], audited), then `header_read_timeout_secs` for each request
    /// head and `idle_timeout_secs` without a request in flight and without bytes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let permits = Arc::new(Semaphore::new(self.config.max_connections));
        let per_address = conn::AddressLimits::new(self.config.max_connections_per_address);
        let quiet = Arc::new(conn::LogThrottle::<(IpAddr, &'static str)>::default());
        let limits = Limits {
            header: Duration::from_secs(self.config.header_read_timeout_secs),
            idle: Duration::from_secs(self.config.idle_timeout_secs),
        };
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
            let Some(slot) = per_address.try_open(peer.ip()) else {
                self.metrics.connection_closed("address-limit");
                if let Some(suppressed) = quiet.allow(&(peer.ip(), "address-limit")) {
                    tracing::warn!(
                        %peer,
                        limit = self.config.max_connections_per_address,
                        suppressed,
                        "too many connections from this address; connection closed (max_connections_per_address)"
                    );
                }
                drop(tcp);
                continue;
            };
            let connection = Connection {
                acceptor: self.acceptor.clone(),
                app: self.app.clone(),
                engine: Arc::clone(&self.engine),
                metrics: Arc::clone(&self.metrics),
                quiet: Arc::clone(&quiet),
                limits,
                peer,
            };
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let _slot = slot;
                connection.serve(tcp, watcher).await;
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

/// The configured time bounds of a connection.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header: Duration,
    idle: Duration,
}

/// One accepted TCP connection and what serving it needs.
struct Connection {
    acceptor: TlsAcceptor,
    app: axum::Router,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    quiet: Arc<conn::LogThrottle<(IpAddr, &'static str)>>,
    limits: Limits,
    peer: SocketAddr,
}

impl Connection {
    /// Handshake, admission, then HTTP/1.1 until the client closes, a timeout expires or the
    /// service shuts down.
    async fn serve(
        self,
        tcp: tokio::net::TcpStream,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let peer = self.peer;
        let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.metrics.connection_closed("handshake-failed");
                if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "handshake-failed")) {
                    tracing::warn!(%peer, error = %e, suppressed, "TLS handshake refused");
                }
                return;
            }
            Err(_) => {
                self.metrics.connection_closed("handshake-timeout");
                if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "handshake-timeout")) {
                    tracing::warn!(%peer, suppressed, "TLS handshake timed out");
                }
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
                self.metrics.connection_closed("handshake-failed");
                if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "no-certificate")) {
                    tracing::warn!(%peer, suppressed, "client certificate missing or unreadable");
                }
                return;
            }
        };
        if !self.admitted(&cert).await {
            // close_notify, so the client sees an orderly end rather than a reset.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncWriteExt::shutdown(&mut tls),
            )
            .await;
            return;
        }
        let activity = conn::Activity::new();
        let svc = self.app.layer(Extension(ConnInfo { cert, peer }));
        let svc = conn::Tracked::new(
            hyper_util::service::TowerToHyperService::new(svc),
            Arc::clone(&activity),
            self.limits.idle,
        );
        let io = TokioIo::new(conn::Watched::new(tls, Arc::clone(&activity)));
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, svc);
        let conn = watcher.watch(conn);
        tokio::pin!(conn);
        loop {
            let wake = match activity.check(self.limits.header, self.limits.idle) {
                Ok(at) => at,
                Err(why) => {
                    // Dropping the connection closes it; no request is in flight.
                    self.metrics.connection_closed(why.as_str());
                    tracing::debug!(%peer, reason = why.as_str(), "connection closed");
                    return;
                }
            };
            tokio::select! {
                r = &mut conn => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(wake.into()) => {}
                () = activity.head_started() => {}
            }
        }
    }

    /// Ask the engine whether this certificate may send requests (it audits a refusal).
    async fn admitted(&self, cert: &Arc<CertIdentity>) -> bool {
        let engine = Arc::clone(&self.engine);
        let for_engine = Arc::clone(cert);
        let source = self.peer.to_string();
        let peer = self.peer;
        let decision =
            tokio::task::spawn_blocking(move || engine.admit_connection(&for_engine, &source))
                .await;
        match decision {
            Ok(Ok(Admission::Admitted)) => true,
            Ok(Ok(Admission::Refused { message, recorded })) => {
                self.metrics.connection_closed("unregistered");
                // Logged exactly when the refusal was recorded in the audit trail.
                if let Some(suppressed) = recorded {
                    tracing::warn!(%peer, suppressed, "{message}");
                }
                false
            }
            Ok(Err(e)) => {
                self.metrics.connection_closed("admission-failed");
                if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "admission-failed")) {
                    tracing::error!(%peer, error = %e, suppressed, "cannot check the client certificate; connection closed");
                }
                false
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "connection admission task failed; connection closed");
                false
            }
        }
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
