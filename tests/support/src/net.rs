//! Connections from chosen loopback addresses (127.0.0.N), for per-address limits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::Res;

/// Loopback address 127.0.0.`last`.
pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `addr` from `source`.
pub async fn tcp_from(addr: SocketAddr, source: IpAddr) -> Res<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    Ok(sock.connect(addr).await?)
}

/// A TLS connection to `addr` from `source` with the client settings `tls`, handshake done.
pub async fn tls_from(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    source: IpAddr,
) -> Res<TlsStream<TcpStream>> {
    let tcp = tcp_from(addr, source).await?;
    Ok(tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?)
}
