//! The inventory as untrusted storage (issue 23): an attacker with write access to the inventory
//! only saves a row together with its valid integrity tag, lets kms take something away (revoke
//! a grant, disable a principal, declare a version compromised), then writes the saved row back.
//! Each tag still verifies — it was made by kms — but the row is older than its last change:
//! refused at use, named by `kms inventory verify`, and the refusal is on the audit trail.
//! Runs on SQLite and, with KMS_TEST_POSTGRES, on PostgreSQL (the same statements work on both).

use kms_testkit as common;

use common::*;

/// Keep a copy of the rows of `table` matching `where_` (with their tags) in `saved_<name>`.
fn save(env: &Env, name: &str, table: &str, where_: &str) -> TestResult {
    env.sql(&format!(
        "CREATE TABLE saved_{name} AS SELECT * FROM {table} WHERE {where_}"
    ))
}

/// Write the saved rows back over the current ones (the replay).
fn replay(env: &Env, name: &str, table: &str, where_: &str) -> TestResult {
    // Foreign keys off for the swap, as an attacker with the file would.
    let no_fk = if env.sql_bytes("").starts_with("decode") {
        "SET session_replication_role = replica;"
    } else {
        "PRAGMA foreign_keys = OFF;"
    };
    env.sql(&format!(
        "{no_fk} DELETE FROM {table} WHERE {where_}; INSERT INTO {table} SELECT * FROM saved_{name};"
    ))
}

fn refusal_recorded(env: &Env) -> TestResult {
    let o = env.ok(&["audit", "list", "--json"])?;
    assert!(
        stdout(&o).contains("inventory-tampered"),
        "the refusal is not on the audit trail: {}",
        stdout(&o)
    );
    Ok(())
}

#[test]
fn a_revoked_grant_written_back_with_its_old_tag_is_refused() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    assert!(sign_as_user(&env, "k")?.status.success());
    let gid = grant_id(&env, "k")?;
    let w = format!("id = '{gid}'");
    save(&env, "grant", "grants", &w)?;
    env.ok(&["--reason", "leaver", "grant", "revoke", &gid])?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &[]);
    replay(&env, "grant", "grants", &w)?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["older copy", &gid]);
    verify_names(&env, &["grants", &gid, "older copy"])?;
    refusal_recorded(&env)
}

#[test]
fn a_disabled_principal_written_back_enabled_is_refused() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    let w = format!("name = '{USER}'");
    save(&env, "p", "principals", &w)?;
    env.ok(&["--reason", "leaver", "principal", "disable", USER])?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["disabled"]);
    replay(&env, "p", "principals", &w)?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["older copy"]);
    verify_names(&env, &["principals", USER, "older copy"])?;
    refusal_recorded(&env)
}

#[test]
fn a_compromised_version_written_back_active_signs_nothing() -> TestResult {
    let env = Env::new()?;
    env.create("sig", "ec-p384", "sign,verify")?;
    let w = "key_id = (SELECT id FROM keys WHERE name = 'sig') AND version = 1";
    save(&env, "v", "key_versions", w)?;
    env.ok(&["--reason", "INC-23", "key", "compromise", "sig"])?;
    replay(&env, "v", "key_versions", w)?;
    // The replayed v1 is refused wherever the key is read: its use, and the officer's show.
    assert_fails(&sign_as_user(&env, "sig")?, 4, &["older copy"]);
    assert_fails(&env.run(&["key", "show", "sig"])?, 4, &["older copy"]);
    verify_names(&env, &["key_versions", "older copy"])?;
    refusal_recorded(&env)
}

#[test]
fn an_edited_owner_or_usage_of_a_key_is_refused() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.sql(&format!(
        "UPDATE keys SET owner = '{USER}' WHERE name = 'k'"
    ))?;
    assert_fails(
        &sign_as_user(&env, "k")?,
        4,
        &["keys row", "was not made by kms"],
    );
    verify_names(&env, &["keys", "TAMPERED"])?;
    Ok(())
}

#[test]
fn an_untagged_disposal_or_procedure_row_is_refused_and_named() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.sql(
        "INSERT INTO disposals (id, key_id, contract_ref, justification, requested_by, requested_at, wait_secs, state)
         SELECT 'd-forged', id, 'C-1', 'forged', 'mallory', '2026-01-01T00:00:00Z', 0, 'executing' FROM keys WHERE name = 'k';
         INSERT INTO procedures (id, kind, key_id, version, step, state, data, started_by, started_at, updated_at)
         SELECT 'p-forged', 'destroy-version', id, 1, 'intent', 'running', '{}', 'mallory', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z' FROM keys WHERE name = 'k';",
    )?;
    verify_names(&env, &["disposals", "d-forged", "procedures", "p-forged"])?;
    // Nothing acts on them: the repair refuses the forged procedure, naming it.
    let o = env.run(&["reconcile", "--repair"])?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        format!("{}{}", stdout(&o), stderr(&o)).contains("p-forged"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    // The key still signs: nothing was destroyed.
    assert!(sign_as_user(&env, "k")?.status.success());
    Ok(())
}

#[test]
fn an_older_inventory_put_back_is_refused_by_the_tokens_anchor() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    let gid = grant_id(&env, "k")?;
    env.copy_inventory()?;
    env.ok(&["--reason", "leaver", "grant", "revoke", &gid])?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &[]);
    // The whole inventory from before the revocation, every row with its valid tag.
    env.put_back_inventory()?;
    let o = sign_as_user(&env, "k")?;
    assert_fails(&o, 4, &["older than the token's anchor"]);
    // Every command, `inventory verify` included, is refused and names why.
    let o = env.run(&["inventory", "verify"])?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        format!("{}{}", stdout(&o), stderr(&o)).contains("older than the token's anchor"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    Ok(())
}

#[test]
fn the_anchor_follows_changes_and_verify_reports_it() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    let gid = grant_id(&env, "k")?;
    env.ok(&["--reason", "leaver", "grant", "revoke", &gid])?;
    let o = env.ok(&["inventory", "verify"])?;
    assert!(stdout(&o).contains("the token anchored"), "{}", stdout(&o));
    // A change log entry deleted behind kms's back (to hide the revocation) is named.
    env.sql("DELETE FROM row_changes WHERE seq = (SELECT MAX(seq) FROM row_changes)")?;
    let o = env.run(&["inventory", "verify"])?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("older than the token's anchor"),
        "{}",
        stderr(&o)
    );
    // An entry in the middle, likewise (the digest no longer matches).
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.sql("DELETE FROM row_changes WHERE seq = 3")?;
    let o = env.run(&["key", "list"])?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("were deleted or altered"),
        "{}",
        stderr(&o)
    );
    Ok(())
}

/// `kms serve` checks the change log against the token's anchor at each checkpoint tick: a
/// revocation hidden from the log while it runs (its change entry deleted, the grant row put
/// back with its old tag) is refused from the next tick on, and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_serve_refuses_a_log_edited_while_it_runs() -> TestResult {
    use base64::Engine as _;
    use common::service::Service;
    let svc = Service::start_with(|env| {
        let mut cfg = std::fs::read_to_string(env.config())?;
        cfg.push_str("\n[audit]\ncheckpoint_secs = 1\n");
        std::fs::write(env.config(), cfg)?;
        env.create("sig", "ec-p384", "sign,verify")?;
        Ok(())
    })?;
    svc.register("demo-app")?;
    let gid = svc.grant("demo-app", "sig", "sign")?;
    let mut c = svc.connect("demo-app").await?;
    let body = serde_json::json!({
        "message": base64::engine::general_purpose::STANDARD.encode(b"m")
    });
    let r = c
        .request(
            "POST",
            "/v1/keys/sig/sign",
            Some(&body),
            Some("anchor test"),
        )
        .await?;
    assert_eq!(r.status, 200);
    let w = format!("id = '{gid}'");
    save(&svc.env, "g", "grants", &w)?;
    svc.env
        .ok(&["--reason", "leaver", "grant", "revoke", &gid])?;
    // The attacker hides the revocation: its change entry goes, the old row comes back.
    svc.env.sql(&format!(
        "DELETE FROM row_changes WHERE tbl = 'grants' AND ident = 'id={gid}' AND seq = (SELECT MAX(seq) FROM row_changes WHERE tbl = 'grants' AND ident = 'id={gid}')"
    ))?;
    replay(&svc.env, "g", "grants", &w)?;
    // Within a few ticks every request is refused, naming the change log.
    let mut refused = false;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let r = c
            .request(
                "POST",
                "/v1/keys/sig/sign",
                Some(&body),
                Some("anchor test"),
            )
            .await?;
        if r.status == 403 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the replayed grant kept signing");
    // The service recorded why (read behind kms: the CLI refuses this inventory at open).
    let log = svc.env.sql_text(
        "SELECT detail FROM audit WHERE action = 'inventory.rolled-back' ORDER BY seq DESC LIMIT 1",
    )?;
    assert!(
        log.contains("the token's anchor") || log.contains("the token anchored"),
        "{log}"
    );
    Ok(())
}

// Found by an outside review of the first version of this work: each of these made kms re-seal
// forged rows or destroy keys. Now each is refused.

/// The issue-17 one-time tagging must never run again on an anchored inventory, whatever the
/// audit table says: edited rows with their tags removed stay refused.
#[test]
fn the_one_time_tagging_never_reseals_edited_rows_once_anchored() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.create("sig", "ec-p384", "sign,verify")?;
    let gid = grant_id(&env, "k")?;
    env.ok(&["--reason", "leaver", "grant", "revoke", &gid])?;
    env.ok(&["--reason", "INC", "key", "compromise", "sig"])?;
    env.sql(&format!(
        "UPDATE grants SET revoked_at = NULL, revoked_by = NULL, revoke_reason = NULL, integrity_tag = NULL, row_seq = NULL WHERE id = '{gid}';
         UPDATE key_versions SET state = 'active', compromised_at = NULL, integrity_tag = NULL, row_seq = NULL
           WHERE key_id = (SELECT id FROM keys WHERE name = 'sig') AND version = 1;
         UPDATE audit SET outcome = 'error' WHERE action LIKE 'inventory.integrity-tagged%';"
    ))?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["carries no integrity tag"]);
    assert_fails(
        &sign_as_user(&env, "sig")?,
        4,
        &["carries no integrity tag"],
    );
    // Undoing the audit edit changes nothing: the rows were never re-sealed.
    env.sql("UPDATE audit SET outcome = 'ok' WHERE action LIKE 'inventory.integrity-tagged%'")?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["carries no integrity tag"]);
    verify_names(&env, &["grants", &gid, "key_versions"])?;
    Ok(())
}

/// An emptied change log (to pass for an inventory from before issue 23) is refused by the
/// anchor before anything is tagged; a forged key row stays refused when the log is put back.
#[test]
fn an_emptied_change_log_reseals_nothing() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "verify")?;
    env.sql(&format!(
        "CREATE TABLE saved_rc AS SELECT * FROM row_changes;
         DELETE FROM row_changes;
         UPDATE keys SET usage = 'sign,verify', owner = '{USER}', integrity_tag = NULL, row_seq = NULL WHERE name = 'k';"
    ))?;
    let o = env.run(&["key", "list"])?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("older than the token's anchor"),
        "{}",
        stderr(&o)
    );
    env.sql("INSERT INTO row_changes SELECT * FROM saved_rc;")?;
    assert_fails(
        &env.run(&["key", "show", "k"])?,
        4,
        &["keys row", "carries no integrity tag"],
    );
    Ok(())
}

/// `reconcile --repair` removes objects of creations that never activated: never an object of
/// a version the inventory records, whatever its row says, and never kms's own keys'.
#[test]
fn reconcile_repair_destroys_no_recorded_key_whatever_its_row_says() -> TestResult {
    let env = Env::new()?;
    env.create("victim", "ec-p384", "sign,verify")?;
    env.ok(&["audit", "checkpoint"])?; // makes kms-audit
    let before = (
        env.object_count("kms-primary")?,
        env.object_count("kms-backup")?,
    );
    // (1) the rows say destroyed, their tags left as they were;
    env.sql(
        "CREATE TABLE saved_v AS SELECT * FROM key_versions;
         UPDATE key_versions SET state = 'destroyed'
           WHERE key_id IN (SELECT id FROM keys WHERE name IN ('victim', 'kms-audit'));",
    )?;
    let o = env.run(&["reconcile", "--repair"])?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        (
            env.object_count("kms-primary")?,
            env.object_count("kms-backup")?
        ),
        before,
        "objects were destroyed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // (2) a forged compromise and destroy-version procedure, with the tagging gate's record
    // turned off: nothing is re-sealed, nothing destroyed.
    env.sql(
        "DELETE FROM key_versions; INSERT INTO key_versions SELECT * FROM saved_v;
         INSERT INTO compromises (id, key_id, version, reason, declared_by, declared_at, report)
           SELECT 'c-forged', id, 1, 'forged', 'mallory', '2026-01-01T00:00:00Z', '{}' FROM keys WHERE name = 'victim';
         INSERT INTO procedures (id, kind, key_id, version, step, state, data, started_by, started_at, updated_at)
           SELECT 'p-forged', 'destroy-version', id, 1, 'intent', 'running', '{}', 'mallory', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z' FROM keys WHERE name = 'victim';
         UPDATE audit SET outcome = 'error' WHERE action LIKE 'inventory.integrity-tagged%';",
    )?;
    let o = env.run(&["reconcile", "--repair"])?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        (
            env.object_count("kms-primary")?,
            env.object_count("kms-backup")?
        ),
        before
    );
    assert!(sign_as_user(&env, "victim")?.status.success());
    Ok(())
}
