//! Open connections: revocation and disabling apply at once, concurrent signing leaks no
//! session, and the metrics count requests.

use super::*;

// ---- 8. revocation on an open connection -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_disabling_apply_to_open_connections() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    let id = svc.grant("demo-app", "sig", "sign")?;
    let mut c = svc.connect("demo-app").await?;
    expect(&sign_msg(&mut c, "sig", b"1").await?, 200, None, "sign")?;

    svc.env.ok(&["grant", "revoke", &id, "--reason", "r"])?;
    let r = sign_msg(&mut c, "sig", b"2").await?;
    expect(
        &r,
        403,
        Some("no-grant"),
        "sign after revocation, same connection",
    )?;

    svc.grant("demo-app", "sig", "sign")?;
    expect(
        &sign_msg(&mut c, "sig", b"3").await?,
        200,
        None,
        "sign with a new grant",
    )?;

    svc.env.ok(&[
        "principal",
        "disable",
        "demo-app",
        "--reason",
        "app retired",
    ])?;
    let r = sign_msg(&mut c, "sig", b"4").await?;
    expect(
        &r,
        403,
        Some("principal-disabled"),
        "sign after disabling, same connection",
    )?;
    let r = get(&mut c, "/v1/keys").await?;
    expect(
        &r,
        403,
        Some("principal-disabled"),
        "list keys after disabling",
    )?;
    Ok(())
}

// ---- 10. concurrency ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signing_leaks_no_session() -> TestResult {
    const TASKS: usize = 16;
    const EACH: usize = 25;
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (addr, tls) = (svc.addr, svc.tls("demo-app")?);
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::connect(addr, tls)
                .await
                .map_err(|e| format!("task {t}: connect: {e}"))?;
            let mut statuses = Vec::new();
            for i in 0..EACH {
                let r = sign_msg(&mut c, "sig", format!("{t}/{i}").as_bytes())
                    .await
                    .map_err(|e| format!("task {t} sign {i}: {e}"))?;
                if r.status != 200 {
                    return Err(format!("task {t} sign {i}: {} {}", r.status, body_text(&r)));
                }
                statuses.push(r.status);
            }
            Ok::<usize, String>(statuses.len())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await??;
    }
    assert_eq!(ok, TASKS * EACH);

    let mut c = svc.connect("demo-app").await?;
    let h = expect(&get(&mut c, "/v1/health").await?, 200, None, "health")?;
    let tokens = h["tokens"].as_array().ok_or("health has no tokens")?;
    let primary = tokens
        .iter()
        .find(|t| t["label"] == "kms-primary")
        .ok_or_else(|| format!("no kms-primary in health: {h}"))?;
    let open = primary["sessions_open"].as_u64().ok_or("sessions_open")?;
    let idle = primary["sessions_idle"].as_u64().ok_or("sessions_idle")?;
    let max = primary["sessions_max"].as_u64().ok_or("sessions_max")?;
    assert_eq!(open, idle, "a session is still checked out: {primary}");
    assert!(
        open <= max,
        "more sessions open than the pool allows: {primary}"
    );
    assert!(open >= 1, "no pool session was ever opened: {primary}");

    let rows = svc.audit(Some("sig"))?;
    assert_eq!(
        count(&rows, "key.sign", "ok"),
        TASKS * EACH,
        "one ok key.sign audit row per signature"
    );
    Ok(())
}

// ---- 12. metrics --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests() -> TestResult {
    let mut svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;
    let mut c = svc.connect("demo-app").await?;
    for i in 0..3 {
        expect(
            &sign_msg(&mut c, "sig", format!("{i}").as_bytes()).await?,
            200,
            None,
            "sign",
        )?;
    }
    let r = post(
        &mut c,
        "/v1/keys/dek/encrypt",
        json!({ "plaintext": "aGk=" }),
    )
    .await?;
    expect(&r, 403, Some("no-grant"), "encrypt without a grant")?;
    let r = get(&mut c, "/metrics").await?;
    assert_eq!(r.status, 200);
    let text = body_text(&r);
    assert!(
        text.contains("kms_requests_total{operation=\"sign\",status=\"200\"} 3"),
        "metrics: {text}"
    );
    assert!(
        text.contains("kms_requests_total{operation=\"encrypt\",status=\"403\"} 1"),
        "metrics: {text}"
    );
    assert!(
        text.contains("kms_request_duration_seconds_bucket"),
        "metrics: {text}"
    );
    let status = tokio::task::block_in_place(|| svc.stop())?;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    Ok(())
}
