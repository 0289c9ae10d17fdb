//! A PostgreSQL restart under load (issue 25): the node is not restarted. While the database is
//! down every answer is 200 or 503 `inventory-unavailable` with Retry-After; the node serves
//! again by itself soon after the database is back; every 200 has its audit record and the
//! chain verifies.

use super::*;

/// Where a private PostgreSQL server of this test lives (its own, so that stopping it disturbs
/// no other test).
struct PrivatePg(std::path::PathBuf);

impl PrivatePg {
    fn run(&self, cmd: &str) -> TestResult {
        let out = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/setup-postgres"))
            .arg(cmd)
            .arg(&self.0)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "setup-postgres {cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}

/// `kms.toml`'s inventory moved to the private server (replacing the run's own PostgreSQL
/// database, if the run has one).
fn point_at(env: &Env, pg: &std::path::Path) -> TestResult {
    let port = std::fs::read_to_string(pg.join("port"))?.trim().to_owned();
    let cfg = std::fs::read_to_string(env.config())?;
    let mut out = String::new();
    let mut inventory = false;
    for line in cfg.lines() {
        if line.starts_with('[') {
            inventory = line.trim() == "[inventory]";
        }
        if inventory && (line.starts_with("postgres =") || line.starts_with("password =")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if inventory && line.starts_with("path = ") {
            out.push_str(&format!(
                "postgres = \"postgres://kms@127.0.0.1:{port}/kms\"\npassword = \"file:{}\"\n",
                pg.join("password").display()
            ));
        }
    }
    std::fs::write(env.config(), out)?;
    Ok(())
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    unavailable: AtomicUsize,
    other: std::sync::Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_heals_without_restarting_the_node() -> TestResult {
    // PostgreSQL's programs are there only in the PostgreSQL pass.
    if std::env::var_os("KMS_TEST_POSTGRES").is_none() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir)?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::fs::set_permissions(&pg_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let pg = PrivatePg(pg_dir.clone());
    pg.run("start")?;
    let mut svc = Service::start_with(|env| {
        point_at(env, &pg_dir)?;
        env.ok(&["principal", "add", OFFICER, "--role", "security-officer"])?;
        env.ok(&["principal", "add", USER, "--role", "user"])?;
        env.create("sig", "ec-p384", "sign,verify")?;
        Ok(())
    })?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;
    let tls = svc.tls("demo-app")?;
    let addr = svc.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for t in 0..4usize {
        let (stop, tally, tls) = (stop.clone(), tally.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let Ok(mut c) = Connection::connect(addr, tls.clone()).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let body = json!({ "message": b64(format!("{t}/{n}").as_bytes()) });
                match c
                    .request("POST", "/v1/keys/sig/sign", Some(&body), None)
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r)
                        if r.status == 503
                            && r.retry_after.is_some()
                            && String::from_utf8_lossy(&r.body)
                                .contains("inventory-unavailable") =>
                    {
                        tally.unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(r) => tally.other.lock().map_or((), |mut o| {
                        o.push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
                    }),
                    Err(e) => tally
                        .other
                        .lock()
                        .map_or((), |mut o| o.push(format!("no answer: {e}"))),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = tally.ok.load(Ordering::Relaxed);
    assert!(before > 0, "no signature before the restart");

    pg.run("stop")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Health says so (a load balancer takes the node out while its inventory is away).
    let mut c = Connection::connect(addr, tls.clone()).await?;
    let h = c.request("GET", "/v1/health", None, None).await?;
    assert_eq!(h.status, 503, "{}", String::from_utf8_lossy(&h.body));
    assert!(
        String::from_utf8_lossy(&h.body).contains("inventory-unavailable")
            && h.retry_after.is_some(),
        "{}",
        String::from_utf8_lossy(&h.body)
    );
    drop(c);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = tally.unavailable.load(Ordering::Relaxed);
    pg.run("start")?;
    let back = Instant::now();
    let ok_at_start = tally.ok.load(Ordering::Relaxed);
    let healed = loop {
        if tally.ok.load(Ordering::Relaxed) > ok_at_start {
            break back.elapsed();
        }
        if back.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "no signature within 10 s of PostgreSQL's return; other answers: {:?}; log:\n{}",
                tally.other.lock().map(|o| o.clone()).unwrap_or_default(),
                svc.log()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let other = tally.other.lock().map(|o| o.clone()).unwrap_or_default();
    // A connection the server was closing when PostgreSQL went away may end without an answer;
    // every answer given is a 200 or a 503 with Retry-After.
    let wrong: Vec<&String> = other
        .iter()
        .filter(|o| !o.starts_with("no answer"))
        .collect();
    assert!(
        wrong.is_empty(),
        "answers other than 200 / 503 inventory-unavailable: {wrong:?}"
    );
    assert!(
        during > 0,
        "no 503 inventory-unavailable while PostgreSQL was down"
    );
    eprintln!(
        "healed {healed:?} after PostgreSQL's return; {} signatures, {during} refused while it was down",
        tally.ok.load(Ordering::Relaxed)
    );
    svc.stop()?;

    // Every 200 has its record, and the chain verifies.
    let ok = tally.ok.load(Ordering::Relaxed);
    let rows = svc
        .env
        .run(&["audit", "list", "--json", "--limit", "100000"])?;
    let rows: Vec<Value> = serde_json::from_slice(&rows.stdout)?;
    let signed = rows
        .iter()
        .filter(|r| r["action"] == "key.sign" && r["outcome"] == "ok")
        .count();
    assert!(signed >= ok, "{signed} sign records for {ok} signatures");
    let v = svc.env.run(&["audit", "verify"])?;
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    Ok(())
}
