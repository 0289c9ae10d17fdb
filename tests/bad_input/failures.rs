//! Failures along the engine's path: refusals are audited, failed activations clean up or are
//! reported, a signature is withheld without its audit row.

use super::*;

// ---- 13. refusals are audited -------------------------------------------------------------------

#[test]
fn a_refusal_is_audited_as_denied() -> TestResult {
    let env = Env::new()?;
    env.create("ec", "ec-p384", "sign,verify")?;
    let pt = env.write("pt", b"secret")?;
    // test-user holds a grant of every operation on `ec`, so the key's own policy refuses.
    let out = env.run_as(
        USER,
        &[
            "--reason",
            "CHG-13 probing policy",
            "key",
            "encrypt",
            "ec",
            "--in",
            &pt.to_string_lossy(),
            "--out",
            &env.path("ct").to_string_lossy(),
        ],
    )?;
    assert_fails(&out, 4, &["cannot encrypt"]);

    let audit = env.ok(&["audit", "list", "--key", "ec", "--json"])?;
    let rows: serde_json::Value = serde_json::from_slice(&audit.stdout)?;
    let rows = rows.as_array().ok_or("audit list --json is not an array")?;
    let denied: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["action"] == "key.encrypt" && r["outcome"] == "denied")
        .collect();
    assert_eq!(
        denied.len(),
        1,
        "expected one denied key.encrypt row in {rows:#?}"
    );
    let row = denied[0];
    assert_eq!(row["key_name"], "ec");
    assert_eq!(row["actor"], USER);
    // The caller's reason, then the grant that let the request reach the key's own policy.
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("CHG-13 probing policy; grant g-") && reason.contains("ticket TEST-1"),
        "{reason}"
    );
    let detail = row["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("cannot encrypt"),
        "detail says why: {detail:?}"
    );
    Ok(())
}

// ---- 14. no half-done state when recording fails ------------------------------------------------

#[test]
fn failed_activation_destroys_the_generated_key() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?; // also creates the inventory file
    env.refuse(
        "fail_activate",
        "BEFORE UPDATE OF state",
        "key_versions",
        None,
        "injected failure",
    )?;
    let out = try_create(&env, "half", "ec-p384", "sign,verify", &[])?;
    assert!(
        !out.status.success(),
        "create succeeded despite the injected failure"
    );
    assert_fails(&out, 6, &["injected failure"]);
    assert_unchanged(&env, &before, "failed activation")?;
    let show = env.run(&["key", "show", "half"])?;
    assert_fails(&show, 3, &["no key named 'half'"]);
    let rec = env.run(&["reconcile", "--login"])?;
    assert_eq!(
        rec.status.code(),
        Some(0),
        "reconcile should find nothing: {}{}",
        stdout(&rec),
        stderr(&rec)
    );
    assert_fails(&out, 6, &["key 'half' was not created", "destroyed"]);
    Ok(())
}

#[test]
fn failed_activation_and_cleanup_leaves_a_pending_version_reconcile_reports() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    env.refuse(
        "fail_activate",
        "BEFORE UPDATE OF state",
        "key_versions",
        None,
        "injected failure",
    )?;
    env.refuse(
        "fail_delete",
        "BEFORE DELETE",
        "key_versions",
        None,
        "injected",
    )?;
    let out = try_create(&env, "half", "ec-p384", "sign,verify", &[])?;
    assert_fails(&out, 6, &["'half'", "kms reconcile"]);
    assert_eq!(
        env.object_count("kms-primary")?,
        before.primary,
        "the generated objects were not destroyed"
    );
    assert_eq!(env.object_count("kms-backup")?, before.backup);

    let rec = env.run(&["reconcile", "--login"])?;
    assert_eq!(
        rec.status.code(),
        Some(1),
        "reconcile must flag the pending version: {}{}",
        stdout(&rec),
        stderr(&rec)
    );
    let report = stdout(&rec);
    assert!(
        report.contains("unfinished creation: key 'half' v1") && report.contains("pending"),
        "reconcile should report the unfinished creation; got: {report}"
    );
    assert!(
        report.contains("is not on the token"),
        "the object was destroyed, reconcile should say so; got: {report}"
    );
    Ok(())
}

// ---- 15. fail-closed audit ----------------------------------------------------------------------

#[test]
fn signature_is_withheld_when_its_audit_row_cannot_be_written() -> TestResult {
    let env = Env::new()?;
    env.create("signer", "ec-p384", "sign,verify")?;
    let msg = env.write("msg", b"pay 100 to bob")?;
    let before = snapshot(&env)?;
    env.refuse(
        "no_sign_audit",
        "BEFORE INSERT",
        "audit",
        Some("NEW.action = 'key.sign'"),
        "audit down",
    )?;
    let sig = env.path("sig");
    let out = env.run(&[
        "key",
        "sign",
        "signer",
        "--in",
        &msg.to_string_lossy(),
        "--out",
        &sig.to_string_lossy(),
    ])?;
    assert_fails(&out, 6, &["audit record could not be written"]);
    assert!(stdout(&out).is_empty(), "signature leaked to stdout");
    assert!(
        files_starting_with(&env, "sig")?.is_empty(),
        "a signature file exists although its audit row was not written"
    );
    // Without --out the signature would go to stdout: it must be withheld there too.
    let out = env.run(&["key", "sign", "signer", "--in", &msg.to_string_lossy()])?;
    assert_fails(&out, 6, &["audit record could not be written"]);
    assert!(out.stdout.is_empty(), "signature written to stdout");
    assert_unchanged(&env, &before, "unaudited sign")?;
    Ok(())
}
