//! The doors that listen on their own port beside the JSON API (XKS, KMIP), started the one way:
//! bound, logged, and served on a task until the service's stop signal.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ServiceError;
use crate::net::ServerError;

/// A boxed future, `Send`, as a door's listener is given and returns.
type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A door's own listener as the service runs it: where it is bound, and serving until `stop`
/// resolves (then letting open requests finish).
pub(super) trait DoorListener: Send + 'static {
    fn local_addr(&self) -> Result<SocketAddr, ServerError>;
    fn run_until(self, stop: Boxed<()>) -> Boxed<Result<(), ServerError>>;
}

impl DoorListener for crate::doors::xks::XksServer {
    fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.local_addr()
    }
    fn run_until(self, stop: Boxed<()>) -> Boxed<Result<(), ServerError>> {
        Box::pin(self.run(stop))
    }
}

impl DoorListener for crate::doors::kmip::server::KmipServer {
    fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.local_addr()
    }
    fn run_until(self, stop: Boxed<()>) -> Boxed<Result<(), ServerError>> {
        Box::pin(self.run(stop))
    }
}

/// Serve `listener` on a task until `stop_rx` turns true; `name` is the door in the log ("the
/// XKS proxy", "KMIP"). Returns the bound address and the task (it ends once the door has
/// drained; a listener that fails is logged as stopped).
pub(super) fn spawn_door(
    name: &'static str,
    listener: impl DoorListener,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), ServiceError> {
    let addr = listener
        .local_addr()
        .map_err(|e| ServiceError::Start(e.to_string()))?;
    tracing::info!(%addr, "serving {name}");
    let mut rx = stop_rx.clone();
    let task = tokio::spawn(async move {
        let stop = Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        if let Err(e) = listener.run_until(stop).await {
            tracing::error!(error = %e, "the {name} listener stopped");
        }
    });
    Ok((addr, task))
}
