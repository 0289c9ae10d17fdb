//! Backup to the second HSM (issue 6) on two real SoftHSM2 tokens: the key ceremony, copies made
//! before a key counts, restore drills that catch a destroyed copy, a full restore after the
//! primary token is lost, and the sealed offline backup file.

use common::*;
use kms_testkit as common;

use std::process::Command;

use serde_json::Value;

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
fn full_primary_loss_then_restore_brings_every_key_back() -> TestResult {
    let env = Env::new()?;
    init(&env)?;
    create_all(&env)?;
    // Data made before the loss.
    let msg = env.write("msg", b"signed before the loss")?;
    let sig = env.path("msg.sig");
    env.sign_file("sig", &msg, &sig)?;
    let secret = env.write("secret", b"encrypted before the loss")?;
    let (ct_aes, ct_rsa) = (env.path("secret.aes"), env.path("secret.rsa"));
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct_aes)?,
    ])?;
    env.ok(&[
        "key",
        "encrypt",
        "rsa",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct_rsa)?,
    ])?;

    // The primary token is destroyed entirely; a fresh one (new serial) takes its label.
    let o = softhsm_util(&env, &["--delete-token", "--token", "kms-primary"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let so = std::fs::read_to_string(env.path("pins/kms-primary.so-pin"))?;
    let user = env.user_pin("kms-primary")?;
    let o = softhsm_util(
        &env,
        &[
            "--init-token",
            "--free",
            "--label",
            "kms-primary",
            "--so-pin",
            &so,
            "--pin",
            &user,
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&[
        "key",
        "sign",
        "sig",
        "--in",
        path(&msg)?,
        "--out",
        path(&env.path("x"))?,
    ])?;
    assert!(
        !o.status.success(),
        "the lost key cannot be used on the fresh token"
    );

    // Restore direction: the backup's SO makes a trusted KEK that travels to the new primary.
    env.ok(&[
        "--reason",
        "CHG-8 restore",
        "backup",
        "init",
        "--from",
        "backup",
        "--to",
        "primary",
    ])?;
    let o = env.run(&[
        "--reason",
        "CHG-8 restore",
        "backup",
        "restore",
        "--from",
        "backup",
        "--to",
        "primary",
    ])?;
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for key in ["sig", "dek", "kek", "rsa", "kms-audit"] {
        assert!(out.contains(&format!("restored  {key}@v1")), "{key}: {out}");
    }
    assert!(out.contains("0 failed"), "{out}");

    // Every key works again, proven on data made before the loss.
    let plain = env.path("plain");
    env.ok(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct_aes)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_eq!(std::fs::read(&plain)?, b"encrypted before the loss");
    env.ok(&[
        "key",
        "decrypt",
        "rsa",
        "--in",
        path(&ct_rsa)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_eq!(std::fs::read(&plain)?, b"encrypted before the loss");
    env.ok(&[
        "key",
        "verify",
        "sig",
        "--in",
        path(&msg)?,
        "--sig",
        path(&sig)?,
    ])?;
    let sig2 = env.path("msg2.sig");
    env.sign_file("sig", &msg, &sig2)?;
    let pem = env.path("sig.pem");
    env.public_pem("sig", &pem)?;
    let o = openssl_dgst_verify(&["-sha384"], &pem, &sig2, &msg)?;
    assert!(
        o.status.success(),
        "a signature by the restored key verifies with the old public key"
    );

    // Pair the new primary with the backup again: new keys are copied as before.
    init(&env)?;
    env.create("after", "ec-p384", "sign,verify")?;
    assert_eq!(copies(&env, "after")?.len(), 1);
    env.ok(&["backup", "verify"])?;
    let o = env.run(&["reconcile", "--login"])?;
    assert!(o.status.success(), "{}", stdout(&o));
    Ok(())
}

#[test]
fn offline_backup_file_is_sealed_and_restores_lost_objects() -> TestResult {
    let env = Env::new()?;
    init(&env)?;
    create_all(&env)?;
    let secret = env.write("secret", b"offline")?;
    let ct = env.path("secret.aes");
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct)?,
    ])?;
    let file = env.path("kms.backup");
    let o = env.ok(&["backup", "export", path(&file)?])?;
    assert!(
        stdout(&o).contains("wrapped under the backup KEK"),
        "{}",
        stdout(&o)
    );
    let bytes = std::fs::read(&file)?;
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file)?.permissions().mode() & 0o777,
        0o600
    );
    // Sealed: no inventory content in the clear (key names, owners, SQLite header).
    let text = String::from_utf8_lossy(&bytes);
    for needle in ["SQLite format", "kms:dek", "test-officer\",\"role", "CHG-1"] {
        assert!(
            !text.contains(needle),
            "'{needle}' readable in the backup file"
        );
    }

    // Any altered byte: refused, nothing changed.
    let mut bad = bytes.clone();
    let last = bad.len() - 10;
    bad[last] ^= 0x01;
    let bad_file = env.write("bad.backup", &bad)?;
    let before = env.object_count("kms-primary")?;
    let o = env.run(&["backup", "import", path(&bad_file)?])?;
    assert_fails(
        &o,
        2,
        &["not an intact kms backup file", "Nothing was changed"],
    );
    let mut bad_header = bytes.clone();
    if let Some(p) = bad_header.windows(4).position(|w| w == b"test") {
        bad_header[p] = b'T';
    }
    let bad_file = env.write("bad2.backup", &bad_header)?;
    let o = env.run(&["backup", "import", path(&bad_file)?])?;
    assert_fails(&o, 2, &["not an intact kms backup file"]);
    assert_eq!(env.object_count("kms-primary")?, before);

    // A key destroyed on the primary comes back from the file.
    let id = env.object_id("dek")?;
    let o = env.pkcs11_tool(
        "kms-primary",
        &["--delete-object", "--type", "secrkey", "--id", &id],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.run(&["backup", "import", path(&file)?])?;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("restored  dek@v1"), "{}", stdout(&o));
    let plain = env.path("plain");
    env.ok(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_eq!(std::fs::read(&plain)?, b"offline");

    // The inventory itself: a fresh, empty inventory takes the file's.
    env.remove_inventory()?;
    env.ok(&["principal", "add", OFFICER, "--role", "security-officer"])?;
    let o = env.run(&["backup", "import", path(&file)?])?;
    assert_fails(&o, 2, &["--replace-inventory", "Nothing was changed"]);
    let o = env.ok(&["backup", "import", path(&file)?, "--replace-inventory"])?;
    assert!(stdout(&o).contains("inventory restored"), "{}", stdout(&o));
    let v = json(&env.ok(&["key", "list", "--json"])?)?;
    let names: Vec<&str> = v
        .as_array()
        .ok_or("keys")?
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    for key in ["sig", "dek", "kek", "rsa"] {
        assert!(
            names.contains(&key),
            "{key} back in the inventory: {names:?}"
        );
    }
    env.ok(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct)?,
        "--out",
        path(&plain)?,
    ])?;
    Ok(())
}

/// The attack an independent review found against the first version: with the user PIN alone,
/// wrap a key under the backup KEK, then unwrap the blob as a non-sensitive object and read it.
/// The KEKs now carry a CKA_UNWRAP_TEMPLATE (private, sensitive, wrap-with-trusted, no derive) and
/// are never extractable, so every such unwrap fails on both tokens, and a KEK cannot be wrapped.
#[test]
fn the_user_pin_cannot_unwrap_a_backup_blob_in_the_clear() -> TestResult {
    let env = Env::new()?;
    let o = init(&env)?;
    let kek = stdout(&o)
        .split("key-encryption key ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .ok_or("no KEK id in the ceremony output")?
        .to_owned();
    env.create("dek", "aes-256", "encrypt,decrypt")?;
    let dek = env.object_id("dek")?;
    let blob = env.path("blob.bin");
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--wrap",
            "--id",
            &kek,
            "--application-id",
            &dek,
            "--mechanism",
            "AES-KEY-WRAP",
            "-o",
            path(&blob)?,
        ],
    )?;
    assert!(
        o.status.success(),
        "the user session can wrap under the public KEK: {}",
        stderr(&o)
    );
    for token in ["kms-primary", "kms-backup"] {
        for extra in [&[][..], &["--sensitive"][..]] {
            let mut args = vec![
                "--unwrap",
                "--id",
                &kek,
                "--application-id",
                "0bad01",
                "--mechanism",
                "AES-KEY-WRAP",
                "-i",
                path(&blob)?,
                "--key-type",
                "AES:",
            ];
            args.extend_from_slice(extra);
            let o = env.pkcs11_tool(token, &args)?;
            assert!(
                !o.status.success(),
                "{token}: unwrapped a kms key outside the template"
            );
            assert!(
                stderr(&o).contains("CKR_TEMPLATE_INCONSISTENT"),
                "{token}: {}",
                stderr(&o)
            );
        }
    }
    // The KEK itself can be wrapped by nothing, itself included.
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--wrap",
            "--id",
            &kek,
            "--application-id",
            &kek,
            "--mechanism",
            "AES-KEY-WRAP",
            "-o",
            path(&blob)?,
        ],
    )?;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("CKR_KEY_UNEXTRACTABLE"),
        "{}",
        stderr(&o)
    );
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
