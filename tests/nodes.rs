//! Several nodes on one inventory, two sites (issue 13): node `bangalore-1` serves from the
//! primary token (site bangalore), node `mumbai-1` from the backup token's copies (site mumbai),
//! both real `kms serve` processes on loopback sharing one inventory. A revoke made through
//! one node is refused by the other at once; a rotation made at one site is used by the other;
//! SIGKILL of one node under load loses no request (the client retries on the other), the
//! singleton lease moves to the survivor within its expiry, and the audit chain verifies.

use common::service::{spawn_serve, Service};
use common::*;
use kms_testkit as common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms::client::Connection;
use serde_json::{json, Value};

#[path = "nodes/pg_restart.rs"]
mod pg_restart;

const LEASE_SECS: u64 = 3;

/// `config` with `site` on both tokens and this `[node]`.
fn node_config(base: &str, name: &str, site: &str) -> Res<String> {
    let mut out = String::new();
    let mut section = String::new();
    for line in base.lines() {
        if line.starts_with('[') {
            section = line.trim().to_owned();
        }
        out.push_str(line);
        out.push('\n');
        match section.as_str() {
            "[tokens.primary]" if line.starts_with("[tokens.primary]") => {
                out.push_str("site = \"bangalore\"\n")
            }
            "[tokens.backup]" if line.starts_with("[tokens.backup]") => {
                out.push_str("site = \"mumbai\"\n")
            }
            _ => {}
        }
    }
    if !out.contains("site = \"mumbai\"") {
        return Err("no [tokens.backup] in kms.toml".into());
    }
    out.push_str(&format!(
        "\n[node]\nname = \"{name}\"\nsite = \"{site}\"\nlease_secs = {LEASE_SECS}\n"
    ));
    Ok(out)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn health(addr: std::net::SocketAddr, tls: Arc<rustls::ClientConfig>) -> Res<Value> {
    let mut c = Connection::connect(addr, tls).await?;
    Ok(c.request("GET", "/v1/health", None, None).await?.json()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_two_nodes_one_inventory() -> TestResult {
    let mut svc = Service::start_with(|env| {
        env.ok(&["--reason", "CHG-13 ceremony", "backup", "init"])?;
        let base = std::fs::read_to_string(env.config())?;
        std::fs::write(env.path("kms-base.toml"), &base)?;
        std::fs::write(
            env.config(),
            node_config(&base, "bangalore-1", "bangalore")?,
        )?;
        std::fs::write(
            env.path("kms-mumbai.toml"),
            node_config(&base, "mumbai-1", "mumbai")?,
        )?;
        env.create("sig", "ec-p384", "sign,verify")?;
        env.create("dek", "aes-256", "wrap,unwrap")?;
        env.ok(&["backup", "sync"])?;
        // A key whose Mumbai copy is lost (and the drill has found it): served in Bangalore
        // only until it is copied again.
        env.create("local-only", "ec-p384", "sign,verify")?;
        let o = env.pkcs11_tool(
            "kms-backup",
            &[
                "--delete-object",
                "--type",
                "privkey",
                "--label",
                "kms:local-only:v1",
            ],
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        let o = env.run(&["backup", "verify"])?;
        assert!(!o.status.success(), "the drill missed the lost copy");
        Ok(())
    })?;
    let (mumbai, mumbai_addr) = spawn_serve(
        &svc.env,
        &svc.env.path("kms-mumbai.toml"),
        "serve-mumbai.log",
    )?;
    // Killed however the test ends (a failed assertion unwinds past any explicit kill).
    let _mumbai = KillOnDrop(mumbai);
    let result = run(&mut svc, mumbai_addr).await;
    if result.is_err() {
        eprintln!(
            "--- bangalore-1 ---\n{}\n--- mumbai-1 ---\n{}",
            svc.log(),
            std::fs::read_to_string(svc.env.path("serve-mumbai.log")).unwrap_or_default()
        );
    }
    result
}

async fn run(svc: &mut Service, mumbai: std::net::SocketAddr) -> TestResult {
    let bangalore = svc.addr;
    svc.register("demo-app")?;
    svc.register("other-app")?;
    for key in ["sig", "local-only"] {
        svc.grant("demo-app", key, "sign,verify")?;
    }
    svc.grant("demo-app", "dek", "wrap,unwrap")?;
    let other_grant = svc.grant("other-app", "sig", "sign")?;
    let tls = svc.tls("demo-app")?;

    // Health: each node names its site and what it can serve there; bangalore-1 started first
    // and holds the singleton lease.
    let hb = health(bangalore, tls.clone()).await?;
    let hm = health(mumbai, tls.clone()).await?;
    assert_eq!(hb["node"]["site"], "bangalore", "{hb}");
    assert_eq!(hb["serving"], "primary", "{hb}");
    assert_eq!(hb["node"]["singletons"], true, "{hb}");
    assert_eq!(hm["node"]["site"], "mumbai", "{hm}");
    assert_eq!(hm["serving"], "backup", "{hm}");
    assert_eq!(hm["node"]["singletons"], false, "{hm}");
    assert_eq!(
        hm["node"]["keys_not_servable"],
        json!(["local-only"]),
        "{hm}"
    );

    // Mumbai serves a copied key from its own token, and refuses a key with no copy there with
    // a code that says where to go.
    let sign = |key: &str, msg: &[u8]| {
        (
            format!("/v1/keys/{key}/sign"),
            json!({ "message": b64(msg) }),
        )
    };
    let mut cm = Connection::connect(mumbai, tls.clone()).await?;
    let (p, b) = sign("sig", b"from mumbai");
    let r = cm.request("POST", &p, Some(&b), None).await?;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (p, b) = sign("local-only", b"from mumbai");
    let r = cm.request("POST", &p, Some(&b), None).await?;
    let v: Value = r.json()?;
    assert_eq!(
        (r.status, v["code"].as_str()),
        (503, Some("not-on-this-site")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("site 'bangalore'")),
        "{v}"
    );
    let mut cb = Connection::connect(bangalore, tls.clone()).await?;
    let (p, b) = sign("local-only", b"from bangalore");
    assert_eq!(cb.request("POST", &p, Some(&b), None).await?.status, 200);

    // A revoke made through bangalore-1's configuration is refused by mumbai-1 at once.
    let mut co = Connection::connect(mumbai, svc.tls("other-app")?).await?;
    let (p, b) = sign("sig", b"before revoke");
    assert_eq!(co.request("POST", &p, Some(&b), None).await?.status, 200);
    svc.env
        .ok(&["--reason", "leaver", "grant", "revoke", &other_grant])?;
    let (p, b) = sign("sig", b"after revoke");
    let r = co.request("POST", &p, Some(&b), None).await?;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));

    // A rotation at Bangalore (new version on the primary, copied to Mumbai) is used by Mumbai.
    svc.env
        .ok(&["--reason", "CHG-13 rotation", "key", "rotate", "sig"])?;
    let (p, b) = sign("sig", b"after rotation");
    let r = cm.request("POST", &p, Some(&b), None).await?;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let signed: Value = r.json()?;
    assert_eq!(signed["key_version"], 2, "{signed}");

    // Load on both nodes; bangalore-1 is killed mid-load; every request is retried on the other
    // node until one answers, and none may be lost.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for t in 0..4usize {
        let (stop, ok, lost, tls) = (stop.clone(), ok.clone(), lost.clone(), tls.clone());
        let nodes = [bangalore, mumbai];
        tasks.push(tokio::spawn(async move {
            let mut conns: [Option<Connection>; 2] = [None, None];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let msg = format!("{t}/{i}");
                let mut done = false;
                // Start on alternating nodes; on any failure, go to the other one.
                for attempt in 0..6 {
                    let n = (i + t + attempt) % 2;
                    if conns[n].is_none() {
                        conns[n] = Connection::connect(nodes[n], tls.clone()).await.ok();
                    }
                    let Some(c) = conns[n].as_mut() else { continue };
                    match c
                        .request(
                            "POST",
                            "/v1/keys/sig/sign",
                            Some(&json!({ "message": b64(msg.as_bytes()) })),
                            None,
                        )
                        .await
                    {
                        Ok(r) if r.status == 200 => {
                            done = true;
                            break;
                        }
                        Ok(_) | Err(_) => conns[n] = None,
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if done {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_kill = ok.load(Ordering::Relaxed);
    let killed_at = Instant::now();
    std::process::Command::new("kill")
        .args(["-KILL", &svc.pid().to_string()])
        .status()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let (ok, lost) = (ok.load(Ordering::Relaxed), lost.load(Ordering::Relaxed));
    assert_eq!(lost, 0, "requests lost when a node died ({ok} succeeded)");
    assert!(
        ok > before_kill + 10,
        "requests kept succeeding: {before_kill} → {ok}"
    );

    // The lease moves to mumbai-1 within its expiry (plus one renewal period).
    let deadline = killed_at + Duration::from_secs(LEASE_SECS + LEASE_SECS / 3 + 3);
    loop {
        let h = health(mumbai, tls.clone()).await?;
        if h["node"]["singletons"] == true {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the lease did not move: {h}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: Vec<Value> =
        serde_json::from_slice(&svc.env.ok(&["audit", "list", "--json"])?.stdout)?;
    let takeover = rows
        .iter()
        .find(|r| {
            r["action"] == "node.lease-taken"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("from node 'bangalore-1'"))
        })
        .ok_or("no takeover record")?;
    assert_eq!(takeover["node"], "mumbai-1@mumbai", "{takeover}");
    // Records name the node that wrote them.
    assert!(rows
        .iter()
        .any(|r| r["action"] == "key.sign" && r["node"] == "bangalore-1@bangalore"));
    assert!(rows
        .iter()
        .any(|r| r["action"] == "key.sign" && r["node"] == "mumbai-1@mumbai"));
    let signs_ok = rows
        .iter()
        .filter(|r| r["action"] == "key.sign" && r["outcome"] == "ok")
        .count();
    assert!(
        signs_ok >= ok,
        "{signs_ok} sign records for {ok} answered signatures"
    );

    // One chain across both writers.
    let o = svc.env.ok(&["audit", "verify", "--json"])?;
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["ok"], true, "{v}");
    Ok(())
}
