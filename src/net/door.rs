//! The one accept path of every network door. A door (the JSON API, XKS, KMIP, and any later
//! one) implements [`Door`]: its name, its check right after the TLS handshake, and how it serves
//! an admitted connection. [`Listener`] does the rest, the same for each:
//!
//! 1. accept; at most `max_connections_per_address` open from one IP address (closed at once:
//!    `address-limit`);
//! 2. a slot ([`Slots`]): unproven connections stay out of the `reserved_connections`; when the
//!    door is full the oldest unproven one past `first_request_budget` gives its slot up
//!    (`evicted`), else the newcomer is closed (`busy`);
//! 3. the TLS handshake within `handshake_timeout`;
//! 4. the door's admission ([`Door::admit`]); a refusal gets a TLS close_notify;
//! 5. [`Door::serve`] with an [`Accepted`] connection: HTTP doors hand it to
//!    [`super::http::serve`] (header-read, idle and body-gap timeouts), stream doors read it
//!    themselves with the same limits;
//! 6. on shutdown: stop accepting, tell every connection to drain ([`Accepted::draining`]), wait
//!    up to the grace period for them to close.
//!
//! Every closure the layer decides is counted in `kms_connections_closed_total{door, reason}`;
//! `kms_connections_open{door}` follows the slots.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::conn::{AddressLimits, LogThrottle};
use super::slots::{Slots, Standing};
use super::{Metrics, ServerError};
use crate::config::DoorLimits;
use crate::identity::CertIdentity;

/// What a door says about a peer right after its TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Serve it.
    Admitted,
    /// Close it; the reason is the metric label (the door logs and audits as it sees fit).
    Refused(&'static str),
}

/// One front door of the service over the connection layer.
pub trait Door: Send + Sync + 'static {
    /// `api`, `xks`, `kmip`: the metrics label and log field.
    fn name(&self) -> &'static str;

    /// May this peer go on? `cert`: its client certificate, when it sent one that can be read.
    fn admit(
        &self,
        peer: SocketAddr,
        cert: Option<&Arc<CertIdentity>>,
    ) -> impl Future<Output = Admit> + Send;

    /// Serve an admitted connection until it ends, honouring [`Accepted::draining`].
    fn serve(&self, conn: Accepted) -> impl Future<Output = ()> + Send;
}

/// An admitted connection, handed to its door.
pub struct Accepted {
    pub tls: TlsStream<TcpStream>,
    pub peer: SocketAddr,
    pub cert: Option<Arc<CertIdentity>>,
    /// Prove the connection (out of the evictable pool) once the client showed it is legitimate.
    pub standing: Standing,
    pub limits: DoorLimits,
    /// Becomes `true` when the service shuts down: finish the request in hand, take no more.
    pub draining: watch::Receiver<bool>,
    pub(crate) closer: Closer,
}

impl Accepted {
    /// Count a closure the door decided (`header-timeout`, `idle-timeout`, ...).
    pub fn closed(&self, reason: &'static str) {
        self.closer.closed(reason);
    }

    /// A handle that counts closures, for code that outlives the borrow of `self`.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }
}

/// Counts closures of one door's connections.
#[derive(Clone)]
pub struct Closer {
    door: &'static str,
    metrics: Arc<Metrics>,
}

impl Closer {
    pub fn closed(&self, reason: &'static str) {
        self.metrics.connection_closed(self.door, reason);
    }
}

/// A bound, not yet running, door.
pub struct Listener<D: Door> {
    door: Arc<D>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: DoorLimits,
    grace: Duration,
    metrics: Arc<Metrics>,
}

impl<D: Door> Listener<D> {
    /// Bind `listen` (port 0 picks a free port) with `tls` for the handshake.
    pub async fn bind(
        door: D,
        listen: SocketAddr,
        tls: rustls::ServerConfig,
        limits: DoorLimits,
        grace: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Listener<D>, ServerError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        Ok(Listener {
            door: Arc::new(door),
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            limits,
            grace,
            metrics,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(ServerError::Accept)
    }

    /// Serve until `shutdown` completes, then stop accepting, tell connections to drain and give
    /// them up to the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let name = self.door.name();
        let limits = self.limits;
        let slots = Slots::new(
            limits.max_connections,
            limits.reserved_connections,
            limits.first_request_budget,
        );
        let per_address = AddressLimits::new(limits.max_connections_per_address);
        let quiet = Arc::new(LogThrottle::<(IpAddr, &'static str)>::default());
        let (drain, draining) = watch::channel(false);
        let closer = Closer {
            door: name,
            metrics: Arc::clone(&self.metrics),
        };
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Per-connection accept errors (e.g. EMFILE) must not stop the door.
                        tracing::warn!(door = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Some(address_slot) = per_address.try_open(peer.ip()) else {
                closer.closed("address-limit");
                if let Some(suppressed) = quiet.allow(&(peer.ip(), "address-limit")) {
                    tracing::warn!(
                        door = name,
                        %peer,
                        limit = limits.max_connections_per_address,
                        suppressed,
                        "too many connections from this address; connection closed (max_connections_per_address)"
                    );
                }
                continue;
            };
            let Some(waiter) = slots.enter() else {
                closer.closed("busy");
                if let Some(suppressed) = quiet.allow(&(peer.ip(), "busy")) {
                    tracing::warn!(door = name, %peer, suppressed, "too many connections waiting for a slot; connection closed (max_connections)");
                }
                continue;
            };
            let connection = Connection {
                door: Arc::clone(&self.door),
                acceptor: self.acceptor.clone(),
                limits,
                peer,
                quiet: Arc::clone(&quiet),
                closer: closer.clone(),
                draining: draining.clone(),
            };
            let (slots, metrics) = (Arc::clone(&slots), Arc::clone(&self.metrics));
            tokio::spawn(async move {
                let _address_slot = address_slot;
                // A slot, waiting (before the handshake) up to the handshake timeout for one.
                let deadline = std::time::Instant::now() + limits.handshake_timeout;
                let (ticket, evicted) = match waiter.acquire(deadline).await {
                    Ok(t) => t,
                    Err(_) => {
                        connection.closer.closed("busy");
                        if let Some(suppressed) = connection.quiet.allow(&(peer.ip(), "busy")) {
                            tracing::warn!(
                                door = name,
                                %peer,
                                limit = limits.max_connections,
                                suppressed,
                                "every connection slot is held by proven clients or by newcomers within their first-request budget; connection closed (max_connections)"
                            );
                        }
                        return;
                    }
                };
                if evicted {
                    connection.closer.closed("evicted");
                }
                if *connection.draining.borrow() {
                    return;
                }
                metrics.set_connections_open(name, slots.open());
                let door = Arc::clone(&connection.door);
                let opened = tokio::select! {
                    a = connection.open(tcp, ticket.standing()) => a,
                    () = ticket.evicted() => None,
                };
                // From here the door watches `standing.evicted()` itself (net/http.rs, KMIP).
                if let Some(accepted) = opened {
                    door.serve(accepted).await;
                }
                if ticket.standing().is_proven() {
                    tracing::trace!(door = name, %peer, "connection closed");
                } else {
                    tracing::debug!(door = name, %peer, "unproven connection closed");
                }
                drop(ticket);
                metrics.set_connections_open(name, slots.open());
            });
        }
        drop(self.listener);
        let _ = drain.send(true);
        tokio::select! {
            () = slots.drained() => tracing::info!(door = name, "all connections closed"),
            () = tokio::time::sleep(self.grace) => tracing::warn!(door = name, "grace period over; closing remaining connections"),
        }
        Ok(())
    }
}

/// One accepted TCP connection and what serving it needs.
struct Connection<D> {
    door: Arc<D>,
    acceptor: TlsAcceptor,
    limits: DoorLimits,
    peer: SocketAddr,
    quiet: Arc<LogThrottle<(IpAddr, &'static str)>>,
    closer: Closer,
    draining: watch::Receiver<bool>,
}

impl<D: Door> Connection<D> {
    /// Handshake and admission; the connection to hand to the door.
    async fn open(self, tcp: TcpStream, standing: Standing) -> Option<Accepted> {
        let peer = self.peer;
        let name = self.door.name();
        let handshake =
            tokio::time::timeout(self.limits.handshake_timeout, self.acceptor.accept(tcp));
        let mut tls = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.closer.closed("handshake-failed");
                if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "handshake-failed")) {
                    tracing::warn!(door = name, %peer, error = %e, suppressed, "TLS handshake refused");
                }
                return None;
            }
            Err(_) => {
                self.closer.closed("handshake-timeout");
                if let Some(suppressed) = self.quiet.allow(&(peer.ip(), "handshake-timeout")) {
                    tracing::warn!(door = name, %peer, suppressed, "TLS handshake timed out");
                }
                return None;
            }
        };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| CertIdentity::from_der(c.as_ref()).ok())
            .map(Arc::new);
        if let Admit::Refused(reason) = self.door.admit(peer, cert.as_ref()).await {
            self.closer.closed(reason);
            // close_notify, so the client sees an orderly end rather than a reset.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncWriteExt::shutdown(&mut tls),
            )
            .await;
            return None;
        }
        Some(Accepted {
            tls,
            peer,
            cert,
            standing,
            limits: self.limits,
            draining: self.draining,
            closer: self.closer,
        })
    }
}
