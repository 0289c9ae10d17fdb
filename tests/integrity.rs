//! Inventory rows that prove themselves (issue 17): each edit an outside attacker made to the
//! inventory file — and that kms honoured before — is refused at use and named by
//! `kms inventory verify`. Real SoftHSM2 tokens, the real `kms` binary, and `rusqlite` only to
//! play the attacker with write access to the SQLite file.

use kms_testkit as common;

use common::*;

// `Env::create` makes the key and a break-glass grant of it to `test-user`.

/// `kms inventory verify` fails (exit 1), names each `needles` row and says TAMPERED.
fn verify_tampered(env: &Env, needles: &[&str]) -> TestResult {
    let out = verify_names(env, needles)?;
    assert!(out.contains("TAMPERED"), "{out}");
    Ok(())
}

fn verify_clean(env: &Env) -> TestResult {
    let o = env.run(&["inventory", "verify"])?;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("every row carries a valid integrity tag"));
    Ok(())
}

#[test]
fn a_break_glass_grant_repointed_at_the_audit_key_signs_nothing() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    assert!(sign_as_user(&env, "k")?.status.success());
    env.ok(&["audit", "checkpoint"])?; // makes kms-audit
    verify_clean(&env)?;
    let gid = grant_id(&env, "k")?;
    env.sql(&format!(
        "UPDATE grants SET key_id = (SELECT id FROM keys WHERE name = 'kms-audit') WHERE id = '{gid}'"
    ))?;
    let o = sign_as_user(&env, "kms-audit")?;
    assert_fails(&o, 4, &["was not made by kms", &gid]);
    verify_tampered(&env, &["grants", &gid])?;
    // The refusal is on the record, with its code.
    let o = env.ok(&["audit", "list", "--json"])?;
    assert!(stdout(&o).contains("inventory-tampered"), "{}", stdout(&o));
    Ok(())
}

#[test]
fn a_revocation_cleared_behind_kms_is_refused() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    let gid = grant_id(&env, "k")?;
    env.ok(&["--reason", "leaver", "grant", "revoke", &gid])?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &[]);
    env.sql(&format!(
        "UPDATE grants SET revoked_at = NULL, revoked_by = NULL WHERE id = '{gid}'"
    ))?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["was not made by kms"]);
    verify_tampered(&env, &[&gid])?;
    Ok(())
}

#[test]
fn a_review_deadline_moved_to_2099_is_refused() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    let gid = grant_id(&env, "k")?;
    env.sql(&format!(
        "UPDATE grants SET review_due = '2099-01-01T00:00:00Z' WHERE id = '{gid}'"
    ))?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["was not made by kms"]);
    verify_tampered(&env, &[&gid])?;
    Ok(())
}

#[test]
fn a_swapped_certificate_fingerprint_and_a_cleared_disable_are_refused() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    // Cleared `disabled_at`: the disabled principal stays refused.
    env.ok(&["--reason", "leaver", "principal", "disable", USER])?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["disabled"]);
    env.sql(&format!(
        "UPDATE principals SET disabled_at = NULL, disabled_by = NULL WHERE name = '{USER}'"
    ))?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["was not made by kms"]);
    verify_tampered(&env, &["principals", USER])?;

    // A certificate fingerprint swapped onto the officer's row: refused too.
    let env = Env::new()?;
    env.sql(&format!(
        "UPDATE principals SET cert_fingerprint = '{}' WHERE name = '{OFFICER}'",
        "ab".repeat(32)
    ))?;
    assert_fails(&env.run(&["key", "list"])?, 4, &["was not made by kms"]);
    Ok(())
}

#[test]
fn a_version_repointed_at_another_keys_object_is_refused() -> TestResult {
    let env = Env::new()?;
    env.create("a", "ec-p384", "sign,verify")?;
    env.create("b", "ec-p384", "sign,verify")?;
    assert!(sign_as_user(&env, "a")?.status.success());
    env.sql(
        "DROP INDEX key_versions_object;
         UPDATE key_versions SET object_id =
             (SELECT v.object_id FROM key_versions v JOIN keys k ON k.id = v.key_id WHERE k.name = 'b')
         WHERE key_id = (SELECT id FROM keys WHERE name = 'a');",
    )?;
    assert_fails(&sign_as_user(&env, "a")?, 4, &["was not made by kms"]);
    verify_tampered(&env, &["key_versions"])?;
    Ok(())
}

#[test]
fn a_forged_untagged_grant_and_an_edited_backup_pairing_are_refused() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.ok(&["--reason", "CHG-7 backup ceremony", "backup", "init"])?;
    verify_clean(&env)?;
    // A backup pairing's KEK re-pointed: copies are refused rather than made under it.
    env.sql("UPDATE backup_pairs SET kek_id = '00112233'")?;
    let o = env.run(&["--reason", "sync", "backup", "sync"])?;
    assert_fails(&o, 4, &["was not made by kms", "backup_pairs"]);
    verify_tampered(&env, &["backup_pairs"])?;

    // A grant row put in by hand (no tag at all).
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.sql(
        "INSERT INTO grants (id, principal, key_id, ops, not_before, not_after, ticket,
             justification, created_by, created_at, break_glass)
         SELECT 'g-forged000001', 'test-user', id, 'sign', '2020-01-01T00:00:00Z',
                '2099-01-01T00:00:00Z', 'X', 'x', 'nobody', '2020-01-01T00:00:00Z', 1
         FROM keys WHERE name = 'k'",
    )?;
    assert_fails(&sign_as_user(&env, "k")?, 4, &["was not made by kms"]);
    verify_tampered(&env, &["g-forged000001", "no integrity tag"])?;
    Ok(())
}

#[test]
fn a_legitimate_change_never_launders_a_tampered_row() -> TestResult {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    let gid = grant_id(&env, "k")?;
    env.sql(&format!(
        "UPDATE grants SET ops = 'sign,verify,encrypt' WHERE id = '{gid}'"
    ))?;
    // Revoking the edited grant must not re-tag it as it now reads.
    let o = env.run(&["--reason", "cleanup", "grant", "revoke", &gid])?;
    assert_fails(&o, 4, &["was not made by kms"]);
    verify_tampered(&env, &[&gid])?;
    Ok(())
}

#[test]
fn an_object_swapped_on_the_token_is_refused_and_named_by_reconcile() -> TestResult {
    let env = Env::new()?;
    env.create("a", "ec-p384", "sign,verify")?;
    assert!(sign_as_user(&env, "a")?.status.success());
    // Behind kms's back, with the user PIN: a's key pair replaced by another under the same
    // CKA_ID and label. The inventory is untouched, so every tag still holds.
    let id = env.object_id("a")?;
    for t in ["privkey", "pubkey"] {
        let o = env.pkcs11_tool(
            "kms-primary",
            &["--delete-object", "--type", t, "--id", &id],
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--keypairgen",
            "--key-type",
            "EC:secp384r1",
            "--id",
            &id,
            "--label",
            "kms:a:v1",
            "--usage-sign",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sign_as_user(&env, "a")?;
    assert_fails(&o, 5, &["not the key the inventory recorded", "public key"]);
    let o = env.run(&["reconcile", "--login"])?;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("wrong object: key 'a' v1"),
        "{}",
        stdout(&o)
    );
    Ok(())
}
