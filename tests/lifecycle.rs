//! Key lifecycle procedures (issue 7) on real SoftHSM2 tokens: rotation through its windows with
//! the lifecycle clock moved forward (`KMS_TEST_CLOCK_OFFSET`, `testing` feature), compromise,
//! disposal with signed approvals, and crash safety (the process SIGKILLed at each step).
#![cfg(feature = "testing")]

use common::*;
use kms_testkit as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

/// `kms ARGS` as `actor` with the lifecycle clock moved forward by `offset` (e.g. "91d").
fn at(env: &Env, offset: &str, actor: &str, args: &[&str]) -> Res<Output> {
    Ok(env
        .kms_as(actor)
        .env("KMS_TEST_CLOCK_OFFSET", offset)
        .args(args)
        .output()?)
}

fn ok_at(env: &Env, offset: &str, args: &[&str]) -> Res<Output> {
    let o = at(env, offset, actor_for(args), args)?;
    if !o.status.success() {
        return Err(format!(
            "kms {} (+{offset}) failed: {}{}",
            args.join(" "),
            stdout(&o),
            stderr(&o)
        )
        .into());
    }
    Ok(o)
}

/// The version number in a ciphertext / wrapped key header (bytes 22..26, big endian).
fn header_version(data: &[u8]) -> u32 {
    u32::from_be_bytes([data[22], data[23], data[24], data[25]])
}

fn versions(env: &Env, key: &str) -> Res<Vec<Value>> {
    let v = json(&env.ok(&["key", "show", key, "--json"])?)?;
    Ok(v["versions"].as_array().cloned().unwrap_or_default())
}

fn state_of(env: &Env, key: &str, version: u64) -> Res<String> {
    Ok(versions(env, key)?
        .iter()
        .find(|v| v["version"] == version)
        .and_then(|v| v["state"].as_str())
        .ok_or("no such version")?
        .to_owned())
}

#[test]
fn rotation_moves_keys_through_their_windows() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.ok(&create_args(
        "dek",
        "aes-256",
        "encrypt,decrypt",
        &["--rotate-every", "90d", "--reencrypt-window", "7d"],
    ))?;
    env.grant_user("dek")?;
    env.ok(&create_args(
        "sig",
        "ec-p384",
        "sign,verify",
        &["--rotate-every", "90d"],
    ))?;
    env.grant_user("sig")?;
    let v1_dek = env.object_id("dek")?;
    let secret = env.write("secret", b"quarterly numbers")?;
    let ct1 = env.path("ct1");
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct1)?,
    ])?;
    assert_eq!(header_version(&std::fs::read(&ct1)?), 1);
    let msg = env.write("msg", b"release")?;
    let sig1 = env.path("sig1");
    env.sign_file("sig", &msg, &sig1)?;

    // Due within 14 days at +80d, overdue at +91d.
    let status = |offset: &str| -> Res<String> {
        let r = json(&ok_at(&env, offset, &["report", "rotation", "--json"])?)?;
        Ok(r.as_array()
            .ok_or("report")?
            .iter()
            .find(|s| s["key"] == "dek")
            .and_then(|s| s["status"].as_str())
            .ok_or("no dek")?
            .to_owned())
    };
    assert_eq!(status("1d")?, "ok");
    assert_eq!(status("80d")?, "due");
    assert_eq!(status("91d")?, "overdue");

    // The scheduler (as the service runs it) rotates what is due.
    let o = ok_at(&env, "91d", &["schedule", "run"])?;
    assert!(
        stdout(&o).contains("rotated    dek v1 -> v2"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("rotated    sig v1 -> v2"),
        "{}",
        stdout(&o)
    );
    assert_eq!(state_of(&env, "dek", 1)?, "deactivated");
    assert_eq!(state_of(&env, "dek", 2)?, "active");
    let v2 = versions(&env, "dek")?;
    assert_eq!(
        v2[1]["copies"].as_array().map(Vec::len),
        Some(1),
        "v2 backed up: {v2:?}"
    );
    assert_eq!(status("91d")?, "ok");

    // New data uses v2; v1 still decrypts and verifies; the grant (per key) covers v2.
    let ct2 = env.path("ct2");
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct2)?,
    ])?;
    assert_eq!(header_version(&std::fs::read(&ct2)?), 2);
    let plain = env.path("plain");
    ok_at(
        &env,
        "92d",
        &[
            "key",
            "decrypt",
            "dek",
            "--in",
            path(&ct1)?,
            "--out",
            path(&plain)?,
        ],
    )?;
    assert_eq!(std::fs::read(&plain)?, b"quarterly numbers");
    ok_at(
        &env,
        "92d",
        &[
            "key",
            "verify",
            "sig",
            "--in",
            path(&msg)?,
            "--sig",
            path(&sig1)?,
        ],
    )?;
    // Rewrap moves the old ciphertext to v2.
    let ct1b = env.path("ct1b");
    let o = at(
        &env,
        "92d",
        USER,
        &[
            "key",
            "rewrap",
            "dek",
            "--in",
            path(&ct1)?,
            "--out",
            path(&ct1b)?,
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(header_version(&std::fs::read(&ct1b)?), 2);

    // After the window, v1 is destroyed on every token (checked with pkcs11-tool).
    assert!(on_token(&env, "kms-primary", &v1_dek)? && on_token(&env, "kms-backup", &v1_dek)?);
    let o = ok_at(&env, "99d", &["schedule", "run"])?;
    assert!(stdout(&o).contains("destroyed  dek v1"), "{}", stdout(&o));
    assert_eq!(state_of(&env, "dek", 1)?, "destroyed");
    assert!(
        !on_token(&env, "kms-primary", &v1_dek)?,
        "v1 still on the primary"
    );
    assert!(
        !on_token(&env, "kms-backup", &v1_dek)?,
        "v1 still on the backup"
    );
    let o = at(
        &env,
        "99d",
        USER,
        &[
            "key",
            "decrypt",
            "dek",
            "--in",
            path(&ct1)?,
            "--out",
            path(&plain)?,
        ],
    )?;
    assert_fails(&o, 4, &["destroyed"]);
    ok_at(
        &env,
        "99d",
        &[
            "key",
            "decrypt",
            "dek",
            "--in",
            path(&ct1b)?,
            "--out",
            path(&plain)?,
        ],
    )?;
    assert_eq!(std::fs::read(&plain)?, b"quarterly numbers");
    // The public half outlives the private one: v1's signature still verifies.
    assert_eq!(state_of(&env, "sig", 1)?, "destroyed");
    ok_at(
        &env,
        "99d",
        &[
            "key",
            "verify",
            "sig",
            "--in",
            path(&msg)?,
            "--sig",
            path(&sig1)?,
        ],
    )?;

    // Every step is on the record.
    let rows = json(&env.ok(&["audit", "list", "--key", "dek", "--json"])?)?;
    let actions: Vec<&str> = rows
        .as_array()
        .ok_or("rows")?
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in [
        "key.rotate-intent",
        "key.rotate-switch",
        "key.rotate",
        "key.destroy-intent",
        "key.destroy",
        "key.rewrap",
    ] {
        assert!(actions.contains(&a), "no {a}: {actions:?}");
    }
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}

#[test]
fn a_zero_window_destroys_the_old_version_at_once_and_usage_periods_hold() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.ok(&create_args(
        "strict",
        "ec-p384",
        "sign,verify",
        &[
            "--reencrypt-window",
            "0",
            "--protect-for",
            "30d",
            "--process-for",
            "60d",
        ],
    ))?;
    env.grant_user("strict")?;
    let v1 = env.object_id("strict")?;
    let msg = env.write("msg", b"m")?;
    let sig = env.path("sig");
    // The originator period ends after 30 days: no new signatures, verification still works.
    let o = at(
        &env,
        "31d",
        USER,
        &[
            "key",
            "sign",
            "strict",
            "--in",
            path(&msg)?,
            "--out",
            path(&sig)?,
        ],
    )?;
    assert_fails(&o, 4, &["originator usage period"]);
    env.sign_file("strict", &msg, &sig)?;
    ok_at(
        &env,
        "31d",
        &[
            "key",
            "verify",
            "strict",
            "--in",
            path(&msg)?,
            "--sig",
            path(&sig)?,
        ],
    )?;
    let o = at(
        &env,
        "61d",
        USER,
        &[
            "key",
            "verify",
            "strict",
            "--in",
            path(&msg)?,
            "--sig",
            path(&sig)?,
        ],
    )?;
    assert!(!o.status.success(), "verified after the recipient period");
    // Strict rotation: the old version is gone from both tokens at once.
    let o = env.ok(&["--reason", "CHG-9", "key", "rotate", "strict"])?;
    assert!(stdout(&o).contains("destroyed at once"), "{}", stdout(&o));
    assert_eq!(state_of(&env, "strict", 1)?, "destroyed");
    assert!(!on_token(&env, "kms-primary", &v1)? && !on_token(&env, "kms-backup", &v1)?);
    env.sign_file("strict", &msg, &sig)?;
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}

#[test]
fn a_compromised_version_stops_at_once_and_its_users_are_reported() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    env.create("dek", "aes-256", "encrypt,decrypt")?;
    env.create("sig", "ec-p384", "sign,verify")?;
    let secret = env.write("secret", b"card numbers")?;
    let (ct1, ct2) = (env.path("ct1"), env.path("ct2"));
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct1)?,
    ])?;
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct2)?,
    ])?;
    let msg = env.write("msg", b"m")?;
    let sig1 = env.path("sig1");
    env.sign_file("sig", &msg, &sig1)?;

    let o = env.run(&["key", "compromise", "dek"])?;
    assert_fails(&o, 2, &["--reason must say what happened"]);
    let o = env.ok(&[
        "--reason",
        "INC-7 laptop with the backup stolen",
        "key",
        "compromise",
        "dek",
    ])?;
    let out = stdout(&o);
    assert!(
        out.contains("COMPROMISED") && out.contains("replaced by v2"),
        "{out}"
    );
    assert!(
        out.contains(USER) && out.contains("key.encrypt×2"),
        "report names the user: {out}"
    );
    assert_eq!(state_of(&env, "dek", 1)?, "compromised");
    // At once: no operation with v1, new data under v2.
    let plain = env.path("plain");
    let o = env.run(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct1)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_fails(&o, 4, &["compromised"]);
    let ct3 = env.path("ct3");
    env.ok(&[
        "key",
        "encrypt",
        "dek",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct3)?,
    ])?;
    assert_eq!(header_version(&std::fs::read(&ct3)?), 2);
    // The break-glass: officer only, with a reason; the data moves to v2.
    let o = env.run_as(
        USER,
        &[
            "--reason",
            "x",
            "key",
            "rewrap",
            "dek",
            "--in",
            path(&ct1)?,
            "--out",
            path(&env.path("x"))?,
            "--break-glass",
        ],
    )?;
    assert_fails(&o, 4, &[]);
    let ct1b = env.path("ct1b");
    env.ok(&[
        "--reason",
        "INC-7 re-encrypt",
        "key",
        "rewrap",
        "dek",
        "--in",
        path(&ct1)?,
        "--out",
        path(&ct1b)?,
        "--break-glass",
    ])?;
    env.ok(&[
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct1b)?,
        "--out",
        path(&plain)?,
    ])?;
    assert_eq!(std::fs::read(&plain)?, b"card numbers");
    // Plaintext out of a compromised version: never by the officer who declared it.
    let read = [
        "--reason",
        "INC-7 read",
        "key",
        "decrypt",
        "dek",
        "--in",
        path(&ct2)?,
        "--out",
        path(&plain)?,
        "--break-glass",
    ];
    assert_fails(&env.run(&read)?, 4, &["second security officer"]);
    env.ok(&[
        "principal",
        "add",
        "officer-2",
        "--role",
        "security-officer",
    ])?;
    let o = env.run_as("officer-2", &read)?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_fails(
        &env.run(&["--reason", "x", "key", "compromise", "kms-audit"])?,
        4,
        &["kms's own key"],
    );
    // Re-encryption progress: 1 rewrap of 2 ciphertexts made with v1.
    let r = json(&env.ok(&["key", "compromise", "dek", "--status", "--json"])?)?;
    assert_eq!(r[0]["rewraps_done"], 1, "{r}");
    assert_eq!(r[0]["protections_seen"], 2, "{r}");
    // A signature by a compromised version no longer verifies.
    env.ok(&["--reason", "INC-8", "key", "compromise", "sig"])?;
    let o = env.run(&[
        "key",
        "verify",
        "sig",
        "--in",
        path(&msg)?,
        "--sig",
        path(&sig1)?,
    ])?;
    assert!(
        !o.status.success(),
        "a compromised version's signature was accepted"
    );
    // Closing destroys the version everywhere.
    let v1 = versions(&env, "dek")?[0]["object_id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    // Closing destroys data not yet moved: a second officer, and --accept-loss for the rest.
    assert_fails(
        &env.run(&["key", "compromise", "dek", "--close"])?,
        4,
        &["second security officer"],
    );
    assert_fails(
        &env.run_as("officer-2", &["key", "compromise", "dek", "--close"])?,
        4,
        &["1 of 2 protections"],
    );
    let o = env.run_as(
        "officer-2",
        &[
            "--reason",
            "INC-7: ct2 re-created from source",
            "key",
            "compromise",
            "dek",
            "--close",
            "--accept-loss",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state_of(&env, "dek", 1)?, "destroyed-compromised");
    assert!(!on_token(&env, "kms-primary", &v1)? && !on_token(&env, "kms-backup", &v1)?);
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}

fn people(env: &Env) -> TestResult {
    env.register_person("alice", "security-admin")?;
    env.register_person("bob", "manager")?;
    Ok(())
}

fn dispose_request(env: &Env, key: &str, wait: &str) -> Res<String> {
    let o = env.ok(&[
        "key",
        "dispose",
        key,
        "--contract-ref",
        "CTR-2026-17",
        "--justification",
        "client contract ended",
        "--wait",
        wait,
        "--json",
    ])?;
    Ok(json(&o)?["id"].as_str().ok_or("id")?.to_owned())
}

fn dispose_step(env: &Env, who: &str, verb: &str, id: &str) -> Res<Output> {
    env.as_person(
        who,
        &["key", "dispose", verb, id, "--card-pin", "env:CARD_PIN"],
    )
}

#[test]
fn disposal_needs_two_signatures_and_a_wait_then_leaves_nothing() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    people(&env)?;
    env.create("old", "ec-p384", "sign,verify")?;
    env.ok(&["--reason", "CHG-1", "key", "rotate", "old"])?;
    let ids: Vec<String> = versions(&env, "old")?
        .iter()
        .filter_map(|v| v["object_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2);

    let o = env.run(&[
        "key",
        "dispose",
        "old",
        "--contract-ref",
        "",
        "--justification",
        "x",
    ])?;
    assert_fails(&o, 2, &["--contract-ref"]);
    let o = env.run(&[
        "key",
        "dispose",
        "old",
        "--contract-ref",
        "C",
        "--justification",
        "x",
        "--wait",
        "1h",
    ])?;
    assert_fails(&o, 2, &["minimum waiting period"]);
    let id = dispose_request(&env, "old", "7d")?;
    // Roles and order: the manager cannot verify, the admin cannot approve, no approval first.
    assert_fails(&dispose_step(&env, "bob", "--verify", &id)?, 4, &[]);
    assert_fails(
        &dispose_step(&env, "bob", "--approve", &id)?,
        4,
        &["cannot be approved now"],
    );
    let o = dispose_step(&env, "alice", "--verify", &id)?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_fails(&dispose_step(&env, "alice", "--approve", &id)?, 4, &[]);
    let o = dispose_step(&env, "bob", "--approve", &id)?;
    assert!(o.status.success(), "{}", stderr(&o));
    // The waiting period holds.
    assert_fails(
        &env.run(&["key", "dispose", "--execute", &id])?,
        4,
        &["waiting period"],
    );
    let o = ok_at(&env, "1d", &["schedule", "run"])?;
    assert!(!stdout(&o).contains("disposed"), "{}", stdout(&o));

    // A cancelled disposal never happens; a new one does.
    let o = env.ok(&["key", "dispose", "--cancel", &id])?;
    assert!(stdout(&o).contains("cancelled"), "{}", stdout(&o));
    assert_fails(
        &at(&env, "8d", OFFICER, &["key", "dispose", "--execute", &id])?,
        4,
        &["cancelled"],
    );
    let id = dispose_request(&env, "old", "7d")?;
    assert!(dispose_step(&env, "alice", "--verify", &id)?
        .status
        .success());
    assert!(dispose_step(&env, "bob", "--approve", &id)?
        .status
        .success());
    let o = ok_at(&env, "8d", &["schedule", "run"])?;
    assert!(
        stdout(&o).contains(&format!("disposed   {id}")),
        "{}",
        stdout(&o)
    );

    // Nothing of the key on any token; the tombstone stays; the name is not reusable.
    for oid in &ids {
        assert!(
            !on_token(&env, "kms-primary", oid)? && !on_token(&env, "kms-backup", oid)?,
            "{oid} survived"
        );
    }
    let k = json(&env.ok(&["key", "show", "old", "--json"])?)?;
    assert!(k["disposed_at"].is_string(), "{k}");
    let o = env.run(&create_args("old", "ec-p384", "sign,verify", &[]))?;
    assert!(!o.status.success(), "the name of a disposed key was reused");
    // Its grants were revoked with it; nothing can use it.
    assert_fails(
        &env.run(&["key", "sign", "old", "--in", path(&env.write("m", b"m")?)?])?,
        4,
        &[],
    );

    // The destruction record verifies with the audit key, independently (openssl).
    let e = json(&env.ok(&["key", "disposals", "--show", &id])?)?;
    let record = e["disposal"]["record"].as_str().ok_or("no record")?;
    let rec: Value = serde_json::from_str(record)?;
    assert_eq!(rec["contract"], "CTR-2026-17");
    assert_eq!(rec["versions"].as_array().map(Vec::len), Some(2));
    for v in rec["versions"].as_array().ok_or("versions")? {
        for t in v["tokens"].as_array().ok_or("tokens")? {
            assert_eq!(t["validated"], true, "{t}");
        }
    }
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(e["record_signature_b64"].as_str().ok_or("sig")?)?;
    let (rec_file, sig_file, pem) = (
        env.write("record.json", record.as_bytes())?,
        env.write("record.sig", &sig)?,
        env.path("audit.pem"),
    );
    std::fs::write(&pem, env.ok(&["audit", "public-key"])?.stdout)?;
    let o = openssl_dgst_verify(&["-sha384"], &pem, &sig_file, &rec_file)?;
    assert!(
        o.status.success(),
        "destruction record signature: {}",
        stderr(&o)
    );
    env.ok(&["reconcile", "--login"])?;
    Ok(())
}

#[test]
fn sigkill_at_every_step_of_rotation_and_disposal_loses_nothing() -> TestResult {
    let env = Env::new()?;
    paired(&env)?;
    people(&env)?;
    env.create("dek", "aes-256", "encrypt,decrypt")?;
    let secret = env.write("secret", b"keep me")?;
    let plain = env.path("plain");
    let started = Instant::now();
    // Rotation with a window: killed before the switch it rolls back, after it it finishes.
    for fp in [
        "rotate:intent",
        "rotate:pending",
        "rotate:generated",
        "rotate:copied",
        "rotate:switched",
    ] {
        let ct = env.path("ct");
        env.ok(&[
            "key",
            "encrypt",
            "dek",
            "--in",
            path(&secret)?,
            "--out",
            path(&ct)?,
        ])?;
        kill_at(
            &env,
            "0d",
            fp,
            &["--reason", "CHG-5", "key", "rotate", "dek"],
        )?;
        let o = env.run(&["reconcile", "--repair"])?;
        assert!(o.status.success(), "{fp}: {}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("inventory and tokens agree"),
            "{fp}: {}",
            stdout(&o)
        );
        env.ok(&[
            "key",
            "decrypt",
            "dek",
            "--in",
            path(&ct)?,
            "--out",
            path(&plain)?,
        ])
        .map_err(|e| format!("{fp}: data made before the crash: {e}"))?;
        env.ok(&[
            "key",
            "encrypt",
            "dek",
            "--in",
            path(&secret)?,
            "--out",
            path(&ct)?,
        ])
        .map_err(|e| format!("{fp}: the current version: {e}"))?;
        let active = versions(&env, "dek")?
            .iter()
            .filter(|v| v["state"] == "active")
            .count();
        assert_eq!(active, 1, "{fp}: exactly one active version");
    }
    // Strict rotation (window 0): killed inside the destruction, the repair finishes it.
    env.ok(&create_args(
        "strict",
        "aes-256",
        "encrypt,decrypt",
        &["--reencrypt-window", "0"],
    ))?;
    env.grant_user("strict")?;
    for fp in ["destroy:intent", "destroy:first-token"] {
        kill_at(
            &env,
            "0d",
            fp,
            &["--reason", "CHG-6", "key", "rotate", "strict"],
        )?;
        let o = env.run(&["reconcile", "--repair"])?;
        assert!(
            stdout(&o).contains("inventory and tokens agree"),
            "{fp}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let vs = versions(&env, "strict")?;
        assert!(
            vs.iter().rev().skip(1).all(|v| v["state"] == "destroyed"),
            "{fp}: {vs:?}"
        );
        for v in vs.iter().filter(|v| v["state"] == "destroyed") {
            let id = v["object_id"].as_str().ok_or("id")?;
            assert!(
                !on_token(&env, "kms-primary", id)? && !on_token(&env, "kms-backup", id)?,
                "{fp}"
            );
        }
        let ct = env.path("ct-strict");
        env.ok(&[
            "key",
            "encrypt",
            "strict",
            "--in",
            path(&secret)?,
            "--out",
            path(&ct)?,
        ])?;
    }
    // Disposal killed mid-destruction: the repair carries it out completely.
    for fp in [
        "dispose:intent",
        "dispose:version-destroyed",
        "dispose:destroyed",
    ] {
        let name = format!("gone-{}", fp.replace(':', "-"));
        env.create(&name, "ec-p384", "sign,verify")?;
        let id = dispose_request(&env, &name, "1d")?;
        assert!(dispose_step(&env, "alice", "--verify", &id)?
            .status
            .success());
        assert!(dispose_step(&env, "bob", "--approve", &id)?
            .status
            .success());
        let oid = env.object_id(&name)?;
        kill_at(&env, "2d", fp, &["key", "dispose", "--execute", &id])?;
        let o = at(&env, "2d", OFFICER, &["reconcile", "--repair"])?;
        assert!(
            stdout(&o).contains("inventory and tokens agree"),
            "{fp}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let e = json(&env.ok(&["key", "disposals", "--show", &id])?)?;
        assert_eq!(e["disposal"]["state"], "done", "{fp}: {e}");
        assert!(
            !on_token(&env, "kms-primary", &oid)? && !on_token(&env, "kms-backup", &oid)?,
            "{fp}"
        );
    }
    // A repair never touches a procedure a live process is running.
    let mut live = env
        .kms_as(OFFICER)
        .env("KMS_FAILPOINT", "rotate:generated")
        .args(["--reason", "CHG-7", "key", "rotate", "dek"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let err = live.stderr.take().ok_or("stderr")?;
    let mut lines = BufReader::new(err).lines();
    while let Some(l) = lines.next().transpose()? {
        if l.contains("failpoint rotate:generated reached") {
            break;
        }
    }
    let o = env.run(&["reconcile", "--repair"])?;
    let pending = versions(&env, "dek")?
        .iter()
        .filter(|v| v["state"] == "pending")
        .count();
    assert_eq!(
        pending,
        1,
        "the live rotation's pending version was rolled back: {}",
        stderr(&o)
    );
    Command::new("kill")
        .args(["-KILL", &live.id().to_string()])
        .status()?;
    let _ = live.wait();
    let o = env.run(&["reconcile", "--repair"])?;
    assert!(
        stdout(&o).contains("inventory and tokens agree"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );

    // A compromise killed while generating its replacement: the repair rolls the replacement
    // forward (the compromised version is out of service, so there is no going back).
    env.create("leaked", "aes-256", "encrypt,decrypt")?;
    kill_at(
        &env,
        "0d",
        "rotate:generated",
        &["--reason", "INC-9", "key", "compromise", "leaked"],
    )?;
    let o = env.run(&["reconcile", "--repair"])?;
    assert!(
        stdout(&o).contains("inventory and tokens agree"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(state_of(&env, "leaked", 1)?, "compromised");
    assert_eq!(state_of(&env, "leaked", 2)?, "active");
    env.ok(&[
        "key",
        "encrypt",
        "leaked",
        "--in",
        path(&secret)?,
        "--out",
        path(&env.path("l"))?,
    ])?;

    // A disposal interrupted mid-destruction can no longer be cancelled: it only rolls forward.
    env.create("half", "ec-p384", "sign,verify")?;
    let id = dispose_request(&env, "half", "1d")?;
    assert!(dispose_step(&env, "alice", "--verify", &id)?
        .status
        .success());
    assert!(dispose_step(&env, "bob", "--approve", &id)?
        .status
        .success());
    kill_at(
        &env,
        "2d",
        "dispose:version-destroyed",
        &["key", "dispose", "--execute", &id],
    )?;
    assert_fails(&env.run(&["key", "dispose", "--cancel", &id])?, 4, &[]);
    let o = at(&env, "2d", OFFICER, &["schedule", "run"])?;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let e = json(&env.ok(&["key", "disposals", "--show", &id])?)?;
    assert_eq!(e["disposal"]["state"], "done", "{e}");
    assert_eq!(e["record_signature_valid"], true, "{e}");
    env.ok(&["reconcile", "--login"])?;
    eprintln!("fault injection took {:?}", started.elapsed());
    Ok(())
}
