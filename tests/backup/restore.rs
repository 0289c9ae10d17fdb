//! Full restore after the primary token is lost, the sealed offline backup file, and the user PIN
//! that cannot unwrap a backup blob.

use super::*;

#[test]
fn full_primary_loss_then_restore_brings_every_key_back() -> TestResult {
    let env = Env::new()?;
    init(&env)?;
    create_all(&env)?;
    // Data made before the loss.
    let msg = env.write("msg", b"signed before the loss")?;
    let sig = env.path("msg.sig");
    env.sign_file("sig", &msg, &sig)?;
    let secret = env.write("secret", b"encrypted before the loss")?;
    let (ct_aes, ct_rsa) = (env.path("secret.aes"), env.path("secret.rsa"));
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct_aes)?,
    ])?;
    env.ok(&[
        "key",
        "encrypt",
        "rsa",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct_rsa)?,
    ])?;

    // The primary token is destroyed entirely; a fresh one (new serial) takes its label.
    let o = softhsm_util(&env, &["--delete-token", "--token", "kms-primary"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let so = std::fs::read_to_string(env.path("pins/kms-primary.so-pin"))?;
    let user = env.user_pin("kms-primary")?;
    let o = softhsm_util(
        &env,
        &[
            "--init-token",
            "--free",
            "--label",
            "kms-primary",
            "--so-pin",
            &so,
            "--pin",
            &user,
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&[
        "key",
        "sign",
        "sig",
        "--in",
        path(&msg)?,
        "--out",
        path(&env.path("x"))?,
    ])?;
    assert!(
        !o.status.success(),
        "the lost key cannot be used on the fresh token"
    );

    // Restore direction: the backup's SO makes a trusted KEK that travels to the new primary.
    env.ok(&[
        "--reason",
        "CHG-8 restore",
        "backup",
        "init",
        "--from",
        "backup",
        "--to",
        "primary",
    ])?;
    let o = env.run(&[
        "--reason",
        "CHG-8 restore",
        "backup",
        "restore",
        "--from",
        "backup",
        "--to",
        "primary",
    ])?;
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for key in ["sig", "dek", "kek", "rsa", "kms-audit"] {
        assert!(out.contains(&format!("restored  {key}@v1")), "{key}: {out}");
    }
    assert!(out.contains("0 failed"), "{out}");

    // Every key works again, proven on data made before the loss.
    let plain = env.path("plain");
    env.ok(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct_aes)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_eq!(std::fs::read(&plain)?, b"encrypted before the loss");
    env.ok(&[
        "key",
        "decrypt",
        "rsa",
        "--in",
        path(&ct_rsa)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_eq!(std::fs::read(&plain)?, b"encrypted before the loss");
    env.ok(&[
        "key",
        "verify",
        "sig",
        "--in",
        path(&msg)?,
        "--sig",
        path(&sig)?,
    ])?;
    let sig2 = env.path("msg2.sig");
    env.sign_file("sig", &msg, &sig2)?;
    let pem = env.path("sig.pem");
    env.public_pem("sig", &pem)?;
    let o = openssl_dgst_verify(&["-sha384"], &pem, &sig2, &msg)?;
    assert!(
        o.status.success(),
        "a signature by the restored key verifies with the old public key"
    );

    // Pair the new primary with the backup again: new keys are copied as before.
    init(&env)?;
    env.create("after", "ec-p384", "sign,verify")?;
    assert_eq!(copies(&env, "after")?.len(), 1);
    env.ok(&["backup", "verify"])?;
    let o = env.run(&["reconcile", "--login"])?;
    assert!(o.status.success(), "{}", stdout(&o));
    Ok(())
}

#[test]
fn offline_backup_file_is_sealed_and_restores_lost_objects() -> TestResult {
    let env = Env::new()?;
    init(&env)?;
    create_all(&env)?;
    let secret = env.write("secret", b"offline")?;
    let ct = env.path("secret.aes");
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct)?,
    ])?;
    let file = env.path("kms.backup");
    let o = env.ok(&["backup", "export", path(&file)?])?;
    assert!(
        stdout(&o).contains("wrapped under the backup KEK"),
        "{}",
        stdout(&o)
    );
    let bytes = std::fs::read(&file)?;
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file)?.permissions().mode() & 0o777,
        0o600
    );
    // Sealed: no inventory content in the clear (key names, owners, SQLite header).
    let text = String::from_utf8_lossy(&bytes);
    for needle in ["SQLite format", "kms:dek", "test-officer\",\"role", "CHG-1"] {
        assert!(
            !text.contains(needle),
            "'{needle}' readable in the backup file"
        );
    }

    // Any altered byte: refused, nothing changed.
    let mut bad = bytes.clone();
    let last = bad.len() - 10;
    bad[last] ^= 0x01;
    let bad_file = env.write("bad.backup", &bad)?;
    let before = env.object_count("kms-primary")?;
    let o = env.run(&["backup", "import", path(&bad_file)?])?;
    assert_fails(
        &o,
        2,
        &["not an intact kms backup file", "Nothing was changed"],
    );
    let mut bad_header = bytes.clone();
    if let Some(p) = bad_header.windows(4).position(|w| w == b"test") {
        bad_header[p] = b'T';
    }
    let bad_file = env.write("bad2.backup", &bad_header)?;
    let o = env.run(&["backup", "import", path(&bad_file)?])?;
    assert_fails(&o, 2, &["not an intact kms backup file"]);
    assert_eq!(env.object_count("kms-primary")?, before);

    // A key destroyed on the primary comes back from the file.
    let id = env.object_id("dek")?;
    let o = env.pkcs11_tool(
        "kms-primary",
        &["--delete-object", "--type", "secrkey", "--id", &id],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&["backup", "import", path(&file)?])?;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("restored  dek@v1"), "{}", stdout(&o));
    let plain = env.path("plain");
    env.ok(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_eq!(std::fs::read(&plain)?, b"offline");

    // The inventory itself: a fresh, empty inventory takes the file's.
    env.remove_inventory()?;
    env.ok(&["principal", "add", OFFICER, "--role", "security-officer"])?;
    let o = env.run(&["backup", "import", path(&file)?])?;
    assert_fails(&o, 2, &["--replace-inventory", "Nothing was changed"]);
    let o = env.ok(&["backup", "import", path(&file)?, "--replace-inventory"])?;
    assert!(stdout(&o).contains("inventory restored"), "{}", stdout(&o));
    let v = json(&env.ok(&["key", "list", "--json"])?)?;
    let names: Vec<&str> = v
        .as_array()
        .ok_or("keys")?
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    for key in ["sig", "dek", "kek", "rsa"] {
        assert!(
            names.contains(&key),
            "{key} back in the inventory: {names:?}"
        );
    }
    env.ok(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct)?,
        "--out",
        path(&plain)?,
    ])?;
    Ok(())
}

/// The attack an independent review found against the first version: with the user PIN alone,
/// wrap a key under the backup KEK, then unwrap the blob as a non-sensitive object and read it.
/// The KEKs now carry a CKA_UNWRAP_TEMPLATE (private, sensitive, wrap-with-trusted, no derive) and
/// are never extractable, so every such unwrap fails on both tokens, and a KEK cannot be wrapped.
#[test]
fn the_user_pin_cannot_unwrap_a_backup_blob_in_the_clear() -> TestResult {
    let env = Env::new()?;
    let o = init(&env)?;
    let kek = stdout(&o)
        .split("key-encryption key ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .ok_or("no KEK id in the ceremony output")?
        .to_owned();
    env.create("dek", "aes-256", "encrypt,decrypt")?;
    let dek = env.object_id("dek")?;
    let blob = env.path("blob.bin");
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--wrap",
            "--id",
            &kek,
            "--application-id",
            &dek,
            "--mechanism",
            "AES-KEY-WRAP",
            "-o",
            path(&blob)?,
        ],
    )?;
    assert!(
        o.status.success(),
        "the user session can wrap under the public KEK: {}",
        stderr(&o)
    );
    for token in ["kms-primary", "kms-backup"] {
        for extra in [&[][..], &["--sensitive"][..]] {
            let mut args = vec![
                "--unwrap",
                "--id",
                &kek,
                "--application-id",
                "0bad01",
                "--mechanism",
                "AES-KEY-WRAP",
                "-i",
                path(&blob)?,
                "--key-type",
                "AES:",
            ];
            args.extend_from_slice(extra);
            let o = env.pkcs11_tool(token, &args)?;
            assert!(
                !o.status.success(),
                "{token}: unwrapped a kms key outside the template"
            );
            assert!(
                stderr(&o).contains("CKR_TEMPLATE_INCONSISTENT"),
                "{token}: {}",
                stderr(&o)
            );
        }
    }
    // The KEK itself can be wrapped by nothing, itself included.
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--wrap",
            "--id",
            &kek,
            "--application-id",
            &kek,
            "--mechanism",
            "AES-KEY-WRAP",
            "-o",
            path(&blob)?,
        ],
    )?;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("CKR_KEY_UNEXTRACTABLE"),
        "{}",
        stderr(&o)
    );
    Ok(())
}
