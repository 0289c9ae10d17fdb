//! The AWS KMS External Key Store proxy (issue 15) against a real `kms serve` on loopback, with
//! requests signed by SigV4 exactly as AWS KMS signs them. Every call goes through the engine:
//! the credential's principal needs an A9 grant, rotation and compromise apply, and each call is
//! an audit record carrying AWS's request metadata.

use common::service::*;
use common::*;
use kms_testkit as common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

const PREFIX: &str = "/acme/kms/xks/v1";
const AKID: &str = "AKIAXKSTESTKEY0000001";
const AKID2: &str = "AKIAXKSTESTKEY0000002";
const SECRET: &str = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE";
const SECRET2: &str = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWpr";
const PRINCIPAL: &str = "other-app";

fn xks_service() -> Res<Service> {
    xks_service_with("")
}

/// The service with [xks]; `extra` is appended to the [xks] table (e.g. mutual TLS).
fn xks_service_with(extra: &str) -> Res<Service> {
    let svc = Service::start_with(|env| {
        env.write("xks-secret-1", SECRET.as_bytes())?;
        env.write("xks-secret-2", SECRET2.as_bytes())?;
        for f in ["xks-secret-1", "xks-secret-2"] {
            std::fs::set_permissions(
                env.path(f),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
        }
        let mut cfg = std::fs::read_to_string(env.config())?;
        cfg.push_str(&format!(
            "\n[xks]\nlisten = \"127.0.0.1:0\"\nprefix = \"{PREFIX}\"\nregion = \"us-east-1\"\n\
             {extra}\n[[xks.credentials]]\naccess_key_id = \"{AKID}\"\nsecret = \"file:xks-secret-1\"\nprincipal = \"{PRINCIPAL}\"\n\
             [[xks.credentials]]\naccess_key_id = \"{AKID2}\"\nsecret = \"file:xks-secret-2\"\nprincipal = \"{PRINCIPAL}\"\n"
        ));
        std::fs::write(env.config(), cfg)?;
        Ok(())
    })?;
    svc.register(PRINCIPAL)?;
    Ok(svc)
}

struct Reply {
    status: u16,
    body: Value,
}

/// One XKS call: `suffix` after the prefix, signed with `akid`/`secret`, `age` seconds old.
async fn call_as(
    svc: &Service,
    method: &str,
    path: &str,
    body: &Value,
    akid: &str,
    secret: &str,
    age: i64,
) -> Res<Reply> {
    call_tls(
        svc,
        svc.tls_anonymous()?,
        method,
        path,
        body,
        akid,
        secret,
        age,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn call_tls(
    svc: &Service,
    tls: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &Value,
    akid: &str,
    secret: &str,
    age: i64,
) -> Res<Reply> {
    let addr = svc.xks.ok_or("no XKS listener")?;
    let bytes = serde_json::to_vec(body)?;
    let when = time::OffsetDateTime::now_utc() - time::Duration::seconds(age);
    let headers = xks_headers(addr, method, path, &bytes, (akid, secret), when)?;
    let reply = fetch_with(addr, tls, method, path, &headers, bytes).await?;
    let (status, raw) = (reply.status, reply.body);
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&raw)))?
    };
    Ok(Reply { status, body })
}

async fn call(svc: &Service, suffix: &str, body: &Value) -> Res<Reply> {
    call_as(
        svc,
        "POST",
        &format!("{PREFIX}{suffix}"),
        body,
        AKID,
        SECRET,
        0,
    )
    .await
}

fn meta(op: &str, key: &str, request: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": format!("arn:aws:kms:us-east-1:123456789012:key/{key}"),
        "kmsOperation": op,
        "kmsRequestId": request,
        "kmsViaService": "ebs"
    })
}

fn error_name(r: &Reply) -> &str {
    r.body["errorName"].as_str().unwrap_or("")
}

async fn encrypt(
    svc: &Service,
    key: &str,
    plaintext: &[u8],
    aad: &[u8],
    request: &str,
) -> Res<Reply> {
    call(
        svc,
        &format!("/keys/{key}/encrypt"),
        &json!({
            "requestMetadata": meta("Encrypt", key, request),
            "plaintext": B64.encode(plaintext),
            "additionalAuthenticatedData": B64.encode(aad),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256"
        }),
    )
    .await
}

fn decrypt_body(key: &str, sealed: &Value, aad: &[u8], request: &str) -> Value {
    json!({
        "requestMetadata": meta("Decrypt", key, request),
        "ciphertext": sealed["ciphertext"],
        "ciphertextMetadata": sealed["ciphertextMetadata"],
        "initializationVector": sealed["initializationVector"],
        "authenticationTag": sealed["authenticationTag"],
        "additionalAuthenticatedData": B64.encode(aad),
        "encryptionAlgorithm": "AES_GCM"
    })
}

async fn decrypt(
    svc: &Service,
    key: &str,
    sealed: &Value,
    aad: &[u8],
    request: &str,
) -> Res<Reply> {
    call(
        svc,
        &format!("/keys/{key}/decrypt"),
        &decrypt_body(key, sealed, aad, request),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_encrypts_and_decrypts_through_grants_with_the_spec_errors() -> TestResult {
    let svc = xks_service()?;
    let env = &svc.env;
    env.ok(&create_args(
        "foo",
        "aes-256",
        "encrypt,decrypt",
        &["--reason", "CHG-15 XKS key"],
    ))?;
    svc.grant(PRINCIPAL, "foo", "encrypt,decrypt")?;

    // Health: deep, every token asked now.
    let r = call(
        &svc,
        "/health",
        &json!({"requestMetadata": {"kmsRequestId": "h-1", "kmsOperation": "KmsHealthCheck"}}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["ekmFleetDetails"][0]["healthStatus"], "ACTIVE",
        "{}",
        r.body
    );
    let r = call(&svc, "/health", &json!({"requestMetadata": {}})).await?;
    assert_eq!((r.status, error_name(&r)), (400, "ValidationException"));

    let r = call(
        &svc,
        "/keys/foo/metadata",
        &json!({"requestMetadata": meta("DescribeKey", "foo", "m-1")}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})
    );

    // Encrypt with AAD and an integrity value, checked here as AWS checks it; decrypt it back.
    let aad = b"project=nile,department=marketing";
    let sealed = encrypt(&svc, "foo", b"Hello World!", aad, "e-1").await?;
    assert_eq!(sealed.status, 200, "{}", sealed.body);
    let s = &sealed.body;
    let field = |n: &str| B64.decode(s[n].as_str().unwrap_or_default());
    let (ct, iv, tag, md) = (
        field("ciphertext")?,
        field("initializationVector")?,
        field("authenticationTag")?,
        field("ciphertextMetadata")?,
    );
    assert_eq!((ct.len(), iv.len(), tag.len()), (12, 12, 16));
    assert!(md.len() <= 20);
    let mut h = sha2::Sha256::default();
    for part in [&aad[..], &md, &iv, &ct, &tag] {
        sha2::Digest::update(&mut h, part);
    }
    assert_eq!(
        s["ciphertextDataIntegrityValue"],
        B64.encode(sha2::Digest::finalize(h))
    );
    let r = decrypt(&svc, "foo", s, aad, "d-1").await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["plaintext"], B64.encode(b"Hello World!"));

    // Tampering anywhere is InvalidCiphertextException: AAD, ciphertext, metadata.
    let r = decrypt(&svc, "foo", s, b"project=blue", "d-2").await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (400, "InvalidCiphertextException")
    );
    let mut bad = s.clone();
    let mut ct2 = ct.clone();
    ct2[0] ^= 1;
    bad["ciphertext"] = B64.encode(&ct2).into();
    let r = decrypt(&svc, "foo", &bad, aad, "d-3").await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (400, "InvalidCiphertextException")
    );
    let mut bad = s.clone();
    bad["ciphertextMetadata"] = B64.encode(b"kmsv\0\0\0\x07").into();
    let r = decrypt(&svc, "foo", &bad, aad, "d-4").await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (400, "InvalidCiphertextException")
    );

    // The spec's sizes: 4,300 bytes of plaintext with 8,192 of AAD work; beyond kms's maximum
    // is UnsupportedOperationException.
    let big = vec![7u8; 4300];
    let big_aad = vec![9u8; 8192];
    let r = encrypt(&svc, "foo", &big, &big_aad, "e-2").await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = decrypt(&svc, "foo", &r.body, &big_aad, "d-5").await?;
    assert_eq!(r.body["plaintext"], B64.encode(&big));
    let r = encrypt(&svc, "foo", &vec![1u8; 8193], b"", "e-3").await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (501, "UnsupportedOperationException")
    );

    // Authentication: a wrong secret, a stale date, an unknown key id; the second credential
    // works (rotation of credentials without a restart).
    let body = json!({"requestMetadata": meta("DescribeKey", "foo", "m-2")});
    let path = format!("{PREFIX}/keys/foo/metadata");
    let r = call_as(
        &svc,
        "POST",
        &path,
        &body,
        AKID,
        "InvalidFYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Z",
        0,
    )
    .await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (401, "AuthenticationFailedException")
    );
    let r = call_as(&svc, "POST", &path, &body, AKID, SECRET, 301).await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (401, "AuthenticationFailedException")
    );
    let r = call_as(
        &svc,
        "POST",
        &path,
        &body,
        "AKIAUNKNOWNKEY000000",
        SECRET,
        0,
    )
    .await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (401, "AuthenticationFailedException")
    );
    let r = call_as(&svc, "POST", &path, &body, AKID2, SECRET2, 0).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    // Paths and methods: before authentication.
    let r = call_as(&svc, "GET", &path, &body, AKID, SECRET, 0).await?;
    assert_eq!(r.status, 405);
    let r = call_as(
        &svc,
        "POST",
        "/other/kms/xks/v1/keys/foo/metadata",
        &body,
        AKID,
        SECRET,
        0,
    )
    .await?;
    assert_eq!((r.status, error_name(&r)), (404, "InvalidUriPathException"));

    // Keys: unknown, not granted, wrong usage, wrong type.
    let r = call(
        &svc,
        "/keys/nope/metadata",
        &json!({"requestMetadata": meta("DescribeKey", "nope", "m-3")}),
    )
    .await?;
    assert_eq!((r.status, error_name(&r)), (404, "KeyNotFoundException"));
    env.ok(&create_args(
        "ungranted",
        "aes-256",
        "encrypt,decrypt",
        &["--reason", "CHG-15"],
    ))?;
    let r = encrypt(&svc, "ungranted", b"x", b"", "e-4").await?;
    assert_eq!((r.status, error_name(&r)), (403, "AccessDeniedException"));
    env.ok(&create_args(
        "enc-only",
        "aes-256",
        "encrypt",
        &["--reason", "CHG-15"],
    ))?;
    svc.grant(PRINCIPAL, "enc-only", "encrypt")?;
    let r = call(&svc, "/keys/enc-only/encrypt", &json!({"requestMetadata": meta("Encrypt", "enc-only", "e-5"), "plaintext": B64.encode(b"x"), "encryptionAlgorithm": "AES_GCM"})).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = decrypt(&svc, "enc-only", &r.body, b"", "d-6").await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (400, "InvalidKeyUsageException")
    );
    let r = encrypt(&svc, "enc-only", b"x", b"", "e-6").await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (400, "InvalidKeyUsageException"),
        "an integrity value needs the decrypt check"
    );
    env.ok(&create_args(
        "signer",
        "ec-p256",
        "sign,verify",
        &["--reason", "CHG-15"],
    ))?;
    svc.grant(PRINCIPAL, "signer", "sign")?;
    let r = encrypt(&svc, "signer", b"x", b"", "e-7").await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (400, "InvalidKeyUsageException")
    );

    // Every call is on the record with AWS's metadata, refusals included.
    let rows = svc.audit(None)?;
    let text = serde_json::to_string(&rows)?;
    for needle in [
        "xks.encrypt",
        "xks.decrypt",
        "xks.metadata",
        "xks.health",
        "xks.authenticate",
        "request e-1 by arn:aws:iam::123456789012:user/Alice",
    ] {
        assert!(text.contains(needle), "audit has {needle}");
    }
    assert!(
        !text.contains(&B64.encode(b"Hello World!")),
        "no plaintext in the audit trail"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_ciphertexts_and_a_compromised_version_refuses() -> TestResult {
    let svc = xks_service()?;
    let env = &svc.env;
    env.ok(&create_args(
        "vol",
        "aes-256",
        "encrypt,decrypt",
        &["--reason", "CHG-15", "--reencrypt-window", "7d"],
    ))?;
    svc.grant(PRINCIPAL, "vol", "encrypt,decrypt")?;
    let old = encrypt(&svc, "vol", b"before rotation", b"a", "e-1").await?;
    assert_eq!(old.status, 200, "{}", old.body);
    env.ok(&["--reason", "CHG-16 quarterly", "key", "rotate", "vol"])?;
    let r = decrypt(&svc, "vol", &old.body, b"a", "d-1").await?;
    assert_eq!(
        r.status, 200,
        "a v1 ciphertext decrypts after the rotation: {}",
        r.body
    );
    assert_eq!(r.body["plaintext"], B64.encode(b"before rotation"));
    let new = encrypt(&svc, "vol", b"after rotation", b"a", "e-2").await?;
    assert_ne!(
        new.body["ciphertextMetadata"], old.body["ciphertextMetadata"],
        "v2 encrypts"
    );
    env.ok(&[
        "--reason",
        "INC-9 key file leaked",
        "key",
        "compromise",
        "vol",
        "--key-version",
        "1",
    ])?;
    let r = decrypt(&svc, "vol", &old.body, b"a", "d-2").await?;
    assert_eq!(
        (r.status, error_name(&r)),
        (400, "InvalidStateException"),
        "{}",
        r.body
    );
    let r = decrypt(&svc, "vol", &new.body, b"a", "d-3").await?;
    assert_eq!(r.status, 200, "{}", r.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_the_named_client_certificate() -> TestResult {
    // The dev PKI is made after the config is written; its CA is at pki/ca.pem.
    let svc = xks_service_with("client_ca = \"pki/ca.pem\"\nclient_name = \"demo-app\"")?;
    let body =
        json!({"requestMetadata": {"kmsRequestId": "h-1", "kmsOperation": "KmsHealthCheck"}});
    let path = format!("{PREFIX}/health");
    let r = call_tls(
        &svc,
        svc.tls("demo-app")?,
        "POST",
        &path,
        &body,
        AKID,
        SECRET,
        0,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let other = call_tls(
        &svc,
        svc.tls("other-app")?,
        "POST",
        &path,
        &body,
        AKID,
        SECRET,
        0,
    )
    .await;
    assert!(
        other.is_err(),
        "a certificate without the configured name is turned away"
    );
    let none = call_as(&svc, "POST", &path, &body, AKID, SECRET, 0).await;
    assert!(none.is_err(), "no client certificate, no connection");
    Ok(())
}
