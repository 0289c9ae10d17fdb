//! End-to-end tests of `kms serve`: the real binary on a free port, real SoftHSM2 tokens, mutual
//! TLS with a dev PKI, and the crate's own client (`kms::client`). Each test has its own service.

use common::service::Service;
use common::*;
use kms_testkit as common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kms::client::{Connection, Reply};
use serde_json::{json, Value};
use sha2::{Digest, Sha384};

#[path = "service/connections.rs"]
mod connections;
#[path = "service/crypto.rs"]
mod crypto;
#[path = "service/errors.rs"]
mod errors;
#[path = "service/shutdown.rs"]
mod shutdown;

// ---- helpers ---------------------------------------------------------------------------------

async fn sign_msg(c: &mut Connection, key: &str, msg: &[u8]) -> Res<Reply> {
    Ok(c.request(
        "POST",
        &format!("/v1/keys/{key}/sign"),
        Some(&json!({ "message": b64(msg) })),
        Some("service test"),
    )
    .await?)
}

async fn post(c: &mut Connection, path: &str, body: Value) -> Res<Reply> {
    Ok(c.request("POST", path, Some(&body), None).await?)
}

async fn get(c: &mut Connection, path: &str) -> Res<Reply> {
    Ok(c.request("GET", path, None, None).await?)
}

/// `sig` (ec-p384, sign+verify) and `dek` (aes-256, encrypt/decrypt/wrap/unwrap).
fn create_keys(svc: &Service) -> TestResult {
    svc.env.create("sig", "ec-p384", "sign,verify")?;
    svc.env
        .create("dek", "aes-256", "encrypt,decrypt,wrap,unwrap")?;
    Ok(())
}

fn count(rows: &[Value], action: &str, outcome: &str) -> usize {
    rows.iter()
        .filter(|r| r["action"] == action && r["outcome"] == outcome)
        .count()
}

// ---- 1. handshake ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_requires_a_client_certificate_from_the_ca() -> TestResult {
    let svc = Service::start()?;
    svc.register("demo-app")?;

    // No client certificate: the handshake or the first request fails.
    match Connection::connect(svc.addr, svc.tls_anonymous()?).await {
        Err(_) => {}
        Ok(mut c) => {
            let r = c.request("GET", "/v1/health", None, None).await;
            assert!(
                r.is_err(),
                "a client without a certificate got an answer: {r:?}"
            );
        }
    }

    // A certificate from another CA (same names): refused the same way.
    let foreign = svc.foreign_pki()?;
    match Connection::connect(svc.addr, svc.tls_from(&foreign, "demo-app")?).await {
        Err(_) => {}
        Ok(mut c) => {
            let r = c.request("GET", "/v1/health", None, None).await;
            assert!(
                r.is_err(),
                "a client with a foreign-CA certificate got an answer: {r:?}"
            );
        }
    }

    // The registered client.
    let mut c = svc.connect("demo-app").await?;
    let health = expect(&get(&mut c, "/v1/health").await?, 200, None, "health")?;
    assert_eq!(health["status"], "ok", "health: {health}");
    Ok(())
}

// ---- 2. unknown principal ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_principal_is_refused_and_audited() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    // A certificate the CA signed but no principal holds gets no HTTP at all: the service
    // closes the connection right after the handshake (issue 17) and audits the refusal.
    for what in ["stranger lists keys", "stranger signs"] {
        let answered = match svc.connect("stranger").await {
            Err(_) => None,
            Ok(mut c) => match what {
                "stranger lists keys" => get(&mut c, "/v1/keys").await.ok(),
                _ => sign_msg(&mut c, "sig", b"hello").await.ok(),
            },
        };
        assert!(
            answered.is_none(),
            "{what}: an unregistered certificate got an HTTP answer: {answered:?}"
        );
    }
    let rows = svc.audit(None)?;
    assert!(
        count(&rows, "auth.connect", "denied") >= 1,
        "expected auth.connect/denied rows; audit: {rows:#?}"
    );
    // The registered client is served as before.
    let mut c = svc.connect("demo-app").await?;
    expect(
        &get(&mut c, "/v1/health").await?,
        200,
        None,
        "demo-app health",
    )?;
    Ok(())
}

// ---- 3. grants -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_enforced_and_refusals_audited() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    let mut c = svc.connect("demo-app").await?;

    expect(
        &sign_msg(&mut c, "sig", b"m").await?,
        403,
        Some("no-grant"),
        "sign without a grant",
    )?;

    let verify_only = svc.grant("demo-app", "sig", "verify")?;
    expect(
        &sign_msg(&mut c, "sig", b"m").await?,
        403,
        Some("operation-not-granted"),
        "sign with a verify-only grant",
    )?;

    // An expired sign grant (the verify grant revoked, so only the expired one is left).
    svc.env
        .ok(&["grant", "revoke", &verify_only, "--reason", "test done"])?;
    let sign_grant = svc.grant("demo-app", "sig", "sign")?;
    expect(
        &sign_msg(&mut c, "sig", b"m").await?,
        200,
        None,
        "sign with a sign grant",
    )?;
    {
        svc.env.sql(&format!(
            "UPDATE grants SET not_after = '2020-01-01T00:00:00Z' WHERE id = '{sign_grant}'"
        ))?;
        assert_eq!(
            svc.env.sql_text(&format!(
                "SELECT not_after FROM grants WHERE id = '{sign_grant}'"
            ))?,
            "2020-01-01T00:00:00Z",
            "grant {sign_grant} not found in the database"
        );
    }
    svc.env.retag()?; // simulated time: kms would rightly refuse a row edited outside it
    expect(
        &sign_msg(&mut c, "sig", b"m").await?,
        403,
        Some("grant-expired"),
        "sign with an expired grant",
    )?;

    let rows = svc.audit(Some("sig"))?;
    assert_eq!(
        count(&rows, "key.sign", "denied"),
        3,
        "three refused signs should be on the record; audit: {rows:#?}"
    );
    assert_eq!(count(&rows, "key.sign", "ok"), 1, "audit: {rows:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_records_need_a_read_inventory_grant() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign,verify")?;
    let mut c = svc.connect("demo-app").await?;
    // docs/openapi.json: GET /v1/keys/{name} "Needs an active `read-inventory` grant on the key".
    expect(
        &get(&mut c, "/v1/keys/dek").await?,
        403,
        Some("no-grant"),
        "GET /v1/keys/dek with no grant on dek",
    )?;
    expect(
        &get(&mut c, "/v1/keys/sig").await?,
        403,
        Some("operation-not-granted"),
        "GET /v1/keys/sig with a sign,verify grant",
    )?;
    expect(
        &get(&mut c, "/v1/keys").await?,
        403,
        Some("no-grant"),
        "GET /v1/keys with no read-inventory grant",
    )?;
    svc.grant("demo-app", "sig", "read-inventory")?;
    let k = expect(
        &get(&mut c, "/v1/keys/sig").await?,
        200,
        None,
        "GET /v1/keys/sig with read-inventory",
    )?;
    assert_eq!(k["name"], "sig", "{k}");
    let list = expect(&get(&mut c, "/v1/keys").await?, 200, None, "GET /v1/keys")?;
    let names: Vec<&str> = list["keys"]
        .as_array()
        .ok_or("keys is not an array")?
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["sig"], "only the readable key is listed: {list}");
    Ok(())
}
