//! Sending framed syslog messages to the log server: TCP (RFC 6587 octet counting), optionally
//! TLS (RFC 5425) verified against the configured CA. Blocking, because the engine is.
//!
//! **What "delivered" means here.** TCP syslog has no application-level acknowledgement. One
//! [`send_all`] opens a connection, writes every frame, flushes, then half-closes (for TLS after
//! a `close_notify`) and waits for the server to close its side. A server closes only after it
//! has read everything up to our end of stream, so a clean close proves the server *read* every
//! frame; a reset, a timeout or any error means some frames may not have been taken, and the
//! caller keeps them to send again. What the server does after reading (its queues, its disk)
//! is its own durability: records are re-sent after an error, never dropped, so the log server
//! may see a record twice and drops duplicates by the `seq` parameter.

use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::config::SyslogConfig;

/// Connect, read and write timeout.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Send `frames` (already framed with [`super::syslog::frame`]) on one connection, and return
/// only once the server has read them all (see the module documentation).
pub fn send_all(cfg: &SyslogConfig, frames: &[Vec<u8>]) -> io::Result<()> {
    let address = cfg.address.as_str();
    let ctx =
        |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{address}: {what}: {e}"));
    let tcp = connect(address).map_err(|e| ctx("connect", e))?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(TIMEOUT)))
        .and_then(|()| tcp.set_nodelay(true))
        .map_err(|e| ctx("socket options", e))?;
    match &cfg.tls_ca {
        None => {
            let mut tcp = tcp;
            write_frames(&mut tcp, frames).map_err(|e| ctx("send", e))?;
            tcp.shutdown(Shutdown::Write).map_err(|e| ctx("close", e))?;
            await_close(&mut tcp).map_err(|e| ctx("waiting for the server to close", e))
        }
        Some(ca) => {
            let tls = client_config(ca)?;
            let name = server_name(cfg)?;
            let conn = ClientConnection::new(tls, name)
                .map_err(|e| io::Error::other(format!("{address}: TLS: {e}")))?;
            let mut stream = StreamOwned::new(conn, tcp);
            write_frames(&mut stream, frames).map_err(|e| ctx("TLS send", e))?;
            stream.conn.send_close_notify();
            stream.flush().map_err(|e| ctx("TLS close", e))?;
            stream
                .sock
                .shutdown(Shutdown::Write)
                .map_err(|e| ctx("close", e))?;
            match await_close(&mut stream) {
                Ok(()) => Ok(()),
                // The server closed its TCP side without a close_notify: it still read all.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
                Err(e) => Err(ctx("waiting for the server to close", e)),
            }
        }
    }
}

fn connect(address: &str) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = address.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn write_frames(w: &mut impl Write, frames: &[Vec<u8>]) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, w);
    for f in frames {
        out.write_all(f)?;
    }
    out.flush()
}

/// Read until the server closes. The syslog server sends nothing; anything it does send is
/// ignored.
fn await_close(r: &mut impl Read) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn client_config(ca: &Path) -> io::Result<Arc<ClientConfig>> {
    let bad = |e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: cannot read the log server's CA: {e}", ca.display()),
        )
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate found"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `tls_server_name`, or the host part of `address` (`host:port`, `[v6]:port`).
fn server_name(cfg: &SyslogConfig) -> io::Result<ServerName<'static>> {
    let name = match &cfg.tls_server_name {
        Some(n) => n.clone(),
        None => host_part(&cfg.address).to_owned(),
    };
    ServerName::try_from(name.clone()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not a name to verify the log server's certificate against: {e}"),
        )
    })
}

fn host_part(address: &str) -> &str {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _port)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_part("logs.example.org:6514"), "logs.example.org");
        assert_eq!(host_part("127.0.0.1:514"), "127.0.0.1");
        assert_eq!(host_part("[::1]:6514"), "::1");
        assert_eq!(host_part("logs"), "logs");
    }

    fn cfg(address: String) -> SyslogConfig {
        SyslogConfig {
            address,
            tls_ca: None,
            tls_server_name: None,
            app_name: "kms".into(),
            interval_secs: 2,
        }
    }

    /// Plain TCP: every frame arrives in order, and `send_all` returns only after the server
    /// read to the end and closed.
    #[test]
    fn sends_frames_and_waits_for_the_server_to_close() -> Result<(), Box<dyn std::error::Error>> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> io::Result<Vec<u8>> {
            let (mut s, _) = listener.accept()?;
            let mut all = Vec::new();
            s.read_to_end(&mut all)?;
            Ok(all)
        });
        let frames = vec![
            crate::audit::syslog::frame("one"),
            crate::audit::syslog::frame("two"),
        ];
        send_all(&cfg(addr.to_string()), &frames)?;
        let got = server.join().map_err(|_| "server thread panicked")??;
        assert_eq!(got, b"3 one3 two".to_vec());
        Ok(())
    }

    /// A server that goes away without reading everything resets the connection: not taken.
    #[test]
    fn a_server_that_stops_reading_midway_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> io::Result<()> {
            let (mut s, _) = listener.accept()?;
            let mut one = [0u8; 1];
            s.read_exact(&mut one)?;
            std::thread::sleep(Duration::from_millis(200));
            Ok(()) // dropped with unread data: the kernel answers with a reset
        });
        let frames = vec![crate::audit::syslog::frame(&"x".repeat(1000)); 50];
        let r = send_all(&cfg(addr.to_string()), &frames);
        server.join().map_err(|_| "server thread panicked")??;
        assert!(r.is_err(), "{r:?}");
        Ok(())
    }

    #[test]
    fn a_closed_port_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let e = send_all(&cfg(format!("127.0.0.1:{port}")), &[b"1 x".to_vec()]);
        let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("connect"), "{msg}");
        Ok(())
    }
}
