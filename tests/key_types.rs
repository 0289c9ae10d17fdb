//! The key types of issue 14 on real SoftHSM2 tokens, checked with real openssl: every signature
//! scheme (CLI and API), HMAC tags (CLI and API agree), the legacy 3DES rules and its migration
//! to AES-GCM, aes-128, and backup copies of every new type on both tokens.

use common::service::Service;
use common::*;
use kms_testkit as common;

use kms::client::{Connection, Reply};
use serde_json::{json, Value};
use std::path::Path;

async fn post(c: &mut Connection, path: &str, body: Value) -> Res<Reply> {
    Ok(c.request("POST", path, Some(&body), Some("key types test"))
        .await?)
}

/// How openssl verifies a signature of one scheme.
#[derive(Clone, Copy)]
enum Check {
    /// `openssl dgst -<hash> -verify` (ECDSA DER, RSA PKCS#1 v1.5).
    Dgst(&'static str),
    /// `openssl dgst -sha256` with PSS, salt 32.
    Pss,
    /// `openssl pkeyutl -verify -rawin` (pure Ed25519).
    Ed25519,
}

fn openssl_verifies(check: Check, pem: &str, msg: &str, sig: &str) -> Res<bool> {
    let (pem, msg, sig) = (Path::new(pem), Path::new(msg), Path::new(sig));
    let o = match check {
        Check::Dgst(hash) => openssl_dgst_verify(&[hash], pem, sig, msg)?,
        Check::Pss => openssl_dgst_verify(
            &[
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
            pem,
            sig,
            msg,
        )?,
        Check::Ed25519 => openssl_rawin_verify(pem, sig, msg)?,
    };
    let out = stdout(&o);
    Ok(o.status.success()
        && (out.contains("Verified OK") || out.contains("Signature Verified Successfully")))
}

/// Name, type, `--signature` (if any), the API's algorithm name, the openssl check, and what
/// `openssl pkey -text` says about the public key.
type Signer = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Check,
    &'static str,
);

const SIGNERS: &[Signer] = &[
    (
        "p256",
        "ec-p256",
        None,
        "ecdsa-p256-sha256",
        Check::Dgst("-sha256"),
        "prime256v1",
    ),
    (
        "p384",
        "ec-p384",
        None,
        "ecdsa-p384-sha384",
        Check::Dgst("-sha384"),
        "secp384r1",
    ),
    (
        "p521",
        "ec-p521",
        None,
        "ecdsa-p521-sha512",
        Check::Dgst("-sha512"),
        "secp521r1",
    ),
    ("ed", "ed25519", None, "ed25519", Check::Ed25519, "ED25519"),
    (
        "rsa-pss",
        "rsa-2048",
        None,
        "rsa-pss-sha256",
        Check::Pss,
        "2048 bit",
    ),
    (
        "rsa-pkcs1",
        "rsa-2048",
        Some("rsa-pkcs1-sha256"),
        "rsa-pkcs1-sha256",
        Check::Dgst("-sha256"),
        "2048 bit",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signature_type_verifies_with_openssl_through_cli_and_api() -> TestResult {
    let svc = Service::start_with(|env| {
        for (name, t, scheme, ..) in SIGNERS {
            let mut extra = vec!["--reason", "CHG-1 key types"];
            if let Some(s) = scheme {
                extra.extend(["--signature", s]);
            }
            env.ok(&create_args(name, t, "sign,verify", &extra))?;
            env.grant_user(name)?;
        }
        Ok(())
    })?;
    let env = &svc.env;
    let msg = env.write("msg.txt", b"release 4.5.6: artefact digest list\n")?;
    let other = env.write("other.txt", b"release 4.5.7\n")?;
    let msg_s = path(&msg)?.to_owned();

    for &(name, _, _, algorithm, check, pem_says) in SIGNERS {
        let sig = env.path(&format!("{name}.sig"));
        let pem = env.path(&format!("{name}.pem"));
        let (sig_s, pem_s) = (path(&sig)?, path(&pem)?);
        env.ok(&["key", "sign", name, "--in", &msg_s, "--out", sig_s])?;
        env.ok(&["key", "public", name, "--out", pem_s])?;
        let o = openssl(&["pkey", "-pubin", "-in", pem_s, "-noout", "-text"])?;
        assert!(
            stdout(&o).contains(pem_says),
            "{name}: openssl pkey: {}{}",
            stdout(&o),
            stderr(&o)
        );
        if name == "ed" {
            assert_eq!(std::fs::read(&sig)?.len(), 64, "pure Ed25519 is 64 bytes");
        }
        assert!(
            openssl_verifies(check, pem_s, &msg_s, sig_s)?,
            "{name}: openssl does not verify the CLI's signature"
        );
        assert!(
            !openssl_verifies(check, pem_s, path(&other)?, sig_s)?,
            "{name}: openssl verified a signature over another message"
        );
        let o = env.ok(&["key", "verify", name, "--in", &msg_s, "--sig", sig_s])?;
        assert!(stdout(&o).contains("signature valid"), "{name}");
        let o = env.run(&["key", "verify", name, "--in", path(&other)?, "--sig", sig_s])?;
        assert_fails(&o, 1, &["NOT valid"]);
        // The scheme is fixed at creation and shown.
        let shown = stdout(&env.ok(&["key", "show", name])?);
        assert!(
            shown.contains(&format!("signature:       {algorithm}")),
            "{name}: key show names its scheme {algorithm}: {shown}"
        );
    }

    // The same keys through the API: a signature over the message, verified by openssl.
    svc.register("demo-app")?;
    for (name, ..) in SIGNERS {
        svc.grant("demo-app", name, "sign,verify")?;
    }
    let mut c = svc.connect("demo-app").await?;
    let message = std::fs::read(&msg)?;
    for &(name, _, _, algorithm, check, _) in SIGNERS {
        let r = post(
            &mut c,
            &format!("/v1/keys/{name}/sign"),
            json!({ "message": b64(&message) }),
        )
        .await?;
        let v = expect(&r, 200, None, &format!("{name}: API sign"))?;
        assert_eq!(v["algorithm"], algorithm, "{name}: {v}");
        assert_eq!(v["key_version"], 1, "{name}: {v}");
        let sig = env.write(&format!("{name}.api.sig"), &unb64(&v["signature"])?)?;
        let pem = env.path(&format!("{name}.pem"));
        assert!(
            openssl_verifies(check, path(&pem)?, &msg_s, path(&sig)?)?,
            "{name}: openssl does not verify the API's signature"
        );
        let r = post(
            &mut c,
            &format!("/v1/keys/{name}/verify"),
            json!({ "message": b64(&message), "signature": v["signature"] }),
        )
        .await?;
        let v = expect(&r, 200, None, &format!("{name}: API verify"))?;
        assert_eq!(v["valid"], true, "{name}: {v}");
    }

    // A digest instead of the message: of the scheme's length where there is one; Ed25519 signs
    // the message itself and refuses a digest.
    use sha2::Digest as _;
    let d512 = sha2::Sha512::digest(&message).to_vec();
    let r = post(
        &mut c,
        "/v1/keys/p521/sign",
        json!({ "digest": b64(&d512) }),
    )
    .await?;
    let v = expect(&r, 200, None, "p521: sign a SHA-512 digest")?;
    let sig = env.write("p521.digest.sig", &unb64(&v["signature"])?)?;
    assert!(openssl_verifies(
        Check::Dgst("-sha512"),
        path(&env.path("p521.pem"))?,
        &msg_s,
        path(&sig)?
    )?);
    let r = post(
        &mut c,
        "/v1/keys/p256/sign",
        json!({ "digest": b64(&d512) }),
    )
    .await?;
    expect(&r, 400, None, "p256: a 64-byte digest")?;
    let d256 = sha2::Sha256::digest(&message).to_vec();
    let r = post(&mut c, "/v1/keys/ed/sign", json!({ "digest": b64(&d256) })).await?;
    let v = expect(&r, 400, None, "ed25519: a digest")?;
    assert!(
        v.to_string().contains("message itself"),
        "ed25519 says why: {v}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_tags_check_on_the_token_and_cli_and_api_agree() -> TestResult {
    let svc = Service::start_with(|env| {
        for (name, t) in [("mac256", "hmac-sha256"), ("mac384", "hmac-sha384")] {
            env.ok(&create_args(
                name,
                t,
                "mac,verify-mac",
                &["--reason", "CHG-1 key types"],
            ))?;
            env.grant_ops(name, "mac,verify-mac")?;
        }
        Ok(())
    })?;
    let env = &svc.env;

    // Usage without mac is refused for a key generated on the token.
    let o = env.run(&create_args(
        "verify-only",
        "hmac-sha256",
        "verify-mac",
        &["--reason", "CHG-1"],
    ))?;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs mac in its usage"),
        "{}",
        stderr(&o)
    );
    // An HMAC key does not sign.
    let o = env.run(&create_args(
        "hmac-sign",
        "hmac-sha256",
        "mac,sign",
        &["--reason", "CHG-1"],
    ))?;
    assert!(!o.status.success(), "hmac with sign usage: {}", stdout(&o));

    let data = b"amount=100.00;to=DE89370400440532013000".to_vec();
    let msg = env.write("msg.txt", &data)?;
    let other = env.write("other.txt", b"amount=900.00;to=DE89370400440532013000")?;
    svc.register("demo-app")?;
    let mut c = svc.connect("demo-app").await?;
    for (name, alg, len) in [("mac256", "hmac-sha256", 32), ("mac384", "hmac-sha384", 48)] {
        svc.grant("demo-app", name, "mac,verify-mac")?;
        let tag = env.path(&format!("{name}.tag"));
        env.user_ok(&[
            "key",
            "mac",
            name,
            "--in",
            path(&msg)?,
            "--out",
            path(&tag)?,
        ])?;
        let cli_tag = std::fs::read(&tag)?;
        assert_eq!(cli_tag.len(), len, "{name}: full-length tag");
        let o = env.user_ok(&[
            "key",
            "verify-mac",
            name,
            "--in",
            path(&msg)?,
            "--tag",
            path(&tag)?,
        ])?;
        assert!(stdout(&o).contains("MAC valid"), "{}", stdout(&o));
        let o = env.run_as(
            USER,
            &[
                "key",
                "verify-mac",
                name,
                "--in",
                path(&other)?,
                "--tag",
                path(&tag)?,
            ],
        )?;
        assert_fails(&o, 1, &["NOT valid"]);
        // A truncated tag is not valid either.
        let short = env.write(&format!("{name}.short"), &cli_tag[..16])?;
        let o = env.run_as(
            USER,
            &[
                "key",
                "verify-mac",
                name,
                "--in",
                path(&msg)?,
                "--tag",
                path(&short)?,
            ],
        )?;
        assert_fails(&o, 1, &["NOT valid"]);

        // The API: HMAC is deterministic, so the tag equals the CLI's.
        let r = post(
            &mut c,
            &format!("/v1/keys/{name}/mac"),
            json!({ "message": b64(&data) }),
        )
        .await?;
        let v = expect(&r, 200, None, &format!("{name}: API mac"))?;
        assert_eq!(v["algorithm"], alg, "{v}");
        assert_eq!(v["key_version"], 1, "{v}");
        assert_eq!(
            unb64(&v["mac"])?,
            cli_tag,
            "{name}: API and CLI tags differ"
        );
        let r = post(
            &mut c,
            &format!("/v1/keys/{name}/verify-mac"),
            json!({ "message": b64(&data), "mac": b64(&cli_tag) }),
        )
        .await?;
        let v = expect(&r, 200, None, &format!("{name}: API verify-mac"))?;
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["key_version"], 1, "{v}");
        let r = post(
            &mut c,
            &format!("/v1/keys/{name}/verify-mac"),
            json!({ "message": b64(b"something else"), "mac": b64(&cli_tag) }),
        )
        .await?;
        let v = expect(
            &r,
            200,
            None,
            &format!("{name}: API verify-mac, other message"),
        )?;
        assert_eq!(v["valid"], false, "{v}");
        // An HMAC key makes no signatures.
        let r = post(
            &mut c,
            &format!("/v1/keys/{name}/sign"),
            json!({ "message": b64(&data) }),
        )
        .await?;
        assert!(r.status >= 400, "{name}: signing with an HMAC key");
    }
    // The two keys are different keys.
    assert_ne!(
        std::fs::read(env.path("mac256.tag"))?,
        std::fs::read(env.path("mac384.tag"))?[..32]
    );
    Ok(())
}

/// The raw 3DES-CBC ciphertext and IV inside a kms envelope of algorithm 4 (header 26 bytes,
/// then IV 8, then what `openssl enc -des-ede3-cbc` writes).
fn raw_des3(envelope: &[u8]) -> Res<(String, Vec<u8>)> {
    if envelope.len() < 34 + 8 || &envelope[..4] != b"KMSE" || envelope[5] != 4 {
        return Err(format!("not a 3DES-CBC envelope: {}", hex::encode(envelope)).into());
    }
    Ok((hex::encode(&envelope[26..34]), envelope[34..].to_vec()))
}

#[test]
fn des3_is_legacy_decrypt_first_and_migrates_to_aes_gcm() -> TestResult {
    let env = Env::new()?;
    let reason = ["--reason", "CHG-9 legacy 3DES data"];
    // Without --legacy: refused, saying what to do.
    let o = env.run(&create_args("old", "des3", "decrypt", &reason))?;
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("legacy") && err.contains("--legacy"),
        "clear refusal: {err}"
    );
    // By a user (not an officer): refused.
    let mut args = create_args("old", "des3", "decrypt", &reason);
    args.push("--legacy");
    let o = env.run_as(USER, &args)?;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("security-officer") || stderr(&o).contains("security officer"),
        "role refusal: {}",
        stderr(&o)
    );
    // Encrypt without --allow-legacy-encrypt: refused.
    let mut args = create_args("old", "des3", "encrypt,decrypt", &reason);
    args.push("--legacy");
    let o = env.run(&args)?;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--allow-legacy-encrypt"),
        "{}",
        stderr(&o)
    );
    // A MAC with 3DES: refused (no 3DES MAC).
    let mut args = create_args("old", "des3", "decrypt,mac", &reason);
    args.extend(["--legacy", "--allow-legacy-encrypt"]);
    assert!(!env.run(&args)?.status.success(), "des3 with mac usage");
    assert!(
        env.sql_text("SELECT COUNT(*) FROM keys WHERE name = 'old'")? == "0",
        "no refused key in the inventory"
    );

    // With --legacy --allow-legacy-encrypt: encrypt + decrypt round trip.
    let mut args = create_args("old", "des3", "encrypt,decrypt", &reason);
    args.extend(["--legacy", "--allow-legacy-encrypt"]);
    env.ok(&args)?;
    env.grant_user("old")?;
    // And one that only decrypts (the default for legacy data).
    let mut args = create_args("archive", "des3", "decrypt", &reason);
    args.push("--legacy");
    env.ok(&args)?;
    env.grant_user("archive")?;

    let plain = b"legacy record 0042: 3DES era data, 41 bytes".to_vec();
    let pt = env.write("pt.txt", &plain)?;
    let ct = env.path("pt.kms");
    let back = env.path("pt.out");
    env.ok(&[
        "key",
        "encrypt",
        "old",
        "--in",
        path(&pt)?,
        "--out",
        path(&ct)?,
    ])?;
    let envelope = std::fs::read(&ct)?;
    let (iv, raw) = raw_des3(&envelope)?;
    // PKCS#7 padding always adds 1..=8 bytes.
    assert_eq!(raw.len(), (plain.len() / 8 + 1) * 8);
    env.ok(&[
        "key",
        "decrypt",
        "old",
        "--in",
        path(&ct)?,
        "--out",
        path(&back)?,
    ])?;
    assert_eq!(std::fs::read(&back)?, plain);
    // The same ciphertext as openssl writes it (raw, IV apart).
    let raw_file = env.write("pt.des3", &raw)?;
    let back2 = env.path("pt2.out");
    env.ok(&[
        "key",
        "decrypt",
        "old",
        "--in",
        path(&raw_file)?,
        "--out",
        path(&back2)?,
        "--iv",
        &iv,
    ])?;
    assert_eq!(std::fs::read(&back2)?, plain);
    // A decrypt-only key refuses to encrypt.
    let o = env.run(&[
        "key",
        "encrypt",
        "archive",
        "--in",
        path(&pt)?,
        "--out",
        path(&env.path("x.kms"))?,
    ])?;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not allowed to encrypt"),
        "{}",
        stderr(&o)
    );

    // The legacy report lists both with their owner; the rotation report calls them overdue.
    let o = env.ok(&["report", "legacy", "--json"])?;
    let r = json(&o)?;
    let rows = r.as_array().ok_or_else(|| format!("legacy report: {r}"))?;
    for name in ["old", "archive"] {
        let row = rows
            .iter()
            .find(|k| k["key"] == name)
            .ok_or_else(|| format!("{name} not in the legacy report: {r}"))?;
        assert_eq!(row["owner"], "payments-team", "{row}");
        assert_eq!(row["key_type"], "des3", "{row}");
        assert_eq!(row["status"], "legacy-in-use", "{row}");
    }
    let o = env.ok(&["report", "legacy"])?;
    assert!(stdout(&o).contains("old") && stdout(&o).contains("payments-team"));
    let o = env.ok(&["report", "rotation", "--json"])?;
    let r = json(&o)?;
    let row = r
        .as_array()
        .and_then(|a| a.iter().find(|k| k["key"] == "archive"))
        .ok_or_else(|| format!("archive not in the rotation report: {r}"))?;
    assert_eq!(row["status"], "overdue", "{row}");
    // Not rotated into another 3DES key: migrated.
    let o = env.run(&["--reason", "CHG-9", "key", "rotate", "old"])?;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("kms key migrate"), "{}", stderr(&o));
    // Migrating is an officer's decision.
    let o = env.run_as(
        USER,
        &[
            "--reason", "CHG-9", "key", "migrate", "old", "--to", "aes-256",
        ],
    )?;
    assert!(!o.status.success(), "a user migrated a key");

    // Migrate: the AES successor exists, the legacy key decrypts only.
    let o = env.ok(&[
        "--reason", "CHG-9", "key", "migrate", "old", "--to", "aes-256",
    ])?;
    assert!(stdout(&o).contains("old.aes256"), "{}", stdout(&o));
    let shown = json(&env.ok(&["key", "show", "old.aes256", "--json"])?)?;
    assert_eq!(shown["key_type"], "aes-256", "{shown}");
    env.grant_user("old.aes256")?;
    let o = env.ok(&["report", "legacy", "--json"])?;
    assert!(
        stdout(&o).contains("migrating") && stdout(&o).contains("old.aes256"),
        "{}",
        stdout(&o)
    );
    let o = env.run(&[
        "key",
        "encrypt",
        "old",
        "--in",
        path(&pt)?,
        "--out",
        path(&env.path("y.kms"))?,
    ])?;
    assert!(!o.status.success(), "a migrating des3 key still encrypts");
    assert!(stderr(&o).contains("old.aes256"), "{}", stderr(&o));

    // Rewrap: the kms envelope and the raw openssl form both become AES-GCM under the
    // successor, which decrypts them to the original plaintext.
    let new1 = env.path("pt.aes.kms");
    env.user_ok(&[
        "key",
        "rewrap",
        "old",
        "--in",
        path(&ct)?,
        "--out",
        path(&new1)?,
    ])?;
    let new2 = env.path("pt2.aes.kms");
    env.user_ok(&[
        "key",
        "rewrap",
        "old",
        "--in",
        path(&raw_file)?,
        "--out",
        path(&new2)?,
        "--iv",
        &iv,
    ])?;
    for (i, f) in [new1, new2].iter().enumerate() {
        let bytes = std::fs::read(f)?;
        assert_eq!(&bytes[..4], b"KMSE");
        assert_eq!(bytes[5], 1, "AES-GCM envelope");
        let out = env.path(&format!("migrated{i}.out"));
        env.ok(&[
            "key",
            "decrypt",
            "old.aes256",
            "--in",
            path(f)?,
            "--out",
            path(&out)?,
        ])?;
        assert_eq!(std::fs::read(&out)?, plain, "rewrapped #{i}");
    }
    // The legacy key still reads what was not yet moved.
    env.ok(&[
        "key",
        "decrypt",
        "old",
        "--in",
        path(&ct)?,
        "--out",
        path(&back)?,
    ])?;
    assert_eq!(std::fs::read(&back)?, plain);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_128_encrypts_and_wraps_data_keys() -> TestResult {
    let svc = Service::start_with(|env| {
        env.create("dek128", "aes-128", "encrypt,decrypt,wrap,unwrap")?;
        Ok(())
    })?;
    let env = &svc.env;
    let plain = b"customer 7781: card on file".to_vec();
    let pt = env.write("pt.txt", &plain)?;
    let ct = env.path("pt.kms");
    let back = env.path("pt.out");
    env.ok(&[
        "key",
        "encrypt",
        "dek128",
        "--in",
        path(&pt)?,
        "--out",
        path(&ct)?,
        "--aad",
        "tenant=7",
    ])?;
    let bytes = std::fs::read(&ct)?;
    assert_eq!(bytes[5], 1, "AES-GCM envelope");
    assert_eq!(bytes.len(), 38 + plain.len() + 16);
    env.ok(&[
        "key",
        "decrypt",
        "dek128",
        "--in",
        path(&ct)?,
        "--out",
        path(&back)?,
        "--aad",
        "tenant=7",
    ])?;
    assert_eq!(std::fs::read(&back)?, plain);
    // The wrong AAD fails authentication.
    let o = env.run(&[
        "key",
        "decrypt",
        "dek128",
        "--in",
        path(&ct)?,
        "--out",
        path(&back)?,
        "--aad",
        "tenant=8",
    ])?;
    assert!(!o.status.success());

    // Data key wrapped under the AES-128 key on the token, then unwrapped again.
    svc.register("demo-app")?;
    svc.grant("demo-app", "dek128", "encrypt,decrypt,wrap,unwrap")?;
    let mut c = svc.connect("demo-app").await?;
    let r = post(&mut c, "/v1/keys/dek128/data-key", json!({})).await?;
    let v = expect(&r, 200, None, "data-key")?;
    let dk = unb64(&v["plaintext"])?;
    assert_eq!(dk.len(), 32, "{v}");
    let r = post(
        &mut c,
        "/v1/keys/dek128/unwrap",
        json!({ "wrapped": v["wrapped"] }),
    )
    .await?;
    let u = expect(&r, 200, None, "unwrap")?;
    assert_eq!(unb64(&u["plaintext"])?, dk);
    // API encrypt/decrypt with the same key.
    let r = post(
        &mut c,
        "/v1/keys/dek128/encrypt",
        json!({ "plaintext": b64(&plain) }),
    )
    .await?;
    let e = expect(&r, 200, None, "encrypt")?;
    let r = post(
        &mut c,
        "/v1/keys/dek128/decrypt",
        json!({ "ciphertext": e["ciphertext"] }),
    )
    .await?;
    let d = expect(&r, 200, None, "decrypt")?;
    assert_eq!(unb64(&d["plaintext"])?, plain);
    Ok(())
}

/// The new types, one key each, made after the ceremony: name, type, usage, extra options.
const BACKED_UP: &[(&str, &str, &str, &[&str])] = &[
    ("b-p256", "ec-p256", "sign,verify", &[]),
    ("b-p521", "ec-p521", "sign,verify", &[]),
    (
        "b-rsa",
        "rsa-2048",
        "sign,verify",
        &["--signature", "rsa-pkcs1-sha256"],
    ),
    ("b-aes128", "aes-128", "encrypt,decrypt", &[]),
    ("b-hmac256", "hmac-sha256", "mac,verify-mac", &[]),
    ("b-hmac384", "hmac-sha384", "mac,verify-mac", &[]),
    ("b-secret", "secret-data", "reveal", &[]),
    (
        "b-des3",
        "des3",
        "encrypt,decrypt",
        &["--legacy", "--allow-legacy-encrypt"],
    ),
    ("b-des3-ro", "des3", "decrypt", &["--legacy"]),
];

/// `Access:` lines of the private and secret key objects labelled `kms:NAME:v1`, per name.
fn access_of(listing: &str) -> std::collections::BTreeMap<String, String> {
    key_access(listing)
        .into_iter()
        .filter(|(label, _)| label.starts_with("kms:b-"))
        .collect()
}

#[test]
fn every_new_type_is_copied_to_the_backup_token_sensitive_and_drilled() -> TestResult {
    let env = Env::new()?;
    env.ok(&["--reason", "CHG-7 backup ceremony", "backup", "init"])?;
    env.ok(&["backup", "sync"])?;
    let mut failed = Vec::new();
    for (name, t, usage, extra) in BACKED_UP {
        let mut args = vec!["--reason", "CHG-1 key types"];
        args.extend_from_slice(extra);
        let o = env.run(&create_args(name, t, usage, &args))?;
        if !o.status.success() {
            failed.push(format!("{name} ({t}): {}", stderr(&o)));
        }
    }
    assert!(
        failed.is_empty(),
        "creation with a backup copy failed: {failed:#?}"
    );

    // SoftHSM2 2.6.1 cannot wrap an Ed25519 private key at all (CKR_KEY_NOT_WRAPPABLE), so with
    // a backup pairing an ed25519 key never gets its copy: it is generated but stays pending,
    // and kms says why.
    let o = env.run(&create_args(
        "b-ed",
        "ed25519",
        "sign,verify",
        &["--reason", "CHG-1 key types"],
    ))?;
    assert!(
        !o.status.success(),
        "an ed25519 key became active without a copy"
    );
    let err = stderr(&o);
    assert!(
        err.contains("cannot wrap ed25519 private keys")
            && err.contains("CKR_KEY_NOT_WRAPPABLE")
            && err.contains("NOT active"),
        "clear reason: {err}"
    );
    let v = json(&env.ok(&["key", "show", "b-ed", "--json"])?)?;
    assert_eq!(v["versions"][0]["state"], "pending", "{v}");
    let o = env.run(&["backup", "sync"])?;
    assert!(
        stdout(&o).contains("b-ed") || stderr(&o).contains("b-ed"),
        "sync reports the key it cannot copy: {}{}",
        stdout(&o),
        stderr(&o)
    );
    env.ok(&[
        "--reason",
        "CHG-1 cannot be backed up",
        "key",
        "abandon",
        "b-ed",
    ])?;

    for (name, ..) in BACKED_UP {
        let v = json(&env.ok(&["key", "show", name, "--json"])?)?;
        let last = v["versions"]
            .as_array()
            .and_then(|a| a.last())
            .ok_or("no versions")?;
        assert_eq!(last["state"], "active", "{name}: {last}");
        let copies = last["copies"].as_array().cloned().unwrap_or_default();
        assert_eq!(copies.len(), 1, "{name}: one copy: {last}");
        assert_eq!(copies[0]["token"], "backup");
        assert!(copies[0]["verified_at"].is_string(), "{name}: {last}");
    }

    // Both tokens: every private/secret object sensitive, only wrappable by a trusted key.
    for token in ["kms-primary", "kms-backup"] {
        let listing = env.list_objects(token)?;
        let access = access_of(&listing);
        for (name, ..) in BACKED_UP {
            let label = format!("kms:{name}:v1");
            let a = access
                .get(&label)
                .ok_or_else(|| format!("{token}: no private/secret object {label}: {listing}"))?;
            assert!(a.contains("sensitive"), "{token} {label}: {a}");
            assert!(
                !a.contains("never extractable") || !a.contains("extractable,"),
                "{a}"
            );
            // Generated sensitive on the primary; a copy was unwrapped, which PKCS#11 never
            // calls "always sensitive", but it is sensitive from its creation.
            // A secret-data value is put on the token by C_CreateObject (from its owner, or
            // from the token's RNG through kms), so PKCS#11 does not call it always sensitive.
            if token == "kms-primary" && !name.contains("secret") {
                assert!(a.contains("always sensitive"), "{token} {label}: {a}");
            }
        }
    }
    // No way to read a secret's value out in the clear.
    let o = env.pkcs11_tool(
        "kms-backup",
        &[
            "--read-object",
            "--type",
            "secrkey",
            "--label",
            "kms:b-hmac256:v1",
        ],
    )?;
    assert!(!o.status.success(), "read a secret value: {}", stdout(&o));
    // Extractable only under a CKA_TRUSTED key (CKA_WRAP_WITH_TRUSTED): a wrapping key the
    // user makes on the token cannot export them (pkcs11-tool 0.23 wraps secret keys only, so
    // the secret ones are tried).
    for token in ["kms-primary", "kms-backup"] {
        let o = env.pkcs11_tool(
            token,
            &[
                "--keygen",
                "--key-type",
                "AES:32",
                "--id",
                "ee01",
                "--label",
                "user-kek",
                "--usage-wrap",
            ],
        )?;
        assert!(o.status.success(), "user AES key: {}", stderr(&o));
        for (name, t, ..) in BACKED_UP {
            if !matches!(*t, "aes-128" | "hmac-sha256" | "hmac-sha384" | "des3") {
                continue;
            }
            let id = env.object_id(name)?;
            let out = env.path("wrapped.bin");
            let o = env.pkcs11_tool(
                token,
                &[
                    "--wrap",
                    "--mechanism",
                    "0x210A",
                    "--id",
                    "ee01",
                    "--application-id",
                    &id,
                    "--output-file",
                    path(&out)?,
                ],
            )?;
            assert_fails(&o, 1, &["CKR_KEY_NOT_WRAPPABLE"]);
        }
    }

    // The drill passes for every copy, each by its family's proof.
    let o = env.run(&["backup", "verify", "--json"])?;
    let r = json(&o)?;
    let results = r["results"].as_array().ok_or_else(|| format!("{r}"))?;
    for (name, t, ..) in BACKED_UP {
        let d = results
            .iter()
            .find(|d| d.to_string().contains(&format!("\"{name}\"")))
            .ok_or_else(|| format!("{name} not drilled: {r}"))?;
        assert_eq!(d["ok"], true, "{name} ({t}): {d}");
        let detail = d["detail"].as_str().unwrap_or_default();
        let want = match *t {
            "hmac-sha256" | "hmac-sha384" => "same MAC",
            "aes-128" => "decrypted",
            "des3" if *name == "b-des3" => "decrypted on the copy",
            "des3" => "decrypt the same random blocks",
            "secret-data" => "same HMAC over a challenge",
            _ => "signature made on the copy verified",
        };
        assert!(detail.contains(want), "{name}: {detail}");
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.ok(&["backup", "status"])?;
    assert!(stdout(&o).contains("b-des3-ro"), "{}", stdout(&o));

    // A secret's value is its owner's: kms never rotates it into a value of its own making,
    // not by hand and not when the scheduler finds it due (the report still shows it due).
    assert_fails(
        &env.run(&["--reason", "CHG-9", "key", "rotate", "b-secret"])?,
        4,
        &["its owner registers the new value"],
    );
    let o = env
        .kms()
        .env("KMS_TEST_CLOCK_OFFSET", "400d")
        .args(["schedule", "run"])
        .output()?;
    assert!(!stdout(&o).contains("b-secret v1"), "{}", stdout(&o));
    let v = json(&env.ok(&["key", "show", "b-secret", "--json"])?)?;
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(1), "{v}");
    Ok(())
}
