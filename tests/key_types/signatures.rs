//! Every signature scheme verifies with openssl (CLI and API); HMAC tags agree.

use super::*;

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
