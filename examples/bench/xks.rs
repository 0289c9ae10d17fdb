//! `scripts/bench --xks`: the AWS KMS external key store proxy (issue 15) — Encrypt and Decrypt
//! as AWS KMS sends them (SigV4-signed, keep-alive, fresh signature per request) to a real
//! `kms serve` with its [xks] listener, the audit trail on. Targets: p99 < 25 ms at c=16 and
//! at least 1,800 requests/s (AWS's default quota per key store; it times a call out at 250 ms).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use super::{row, stats, Res, Stats};

const AKID: &str = "AKIABENCHXKS00000001";
const SECRET: &str = "YmVuY2gtc2VjcmV0LWZvci14a3MtYmVuY2htYXJrLTAx";
const PREFIX: &str = "/bench/kms/xks/v1";

/// `kms serve` with an [xks] section; its XKS address.
fn start(kms_bin: &Path, config_path: &Path) -> Res<(std::process::Child, SocketAddr)> {
    let dir = config_path.parent().ok_or("config has no directory")?;
    let secret = dir.join("xks-bench-secret");
    std::fs::write(&secret, SECRET)?;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let mut cfg = std::fs::read_to_string(config_path)?;
    cfg.push_str(&format!(
        "\n[xks]\nlisten = \"127.0.0.1:0\"\nprefix = \"{PREFIX}\"\nregion = \"us-east-1\"\n\
         [[xks.credentials]]\naccess_key_id = \"{AKID}\"\nsecret = \"file:{}\"\nprincipal = \"bench-app\"\n",
        secret.display()
    ));
    let path = dir.join("kms-xks.toml");
    std::fs::write(&path, cfg)?;
    let mut child = std::process::Command::new(kms_bin)
        .env("KMS_CONFIG", &path)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line)?;
    }
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let addr = line
        .trim()
        .strip_prefix("kms xks listening on https://")
        .ok_or_else(|| format!("no XKS address in {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Res<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One signed XKS request.
async fn send(
    sender: &mut Sender,
    addr: SocketAddr,
    path: &str,
    body: &[u8],
) -> Res<(u16, Vec<u8>)> {
    let headers = vec![
        ("host".to_owned(), addr.to_string()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let req = kms::doors::xks::sigv4::Request {
        method: "POST",
        path,
        query: "",
        headers: &headers,
        body,
    };
    let added = kms::doors::xks::sigv4::sign(
        &req,
        time::OffsetDateTime::now_utc(),
        AKID,
        SECRET,
        "us-east-1",
        "kms-xks-proxy",
    )
    .map_err(|e| e.to_string())?;
    let mut b = hyper::Request::builder().method("POST").uri(path);
    for (n, v) in headers.iter().chain(added.iter()) {
        b = b.header(n.as_str(), v.as_str());
    }
    sender.ready().await?;
    let resp = sender
        .send_request(b.body(Full::new(Bytes::copy_from_slice(body)))?)
        .await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, bytes))
}

async fn load(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    conc: usize,
    secs: f64,
    path: String,
    body: Vec<u8>,
) -> Res<Stats> {
    let mut senders = Vec::new();
    for _ in 0..conc {
        senders.push(connect(addr, Arc::clone(&tls)).await?);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for mut s in senders {
        let (path, body) = (path.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                match send(&mut s, addr, &path, &body).await {
                    Ok((200, _)) => lat.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    Ok(stats(lat, start.elapsed(), errors))
}

pub fn run(
    config_path: &Path,
    kms_bin: &Path,
    pki: &Path,
    secs: f64,
    concurrency: &[usize],
) -> Res<()> {
    let (mut child, addr) = start(kms_bin, config_path)?;
    let tls = kms::client::tls_config(&pki.join("ca.pem"), None)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let meta = |op: &str| {
        serde_json::json!({
            "awsPrincipalArn": "arn:aws:iam::123456789012:role/bench",
            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/bench",
            "kmsOperation": op,
            "kmsRequestId": "bench"
        })
    };
    // A 32-byte data key with 64 bytes of encryption context: what GenerateDataKey sends.
    let encrypt_body = serde_json::json!({
        "requestMetadata": meta("GenerateDataKey"),
        "plaintext": B64.encode([0x42u8; 32]),
        "additionalAuthenticatedData": B64.encode([0x61u8; 64]),
        "encryptionAlgorithm": "AES_GCM"
    });
    let result: Res<Vec<(usize, Stats, Stats)>> = rt.block_on(async {
        let enc_path = format!("{PREFIX}/keys/bench-xks/encrypt");
        let dec_path = format!("{PREFIX}/keys/bench-xks/decrypt");
        let mut s = connect(addr, Arc::clone(&tls)).await?;
        let (status, sealed) =
            send(&mut s, addr, &enc_path, &serde_json::to_vec(&encrypt_body)?).await?;
        if status != 200 {
            return Err(
                format!("XKS encrypt: {status} {}", String::from_utf8_lossy(&sealed)).into(),
            );
        }
        let sealed: serde_json::Value = serde_json::from_slice(&sealed)?;
        let decrypt_body = serde_json::json!({
            "requestMetadata": meta("Decrypt"),
            "ciphertext": sealed["ciphertext"],
            "ciphertextMetadata": sealed["ciphertextMetadata"],
            "initializationVector": sealed["initializationVector"],
            "authenticationTag": sealed["authenticationTag"],
            "additionalAuthenticatedData": B64.encode([0x61u8; 64]),
            "encryptionAlgorithm": "AES_GCM"
        });
        let mut out = Vec::new();
        for &c in concurrency {
            let e = load(
                addr,
                Arc::clone(&tls),
                c,
                secs,
                enc_path.clone(),
                serde_json::to_vec(&encrypt_body)?,
            )
            .await?;
            row("XKS encrypt (SigV4, keep-alive)", c, e, None);
            let d = load(
                addr,
                Arc::clone(&tls),
                c,
                secs,
                dec_path.clone(),
                serde_json::to_vec(&decrypt_body)?,
            )
            .await?;
            row("XKS decrypt (SigV4, keep-alive)", c, d, None);
            out.push((c, e, d));
        }
        Ok(out)
    });
    super::stop_service(&mut child);
    let rows = result?;
    if let Some((c, e, d)) = rows.iter().find(|r| r.0 == 16).or(rows.last()) {
        println!();
        println!("XKS targets (c={c}, 2 cores, audit on):");
        for (name, s) in [("encrypt", e), ("decrypt", d)] {
            println!(
                "  {name}: p99 {:.2} ms < 25 ms {}; {:.0} requests/s >= 1800 {}",
                s.p99_ms,
                super::verdict(s.p99_ms < 25.0),
                s.ops_per_sec,
                super::verdict(s.ops_per_sec >= 1800.0)
            );
        }
    }
    Ok(())
}
