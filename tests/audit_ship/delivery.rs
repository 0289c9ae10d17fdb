//! Outages, hung servers, backlogs larger than a batch, and TLS only to a server the CA vouches for.

use super::*;

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
