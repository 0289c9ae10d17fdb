//! Fail-closed and complete: an unwritable audit store stops everything, every access is in a
//! key's history, the service signs a checkpoint at shutdown.

use super::*;

#[test]
fn when_the_audit_store_is_unwritable_nothing_happens() -> TestResult {
    let env = with_history()?;
    let before_objects = env.object_count("kms-primary")?;
    let before_keys = stdout(&env.ok(&["key", "list", "--json"])?);
    env.refuse("audit_down", "BEFORE INSERT", "audit", None, "disk full")?;
    let o = env.run(&create_args("new-key", "aes-256", "encrypt,decrypt", &[]))?;
    assert!(
        !o.status.success(),
        "creation went ahead without its audit record"
    );
    let m = env.write("m2", b"x")?;
    let o = env.run(&[
        "key",
        "sign",
        "k",
        "--in",
        m.to_str().ok_or("path")?,
        "--out",
        "-",
    ])?;
    assert_fails(&o, 6, &["audit record could not be written"]);
    assert!(
        o.stdout.is_empty(),
        "a signature was released without its audit record"
    );
    env.unrefuse("audit_down", "audit")?;
    assert_eq!(env.object_count("kms-primary")?, before_objects);
    let after_keys = stdout(&env.ok(&["key", "list", "--json"])?);
    assert_eq!(before_keys, after_keys, "nothing else changed");
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(0), "{out}");
    Ok(())
}

#[test]
fn records_are_complete_and_a_key_history_shows_every_access() -> TestResult {
    let env = with_history()?;
    let o = env.ok(&["audit", "list", "--json"])?;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let rows = rows.as_array().ok_or("array")?;
    let sign = rows
        .iter()
        .find(|r| r["action"] == "key.sign")
        .ok_or("no sign record")?;
    assert_eq!(sign["actor"], USER);
    assert_eq!(sign["role"], "user");
    assert!(
        sign["os_user"].as_str().is_some_and(|u| !u.is_empty()),
        "{sign}"
    );
    assert!(sign["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(sign["key_name"], "k");
    assert_eq!(sign["key_version"], 1);
    assert!(sign["at"]
        .as_str()
        .is_some_and(|t| t.contains('.') && t.ends_with('Z')));
    assert_eq!(sign["hash"].as_str().map(str::len), Some(96), "SHA-384 hex");
    // The reason of a key use names the grant, its ticket and its justification.
    assert!(
        sign["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ticket TEST-1: test fixture")),
        "{sign}"
    );
    let refused = rows
        .iter()
        .find(|r| r["action"] == "audit.read" && r["outcome"] == "denied")
        .ok_or("no refusal record")?;
    assert_eq!(refused["code"], "wrong-role");
    // A change carries before -> after.
    let grant = rows
        .iter()
        .find(|r| r["action"] == "grant.break-glass")
        .ok_or("no grant record")?;
    assert!(grant["diff"]["before"].is_null());
    assert_eq!(grant["diff"]["after"]["principal"], USER);
    let gid = grant["diff"]["after"]["id"]
        .as_str()
        .ok_or("grant id")?
        .to_owned();
    env.ok(&["grant", "revoke", &gid, "--reason", "rotation of staff"])?;
    let o = env.ok(&["audit", "list", "--json", "--actor", OFFICER])?;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let revoke = rows
        .as_array()
        .and_then(|a| a.iter().find(|r| r["action"] == "grant.revoke"))
        .ok_or("no revoke record")?;
    assert!(revoke["diff"]["before"]["revoked_at"].is_null());
    assert!(revoke["diff"]["after"]["revoked_at"].is_string());
    assert_eq!(revoke["reason"], "rotation of staff");

    // Every access to k: creation, grant, use, reads.
    let o = env.ok(&["key", "history", "k", "--json"])?;
    let h: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let actions: Vec<&str> = h
        .as_array()
        .ok_or("array")?
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in ["key.create", "grant.break-glass", "key.sign", "key.show"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    // Exports.
    let o = env.ok(&["audit", "export", "--format", "csv", "--key", "k"])?;
    let csv = stdout(&o);
    assert!(csv.starts_with("seq,at,actor,role,"), "{csv}");
    assert!(csv.contains("key.sign"));
    let o = env.ok(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--since",
        "2020-01-01",
    ])?;
    for line in stdout(&o).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        assert!(v["seq"].is_i64());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_signs_a_checkpoint_at_shutdown() -> TestResult {
    let mut svc = common::service::Service::start()?;
    let before = {
        let o = svc.env.ok(&["audit", "verify", "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        v["checkpoints"].as_u64().unwrap_or(0)
    };
    // Something the service records: an unregistered client is refused (its connection closed
    // after the handshake) and audited.
    let answered = match svc.connect("stranger").await {
        Err(_) => None,
        Ok(mut c) => c.request("GET", "/v1/keys", None, None).await.ok(),
    };
    assert!(answered.is_none(), "stranger got an answer: {answered:?}");
    let status = svc.stop()?;
    assert!(status.success());
    let o = svc.env.ok(&["audit", "verify", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["checkpoints"].as_u64().unwrap_or(0) > before,
        "no checkpoint at shutdown: {v}"
    );
    Ok(())
}
