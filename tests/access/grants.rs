//! Expiry, recertification, break-glass, the security officer, the API and source networks.

use super::*;

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
