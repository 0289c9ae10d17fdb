//! Abandon and repair finish the job (finding 6 of issue 17): a creation killed after its backup
//! copy was made leaves objects on both tokens; `kms key abandon` must remove every copy on every
//! token, and objects whose inventory rows are gone must be reported by `kms reconcile` and
//! removed by `kms reconcile --repair` — never a live key's. Real SoftHSM2 tokens, the real `kms`
//! binary SIGKILLed at a failpoint (`testing` feature).
#![cfg(feature = "testing")]

use common::*;
use kms_testkit as common;

#[test]
fn abandon_removes_the_backup_copy_of_a_killed_creation() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    kill_at(
        &env,
        "0d",
        "create:copied",
        &create_args("lost", "ec-p384", "sign,verify", &["--reason", "CHG-17"]),
    )?;
    let id = env.object_id("lost")?;
    assert!(
        on_token(&env, "kms-primary", &id)?,
        "generated on the primary"
    );
    assert!(on_token(&env, "kms-backup", &id)?, "copied to the backup");

    let o = env.ok(&["key", "abandon", "lost"])?;
    assert!(
        stdout(&o).contains("4 token object(s) destroyed"),
        "both halves on both tokens: {}",
        stdout(&o)
    );
    assert!(!on_token(&env, "kms-primary", &id)?, "left on the primary");
    assert!(!on_token(&env, "kms-backup", &id)?, "left on the backup");

    // The record names where the objects were destroyed.
    let rows = json(&env.ok(&["audit", "list", "--json", "--limit", "1000"])?)?;
    let abandon = rows
        .as_array()
        .ok_or("rows")?
        .iter()
        .find(|r| r["action"] == "key.abandon" && r["outcome"] == "ok")
        .ok_or("no key.abandon record")?;
    let detail = abandon["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("'backup' v1: 2") && detail.contains("'primary' v1: 2"),
        "{detail}"
    );

    // Gone from the inventory too: a second abandon says so.
    let o = env.run(&["key", "abandon", "lost"])?;
    assert_fails(&o, 3, &["lost"]);
    // And nothing is left for reconcile to report but agreement.
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}

#[test]
fn reconcile_reports_and_repair_removes_leftovers_never_live_keys() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.create("live", "ec-p384", "sign,verify")?;
    let live = env.object_id("live")?;
    kill_at(
        &env,
        "0d",
        "create:copied",
        &create_args(
            "ghost",
            "aes-256",
            "encrypt,decrypt",
            &["--reason", "CHG-17"],
        ),
    )?;
    let ghost = env.object_id("ghost")?;
    // The inventory rows are gone; the objects remain on both tokens.
    env.sql(
        "DELETE FROM key_versions WHERE key_id = (SELECT id FROM keys WHERE name = 'ghost');
         DELETE FROM keys WHERE name = 'ghost';",
    )?;
    assert!(on_token(&env, "kms-primary", &ghost)? && on_token(&env, "kms-backup", &ghost)?);
    // Someone else's object on the primary: an orphan, but not kms's to remove.
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--keypairgen",
            "--key-type",
            "EC:secp384r1",
            "--label",
            "someone-else",
            "--id",
            "c0ffee",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));

    // Plain reconcile reports the leftovers on both tokens, and changes nothing.
    let o = env.run(&["reconcile", "--login"])?;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    for token in ["primary", "backup"] {
        let want =
            format!("leftover object: token '{token}' holds a secret-key with CKA_ID {ghost}");
        assert!(out.contains(&want), "{want}: {out}");
    }
    assert!(
        out.contains("orphan object: token 'primary'") && out.contains("c0ffee"),
        "{out}"
    );
    assert!(on_token(&env, "kms-primary", &ghost)?, "report only");

    // --repair removes them, says so, and leaves the live key and the foreign object alone.
    let o = env.run(&["reconcile", "--repair"])?;
    let err = stderr(&o);
    assert_eq!(
        err.matches(&format!("CKA_ID {ghost} (label 'kms:ghost:v1')"))
            .count(),
        2,
        "{err}"
    );
    let out = stdout(&o);
    assert!(!out.contains("leftover object"), "{out}");
    assert!(
        out.contains("c0ffee"),
        "the foreign object is still reported: {out}"
    );
    assert!(!on_token(&env, "kms-primary", &ghost)?);
    assert!(!on_token(&env, "kms-backup", &ghost)?);
    assert!(on_token(&env, "kms-primary", "c0ffee")?);
    assert!(on_token(&env, "kms-primary", &live)? && on_token(&env, "kms-backup", &live)?);
    let msg = env.write("msg", b"still here")?;
    env.ok(&[
        "key",
        "sign",
        "live",
        "--in",
        path(&msg)?,
        "--out",
        path(&env.path("sig"))?,
    ])?;

    let rows = json(&env.ok(&["audit", "list", "--json", "--limit", "1000"])?)?;
    assert!(
        rows.as_array()
            .ok_or("rows")?
            .iter()
            .any(|r| r["action"] == "inventory.remove-leftovers"
                && r["detail"].as_str().is_some_and(|d| d.contains(&ghost))),
        "the removal is audited"
    );
    Ok(())
}

#[test]
fn abandon_keeps_the_key_while_a_token_that_may_hold_a_copy_is_unreachable() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    kill_at(
        &env,
        "0d",
        "create:copied",
        &create_args("lost", "ec-p384", "sign,verify", &["--reason", "CHG-17"]),
    )?;
    let id = env.object_id("lost")?;
    let cfg = std::fs::read_to_string(env.config())?;
    let broken = env.write(
        "broken.toml",
        cfg.replace("label = \"kms-backup\"", "label = \"kms-elsewhere\"")
            .as_bytes(),
    )?;
    let o = env
        .kms_with_config(&broken)
        .args(["key", "abandon", "lost"])
        .output()?;
    assert_fails(
        &o,
        6,
        &[
            "may have a copy on token 'backup'",
            "run `kms key abandon lost` again",
        ],
    );
    assert!(
        on_token(&env, "kms-backup", &id)?,
        "the copy is still there"
    );
    env.ok(&["key", "show", "lost"])?; // the rows are kept for the re-run

    env.ok(&["key", "abandon", "lost"])?;
    assert!(!on_token(&env, "kms-primary", &id)? && !on_token(&env, "kms-backup", &id)?);
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}
