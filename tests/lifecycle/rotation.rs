//! Rotation through its windows, a zero window, and a compromised version.

use super::*;

#[test]
fn rotation_moves_keys_through_their_windows() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.ok(&create_args(
        "dek",
        "aes-256",
        "encrypt,decrypt",
        &["--rotate-every", "90d", "--reencrypt-window", "7d"],
    ))?;
    env.grant_user("dek")?;
    env.ok(&create_args(
        "sig",
        "ec-p384",
        "sign,verify",
        &["--rotate-every", "90d"],
    ))?;
    env.grant_user("sig")?;
    let v1_dek = env.object_id("dek")?;
    let secret = env.write("secret", b"quarterly numbers")?;
    let ct1 = env.path("ct1");
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct1)?,
    ])?;
    assert_eq!(header_version(&std::fs::read(&ct1)?), 1);
    let msg = env.write("msg", b"release")?;
    let sig1 = env.path("sig1");
    env.sign_file("sig", &msg, &sig1)?;

    // Due within 14 days at +80d, overdue at +91d.
    let status = |offset: &str| -> Res<String> {
        let r = json(&ok_at(&env, offset, &["report", "rotation", "--json"])?)?;
        Ok(r.as_array()
            .ok_or("report")?
            .iter()
            .find(|s| s["key"] == "dek")
            .and_then(|s| s["status"].as_str())
            .ok_or("no dek")?
            .to_owned())
    };
    assert_eq!(status("1d")?, "ok");
    assert_eq!(status("80d")?, "due");
    assert_eq!(status("91d")?, "overdue");

    // The scheduler (as the service runs it) rotates what is due.
    let o = ok_at(&env, "91d", &["schedule", "run"])?;
    assert!(
        stdout(&o).contains("rotated    dek v1 -> v2"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("rotated    sig v1 -> v2"),
        "{}",
        stdout(&o)
    );
    assert_eq!(state_of(&env, "dek", 1)?, "deactivated");
    assert_eq!(state_of(&env, "dek", 2)?, "active");
    let v2 = versions(&env, "dek")?;
    assert_eq!(
        v2[1]["copies"].as_array().map(Vec::len),
        Some(1),
        "v2 backed up: {v2:?}"
    );
    assert_eq!(status("91d")?, "ok");

    // New data uses v2; v1 still decrypts and verifies; the grant (per key) covers v2.
    let ct2 = env.path("ct2");
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct2)?,
    ])?;
    assert_eq!(header_version(&std::fs::read(&ct2)?), 2);
    let plain = env.path("plain");
    ok_at(
        &env,
        "92d",
        &[
            "key",
            "decrypt",
            "dek",
            "--in",
            path(&ct1)?,
            "--out",
            path(&plain)?,
        ],
    )?;
    assert_eq!(std::fs::read(&plain)?, b"quarterly numbers");
    ok_at(
        &env,
        "92d",
        &[
            "key",
            "verify",
            "sig",
            "--in",
            path(&msg)?,
            "--sig",
            path(&sig1)?,
        ],
    )?;
    // Rewrap moves the old ciphertext to v2.
    let ct1b = env.path("ct1b");
    let o = at(
        &env,
        "92d",
        USER,
        &[
            "key",
            "rewrap",
            "dek",
            "--in",
            path(&ct1)?,
            "--out",
            path(&ct1b)?,
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(header_version(&std::fs::read(&ct1b)?), 2);

    // After the window, v1 is destroyed on every token (checked with pkcs11-tool).
    assert!(on_token(&env, "kms-primary", &v1_dek)? && on_token(&env, "kms-backup", &v1_dek)?);
    let o = ok_at(&env, "99d", &["schedule", "run"])?;
    assert!(stdout(&o).contains("destroyed  dek v1"), "{}", stdout(&o));
    assert_eq!(state_of(&env, "dek", 1)?, "destroyed");
    assert!(
        !on_token(&env, "kms-primary", &v1_dek)?,
        "v1 still on the primary"
    );
    assert!(
        !on_token(&env, "kms-backup", &v1_dek)?,
        "v1 still on the backup"
    );
    let o = at(
        &env,
        "99d",
        USER,
        &[
            "key",
            "decrypt",
            "dek",
            "--in",
            path(&ct1)?,
            "--out",
            path(&plain)?,
        ],
    )?;
    assert_fails(&o, 4, &["destroyed"]);
    ok_at(
        &env,
        "99d",
        &[
            "key",
            "decrypt",
            "dek",
            "--in",
            path(&ct1b)?,
            "--out",
            path(&plain)?,
        ],
    )?;
    assert_eq!(std::fs::read(&plain)?, b"quarterly numbers");
    // The public half outlives the private one: v1's signature still verifies.
    assert_eq!(state_of(&env, "sig", 1)?, "destroyed");
    ok_at(
        &env,
        "99d",
        &[
            "key",
            "verify",
            "sig",
            "--in",
            path(&msg)?,
            "--sig",
            path(&sig1)?,
        ],
    )?;

    // Every step is on the record.
    let rows = json(&env.ok(&["audit", "list", "--key", "dek", "--json"])?)?;
    let actions: Vec<&str> = rows
        .as_array()
        .ok_or("rows")?
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in [
        "key.rotate-intent",
        "key.rotate-switch",
        "key.rotate",
        "key.destroy-intent",
        "key.destroy",
        "key.rewrap",
    ] {
        assert!(actions.contains(&a), "no {a}: {actions:?}");
    }
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}

#[test]
fn a_zero_window_destroys_the_old_version_at_once_and_usage_periods_hold() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.ok(&create_args(
        "strict",
        "ec-p384",
        "sign,verify",
        &[
            "--reencrypt-window",
            "0",
            "--protect-for",
            "30d",
            "--process-for",
            "60d",
        ],
    ))?;
    env.grant_user("strict")?;
    let v1 = env.object_id("strict")?;
    let msg = env.write("msg", b"m")?;
    let sig = env.path("sig");
    // The originator period ends after 30 days: no new signatures, verification still works.
    let o = at(
        &env,
        "31d",
        USER,
        &[
            "key",
            "sign",
            "strict",
            "--in",
            path(&msg)?,
            "--out",
            path(&sig)?,
        ],
    )?;
    assert_fails(&o, 4, &["originator usage period"]);
    env.sign_file("strict", &msg, &sig)?;
    ok_at(
        &env,
        "31d",
        &[
            "key",
            "verify",
            "strict",
            "--in",
            path(&msg)?,
            "--sig",
            path(&sig)?,
        ],
    )?;
    let o = at(
        &env,
        "61d",
        USER,
        &[
            "key",
            "verify",
            "strict",
            "--in",
            path(&msg)?,
            "--sig",
            path(&sig)?,
        ],
    )?;
    assert!(!o.status.success(), "verified after the recipient period");
    // Strict rotation: the old version is gone from both tokens at once.
    let o = env.ok(&["--reason", "CHG-9", "key", "rotate", "strict"])?;
    assert!(stdout(&o).contains("destroyed at once"), "{}", stdout(&o));
    assert_eq!(state_of(&env, "strict", 1)?, "destroyed");
    assert!(!on_token(&env, "kms-primary", &v1)? && !on_token(&env, "kms-backup", &v1)?);
    env.sign_file("strict", &msg, &sig)?;
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}

#[test]
fn a_compromised_version_stops_at_once_and_its_users_are_reported() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.create("dek", "aes-256", "encrypt,decrypt")?;
    env.create("sig", "ec-p384", "sign,verify")?;
    let secret = env.write("secret", b"card numbers")?;
    let (ct1, ct2) = (env.path("ct1"), env.path("ct2"));
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct1)?,
    ])?;
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct2)?,
    ])?;
    let msg = env.write("msg", b"m")?;
    let sig1 = env.path("sig1");
    env.sign_file("sig", &msg, &sig1)?;

    let o = env.run(&["key", "compromise", "dek"])?;
    assert_fails(&o, 2, &["--reason must say what happened"]);
    let o = env.ok(&[
        "--reason",
        "INC-7 laptop with the backup stolen",
        "key",
        "compromise",
        "dek",
    ])?;
    let out = stdout(&o);
    assert!(
        out.contains("COMPROMISED") && out.contains("replaced by v2"),
        "{out}"
    );
    assert!(
        out.contains(USER) && out.contains("key.encrypt×2"),
        "report names the user: {out}"
    );
    assert_eq!(state_of(&env, "dek", 1)?, "compromised");
    // At once: no operation with v1, new data under v2.
    let plain = env.path("plain");
    let o = env.run(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct1)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_fails(&o, 4, &["compromised"]);
    let ct3 = env.path("ct3");
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct3)?,
    ])?;
    assert_eq!(header_version(&std::fs::read(&ct3)?), 2);
    // The break-glass: officer only, with a reason; the data moves to v2.
    let o = env.run_as(
        USER,
        &[
            "--reason",
            "x",
            "key",
            "rewrap",
            "dek",
            "--in",
            path(&ct1)?,
            "--out",
            path(&env.path("x"))?,
            "--break-glass",
        ],
    )?;
    assert_fails(&o, 4, &[]);
    let ct1b = env.path("ct1b");
    env.ok(&[
        "--reason",
        "INC-7 re-encrypt",
        "key",
        "rewrap",
        "dek",
        "--in",
        path(&ct1)?,
        "--out",
        path(&ct1b)?,
        "--break-glass",
    ])?;
    env.ok(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct1b)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_eq!(std::fs::read(&plain)?, b"card numbers");
    // Plaintext out of a compromised version: never by the officer who declared it.
    let read = [
        "--reason",
        "INC-7 read",
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct2)?,
        "--out",
        path(&plain)?,
        "--break-glass",
    ];
    assert_fails(&env.run(&read)?, 4, &["second security officer"]);
    env.ok(&[
        "principal",
        "add",
        "officer-2",
        "--role",
        "security-officer",
    ])?;
    let o = env.run_as("officer-2", &read)?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_fails(
        &env.run(&["--reason", "x", "key", "compromise", "kms-audit"])?,
        4,
        &["kms's own key"],
    );
    // Re-encryption progress: 1 rewrap of 2 ciphertexts made with v1.
    let r = json(&env.ok(&["key", "compromise", "dek", "--status", "--json"])?)?;
    assert_eq!(r[0]["rewraps_done"], 1, "{r}");
    assert_eq!(r[0]["protections_seen"], 2, "{r}");
    // A signature by a compromised version no longer verifies.
    env.ok(&["--reason", "INC-8", "key", "compromise", "sig"])?;
    let o = env.run(&[
        "key",
        "verify",
        "sig",
        "--in",
        path(&msg)?,
        "--sig",
        path(&sig1)?,
    ])?;
    assert!(
        !o.status.success(),
        "a compromised version's signature was accepted"
    );
    // Closing destroys the version everywhere.
    let v1 = versions(&env, "dek")?[0]["object_id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    // Closing destroys data not yet moved: a second officer, and --accept-loss for the rest.
    assert_fails(
        &env.run(&["key", "compromise", "dek", "--close"])?,
        4,
        &["second security officer"],
    );
    assert_fails(
        &env.run_as("officer-2", &["key", "compromise", "dek", "--close"])?,
        4,
        &["1 of 2 protections"],
    );
    let o = env.run_as(
        "officer-2",
        &[
            "--reason",
            "INC-7: ct2 re-created from source",
            "key",
            "compromise",
            "dek",
            "--close",
            "--accept-loss",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state_of(&env, "dek", 1)?, "destroyed-compromised");
    assert!(!on_token(&env, "kms-primary", &v1)? && !on_token(&env, "kms-backup", &v1)?);
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}
