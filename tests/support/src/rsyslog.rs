//! A real rsyslogd (Debian package `rsyslog`) as the log server in tests: its own config, work
//! directory, pid file and output file under a test directory, listening with imtcp (RFC 6587
//! octet-counted framing) on 127.0.0.1 at a free port. Every message it receives is written as
//! one JSON line with the raw message and the fields rsyslog parsed from it (so a test also sees
//! that rsyslog read the message as RFC 5424: `version` "1", `msgid`, `sd`, …).
//!
//! Can be stopped and started again on the same port, to play a log server outage.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Res;

/// The rsyslogd binary.
pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// How long rsyslogd gets to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long rsyslogd gets to exit after SIGTERM (it takes about a second).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Rsyslog {
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    tls: Option<Tls>,
}

/// RFC 5425: the listener speaks TLS (rsyslog's `ossl` stream driver, Debian package
/// `rsyslog-openssl`) with this certificate; clients are not asked for one.
#[derive(Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Rsyslog {
    /// Start rsyslogd in `<dir>` (created if needed) on a free loopback port.
    pub fn start(dir: &Path) -> Res<Rsyslog> {
        Rsyslog::start_with(dir, None)
    }

    /// The same, listening with TLS.
    pub fn start_tls(dir: &Path, tls: Tls) -> Res<Rsyslog> {
        Rsyslog::start_with(dir, Some(tls))
    }

    fn start_with(dir: &Path, tls: Option<Tls>) -> Res<Rsyslog> {
        std::fs::create_dir_all(dir.join("work"))?;
        let mut last = String::new();
        // The free port is found by binding :0 and releasing it; another process could take it
        // in between, so try a few.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut r = Rsyslog {
                dir: dir.to_owned(),
                port,
                child: None,
                tls: tls.clone(),
            };
            match r.start_again() {
                Ok(()) => return Ok(r),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("rsyslogd did not start: {last}").into())
    }

    /// `host:port` for `[audit.syslog] address`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file the received messages are written to.
    pub fn output(&self) -> PathBuf {
        self.dir.join("received.jsonl")
    }

    fn config(&self) -> String {
        let dir = self.dir.display();
        let port = self.port;
        let (global_tls, imtcp) = match &self.tls {
            None => (String::new(), String::new()),
            Some(t) => (
                format!(
                    r#"
       defaultNetstreamDriver="ossl"
       defaultNetstreamDriverCAFile="{}"
       defaultNetstreamDriverCertFile="{}"
       defaultNetstreamDriverKeyFile="{}""#,
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                ),
                r#" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon""#
                    .to_owned(),
            ),
        };
        format!(
            r#"global(workDirectory="{dir}/work" maxMessageSize="256k"{global_tls})
module(load="imtcp"{imtcp})
template(name="kms_json" type="list" option.jsonf="on") {{
  property(outname="rawmsg" name="rawmsg" format="jsonf")
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="kms")
ruleset(name="kms") {{
  action(type="omfile" file="{dir}/received.jsonl" template="kms_json")
}}
"#
        )
    }

    /// Start (again, on the same port) and wait until the port accepts connections.
    pub fn start_again(&mut self) -> Res<()> {
        if self.child.is_some() {
            return Err("rsyslogd is already running".into());
        }
        let conf = self.dir.join("rsyslog.conf");
        std::fs::write(&conf, self.config())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.log"))?;
        // -n: foreground (our child, so we can wait for it); -C: no chdir to /; no imuxsock, so
        // no /dev/log; its own pid file so several instances can run side by side.
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-C")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot run {RSYSLOGD} (apt-get install rsyslog): {e}"))?;
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "rsyslogd exited ({status}) on port {} (TLS needs the Debian package rsyslog-openssl): {}",
                    self.port,
                    self.log()
                )
                .into());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "rsyslogd did not accept connections on port {} within {START_TIMEOUT:?}: {}",
                    self.port,
                    self.log()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for the exit (rsyslogd writes out what it received first); the port is
    /// closed afterwards.
    pub fn stop(&mut self) -> Res<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            let _ = child.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("rsyslogd did not exit within {STOP_TIMEOUT:?}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGSTOP: the process hangs, while the kernel still accepts connections and buffers what
    /// is sent (a log server that is stuck, not gone).
    pub fn pause(&self) -> Res<()> {
        self.signal("-STOP")
    }

    /// SIGCONT: it reads what was buffered meanwhile.
    pub fn resume(&self) -> Res<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> Res<()> {
        let child = self.child.as_ref().ok_or("rsyslogd is not running")?;
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill {sig} {} failed", child.id()).into());
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// rsyslogd's own stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
    }

    /// The received messages so far, one JSON line each.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.output())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The received messages so far, parsed.
    pub fn records(&self) -> Res<Vec<serde_json::Value>> {
        self.lines()
            .iter()
            .map(|l| Ok(serde_json::from_str(l).map_err(|e| format!("{e}: {l}"))?))
            .collect()
    }

    /// Wait until at least `n` messages have been written (rsyslog writes asynchronously).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Res<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.records()?;
            if got.len() >= n {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "rsyslog received {} message(s), expected at least {n} within {timeout:?}; its log: {}",
                    got.len(),
                    self.log()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The PARAM-NAME="PARAM-VALUE" pairs of an RFC 5424 SD-ELEMENT, unescaped (`\"`, `\\`, `\]`).
pub fn sd_params(sd: &str) -> Res<std::collections::BTreeMap<String, String>> {
    let inner = sd
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("not one SD-ELEMENT: {sd}"))?;
    let (_id, mut rest) = inner.split_once(' ').unwrap_or((inner, ""));
    let mut out = std::collections::BTreeMap::new();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("bad SD-PARAM at {rest:?}"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        if !matches!(n, '"' | '\\' | ']') {
                            value.push('\\');
                        }
                        value.push(n);
                    }
                }
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("unterminated PARAM-VALUE in {sd}"))?;
        if out.insert(name.trim().to_owned(), value).is_some() {
            return Err(format!("parameter {name} twice in {sd}").into());
        }
        rest = after[end..].trim_start();
    }
    Ok(out)
}
