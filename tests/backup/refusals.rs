//! Keys whose copy fails or can never be made, kms's internal keys and useless AES usages.

use super::*;

#[test]
fn a_key_whose_copy_fails_is_not_active_and_says_why() -> TestResult {
    let env = Env::new()?;
    let o = init(&env)?;
    let kek = stdout(&o)
        .split("key-encryption key ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .ok_or("no KEK id in the ceremony output")?
        .to_owned();
    // Break the backup side: its copy of the KEK is gone.
    let o = env.pkcs11_tool(
        "kms-backup",
        &["--delete-object", "--type", "secrkey", "--id", &kek],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));

    let o = env.run(&create_args("fragile", "ec-p384", "sign,verify", &[]))?;
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("NOT active") && err.contains("backup copy failed"),
        "{err}"
    );
    assert!(err.contains("kms backup sync"), "says what to do: {err}");
    let v = json(&env.ok(&["key", "show", "fragile", "--json"])?)?;
    assert_eq!(v["versions"][0]["state"], "pending");
    assert!(
        v["versions"][0]["pending_reason"]
            .as_str()
            .is_some_and(|r| r.contains("backup copy failed")),
        "{v}"
    );
    // Not usable: nothing can even be granted on it.
    let o = env.grant_user("fragile");
    assert!(
        o.as_ref()
            .is_err_and(|e| e.to_string().contains("no active version")),
        "{o:?}"
    );

    // A new ceremony repairs the pairing; sync copies the key and activates it.
    env.ok(&["--reason", "CHG-7 backup ceremony", "backup", "init"])?;
    let o = env.ok(&["backup", "sync"])?;
    assert!(
        stdout(&o).contains("activated  fragile@v1"),
        "{}",
        stdout(&o)
    );
    env.grant_user("fragile")?;
    let m = env.write("m", b"hello")?;
    env.ok(&[
        "key",
        "sign",
        "fragile",
        "--in",
        path(&m)?,
        "--out",
        path(&env.path("m.sig"))?,
    ])?;
    Ok(())
}

#[test]
fn kms_internal_keys_and_useless_aes_usages_are_refused_clearly() -> TestResult {
    let env = Env::new()?;
    init(&env)?;
    let o = env.run(&create_args(
        "kms-backup-seal",
        "aes-256",
        "encrypt,decrypt",
        &[],
    ))?;
    assert_fails(&o, 2, &["a key kms makes for itself"]);
    let o = env.run(&create_args("dec-only", "aes-256", "decrypt", &[]))?;
    assert_fails(
        &o,
        2,
        &[
            "could never protect anything",
            "include encrypt, or both wrap and unwrap",
        ],
    );
    // An encrypt-only key is fine: its copy is proven by identical ciphertexts.
    env.create("enc-only", "aes-256", "encrypt")?;
    let o = env.ok(&["backup", "verify", "enc-only"])?;
    assert!(
        stdout(&o).contains("encrypt to the same ciphertext"),
        "{}",
        stdout(&o)
    );
    // The seal key (made by the first export) is never granted.
    env.ok(&["backup", "export", path(&env.path("f.backup"))?])?;
    let until = (time::OffsetDateTime::now_utc().date() + time::Duration::days(5)).to_string();
    let o = env.run(&[
        "--reason",
        "r",
        "grant",
        "add",
        USER,
        "kms-backup-seal",
        "--ops",
        "decrypt",
        "--until",
        &until,
        "--ticket",
        "T-1",
        "--justification",
        "j",
    ])?;
    assert_fails(&o, 4, &["used by kms itself and is never granted"]);
    Ok(())
}

/// Issue 23: a version whose token says it can never be wrapped — an adopted key that is not
/// extractable, an Ed25519 key SoftHSM2 cannot wrap — is recorded once (with an audit record),
/// shown by `backup status`, and fails neither `backup sync` nor `backup verify`. The record is
/// memory, not permission: a forged one for a key that can be copied does not stop its copy.
#[test]
fn a_key_that_can_never_be_copied_is_recorded_once_and_fails_no_sync() -> TestResult {
    let env = Env::new()?;
    // Made before the ceremony, so it has no copy yet; a forged "never copyable" row for it
    // must not keep `backup sync` from copying it.
    env.create("plain", "aes-256", "encrypt,decrypt")?;
    let key_id = env.sql_text("SELECT id FROM keys WHERE name = 'plain'")?;
    let object_id = env.sql_text(&format!(
        "SELECT object_id FROM key_versions WHERE key_id = '{key_id}'"
    ))?;
    env.sql(&format!(
        "INSERT INTO never_copyable (key_id, version, token_serial, object_id, code, reason, recorded_at)
         VALUES ('{key_id}', 1, 'x', '{object_id}', 'not-extractable', 'forged', '2024-01-01T00:00:00Z')"
    ))?;
    init(&env)?;
    assert_eq!(
        copies(&env, "plain")?.len(),
        1,
        "the forged row skipped a copy"
    );
    assert_eq!(
        env.sql_text(&format!(
            "SELECT COUNT(*) FROM never_copyable WHERE key_id = '{key_id}'"
        ))?,
        "0",
        "a copy made clears the row"
    );

    // A sensitive EC key another tool made on the key token, not extractable (SoftHSM2's
    // default without --extractable), adopted as it is.
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            "c0ffee",
            "--label",
            "hsm-only",
            "--usage-sign",
            "--sensitive",
        ],
    )?;
    assert!(o.status.success(), "pkcs11-tool: {}", stderr(&o));
    let mut args = create_args(
        "hsm-only",
        "ec-p256",
        "sign,verify",
        &["--uri", "pkcs11:token=kms-primary;id=%c0%ff%ee"],
    );
    args[1] = "adopt";
    env.ok(&args)?;

    // With a pairing, an Ed25519 key stays pending (copy before active; SoftHSM2 cannot wrap
    // it), and sync records why instead of failing.
    let o = env.run(&create_args("edge", "ed25519", "sign,verify", &[]))?;
    assert!(!o.status.success(), "ed25519 became active without a copy");

    for round in 0..2 {
        let o = env.run(&["backup", "sync"])?;
        assert!(
            o.status.success(),
            "round {round}: sync exits 0: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let out = stdout(&o);
        assert!(
            out.contains("never      hsm-only@v1") && out.contains("CKA_EXTRACTABLE=false"),
            "{out}"
        );
        assert!(
            out.contains("never      edge@v1") && out.contains("CKR_KEY_NOT_WRAPPABLE"),
            "{out}"
        );
        assert!(out.contains("0 failed"), "{out}");
    }
    // Recorded once each (adoption recorded the first; sync the Ed25519 one), not per sync.
    let rows = json(&env.ok(&["audit", "list", "--json", "--limit", "1000"])?)?;
    let recorded = |key: &str| {
        rows.as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| r["action"] == "backup.never-copyable" && r["key_name"] == key)
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(recorded("hsm-only"), 1, "{rows}");
    assert_eq!(recorded("edge"), 1, "{rows}");

    let status = stdout(&env.ok(&["backup", "status"])?);
    assert!(
        status.contains("NEVER COPYABLE (not-extractable)")
            && status.contains("NEVER COPYABLE (not-wrappable)"),
        "{status}"
    );
    let v = json(&env.ok(&["backup", "status", "--json"])?)?;
    let never = v["never_copyable"].as_array().ok_or("no never_copyable")?;
    let find = |key: &str| never.iter().find(|n| n["key"] == key).cloned();
    let adopted = find("hsm-only").ok_or(format!("hsm-only not listed: {v}"))?;
    assert_eq!(adopted["code"], "not-extractable");
    assert_eq!(adopted["object_id"], "c0ffee");
    assert!(adopted["reason"]
        .as_str()
        .is_some_and(|r| r.contains("CKA_EXTRACTABLE=false")));
    assert_eq!(
        find("edge").ok_or("edge not listed")?["code"],
        "not-wrappable"
    );
    assert!(find("plain").is_none(), "{v}");

    // The restore drill asks the token again and counts it as not applicable, not a failure.
    let o = env.run(&["backup", "verify"])?;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("n/a   hsm-only@v1: never copyable"),
        "{}",
        stdout(&o)
    );
    env.ok(&[
        "--reason",
        "CHG-1 cannot be backed up",
        "key",
        "abandon",
        "edge",
    ])?;
    Ok(())
}
