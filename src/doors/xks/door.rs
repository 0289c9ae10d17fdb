//! The XKS listener: its TLS, its admission (the configured client name) and its limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;

use super::{http, Peer, XksState};
use crate::config::XksConfig;
use crate::engine::Engine;
use crate::net::{Metrics, ServerError};

/// The XKS door: the XKS routes only; with `client_name`, only a client certificate carrying it.
struct XksDoor {
    app: axum::Router,
    client_name: Option<String>,
}

impl crate::net::Door for XksDoor {
    fn name(&self) -> &'static str {
        "xks"
    }

    async fn admit(
        &self,
        peer: SocketAddr,
        cert: Option<&Arc<crate::identity::CertIdentity>>,
    ) -> crate::net::Admit {
        let Some(want) = &self.client_name else {
            return crate::net::Admit::Admitted;
        };
        let named = cert.is_some_and(|id| {
            id.sans
                .iter()
                .any(|s| s.strip_prefix("DNS:") == Some(want.as_str()))
                || id
                    .subject
                    .split(',')
                    .any(|p| p.trim() == format!("CN={want}"))
        });
        if named {
            crate::net::Admit::Admitted
        } else {
            tracing::warn!(%peer, expected = %want, "XKS client certificate does not carry the configured name; connection closed");
            crate::net::Admit::Refused("unregistered")
        }
    }

    /// A connection is proven by its first request whose SigV4 signature verifies (`http::serve`).
    async fn serve(&self, conn: crate::net::Accepted) {
        let app = self.app.clone().layer(Extension(Peer(conn.peer)));
        crate::net::http::serve(conn, app, false).await;
    }
}

/// How long open XKS requests get to finish after SIGTERM.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The XKS listener: its own TLS (optionally mutual), the XKS routes only, over the connection
/// layer with the `[xks]` limits.
pub struct XksServer {
    listener: crate::net::Listener<XksDoor>,
}

impl XksServer {
    pub async fn bind(
        engine: Arc<Engine>,
        config: &XksConfig,
        metrics: Arc<Metrics>,
    ) -> Result<XksServer, ServerError> {
        let tls =
            crate::net::tls::server_config(&config.cert, &config.key, config.client_ca.as_deref())?;
        let mut secrets = Vec::new();
        for c in &config.credentials {
            let secret = c
                .secret
                .resolve_kind(
                    &format!("XKS credential {}", c.access_key_id),
                    "SigV4 secret",
                )
                .map_err(|e| ServerError::Config(format!("credential {}: {e}", c.access_key_id)))?;
            secrets.push((c.access_key_id.clone(), secret));
        }
        let state = XksState {
            engine,
            metrics: Arc::clone(&metrics),
            config: Arc::new(config.clone()),
            secrets: Arc::new(secrets),
            work: crate::net::TokenWork::new("xks", config.limits.max_token_work),
        };
        let app = axum::Router::new().fallback(http::handle).with_state(state);
        let door = XksDoor {
            app,
            client_name: config.client_name.clone(),
        };
        let listener = crate::net::Listener::bind(
            door,
            config.listen,
            tls,
            config.limits,
            DRAIN_GRACE,
            metrics,
        )
        .await?;
        Ok(XksServer { listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves, then let open requests finish (up to 10 s).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.listener.run(shutdown).await
    }
}
