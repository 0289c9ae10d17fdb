//! HTTP/1.1 over an [`Accepted`] connection, for the doors that speak it (the JSON API, XKS):
//! hyper with keep-alive, and a watchdog over the connection's [`Activity`] that closes it when
//! a request head takes longer than `header_read_timeout` (counted from its first byte; the first
//! request's from the end of the handshake) or when nothing happens for `idle_timeout` with no
//! request in flight. A request in flight is never timed out (a token operation may take a
//! while) but its body must keep coming ([`super::conn::TimedBody`]).

use std::sync::Arc;

use hyper_util::rt::TokioIo;

use super::conn::{Activity, Tracked, Watched};
use super::door::Accepted;

/// Serve `app` on the connection until the client closes, a timeout expires or the service
/// drains. `prove_on_request`: the first request proves the connection (its client was admitted
/// by certificate already); otherwise the door proves it itself through the request's
/// [`super::Standing`] extension.
pub async fn serve(conn: Accepted, app: axum::Router, prove_on_request: bool) {
    let Accepted {
        tls,
        peer,
        standing,
        limits,
        mut draining,
        closer,
        ..
    } = conn;
    let activity = Activity::new();
    let evicted = standing.clone();
    let svc = Tracked::new(
        hyper_util::service::TowerToHyperService::new(app),
        Arc::clone(&activity),
        limits.idle_timeout,
        standing,
        prove_on_request,
    );
    let io = TokioIo::new(Watched::new(tls, Arc::clone(&activity)));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let mut drained = false;
    loop {
        if !drained && *draining.borrow() {
            conn.as_mut().graceful_shutdown();
            drained = true;
        }
        let wake = match activity.check(limits.header_read_timeout, limits.idle_timeout) {
            Ok(at) => at,
            Err(why) => {
                // Dropping the connection closes it; no request is in flight.
                closer.closed(why.as_str());
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
            // Still unproven and its slot went to a newcomer (counted by the listener).
            () = evicted.evicted() => return,
            r = draining.changed(), if !drained => {
                if r.is_err() {
                    // The listener is gone: drain as well.
                    conn.as_mut().graceful_shutdown();
                    drained = true;
                }
            }
        }
    }
}
