//! Bad PINs, modules, token labels, configuration fields, PIN files, a corrupt inventory and bad
//! create values.

use super::*;

// ---- 5-9. configuration, module, token, PIN --------------------------------------------------------

#[test]
fn wrong_pin_is_named_and_never_echoed() -> TestResult {
    const WRONG: &str = "000000";
    let env = Env::new()?;
    let before = snapshot(&env)?;
    let cfg = config_with(
        &env,
        "wrong-pin.toml",
        "tokens.primary",
        "user_pin",
        r#"user_pin = "env:WRONG_PIN""#,
    )?;
    let out = env
        .kms_with_config(&cfg)
        .env("WRONG_PIN", WRONG)
        .args(create_args("k", "ec-p384", "sign,verify", &[]))
        .output()?;
    assert_fails(&out, 5, &["wrong PIN for token 'primary'"]);
    assert!(
        !stderr(&out).contains(WRONG) && !stdout(&out).contains(WRONG),
        "the PIN was echoed: stdout {:?} stderr {:?}",
        stdout(&out),
        stderr(&out)
    );
    let audit = env.ok(&["audit", "list", "--json"])?;
    let rows: serde_json::Value = serde_json::from_slice(&audit.stdout)?;
    let rows = rows.as_array().ok_or("audit list --json is not an array")?;
    let failed: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["action"] == "key.create" && r["key_name"] == "k")
        .collect();
    assert_eq!(failed.len(), 1, "the failed login is audited: {rows:#?}");
    let detail = failed[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("wrong PIN") && !detail.contains(WRONG),
        "audit detail: {detail:?}"
    );
    assert_unchanged(&env, &before, "wrong PIN")?;
    Ok(())
}

#[test]
fn missing_module_names_the_path() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    let cfg = config_with(
        &env,
        "no-module.toml",
        "tokens.primary",
        "module",
        r#"module = "/nonexistent/libpkcs11.so""#,
    )?;
    let out = run_with(&env, &cfg, &create_args("k", "ec-p384", "sign,verify", &[]))?;
    assert!(!out.status.success(), "kms succeeded without its module");
    assert_fails(&out, 5, &["/nonexistent/libpkcs11.so"]);
    assert_unchanged(&env, &before, "missing module")?;
    Ok(())
}

#[test]
fn absent_token_label_lists_the_tokens_present() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    let cfg = config_with(
        &env,
        "no-token.toml",
        "tokens.primary",
        "label",
        r#"label = "no-such-token""#,
    )?;
    let out = run_with(&env, &cfg, &create_args("k", "ec-p384", "sign,verify", &[]))?;
    assert_fails(
        &out,
        5,
        &[
            "no token with label 'no-such-token'",
            "kms-primary",
            "kms-backup",
        ],
    );
    assert_unchanged(&env, &before, "absent token label")?;
    Ok(())
}

#[test]
fn unknown_config_field_is_named() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    let text = std::fs::read_to_string(env.config())?;
    let top = env.write(
        "colour-top.toml",
        format!("colour = \"blue\"\n{text}").as_bytes(),
    )?;
    let in_token = config_with(
        &env,
        "colour-token.toml",
        "tokens.primary",
        "sessions",
        "sessions = 4\ncolour = \"blue\"",
    )?;
    for cfg in [top, in_token] {
        let out = run_with(&env, &cfg, &create_args("k", "ec-p384", "sign,verify", &[]))?;
        assert_fails(&out, 7, &["colour"]);
    }
    assert_unchanged(&env, &before, "unknown config field")?;
    Ok(())
}

#[test]
fn literal_pin_in_config_is_refused() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    let cfg = config_with(
        &env,
        "literal-pin.toml",
        "tokens.primary",
        "user_pin",
        r#"user_pin = "1234""#,
    )?;
    let out = run_with(&env, &cfg, &create_args("k", "ec-p384", "sign,verify", &[]))?;
    assert_fails(
        &out,
        7,
        &["'primary'", "user_pin", "never written in the config"],
    );
    assert!(!stderr(&out).contains("1234"), "the literal PIN was echoed");
    assert_unchanged(&env, &before, "literal PIN")?;
    Ok(())
}

#[test]
fn pin_file_readable_by_others_is_refused() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    let pin_file = env.path("pins/kms-primary.user-pin");
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644))?;
    let out = env.run(&create_args("k", "ec-p384", "sign,verify", &[]))?;
    assert_fails(
        &out,
        7,
        &["'primary'", "kms-primary.user-pin", "644", "chmod 600"],
    );
    assert_unchanged(&env, &before, "PIN file 0644")?;
    Ok(())
}

// ---- 10. corrupt database -----------------------------------------------------------------------

#[test]
fn corrupt_inventory_is_reported_and_left_alone() -> TestResult {
    let env = Env::new()?;
    if env.sqlite_only("a corrupt inventory file") {
        return Ok(());
    }
    let before = snapshot(&env)?;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let bad_db = env.path("garbage.db");
    write_private(&bad_db, &garbage)?;
    let cfg = config_with(
        &env,
        "garbage.toml",
        "inventory",
        "path",
        &format!("path = {:?}", bad_db.to_string_lossy()),
    )?;
    for args in [
        create_args("k", "ec-p384", "sign,verify", &[]),
        vec!["key", "list", "--json"],
    ] {
        let out = run_with(&env, &cfg, &args)?;
        assert_fails(&out, 6, &["garbage.db", "not a usable KMS inventory"]);
    }
    assert_eq!(
        std::fs::read(&bad_db)?,
        garbage,
        "kms modified a file it could not read as an inventory"
    );
    assert_unchanged(&env, &before, "corrupt inventory")?;
    Ok(())
}

// ---- 11. bad command-line values ------------------------------------------------------------------

#[test]
fn bad_create_values_are_usage_errors() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    let cases: [(Vec<&str>, &[&str]); 6] = [
        (
            create_args("k", "des", "sign", &[]),
            &["des", "aes-256", "ec-p384", "rsa-3072", "rsa-4096"],
        ),
        (
            vec![
                "key",
                "create",
                "k",
                "--type",
                "ec-p384",
                "--owner",
                "team",
                "--classification",
                "secret",
                "--usage",
                "sign",
            ],
            &["secret", "confidential, restricted, public"],
        ),
        (
            create_args("k", "ec-p384", "sign", &["--expires", "2020-01-01"]),
            &["2020-01-01", "not in the future"],
        ),
        (
            create_args("k", "ec-p384", "sign", &["--expires", "31/12/2030"]),
            &["31/12/2030", "YYYY-MM-DD"],
        ),
        (
            create_args("k", "ec-p384", "sign", &["--rotate-every", "3y"]),
            &["3y", "h, d or w"],
        ),
        (
            create_args("bad name!", "ec-p384", "sign", &[]),
            &["invalid key name 'bad name!'"],
        ),
    ];
    for (args, needles) in cases {
        let out = env.run(&args)?;
        assert_fails(&out, 2, needles);
    }
    assert_unchanged(&env, &before, "bad create values")?;
    Ok(())
}
