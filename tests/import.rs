//! Bringing keys in (issue 14): key material wrapped with openssl to kms's import key is
//! unwrapped on the token (never in kms), and then behaves exactly as what openssl knows of it:
//! an HMAC key from a known value gives `openssl mac`'s tag, a 3DES key decrypts `openssl enc`
//! output and migrates it to AES-GCM, EC and RSA private keys sign what openssl verifies. Blobs
//! for another import key, of the wrong length or type, are refused and leave nothing behind.

use common::*;
use kms_testkit as common;

const TOKEN: &str = "kms-primary";

/// Wrap `material` for `kms key import` the way an importer does with openssl alone:
/// RSA-OAEP(SHA-1) of a fresh AES-256 key to the import key, then RFC 5649 key wrap.
fn wrap_for(
    env: &Env,
    import_pem: &std::path::Path,
    material: &[u8],
    tag: &str,
) -> Res<std::path::PathBuf> {
    let m = env.write(&format!("{tag}.material"), material)?;
    let aes = random_hex(32)?;
    let aes_bin = env.write(&format!("{tag}.aes"), &hex::decode(&aes)?)?;
    let wrapped_aes = env.path(&format!("{tag}.aes.wrapped"));
    let o = openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        path(import_pem)?,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha1",
        "-pkeyopt",
        "rsa_mgf1_md:sha1",
        "-in",
        path(&aes_bin)?,
        "-out",
        path(&wrapped_aes)?,
    ])?;
    assert!(o.status.success(), "openssl pkeyutl: {}", stderr(&o));
    let wrapped_key = env.path(&format!("{tag}.key.wrapped"));
    let o = openssl(&[
        "enc",
        "-id-aes256-wrap-pad",
        "-K",
        &aes,
        "-iv",
        "A65959A6",
        "-in",
        path(&m)?,
        "-out",
        path(&wrapped_key)?,
    ])?;
    assert!(o.status.success(), "openssl enc wrap: {}", stderr(&o));
    let mut blob = std::fs::read(&wrapped_aes)?;
    blob.extend(std::fs::read(&wrapped_key)?);
    std::fs::remove_file(&m)?;
    std::fs::remove_file(&aes_bin)?;
    env.write(&format!("{tag}.wrapped"), &blob)
}

fn random_hex(n: usize) -> Res<String> {
    let o = openssl(&["rand", "-hex", &n.to_string()])?;
    Ok(stdout(&o).trim().to_owned())
}

fn import_key(env: &Env) -> Res<std::path::PathBuf> {
    let pem = env.path("import-key.pem");
    env.ok(&["key", "import-key", "--out", path(&pem)?])?;
    Ok(pem)
}

fn import_args<'a>(
    name: &'a str,
    key_type: &'a str,
    usage: &'a str,
    wrapped: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = create_args(name, key_type, usage, &["--wrapped", wrapped]);
    args[1] = "import";
    args.extend_from_slice(extra);
    args
}

#[test]
fn hmac_key_imported_from_a_known_value_gives_the_openssl_mac() -> TestResult {
    let env = Env::new()?;
    let ik = import_key(&env)?;
    for (ty, bytes, digest) in [("hmac-sha256", 32, "SHA256"), ("hmac-sha384", 48, "SHA384")] {
        let key_hex = random_hex(bytes)?;
        let wrapped = wrap_for(&env, &ik, &hex::decode(&key_hex)?, ty)?;
        let name = format!("webhook-{ty}");
        env.ok(&import_args(
            &name,
            ty,
            "mac,verify-mac",
            path(&wrapped)?,
            &[],
        ))?;
        env.grant_ops(&name, "mac,verify-mac,read-inventory")?;
        let msg = env.write("msg.txt", b"{\"event\":\"payment.settled\",\"id\":42}")?;
        let tag = env.path("msg.tag");
        env.ok(&[
            "key",
            "mac",
            &name,
            "--in",
            path(&msg)?,
            "--out",
            path(&tag)?,
        ])?;
        let o = openssl(&[
            "mac",
            "-digest",
            digest,
            "-macopt",
            &format!("hexkey:{key_hex}"),
            "-in",
            path(&msg)?,
            "HMAC",
        ])?;
        assert!(o.status.success(), "openssl mac: {}", stderr(&o));
        assert_eq!(
            hex::encode(std::fs::read(&tag)?),
            stdout(&o).trim().to_lowercase(),
            "{ty}: the token's HMAC is openssl's"
        );
        let o = env.ok(&[
            "key",
            "verify-mac",
            &name,
            "--in",
            path(&msg)?,
            "--tag",
            path(&tag)?,
        ])?;
        assert!(stdout(&o).contains("MAC valid"));
        let other = env.write("other.txt", b"{\"event\":\"payment.settled\",\"id\":43}")?;
        let o = env.run(&[
            "key",
            "verify-mac",
            &name,
            "--in",
            path(&other)?,
            "--tag",
            path(&tag)?,
        ])?;
        assert_fails(&o, 1, &["MAC NOT valid"]);
        let shown = json(&env.ok(&["key", "show", &name, "--json"])?)?;
        assert_eq!(shown["origin"], "imported");
    }
    // The trail says what came in, and never the key.
    let o = env.ok(&["audit", "list", "--json"])?;
    let trail = stdout(&o);
    assert!(trail.contains("key.import"), "{trail}");
    Ok(())
}

#[test]
fn des3_key_decrypts_openssl_data_and_migrates_it_to_aes_gcm() -> TestResult {
    let env = Env::new()?;
    let ik = import_key(&env)?;
    let key_hex = random_hex(24)?;
    let iv = random_hex(8)?;
    let plain = b"PAN 4111111111111111 exp 12/29 -- legacy batch file".to_vec();
    let pt = env.write("batch.txt", &plain)?;
    let ct = env.path("batch.des3");
    let o = openssl(&[
        "enc",
        "-des-ede3-cbc",
        "-K",
        &key_hex,
        "-iv",
        &iv,
        "-in",
        path(&pt)?,
        "-out",
        path(&ct)?,
    ])?;
    assert!(o.status.success(), "openssl enc: {}", stderr(&o));
    let wrapped = wrap_for(&env, &ik, &hex::decode(&key_hex)?, "des3")?;
    // Legacy types need --legacy.
    let o = env.run(&import_args(
        "legacy-batch",
        "des3",
        "decrypt",
        path(&wrapped)?,
        &[],
    ))?;
    assert_fails(&o, 2, &["legacy", "--legacy"]);
    env.ok(&import_args(
        "legacy-batch",
        "des3",
        "decrypt",
        path(&wrapped)?,
        &["--legacy"],
    ))?;
    env.grant_user("legacy-batch")?;
    let out = env.path("batch.out");
    env.ok(&[
        "key",
        "decrypt",
        "legacy-batch",
        "--in",
        path(&ct)?,
        "--out",
        path(&out)?,
        "--iv",
        &iv,
    ])?;
    assert_eq!(
        std::fs::read(&out)?,
        plain,
        "kms decrypts what openssl encrypted"
    );
    // Decrypt only: no new 3DES data.
    let o = env.run(&[
        "key",
        "encrypt",
        "legacy-batch",
        "--in",
        path(&pt)?,
        "--out",
        path(&out)?,
    ])?;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("legacy"), "{}", stderr(&o));

    env.ok(&[
        "--reason",
        "CHG-9 retire 3DES",
        "key",
        "migrate",
        "legacy-batch",
        "--to",
        "aes-256",
    ])?;
    env.grant_user("legacy-batch.aes256")?;
    let moved = env.path("batch.gcm");
    let o = env.run_as(
        USER,
        &[
            "key",
            "rewrap",
            "legacy-batch",
            "--in",
            path(&ct)?,
            "--out",
            path(&moved)?,
            "--iv",
            &iv,
        ],
    )?;
    assert!(o.status.success(), "rewrap: {}", stderr(&o));
    let back = env.path("batch.back");
    env.ok(&[
        "key",
        "decrypt",
        "legacy-batch.aes256",
        "--in",
        path(&moved)?,
        "--out",
        path(&back)?,
    ])?;
    assert_eq!(
        std::fs::read(&back)?,
        plain,
        "the AES-GCM ciphertext holds the same data"
    );
    let moved_bytes = std::fs::read(&moved)?;
    assert_eq!(&moved_bytes[..4], b"KMSE");
    assert_eq!(moved_bytes[5], 1, "algorithm 1: AES-GCM");
    let o = env.ok(&["report", "legacy", "--json"])?;
    let report = json(&o)?;
    let row = report
        .as_array()
        .and_then(|a| a.iter().find(|r| r["key"] == "legacy-batch"))
        .ok_or("legacy key missing from the report")?;
    assert_eq!(row["status"], "migrating");
    assert_eq!(row["owner"], "payments-team");
    assert_eq!(row["migrated_to"], "legacy-batch.aes256");
    Ok(())
}

#[test]
fn ec_and_rsa_private_keys_import_and_sign_what_openssl_verifies() -> TestResult {
    let env = Env::new()?;
    let ik = import_key(&env)?;
    let msg = env.write("msg.txt", b"firmware 7.1 manifest")?;
    for (ty, genpkey, dgst) in [
        (
            "ec-p256",
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            vec!["-sha256"],
        ),
        (
            "ec-p384",
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            vec!["-sha384"],
        ),
        (
            "rsa-2048",
            vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            vec![
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
        ),
    ] {
        let priv_pem = env.path(&format!("{ty}.key.pem"));
        let mut args = vec!["genpkey"];
        args.extend(genpkey.iter().copied());
        args.extend(["-out", path(&priv_pem)?]);
        assert!(openssl(&args)?.status.success());
        let der = env.path(&format!("{ty}.p8"));
        let o = openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            path(&priv_pem)?,
            "-outform",
            "DER",
            "-out",
            path(&der)?,
        ])?;
        assert!(o.status.success(), "{}", stderr(&o));
        let pub_pem = env.path(&format!("{ty}.pub.pem"));
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
        let wrapped = wrap_for(&env, &ik, &std::fs::read(&der)?, ty)?;
        std::fs::remove_file(&der)?;
        std::fs::remove_file(&priv_pem)?;
        let name = format!("imported-{ty}");
        let extra: Vec<&str> = if ty.starts_with("ec") {
            vec!["--public", path(&pub_pem)?]
        } else {
            vec![]
        };
        env.ok(&import_args(
            &name,
            ty,
            "sign,verify",
            path(&wrapped)?,
            &extra,
        ))?;
        env.grant_user(&name)?;
        let sig = env.path(&format!("{ty}.sig"));
        env.sign_file(&name, &msg, &sig)?;
        let o = openssl_dgst_verify(&dgst, &pub_pem, &sig, &msg)?;
        assert!(stdout(&o).contains("Verified OK"), "{ty}: {}", stderr(&o));
    }
    Ok(())
}

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
