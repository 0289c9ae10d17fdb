//! Backup to the second HSM (issue 6) on two real SoftHSM2 tokens: the key ceremony, copies made
//! before a key counts, restore drills that catch a destroyed copy, a full restore after the
//! primary token is lost, and the sealed offline backup file.

use common::*;
use kms_testkit as common;

use std::process::Command;

use serde_json::Value;

#[path = "backup/refusals.rs"]
mod refusals;
#[path = "backup/restore.rs"]
mod restore;

/// The backup copies recorded for the newest version of `key`.
fn copies(env: &Env, key: &str) -> Res<Vec<Value>> {
    let v = json(&env.ok(&["key", "show", key, "--json"])?)?;
    let versions = v["versions"].as_array().ok_or("no versions")?;
    let last = versions.last().ok_or("no versions")?;
    Ok(last["copies"].as_array().cloned().unwrap_or_default())
}

/// The ceremony, then `backup sync` for what existed before (at least the audit key, made by
/// the first command's checkpoint).
fn init(env: &Env) -> Res<std::process::Output> {
    let o = env.ok(&["--reason", "CHG-7 backup ceremony", "backup", "init"])?;
    env.ok(&["backup", "sync"])?;
    Ok(o)
}

/// Keys of every kind and usage the drill knows.
fn create_all(env: &Env) -> TestResult {
    env.create("sig", "ec-p384", "sign,verify")?;
    env.create("dek", "aes-256", "encrypt,decrypt")?;
    env.create("kek", "aes-256", "wrap,unwrap")?;
    env.create("rsa", "rsa-3072", "encrypt,decrypt")?;
    Ok(())
}

fn softhsm_util(env: &Env, args: &[&str]) -> Res<std::process::Output> {
    Ok(Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", env.softhsm_conf())
        .args(args)
        .output()?)
}

#[test]
fn ceremony_copies_every_key_before_it_counts_and_drills_pass() -> TestResult {
    let env = Env::new()?;
    env.create("early", "ec-p384", "sign,verify")?;
    assert!(copies(&env, "early")?.is_empty(), "no pairing yet, no copy");

    let o = env.ok(&["--reason", "CHG-7 backup ceremony", "backup", "init"])?;
    let said = stderr(&o);
    for step in ["1/4", "2/4", "3/4", "4/4", "security officer", "trusted"] {
        assert!(
            said.contains(step),
            "the ceremony explains its steps: {said}"
        );
    }
    // A key made before the ceremony is reported until `backup sync` copies it.
    let o = env.run(&["backup", "verify"])?;
    assert_fails(&o, 1, &["restore drill failed"]);
    assert!(
        stdout(&o).contains("early@v1 has no backup copy"),
        "{}",
        stdout(&o)
    );
    let o = env.ok(&["backup", "sync"])?;
    assert!(stdout(&o).contains("copied     early@v1"), "{}", stdout(&o));

    create_all(&env)?;
    for key in ["early", "sig", "dek", "kek", "rsa"] {
        let c = copies(&env, key)?;
        assert_eq!(c.len(), 1, "{key}: one copy: {c:?}");
        assert_eq!(c[0]["token"], "backup");
        assert!(
            c[0]["verified_at"].is_string(),
            "{key}: copy proven at creation"
        );
        // The copy lives on the backup token under the same CKA_ID.
        assert_eq!(
            c[0]["object_id"].as_str(),
            Some(env.object_id(key)?.as_str())
        );
    }
    let o = env.ok(&["backup", "verify", "--json"])?;
    let r = json(&o)?;
    let results = r["results"].as_array().ok_or("results")?;
    assert!(results.len() >= 5, "{r}");
    assert!(results.iter().all(|d| d["ok"] == true), "{r}");
    let how: Vec<&str> = results
        .iter()
        .filter_map(|d| d["detail"].as_str())
        .collect();
    assert!(how
        .iter()
        .any(|h| h.contains("signature made on the copy verified")));
    assert!(how
        .iter()
        .any(|h| h.contains("encrypted on the original decrypted on the copy")));
    assert!(how
        .iter()
        .any(|h| h.contains("data key wrapped on the original unwrapped")));
    assert!(how
        .iter()
        .any(|h| h.contains("public key decrypted on the copy")));

    // On the backup token the copies are sensitive private objects, labelled like the originals.
    let listing = env.list_objects("kms-backup")?;
    assert!(listing.contains("kms:sig:v1"), "{listing}");
    let mut kind = "";
    let mut checked = 0;
    for line in listing.lines() {
        if line.contains("Key Object") {
            kind = if line.contains("Public") {
                "public"
            } else {
                "secret"
            };
        } else if line.trim_start().starts_with("Access:") && kind == "secret" {
            assert!(line.contains("sensitive"), "{line}");
            checked += 1;
        }
    }
    assert!(checked >= 5, "{listing}");
    // Inventory and both tokens agree (copies and ceremony objects are known).
    env.ok(&["reconcile", "--login"])?;
    // The trail has the ceremony, the copies and the drills.
    let o = env.ok(&["audit", "list", "--json"])?;
    let rows = json(&o)?;
    let actions: Vec<&str> = rows
        .as_array()
        .ok_or("rows")?
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in [
        "backup.init",
        "backup.copy",
        "backup.drill",
        "backup.verify",
        "key.create",
    ] {
        assert!(actions.contains(&a), "no {a} record: {actions:?}");
    }
    Ok(())
}

#[test]
fn a_copy_destroyed_behind_the_kms_back_fails_the_drill_by_name() -> TestResult {
    let env = Env::new()?;
    init(&env)?;
    env.create("victim", "ec-p384", "sign,verify")?;
    env.create("bystander", "aes-256", "encrypt,decrypt")?;
    let id = env.object_id("victim")?;
    let o = env.pkcs11_tool(
        "kms-backup",
        &["--delete-object", "--type", "privkey", "--id", &id],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));

    let o = env.run(&["backup", "verify"])?;
    assert_fails(&o, 1, &["restore drill failed"]);
    let out = stdout(&o);
    assert!(out.contains("FAIL  victim@v1 on 'backup'"), "{out}");
    assert!(out.contains("ok    bystander@v1"), "{out}");
    // Recorded on the copy, visible in status and in reconcile.
    let o = env.ok(&["backup", "status"])?;
    assert!(stdout(&o).contains("DRILL FAILED"), "{}", stdout(&o));
    let o = env.run(&["reconcile", "--login"])?;
    assert_fails(&o, 1, &[]);
    assert!(
        stdout(&o).contains("missing backup copy: key 'victim'"),
        "{}",
        stdout(&o)
    );
    // The audit record of the failed drill names the key and the reason.
    let o = env.ok(&["audit", "list", "--key", "victim", "--json"])?;
    let rows = json(&o)?;
    assert!(
        rows.as_array()
            .ok_or("rows")?
            .iter()
            .any(|r| r["action"] == "backup.drill" && r["outcome"] == "error"),
        "{rows}"
    );
    // `backup sync` replaces the broken copy; the drill passes again.
    let o = env.ok(&["backup", "sync"])?;
    assert!(
        stdout(&o).contains("copied     victim@v1"),
        "{}",
        stdout(&o)
    );
    env.ok(&["backup", "verify"])?;
    Ok(())
}
