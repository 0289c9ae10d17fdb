//! The access workflow (A9) on real SoftHSM tokens standing in for each person's card:
//! request → verify (security admin, signed) → approve (manager, signed) → use; refusals,
//! tampering, reviews, revocation, source networks, and offline evidence checked with openssl.

use common::cards::card_uri;
use common::service::Service;
use common::*;
use kms_testkit as common;

#[path = "access/grants.rs"]
mod grants;
#[path = "access/integrity.rs"]
mod integrity;
#[path = "access/people.rs"]
mod people;

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
