//! The audit trail is complete, tamper-evident and fail-closed. Tampering is done the way an
//! intruder with database access would: with the `sqlite3` tool on the inventory file, or with
//! SQL on the PostgreSQL inventory.

use common::*;
use kms_testkit as common;

#[path = "audit_trail/checkpoints.rs"]
mod checkpoints;
#[path = "audit_trail/records.rs"]
mod records;
#[path = "audit_trail/substitution.rs"]
mod substitution;

/// A trail with some history: keys, use, a refusal, a checkpoint.
fn with_history() -> Res<Env> {
    let env = Env::new()?;
    env.create("k", "ec-p384", "sign,verify")?;
    let m = env.write("m", b"payload")?;
    let m = m.to_str().ok_or("path")?.to_owned();
    let sig = env.path("sig");
    env.ok(&[
        "key",
        "sign",
        "k",
        "--in",
        &m,
        "--out",
        sig.to_str().ok_or("path")?,
    ])?;
    let _ = env.run_as(USER, &["audit", "list"])?; // refused: users do not read the trail
    env.ok(&["audit", "checkpoint"])?;
    env.ok(&["key", "show", "k"])?;
    Ok(env)
}

fn verify(env: &Env) -> Res<(Option<i32>, String)> {
    let o = env.run(&["audit", "verify"])?;
    Ok((o.status.code(), stdout(&o) + &stderr(&o)))
}

#[test]
fn an_untouched_trail_verifies_also_with_the_key_kept_outside() -> TestResult {
    let env = with_history()?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("audit trail intact"), "{out}");
    let pem = env.ok(&["audit", "public-key"])?;
    let pem_path = env.write("audit.pem", &pem.stdout)?;
    let o = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        pem_path.to_str().ok_or("path")?,
        "-noout",
        "-text",
    ])?;
    assert!(stdout(&o).contains("384 bit"), "{}", stdout(&o));
    let o = env.ok(&[
        "audit",
        "verify",
        "--pubkey",
        pem_path.to_str().ok_or("path")?,
        "--json",
    ])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["ok"], true);
    assert!(
        v["valid_checkpoints"].as_u64().is_some_and(|n| n >= 1),
        "{v}"
    );
    Ok(())
}

#[test]
fn an_altered_record_is_named() -> TestResult {
    let env = with_history()?;
    env.sql("UPDATE audit SET actor = 'someone-else' WHERE seq = 5")?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("record 5 was altered"), "{out}");
    Ok(())
}

#[test]
fn a_removed_record_is_named() -> TestResult {
    let env = with_history()?;
    env.sql("DELETE FROM audit WHERE seq = 6")?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("record(s) 6..6 were removed"), "{out}");
    Ok(())
}

#[test]
fn an_inserted_record_is_named() -> TestResult {
    let env = with_history()?;
    env.sql(
        "INSERT INTO audit (at, actor, host, action, outcome, prev_hash, hash)
         SELECT '2026-01-01T00:00:00Z', 'ghost', 'nowhere', 'key.sign', 'ok',
                'f00d', 'f00d' FROM audit LIMIT 1",
    )?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not follow its predecessor"), "{out}");
    // A forged record with a self-consistent hash but the wrong predecessor is caught the same way.
    Ok(())
}

#[test]
fn records_cut_from_the_end_are_caught_by_the_checkpoint() -> TestResult {
    let env = with_history()?;
    env.ok(&["audit", "checkpoint"])?;
    env.sql("DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 3 FROM audit)")?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("removed from the end"), "{out}");
    Ok(())
}

#[test]
fn a_forged_checkpoint_is_refused() -> TestResult {
    let env = with_history()?;
    env.sql("UPDATE audit_checkpoints SET head_hash = 'aa' || substr(head_hash, 3)")?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("no valid signature from the audit key"),
        "{out}"
    );
    Ok(())
}

// ---- Attacks on the chain's start, on the checkpoints and on the audit key ----

/// What an intruder who read the source does after altering records: recompute `prev_hash` and
/// `hash` of every record from `from` on, so the chain is consistent again.
fn rechain_from(env: &Env, from: i64) -> TestResult {
    use kms::inventory::{StoredRecord, GENESIS};
    let mut prev = env.sql_text(&format!(
        "SELECT COALESCE((SELECT hash FROM audit WHERE seq < {from} ORDER BY seq DESC LIMIT 1), '{GENESIS}')"
    ))?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&env.sql_json(&format!(
        "SELECT seq, at, actor, host, action, key_name, key_version, reason, outcome, detail,
                role, os_user, cert_fingerprint, code, diff, prev_hash, hash, node
         FROM audit WHERE seq >= {from} ORDER BY seq"
    ))?)?;
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().map(str::to_owned);
    let mut updates = String::new();
    for v in rows {
        let r = StoredRecord {
            seq: v["seq"].as_i64().ok_or("seq")?,
            at: text(&v, "at").ok_or("at")?,
            actor: text(&v, "actor").ok_or("actor")?,
            host: text(&v, "host").ok_or("host")?,
            action: text(&v, "action").ok_or("action")?,
            key_name: text(&v, "key_name"),
            key_version: v["key_version"].as_u64().map(u32::try_from).transpose()?,
            reason: text(&v, "reason"),
            outcome: text(&v, "outcome").ok_or("outcome")?,
            detail: text(&v, "detail"),
            role: text(&v, "role"),
            os_user: text(&v, "os_user"),
            cert_fingerprint: text(&v, "cert_fingerprint"),
            code: text(&v, "code"),
            diff: text(&v, "diff"),
            prev_hash: text(&v, "prev_hash"),
            hash: text(&v, "hash"),
            node: text(&v, "node"),
        };
        let hash = r.compute_hash(&prev);
        updates.push_str(&format!(
            "UPDATE audit SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {};\n",
            r.seq
        ));
        prev = hash;
    }
    env.sql(&updates)
}

/// `kms audit verify --json`: exit code and the problems, in report order.
fn verify_json(env: &Env) -> Res<(Option<i32>, Vec<String>)> {
    let o = env.run(&["audit", "verify", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let problems = v["problems"]
        .as_array()
        .ok_or("problems")?
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    Ok((o.status.code(), problems))
}

/// A longer trail: the history, then a second key created and used by further commands.
fn with_longer_history() -> Res<Env> {
    let env = with_history()?;
    env.create("k2", "ec-p384", "sign,verify")?;
    env.ok(&["key", "show", "k2"])?;
    env.ok(&["key", "list"])?;
    env.ok(&["key", "show", "k"])?;
    Ok(env)
}
