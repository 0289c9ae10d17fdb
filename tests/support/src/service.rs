//! Test fixture for the HTTPS service: a fresh [`Env`], a dev PKI (made by the project's own
//! `examples/dev_pki.rs`), and the real `kms serve` binary listening on a free port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kms::client::{tls_config, Connection};
use rustls::pki_types::ServerName;

use crate::{Env, Res};

#[path = "../../../examples/dev_pki.rs"]
mod dev_pki;

/// The project's dev PKI maker (`examples/dev_pki.rs`): a CA, a server certificate and one
/// client certificate per name in `clients`, under `dir`.
pub fn ensure_dev_pki(dir: &Path, clients: &[&str], force: bool) -> Res<Vec<String>> {
    dev_pki::ensure(dir, clients, force)
}

/// The client certificates every service gets (only `demo-app` is registered by default).
pub const CLIENTS: &[&str] = &["demo-app", "stranger", "other-app"];

/// How long `kms serve` gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `stop()` waits for the process to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A response with the headers the tests look at.
#[derive(Debug, Clone)]
pub struct FullReply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl FullReply {
    pub fn json(&self) -> Res<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

pub struct Service {
    pub env: Env,
    pub addr: SocketAddr,
    /// The XKS proxy's listener, when the config has an [xks] section.
    pub xks: Option<SocketAddr>,
    /// The KMIP listener, when the config has a [kmip] section.
    pub kmip: Option<SocketAddr>,
    child: Child,
    pki: PathBuf,
}

impl Service {
    /// Fresh tokens, a dev PKI under `<dir>/pki`, and `kms serve --listen 127.0.0.1:0` running.
    pub fn start() -> Res<Service> {
        Service::start_with(|_| Ok(()))
    }

    /// Like [`Service::start`], with `prepare` run on the environment before the service starts
    /// (edit the config, create keys, run a key ceremony, ...).
    pub fn start_with(prepare: impl FnOnce(&Env) -> Res<()>) -> Res<Service> {
        Service::start_on(Env::new()?, prepare)
    }

    /// Like [`Service::start_with`], with the tokens on SoftHSM2's object store `backend`
    /// whatever the run's default (for tests about the file store's own files).
    pub fn start_with_on_store(
        backend: &str,
        prepare: impl FnOnce(&Env) -> Res<()>,
    ) -> Res<Service> {
        Service::start_on(Env::new_on_store(backend)?, prepare)
    }

    fn start_on(env: Env, prepare: impl FnOnce(&Env) -> Res<()>) -> Res<Service> {
        prepare(&env)?;
        let pki = env.path("pki");
        dev_pki::ensure(&pki, CLIENTS, false)?;
        let cfg = std::fs::read_to_string(env.config())?;
        let extra = usize::from(cfg.contains("\n[xks]")) + usize::from(cfg.contains("\n[kmip]"));
        let (child, addr, lines) = spawn_serve_with_extra(&env, &env.config(), "serve.log", extra)?;
        let find = |prefix: &str| -> Res<Option<SocketAddr>> {
            Ok(match lines.iter().find_map(|l| l.strip_prefix(prefix)) {
                Some(a) => Some(a.parse()?),
                None => None,
            })
        };
        let xks = find("kms xks listening on https://")?;
        let kmip = find("kms kmip listening on ")?;
        Ok(Service {
            env,
            addr,
            xks,
            kmip,
            child,
            pki,
        })
    }

    pub fn pki(&self) -> &Path {
        &self.pki
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The service's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.env.path("serve.log")).unwrap_or_default()
    }

    /// Client TLS settings trusting the service's CA and presenting `client-NAME.pem`.
    pub fn tls(&self, client: &str) -> Res<Arc<rustls::ClientConfig>> {
        self.tls_from(&self.pki, client)
    }

    /// Client TLS settings trusting the service's CA, presenting `client-NAME.pem` from `dir`
    /// (e.g. a foreign PKI).
    pub fn tls_from(&self, dir: &Path, client: &str) -> Res<Arc<rustls::ClientConfig>> {
        let cert = dir.join(format!("client-{client}.pem"));
        let key = dir.join(format!("client-{client}-key.pem"));
        Ok(tls_config(
            &self.pki.join("ca.pem"),
            Some((cert.as_path(), key.as_path())),
        )?)
    }

    /// Client TLS settings with no client certificate.
    pub fn tls_anonymous(&self) -> Res<Arc<rustls::ClientConfig>> {
        Ok(tls_config(&self.pki.join("ca.pem"), None)?)
    }

    /// A dev PKI with its own CA (and client certificates for [`CLIENTS`]) under `<dir>/foreign-pki`.
    pub fn foreign_pki(&self) -> Res<PathBuf> {
        let dir = self.env.path("foreign-pki");
        dev_pki::ensure(&dir, CLIENTS, false)?;
        Ok(dir)
    }

    /// A keep-alive connection as `client`.
    pub async fn connect(&self, client: &str) -> Res<Connection> {
        Ok(Connection::connect(self.addr, self.tls(client)?).await?)
    }

    /// One request on a fresh connection, returning the content type too.
    pub async fn fetch(
        &self,
        client: &str,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Res<FullReply> {
        fetch(self.addr, self.tls(client)?, method, path, body).await
    }

    /// `kms principal add NAME --role application --cert pki/client-NAME.pem`.
    pub fn register(&self, name: &str) -> Res<()> {
        let cert = self.pki.join(format!("client-{name}.pem"));
        let cert = cert.to_str().ok_or("non-UTF-8 path")?;
        self.env.ok(&[
            "principal",
            "add",
            name,
            "--role",
            "application",
            "--cert",
            cert,
            "--reason",
            "CHG-2 register test app",
        ])?;
        Ok(())
    }

    /// `kms grant add PRINCIPAL KEY --ops OPS --until <in 30 days> --reason ...` (break-glass,
    /// by the fixture's security officer); returns the grant ID.
    pub fn grant(&self, principal: &str, key: &str, ops: &str) -> Res<String> {
        let until = (time::OffsetDateTime::now_utc().date() + time::Duration::days(30)).to_string();
        let out = self.env.ok(&[
            "grant",
            "add",
            principal,
            key,
            "--ops",
            ops,
            "--until",
            &until,
            "--ticket",
            "CHG-3",
            "--justification",
            "integration test",
            "--reason",
            "CHG-3 break-glass grant for the service test",
            "--json",
        ])?;
        let g: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(g["id"]
            .as_str()
            .ok_or_else(|| format!("grant add --json has no id: {g}"))?
            .to_owned())
    }

    /// `kms audit list --json [--key KEY] --limit 1000`.
    pub fn audit(&self, key: Option<&str>) -> Res<Vec<serde_json::Value>> {
        let mut args = vec!["audit", "list", "--json", "--limit", "1000"];
        if let Some(k) = key {
            args.extend_from_slice(&["--key", k]);
        }
        let out = self.env.ok(&args)?;
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(rows
            .as_array()
            .ok_or_else(|| format!("audit list --json is not an array: {rows}"))?
            .clone())
    }

    /// Send SIGTERM.
    pub fn terminate(&self) -> Res<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -TERM {} failed: {status}", self.child.id()).into());
        }
        Ok(())
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Res<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "kms serve did not exit within {timeout:?}; stderr:\n{}",
                    self.log()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process gets no chance to finish anything (no shutdown checkpoint).
    pub fn kill(&mut self) -> Res<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Start `kms serve` again on the same environment (after [`Service::kill`] or
    /// [`Service::stop`]); the new process's stderr goes to `log`.
    pub fn restart(&mut self, log: &str) -> Res<()> {
        let (child, addr) = spawn_serve(&self.env, &self.env.config(), log)?;
        self.child = child;
        self.addr = addr;
        Ok(())
    }

    /// SIGTERM, then wait (up to [`STOP_TIMEOUT`]) for the exit status.
    pub fn stop(&mut self) -> Res<ExitStatus> {
        self.terminate()?;
        self.wait_exit(STOP_TIMEOUT)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request on its own connection (hyper directly), returning status, content type and body.
/// Start `kms serve --listen 127.0.0.1:0` with `config`, its stderr in `<env>/<log>`; returns
/// the process and the address it reported.
pub fn spawn_serve(env: &Env, config: &Path, log: &str) -> Res<(Child, SocketAddr)> {
    spawn_serve_with_extra(env, config, log, 0).map(|(c, a, _)| (c, a))
}

/// Like [`spawn_serve`], also reading the `extra` lines that follow the first (the XKS and KMIP
/// listeners' addresses).
pub fn spawn_serve_with_extra(
    env: &Env,
    config: &Path,
    log: &str,
    extra: usize,
) -> Res<(Child, SocketAddr, Vec<String>)> {
    let log_path = env.path(log);
    let log_file = std::fs::File::create(&log_path)?;
    let mut child = env
        .kms_with_config(config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()?;
    let stdout = child.stdout.take().ok_or("kms serve: no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    let (tx2, rx2) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let first = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(first);
        for _ in 0..extra {
            let mut next = String::new();
            let _ = tx2.send(reader.read_line(&mut next).map(|_| next));
        }
        // Keep draining so the service can never block on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let log_of = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(line)) if !line.is_empty() => line,
        other => {
            // Give the process a moment to finish writing its error, then report it.
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut status = child.try_wait()?;
            while status.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                status = child.try_wait()?;
            }
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(format!(
                "kms serve did not report its address ({}; exit {status:?}); stderr:\n{}",
                match other {
                    Ok(Ok(_)) => "stdout closed".to_owned(),
                    Ok(Err(e)) => format!("reading stdout: {e}"),
                    Err(_) => format!("nothing within {START_TIMEOUT:?}"),
                },
                log_of()
            )
            .into());
        }
    };
    let addr = line
        .trim()
        .strip_prefix("kms listening on https://")
        .ok_or_else(|| format!("unexpected first stdout line {line:?}"))?
        .parse::<SocketAddr>()?;
    let mut lines = Vec::new();
    for _ in 0..extra {
        match rx2.recv_timeout(START_TIMEOUT) {
            Ok(Ok(l)) => lines.push(l.trim().to_owned()),
            _ => {
                return Err(format!(
                    "kms serve did not report all its listeners; stderr:\n{}",
                    log_of()
                )
                .into())
            }
        }
    }
    Ok((child, addr, lines))
}

/// One HTTPS request to `addr` on a connection of its own, with a JSON body: the whole reply.
pub async fn fetch(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Res<FullReply> {
    let headers = [
        (hyper::header::HOST.to_string(), addr.to_string()),
        (
            hyper::header::CONTENT_TYPE.to_string(),
            "application/json".to_owned(),
        ),
    ];
    fetch_with(addr, tls, method, path, &headers, body).await
}

/// Like [`fetch`], with exactly `headers` (name, value), in that order.
pub async fn fetch_with(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Res<FullReply> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path);
    for (n, v) in headers {
        req = req.header(n.as_str(), v.as_str());
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    drop(sender);
    driver.abort();
    Ok(FullReply {
        status,
        content_type,
        body,
    })
}
