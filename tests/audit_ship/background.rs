//! The service ships in the background.

use super::*;

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
