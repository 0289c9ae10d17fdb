//! Stopping the service: SIGTERM finishes in-flight requests, a killed node leaves no unsigned
//! stretch of the audit trail.

use super::*;

// ---- 11. graceful shutdown ----------------------------------------------------------------------

/// What one client task saw: replies (status, received after SIGTERM?) and how it ended.
#[derive(Debug, Default)]
struct Seen {
    replies: Vec<(u16, bool)>,
    ended: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests() -> TestResult {
    const N: usize = 8;
    let mut svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;

    // An idle keep-alive connection (one request done) must not hold the shutdown up.
    let mut idle = svc.connect("demo-app").await?;
    expect(&get(&mut idle, "/v1/health").await?, 200, None, "health")?;

    // N connections, each signing back to back until the service goes away, so that requests
    // are certainly in flight when SIGTERM arrives.
    let mut conns = Vec::new();
    for _ in 0..N {
        conns.push(svc.connect("demo-app").await?);
    }
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let signalled = std::sync::Arc::clone(&signalled);
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            for n in 0..10_000 {
                let body = json!({ "message": b64(format!("in flight {i}/{n}").as_bytes()) });
                match c
                    .request("POST", "/v1/keys/sig/sign", Some(&body), None)
                    .await
                {
                    Ok(r) => {
                        let after = signalled.load(std::sync::atomic::Ordering::SeqCst);
                        seen.replies.push((r.status, after));
                        if r.status != 200 {
                            seen.ended = Some(format!("{} {}", r.status, body_text(&r)));
                            break;
                        }
                    }
                    Err(e) => {
                        seen.ended = Some(format!("connection error: {e}"));
                        break;
                    }
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t0 = Instant::now();
    signalled.store(true, std::sync::atomic::Ordering::SeqCst);
    svc.terminate()?;

    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await?);
    }
    let status = tokio::task::block_in_place(|| {
        svc.wait_exit(Duration::from_secs(10).saturating_sub(t0.elapsed()))
    })?;
    let exited_after = t0.elapsed();
    assert!(
        exited_after <= Duration::from_secs(10),
        "took {exited_after:?} to exit"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; stderr:\n{}",
        svc.log()
    );
    assert!(
        get(&mut idle, "/v1/health").await.is_err(),
        "the idle connection still answers after the exit"
    );

    let mut ok = 0;
    let mut ok_after = 0;
    for (i, s) in seen.iter().enumerate() {
        for (status, after) in &s.replies {
            assert!(
                *status < 500,
                "task {i} got a server error around shutdown: {s:?}"
            );
            assert_eq!(*status, 200, "task {i}: {s:?}");
            ok += 1;
            if *after {
                ok_after += 1;
            }
        }
        let ended = s.ended.as_deref().unwrap_or("");
        assert!(
            ended.starts_with("connection error"),
            "task {i} should end when the service closes its connection: {s:?}"
        );
    }
    eprintln!(
        "graceful shutdown: {ok} signatures ({ok_after} answered after SIGTERM), exit {exited_after:?}"
    );
    assert!(
        ok_after > 0,
        "no request was answered after SIGTERM; nothing was in flight"
    );
    // Every signature the service made was delivered: none done and then dropped at shutdown.
    let rows = svc.audit(Some("sig"))?;
    assert_eq!(
        count(&rows, "key.sign", "ok"),
        ok,
        "ok key.sign audit rows vs 200 replies received"
    );
    Ok(())
}

/// Several processes write one trail (nodes on one inventory, or a node and its restart), and a
/// process killed before its own count reaches `checkpoint_every` takes that count with it: the
/// next one must still sign in time, from what the shared trail holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_no_unsigned_stretch_for_the_next() -> TestResult {
    const EVERY: usize = 40;
    let mut svc = Service::start_with(|env| {
        let mut cfg = std::fs::read_to_string(env.config())?;
        cfg.push_str(&format!("\n[audit]\ncheckpoint_every = {EVERY}\n"));
        std::fs::write(env.config(), cfg)?;
        Ok(())
    })?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;
    for round in 0..2 {
        let mut c = svc.connect("demo-app").await?;
        for n in 0..EVERY * 3 / 4 {
            let r = sign_msg(&mut c, "sig", format!("{round}/{n}").as_bytes()).await?;
            expect(&r, 200, None, "sign")?;
        }
        drop(c);
        svc.kill()?;
        if round == 0 {
            svc.restart("serve-2.log")?;
        }
    }
    let o = svc.env.run(&["audit", "verify", "--json"])?;
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(o.status.code(), Some(0), "{v}");
    Ok(())
}
