//! The connection layer under every network door (the JSON API, the XKS proxy, KMIP, and any
//! door added later): one accept path, so each door gets every limit by construction.
//!
//! - `door`: the [`Door`] trait and the [`Listener`] that runs one: accept, per-address slots,
//!   admission ([`Slots`]), the TLS handshake timeout, the door's own check, drain on shutdown.
//! - `http`: HTTP/1.1 over an admitted connection with header-read, idle and body-gap timeouts.
//! - `conn`: the pieces those are made of (per-address limits, activity tracking, log throttle).
//! - `slots`: proven / unproven connections, the reserve, eviction past the first-request budget.
//! - `work`: [`TokenWork`], engine calls on blocking threads within a per-door budget.
//! - `tls`: rustls server config, client CA, private-key file checks.
//! - `metrics`: the service's Prometheus metrics, per door for connections.
//! - `error`: [`ServerError`].
//!
//! The limits are [`crate::config::DoorLimits`], the same keys in `[server]`, `[xks]`, `[kmip]`.

pub mod conn;
pub mod door;
mod error;
pub mod http;
mod metrics;
pub mod slots;
pub(crate) mod tls;
pub mod work;

pub use door::{Accepted, Admit, Closer, Door, Listener};
pub use error::ServerError;
pub use metrics::Metrics;
pub use slots::Standing;
pub use work::{TokenWork, WorkFailed};

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
