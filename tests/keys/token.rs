//! Keys on the token are sensitive and usage-limited; no PIN or key material leaks; every command
//! touching a key is audited.

use super::*;

#[test]
fn keys_on_the_token_are_sensitive_wrappable_only_under_trusted_keys_and_usage_limited(
) -> TestResult {
    let env = Env::new()?;
    env.create("sig", "ec-p384", "sign,verify")?;
    env.create("dek", "aes-256", "encrypt,decrypt")?;
    let listing = env.list_objects("kms-primary")?;
    let blocks: Vec<&str> = listing.split("Object;").collect();
    let private = blocks
        .iter()
        .find(|b| b.contains("kms:sig:v1") && b.contains("sign"))
        .ok_or("EC private key not listed")?;
    // Backup-eligible: CKA_EXTRACTABLE with CKA_WRAP_WITH_TRUSTED (pkcs11-tool does not print
    // the latter; the wrap attempts below prove it).
    assert!(
        private.contains("sensitive, always sensitive, extractable"),
        "{private}"
    );
    assert!(
        !private.contains("decrypt"),
        "EC key must not be decrypt-capable: {private}"
    );
    let secret = listing
        .split("Secret Key Object")
        .nth(1)
        .ok_or("secret key not listed")?;
    assert!(secret.contains("sensitive"), "{secret}");
    assert!(
        !secret.contains("wrap"),
        "usage limited to encrypt,decrypt: {secret}"
    );

    // An untrusted wrapping key made by the user (as anyone with the PIN could) cannot wrap a
    // kms key: CKR_KEY_NOT_WRAPPABLE. A plain extractable key wraps fine under it (the control).
    let dek_id = env.object_id("dek")?;
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "attacker-kek",
            "--id",
            "0badc0de",
            "--usage-wrap",
            "--extractable",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "plain",
            "--id",
            "0badc0df",
            "--extractable",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = env.path("wrapped.bin");
    let wrap = |id: &str| {
        env.pkcs11_tool(
            "kms-primary",
            &[
                "--wrap",
                "--id",
                "0badc0de",
                "--application-id",
                id,
                "--mechanism",
                "AES-KEY-WRAP",
                "-o",
                path(&out)?,
            ],
        )
    };
    let o = wrap(&dek_id)?;
    assert!(
        !o.status.success(),
        "a kms key was wrapped under an untrusted key"
    );
    assert!(
        stderr(&o).contains("CKR_KEY_NOT_WRAPPABLE"),
        "{}",
        stderr(&o)
    );
    let o = wrap("0badc0df")?;
    assert!(o.status.success(), "control wrap failed: {}", stderr(&o));
    Ok(())
}

#[test]
fn no_pin_and_no_key_material_reach_sqlite_or_output() -> TestResult {
    let env = Env::new()?;
    env.create("s", "ec-p384", "sign,verify")?;
    env.create("d", "aes-256", "encrypt,decrypt")?;
    let m = env.write("m", b"x")?;
    env.ok(&[
        "key",
        "sign",
        "s",
        "--in",
        path(&m)?,
        "--out",
        path(&env.path("m.sig"))?,
    ])?;
    let mut texts = Vec::new();
    for args in [
        &["token", "list", "--json"][..],
        &["key", "list", "--json"],
        &["key", "show", "s", "--json"],
        &["audit", "list", "--json"],
    ] {
        let o = env.ok(args)?;
        texts.push(stdout(&o) + &stderr(&o));
    }
    // Everything the inventory stores: the SQLite file, or a dump of the PostgreSQL database.
    let db = match &env.pg {
        None => std::fs::read(env.db())?,
        Some(_) => env.sql_dump()?,
    };
    for label in ["kms-primary", "kms-backup"] {
        let pin = env.user_pin(label)?;
        assert!(pin.len() >= 8);
        assert!(
            !db.windows(pin.len()).any(|w| w == pin.as_bytes()),
            "PIN of {label} found in the SQLite file"
        );
        for t in &texts {
            assert!(!t.contains(&pin), "PIN of {label} printed");
        }
    }
    if env.pg.is_none() {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(env.db())?.permissions().mode() & 0o777,
            0o600
        );
    }
    Ok(())
}

#[test]
fn every_command_touching_a_key_is_audited() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    let m = env.write("m", b"hello")?;
    let s = env.path("m.sig");
    let o = env.run_as(
        USER,
        &[
            "--reason",
            "INC-9 release",
            "key",
            "sign",
            "k",
            "--in",
            path(&m)?,
            "--out",
            path(&s)?,
        ],
    )?;
    assert_eq!(o.status.code(), Some(0), "sign: {}", stderr(&o));
    env.ok(&["key", "verify", "k", "--in", path(&m)?, "--sig", path(&s)?])?;
    env.ok(&["key", "public", "k"])?;
    let o = env.ok(&["audit", "list", "--key", "k", "--json"])?;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let rows = rows.as_array().ok_or("array")?;
    let actions: Vec<&str> = rows.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "key.create-intent",
            "key.create",
            "grant.break-glass",
            "key.sign",
            "key.verify",
            "key.public"
        ]
    );
    // Administration by the officer; key use by the user the fixture granted it to.
    let actors: Vec<&str> = rows.iter().filter_map(|r| r["actor"].as_str()).collect();
    assert_eq!(
        actors,
        [OFFICER, OFFICER, OFFICER, USER, USER, USER],
        "{rows:#?}"
    );
    for r in rows {
        assert_eq!(r["outcome"], "ok");
        assert!(r["host"].as_str().is_some_and(|h| !h.is_empty()));
        assert!(r["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    // The intent is on record before the token is touched, then the creation itself.
    for row in &rows[..2] {
        assert_eq!(row["reason"], "CHG-1 test setup");
        assert_eq!(row["key_version"], 1);
        assert!(row["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cka_id=")));
    }
    assert_eq!(rows[2]["reason"], "test fixture");
    let reason = rows[3]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("INC-9 release; grant g-") && reason.contains("ticket TEST-1"),
        "the caller's reason, then the grant used: {reason}"
    );
    Ok(())
}
