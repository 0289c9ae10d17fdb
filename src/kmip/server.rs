//! The KMIP listener: TTLV over mutual TLS (the `[server]` certificate, key and client CA). A
//! client's certificate must belong to a registered, enabled principal (admission, as for the
//! JSON service; a refusal is audited); each message is then served as that principal. A message
//! that cannot be read gets an Invalid Message response and the connection is closed; one over
//! the size cap is not read at all. Every message, read or not, has an audit record or is
//! counted into a per-connection summary (`engine/kmip_messages.rs`) before it is answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::ttlv;
use crate::config::{KmipConfig, ServerConfig};
use crate::engine::{Admission, Engine};
use crate::identity::CertIdentity;
use crate::server::ServerError;

/// How long a client may take to send a whole message once it started, and to stay idle.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct KmipServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    engine: Arc<Engine>,
}

impl KmipServer {
    pub async fn bind(
        engine: Arc<Engine>,
        kmip: &KmipConfig,
        server: &ServerConfig,
    ) -> Result<KmipServer, ServerError> {
        let tls =
            crate::server::tls::server_config(&server.cert, &server.key, Some(&server.client_ca))?;
        let listener =
            TcpListener::bind(kmip.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: kmip.listen,
                    source,
                })?;
        Ok(KmipServer {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            engine,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(ServerError::Accept)
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let permits = Arc::new(tokio::sync::Semaphore::new(256));
        tokio::pin!(shutdown);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = &mut shutdown => break,
            };
            let (tcp, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "KMIP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let acceptor = self.acceptor.clone();
            let engine = Arc::clone(&self.engine);
            tasks.spawn(async move {
                let _permit = permit;
                serve(acceptor, engine, tcp, peer).await;
            });
        }
        drop(self.listener);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    }
}

async fn serve(
    acceptor: TlsAcceptor,
    engine: Arc<Engine>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let mut tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        _ => {
            tracing::debug!(%peer, "KMIP TLS handshake refused or timed out");
            return;
        }
    };
    let Some(cert) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| CertIdentity::from_der(c.as_ref()).ok())
        .map(Arc::new)
    else {
        return;
    };
    let source = peer.to_string();
    {
        let (engine, cert, source) = (Arc::clone(&engine), Arc::clone(&cert), source.clone());
        match tokio::task::spawn_blocking(move || engine.admit_connection(&cert, &source)).await {
            Ok(Ok(Admission::Admitted)) => {}
            _ => {
                let _ = tls.shutdown().await;
                return;
            }
        }
    }
    let conn = Arc::new(crate::engine::KmipConnection::new(cert, &source));
    serve_messages(&engine, &conn, &mut tls).await;
    let _ = tokio::task::spawn_blocking(move || engine.kmip_connection_closed(&conn)).await;
}

/// Every message of one admitted connection, until it closes, goes quiet, or sends something
/// that cannot be framed. Each has an audit record (or is counted into a summary) before it is
/// answered: the engine records it when no operation did (`engine/kmip_messages.rs`).
async fn serve_messages<S>(
    engine: &Arc<Engine>,
    conn: &Arc<crate::engine::KmipConnection>,
    tls: &mut S,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let mut header = [0u8; 8];
        let mut got = 0;
        let read = tokio::time::timeout(IDLE_TIMEOUT, read_full(tls, &mut header, &mut got)).await;
        match read {
            Ok(Ok(())) => {}
            // Nothing of a next message: the connection simply ended.
            _ if got == 0 => return,
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
                return malformed(
                    engine,
                    conn,
                    got,
                    format!("no complete header within {} s", IDLE_TIMEOUT.as_secs()),
                )
                .await;
            }
        }
        let total = match ttlv::message_len(&header) {
            Ok(n) => n,
            Err(e) => {
                let why = e.to_string();
                if malformed_recorded(engine, conn, 8, why.clone()).await {
                    let _ = reply(tls, &super::ops::invalid_message(&why)).await;
                }
                return;
            }
        };
        // The request may carry key material or a secret (Register): wiped when dropped.
        let mut message = zeroize::Zeroizing::new(vec![0u8; total]);
        message[..8].copy_from_slice(&header);
        let mut got = 0;
        match tokio::time::timeout(READ_TIMEOUT, read_full(tls, &mut message[8..], &mut got)).await
        {
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
                return malformed(
                    engine,
                    conn,
                    8 + got,
                    format!(
                        "only {} of {total} bytes within {} s",
                        8 + got,
                        READ_TIMEOUT.as_secs()
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
                    let _ = reply(tls, &super::ops::invalid_message(&why)).await;
                }
                return;
            }
        };
        drop(message);
        let (engine2, conn2) = (Arc::clone(engine), Arc::clone(conn));
        let answer = tokio::task::spawn_blocking(move || {
            engine2.kmip_message(&conn2, total, |caller| {
                let answer = super::ops::handle(&engine2, caller, &request);
                let answered = super::ops::answered(&answer);
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
                    &super::ops::invalid_message(&format!("not served: {e}")),
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
    conn: &Arc<crate::engine::KmipConnection>,
    got: usize,
    why: String,
) {
    malformed_recorded(engine, conn, got, why).await;
}

/// Record (or count) a message that could not be read; `true` once its record is written (or
/// counted), so the door may answer it.
async fn malformed_recorded(
    engine: &Arc<Engine>,
    conn: &Arc<crate::engine::KmipConnection>,
    got: usize,
    why: String,
) -> bool {
    let (engine, conn) = (Arc::clone(engine), Arc::clone(conn));
    match tokio::task::spawn_blocking(move || engine.kmip_malformed(&conn, got, &why)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a malformed KMIP message was not recorded");
            false
        }
        Err(_) => false,
    }
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
