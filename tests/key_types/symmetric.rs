//! Legacy 3DES (decrypt first, migrated to AES-GCM) and aes-128.

use super::*;

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
