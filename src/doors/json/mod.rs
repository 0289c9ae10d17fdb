//! The HTTPS service for applications (`kms serve`): the JSON API door over the connection layer
//! ([`crate::net`]), client certificates required. Handlers are thin calls into the engine on
//! blocking threads.
//!
//! - `api`: routes and handlers; `ROUTES` lists them for the OpenAPI check.
//! - `problem`: RFC 9457 errors with stable codes.
//!
//! Accept, limits, handshake, admission, timeouts and drain are `net/`'s; this module says only
//! what the JSON API door admits (a registered, enabled principal's certificate) and serves.

pub mod api;
mod bodies;
mod call;
mod problem;
mod unrouted;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;

use crate::config::ServerConfig;
use crate::engine::{Admission, Engine, ErrorKind};
use crate::identity::CertIdentity;
use crate::net::conn::LogThrottle;
pub use crate::net::{shutdown_signal, Metrics, ServerError};
use crate::net::{Accepted, Admit, Door, Listener, TokenWork};
pub use api::{ConnInfo, ROUTES};
pub use problem::Problem;

/// The JSON API door: who is admitted, and the routes.
struct ApiDoor {
    engine: Arc<Engine>,
    app: axum::Router,
    work: TokenWork,
    quiet: LogThrottle<(IpAddr, &'static str)>,
}

impl Door for ApiDoor {
    fn name(&self) -> &'static str {
        "api"
    }

    /// Only a certificate of a registered, enabled principal ([`Engine::admit_connection`],
    /// audited) gets HTTP.
    async fn admit(&self, peer: SocketAddr, cert: Option<&Arc<CertIdentity>>) -> Admit {
        let Some(cert) = cert else {
            if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "no-certificate")) {
                tracing::warn!(%peer, suppressed, "client certificate missing or unreadable");
            }
            return Admit::Refused("handshake-failed");
        };
        let engine = Arc::clone(&self.engine);
        let for_engine = Arc::clone(cert);
        let source = peer.to_string();
        let decision = self
            .work
            .run(move || engine.admit_connection(&for_engine, &source))
            .await;
        match decision {
            Ok(Ok(Admission::Admitted)) => Admit::Admitted,
            Ok(Ok(Admission::Refused { message, recorded })) => {
                // Logged exactly when the refusal was recorded in the audit trail.
                if let Some(suppressed) = recorded {
                    tracing::warn!(%peer, suppressed, "{message}");
                }
                Admit::Refused("unregistered")
            }
            // The inventory is away (a restart, a failover): admit, and let each request be
            // identified on its own (503 inventory-unavailable until the database is back), so
            // that service resumes by itself without clients having to notice.
            Ok(Err(e)) if e.kind() == ErrorKind::InventoryUnavailable => {
                if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "inventory-unavailable")) {
                    tracing::warn!(%peer, error = %e, suppressed, "inventory unreachable: connection admitted, its requests are identified one by one");
                }
                Admit::Admitted
            }
            Ok(Err(e)) => {
                if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "admission-failed")) {
                    tracing::error!(%peer, error = %e, suppressed, "cannot check the client certificate; connection closed");
                }
                Admit::Refused("admission-failed")
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "connection admission task failed; connection closed");
                Admit::Refused("admission-failed")
            }
        }
    }

    async fn serve(&self, conn: Accepted) {
        let Some(cert) = conn.cert.clone() else {
            return;
        };
        let app = self.app.clone().layer(Extension(ConnInfo {
            cert,
            peer: conn.peer,
        }));
        crate::net::http::serve(conn, app, true).await;
    }
}

/// A bound, not yet running, service.
pub struct Server {
    listener: Listener<ApiDoor>,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Load TLS material and bind the listener (port 0 picks a free port).
    pub async fn bind(engine: Arc<Engine>, config: &ServerConfig) -> Result<Server, ServerError> {
        let tls =
            crate::net::tls::server_config(&config.cert, &config.key, Some(&config.client_ca))?;
        let metrics = Arc::new(Metrics::new());
        let work = TokenWork::new("api", config.limits.max_token_work);
        let state = api::AppState {
            engine: Arc::clone(&engine),
            metrics: Arc::clone(&metrics),
            work: work.clone(),
        };
        let door = ApiDoor {
            engine,
            app: api::router(state, config.max_body_bytes),
            work,
            quiet: LogThrottle::default(),
        };
        let listener = Listener::bind(
            door,
            config.listen,
            tls,
            config.limits,
            Duration::from_secs(config.shutdown_grace_secs),
            Arc::clone(&metrics),
        )
        .await?;
        Ok(Server { listener, metrics })
    }

    /// The metrics `/metrics` serves (for gauges fed from outside the request path, and the
    /// other doors' connection counts).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes, then stop accepting and give in-flight requests up to
    /// `shutdown_grace_secs` to finish (see [`crate::net::door`] for every bound on a
    /// connection).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.listener.run(shutdown).await
    }
}
