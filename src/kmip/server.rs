//! The KMIP listener: TTLV over mutual TLS (the `[server]` certificate, key and client CA). A
//! client's certificate must belong to a registered, enabled principal (admission, as for the
//! JSON service; a refusal is audited); each message is then served as that principal. A message
//! that cannot be read gets an Invalid Message response and the connection is closed; one over
//! the size cap is not read at all.

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
    loop {
        let mut header = [0u8; 8];
        match tokio::time::timeout(IDLE_TIMEOUT, tls.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let total = match ttlv::message_len(&header) {
            Ok(n) => n,
            Err(e) => {
                let _ = reply(&mut tls, &super::ops::invalid_message(&e.to_string())).await;
                return;
            }
        };
        // The request may carry key material or a secret (Register): wiped when dropped.
        let mut message = zeroize::Zeroizing::new(vec![0u8; total]);
        message[..8].copy_from_slice(&header);
        match tokio::time::timeout(READ_TIMEOUT, tls.read_exact(&mut message[8..])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let request = match ttlv::decode(&message) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply(&mut tls, &super::ops::invalid_message(&e.to_string())).await;
                return;
            }
        };
        let (engine, cert, source) = (Arc::clone(&engine), Arc::clone(&cert), source.clone());
        let answer = tokio::task::spawn_blocking(move || {
            match engine.identify(&cert, &source, Some("KMIP request".into())) {
                Ok(caller) => super::ops::handle(&engine, &caller, &request),
                Err(e) => super::ops::invalid_message(&format!("not authenticated: {e}")),
            }
        })
        .await;
        let Ok(answer) = answer else { return };
        if reply(&mut tls, &answer).await.is_err() {
            return;
        }
    }
}

async fn reply<S: tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    item: &ttlv::Item,
) -> std::io::Result<()> {
    s.write_all(&ttlv::encode(item)).await?;
    s.flush().await
}
