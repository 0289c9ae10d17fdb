//! A token whose SoftHSM2 file was emptied (finding 5 of issue 17): SoftHSM2 rewrites
//! `<tokendir>/<uuid>/token.object` at every login, and a process killed during that write leaves
//! it empty — the token then vanishes. `kms token list` must not log in at all; a command that
//! needs the token names the damaged file and the restore command; `kms audit verify` still
//! verifies the checkpoints without the token. Real SoftHSM2 tokens, the real `kms` binary.

use common::*;
use kms_testkit as common;

use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

fn mtime(p: &PathBuf) -> Res<SystemTime> {
    Ok(std::fs::metadata(p)?.modified()?)
}

#[test]
fn token_list_logs_in_to_no_token() -> TestResult {
    let env = Env::new_on_store("file")?;
    env.create("k", "ec-p384", "sign,verify")?;
    let primary = token_file(&env, "kms-primary")?;
    let backup = token_file(&env, "kms-backup")?;
    let before = (mtime(&primary)?, mtime(&backup)?);
    // A login rewrites the token file (shown here first, so the check below means something).
    env.ok(&["token", "list", "--objects", "--login"])?;
    let after_login = (mtime(&primary)?, mtime(&backup)?);
    assert_ne!(
        before.1, after_login.1,
        "a login rewrites SoftHSM2's token file"
    );

    let o = env.ok(&["token", "list", "--json"])?;
    let after = (mtime(&primary)?, mtime(&backup)?);
    assert_eq!(after_login, after, "`kms token list` logged in to a token");
    let tokens = json(&o)?;
    let tokens = tokens.as_array().ok_or("array")?;
    assert_eq!(tokens.len(), 2);
    for t in tokens {
        assert!(t["serial"].as_str().is_some_and(|s| !s.is_empty()), "{t}");
        assert_eq!(t["logged_in"], false, "{t}");
        assert!(t["error"].is_null(), "{t}");
    }
    Ok(())
}

#[test]
fn emptied_primary_token_file_is_named_with_the_restore_command() -> TestResult {
    let env = Env::new_on_store("file")?;
    paired(&env)?;
    env.create("k", "ec-p384", "sign,verify")?;
    let file = token_file(&env, "kms-primary")?;
    std::fs::write(&file, b"")?;
    let shown = file.display().to_string();

    let o = env.run(&["token", "list"])?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        shown.as_str(),
        "is empty (0 bytes)",
        "kms backup init --from backup --to primary",
        "kms backup restore --from backup --to primary",
    ] {
        assert!(
            err.contains(needle),
            "token list should say {needle:?}: {err}"
        );
    }

    // A command that needs the primary: non-zero exit (not a panic), the file and the advice.
    let o = env.run(&create_args("k2", "ec-p384", "sign,verify", &[]))?;
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert_ne!(o.status.code(), Some(101), "panicked: {err}");
    assert!(err.contains(&shown), "{err}");
    assert!(
        err.contains("kms backup restore --from backup --to primary"),
        "{err}"
    );

    // The trail still verifies: the audit key's public half comes from its backup copy.
    let o = env.run(&["audit", "verify"])?;
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("audit trail intact"), "{out}");
    assert!(
        out.contains("note:") && out.contains("backup copy on token 'backup'"),
        "{out}"
    );
    let v = json(&env.ok(&["audit", "verify", "--json"])?)?;
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["valid_checkpoints"].as_u64().is_some_and(|n| n > 0),
        "{v}"
    );

    // The advice works as given: the damaged directory moved out, a fresh token with the same
    // label and PINs, the restore ceremony and restore; the key signs again, all agree.
    let mv = err
        .split("(`mv ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .ok_or("no mv command in the advice")?;
    let (from, to) = mv.split_once(' ').ok_or("mv FROM TO")?;
    std::fs::rename(from, to)?;
    let o = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", env.softhsm_conf())
        .args([
            "--init-token",
            "--free",
            "--label",
            "kms-primary",
            "--so-pin",
        ])
        .arg(std::fs::read_to_string(
            env.path("pins/kms-primary.so-pin"),
        )?)
        .arg("--pin")
        .arg(env.user_pin("kms-primary")?)
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    env.ok(&[
        "--reason",
        "INC-17 restore",
        "backup",
        "init",
        "--from",
        "backup",
        "--to",
        "primary",
    ])?;
    env.ok(&[
        "--reason",
        "INC-17 restore",
        "backup",
        "restore",
        "--from",
        "backup",
        "--to",
        "primary",
    ])?;
    let msg = env.write("msg", b"after the restore")?;
    env.ok(&[
        "key",
        "sign",
        "k",
        "--in",
        path(&msg)?,
        "--out",
        path(&env.path("sig"))?,
    ])?;
    env.ok(&["--reason", "INC-17 restore", "backup", "init"])?;
    env.ok(&["backup", "sync"])?;
    env.create("k2", "ec-p384", "sign,verify")?; // copied to the backup again
    env.ok(&["token", "list"])?;
    env.ok(&["reconcile", "--login"])?;
    let o = env.ok(&["audit", "verify"])?;
    assert!(!stdout(&o).contains("note:"), "{}", stdout(&o));
    Ok(())
}

#[test]
fn audit_verify_without_the_token_uses_the_inventory_copy_and_says_so() -> TestResult {
    let env = Env::new_on_store("file")?;
    env.create("k", "ec-p384", "sign,verify")?;
    std::fs::write(token_file(&env, "kms-primary")?, b"")?;

    let o = env.run(&["audit", "verify"])?;
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("audit trail intact"), "{out}");
    assert!(out.contains("recorded in the inventory"), "{out}");

    // The checkpoints' signatures are really checked with that copy: another key in its place
    // (key k's public half) fails every checkpoint.
    env.sql(
        "UPDATE key_versions SET public_key =
            (SELECT v.public_key FROM key_versions v JOIN keys k ON k.id = v.key_id WHERE k.name = 'k')
         WHERE key_id = (SELECT id FROM keys WHERE name = 'kms-audit')",
    )?;
    let o = env.run(&["audit", "verify"])?;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("has no valid signature from the audit key"),
        "{}",
        stdout(&o)
    );
    Ok(())
}

#[test]
fn an_audit_key_missing_from_a_present_token_is_a_finding_not_a_fallback() -> TestResult {
    let env = Env::new_on_store("file")?;
    paired(&env)?;
    let id = env.object_id("kms-audit")?;
    for class in ["pubkey", "privkey"] {
        let o = env.pkcs11_tool(
            "kms-primary",
            &["--delete-object", "--type", class, "--id", &id],
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // The token is there; its audit key is not: the backup copy must not paper over that.
    let o = env.run(&["audit", "verify"])?;
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("cannot be checked"), "{out}");
    assert!(!out.contains("note:"), "{out}");
    Ok(())
}
