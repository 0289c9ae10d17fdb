//! The access workflow (A9) on real SoftHSM tokens standing in for each person's card:
//! request → verify (security admin, signed) → approve (manager, signed) → use; refusals,
//! tampering, reviews, revocation, source networks, and offline evidence checked with openssl.

use common::cards::card_uri;
use common::service::Service;
use common::*;
use kms_testkit as common;

/// alice: security admin, bob: manager, carol: user; key `k` (ec-p384, sign,verify).
fn people() -> Res<Env> {
    let env = Env::new()?;
    env.register_person("alice", "security-admin")?;
    env.register_person("bob", "manager")?;
    env.ok(&["principal", "add", "carol", "--role", "user"])?;
    env.ok(&create_args("k", "ec-p384", "sign,verify", &[]))?;
    Ok(env)
}

/// An access request by `who` for `sign` on `k`, with `extra` arguments; its id.
fn request(env: &Env, who: &str, extra: &[&str]) -> Res<String> {
    let mut args = vec![
        "--key",
        "k",
        "--ops",
        "sign",
        "--duration",
        "30d",
        "--ticket",
        "CHG-1234",
        "--justification",
        "release signing for v2",
    ];
    args.extend_from_slice(extra);
    access_request(env, who, &args)
}

fn step(env: &Env, who: &str, verb: &str, id: &str) -> Res<std::process::Output> {
    env.as_person(who, &["access", verb, id, "--card-pin", "env:CARD_PIN"])
}

fn sign_as(env: &Env, who: &str) -> Res<std::process::Output> {
    let m = env.write("msg", b"release v2")?;
    let m = m.to_str().ok_or("path")?.to_owned();
    env.run_as(who, &["key", "sign", "k", "--in", &m, "--out", "-"])
}

fn denied_rows(env: &Env, action: &str) -> Res<usize> {
    let out = env.ok(&["audit", "list", "--json", "--limit", "1000"])?;
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(rows
        .as_array()
        .ok_or("array")?
        .iter()
        .filter(|r| r["action"] == action && r["outcome"] == "denied")
        .count())
}

#[test]
fn request_verify_approve_then_use() -> TestResult {
    let env = people()?;
    let id = request(&env, "carol", &[])?;
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);
    let o = step(&env, "alice", "verify", &id)?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);
    let o = step(&env, "bob", "approve", &id)?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("approved"), "{}", stdout(&o));
    let o = sign_as(&env, "carol")?;
    assert!(o.status.success(), "{}", stderr(&o));

    let o = env.ok(&["access", "show", &id, "--json"])?;
    let e: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(e["request"]["state"], "approved");
    let steps = e["steps"].as_array().ok_or("steps")?;
    assert_eq!(steps.len(), 2);
    for s in steps {
        assert_eq!(s["signature_valid"], true, "{s}");
        assert_eq!(s["message_matches_request"], true, "{s}");
        assert_eq!(s["key_is_registered"], true, "{s}");
    }
    assert_eq!(steps[0]["signer"], "alice");
    assert_eq!(steps[1]["signer"], "bob");
    // The grant carries the request, a review deadline, and is not break-glass.
    let o = env.ok(&["grant", "list", "--principal", "carol", "--json"])?;
    let g: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(g[0]["request_id"], id.as_str());
    assert_eq!(g[0]["break_glass"], false);
    assert!(g[0]["review_due"].is_string());
    Ok(())
}

#[test]
fn nobody_verifies_or_approves_their_own_request_and_roles_are_enforced() -> TestResult {
    let env = people()?;
    // alice (security admin) requests for herself: she cannot verify it.
    let own = request(&env, "alice", &[])?;
    assert_fails(
        &step(&env, "alice", "verify", &own)?,
        4,
        &["may not verify"],
    );
    // A request filed by carol for alice: alice (the grantee) still cannot verify it.
    let for_alice = request(&env, "carol", &["--for", "alice"])?;
    assert_fails(
        &step(&env, "alice", "verify", &for_alice)?,
        4,
        &["may not verify"],
    );

    let id = request(&env, "carol", &[])?;
    // Wrong roles: a user cannot verify; a security admin cannot approve; a manager cannot verify.
    assert_fails(&step(&env, "carol", "verify", &id)?, 4, &["security-admin"]);
    assert_fails(&step(&env, "bob", "verify", &id)?, 4, &["security-admin"]);
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    assert_fails(&step(&env, "alice", "approve", &id)?, 4, &["manager"]);
    // The same person twice: verifying again is refused (the request moved on).
    assert_fails(&step(&env, "alice", "verify", &id)?, 4, &["verified"]);
    // Each refusal is on the audit trail.
    assert!(denied_rows(&env, "access.verify")? >= 5);
    assert!(denied_rows(&env, "access.approve")? >= 1);
    Ok(())
}

#[test]
fn a_request_altered_after_signing_cannot_be_approved() -> TestResult {
    let env = people()?;
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    // Someone with database access widens the request after the admin signed it. Since issue 23
    // the request row carries an integrity tag, so the edit is refused before the signature
    // check is reached (which still stands behind it), and `access show` names the row.
    env.sql("UPDATE access_requests SET ops = 'sign,verify', duration_secs = 31536000")?;
    assert_fails(
        &step(&env, "bob", "approve", &id)?,
        4,
        &["access_requests row", &id, "was not made by kms"],
    );
    assert_fails(
        &env.run(&["access", "show", &id])?,
        4,
        &["access_requests row", "was not made by kms"],
    );
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);
    assert!(denied_rows(&env, "access.approve")? >= 1);
    Ok(())
}

#[test]
fn a_signature_from_an_unregistered_key_is_refused() -> TestResult {
    let env = people()?;
    env.make_card("mallory")?;
    let id = request(&env, "carol", &[])?;
    // alice signs with a card that is not hers (mallory's key, mallory's PIN).
    let o = env
        .kms_as("alice")
        .env("CARD_PIN", common::cards::card_pin("mallory"))
        .args([
            "access",
            "verify",
            &id,
            "--card",
            &card_uri("mallory"),
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert_fails(&o, 4, &["is not the approval key registered for 'alice'"]);
    let o = env.ok(&["access", "show", &id, "--json"])?;
    let e: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(e["request"]["state"], "pending");
    assert!(denied_rows(&env, "access.verify")? >= 1);
    Ok(())
}

#[test]
fn expired_and_lapsed_grants_deny_use_and_recertification_restores_it() -> TestResult {
    let env = people()?;
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    assert!(step(&env, "bob", "approve", &id)?.status.success());
    assert!(sign_as(&env, "carol")?.status.success());

    let o = env.ok(&["grant", "list", "--principal", "carol", "--all", "--json"])?;
    let g: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let gid = g[0]["id"].as_str().ok_or("grant id")?.to_owned();
    // Review due soon: listed; carol cannot re-certify her own access; alice (signed) can.
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::days(3))
        .format(&time::format_description::well_known::Rfc3339)?;
    env.sql(&format!("UPDATE grants SET review_due = '{soon}'"))?;
    env.retag()?; // simulated time: kms would rightly refuse a row edited outside it
    let o = env.ok(&["access", "review"])?;
    assert!(stdout(&o).contains(&gid), "{}", stdout(&o));
    assert_fails(
        &step(&env, "carol", "recertify", &gid)?,
        4,
        &["security-admin or manager"],
    );
    let o = step(&env, "alice", "recertify", &gid)?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(sign_as(&env, "carol")?.status.success());
    // Not re-certified by the deadline: lapsed, refused, and final (a new request is needed).
    env.sql("UPDATE grants SET review_due = '2020-01-01T00:00:00Z'")?;
    env.retag()?; // simulated time: kms would rightly refuse a row edited outside it
    assert_fails(&sign_as(&env, "carol")?, 4, &["lapsed", "not re-certified"]);
    let o = env.ok(&["access", "review"])?;
    assert!(stdout(&o).contains("LAPSED"), "{}", stdout(&o));
    assert_fails(
        &step(&env, "alice", "recertify", &gid)?,
        4,
        &["new access request"],
    );

    env.sql("UPDATE grants SET not_after = '2020-01-01T00:00:00Z'")?;
    env.retag()?; // simulated time: kms would rightly refuse a row edited outside it
    assert_fails(&sign_as(&env, "carol")?, 4, &["expired"]);
    Ok(())
}

#[test]
fn an_exported_bundle_verifies_with_openssl_alone() -> TestResult {
    let env = people()?;
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    assert!(step(&env, "bob", "approve", &id)?.status.success());
    let dir = env.path("evidence");
    env.ok(&[
        "access",
        "export",
        &id,
        "--out",
        dir.to_str().ok_or("path")?,
    ])?;
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("bundle.json"))?)?;
    let steps = bundle["steps"].as_array().ok_or("steps")?;
    assert_eq!(steps.len(), 2);
    for s in steps {
        // The command docs/access.md gives, run in the bundle directory.
        let cmd = s["verify_with"].as_str().ok_or("verify_with")?;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&dir)
            .output()?;
        assert!(
            stdout(&out).contains("Verified OK"),
            "{cmd}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let msg = std::fs::read_to_string(dir.join(s["message"].as_str().ok_or("message")?))?;
        assert!(msg.starts_with("kms-access-approval/v1\n"));
        assert!(msg.contains(&format!("request: {id}\n")));
        assert!(msg.contains("justification: release signing for v2\n"));
    }
    // A changed message no longer verifies.
    let first = steps[0]["message"].as_str().ok_or("message")?;
    let text = std::fs::read_to_string(dir.join(first))?.replace("30d", "365d");
    std::fs::write(dir.join(first), text)?;
    let cmd = steps[0]["verify_with"].as_str().ok_or("verify_with")?;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(&dir)
        .output()?;
    assert!(!stdout(&out).contains("Verified OK"));
    Ok(())
}

#[test]
fn break_glass_grants_need_a_reason_an_officer_and_another_grantee() -> TestResult {
    let env = people()?;
    let until = (time::OffsetDateTime::now_utc().date() + time::Duration::days(7)).to_string();
    let base = [
        "grant",
        "add",
        "carol",
        "k",
        "--ops",
        "sign",
        "--until",
        &until,
        "--ticket",
        "INC-9",
        "--justification",
        "outage",
    ];
    assert_fails(&env.run(&base)?, 2, &["--reason"]);
    let mut with_reason = base.to_vec();
    with_reason.extend_from_slice(&["--reason", "INC-9 signing service down"]);
    assert_fails(
        &env.run_as("alice", &with_reason)?,
        4,
        &["security-officer"],
    );
    let mut to_self = with_reason.clone();
    to_self[2] = OFFICER;
    assert_fails(&env.run(&to_self)?, 4, &["themselves"]);
    // At most 30 days: longer access goes through the workflow.
    let mut too_long = with_reason.clone();
    too_long[7] = "2099-01-01";
    assert_fails(&env.run(&too_long)?, 2, &["at most 30 days"]);
    env.ok(&with_reason)?;
    let out = env.ok(&["audit", "list", "--json"])?;
    assert!(stdout(&out).contains("grant.break-glass"));
    assert!(stdout(&out).contains("BREAK-GLASS grant"));
    Ok(())
}

#[test]
fn only_a_registered_security_officer_bootstraps_and_administers() -> TestResult {
    let env = Env::new()?; // registers test-officer by bootstrap
                           // An unregistered name is refused with what to do.
    let o = env.run_as("nobody", &["key", "list"])?;
    assert_fails(&o, 4, &["not a registered principal", "kms principal add"]);
    // A user may not create keys or read the audit trail.
    let o = env.run_as(USER, &create_args("x", "aes-256", "encrypt,decrypt", &[]))?;
    assert_fails(&o, 4, &["security-officer"]);
    assert_fails(&env.run_as(USER, &["audit", "list"])?, 4, &["auditor"]);
    // An auditor reads the trail but administers nothing.
    env.ok(&["principal", "add", "audrey", "--role", "auditor"])?;
    assert!(env.run_as("audrey", &["audit", "list"])?.status.success());
    assert_fails(
        &env.run_as("audrey", &["principal", "add", "eve", "--role", "user"])?,
        4,
        &["security-officer"],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_requests_over_the_api_and_loses_access_at_once_on_revocation() -> TestResult
{
    let svc = Service::start()?;
    let env = &svc.env;
    env.register_person("alice", "security-admin")?;
    env.register_person("bob", "manager")?;
    env.ok(&create_args("k", "ec-p384", "sign,verify", &[]))?;
    svc.register("demo-app")?;
    let mut c = svc.connect("demo-app").await?;
    let r = c
        .request(
            "POST",
            "/v1/access/requests",
            Some(&serde_json::json!({
                "key": "k", "ops": ["sign"], "duration": "7d",
                "ticket": "CHG-55", "justification": "nightly build signing"
            })),
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()?["id"].as_str().ok_or("id")?.to_owned();
    let body = serde_json::json!({ "message": "aGVsbG8=" });
    let r = c
        .request("POST", "/v1/keys/k/sign", Some(&body), None)
        .await?;
    assert_eq!(r.status, 403);
    assert!(step(env, "alice", "verify", &id)?.status.success());
    assert!(step(env, "bob", "approve", &id)?.status.success());
    let r = c
        .request("POST", "/v1/keys/k/sign", Some(&body), None)
        .await?;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = c
        .request("GET", &format!("/v1/access/requests/{id}"), None, None)
        .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()?["request"]["state"], "approved");

    let o = env.ok(&["grant", "list", "--principal", "demo-app", "--json"])?;
    let g: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let gid = g[0]["id"].as_str().ok_or("grant id")?.to_owned();
    env.as_person(
        "alice",
        &["access", "revoke", &gid, "--reason", "app retired"],
    )
    .and_then(|o| {
        if o.status.success() {
            Ok(())
        } else {
            Err(stderr(&o).into())
        }
    })?;
    // Same connection, next request: refused.
    let r = c
        .request("POST", "/v1/keys/k/sign", Some(&body), None)
        .await?;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()?["code"], "no-grant");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_is_accepted_only_from_its_allowed_networks() -> TestResult {
    let svc = Service::start()?;
    let env = &svc.env;
    let pki = svc.pki().to_owned();
    let cert = pki.join("client-other-app.pem");
    env.ok(&[
        "principal",
        "add",
        "other-app",
        "--role",
        "application",
        "--cert",
        cert.to_str().ok_or("path")?,
        "--allow-from",
        "10.20.0.0/16",
    ])?;
    let mut c = svc.connect("other-app").await?;
    let r = c.request("GET", "/v1/keys", None, None).await?;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()?["code"], "source-not-allowed");
    assert!(denied_rows(env, "auth.identify")? >= 1);
    Ok(())
}

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

#[test]
fn one_card_carries_one_persons_approvals_at_registration_approval_and_use() -> TestResult {
    let env = people()?;
    // A second key pair on alice's card (a card with room for several keys).
    let pem = env.import_card_key("alice", "approval2", "02")?;
    let pin = common::cards::card_pin("alice");
    let second = "pkcs11:token=alice-card;object=approval2";
    // mallory's approval key on alice's card: refused at registration.
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", &pin)
        .args(["principal", "add", "mallory", "--role", "manager"])
        .args(["--approval-key", second, "--card-pin", "env:CARD_PIN"])
        .output()?;
    assert_fails(
        &o,
        4,
        &[
            "already holds the approval key of 'alice'",
            "one card carries one person's approvals",
        ],
    );
    // Registered by its public key alone, kms cannot see the card then...
    env.ok(&[
        "principal",
        "add",
        "mallory",
        "--role",
        "manager",
        "--approval-pubkey",
        path(&pem)?,
    ])?;
    // ...but it sees it when the key signs: alice verifies, "mallory" approves on her card.
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    let o = env
        .kms_as("mallory")
        .env("CARD_PIN", &pin)
        .args([
            "access",
            "approve",
            &id,
            "--card",
            second,
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert_fails(&o, 4, &["already holds the approval key of 'alice'"]);
    let o = env.ok(&["access", "show", &id, "--json"])?;
    let e: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(e["request"]["state"], "verified", "{e}");
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);

    // bob approves on his own card: a grant, and the evidence names both cards.
    assert!(step(&env, "bob", "approve", &id)?.status.success());
    assert!(sign_as(&env, "carol")?.status.success());
    let o = env.ok(&["access", "show", &id, "--json"])?;
    let e: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let (c0, c1) = (&e["steps"][0]["card"], &e["steps"][1]["card"]);
    assert!(
        c0.as_str().is_some_and(|c| c.starts_with("pkcs11:serial=")),
        "{e}"
    );
    assert_ne!(c0, c1, "{e}");
    // At use: a grant whose verification and approval the inventory places on one card (an
    // inventory from before this rule) is not honoured.
    env.sql("UPDATE approval_keys SET card = (SELECT card FROM approval_keys WHERE principal = 'alice') WHERE principal = 'bob'")?;
    env.retag()?;
    assert_fails(
        &sign_as(&env, "carol")?,
        4,
        &["same card", "two people must sign on two cards"],
    );
    Ok(())
}

#[test]
fn a_replaced_token_keeps_its_grants_and_reporting_it_lost_revokes_exactly_them() -> TestResult {
    let env = people()?;
    let first = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &first)?.status.success());
    assert!(step(&env, "bob", "approve", &first)?.status.success());
    let o = env.ok(&["principal", "keys", "alice", "--json"])?;
    let keys: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let old_card = keys[0]["card"].as_str().ok_or("card")?.to_owned();
    assert!(old_card.starts_with("pkcs11:serial="), "{keys}");

    // alice's token is replaced by a new one (a new key); her first grant still holds.
    env.make_card("alice-new")?;
    let new_pin = common::cards::card_pin("alice-new");
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", &new_pin)
        .args(["principal", "rekey", "alice"])
        .args([
            "--approval-key",
            &card_uri("alice-new"),
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        sign_as(&env, "carol")?.status.success(),
        "the first grant holds"
    );
    // The old token no longer signs for her; the new one does.
    let second = request(&env, "carol", &[])?;
    assert_fails(
        &env.as_person(
            "alice",
            &[
                "access",
                "verify",
                &second,
                "--card",
                &card_uri("alice"),
                "--card-pin",
                "env:CARD_PIN",
            ],
        )?,
        4,
        &["not the approval key registered for 'alice'"],
    );
    let o = env
        .kms_as("alice")
        .env("CARD_PIN", &new_pin)
        .args(["access", "verify", &second, "--card-pin", "env:CARD_PIN"])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(step(&env, "bob", "approve", &second)?.status.success());

    // The old token is reported lost: exactly the first grant is revoked; carol keeps the second.
    let o = env.ok(&[
        "card",
        "lost",
        "alice",
        "--serial",
        &old_card,
        "--justification",
        "INC-9 token lost",
        "--json",
    ])?;
    let loss: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let grant_of = |id: &str| -> Res<serde_json::Value> {
        let o = env.ok(&["access", "show", id, "--json"])?;
        Ok(serde_json::from_slice::<serde_json::Value>(&o.stdout)?["request"]["grant_id"].clone())
    };
    assert_eq!(
        loss["grants_revoked"],
        serde_json::json!([grant_of(&first)?]),
        "{loss}"
    );
    assert!(
        sign_as(&env, "carol")?.status.success(),
        "the second grant serves"
    );
    // The records say who did what, and why.
    let o = env.ok(&["audit", "list", "--json", "--limit", "1000"])?;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let rows = rows.as_array().ok_or("rows")?;
    assert!(rows
        .iter()
        .any(|r| r["action"] == "principal.rekey" && r["outcome"] == "ok"));
    assert!(rows.iter().any(|r| r["action"] == "card.lost"
        && r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("INC-9 token lost"))));
    Ok(())
}

#[test]
fn a_person_registered_before_key_histories_keeps_their_grants_when_rekeyed() -> TestResult {
    let env = people()?;
    let first = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &first)?.status.success());
    assert!(step(&env, "bob", "approve", &first)?.status.success());
    // An inventory from before issue 31: nobody has a key history yet.
    env.sql("DELETE FROM approval_keys")?;
    env.retag()?;
    assert!(sign_as(&env, "carol")?.status.success());
    let o = env.ok(&["principal", "keys", "alice", "--json"])?;
    let keys: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(keys[0]["card"], "pkcs11:token=alice-card", "{keys}");
    // bob's key may not move onto alice's card (known by its label from her URI).
    env.import_card_key("alice", "approval2", "02")?;
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", common::cards::card_pin("alice"))
        .args(["principal", "rekey", "bob"])
        .args([
            "--approval-key",
            "pkcs11:token=alice-card;object=approval2",
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert_fails(&o, 4, &["already holds the approval key of 'alice'"]);
    // alice gets a new token: her old key gets its row, ended, and her grant holds.
    env.make_card("alice-new")?;
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", common::cards::card_pin("alice-new"))
        .args(["principal", "rekey", "alice"])
        .args([
            "--approval-key",
            &card_uri("alice-new"),
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(sign_as(&env, "carol")?.status.success(), "the grant holds");
    let o = env.ok(&["principal", "keys", "alice", "--json"])?;
    let keys: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(keys.as_array().map(Vec::len), Some(2), "{keys}");
    assert_eq!(keys[0]["end_reason"], "replaced", "{keys}");
    let o = env.ok(&[
        "card",
        "lost",
        "alice",
        "--serial",
        "pkcs11:token=alice-card",
        "--justification",
        "INC-10",
        "--json",
    ])?;
    let loss: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(
        loss["grants_revoked"].as_array().map(Vec::len),
        Some(1),
        "{loss}"
    );
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);
    Ok(())
}
