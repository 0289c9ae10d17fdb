//! A minimal client for the service: mutual TLS (rustls) and HTTP/1.1 keep-alive over one
//! connection. Used by the end-to-end tests and `scripts/bench`'s load generator; applications
//! written in Rust can use it the same way.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(String),
}

/// TLS settings trusting `ca` and, when given, presenting `cert`/`key` as the client identity.
pub fn tls_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let cfg_err = |e: &dyn std::fmt::Display| ClientError::Config(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| cfg_err(&e))? {
        roots
            .add(c.map_err(|e| cfg_err(&e))?)
            .map_err(|e| cfg_err(&e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err(&e))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| cfg_err(&e))?
                .collect::<Result<_, _>>()
                .map_err(|e| cfg_err(&e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| cfg_err(&e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| cfg_err(&e))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One keep-alive connection to the service.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

/// A response: status, body bytes, and when to retry (a 503's `Retry-After`, in seconds).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Request(e.to_string()))
    }
}

impl Connection {
    /// Connect and complete the TLS handshake (a refused client certificate fails here or on the
    /// first request, as TLS 1.3 reports client-auth failures after the handshake).
    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Connection, ClientError> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(ClientError::Connect)?;
        tcp.set_nodelay(true).map_err(ClientError::Connect)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(ClientError::Handshake)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection closed");
            }
        });
        Ok(Connection {
            sender,
            authority: addr.to_string(),
        })
    }

    /// Send one request; `body` is sent as JSON.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        reason: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let bytes = match body {
            Some(v) => serde_json::to_vec(v).map_err(|e| ClientError::Request(e.to_string()))?,
            None => Vec::new(),
        };
        self.raw(method, path, bytes, reason).await
    }

    /// Send raw body bytes (for tests of malformed input).
    pub async fn raw(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        reason: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(r) = reason {
            req = req.header("x-kms-reason", r);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }
}
