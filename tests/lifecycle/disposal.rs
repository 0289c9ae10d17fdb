//! Disposal with two signatures and a wait.

use super::*;

#[test]
fn disposal_needs_two_signatures_and_a_wait_then_leaves_nothing() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    people(&env)?;
    env.create("old", "ec-p384", "sign,verify")?;
    env.ok(&["--reason", "CHG-1", "key", "rotate", "old"])?;
    let ids: Vec<String> = versions(&env, "old")?
        .iter()
        .filter_map(|v| v["object_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2);

    let o = env.run(&[
        "key",
        "dispose",
        "old",
        "--contract-ref",
        "",
        "--justification",
        "x",
    ])?;
    assert_fails(&o, 2, &["--contract-ref"]);
    let o = env.run(&[
        "key",
        "dispose",
        "old",
        "--contract-ref",
        "C",
        "--justification",
        "x",
        "--wait",
        "1h",
    ])?;
    assert_fails(&o, 2, &["minimum waiting period"]);
    let id = dispose_request(&env, "old", "7d")?;
    // Roles and order: the manager cannot verify, the admin cannot approve, no approval first.
    assert_fails(&dispose_step(&env, "bob", "--verify", &id)?, 4, &[]);
    assert_fails(
        &dispose_step(&env, "bob", "--approve", &id)?,
        4,
        &["cannot be approved now"],
    );
    let o = dispose_step(&env, "alice", "--verify", &id)?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_fails(&dispose_step(&env, "alice", "--approve", &id)?, 4, &[]);
    let o = dispose_step(&env, "bob", "--approve", &id)?;
    assert!(o.status.success(), "{}", stderr(&o));
    // The waiting period holds.
    assert_fails(
        &env.run(&["key", "dispose", "--execute", &id])?,
        4,
        &["waiting period"],
    );
    let o = ok_at(&env, "1d", &["schedule", "run"])?;
    assert!(!stdout(&o).contains("disposed"), "{}", stdout(&o));

    // A cancelled disposal never happens; a new one does.
    let o = env.ok(&["key", "dispose", "--cancel", &id])?;
    assert!(stdout(&o).contains("cancelled"), "{}", stdout(&o));
    assert_fails(
        &at(&env, "8d", OFFICER, &["key", "dispose", "--execute", &id])?,
        4,
        &["cancelled"],
    );
    let id = dispose_request(&env, "old", "7d")?;
    assert!(dispose_step(&env, "alice", "--verify", &id)?
        .status
        .success());
    assert!(dispose_step(&env, "bob", "--approve", &id)?
        .status
        .success());
    let o = ok_at(&env, "8d", &["schedule", "run"])?;
    assert!(
        stdout(&o).contains(&format!("disposed   {id}")),
        "{}",
        stdout(&o)
    );

    // Nothing of the key on any token; the tombstone stays; the name is not reusable.
    for oid in &ids {
        assert!(
            !on_token(&env, "kms-primary", oid)? && !on_token(&env, "kms-backup", oid)?,
            "{oid} survived"
        );
    }
    let k = json(&env.ok(&["key", "show", "old", "--json"])?)?;
    assert!(k["disposed_at"].is_string(), "{k}");
    let o = env.run(&create_args("old", "ec-p384", "sign,verify", &[]))?;
    assert!(!o.status.success(), "the name of a disposed key was reused");
    // Its grants were revoked with it; nothing can use it.
    assert_fails(
        &env.run(&["key", "sign", "old", "--in", path(&env.write("m", b"m")?)?])?,
        4,
        &[],
    );

    // The destruction record verifies with the audit key, independently (openssl).
    let e = json(&env.ok(&["key", "disposals", "--show", &id])?)?;
    let record = e["disposal"]["record"].as_str().ok_or("no record")?;
    let rec: Value = serde_json::from_str(record)?;
    assert_eq!(rec["contract"], "CTR-2026-17");
    assert_eq!(rec["versions"].as_array().map(Vec::len), Some(2));
    for v in rec["versions"].as_array().ok_or("versions")? {
        for t in v["tokens"].as_array().ok_or("tokens")? {
            assert_eq!(t["validated"], true, "{t}");
        }
    }
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(e["record_signature_b64"].as_str().ok_or("sig")?)?;
    let (rec_file, sig_file, pem) = (
        env.write("record.json", record.as_bytes())?,
        env.write("record.sig", &sig)?,
        env.path("audit.pem"),
    );
    std::fs::write(&pem, env.ok(&["audit", "public-key"])?.stdout)?;
    let o = openssl_dgst_verify(&["-sha384"], &pem, &sig_file, &rec_file)?;
    assert!(
        o.status.success(),
        "destruction record signature: {}",
        stderr(&o)
    );
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}
