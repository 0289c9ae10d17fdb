//! Decryption that fails (wrong AAD, tampered or foreign ciphertext, another key) writes no output.

use super::*;

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
