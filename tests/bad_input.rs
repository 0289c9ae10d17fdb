//! Bad input, refusals and failures: every one must exit with the right code, say clearly what was
//! wrong, and leave the tokens (counted independently by pkcs11-tool) and the inventory as they were.
//!
//! Exit codes (src/engine/error.rs, src/cli/mod.rs): 2 bad input / usage, 3 not found, 4 refused by
//! policy, 5 token, 6 inventory or audit, 7 configuration or PIN source.
//!
//! SoftHSM2 2.6.1 never locks a user PIN, so there is no locked-PIN test here.

use common::*;
use kms_testkit as common;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

// ---- helpers ---------------------------------------------------------------------------------

/// What a refused request must leave exactly as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    primary: usize,
    backup: usize,
    /// `kms key list --json`.
    keys: String,
}

fn snapshot(env: &Env) -> Res<Snapshot> {
    let keys = env.ok(&["key", "list", "--json"])?;
    Ok(Snapshot {
        primary: env.object_count("kms-primary")?,
        backup: env.object_count("kms-backup")?,
        keys: stdout(&keys),
    })
}

/// Fail unless both tokens hold the same objects count and the inventory lists the same keys.
fn assert_unchanged(env: &Env, before: &Snapshot, what: &str) -> TestResult {
    let after = snapshot(env)?;
    assert_eq!(
        after.primary, before.primary,
        "{what}: object count on kms-primary changed"
    );
    assert_eq!(
        after.backup, before.backup,
        "{what}: object count on kms-backup changed"
    );
    assert_eq!(after.keys, before.keys, "{what}: the key inventory changed");
    Ok(())
}

fn try_create(env: &Env, name: &str, key_type: &str, usage: &str, extra: &[&str]) -> Res<Output> {
    env.run(&create_args(name, key_type, usage, extra))
}

fn run_with(env: &Env, config: &Path, args: &[&str]) -> Res<Output> {
    Ok(env.kms_with_config(config).args(args).output()?)
}

/// A copy of `kms.toml` at `rel` whose `key = ...` line in `[section]` is replaced by `line`
/// (which may be several lines).
fn config_with(env: &Env, rel: &str, section: &str, key: &str, line: &str) -> Res<PathBuf> {
    let text = std::fs::read_to_string(env.config())?;
    let header = format!("[{section}]");
    let mut current = String::new();
    let mut out = String::new();
    let mut replaced = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            current = t.to_owned();
        }
        let is_key = t.split('=').next().map(str::trim) == Some(key) && t.contains('=');
        if current == header && is_key && !replaced {
            out.push_str(line);
            replaced = true;
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    if !replaced {
        return Err(format!("kms.toml has no `{key}` in {header}:\n{text}").into());
    }
    env.write(rel, out.as_bytes())
}

/// A file only its owner may read (what kms insists on for inventories).
fn write_private(path: &Path, data: &[u8]) -> TestResult {
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, data)?;
    f.sync_all()?;
    Ok(())
}

/// Files in the test directory whose name starts with `prefix` (finds `out` and `out.kms-tmp-*`).
fn files_starting_with(env: &Env, prefix: &str) -> Res<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(env.dir.path())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            found.push(name);
        }
    }
    Ok(found)
}

// ---- 1. duplicate name ---------------------------------------------------------------------------

#[test]
fn duplicate_key_name_is_refused_before_the_token_is_touched() -> TestResult {
    let env = Env::new()?;
    env.create("k1", "ec-p384", "sign,verify")?;
    let before = snapshot(&env)?;
    assert_eq!(
        before.primary, 6,
        "an ec-p384 key is a public + private object (plus the audit and integrity keys' two each)"
    );

    let out = try_create(&env, "k1", "ec-p384", "sign,verify", &[])?;
    assert_fails(&out, 2, &["'k1'", "already exists"]);
    assert_unchanged(&env, &before, "duplicate create")?;
    Ok(())
}

// ---- 2. unknown key ----------------------------------------------------------------------------

#[test]
fn unknown_key_is_not_found_for_show_sign_and_public() -> TestResult {
    let env = Env::new()?;
    env.create("real", "ec-p384", "sign,verify")?;
    let msg = env.write("msg", b"hello")?;
    let msg = msg.to_string_lossy().into_owned();
    let sig = env.path("sig").to_string_lossy().into_owned();
    let before = snapshot(&env)?;

    for args in [
        vec!["key", "show", "ghost"],
        vec!["key", "show", "ghost", "--json"],
        vec!["key", "public", "ghost"],
        vec!["key", "sign", "ghost", "--in", &msg, "--out", &sig],
    ] {
        let out = env.run(&args)?;
        assert_fails(&out, 3, &["no key named 'ghost'"]);
        assert!(stdout(&out).is_empty(), "{args:?} printed to stdout");
    }
    assert!(
        !env.path("sig").exists(),
        "sign of an unknown key wrote a file"
    );
    assert_unchanged(&env, &before, "unknown key")?;
    Ok(())
}

// ---- 3. operation not allowed --------------------------------------------------------------------

#[test]
fn ec_key_cannot_encrypt() -> TestResult {
    let env = Env::new()?;
    env.create("ec", "ec-p384", "sign,verify")?;
    let pt = env.write("pt", b"secret")?;
    let ct = env.path("ct");
    let before = snapshot(&env)?;

    let out = env.run(&[
        "key",
        "encrypt",
        "ec",
        "--in",
        &pt.to_string_lossy(),
        "--out",
        &ct.to_string_lossy(),
    ])?;
    assert_fails(&out, 4, &["'ec'", "cannot encrypt", "sign, verify"]);
    assert!(!ct.exists(), "refused encrypt wrote its output file");
    assert_unchanged(&env, &before, "ec encrypt")?;
    Ok(())
}

#[test]
fn usage_policy_refuses_verify_with_a_sign_only_key() -> TestResult {
    let env = Env::new()?;
    env.create("signer", "ec-p384", "sign")?;
    let msg = env.write("msg", b"hello")?;
    let sig = env.path("sig");
    env.ok(&[
        "key",
        "sign",
        "signer",
        "--in",
        &msg.to_string_lossy(),
        "--out",
        &sig.to_string_lossy(),
    ])?;
    let before = snapshot(&env)?;

    let out = env.run(&[
        "key",
        "verify",
        "signer",
        "--in",
        &msg.to_string_lossy(),
        "--sig",
        &sig.to_string_lossy(),
    ])?;
    assert_fails(&out, 4, &["'signer'", "verify", "acceptable usage"]);
    assert!(
        !stdout(&out).contains("valid"),
        "a refused verify must not print a verdict: {}",
        stdout(&out)
    );
    assert_unchanged(&env, &before, "verify with sign-only key")?;
    Ok(())
}

#[test]
fn aes_key_cannot_sign() -> TestResult {
    let env = Env::new()?;
    env.create("sym", "aes-256", "encrypt,decrypt")?;
    let msg = env.write("msg", b"hello")?;
    let sig = env.path("sig");
    let before = snapshot(&env)?;

    let out = env.run(&[
        "key",
        "sign",
        "sym",
        "--in",
        &msg.to_string_lossy(),
        "--out",
        &sig.to_string_lossy(),
    ])?;
    assert_fails(&out, 4, &["'sym'", "cannot sign"]);
    assert!(!sig.exists(), "refused sign wrote a signature file");
    assert_unchanged(&env, &before, "aes sign")?;
    Ok(())
}

// ---- 4. usage the type cannot do -----------------------------------------------------------------

#[test]
fn create_with_usage_the_type_cannot_perform_is_bad_input() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    let out = try_create(&env, "ec-enc", "ec-p384", "encrypt", &[])?;
    assert_fails(
        &out,
        2,
        &[
            "ec-p384",
            "cannot encrypt",
            "ec-p384 keys support: sign, verify",
        ],
    );
    assert_unchanged(&env, &before, "ec-p384 with usage encrypt")?;
    Ok(())
}

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

// ---- 12. decryption failures --------------------------------------------------------------------

/// An aes-256 key `a1` and `ct` = its encryption of a message under AAD "order-42".
fn aes_with_ciphertext(env: &Env) -> Res<PathBuf> {
    env.create("a1", "aes-256", "encrypt,decrypt")?;
    let pt = env.write("pt", b"the plaintext")?;
    let ct = env.path("ct");
    env.ok(&[
        "key",
        "encrypt",
        "a1",
        "--in",
        &pt.to_string_lossy(),
        "--out",
        &ct.to_string_lossy(),
        "--aad",
        "order-42",
    ])?;
    Ok(ct)
}

fn decrypt(env: &Env, key: &str, input: &Path, aad: &str) -> Res<Output> {
    env.run(&[
        "key",
        "decrypt",
        key,
        "--in",
        &input.to_string_lossy(),
        "--out",
        &env.path("out").to_string_lossy(),
        "--aad",
        aad,
    ])
}

fn assert_no_output_file(env: &Env, what: &str) -> TestResult {
    let left = files_starting_with(env, "out")?;
    assert!(
        left.is_empty(),
        "{what}: decrypt left output files {left:?}"
    );
    Ok(())
}

// SoftHSM2 2.6.1 reports an AES-GCM tag mismatch as CKR_GENERAL_ERROR; kms maps it (on the GCM
// decrypt path only) to this message and treats it as bad input (exit 2).
const NOT_VALID: &str = "the ciphertext or its authentication data is not valid";

#[test]
fn decrypt_with_wrong_aad_fails_without_output() -> TestResult {
    let env = Env::new()?;
    let ct = aes_with_ciphertext(&env)?;
    let before = snapshot(&env)?;
    let out = decrypt(&env, "a1", &ct, "order-43")?;
    assert!(
        !out.status.success(),
        "decrypt with the wrong AAD succeeded"
    );
    assert!(stdout(&out).is_empty(), "plaintext leaked to stdout");
    assert_no_output_file(&env, "wrong AAD")?;
    assert_unchanged(&env, &before, "wrong AAD")?;
    // The right AAD still works: the key itself is fine.
    let ok = decrypt(&env, "a1", &ct, "order-42")?;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(std::fs::read(env.path("out"))?, b"the plaintext");
    assert_fails(&out, 2, &[NOT_VALID]);
    Ok(())
}

#[test]
fn decrypt_of_tampered_ciphertext_fails_without_output() -> TestResult {
    let env = Env::new()?;
    let ct = aes_with_ciphertext(&env)?;
    let before = snapshot(&env)?;
    let mut data = std::fs::read(&ct)?;
    // Header is 38 bytes (magic, version, algorithm, key ID, key version, IV); flip a body byte.
    let i = 40;
    if data.len() <= i {
        return Err(format!("ciphertext only {} bytes", data.len()).into());
    }
    data[i] ^= 0x01;
    let tampered = env.write("tampered", &data)?;
    let out = decrypt(&env, "a1", &tampered, "order-42")?;
    assert!(
        !out.status.success(),
        "decrypt of a tampered ciphertext succeeded"
    );
    assert!(stdout(&out).is_empty(), "plaintext leaked to stdout");
    assert_no_output_file(&env, "tampered ciphertext")?;
    assert_unchanged(&env, &before, "tampered ciphertext")?;
    assert_fails(&out, 2, &[NOT_VALID]);
    Ok(())
}

#[test]
fn decrypt_of_a_non_kms_file_is_bad_input() -> TestResult {
    let env = Env::new()?;
    aes_with_ciphertext(&env)?;
    let before = snapshot(&env)?;
    let junk = env.write("junk", b"this is just some text, not a ciphertext at all\n")?;
    let out = decrypt(&env, "a1", &junk, "order-42")?;
    assert_fails(&out, 2, &["not a kms ciphertext"]);
    assert_no_output_file(&env, "non-kms file")?;
    assert_unchanged(&env, &before, "non-kms file")?;
    Ok(())
}

#[test]
fn decrypt_with_another_key_names_the_mismatch() -> TestResult {
    let env = Env::new()?;
    aes_with_ciphertext(&env)?;
    env.create("a2", "aes-256", "encrypt,decrypt")?;
    let pt = env.write("pt2", b"for a2")?;
    let ct2 = env.path("ct2");
    env.ok(&[
        "key",
        "encrypt",
        "a2",
        "--in",
        &pt.to_string_lossy(),
        "--out",
        &ct2.to_string_lossy(),
    ])?;
    let before = snapshot(&env)?;
    let out = decrypt(&env, "a1", &ct2, "")?;
    assert_fails(&out, 2, &["not made with key 'a1'"]);
    assert_no_output_file(&env, "other key")?;
    assert_unchanged(&env, &before, "other key's ciphertext")?;
    Ok(())
}

// ---- 13. refusals are audited -------------------------------------------------------------------

#[test]
fn a_refusal_is_audited_as_denied() -> TestResult {
    let env = Env::new()?;
    env.create("ec", "ec-p384", "sign,verify")?;
    let pt = env.write("pt", b"secret")?;
    // test-user holds a grant of every operation on `ec`, so the key's own policy refuses.
    let out = env.run_as(
        USER,
        &[
            "--reason",
            "CHG-13 probing policy",
            "key",
            "encrypt",
            "ec",
            "--in",
            &pt.to_string_lossy(),
            "--out",
            &env.path("ct").to_string_lossy(),
        ],
    )?;
    assert_fails(&out, 4, &["cannot encrypt"]);

    let audit = env.ok(&["audit", "list", "--key", "ec", "--json"])?;
    let rows: serde_json::Value = serde_json::from_slice(&audit.stdout)?;
    let rows = rows.as_array().ok_or("audit list --json is not an array")?;
    let denied: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["action"] == "key.encrypt" && r["outcome"] == "denied")
        .collect();
    assert_eq!(
        denied.len(),
        1,
        "expected one denied key.encrypt row in {rows:#?}"
    );
    let row = denied[0];
    assert_eq!(row["key_name"], "ec");
    assert_eq!(row["actor"], USER);
    // The caller's reason, then the grant that let the request reach the key's own policy.
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("CHG-13 probing policy; grant g-") && reason.contains("ticket TEST-1"),
        "{reason}"
    );
    let detail = row["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("cannot encrypt"),
        "detail says why: {detail:?}"
    );
    Ok(())
}

// ---- 14. no half-done state when recording fails ------------------------------------------------

#[test]
fn failed_activation_destroys_the_generated_key() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?; // also creates the inventory file
    env.refuse(
        "fail_activate",
        "BEFORE UPDATE OF state",
        "key_versions",
        None,
        "injected failure",
    )?;
    let out = try_create(&env, "half", "ec-p384", "sign,verify", &[])?;
    assert!(
        !out.status.success(),
        "create succeeded despite the injected failure"
    );
    assert_fails(&out, 6, &["injected failure"]);
    assert_unchanged(&env, &before, "failed activation")?;
    let show = env.run(&["key", "show", "half"])?;
    assert_fails(&show, 3, &["no key named 'half'"]);
    let rec = env.run(&["reconcile", "--login"])?;
    assert_eq!(
        rec.status.code(),
        Some(0),
        "reconcile should find nothing: {}{}",
        stdout(&rec),
        stderr(&rec)
    );
    assert_fails(&out, 6, &["key 'half' was not created", "destroyed"]);
    Ok(())
}

#[test]
fn failed_activation_and_cleanup_leaves_a_pending_version_reconcile_reports() -> TestResult {
    let env = Env::new()?;
    let before = snapshot(&env)?;
    env.refuse(
        "fail_activate",
        "BEFORE UPDATE OF state",
        "key_versions",
        None,
        "injected failure",
    )?;
    env.refuse(
        "fail_delete",
        "BEFORE DELETE",
        "key_versions",
        None,
        "injected",
    )?;
    let out = try_create(&env, "half", "ec-p384", "sign,verify", &[])?;
    assert_fails(&out, 6, &["'half'", "kms reconcile"]);
    assert_eq!(
        env.object_count("kms-primary")?,
        before.primary,
        "the generated objects were not destroyed"
    );
    assert_eq!(env.object_count("kms-backup")?, before.backup);

    let rec = env.run(&["reconcile", "--login"])?;
    assert_eq!(
        rec.status.code(),
        Some(1),
        "reconcile must flag the pending version: {}{}",
        stdout(&rec),
        stderr(&rec)
    );
    let report = stdout(&rec);
    assert!(
        report.contains("unfinished creation: key 'half' v1") && report.contains("pending"),
        "reconcile should report the unfinished creation; got: {report}"
    );
    assert!(
        report.contains("is not on the token"),
        "the object was destroyed, reconcile should say so; got: {report}"
    );
    Ok(())
}

// ---- 15. fail-closed audit ----------------------------------------------------------------------

#[test]
fn signature_is_withheld_when_its_audit_row_cannot_be_written() -> TestResult {
    let env = Env::new()?;
    env.create("signer", "ec-p384", "sign,verify")?;
    let msg = env.write("msg", b"pay 100 to bob")?;
    let before = snapshot(&env)?;
    env.refuse(
        "no_sign_audit",
        "BEFORE INSERT",
        "audit",
        Some("NEW.action = 'key.sign'"),
        "audit down",
    )?;
    let sig = env.path("sig");
    let out = env.run(&[
        "key",
        "sign",
        "signer",
        "--in",
        &msg.to_string_lossy(),
        "--out",
        &sig.to_string_lossy(),
    ])?;
    assert_fails(&out, 6, &["audit record could not be written"]);
    assert!(stdout(&out).is_empty(), "signature leaked to stdout");
    assert!(
        files_starting_with(&env, "sig")?.is_empty(),
        "a signature file exists although its audit row was not written"
    );
    // Without --out the signature would go to stdout: it must be withheld there too.
    let out = env.run(&["key", "sign", "signer", "--in", &msg.to_string_lossy()])?;
    assert_fails(&out, 6, &["audit record could not be written"]);
    assert!(out.stdout.is_empty(), "signature written to stdout");
    assert_unchanged(&env, &before, "unaudited sign")?;
    Ok(())
}
