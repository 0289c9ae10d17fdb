//! Listing, reconcile, unfinished creations and abandoning them, and writing to a device.

use super::*;

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
