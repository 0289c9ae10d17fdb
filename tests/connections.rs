//! Bounded connections in `kms serve` (issue 17, finding 3): a real service on loopback with a
//! short header-read timeout (2 s) and idle timeout (5 s) and the default per-address limit (32).
//! Attackers connect from 127.0.0.2 and up, so the registered client on 127.0.0.1 is another
//! source address.

use common::service::Service;
use common::*;
use kms_testkit as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `max_connections_per_address`.
const PER_ADDRESS: usize = 32;

/// A service whose `[server]` has the short timeouts above (and the default per-address limit).
fn start() -> Res<Service> {
    Service::start_with(|env| {
        let cfg = std::fs::read_to_string(env.config())?;
        if !cfg.contains("\n[server]\n") {
            return Err("kms.toml has no [server] section".into());
        }
        let cfg = cfg.replacen(
            "\n[server]\n",
            &format!(
                "\n[server]\nheader_read_timeout_secs = {}\nidle_timeout_secs = {}\n",
                HEADER_TIMEOUT.as_secs(),
                IDLE_TIMEOUT.as_secs()
            ),
            1,
        );
        std::fs::write(env.config(), cfg)?;
        Ok(())
    })
}

/// Read until the server closes the connection (EOF or an error such as a reset); how long it
/// took. Fails if the server sends data or keeps the connection open past `limit`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Res<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 512];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Err(_) => Err(format!("connection still open after {limit:?}").into()),
        Ok(Ok(0)) | Ok(Err(_)) => Ok(start.elapsed()),
        Ok(Ok(n)) => Err(format!(
            "server sent {n} bytes instead of closing: {:?}",
            String::from_utf8_lossy(&buf[..n])
        )
        .into()),
    }
}

/// One `GET /v1/health` on an open TLS connection (HTTP/1.1 keep-alive); the status code.
async fn health_on(stream: &mut TlsStream<TcpStream>) -> Res<u16> {
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: kms\r\n\r\n")
        .await?;
    Ok(read_response(stream).await?.0)
}

/// One HTTP/1.1 response (with a Content-Length): its status and its text.
async fn read_response(stream: &mut TlsStream<TcpStream>) -> Res<(u16, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf)).await??;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length = text[..end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .ok_or_else(|| format!("no content-length in {text:?}"))?;
        if got.len() >= end + 4 + length {
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("no status in {text:?}"))?;
            return Ok((status, text));
        }
    }
}

/// `GET /v1/health` as the registered `demo-app` on a fresh connection from 127.0.0.1, which must
/// be answered 200 within 1 s.
async fn served_within_a_second(svc: &Service, what: &str) -> TestResult {
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(1),
        svc.fetch("demo-app", "GET", "/v1/health", Vec::new()),
    )
    .await
    .map_err(|_| format!("{what}: the registered client was not served within 1 s"))??;
    assert_eq!(
        r.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    eprintln!("{what}: served in {:?}", started.elapsed());
    Ok(())
}

fn fingerprint(pem: &std::path::Path) -> Res<String> {
    let der = CertificateDer::from_pem_file(pem)?;
    Ok(kms::identity::CertIdentity::from_der(der.as_ref())?.fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_of_unregistered_idle_slow_and_bare_connections_do_not_stop_a_registered_client(
) -> TestResult {
    let svc = start()?;
    svc.register("demo-app")?;
    let addr = svc.addr;
    served_within_a_second(&svc, "before the attack").await?;

    // Bare TCP: the per-address limit from accept on (handshaking connections count). The
    // 33rd from one address is closed at once; another address is not affected.
    let bare_source = loopback(30);
    let mut bare = Vec::new();
    for _ in 0..PER_ADDRESS {
        bare.push(tcp_from(addr, bare_source).await?);
    }
    // Let the server accept them all before the next one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut one_too_many = tcp_from(addr, bare_source).await?;
    closed_within(&mut one_too_many, Duration::from_secs(1))
        .await
        .map_err(|e| format!("connection {} from one address: {e}", PER_ADDRESS + 1))?;
    let mut other_source = tcp_from(addr, loopback(31)).await?;
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), other_source.read(&mut buf))
            .await
            .is_err(),
        "a connection from another address was closed: the limit must be per address"
    );

    // A slow-header client (registered, so it reaches HTTP): half a request line, then nothing.
    let mut slow = tls_from(addr, svc.tls("demo-app")?, loopback(20)).await?;
    slow.write_all(b"GET /v1/hea").await?;
    let slow_started = Instant::now();

    // A keep-alive client that makes one request and then stays idle.
    let mut idle = tls_from(addr, svc.tls("demo-app")?, loopback(21)).await?;
    assert_eq!(health_on(&mut idle).await?, 200);
    let idle_started = Instant::now();

    // 256 TLS connections with a certificate the CA signed but no principal holds, 32 from each
    // of 8 addresses (the per-address limit), held open and idle.
    let stranger = svc.tls("stranger")?;
    let flood = (2..10u8)
        .flat_map(|a| (0..PER_ADDRESS).map(move |_| a))
        .map(|a| {
            let tls = Arc::clone(&stranger);
            tokio::spawn(async move {
                tls_from(addr, tls, loopback(a))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .collect::<Vec<_>>();
    let mut held = Vec::new();
    for (i, task) in flood.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .map_err(|_| format!("unregistered connection {i}: no handshake within 30 s"))??;
        held.push(r.map_err(|e| format!("unregistered connection {i}: {e}"))?);
    }
    // While they are held open by the attacker, the registered client is served ...
    served_within_a_second(&svc, "with 256 unregistered connections held").await?;
    // ... and the server closes each of them soon after its handshake, without any HTTP.
    for (i, s) in held.iter_mut().enumerate() {
        closed_within(s, Duration::from_secs(10))
            .await
            .map_err(|e| format!("unregistered connection {i}: {e}"))?;
    }
    served_within_a_second(&svc, "after the flood").await?;

    // The slow header is cut at the header-read timeout ...
    let waited = slow_started.elapsed()
        + closed_within(&mut slow, HEADER_TIMEOUT + Duration::from_secs(5))
            .await
            .map_err(|e| format!("slow-header connection: {e}"))?;
    assert!(
        waited >= HEADER_TIMEOUT - Duration::from_millis(200),
        "slow-header connection closed after {waited:?}, before the {HEADER_TIMEOUT:?} header timeout"
    );
    // ... the idle keep-alive connection at the idle timeout (not at the header timeout: no
    // request head was being awaited).
    let waited = idle_started.elapsed()
        + closed_within(&mut idle, IDLE_TIMEOUT + Duration::from_secs(5))
            .await
            .map_err(|e| format!("idle keep-alive connection: {e}"))?;
    assert!(
        waited >= IDLE_TIMEOUT - Duration::from_millis(200),
        "idle connection closed after {waited:?}, before the {IDLE_TIMEOUT:?} idle timeout"
    );
    served_within_a_second(&svc, "at the end").await?;
    drop(bare);

    // The refusals are audited through the engine, rate-limited: one row per certificate per
    // minute for these 256 connections, naming the certificate.
    let fp = fingerprint(&svc.pki().join("client-stranger.pem"))?;
    let rows = svc.audit(None)?;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r["action"] == "auth.connect" && r["outcome"] == "denied")
        .collect();
    assert_eq!(refused.len(), 1, "auth.connect rows: {refused:#?}");
    assert_eq!(
        refused[0]["cert_fingerprint"],
        fp.as_str(),
        "{:#?}",
        refused[0]
    );
    let detail = refused[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("not registered to any principal"),
        "{detail}"
    );
    // Every closure is counted, by reason.
    let m = svc.fetch("demo-app", "GET", "/metrics", Vec::new()).await?;
    let text = String::from_utf8_lossy(&m.body).into_owned();
    let counted = |reason: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with("kms_connections_closed_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    assert!(counted("unregistered") >= 256, "metrics:\n{text}");
    assert!(counted("address-limit") >= 1, "metrics:\n{text}");
    assert!(counted("header-timeout") >= 1, "metrics:\n{text}");
    assert!(counted("idle-timeout") >= 1, "metrics:\n{text}");
    // The log line follows the same rule: one, not 256.
    let log = svc.log();
    assert_eq!(
        log.matches("is not registered to any principal").count(),
        1,
        "service log:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_principal_is_closed_after_the_handshake_and_a_keep_alive_client_is_served_between_requests(
) -> TestResult {
    let svc = start()?;
    svc.register("demo-app")?;
    svc.register("other-app")?;

    // Requests on one connection with pauses shorter than the idle timeout but longer than the
    // header timeout: the header timeout runs only while a request head is being received.
    let mut c = tls_from(svc.addr, svc.tls("demo-app")?, loopback(40)).await?;
    for _ in 0..2 {
        assert_eq!(health_on(&mut c).await?, 200);
        tokio::time::sleep(HEADER_TIMEOUT + Duration::from_secs(1)).await;
    }
    assert_eq!(health_on(&mut c).await?, 200);
    // A next request whose head stalls is cut at the header timeout counted from its first
    // byte, well before the idle timeout those bytes restarted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.write_all(b"GET /v1/hea").await?;
    let waited = closed_within(&mut c, HEADER_TIMEOUT + Duration::from_millis(1500))
        .await
        .map_err(|e| format!("stalled second request head, not cut at the header timeout: {e}"))?;
    assert!(
        waited >= HEADER_TIMEOUT - Duration::from_millis(200),
        "stalled second request head closed after {waited:?}, before the {HEADER_TIMEOUT:?} header timeout"
    );

    // A request body that stops coming is cut once nothing arrived for the idle timeout (the
    // request is in flight, so only this bound applies): 400, then the connection ends.
    let mut b = tls_from(svc.addr, svc.tls("demo-app")?, loopback(42)).await?;
    b.write_all(
        b"POST /v1/keys/none/sign HTTP/1.1\r\nHost: kms\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mess",
    )
    .await?;
    let started = Instant::now();
    let (status, text) = read_response(&mut b)
        .await
        .map_err(|e| format!("stalled request body: {e}"))?;
    let waited = started.elapsed();
    assert_eq!(status, 400, "stalled request body: {text}");
    assert!(
        waited >= IDLE_TIMEOUT - Duration::from_millis(200),
        "stalled request body refused after {waited:?}, before the {IDLE_TIMEOUT:?} idle timeout"
    );
    closed_within(&mut b, Duration::from_secs(2))
        .await
        .map_err(|e| format!("after the stalled body's 400: {e}"))?;

    svc.env
        .ok(&["principal", "disable", "other-app", "--reason", "retired"])?;
    let mut s = tls_from(svc.addr, svc.tls("other-app")?, loopback(41)).await?;
    closed_within(&mut s, Duration::from_secs(5))
        .await
        .map_err(|e| format!("disabled principal's connection: {e}"))?;
    let rows = svc.audit(None)?;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r["action"] == "auth.connect" && r["outcome"] == "denied")
        .collect();
    assert_eq!(refused.len(), 1, "auth.connect rows: {refused:#?}");
    assert_eq!(refused[0]["actor"], "other-app", "{:#?}", refused[0]);
    let detail = refused[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("is disabled"), "{detail}");
    Ok(())
}
