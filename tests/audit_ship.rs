//! Delivery of the audit trail to a real log server: rsyslogd (Debian package) on a loopback
//! port, receiving RFC 5424 messages over TCP with octet-counting framing. What it received is
//! compared field by field with the inventory, read with the `sqlite3` tool.

use common::rsyslog::{sd_params, Rsyslog, Tls};
use common::*;
use kms_testkit as common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const APP: &str = "kms-test";
const WAIT: Duration = Duration::from_secs(20);

/// A fresh environment whose kms.toml ships to `rs`.
fn env_shipping_to(rs_dir: &str, interval_secs: u64) -> Res<(Env, Rsyslog)> {
    let env = Env::new()?;
    let rs = Rsyslog::start(&env.path(rs_dir))?;
    add_syslog(&env, &rs.address(), interval_secs)?;
    Ok((env, rs))
}

fn add_syslog(env: &Env, address: &str, interval_secs: u64) -> TestResult {
    let mut cfg = std::fs::read_to_string(env.config())?;
    cfg.push_str(&format!(
        "\n[audit.syslog]\naddress = \"{}\"\napp_name = \"{APP}\"\ninterval_secs = {interval_secs}\n",
        address
    ));
    std::fs::write(env.config(), cfg)?;
    Ok(())
}

/// Every audit row, as the `sqlite3` tool reads it (independent of kms).
fn db_rows(env: &Env) -> Res<Vec<BTreeMap<String, Value>>> {
    let text = env.sql_json(
        "SELECT seq, at, actor, host, action, key_name, key_version, reason, outcome, detail, \
         role, os_user, cert_fingerprint, code, diff, prev_hash, hash FROM audit ORDER BY seq",
    )?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_str(&text)?)
}

fn head(env: &Env) -> Res<i64> {
    Ok(db_rows(env)?
        .last()
        .and_then(|r| r["seq"].as_i64())
        .unwrap_or(0))
}

/// `kms audit ship --json`.
fn ship(env: &Env) -> Res<Value> {
    let out = env.ok(&["audit", "ship", "--json"])?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `kms audit ship --status --json`.
fn status(env: &Env) -> Res<Value> {
    let out = env.ok(&["audit", "ship", "--status", "--json"])?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// One received message matches its inventory row in every field.
fn check_record(rec: &Value, row: &BTreeMap<String, Value>) -> TestResult {
    let ctx = || format!("received {rec}\ninventory {row:?}");
    // rsyslog parsed it as RFC 5424.
    assert_eq!(rec["version"], "1", "{}", ctx());
    assert_eq!(rec["app"], APP, "{}", ctx());
    assert_eq!(rec["procid"], "-", "{}", ctx());
    let host = hostname::get()?.into_string().map_err(|_| "hostname")?;
    assert_eq!(rec["hostname"].as_str(), Some(host.as_str()), "{}", ctx());
    let outcome = row["outcome"].as_str().ok_or("outcome")?;
    let pri = if outcome == "ok" { "85" } else { "84" };
    assert_eq!(rec["pri"], pri, "{}", ctx());
    let action = row["action"].as_str().ok_or("action")?;
    let msgid = if action.len() <= 32 { action } else { "-" };
    assert_eq!(rec["msgid"], msgid, "{}", ctx());
    // The timestamp is the record's, to the microsecond.
    let fmt = &time::format_description::well_known::Rfc3339;
    let sent = time::OffsetDateTime::parse(rec["timestamp"].as_str().ok_or("timestamp")?, fmt)?;
    let at = time::OffsetDateTime::parse(row["at"].as_str().ok_or("at")?, fmt)?;
    assert!(
        (sent - at).abs() < time::Duration::microseconds(1),
        "{}",
        ctx()
    );
    // Every field in the structured data, absent ones omitted.
    let sd = sd_params(rec["sd"].as_str().ok_or("sd")?)?;
    assert!(
        rec["sd"]
            .as_str()
            .is_some_and(|s| s.starts_with("[kms@32473 ")),
        "{}",
        ctx()
    );
    let fields = [
        ("seq", "seq"),
        ("actor", "actor"),
        ("role", "role"),
        ("host", "host"),
        ("os_user", "os_user"),
        ("cert", "cert_fingerprint"),
        ("action", "action"),
        ("key", "key_name"),
        ("version", "key_version"),
        ("reason", "reason"),
        ("outcome", "outcome"),
        ("code", "code"),
        ("hash", "hash"),
        ("prev", "prev_hash"),
    ];
    for (param, column) in fields {
        assert_eq!(
            sd.get(param).cloned(),
            text(&row[column]),
            "{param}: {}",
            ctx()
        );
    }
    assert_eq!(
        sd.len(),
        fields.iter().filter(|(_, c)| !row[*c].is_null()).count()
    );
    // The message: the detail, and the diff as JSON.
    let msg = rec["msg"].as_str().ok_or("msg")?;
    let msg = msg.strip_prefix('\u{FEFF}').unwrap_or(msg);
    let expected = match (text(&row["detail"]), text(&row["diff"])) {
        (Some(d), Some(diff)) => format!("{d} diff={diff}"),
        (Some(d), None) => d,
        (None, Some(diff)) => format!("diff={diff}"),
        (None, None) => String::new(),
    };
    assert_eq!(msg, expected, "{}", ctx());
    Ok(())
}

/// The received messages, in file order, carry seq 1..=head with none missing and none out of
/// order; a seq seen again is only a re-send of the very same message. Returns the first
/// reception of each seq.
fn check_sequence(received: &[Value], head: i64) -> Res<Vec<Value>> {
    let mut first: Vec<Value> = Vec::new();
    for rec in received {
        let sd = sd_params(rec["sd"].as_str().ok_or("sd")?)?;
        let seq: i64 = sd.get("seq").ok_or("no seq")?.parse()?;
        let next = first.len() as i64 + 1;
        if seq == next {
            first.push(rec.clone());
        } else if seq < next && seq >= 1 {
            let earlier = &first[(seq - 1) as usize];
            assert_eq!(
                earlier["rawmsg"], rec["rawmsg"],
                "seq {seq} received twice with different content"
            );
        } else {
            return Err(format!(
                "received seq {seq} when {next} was due: a record was lost or reordered"
            )
            .into());
        }
    }
    assert_eq!(
        first.len() as i64,
        head,
        "received up to {} of {head}",
        first.len()
    );
    Ok(first)
}

fn some_operations(env: &Env, key: &str) -> TestResult {
    env.create(key, "ec-p384", "sign,verify")?;
    let m = env.write("m", b"payload")?;
    let m = m.to_str().ok_or("path")?.to_owned();
    env.ok(&[
        "key",
        "sign",
        key,
        "--in",
        &m,
        "--out",
        "/dev/null",
        "--reason",
        r#"CHG-9 "quoted" [x] back\slash"#,
    ])?;
    // A refusal: users may not register principals.
    let o = env.run_as(
        USER,
        &["principal", "add", "mallory", "--role", "security-officer"],
    )?;
    assert!(!o.status.success());
    env.ok(&["key", "show", key])?;
    Ok(())
}

#[test]
fn every_record_arrives_with_all_its_fields() -> TestResult {
    let (env, rs) = env_shipping_to("rsyslog", 2)?;
    some_operations(&env, "k")?;
    let rows = db_rows(&env)?;
    let head = rows.len() as i64;
    assert!(head >= 8, "{head} rows");
    assert!(rows.iter().any(|r| r["outcome"] == "denied"));
    assert!(rows
        .iter()
        .any(|r| !r["diff"].is_null() || !r["key_version"].is_null()));

    let report = ship(&env)?;
    assert_eq!(report["sent"], head, "{report}");
    assert_eq!(report["cursor"], head, "{report}");
    assert_eq!(report["backlog"], 0, "{report}");

    let received = rs.wait_for(rows.len(), WAIT)?;
    let first = check_sequence(&received, head)?;
    for (rec, row) in first.iter().zip(&rows) {
        check_record(rec, row)?;
    }
    // The caller-supplied reason with `"`, `]` and `\` went through SD escaping intact.
    assert!(rows.iter().any(|r| r["reason"]
        .as_str()
        .is_some_and(|s| s.starts_with(r#"CHG-9 "quoted" [x] back\slash"#))));

    let s = status(&env)?;
    assert_eq!(s["backlog"], 0, "{s}");
    assert_eq!(s["cursor"], head, "{s}");
    assert_eq!(s["server"].as_str(), Some(rs.address().as_str()), "{s}");
    // Shipping is not audited; asking for the status is.
    let after = db_rows(&env)?;
    // The status row alone: a read-only command logs in to no token, so it signs no
    // checkpoint at its end (issue 23: a login rewrites SoftHSM2's token file).
    assert_eq!(after.len() as i64, head + 1);
    assert_eq!(after[head as usize]["action"], "audit.ship-status");
    // Nothing new to send but that one; a second run sends just it.
    let again = ship(&env)?;
    assert_eq!(again["sent"], 1, "{again}");
    let received = rs.wait_for(after.len(), WAIT)?;
    check_sequence(&received, head + 1)?;
    Ok(())
}

#[test]
fn only_officers_and_auditors_see_the_status_and_asking_is_audited() -> TestResult {
    let (env, _rs) = env_shipping_to("rsyslog", 2)?;
    let o = env.run_as(USER, &["audit", "ship", "--status"])?;
    assert_fails(&o, 4, &["security-officer or auditor"]);
    let rows = db_rows(&env)?;
    let last = rows.last().ok_or("no rows")?;
    assert_eq!(last["action"], "audit.ship-status");
    assert_eq!(last["outcome"], "denied");
    assert_eq!(last["actor"], USER);
    Ok(())
}

#[test]
fn without_a_log_server_nothing_is_sent_and_the_backlog_is_shown() -> TestResult {
    let env = Env::new()?;
    let head = head(&env)?;
    let r = ship(&env)?;
    assert_eq!(r["sent"], 0, "{r}");
    assert_eq!(r["backlog"], head, "{r}");
    let s = status(&env)?;
    assert!(s["server"].is_null(), "{s}");
    assert_eq!(s["backlog"], head, "{s}");
    Ok(())
}

#[test]
fn a_log_server_outage_loses_nothing_and_keeps_the_order() -> TestResult {
    let (env, mut rs) = env_shipping_to("rsyslog", 2)?;
    some_operations(&env, "k1")?;
    ship(&env)?;
    let shipped = head(&env)?;
    rs.wait_for(shipped as usize, WAIT)?;

    // The log server goes away: operations go on, the backlog grows.
    rs.stop()?;
    some_operations(&env, "k2")?;
    let o = env.run(&["audit", "ship"])?;
    assert_fails(&o, 6, &["audit shipping failed", "outbox"]);
    let s = status(&env)?;
    let backlog = s["backlog"].as_i64().ok_or("backlog")?;
    assert_eq!(s["cursor"], shipped, "{s}");
    assert!(backlog > 0, "{s}");
    assert_eq!(s["head"].as_i64(), Some(shipped + backlog), "{s}");
    some_operations(&env, "k3")?;
    assert!(env.run(&["audit", "ship"])?.status.code() == Some(6));
    let s2 = status(&env)?;
    assert!(s2["backlog"].as_i64().ok_or("backlog")? > backlog, "{s2}");

    // It comes back on the same port: everything is delivered, in order, none lost.
    rs.start_again()?;
    let r = ship(&env)?;
    let head = head(&env)?;
    assert_eq!(r["cursor"], head, "{r}");
    assert_eq!(r["backlog"], 0, "{r}");
    assert_eq!(r["sent"].as_i64(), Some(head - shipped), "{r}");
    let received = rs.wait_for(head as usize, WAIT)?;
    let first = check_sequence(&received, head)?;
    for (rec, row) in first.iter().zip(&db_rows(&env)?) {
        check_record(rec, row)?;
    }
    assert_eq!(status(&env)?["backlog"], 0);
    Ok(())
}

/// A log server that hangs: the connection is accepted and the batch written, but the server
/// never reads it to the end, so the batch is not counted as taken. When the server comes back
/// it reads the old connection *and* gets the batch again: duplicates of the same records,
/// never a gap.
#[test]
fn a_hung_log_server_gets_records_again_never_loses_them() -> TestResult {
    let (env, rs) = env_shipping_to("rsyslog", 2)?;
    some_operations(&env, "k1")?;
    ship(&env)?;
    let shipped = head(&env)?;
    rs.wait_for(shipped as usize, WAIT)?;

    rs.pause()?;
    some_operations(&env, "k2")?;
    let pending = head(&env)?;
    let started = Instant::now();
    let o = env.run(&["audit", "ship"])?;
    let waited = started.elapsed();
    rs.resume()?;
    assert_fails(
        &o,
        6,
        &["audit shipping failed", "waiting for the server to close"],
    );
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    assert_eq!(status(&env)?["cursor"], shipped);
    // The hung connection's batch is read after all.
    rs.wait_for(pending as usize, WAIT)?;

    let r = ship(&env)?;
    let head = head(&env)?;
    assert_eq!(r["backlog"], 0, "{r}");
    assert_eq!(r["sent"].as_i64(), Some(head - shipped), "{r}");
    let duplicates = (pending - shipped) as usize;
    let received = rs.wait_for(head as usize + duplicates, WAIT)?;
    assert_eq!(received.len(), head as usize + duplicates);
    check_sequence(&received, head)?;
    Ok(())
}

/// More records than one batch (200): several connections, the cursor advancing after each.
#[test]
fn a_backlog_larger_than_a_batch_is_sent_in_order() -> TestResult {
    let (env, rs) = env_shipping_to("rsyslog", 2)?;
    // 450 audited calls are quickest in process: each status query records one row.
    let engine = kms::engine::Engine::open(kms::config::Config::load(&env.config())?)?;
    let officer = kms::engine::Caller::local(Some(OFFICER.into()), None);
    for _ in 0..450 {
        engine.ship_status(&officer)?;
    }
    drop(engine);
    let head = head(&env)?;
    assert!(head > 450, "{head}");
    let r = ship(&env)?;
    assert_eq!(r["sent"], head, "{r}");
    let received = rs.wait_for(head as usize, WAIT)?;
    let first = check_sequence(&received, head)?;
    for (rec, row) in first.iter().zip(&db_rows(&env)?) {
        check_record(rec, row)?;
    }
    Ok(())
}

/// RFC 5425: the same over TLS, the log server's certificate verified against `tls_ca`; a
/// server whose certificate does not chain to it is refused and nothing is lost.
#[test]
fn records_go_over_tls_only_to_a_server_the_ca_vouches_for() -> TestResult {
    let env = Env::new()?;
    let (pki, foreign) = (env.path("syslog-pki"), env.path("foreign-pki"));
    common::service::ensure_dev_pki(&pki, &[], false)?;
    common::service::ensure_dev_pki(&foreign, &[], false)?;
    let rs = Rsyslog::start_tls(
        &env.path("rsyslog"),
        Tls {
            ca: pki.join("ca.pem"),
            cert: pki.join("server.pem"),
            key: pki.join("server-key.pem"),
        },
    )?;
    let base = std::fs::read_to_string(env.config())?;
    let configure = |ca: &std::path::Path, server_name: &str| {
        std::fs::write(
            env.config(),
            format!(
                "{base}\n[audit.syslog]\naddress = \"{}\"\napp_name = \"{APP}\"\ntls_ca = \"{}\"\n{server_name}",
                rs.address(),
                ca.display()
            ),
        )
    };
    some_operations(&env, "k")?;

    configure(&foreign.join("ca.pem"), "")?;
    let o = env.run(&["audit", "ship"])?;
    assert_fails(&o, 6, &["audit shipping failed", "certificate"]);
    let s = status(&env)?;
    assert_eq!(s["cursor"], 0, "{s}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(rs.lines().is_empty(), "{:?}", rs.lines());

    // The certificate names localhost and 127.0.0.1: by default the address's host is checked,
    // or the configured name.
    configure(&pki.join("ca.pem"), "tls_server_name = \"localhost\"\n")?;
    let r = ship(&env)?;
    assert_eq!(r["backlog"], 0, "{r}");
    some_operations(&env, "k2")?;
    configure(&pki.join("ca.pem"), "")?;
    let r = ship(&env)?;
    assert_eq!(r["backlog"], 0, "{r}");
    let head = head(&env)?;
    assert_eq!(r["cursor"], head, "{r}");
    let received = rs.wait_for(head as usize, WAIT)?;
    let first = check_sequence(&received, head)?;
    for (rec, row) in first.iter().zip(&db_rows(&env)?) {
        check_record(rec, row)?;
    }
    Ok(())
}

/// A running `kms serve`, killed if a test ends early (an assertion's panic included).
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Served {
    /// `kms serve` on a free port with this environment's config.
    fn start(env: &Env) -> Res<Served> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env.path("serve.log"))?;
        let child = env
            .kms()
            .env("KMS_LOG", "info")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        let mut served = Served {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
        };
        let stdout = served.child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(Ok(line)) => line,
            other => {
                return Err(
                    format!("kms serve did not start ({other:?}): {}", serve_log(env)).into(),
                )
            }
        };
        served.addr = line
            .trim()
            .strip_prefix("kms listening on https://")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(served)
    }

    /// SIGTERM and wait for the exit.
    fn terminate(&mut self) -> TestResult {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                return Err("kms serve did not exit after SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn serve_log(env: &Env) -> String {
    std::fs::read_to_string(env.path("serve.log")).unwrap_or_default()
}

fn backlog_gauge(svc: &service::Service, addr: SocketAddr) -> Res<i64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = rt.block_on(service::fetch(
        addr,
        svc.tls("demo-app")?,
        "GET",
        "/metrics",
        Vec::new(),
    ))?;
    let body = String::from_utf8(reply.body)?;
    let line = body
        .lines()
        .find(|l| l.starts_with("kms_audit_backlog "))
        .ok_or_else(|| format!("no kms_audit_backlog in {body}"))?;
    Ok(line["kms_audit_backlog ".len()..].trim().parse()?)
}

fn wait_until(what: &str, mut f: impl FnMut() -> Res<bool>) -> TestResult {
    let deadline = Instant::now() + WAIT;
    while !f()? {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The service ships in the background, without `kms audit ship`: through an outage of the log
/// server too, with the backlog on /metrics, and once more when it stops.
#[test]
fn the_service_ships_in_the_background() -> TestResult {
    // The service fixture makes the dev PKI; its own `kms serve` is replaced by one that ships.
    let mut svc = service::Service::start()?;
    svc.stop()?;
    // /metrics answers registered principals only.
    svc.register("demo-app")?;
    let env = &svc.env;
    let base = std::fs::read_to_string(env.config())?;
    let mut rs = Rsyslog::start(&env.path("rsyslog"))?;
    let address = rs.address();
    let configure = |interval_secs: u64| {
        std::fs::write(env.config(), &base)?;
        add_syslog(env, &address, interval_secs)
    };
    configure(1)?;
    let mut served = Served::start(env)?;
    let addr = served.addr;
    // What was recorded before the service started arrives by itself.
    let h = head(env)?;
    rs.wait_for(h as usize, WAIT)?;
    wait_until("backlog 0", || Ok(backlog_gauge(&svc, addr)? == 0))?;
    // New records, from another process, follow.
    some_operations(env, "k1")?;
    let h = head(env)?;
    rs.wait_for(h as usize, WAIT)?;

    // Outage: the backlog grows on /metrics; the failure is logged once, not every round.
    rs.stop()?;
    some_operations(env, "k2")?;
    wait_until("a backlog on /metrics", || {
        Ok(backlog_gauge(&svc, addr)? > 0)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let log = serve_log(env);
    assert_eq!(
        log.matches("cannot ship the audit trail now").count(),
        1,
        "{log}"
    );

    rs.start_again()?;
    let h = head(env)?;
    rs.wait_for(h as usize, WAIT)?;
    wait_until("backlog 0 again", || Ok(backlog_gauge(&svc, addr)? == 0))?;
    assert!(serve_log(env).contains("audit shipping resumed"));
    served.terminate()?;

    // With rounds an hour apart, records made while it runs are shipped by the last round, at
    // shutdown.
    // (What the service records while starting, e.g. its first restore drill, may come just
    // after its first round: it waits for the next one, here the last.)
    configure(3600)?;
    let h = head(env)?;
    let mut served = Served::start(env)?;
    rs.wait_for(h as usize, WAIT)?;
    std::thread::sleep(Duration::from_millis(500));
    let before_ops = head(env)?;
    some_operations(env, "k3")?;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        rs.lines().len() <= before_ops as usize,
        "shipped before the shutdown round"
    );
    served.terminate()?;
    let h = head(env)?;
    let received = rs.wait_for(h as usize, WAIT)?;
    let first = check_sequence(&received, h)?;
    for (rec, row) in first.iter().zip(&db_rows(env)?) {
        check_record(rec, row)?;
    }
    Ok(())
}
