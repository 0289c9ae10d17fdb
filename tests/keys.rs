//! End-to-end behaviour of the officer CLI against real SoftHSM2 tokens.

use common::*;
use kms_testkit as common;

#[test]
fn ec_p384_signature_verifies_with_openssl_and_kms() -> TestResult {
    let env = Env::new()?;
    env.create("release-signing", "ec-p384", "sign,verify")?;
    let msg = env.write("msg.txt", b"release 1.2.3 artefact digest list\n")?;
    let sig = env.path("msg.sig");
    let pem = env.path("pub.pem");
    env.sign_file("release-signing", &msg, &sig)?;
    env.public_pem("release-signing", &pem)?;

    let o = openssl(&["pkey", "-pubin", "-in", path(&pem)?, "-noout", "-text"])?;
    assert!(o.status.success(), "openssl pkey reads the PEM");
    assert!(stdout(&o).contains("384 bit"), "{}", stdout(&o));

    let o = openssl_dgst_verify(&["-sha384"], &pem, &sig, &msg)?;
    assert!(
        stdout(&o).contains("Verified OK"),
        "openssl: {}",
        stderr(&o)
    );

    let o = env.ok(&[
        "key",
        "verify",
        "release-signing",
        "--in",
        path(&msg)?,
        "--sig",
        path(&sig)?,
    ])?;
    assert!(stdout(&o).contains("signature valid"));

    // A changed message does not verify, and kms says so with exit 1.
    let other = env.write("other.txt", b"release 1.2.4\n")?;
    let o = env.run(&[
        "key",
        "verify",
        "release-signing",
        "--in",
        path(&other)?,
        "--sig",
        path(&sig)?,
    ])?;
    assert_fails(&o, 1, &["NOT valid"]);
    Ok(())
}

#[test]
fn rsa_pss_signature_verifies_with_openssl_and_oaep_round_trips() -> TestResult {
    let env = Env::new()?;
    env.create("doc-signing", "rsa-3072", "sign,verify,encrypt,decrypt")?;
    let msg = env.write("doc.txt", b"contract v7")?;
    let sig = env.path("doc.sig");
    let pem = env.path("doc.pem");
    env.sign_file("doc-signing", &msg, &sig)?;
    env.public_pem("doc-signing", &pem)?;
    let o = openssl_dgst_verify(
        &[
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
        ],
        &pem,
        &sig,
        &msg,
    )?;
    assert!(
        stdout(&o).contains("Verified OK"),
        "openssl: {}",
        stderr(&o)
    );
    env.ok(&[
        "key",
        "verify",
        "doc-signing",
        "--in",
        path(&msg)?,
        "--sig",
        path(&sig)?,
    ])?;

    // RSA-OAEP: encrypted in software to the stored public key, decrypted on the token.
    let secret = env.write("secret.bin", b"a 32-byte data key, for example")?;
    let ct = env.path("secret.kms");
    let back = env.path("secret.out");
    env.ok(&[
        "key",
        "encrypt",
        "doc-signing",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct)?,
    ])?;
    env.ok(&[
        "key",
        "decrypt",
        "doc-signing",
        "--in",
        path(&ct)?,
        "--out",
        path(&back)?,
    ])?;
    assert_eq!(std::fs::read(&back)?, b"a 32-byte data key, for example");
    Ok(())
}

#[test]
fn aes_gcm_round_trip_with_aad_and_versioned_format() -> TestResult {
    let env = Env::new()?;
    env.create("records-dek", "aes-256", "encrypt,decrypt")?;
    let plain = env.write("p.txt", b"customer record 42")?;
    let ct = env.path("p.kms");
    let back = env.path("p.out");
    env.ok(&[
        "key",
        "encrypt",
        "records-dek",
        "--in",
        path(&plain)?,
        "--out",
        path(&ct)?,
        "--aad",
        "tenant=42",
    ])?;
    let data = std::fs::read(&ct)?;
    assert_eq!(&data[..4], b"KMSE", "magic");
    assert_eq!(data[4], 1, "format version");
    assert_eq!(data[5], 1, "AES-256-GCM");
    assert_eq!(
        u32::from_be_bytes([data[22], data[23], data[24], data[25]]),
        1
    );
    assert_eq!(data.len(), 26 + 12 + 18 + 16, "header, IV, ciphertext, tag");
    assert!(!data.windows(8).any(|w| w == b"customer"), "no plaintext");

    env.ok(&[
        "key",
        "decrypt",
        "records-dek",
        "--in",
        path(&ct)?,
        "--out",
        path(&back)?,
        "--aad",
        "tenant=42",
    ])?;
    assert_eq!(std::fs::read(&back)?, b"customer record 42");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&back)?.permissions().mode() & 0o777,
        0o600
    );

    // Two encryptions of the same plaintext differ (fresh IV).
    let ct2 = env.path("p2.kms");
    env.ok(&[
        "key",
        "encrypt",
        "records-dek",
        "--in",
        path(&plain)?,
        "--out",
        path(&ct2)?,
        "--aad",
        "tenant=42",
    ])?;
    assert_ne!(std::fs::read(&ct2)?, data);
    Ok(())
}

#[test]
fn rsa_4096_and_all_inventory_fields_are_recorded() -> TestResult {
    let env = Env::new()?;
    env.ok(&[
        "key",
        "create",
        "archive-kek",
        "--type",
        "rsa-4096",
        "--owner",
        "records-team",
        "--classification",
        "restricted",
        "--usage",
        "encrypt,decrypt,wrap,unwrap",
        "--purpose",
        "archive key encryption",
        "--handling",
        "dual control; never exported",
        "--disposal",
        "destroy 30 days after contract end",
        "--rotate-every",
        "180d",
        "--expires",
        "2030-12-31",
        "--label",
        "env=prod",
        "--label",
        "site=bangalore",
        "--reason",
        "CHG-77",
    ])?;
    // Reading the public key is key use: the user needs a grant on the key.
    env.grant_user("archive-kek")?;
    let o = env.ok(&["key", "show", "archive-kek", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["name"], "archive-kek");
    assert_eq!(v["key_type"], "rsa-4096");
    assert_eq!(v["kind"], "asymmetric");
    assert_eq!(v["owner"], "records-team");
    assert_eq!(v["classification"], "restricted");
    assert_eq!(
        v["usage"],
        serde_json::json!(["encrypt", "decrypt", "wrap", "unwrap"])
    );
    assert_eq!(v["purpose"], "archive key encryption");
    assert_eq!(v["handling"], "dual control; never exported");
    assert_eq!(v["disposal"], "destroy 30 days after contract end");
    assert_eq!(v["rotate_every"], "180d");
    assert_eq!(
        v["expires"].as_str().map(|s| s.starts_with("2030")),
        Some(true)
    );
    assert_eq!(v["labels"]["site"], "bangalore");
    assert_eq!(v["created_by"], "test-officer");
    assert_eq!(v["versions"][0]["state"], "active");
    assert_eq!(v["versions"][0]["token_label"], "kms-primary");
    assert_eq!(
        v["versions"][0]["object_id"].as_str().map(str::len),
        Some(32)
    );

    let pem = env.path("kek.pem");
    env.public_pem("archive-kek", &pem)?;
    let o = openssl(&["pkey", "-pubin", "-in", path(&pem)?, "-noout", "-text"])?;
    assert!(stdout(&o).contains("4096 bit"), "{}", stdout(&o));
    Ok(())
}

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

#[test]
fn token_list_and_key_list_filters() -> TestResult {
    let env = Env::new()?;
    let o = env.ok(&["token", "list", "--json", "--objects", "--login"])?;
    let tokens: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let tokens = tokens.as_array().ok_or("array")?;
    assert_eq!(tokens.len(), 2);
    for t in tokens {
        assert_eq!(t["logged_in"], true, "{t}");
        // The primary holds the integrity key pair (kms-integrity, made when the inventory is
        // first opened) and the audit key pair (kms-audit) from the first checkpoint on.
        let expected = if t["name"] == "primary" { 4 } else { 0 };
        assert_eq!(t["objects"], expected, "{t}");
        assert_eq!(t["model"], "SoftHSM v2");
        assert!(t["serial"].as_str().is_some_and(|s| !s.is_empty()));
    }
    env.create("a", "ec-p384", "sign,verify")?;
    env.ok(&[
        "key",
        "create",
        "b",
        "--type",
        "aes-256",
        "--owner",
        "web",
        "--classification",
        "public",
        "--usage",
        "encrypt,decrypt",
    ])?;
    let o = env.ok(&["token", "list", "--json", "--objects", "--login"])?;
    let tokens: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let primary = tokens
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "primary"))
        .ok_or("primary")?;
    assert_eq!(
        primary["objects"], 7,
        "EC pair + AES key + the audit key pair + the integrity key pair"
    );

    let names = |args: &[&str]| -> Res<Vec<String>> {
        let o = env.ok(args)?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        Ok(v.as_array()
            .ok_or("array")?
            .iter()
            .filter_map(|k| k["name"].as_str().map(str::to_owned))
            .collect())
    };
    assert_eq!(
        names(&["key", "list", "--json"])?,
        ["a", "b", "kms-audit", "kms-integrity"]
    );
    assert_eq!(names(&["key", "list", "--owner", "web", "--json"])?, ["b"]);
    assert_eq!(
        names(&["key", "list", "--classification", "confidential", "--json"])?,
        ["a"]
    );
    let o = env.ok(&["key", "list"])?;
    assert!(stdout(&o).contains("ROTATE-BY"));
    Ok(())
}

#[test]
fn reconcile_finds_orphans_and_missing_objects() -> TestResult {
    let env = Env::new()?;
    env.create("kept", "ec-p384", "sign,verify")?;
    env.create("lost", "aes-256", "encrypt,decrypt")?;
    let o = env.ok(&["reconcile", "--login"])?;
    assert!(stdout(&o).contains("agree"), "{}", stdout(&o));

    // An object made behind the KMS's back, and one of its objects destroyed behind its back.
    let out = env.pkcs11_tool(
        "kms-primary",
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "rogue",
            "--id",
            "0102",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let o = env.ok(&["key", "show", "lost", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let id = v["versions"][0]["object_id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    let out = env.pkcs11_tool(
        "kms-primary",
        &["--delete-object", "--type", "secrkey", "--id", &id],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    // A duplicate label on the token.
    let out = env.pkcs11_tool(
        "kms-primary",
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "rogue",
            "--id",
            "0304",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));

    let o = env.run(&["reconcile", "--json", "--login"])?;
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .ok_or("findings")?
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"orphan-object"), "{kinds:?}");
    assert!(kinds.contains(&"missing-object"), "{kinds:?}");
    assert!(kinds.contains(&"duplicate-label"), "{kinds:?}");
    let o = env.run(&["reconcile", "--login"])?;
    assert!(stdout(&o).contains("key 'lost' v1"), "{}", stdout(&o));
    Ok(())
}

#[test]
fn an_unfinished_creation_is_reported_and_can_be_abandoned() -> TestResult {
    let env = Env::new()?;
    env.create("half", "ec-p384", "sign,verify")?;
    let before = env.object_count("kms-primary")?;
    // The state a crash between "generated on the token" and "recorded as active" leaves behind.
    env.sql(
        "UPDATE key_versions SET state = 'pending'
         WHERE key_id = (SELECT id FROM keys WHERE name = 'half')",
    )?;
    env.retag()?;

    let m = env.write("m", b"x")?;
    let o = env.run(&["key", "sign", "half", "--in", path(&m)?])?;
    assert_fails(&o, 4, &["never finished", "kms key abandon half"]);
    let o = env.run(&["reconcile", "--login"])?;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("unfinished creation: key 'half' v1"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("IS on"), "{}", stdout(&o));

    env.ok(&["--reason", "INC-4 crash cleanup", "key", "abandon", "half"])?;
    assert_eq!(
        env.object_count("kms-primary")?,
        before - 2,
        "both halves destroyed"
    );
    env.ok(&["reconcile", "--login"])?;
    env.create("half", "ec-p384", "sign,verify")?; // the name is free again
    Ok(())
}

#[test]
fn abandon_refuses_a_finished_key() -> TestResult {
    let env = Env::new()?;
    env.create("done", "aes-256", "encrypt,decrypt")?;
    let o = env.run(&["key", "abandon", "done"])?;
    assert_fails(&o, 4, &["finished version"]);
    assert_eq!(
        env.object_count("kms-primary")?,
        5,
        "the AES key, the audit key pair and the integrity key pair"
    );
    Ok(())
}

#[test]
fn reconcile_flags_versions_no_config_entry_reaches() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    // Point the primary entry at the backup token: two entries, one token; k unchecked.
    let cfg = std::fs::read_to_string(env.config())?
        .replacen("label = \"kms-primary\"", "label = \"kms-backup\"", 1)
        .replacen("kms-primary.user-pin", "kms-backup.user-pin", 1);
    let moved = env.write("moved.toml", cfg.as_bytes())?;
    // Since issue 17 every row kms relies on is checked against the integrity key on the
    // primary; no config entry reaches that token any more, so kms refuses to act at all, and
    // says why (a configuration mismatch, exit 7) instead of reconciling an inventory it cannot
    // check.
    let o = env.kms_with_config(&moved).arg("reconcile").output()?;
    assert_fails(
        &o,
        7,
        &["configuration mismatch", "restore the token entry"],
    );
    // And using the key through the re-pointed entry is refused as a config mismatch.
    let m = env.write("m", b"x")?;
    let o = env
        .kms_as_with_config(USER, &moved)
        .args(["key", "sign", "k", "--in", path(&m)?])
        .output()?;
    assert_fails(&o, 7, &["configuration mismatch"]);
    Ok(())
}

#[test]
fn writing_to_a_device_leaves_the_device_in_place() -> TestResult {
    let env = Env::new()?;
    env.create("d", "ec-p384", "sign,verify")?;
    let m = env.write("m", b"x")?;
    env.ok(&["key", "sign", "d", "--in", path(&m)?, "--out", "/dev/null"])?;
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::metadata("/dev/null")?.file_type();
    assert!(
        t.is_char_device(),
        "/dev/null was replaced by a regular file"
    );
    Ok(())
}
