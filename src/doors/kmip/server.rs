//! The KMIP listener: TTLV over mutual TLS (the `[server]` certificate, key and client CA). A
//! client's certificate must belong to a registered, enabled principal (admission, as for the
//! JSON service; a refusal is audited); each message is then served as that principal. A message
//! that cannot be read gets an Invalid Message response and the connection is closed; one over
//! the size cap is not read at all. Every message, read or not, has an audit record or is
//! counted into a per-connection summary (`engine/door_records.rs`) before it is answered.
//!
//! Accept, limits, handshake and drain are the connection layer's (`net/`, `[kmip]` limits); the
//! door admits by certificate and reads messages: the first byte of each within
//! `idle_timeout_secs`, the whole message within `header_read_timeout_secs` of its first byte.
//! A first whole message proves the connection (it keeps its slot).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ttlv;
use crate::config::{KmipConfig, ServerConfig};
use crate::engine::{Admission, Engine, ErrorKind};
use crate::identity::CertIdentity;
use crate::net::{
    Accepted, Admit, Closer, Door, Listener, Metrics, ServerError, Standing, TokenWork,
};

/// How long open KMIP connections get to finish their message after SIGTERM.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Why a half-received first message was cut short when its connection gave its slot up.
const EVICTED: &str = "the listener was full and this connection had not sent a whole first message within its first-request budget; connection closed";

/// The KMIP door: registered client certificates only, then TTLV messages.
struct KmipDoor {
    engine: Arc<Engine>,
    work: TokenWork,
    quiet: crate::net::conn::LogThrottle<std::net::IpAddr>,
}

pub struct KmipServer {
    listener: Listener<KmipDoor>,
}

impl KmipServer {
    pub async fn bind(
        engine: Arc<Engine>,
        kmip: &KmipConfig,
        server: &ServerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<KmipServer, ServerError> {
        let tls =
            crate::net::tls::server_config(&server.cert, &server.key, Some(&server.client_ca))?;
        let door = KmipDoor {
            engine,
            work: TokenWork::new("kmip", kmip.limits.max_token_work),
            quiet: crate::net::conn::LogThrottle::default(),
        };
        let listener =
            Listener::bind(door, kmip.listen, tls, kmip.limits, DRAIN_GRACE, metrics).await?;
        Ok(KmipServer { listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr()
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.listener.run(shutdown).await
    }
}

impl Door for KmipDoor {
    fn name(&self) -> &'static str {
        "kmip"
    }

    /// A registered, enabled principal's certificate ([`Engine::admit_connection`], audited).
    async fn admit(&self, peer: SocketAddr, cert: Option<&Arc<CertIdentity>>) -> Admit {
        let Some(cert) = cert else {
            return Admit::Refused("handshake-failed");
        };
        let (engine, cert, source) = (Arc::clone(&self.engine), Arc::clone(cert), peer.to_string());
        match self
            .work
            .run(move || engine.admit_connection(&cert, &source))
            .await
        {
            Ok(Ok(Admission::Admitted)) => Admit::Admitted,
            Ok(Ok(Admission::Refused { message, recorded })) => {
                if let Some(suppressed) = recorded {
                    tracing::warn!(%peer, suppressed, "KMIP: {message}");
                }
                Admit::Refused("unregistered")
            }
            // As on the JSON API: each message is identified on its own while the inventory is
            // away, and served again once it is back.
            Ok(Err(e)) if e.kind() == ErrorKind::InventoryUnavailable => {
                if let Some(suppressed) = self.quiet.allow(&peer.ip()) {
                    tracing::warn!(%peer, error = %e, suppressed, "KMIP: inventory unreachable: connection admitted, its messages are identified one by one");
                }
                Admit::Admitted
            }
            Ok(Err(e)) => {
                if let Some(suppressed) = self.quiet.allow(&peer.ip()) {
                    tracing::error!(%peer, error = %e, suppressed, "KMIP: cannot check the client certificate; connection closed");
                }
                Admit::Refused("admission-failed")
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "KMIP: connection admission task failed; connection closed");
                Admit::Refused("admission-failed")
            }
        }
    }

    async fn serve(&self, mut accepted: Accepted) {
        let Some(cert) = accepted.cert.clone() else {
            return;
        };
        let source = accepted.peer.to_string();
        let conn = Arc::new(crate::engine::DoorConnection::new(
            cert, &source, "kmip", "KMIP",
        ));
        let bounds = Bounds {
            idle: accepted.limits.idle_timeout,
            message: accepted.limits.header_read_timeout,
            standing: accepted.standing.clone(),
            closer: accepted.closer(),
            draining: accepted.draining.clone(),
            work: self.work.clone(),
        };
        serve_messages(&self.engine, &conn, &mut accepted.tls, bounds).await;
        let engine = Arc::clone(&self.engine);
        let _ = self
            .work
            .run(move || engine.door_connection_closed(&conn))
            .await;
    }
}

/// The connection layer's limits as the message loop applies them.
struct Bounds {
    /// No message started for this long: closed.
    idle: Duration,
    /// A message must be complete this long after its first byte.
    message: Duration,
    /// Proved once a first whole message was read (the certificate was admitted already).
    standing: Standing,
    closer: Closer,
    draining: tokio::sync::watch::Receiver<bool>,
    work: TokenWork,
}

/// Every message of one admitted connection, until it closes, goes quiet, or sends something
/// that cannot be framed. Each has an audit record (or is counted into a summary) before it is
/// answered: the engine records it when no operation did (`engine/door_records.rs`).
async fn serve_messages<S>(
    engine: &Arc<Engine>,
    conn: &Arc<crate::engine::DoorConnection>,
    tls: &mut S,
    mut b: Bounds,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let mut header = [0u8; 8];
        let mut got = 0;
        // The first byte of a next message: within the idle timeout, and none once draining.
        if *b.draining.borrow() {
            return;
        }
        let first = tokio::select! {
            r = tokio::time::timeout(b.idle, read_some(tls, &mut header, &mut got)) => r,
            _ = b.draining.changed() => return,
            // Unproven, and its slot went to a newcomer: nothing of a message was read.
            () = b.standing.evicted() => return,
        };
        match first {
            Ok(Ok(())) => {}
            // Nothing of a next message: the connection simply ended.
            Ok(Err(_)) => return,
            Err(_) => {
                b.closer.closed("idle-timeout");
                return;
            }
        }
        // From its first byte, the whole message within the header-read timeout.
        let deadline = tokio::time::Instant::now() + b.message;
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, read_full(tls, &mut header, &mut got)) => r,
            () = b.standing.evicted() => {
                return malformed(engine, conn, got, EVICTED.into()).await;
            }
        };
        match read {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return malformed(
                    engine,
                    conn,
                    got,
                    "the connection ended within the 8-byte header".into(),
                )
                .await;
            }
            Err(_) => {
                b.closer.closed("header-timeout");
                return malformed(
                    engine,
                    conn,
                    got,
                    format!("no complete header within {} s", b.message.as_secs()),
                )
                .await;
            }
        }
        let total = match ttlv::message_len(&header) {
            Ok(n) => n,
            Err(e) => {
                let why = e.to_string();
                if malformed_recorded(engine, conn, 8, why.clone()).await {
                    let _ = reply(tls, &super::items::invalid_message(&why)).await;
                }
                return;
            }
        };
        // The request may carry key material or a secret (Register): wiped when dropped.
        let mut message = zeroize::Zeroizing::new(vec![0u8; total]);
        message[..8].copy_from_slice(&header);
        let mut got = 0;
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, read_full(tls, &mut message[8..], &mut got)) => r,
            () = b.standing.evicted() => {
                return malformed(engine, conn, 8 + got, EVICTED.into()).await;
            }
        };
        match read {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return malformed(
                    engine,
                    conn,
                    8 + got,
                    format!("the connection ended after {} of {total} bytes", 8 + got),
                )
                .await;
            }
            Err(_) => {
                b.closer.closed("header-timeout");
                return malformed(
                    engine,
                    conn,
                    8 + got,
                    format!(
                        "only {} of {total} bytes within {} s",
                        8 + got,
                        b.message.as_secs()
                    ),
                )
                .await;
            }
        }
        let request = match ttlv::decode(&message) {
            Ok(r) => r,
            Err(e) => {
                let why = e.to_string();
                if malformed_recorded(engine, conn, total, why.clone()).await {
                    let _ = reply(tls, &super::items::invalid_message(&why)).await;
                }
                return;
            }
        };
        drop(message);
        // A registered client sent a whole message: its connection keeps its slot.
        b.standing.prove();
        let (engine2, conn2) = (Arc::clone(engine), Arc::clone(conn));
        let answer = b
            .work
            .run(move || {
                engine2.door_message(&conn2, total, |caller| {
                    let answer = super::ops::handle(&engine2, caller, &request);
                    let answered = super::items::answered(&answer);
                    (answer, answered)
                })
            })
            .await;
        match answer {
            Ok(Ok(answer)) => {
                if reply(tls, &answer).await.is_err() {
                    return;
                }
            }
            // Not identified (refused and audited by `identify`), or the record could not be
            // written: answer that much, then close.
            Ok(Err(e)) => {
                let _ = reply(
                    tls,
                    &super::items::invalid_message(&format!("not served: {e}")),
                )
                .await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// Record (or count) a message that could not be read; the connection then closes unanswered.
async fn malformed(
    engine: &Arc<Engine>,
    conn: &Arc<crate::engine::DoorConnection>,
    got: usize,
    why: String,
) {
    malformed_recorded(engine, conn, got, why).await;
}

/// Record (or count) a message that could not be read; `true` once its record is written (or
/// counted), so the door may answer it.
async fn malformed_recorded(
    engine: &Arc<Engine>,
    conn: &Arc<crate::engine::DoorConnection>,
    got: usize,
    why: String,
) -> bool {
    let (engine, conn) = (Arc::clone(engine), Arc::clone(conn));
    match tokio::task::spawn_blocking(move || engine.door_malformed(&conn, got, &why)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a malformed KMIP message was not recorded");
            false
        }
        Err(_) => false,
    }
}

/// Read at least one byte into `buf` (from `got` on), counting it in `got`.
async fn read_some<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut [u8],
    got: &mut usize,
) -> std::io::Result<()> {
    let n = s.read(&mut buf[*got..]).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    *got += n;
    Ok(())
}

/// Fill `buf`, counting the bytes received in `got` (kept when the read times out).
async fn read_full<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut [u8],
    got: &mut usize,
) -> std::io::Result<()> {
    while *got < buf.len() {
        let n = s.read(&mut buf[*got..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        *got += n;
    }
    Ok(())
}

async fn reply<S: tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    item: &ttlv::Item,
) -> std::io::Result<()> {
    s.write_all(&ttlv::encode(item)).await?;
    s.flush().await
}
