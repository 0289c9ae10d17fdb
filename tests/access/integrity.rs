//! Denied requests, review findings, audit records before changes, rows put in by hand.

use super::*;

#[test]
fn a_denied_request_is_final_and_a_manager_cannot_approve_their_own() -> TestResult {
    let env = people()?;
    let id = request(&env, "carol", &[])?;
    // Deny needs a reason, and is signed like every step.
    assert_fails(&step(&env, "alice", "deny", &id)?, 2, &["--reason"]);
    let o = env.as_person(
        "alice",
        &[
            "--reason",
            "no ticket approval",
            "access",
            "deny",
            &id,
            "--card-pin",
            "env:CARD_PIN",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.ok(&["access", "show", &id, "--json"])?;
    let e: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(e["request"]["state"], "denied");
    assert_eq!(e["steps"][0]["step"], "deny");
    assert_eq!(e["steps"][0]["signature_valid"], true);
    assert!(e["steps"][0]["message_text"]
        .as_str()
        .is_some_and(|m| m.contains("note: no ticket approval\n")));
    assert_fails(&step(&env, "alice", "verify", &id)?, 4, &["denied"]);
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);

    // bob (manager) asks for access himself: alice verifies, but bob may not approve it.
    let own = request(&env, "bob", &[])?;
    assert!(step(&env, "alice", "verify", &own)?.status.success());
    assert_fails(
        &step(&env, "bob", "approve", &own)?,
        4,
        &["may not approve"],
    );
    Ok(())
}

#[test]
fn review_findings_stay_fixed() -> TestResult {
    let env = people()?;
    // A disabled principal is refused at the console at once, grants or not.
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    assert!(step(&env, "bob", "approve", &id)?.status.success());
    assert!(sign_as(&env, "carol")?.status.success());
    env.ok(&["principal", "disable", "carol"])?;
    assert_fails(&sign_as(&env, "carol")?, 4, &["disabled"]);

    // One approval key, one person: alice's card cannot be registered again as a manager.
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", common::cards::card_pin("alice"))
        .args(["principal", "add", "alice-mgr", "--role", "manager"])
        .args([
            "--approval-key",
            &card_uri("alice"),
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert_fails(&o, 4, &["already registered to 'alice'"]);

    // A URI may not load an arbitrary PKCS#11 library.
    let uri = format!("{}?module-path=/tmp/evil.so", card_uri("alice"));
    let id = request(&env, OFFICER, &[])?;
    let o = env.as_person(
        "alice",
        &[
            "access",
            "verify",
            &id,
            "--card",
            &uri,
            "--card-pin",
            "env:CARD_PIN",
        ],
    )?;
    assert_fails(&o, 5, &["not the configured card module"]);

    // The last enabled security officer cannot be disabled, so bootstrap never reopens.
    assert_fails(
        &env.run(&["principal", "disable", OFFICER])?,
        4,
        &["last enabled security officer"],
    );
    Ok(())
}

#[test]
fn no_change_takes_effect_without_its_audit_record() -> TestResult {
    let env = people()?;
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    fail_audit(
        &env,
        "'access.approve', 'principal.add', 'grant.revoke', 'grant.break-glass'",
    )?;
    // The approval, the grant it would create and the signature all roll back with the record.
    assert!(!step(&env, "bob", "approve", &id)?.status.success());
    audit_works_again(&env)?;
    let o = env.ok(&["access", "show", &id, "--json"])?;
    let e: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(e["request"]["state"], "verified");
    assert_eq!(
        e["steps"].as_array().map(Vec::len),
        Some(1),
        "no approval signature kept"
    );
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);
    fail_audit(&env, "'principal.add'")?;
    assert!(!env
        .run(&["principal", "add", "ghost", "--role", "user"])?
        .status
        .success());
    audit_works_again(&env)?;
    assert_fails(
        &env.run(&["principal", "show", "ghost"])?,
        3,
        &["no principal named 'ghost'"],
    );
    Ok(())
}

#[test]
fn a_grant_row_put_in_by_hand_is_not_honoured() -> TestResult {
    let env = people()?;
    // Out of nothing.
    env.sql(
        "INSERT INTO grants (id, principal, key_id, ops, not_before, not_after, ticket,
             justification, created_by, created_at, break_glass)
         SELECT 'g-forged000001', 'carol', id, 'sign', '2020-01-01T00:00:00Z',
                '2099-01-01T00:00:00Z', 'X', 'x', 'nobody', '2020-01-01T00:00:00Z', 1
         FROM keys WHERE name = 'k'",
    )?;
    assert_fails(&sign_as(&env, "carol")?, 4, &["was not made by kms"]);
    env.sql("DELETE FROM grants")?;
    // Widened after a real approval: the approved request says 30 days and sign only.
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    assert!(step(&env, "bob", "approve", &id)?.status.success());
    assert!(sign_as(&env, "carol")?.status.success());
    env.sql("UPDATE grants SET ops = 'sign,verify', not_after = '2099-01-01T00:00:00Z'")?;
    assert_fails(&sign_as(&env, "carol")?, 4, &["was not made by kms"]);
    Ok(())
}

/// A full audit store, simulated: inserting an audit record of one of `actions` fails.
fn fail_audit(env: &Env, actions: &str) -> TestResult {
    if env.pg.is_some() {
        env.sql(&format!(
            "CREATE FUNCTION no_audit() RETURNS trigger AS $$
             BEGIN
               IF NEW.action IN ({actions}) THEN RAISE EXCEPTION 'audit store full'; END IF;
               RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER no_audit BEFORE INSERT ON audit
               FOR EACH ROW EXECUTE FUNCTION no_audit();"
        ))
    } else {
        env.sql(&format!(
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit
             WHEN NEW.action IN ({actions})
             BEGIN SELECT RAISE(ABORT, 'audit store full'); END;"
        ))
    }
}

fn audit_works_again(env: &Env) -> TestResult {
    if env.pg.is_some() {
        env.sql("DROP TRIGGER no_audit ON audit; DROP FUNCTION no_audit();")
    } else {
        env.sql("DROP TRIGGER no_audit")
    }
}

/// Issue 23: an approved request saved while `verified` (with its valid tag) and written back
/// after the approval and the grant's revocation would be approved a second time, making a new
/// grant from the same signatures. The request row names the change that wrote it: refused.
#[test]
fn an_approved_request_written_back_as_verified_is_not_approved_again() -> TestResult {
    let env = people()?;
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    env.sql(&format!(
        "CREATE TABLE saved_req AS SELECT * FROM access_requests WHERE id = '{id}'"
    ))?;
    assert!(step(&env, "bob", "approve", &id)?.status.success());
    assert!(sign_as(&env, "carol")?.status.success());
    let g = json(&env.ok(&["grant", "list", "--principal", "carol", "--json"])?)?;
    let gid = g[0]["id"].as_str().ok_or("grant id")?.to_owned();
    env.ok(&["--reason", "leaver", "grant", "revoke", &gid])?;
    env.sql(&format!(
        "DELETE FROM access_requests WHERE id = '{id}'; INSERT INTO access_requests SELECT * FROM saved_req;"
    ))?;
    assert_fails(
        &step(&env, "bob", "approve", &id)?,
        4,
        &["access_requests row", "older copy"],
    );
    assert_fails(&sign_as(&env, "carol")?, 4, &[]);
    Ok(())
}
