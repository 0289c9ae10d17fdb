//! Refusals on keys: duplicates, unknown keys, and usages a key type or its policy does not allow.

use super::*;

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
