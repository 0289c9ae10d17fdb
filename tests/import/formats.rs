//! A 3DES key that decrypts openssl's data and migrates it; EC and RSA private keys that sign.

use super::*;

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
