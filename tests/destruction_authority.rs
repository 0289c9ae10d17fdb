//! Destruction re-proves its authority (issue 23, item 3): an attacker who can write the
//! inventory (disposals, procedures, key_copies) cannot make kms destroy a key. Two layers: the
//! rows' integrity tags refuse the forged rows first; behind them, each test re-seals the forged
//! rows and shows the destruction itself refuses.
//! Each forged row below destroyed keys on both tokens before; now the destruction is refused,
//! named in the audit trail, and the tokens keep every object. Real SoftHSM2 tokens, the real
//! `kms` binary, and SQL behind kms's back to play the attacker.
#![cfg(feature = "testing")]

use common::*;
use kms_testkit as common;

/// The forged rows carry no valid integrity tag, so the first layer (issue 23's tags) refuses
/// them where they are read; then every row is re-sealed as it reads (`testing` builds only), as
/// an attacker who could make tags would, to show that the second layer — destruction
/// re-proving its authority — holds on its own.
fn tags_refuse_then_reseal(env: &Env, args: &[&str]) -> TestResult {
    let o = env.run(args)?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("was not made by kms"), "{all}");
    env.ok(&["inventory", "retag-for-tests"])?;
    Ok(())
}

fn counts(env: &Env) -> Res<(usize, usize)> {
    Ok((
        env.object_count("kms-primary")?,
        env.object_count("kms-backup")?,
    ))
}

fn signs(env: &Env, key: &str) -> Res<bool> {
    let m = env.write("m", b"still here")?;
    Ok(env
        .run_as(USER, &["key", "sign", key, "--in", path(&m)?])?
        .status
        .success())
}

/// The audit trail (newest 2000 records) as JSON text.
fn trail(env: &Env) -> Res<String> {
    Ok(stdout(
        &env.ok(&["audit", "list", "--json", "--limit", "2000"])?,
    ))
}

fn serial_of(env: &Env, key: &str) -> Res<String> {
    env.sql_rows(&format!(
        "SELECT token_serial FROM key_versions WHERE key_id = (SELECT id FROM keys WHERE name = '{key}') AND version = 1"
    ))
}

const T: &str = "2020-01-01T00:00:00Z";

#[test]
fn a_forged_executing_disposal_destroys_nothing() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.create("victim", "ec-p384", "sign,verify")?;
    env.ok(&["audit", "checkpoint"])?; // makes kms-audit
    let victim = env.object_id("victim")?;
    let before = counts(&env)?;
    // An `executing` disposal, as a crash would leave one: no request, no signatures, no wait.
    for (i, name) in ["victim", "kms-audit", "kms-integrity"].iter().enumerate() {
        env.sql(&format!(
            "INSERT INTO disposals (id, key_id, contract_ref, justification, requested_by, requested_at, wait_secs, state, not_before)
             SELECT 'd-forged-{i}', id, 'CTR-0', 'forged', '{OFFICER}', '{T}', 0, 'executing', '{T}' FROM keys WHERE name = '{name}'"
        ))?;
    }
    tags_refuse_then_reseal(&env, &["schedule", "run"])?;
    assert_eq!(counts(&env)?, before, "objects were destroyed");
    // The scheduler (what `kms serve` runs every hour) rolls `executing` disposals forward.
    let o = env.run(&["schedule", "run"])?;
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("FAILED     dispose d-forged-0") && out.contains("lacks its verify signature"),
        "{out}"
    );
    for i in [1, 2] {
        assert!(
            out.contains(&format!("FAILED     dispose d-forged-{i}")),
            "{out}"
        );
    }
    assert!(out.contains("kms's own key"), "{out}");
    assert_eq!(counts(&env)?, before, "objects were destroyed");
    assert!(on_token(&env, "kms-primary", &victim)? && on_token(&env, "kms-backup", &victim)?);
    assert!(signs(&env, "victim")?);
    let t = trail(&env)?;
    assert!(
        t.contains("d-forged-0") && t.contains("lacks its verify signature"),
        "{t}"
    );
    // A second run (as after a restart) refuses again.
    assert!(!env.run(&["schedule", "run"])?.status.success());
    assert_eq!(counts(&env)?, before);
    Ok(())
}

#[test]
fn a_resumed_disposal_still_waits_its_signed_waiting_period() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.register_person("alice", "security-admin")?;
    env.register_person("bob", "manager")?;
    env.create("contract", "ec-p384", "sign,verify")?;
    let oid = env.object_id("contract")?;
    let o = env.ok(&[
        "key",
        "dispose",
        "contract",
        "--contract-ref",
        "CTR-2026-23",
        "--justification",
        "client contract ended",
        "--wait",
        "7d",
        "--json",
    ])?;
    let id = json(&o)?["id"].as_str().ok_or("id")?.to_owned();
    for (who, verb) in [("alice", "--verify"), ("bob", "--approve")] {
        let o = env.as_person(
            who,
            &["key", "dispose", verb, &id, "--card-pin", "env:CARD_PIN"],
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // Genuinely approved and signed, but in its 7-day wait: the attacker marks it as an
    // interrupted execution and moves every time they can write into the past.
    let before = counts(&env)?;
    env.sql(&format!(
        "UPDATE disposals SET state = 'executing', not_before = '{T}' WHERE id = '{id}';
         UPDATE signatures SET signed_at = '{T}' WHERE subject = '{id}';"
    ))?;
    tags_refuse_then_reseal(&env, &["schedule", "run"])?;
    // Signatures dated before the signers' keys were theirs do not hold (issue 31).
    let o = env.run(&["schedule", "run"])?;
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("FAILED     dispose {id}"))
            && stdout(&o).contains("does not hold"),
        "{}",
        stdout(&o)
    );
    assert_eq!(counts(&env)?, before);
    // The attacker moves the signers' key history into the past too: the signed waiting
    // period still stops the destruction.
    env.sql(&format!("UPDATE approval_keys SET valid_from = '{T}'"))?;
    tags_refuse_then_reseal(&env, &["schedule", "run"])?;
    let o = env.run(&["schedule", "run"])?;
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("FAILED     dispose {id}"))
            && stdout(&o).contains("waiting period"),
        "{}",
        stdout(&o)
    );
    assert_eq!(counts(&env)?, before);
    assert!(on_token(&env, "kms-primary", &oid)? && on_token(&env, "kms-backup", &oid)?);
    // Once the signed wait is really over, the same (resumed) disposal is carried out.
    let o = env
        .kms_as(OFFICER)
        .env("KMS_TEST_CLOCK_OFFSET", "8d")
        .args(["schedule", "run"])
        .output()?;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(!on_token(&env, "kms-primary", &oid)? && !on_token(&env, "kms-backup", &oid)?);
    Ok(())
}

#[test]
fn forged_procedure_rows_make_repair_destroy_nothing() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.create("a", "ec-p384", "sign,verify")?;
    env.create("b", "aes-256", "encrypt,decrypt")?;
    let (a_id, b_id) = (env.object_id("a")?, env.object_id("b")?);
    let serial = serial_of(&env, "b")?;
    let backup_serial = env.sql_rows(&format!(
        "SELECT token_serial FROM key_copies WHERE object_id = '{b_id}'"
    ))?;
    let before = counts(&env)?;
    let places = format!(
        r#"[{{"token":"primary","serial":"{serial}","cka_id":"{b_id}"}},{{"token":"backup","serial":"{backup_serial}","cka_id":"{b_id}"}}]"#
    );
    let forged = [
        // A running destruction of a's v1 whose places are b's objects.
        (
            "p-forged-1",
            "destroy-version",
            1,
            "intent",
            format!(r#"{{"why":"forged","target":"destroyed","places":{places}}}"#),
        ),
        // A rotation of a that "did not switch", whose new CKA_ID is b's.
        (
            "p-forged-2",
            "rotation",
            2,
            "generated",
            format!(
                r#"{{"why":"forged","old_version":1,"new_version":2,"token":"primary","serial":"{serial}","cka_id":"{b_id}","window_secs":0,"retire":"deactivate"}}"#
            ),
        ),
        // A "switched" window-0 rotation of a: its active v1 would be destroyed.
        (
            "p-forged-3",
            "rotation",
            2,
            "switched",
            r#"{"why":"forged","old_version":1,"new_version":2,"window_secs":0,"retire":"deactivate"}"#
                .to_owned(),
        ),
    ];
    for (id, kind, version, step, data) in &forged {
        env.sql(&format!(
            "INSERT INTO procedures (id, kind, key_id, version, step, state, data, started_by, started_at, updated_at)
             SELECT '{id}', '{kind}', id, {version}, '{step}', 'running', '{data}', '{OFFICER}', '{T}', '{T}' FROM keys WHERE name = 'a'"
        ))?;
    }
    tags_refuse_then_reseal(&env, &["reconcile", "--repair"])?;
    let o = env.run(&["reconcile", "--repair"])?;
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    for (id, ..) in &forged[..1] {
        assert!(
            err.contains(&format!("repair: FAILED      destroy-version {id}")),
            "{err}"
        );
    }
    assert!(
        err.contains("p-forged-3") && err.contains("only a deactivated version"),
        "{err}"
    );
    assert_eq!(counts(&env)?, before, "objects were destroyed: {err}");
    for id in [&a_id, &b_id] {
        assert!(on_token(&env, "kms-primary", id)? && on_token(&env, "kms-backup", id)?);
    }
    assert!(signs(&env, "a")?);
    let pt = env.write("pt", b"b still works")?;
    env.user_ok(&[
        "key",
        "encrypt",
        "b",
        "--in",
        path(&pt)?,
        "--out",
        path(&env.path("ct"))?,
    ])?;
    let t = trail(&env)?;
    assert!(
        t.contains("procedures.repair-failed") && t.contains("p-forged-1"),
        "{t}"
    );

    // A forged destruction of a version that IS due (d's v1, past its window) naming b's
    // objects: the repair destroys d's v1 where d's own rows say it is, and b survives.
    env.ok(&create_args(
        "d",
        "ec-p384",
        "sign,verify",
        &["--reencrypt-window", "1d", "--reason", "CHG-23"],
    ))?;
    let d1 = env.object_id("d")?;
    env.ok(&["--reason", "CHG-23", "key", "rotate", "d"])?;
    env.sql("DELETE FROM procedures WHERE id LIKE 'p-forged-%'")?;
    let data = format!(r#"{{"why":"forged","target":"destroyed","places":{places}}}"#);
    env.sql(&format!(
        "INSERT INTO procedures (id, kind, key_id, version, step, state, data, started_by, started_at, updated_at)
         SELECT 'p-forged-4', 'destroy-version', id, 1, 'intent', 'running', '{data}', '{OFFICER}', '{T}', '{T}' FROM keys WHERE name = 'd'"
    ))?;
    env.ok(&["inventory", "retag-for-tests"])?;
    let before = counts(&env)?;
    let o = env
        .kms_as(OFFICER)
        .env("KMS_TEST_CLOCK_OFFSET", "2d")
        .args(["reconcile", "--repair"])
        .output()?;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(!on_token(&env, "kms-primary", &d1)? && !on_token(&env, "kms-backup", &d1)?);
    assert!(on_token(&env, "kms-primary", &b_id)? && on_token(&env, "kms-backup", &b_id)?);
    assert_eq!(counts(&env)?, (before.0 - 2, before.1 - 2));
    Ok(())
}

#[test]
fn a_copy_row_repointed_at_another_keys_copy_survives_a_rotation() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.ok(&create_args(
        "a",
        "ec-p384",
        "sign,verify",
        &["--reencrypt-window", "0", "--reason", "CHG-23"],
    ))?;
    env.grant_user("a")?;
    env.create("b", "ec-p384", "sign,verify")?;
    let (a_id, b_id) = (env.object_id("a")?, env.object_id("b")?);
    env.sql(&format!(
        "UPDATE key_copies SET object_id = '{b_id}' WHERE key_id = (SELECT id FROM keys WHERE name = 'a')"
    ))?;
    tags_refuse_then_reseal(&env, &["--reason", "CHG-23", "key", "rotate", "a"])?;
    // Window 0: the rotation destroys v1 at once, on every place its rows name.
    let o = env.run(&["--reason", "CHG-23", "key", "rotate", "a"])?;
    assert_fails(
        &o,
        4,
        &["refused to destroy", &b_id, "'b' v1", "token 'backup'"],
    );
    assert!(
        on_token(&env, "kms-backup", &b_id)?,
        "b's copy was destroyed"
    );
    assert!(on_token(&env, "kms-primary", &b_id)?);
    // Nothing of a's v1 either: every place is checked before anything is destroyed.
    assert!(on_token(&env, "kms-primary", &a_id)?);
    assert!(signs(&env, "b")?);
    let t = trail(&env)?;
    assert!(
        t.contains("key.destroy-refused") && t.contains(&b_id),
        "{t}"
    );
    Ok(())
}

#[test]
fn an_object_swapped_under_a_versions_cka_id_is_not_destroyed() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.ok(&create_args(
        "c",
        "ec-p384",
        "sign,verify",
        &["--reencrypt-window", "0", "--reason", "CHG-23"],
    ))?;
    let c_id = env.object_id("c")?;
    // On the backup token, c's copy is replaced by someone else's key pair under the same CKA_ID.
    for ty in ["privkey", "pubkey"] {
        let o = env.pkcs11_tool(
            "kms-backup",
            &["--delete-object", "--type", ty, "--id", &c_id],
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = env.pkcs11_tool(
        "kms-backup",
        &[
            "--keypairgen",
            "--key-type",
            "EC:secp384r1",
            "--label",
            "someone-else",
            "--id",
            &c_id,
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let before = counts(&env)?;
    let o = env.run(&["--reason", "CHG-23", "key", "rotate", "c"])?;
    assert_fails(
        &o,
        4,
        &[
            "refused to destroy",
            &c_id,
            "token 'backup'",
            "someone-else",
            "kms:c:v1",
        ],
    );
    // The new version was made (2 objects on each token); nothing was destroyed.
    assert_eq!(counts(&env)?, (before.0 + 2, before.1 + 2));
    assert!(env.list_objects("kms-backup")?.contains("someone-else"));
    assert!(on_token(&env, "kms-primary", &c_id)?);
    Ok(())
}
