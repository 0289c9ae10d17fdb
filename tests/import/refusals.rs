//! Foreign, wrong-length and mismatched keys are refused; adopting a token key; Ed25519.

use super::*;

#[test]
fn import_refuses_foreign_wrong_length_and_mismatched_keys_and_leaves_nothing() -> TestResult {
    let env = Env::new()?;
    let ik = import_key(&env)?;
    let before = env.object_count(TOKEN)?;

    // Wrapped to another RSA key, not kms's import key.
    let other = env.path("other.pem");
    assert!(openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        path(&other)?
    ])?
    .status
    .success());
    let other_pub = env.path("other.pub.pem");
    assert!(openssl(&[
        "pkey",
        "-in",
        path(&other)?,
        "-pubout",
        "-out",
        path(&other_pub)?
    ])?
    .status
    .success());
    let foreign = wrap_for(&env, &other_pub, &hex::decode(random_hex(32)?)?, "foreign")?;
    let o = env.run(&import_args(
        "foreign",
        "aes-256",
        "encrypt,decrypt",
        path(&foreign)?,
        &[],
    ))?;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("import key"), "{}", stderr(&o));

    // 16 bytes declared as aes-256.
    let short = wrap_for(&env, &ik, &hex::decode(random_hex(16)?)?, "short")?;
    let o = env.run(&import_args(
        "short",
        "aes-256",
        "encrypt,decrypt",
        path(&short)?,
        &[],
    ))?;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("16 bytes"), "{}", stderr(&o));
    assert!(stderr(&o).contains("aes-256 key is 32"), "{}", stderr(&o));

    // An EC private key declared as an HMAC key.
    let ec = env.path("ec.pem");
    assert!(openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path(&ec)?
    ])?
    .status
    .success());
    let ec_der = env.path("ec.p8");
    assert!(openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        path(&ec)?,
        "-outform",
        "DER",
        "-out",
        path(&ec_der)?
    ])?
    .status
    .success());
    let ec_wrapped = wrap_for(&env, &ik, &std::fs::read(&ec_der)?, "ec")?;
    let o = env.run(&import_args(
        "not-hmac",
        "hmac-sha256",
        "mac,verify-mac",
        path(&ec_wrapped)?,
        &[],
    ))?;
    assert!(!o.status.success(), "an EC key is not an HMAC key");

    // The right EC key with somebody else's public key.
    let ec2 = env.path("ec2.pem");
    assert!(openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path(&ec2)?
    ])?
    .status
    .success());
    let ec2_pub = env.path("ec2.pub.pem");
    assert!(openssl(&[
        "pkey",
        "-in",
        path(&ec2)?,
        "-pubout",
        "-out",
        path(&ec2_pub)?
    ])?
    .status
    .success());
    let o = env.run(&import_args(
        "mismatched",
        "ec-p256",
        "sign,verify",
        path(&ec_wrapped)?,
        &["--public", path(&ec2_pub)?],
    ))?;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));

    assert_eq!(
        env.object_count(TOKEN)?,
        before,
        "no refused import left an object"
    );
    let o = env.ok(&["key", "list", "--json"])?;
    let listed = stdout(&o);
    for name in ["foreign", "short", "not-hmac", "mismatched"] {
        assert!(
            !listed.contains(&format!("\"{name}\"")),
            "{name} is not in the inventory"
        );
    }
    Ok(())
}

#[test]
fn adopting_keeps_a_token_key_and_a_weak_one_needs_a_recorded_reason() -> TestResult {
    let env = Env::new()?;
    // A key pair another tool made on the key token, as an HSM admin would have.
    let o = env.pkcs11_tool(
        TOKEN,
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            "a1b2c3",
            "--label",
            "app-tls",
            "--usage-sign",
            "--sensitive",
        ],
    )?;
    assert!(o.status.success(), "pkcs11-tool: {}", stderr(&o));
    let uri = "pkcs11:token=kms-primary;id=%a1%b2%c3";
    let mut args = create_args("app-tls", "ec-p256", "sign,verify", &["--uri", uri]);
    args[1] = "adopt";
    // Declared as the wrong type: refused, nothing changed.
    let mut wrong = args.clone();
    wrong[4] = "ec-p384";
    let o = env.run(&wrong)?;
    assert_fails(&o, 2, &["ec-p256", "--type ec-p256"]);
    env.ok(&args)?;
    env.grant_user("app-tls")?;
    let shown = json(&env.ok(&["key", "show", "app-tls", "--json"])?)?;
    assert_eq!(shown["origin"], "adopted");
    assert!(shown.get("weak_reason").is_none(), "{shown}");
    assert_eq!(
        shown["versions"][0]["object_id"], "a1b2c3",
        "kept its CKA_ID"
    );
    let msg = env.write("msg.txt", b"hello from an adopted key")?;
    let sig = env.path("msg.sig");
    let pem = env.path("pub.pem");
    env.sign_file("app-tls", &msg, &sig)?;
    env.public_pem("app-tls", &pem)?;
    let o = openssl_dgst_verify(&["-sha256"], &pem, &sig, &msg)?;
    assert!(stdout(&o).contains("Verified OK"), "{}", stderr(&o));
    // The object now carries kms's label; adopting it twice is refused.
    assert!(env.list_objects(TOKEN)?.contains("kms:app-tls:v1"));
    let mut again = args.clone();
    again[2] = "app-tls-2";
    let o = env.run(&again)?;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already key 'app-tls'"),
        "{}",
        stderr(&o)
    );

    // A secret key made readable in the clear: refused unless accepted with a reason.
    let o = env.pkcs11_tool(
        TOKEN,
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--id",
            "d4e5",
            "--label",
            "old-aes",
            "--extractable",
        ],
    )?;
    assert!(o.status.success(), "pkcs11-tool: {}", stderr(&o));
    let before = env.object_count(TOKEN)?;
    let mut weak = create_args(
        "old-aes",
        "aes-256",
        "encrypt,decrypt",
        &["--uri", "pkcs11:token=kms-primary;object=old-aes"],
    );
    weak[1] = "adopt";
    let o = env.run(&weak)?;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not sensitive"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--accept-weak"), "{}", stderr(&o));
    assert_eq!(
        env.object_count(TOKEN)?,
        before,
        "a refused adoption leaves the object as it was"
    );
    assert!(env.list_objects(TOKEN)?.contains("old-aes"));
    weak.extend([
        "--accept-weak",
        "migration from the 2019 vault; replaced by CHG-77",
    ]);
    env.ok(&weak)?;
    let shown = json(&env.ok(&["key", "show", "old-aes", "--json"])?)?;
    let why = shown["weak_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("not sensitive") && why.contains("CHG-77"),
        "{shown}"
    );
    let o = env.ok(&["key", "show", "old-aes"])?;
    assert!(stdout(&o).contains("WEAK"), "{}", stdout(&o));
    Ok(())
}

#[test]
/// SoftHSM2 2.6.1 cannot unwrap an Ed25519 PKCS#8 (CKR_FUNCTION_FAILED; RSA and EC work): kms
/// says so and what to do instead, and keeps nothing. On a module that can, the key imports and
/// signs what openssl verifies.
fn ed25519_private_key_imports_or_the_token_says_it_cannot() -> TestResult {
    let env = Env::new()?;
    let ik = import_key(&env)?;
    let priv_pem = env.path("ed.key.pem");
    assert!(
        openssl(&["genpkey", "-algorithm", "ED25519", "-out", path(&priv_pem)?])?
            .status
            .success()
    );
    let der = env.path("ed.p8");
    assert!(openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        path(&priv_pem)?,
        "-outform",
        "DER",
        "-out",
        path(&der)?
    ])?
    .status
    .success());
    let pub_pem = env.path("ed.pub.pem");
    assert!(openssl(&[
        "pkey",
        "-in",
        path(&priv_pem)?,
        "-pubout",
        "-out",
        path(&pub_pem)?
    ])?
    .status
    .success());
    let wrapped = wrap_for(&env, &ik, &std::fs::read(&der)?, "ed")?;
    let before = env.object_count(TOKEN)?;
    let o = env.run(&import_args(
        "ed-signer",
        "ed25519",
        "sign,verify",
        path(&wrapped)?,
        &["--public", path(&pub_pem)?],
    ))?;
    if !o.status.success() {
        assert!(
            stderr(&o).contains("cannot unwrap Ed25519")
                && stderr(&o).contains("kms key create --type ed25519"),
            "{}",
            stderr(&o)
        );
        assert_eq!(env.object_count(TOKEN)?, before, "nothing kept");
        return Ok(());
    }
    env.grant_user("ed-signer")?;
    let msg = env.write("msg.txt", b"release notes 3.2")?;
    let sig = env.path("msg.sig");
    env.sign_file("ed-signer", &msg, &sig)?;
    let o = openssl_rawin_verify(&pub_pem, &sig, &msg)?;
    assert!(
        stdout(&o).contains("Signature Verified Successfully"),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
    Ok(())
}
