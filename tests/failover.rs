//! High availability (issue 6): the real `kms serve` keeps serving from the backup copies when the
//! primary SoftHSM2 token is taken away under load, audits the failover, and goes back to the
//! primary by itself when it returns — no restart. Also: the key ceremony is refused while the
//! service holds the user login.
//!
//! SoftHSM2 sees a lost token again only after `C_Finalize` + `C_Initialize`, so the primary gets
//! its own copy of the module file here (as a real site has one client library per HSM): kms can
//! re-initialise that module without touching the backup's.

use common::service::Service;
use common::*;
use kms_testkit as common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms::client::Connection;
use serde_json::{json, Value};

/// Give [tokens.primary] its own copy of the module file.
fn own_primary_module(env: &Env) -> TestResult {
    let module = env.module()?;
    let copy = env.path("primary-module/libsofthsm2.so");
    std::fs::create_dir_all(env.path("primary-module"))?;
    std::fs::copy(&module, &copy)?;
    let cfg = std::fs::read_to_string(env.config())?;
    let (head, tail) = cfg
        .split_once("[tokens.primary]")
        .ok_or("no [tokens.primary] in kms.toml")?;
    let old = format!("module = \"{module}\"");
    let new = format!("module = \"{}\"", copy.display());
    let tail = tail.replacen(&old, &new, 1);
    std::fs::write(env.config(), format!("{head}[tokens.primary]{tail}"))?;
    Ok(())
}

async fn health(svc: &Service) -> Res<(u16, Value)> {
    let mut c = svc
        .connect("demo-app")
        .await
        .map_err(|e| format!("{e}; service log:\n{}", svc.log()))?;
    let r = c.request("GET", "/v1/health", None, None).await?;
    Ok((r.status, r.json()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_service_fails_over_to_backup_copies_and_comes_back() -> TestResult {
    // The primary is lost by moving its directory away: the file store's own layout (the db
    // store keeps its open database through a move).
    let svc = Service::start_with_on_store("file", |env| {
        own_primary_module(env)?;
        env.ok(&["--reason", "CHG-9 ceremony", "backup", "init"])?;
        env.ok(&["backup", "sync"])?;
        env.create("sig", "ec-p384", "sign,verify")?;
        env.create("dek", "aes-256", "wrap,unwrap")?;
        Ok(())
    })?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign,verify")?;
    svc.grant("demo-app", "dek", "wrap,unwrap")?;
    let (status, h) = health(&svc).await?;
    assert_eq!(
        (status, h["serving"].as_str()),
        (200, Some("primary")),
        "{h}"
    );

    // A data key wrapped before anything goes wrong.
    let mut c = svc.connect("demo-app").await?;
    let dk = c
        .request("POST", "/v1/keys/dek/data-key", Some(&json!({})), None)
        .await?
        .json()?;
    let (plaintext, wrapped) = (unb64(&dk["plaintext"])?, dk["wrapped"].clone());

    // Load: sign + unwrap in a loop on 4 connections, counting every failure.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (addr, tls) = (svc.addr, svc.tls("demo-app")?);
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (first, wrapped, plaintext) =
            (first_failure.clone(), wrapped.clone(), plaintext.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::connect(addr, tls)
                .await
                .map_err(|e| e.to_string())?;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let msg = format!("{t}/{i}");
                let s = c
                    .request(
                        "POST",
                        "/v1/keys/sig/sign",
                        Some(&json!({ "message": b64(msg.as_bytes()) })),
                        None,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let u = c
                    .request(
                        "POST",
                        "/v1/keys/dek/unwrap",
                        Some(&json!({ "wrapped": wrapped })),
                        None,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let unwrapped_ok = u.status == 200
                    && u.json()
                        .ok()
                        .and_then(|v| unb64(&v["plaintext"]).ok())
                        .is_some_and(|p| p == plaintext);
                for (what, good, status, body) in [
                    ("sign", s.status == 200, s.status, &s.body),
                    ("unwrap", unwrapped_ok, u.status, &u.body),
                ] {
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut f = first.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert_with(|| {
                            format!("{what}: {status} {}", String::from_utf8_lossy(body))
                        });
                    }
                }
            }
            Ok::<(), String>(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_outage = ok.load(Ordering::Relaxed);

    // The primary token disappears (its SoftHSM2 directory is moved away).
    let dir = svc.env.token_dir("kms-primary")?;
    let away = svc.env.path("primary-away");
    std::fs::rename(&dir, &away)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during_outage = ok.load(Ordering::Relaxed);
    let (status, h) = health(&svc).await?;
    assert_eq!(status, 200, "the service still serves: {h}");
    assert_eq!(h["status"], "failover", "{h}");
    assert_eq!(h["serving"], "backup", "{h}");

    // It comes back; the service returns to it without a restart.
    std::fs::rename(&away, &dir)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, h) = health(&svc).await?;
        if h["serving"] == "primary" && h["status"] == "ok" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the service did not return to the primary: {h}\n{}",
                svc.log()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let first = first_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(
        failed,
        0,
        "requests failed during the failover: first: {first:?}\n{}",
        svc.log()
    );
    assert!(
        during_outage > before_outage + 10,
        "requests kept succeeding during the outage"
    );
    assert!(
        ok > during_outage,
        "requests succeeded after the primary returned"
    );

    // The trail: failover, operations served by the copies, failback; afterwards the primary.
    let o = svc.env.ok(&["audit", "list", "--json"])?;
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout)?;
    let events: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("token.fail"))
        })
        .collect();
    assert_eq!(events.len(), 2, "one failover, one failback: {events:?}");
    assert_eq!(events[0]["action"], "token.failover");
    assert_eq!(events[0]["actor"], "kms");
    assert!(
        events[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("token 'primary' stopped answering")),
        "{}",
        events[0]
    );
    assert_eq!(events[1]["action"], "token.failback");
    let served_by_copy = |r: &&Value| {
        r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("served by the backup copy on token 'backup'"))
    };
    let signs: Vec<&Value> = rows.iter().filter(|r| r["action"] == "key.sign").collect();
    assert!(
        signs.iter().any(served_by_copy),
        "no sign served by the copy"
    );
    let unwraps: Vec<&Value> = rows
        .iter()
        .filter(|r| r["action"] == "key.unwrap")
        .collect();
    assert!(
        unwraps.iter().any(served_by_copy),
        "no unwrap served by the copy"
    );
    let last_sign = signs
        .iter()
        .max_by_key(|r| r["seq"].as_i64().unwrap_or(0))
        .ok_or("no sign records")?;
    assert!(!served_by_copy(last_sign), "after failback: {last_sign}");

    // A signature made by the copy verifies with the key's (original) public key.
    let mut c = svc.connect("demo-app").await?;
    let sig_row = signs
        .iter()
        .find(|r| served_by_copy(r))
        .ok_or("no copy signature")?;
    assert!(sig_row["outcome"] == "ok");
    let s = c
        .request(
            "POST",
            "/v1/keys/sig/sign",
            Some(&json!({ "message": b64(b"after") })),
            None,
        )
        .await?
        .json()?;
    let v = c
        .request(
            "POST",
            "/v1/keys/sig/verify",
            Some(&json!({ "message": b64(b"after"), "signature": s["signature"] })),
            None,
        )
        .await?
        .json()?;
    assert_eq!(v["valid"], true, "{v}");
    Ok(())
}

#[test]
fn the_key_ceremony_is_refused_while_the_service_holds_the_login() -> TestResult {
    let mut svc = Service::start()?;
    let o = svc.env.run(&["backup", "init"])?;
    assert_fails(
        &o,
        4,
        &[
            "kms serve",
            "holds the user login on token 'primary'",
            "Stop the service",
        ],
    );
    // Nothing was made: no pairing recorded.
    let o = svc.env.ok(&["backup", "status", "--json"])?;
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["pairs"].as_array().map(Vec::len), Some(0), "{v}");
    svc.stop()?;
    // With the service stopped, the ceremony runs.
    svc.env.ok(&["backup", "init"])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_drill_reports_a_broken_copy_in_metrics_and_audit() -> TestResult {
    let svc = Service::start_with(|env| {
        let cfg = std::fs::read_to_string(env.config())?;
        let cfg = cfg.replacen(
            "[backup]\ntoken = \"backup\"",
            "[backup]\ntoken = \"backup\"\ndrill_every_secs = 1",
            1,
        );
        std::fs::write(env.config(), cfg)?;
        env.ok(&["--reason", "CHG-9 ceremony", "backup", "init"])?;
        env.ok(&["backup", "sync"])?;
        env.create("sig", "ec-p384", "sign,verify")?;
        Ok(())
    })?;
    svc.register("demo-app")?;
    let metric = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("kms_backup_drill_failures "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let scrape = || async {
        let r = svc.fetch("demo-app", "GET", "/metrics", Vec::new()).await?;
        Ok::<String, Box<dyn std::error::Error>>(String::from_utf8_lossy(&r.body).into_owned())
    };
    // Healthy copies: the drill passes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = scrape().await?;
    assert_eq!(metric(&text), Some(0.0), "{text}");

    // The copy is destroyed behind the service's back; the next scheduled drill notices.
    let id = svc.env.object_id("sig")?;
    let o = svc.env.pkcs11_tool(
        "kms-backup",
        &["--delete-object", "--type", "privkey", "--id", &id],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = scrape().await?;
        if metric(&text).is_some_and(|n| n >= 1.0) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the drill failure never showed in metrics:\n{text}").into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rows = svc.audit(Some("sig"))?;
    let failed = rows
        .iter()
        .find(|r| r["action"] == "backup.drill" && r["outcome"] == "error")
        .ok_or("no failed drill record")?;
    assert_eq!(failed["actor"], "kms");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("scheduled restore drill")),
        "{failed}"
    );
    assert!(
        svc.log().contains("restore drill found problems"),
        "{}",
        svc.log()
    );
    Ok(())
}
