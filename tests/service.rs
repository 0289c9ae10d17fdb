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

// ---- 4. sign and verify ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_openssl_and_the_api() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign,verify")?;
    let mut c = svc.connect("demo-app").await?;

    let msg = b"the quick brown fox jumps over the lazy dog".to_vec();
    let signed = expect(&sign_msg(&mut c, "sig", &msg).await?, 200, None, "sign")?;
    assert_eq!(signed["algorithm"], "ecdsa-p384-sha384", "{signed}");
    let sig = unb64(&signed["signature"])?;

    let public = expect(
        &get(&mut c, "/v1/keys/sig/public-key").await?,
        200,
        None,
        "public key",
    )?;
    let pem = public["pem"].as_str().ok_or("public-key has no pem")?;
    let pub_path = svc.env.write("pub.pem", pem.as_bytes())?;
    let sig_path = svc.env.write("sig.der", &sig)?;
    let msg_path = svc.env.write("msg", &msg)?;
    let check = |sig_path: &std::path::Path| -> TestResult {
        let out = openssl_dgst_verify(&["-sha384"], &pub_path, sig_path, &msg_path)?;
        assert!(
            out.status.success() && stdout(&out).contains("Verified OK"),
            "openssl does not verify the service's signature: {} {}",
            stdout(&out),
            stderr(&out)
        );
        Ok(())
    };
    check(&sig_path)?;

    // A precomputed SHA-384 digest: the signature verifies over the message, via the API and openssl.
    let digest = Sha384::digest(&msg).to_vec();
    let r = post(
        &mut c,
        "/v1/keys/sig/sign",
        json!({ "digest": b64(&digest) }),
    )
    .await?;
    let signed2 = expect(&r, 200, None, "sign a digest")?;
    let sig2 = unb64(&signed2["signature"])?;
    let r = post(
        &mut c,
        "/v1/keys/sig/verify",
        json!({ "message": b64(&msg), "signature": b64(&sig2) }),
    )
    .await?;
    let v = expect(&r, 200, None, "verify")?;
    assert_eq!(v["valid"], true, "verify: {v}");
    check(&svc.env.write("sig2.der", &sig2)?)?;

    // The same signature does not verify another message.
    let r = post(
        &mut c,
        "/v1/keys/sig/verify",
        json!({ "message": b64(b"another message"), "signature": b64(&sig2) }),
    )
    .await?;
    let v = expect(&r, 200, None, "verify another message")?;
    assert_eq!(v["valid"], false, "verify of another message: {v}");

    // A digest of the wrong length.
    let r = post(
        &mut c,
        "/v1/keys/sig/sign",
        json!({ "digest": b64(&[7u8; 32]) }),
    )
    .await?;
    expect(&r, 400, None, "sign a 32-byte digest with a P-384 key")?;
    Ok(())
}

// ---- 5. data keys ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_unwrap_and_rewrap() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "dek", "wrap,unwrap")?;
    let mut c = svc.connect("demo-app").await?;

    let dk = expect(
        &post(&mut c, "/v1/keys/dek/data-key", json!({})).await?,
        200,
        None,
        "data-key",
    )?;
    let plaintext = unb64(&dk["plaintext"])?;
    assert_eq!(plaintext.len(), 32, "a data key is 256 bits");
    let wrapped = unb64(&dk["wrapped"])?;
    assert!(
        !wrapped.windows(32).any(|w| w == plaintext.as_slice()),
        "the wrapped blob contains the plaintext"
    );

    let un = expect(
        &post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": b64(&wrapped) }),
        )
        .await?,
        200,
        None,
        "unwrap",
    )?;
    assert_eq!(
        unb64(&un["plaintext"])?,
        plaintext,
        "unwrap gives the data key"
    );

    let re = expect(
        &post(
            &mut c,
            "/v1/keys/dek/rewrap",
            json!({ "wrapped": b64(&wrapped) }),
        )
        .await?,
        200,
        None,
        "rewrap",
    )?;
    let rewrapped = unb64(&re["wrapped"])?;
    let un2 = expect(
        &post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": b64(&rewrapped) }),
        )
        .await?,
        200,
        None,
        "unwrap the rewrapped key",
    )?;
    assert_eq!(
        unb64(&un2["plaintext"])?,
        plaintext,
        "rewrap keeps the data key"
    );

    // Tampered wrapped blobs (past the 26-byte header) are refused as bad ciphertext.
    for i in [27usize, wrapped.len() / 2 + 13, wrapped.len() - 1] {
        let mut bad = wrapped.clone();
        let byte = bad.get_mut(i).ok_or("wrapped blob too short")?;
        *byte ^= 0x01;
        let r = post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": b64(&bad) }),
        )
        .await?;
        expect(
            &r,
            400,
            Some("bad-ciphertext"),
            &format!("unwrap with byte {i} flipped"),
        )?;
    }
    // The service still works.
    expect(
        &post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": b64(&wrapped) }),
        )
        .await?,
        200,
        None,
        "unwrap after tampered attempts",
    )?;
    Ok(())
}

// ---- 6. encrypt / decrypt with AAD -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_rewrap_moves_ciphertexts_and_data_keys_to_the_new_version() -> TestResult
{
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "dek", "encrypt,decrypt,wrap,unwrap")?;
    let mut c = svc.connect("demo-app").await?;
    let (pt, aad) = (b"ledger row 17".to_vec(), b"tenant=9".to_vec());
    let enc = expect(
        &post(
            &mut c,
            "/v1/keys/dek/encrypt",
            json!({ "plaintext": b64(&pt), "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "encrypt",
    )?;
    let dk = expect(
        &post(&mut c, "/v1/keys/dek/data-key", json!({})).await?,
        200,
        None,
        "data-key",
    )?;
    svc.env
        .ok(&["--reason", "CHG-11", "key", "rotate", "dek"])?;
    let re = expect(
        &post(
            &mut c,
            "/v1/keys/dek/rewrap",
            json!({ "ciphertext": enc["ciphertext"], "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "rewrap ciphertext",
    )?;
    assert_eq!(re["key_version"], 2, "{re}");
    let dec = expect(
        &post(
            &mut c,
            "/v1/keys/dek/decrypt",
            json!({ "ciphertext": re["ciphertext"], "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "decrypt the moved ciphertext",
    )?;
    assert_eq!(unb64(&dec["plaintext"])?, pt);
    assert_eq!(dec["key_version"], 2);
    let rw = expect(
        &post(
            &mut c,
            "/v1/keys/dek/rewrap",
            json!({ "wrapped": dk["wrapped"] }),
        )
        .await?,
        200,
        None,
        "rewrap data key",
    )?;
    assert_eq!(rw["key_version"], 2);
    let un = expect(
        &post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": rw["wrapped"] }),
        )
        .await?,
        200,
        None,
        "unwrap",
    )?;
    assert_eq!(unb64(&un["plaintext"])?, unb64(&dk["plaintext"])?);
    // Both fields, or none: a clear 400.
    let r = post(
        &mut c,
        "/v1/keys/dek/rewrap",
        json!({ "wrapped": dk["wrapped"], "ciphertext": enc["ciphertext"] }),
    )
    .await?;
    expect(&r, 400, Some("bad-request"), "both fields")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_decrypt_with_aad() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "dek", "encrypt,decrypt")?;
    let mut c = svc.connect("demo-app").await?;

    let pt = b"card 4111 1111 1111 1111".to_vec();
    let aad = b"tenant=42".to_vec();
    let enc = expect(
        &post(
            &mut c,
            "/v1/keys/dek/encrypt",
            json!({ "plaintext": b64(&pt), "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "encrypt",
    )?;
    let ct = unb64(&enc["ciphertext"])?;
    assert!(
        !ct.windows(pt.len()).any(|w| w == pt.as_slice()),
        "ciphertext contains the plaintext"
    );
    let dec = expect(
        &post(
            &mut c,
            "/v1/keys/dek/decrypt",
            json!({ "ciphertext": b64(&ct), "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "decrypt",
    )?;
    assert_eq!(unb64(&dec["plaintext"])?, pt, "round trip");

    for wrong in [
        json!({ "ciphertext": b64(&ct), "aad": b64(b"tenant=43") }),
        json!({ "ciphertext": b64(&ct) }),
    ] {
        let r = post(&mut c, "/v1/keys/dek/decrypt", wrong.clone()).await?;
        expect(
            &r,
            400,
            Some("bad-ciphertext"),
            &format!("decrypt with wrong AAD {wrong}"),
        )?;
    }

    // Still working afterwards, on the same connection and a new one.
    let dec = expect(
        &post(
            &mut c,
            "/v1/keys/dek/decrypt",
            json!({ "ciphertext": b64(&ct), "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "decrypt after a failed one",
    )?;
    assert_eq!(unb64(&dec["plaintext"])?, pt);
    let mut c2 = svc.connect("demo-app").await?;
    let enc2 = expect(
        &post(
            &mut c2,
            "/v1/keys/dek/encrypt",
            json!({ "plaintext": b64(b"x") }),
        )
        .await?,
        200,
        None,
        "encrypt on a new connection",
    )?;
    assert!(enc2["ciphertext"].is_string());
    let h = expect(&get(&mut c2, "/v1/health").await?, 200, None, "health")?;
    assert_eq!(h["status"], "ok");
    Ok(())
}

// ---- 7. malformed input ------------------------------------------------------------------------

/// method, path, body, expected status, expected code (when the code is fixed).
type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_problem_details() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign,verify")?;
    svc.grant("demo-app", "dek", "encrypt,decrypt,wrap,unwrap")?;
    let pins = [
        svc.env.user_pin("kms-primary")?,
        svc.env.user_pin("kms-backup")?,
    ];

    let big = format!("{{\"message\":\"{}\"}}", "A".repeat(100 * 1024 / 4 * 4));
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/keys/sig/sign",
            br#"{"message":"not base64!"}"#.to_vec(),
            400,
            Some("bad-base64"),
        ),
        (
            "POST",
            "/v1/keys/dek/encrypt",
            br#"{"plaintext":"aGVsbG8=","aad":"%%%"}"#.to_vec(),
            400,
            Some("bad-base64"),
        ),
        (
            "POST",
            "/v1/keys/sig/sign",
            br#"{"message":"aGVsbG8=","extra":1}"#.to_vec(),
            400,
            Some("unknown-field"),
        ),
        (
            "POST",
            "/v1/keys/dek/data-key",
            br#"{"bits":128}"#.to_vec(),
            400,
            Some("unknown-field"),
        ),
        (
            "POST",
            "/v1/keys/sig/sign",
            big.into_bytes(),
            413,
            Some("body-too-large"),
        ),
        (
            "POST",
            "/v1/keys/sig/sign",
            b"this is not json".to_vec(),
            400,
            None,
        ),
        ("POST", "/v1/keys/sig/sign", Vec::new(), 400, None),
        (
            "POST",
            "/v1/keys/sig/sign",
            br#"{"message":"aGVsbG8=","digest":"aGVsbG8="}"#.to_vec(),
            400,
            None,
        ),
        (
            "GET",
            "/v1/no-such-thing",
            Vec::new(),
            404,
            Some("no-such-route"),
        ),
        (
            "POST",
            "/v2/keys/sig/sign",
            b"{}".to_vec(),
            404,
            Some("no-such-route"),
        ),
        (
            "GET",
            "/v1/keys/sig/sign",
            Vec::new(),
            405,
            Some("method-not-allowed"),
        ),
        (
            "DELETE",
            "/v1/keys/sig",
            Vec::new(),
            405,
            Some("method-not-allowed"),
        ),
        (
            "GET",
            "/v1/keys/no-such-key",
            Vec::new(),
            404,
            Some("key-not-found"),
        ),
    ];
    for (method, path, body, status, code) in cases {
        let what = format!("{method} {path} ({} body bytes)", body.len());
        let r = svc.fetch("demo-app", method, path, body).await?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, status, "{what}: body {text}");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/problem+json"),
            "{what}: content type; body {text}"
        );
        let v = r.json()?;
        for field in ["type", "title", "status", "detail", "code"] {
            assert!(!v[field].is_null(), "{what}: problem has no `{field}`: {v}");
        }
        assert_eq!(v["status"], status, "{what}: {v}");
        let c = v["code"].as_str().ok_or("code is not a string")?;
        assert_eq!(
            v["type"],
            format!("urn:kms:problem:{c}"),
            "{what}: type and code disagree: {v}"
        );
        if let Some(want) = code {
            assert_eq!(c, want, "{what}: {v}");
        }
        for pin in &pins {
            assert!(
                !text.contains(pin.as_str()),
                "{what}: the body contains a PIN"
            );
        }
    }

    // The service is still fine.
    let mut c = svc.connect("demo-app").await?;
    expect(
        &sign_msg(&mut c, "sig", b"ok").await?,
        200,
        None,
        "sign after bad input",
    )?;
    assert!(
        !pins.iter().any(|p| svc.log().contains(p.as_str())),
        "the service log contains a PIN"
    );
    Ok(())
}

// ---- 8. revocation on an open connection -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_disabling_apply_to_open_connections() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    let id = svc.grant("demo-app", "sig", "sign")?;
    let mut c = svc.connect("demo-app").await?;
    expect(&sign_msg(&mut c, "sig", b"1").await?, 200, None, "sign")?;

    svc.env.ok(&["grant", "revoke", &id, "--reason", "r"])?;
    let r = sign_msg(&mut c, "sig", b"2").await?;
    expect(
        &r,
        403,
        Some("no-grant"),
        "sign after revocation, same connection",
    )?;

    svc.grant("demo-app", "sig", "sign")?;
    expect(
        &sign_msg(&mut c, "sig", b"3").await?,
        200,
        None,
        "sign with a new grant",
    )?;

    svc.env.ok(&[
        "principal",
        "disable",
        "demo-app",
        "--reason",
        "app retired",
    ])?;
    let r = sign_msg(&mut c, "sig", b"4").await?;
    expect(
        &r,
        403,
        Some("principal-disabled"),
        "sign after disabling, same connection",
    )?;
    let r = get(&mut c, "/v1/keys").await?;
    expect(
        &r,
        403,
        Some("principal-disabled"),
        "list keys after disabling",
    )?;
    Ok(())
}

// ---- 9. OpenAPI ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_matches_the_routes() -> TestResult {
    let spec_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(&spec_path)?)?;
    let paths = spec["paths"]
        .as_object()
        .ok_or("openapi.json has no paths")?;
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().ok_or("path item is not an object")?;
        for m in item.keys().filter(|k| methods.contains(&k.as_str())) {
            documented.insert((m.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = kms::doors::json::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented operations the server does not route: {unserved:?}"
    );

    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign,verify,read-inventory")?;
    let mut c = svc.connect("demo-app").await?;
    for (method, path) in kms::doors::json::ROUTES {
        let path = path.replace("{name}", "sig");
        let body = if *method == "POST" {
            Some(json!({}))
        } else {
            None
        };
        let r = c.request(method, &path, body.as_ref(), None).await?;
        let code = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let not_routed = (r.status == 404 && code == "no-such-route")
            || r.status == 405
            || code == "method-not-allowed";
        assert!(
            !not_routed,
            "{method} {path} is not routed: {} {}",
            r.status,
            body_text(&r)
        );
    }
    Ok(())
}

// ---- 10. concurrency ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signing_leaks_no_session() -> TestResult {
    const TASKS: usize = 16;
    const EACH: usize = 25;
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (addr, tls) = (svc.addr, svc.tls("demo-app")?);
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::connect(addr, tls)
                .await
                .map_err(|e| format!("task {t}: connect: {e}"))?;
            let mut statuses = Vec::new();
            for i in 0..EACH {
                let r = sign_msg(&mut c, "sig", format!("{t}/{i}").as_bytes())
                    .await
                    .map_err(|e| format!("task {t} sign {i}: {e}"))?;
                if r.status != 200 {
                    return Err(format!("task {t} sign {i}: {} {}", r.status, body_text(&r)));
                }
                statuses.push(r.status);
            }
            Ok::<usize, String>(statuses.len())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await??;
    }
    assert_eq!(ok, TASKS * EACH);

    let mut c = svc.connect("demo-app").await?;
    let h = expect(&get(&mut c, "/v1/health").await?, 200, None, "health")?;
    let tokens = h["tokens"].as_array().ok_or("health has no tokens")?;
    let primary = tokens
        .iter()
        .find(|t| t["label"] == "kms-primary")
        .ok_or_else(|| format!("no kms-primary in health: {h}"))?;
    let open = primary["sessions_open"].as_u64().ok_or("sessions_open")?;
    let idle = primary["sessions_idle"].as_u64().ok_or("sessions_idle")?;
    let max = primary["sessions_max"].as_u64().ok_or("sessions_max")?;
    assert_eq!(open, idle, "a session is still checked out: {primary}");
    assert!(
        open <= max,
        "more sessions open than the pool allows: {primary}"
    );
    assert!(open >= 1, "no pool session was ever opened: {primary}");

    let rows = svc.audit(Some("sig"))?;
    assert_eq!(
        count(&rows, "key.sign", "ok"),
        TASKS * EACH,
        "one ok key.sign audit row per signature"
    );
    Ok(())
}

// ---- 11. graceful shutdown ----------------------------------------------------------------------

/// What one client task saw: replies (status, received after SIGTERM?) and how it ended.
#[derive(Debug, Default)]
struct Seen {
    replies: Vec<(u16, bool)>,
    ended: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests() -> TestResult {
    const N: usize = 8;
    let mut svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;

    // An idle keep-alive connection (one request done) must not hold the shutdown up.
    let mut idle = svc.connect("demo-app").await?;
    expect(&get(&mut idle, "/v1/health").await?, 200, None, "health")?;

    // N connections, each signing back to back until the service goes away, so that requests
    // are certainly in flight when SIGTERM arrives.
    let mut conns = Vec::new();
    for _ in 0..N {
        conns.push(svc.connect("demo-app").await?);
    }
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let signalled = std::sync::Arc::clone(&signalled);
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            for n in 0..10_000 {
                let body = json!({ "message": b64(format!("in flight {i}/{n}").as_bytes()) });
                match c
                    .request("POST", "/v1/keys/sig/sign", Some(&body), None)
                    .await
                {
                    Ok(r) => {
                        let after = signalled.load(std::sync::atomic::Ordering::SeqCst);
                        seen.replies.push((r.status, after));
                        if r.status != 200 {
                            seen.ended = Some(format!("{} {}", r.status, body_text(&r)));
                            break;
                        }
                    }
                    Err(e) => {
                        seen.ended = Some(format!("connection error: {e}"));
                        break;
                    }
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t0 = Instant::now();
    signalled.store(true, std::sync::atomic::Ordering::SeqCst);
    svc.terminate()?;

    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await?);
    }
    let status = tokio::task::block_in_place(|| {
        svc.wait_exit(Duration::from_secs(10).saturating_sub(t0.elapsed()))
    })?;
    let exited_after = t0.elapsed();
    assert!(
        exited_after <= Duration::from_secs(10),
        "took {exited_after:?} to exit"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; stderr:\n{}",
        svc.log()
    );
    assert!(
        get(&mut idle, "/v1/health").await.is_err(),
        "the idle connection still answers after the exit"
    );

    let mut ok = 0;
    let mut ok_after = 0;
    for (i, s) in seen.iter().enumerate() {
        for (status, after) in &s.replies {
            assert!(
                *status < 500,
                "task {i} got a server error around shutdown: {s:?}"
            );
            assert_eq!(*status, 200, "task {i}: {s:?}");
            ok += 1;
            if *after {
                ok_after += 1;
            }
        }
        let ended = s.ended.as_deref().unwrap_or("");
        assert!(
            ended.starts_with("connection error"),
            "task {i} should end when the service closes its connection: {s:?}"
        );
    }
    eprintln!(
        "graceful shutdown: {ok} signatures ({ok_after} answered after SIGTERM), exit {exited_after:?}"
    );
    assert!(
        ok_after > 0,
        "no request was answered after SIGTERM; nothing was in flight"
    );
    // Every signature the service made was delivered: none done and then dropped at shutdown.
    let rows = svc.audit(Some("sig"))?;
    assert_eq!(
        count(&rows, "key.sign", "ok"),
        ok,
        "ok key.sign audit rows vs 200 replies received"
    );
    Ok(())
}

// ---- 12. metrics --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests() -> TestResult {
    let mut svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;
    let mut c = svc.connect("demo-app").await?;
    for i in 0..3 {
        expect(
            &sign_msg(&mut c, "sig", format!("{i}").as_bytes()).await?,
            200,
            None,
            "sign",
        )?;
    }
    let r = post(
        &mut c,
        "/v1/keys/dek/encrypt",
        json!({ "plaintext": "aGk=" }),
    )
    .await?;
    expect(&r, 403, Some("no-grant"), "encrypt without a grant")?;
    let r = get(&mut c, "/metrics").await?;
    assert_eq!(r.status, 200);
    let text = body_text(&r);
    assert!(
        text.contains("kms_requests_total{operation=\"sign\",status=\"200\"} 3"),
        "metrics: {text}"
    );
    assert!(
        text.contains("kms_requests_total{operation=\"encrypt\",status=\"403\"} 1"),
        "metrics: {text}"
    );
    assert!(
        text.contains("kms_request_duration_seconds_bucket"),
        "metrics: {text}"
    );
    let status = tokio::task::block_in_place(|| svc.stop())?;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    Ok(())
}

/// Several processes write one trail (nodes on one inventory, or a node and its restart), and a
/// process killed before its own count reaches `checkpoint_every` takes that count with it: the
/// next one must still sign in time, from what the shared trail holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_no_unsigned_stretch_for_the_next() -> TestResult {
    const EVERY: usize = 40;
    let mut svc = Service::start_with(|env| {
        let mut cfg = std::fs::read_to_string(env.config())?;
        cfg.push_str(&format!("\n[audit]\ncheckpoint_every = {EVERY}\n"));
        std::fs::write(env.config(), cfg)?;
        Ok(())
    })?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign")?;
    for round in 0..2 {
        let mut c = svc.connect("demo-app").await?;
        for n in 0..EVERY * 3 / 4 {
            let r = sign_msg(&mut c, "sig", format!("{round}/{n}").as_bytes()).await?;
            expect(&r, 200, None, "sign")?;
        }
        drop(c);
        svc.kill()?;
        if round == 0 {
            svc.restart("serve-2.log")?;
        }
    }
    let o = svc.env.run(&["audit", "verify", "--json"])?;
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(o.status.code(), Some(0), "{v}");
    Ok(())
}
