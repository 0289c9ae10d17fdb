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

#[path = "audit_ship/background.rs"]
mod background;
#[path = "audit_ship/delivery.rs"]
mod delivery;

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
