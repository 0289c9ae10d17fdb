//! The audit trail is complete, tamper-evident and fail-closed. Tampering is done the way an
//! intruder with database access would: with the `sqlite3` tool on the inventory file, or with
//! SQL on the PostgreSQL inventory.

use common::*;
use kms_testkit as common;

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

#[test]
fn when_the_audit_store_is_unwritable_nothing_happens() -> TestResult {
    let env = with_history()?;
    let before_objects = env.object_count("kms-primary")?;
    let before_keys = stdout(&env.ok(&["key", "list", "--json"])?);
    env.refuse("audit_down", "BEFORE INSERT", "audit", None, "disk full")?;
    let o = env.run(&create_args("new-key", "aes-256", "encrypt,decrypt", &[]))?;
    assert!(
        !o.status.success(),
        "creation went ahead without its audit record"
    );
    let m = env.write("m2", b"x")?;
    let o = env.run(&[
        "key",
        "sign",
        "k",
        "--in",
        m.to_str().ok_or("path")?,
        "--out",
        "-",
    ])?;
    assert_fails(&o, 6, &["audit record could not be written"]);
    assert!(
        o.stdout.is_empty(),
        "a signature was released without its audit record"
    );
    env.unrefuse("audit_down", "audit")?;
    assert_eq!(env.object_count("kms-primary")?, before_objects);
    let after_keys = stdout(&env.ok(&["key", "list", "--json"])?);
    assert_eq!(before_keys, after_keys, "nothing else changed");
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(0), "{out}");
    Ok(())
}

#[test]
fn records_are_complete_and_a_key_history_shows_every_access() -> TestResult {
    let env = with_history()?;
    let o = env.ok(&["audit", "list", "--json"])?;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let rows = rows.as_array().ok_or("array")?;
    let sign = rows
        .iter()
        .find(|r| r["action"] == "key.sign")
        .ok_or("no sign record")?;
    assert_eq!(sign["actor"], USER);
    assert_eq!(sign["role"], "user");
    assert!(
        sign["os_user"].as_str().is_some_and(|u| !u.is_empty()),
        "{sign}"
    );
    assert!(sign["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(sign["key_name"], "k");
    assert_eq!(sign["key_version"], 1);
    assert!(sign["at"]
        .as_str()
        .is_some_and(|t| t.contains('.') && t.ends_with('Z')));
    assert_eq!(sign["hash"].as_str().map(str::len), Some(96), "SHA-384 hex");
    // The reason of a key use names the grant, its ticket and its justification.
    assert!(
        sign["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ticket TEST-1: test fixture")),
        "{sign}"
    );
    let refused = rows
        .iter()
        .find(|r| r["action"] == "audit.read" && r["outcome"] == "denied")
        .ok_or("no refusal record")?;
    assert_eq!(refused["code"], "wrong-role");
    // A change carries before -> after.
    let grant = rows
        .iter()
        .find(|r| r["action"] == "grant.break-glass")
        .ok_or("no grant record")?;
    assert!(grant["diff"]["before"].is_null());
    assert_eq!(grant["diff"]["after"]["principal"], USER);
    let gid = grant["diff"]["after"]["id"]
        .as_str()
        .ok_or("grant id")?
        .to_owned();
    env.ok(&["grant", "revoke", &gid, "--reason", "rotation of staff"])?;
    let o = env.ok(&["audit", "list", "--json", "--actor", OFFICER])?;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let revoke = rows
        .as_array()
        .and_then(|a| a.iter().find(|r| r["action"] == "grant.revoke"))
        .ok_or("no revoke record")?;
    assert!(revoke["diff"]["before"]["revoked_at"].is_null());
    assert!(revoke["diff"]["after"]["revoked_at"].is_string());
    assert_eq!(revoke["reason"], "rotation of staff");

    // Every access to k: creation, grant, use, reads.
    let o = env.ok(&["key", "history", "k", "--json"])?;
    let h: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let actions: Vec<&str> = h
        .as_array()
        .ok_or("array")?
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in ["key.create", "grant.break-glass", "key.sign", "key.show"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    // Exports.
    let o = env.ok(&["audit", "export", "--format", "csv", "--key", "k"])?;
    let csv = stdout(&o);
    assert!(csv.starts_with("seq,at,actor,role,"), "{csv}");
    assert!(csv.contains("key.sign"));
    let o = env.ok(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--since",
        "2020-01-01",
    ])?;
    for line in stdout(&o).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        assert!(v["seq"].is_i64());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_signs_a_checkpoint_at_shutdown() -> TestResult {
    let mut svc = common::service::Service::start()?;
    let before = {
        let o = svc.env.ok(&["audit", "verify", "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        v["checkpoints"].as_u64().unwrap_or(0)
    };
    // Something the service records: an unregistered client is refused (its connection closed
    // after the handshake) and audited.
    let answered = match svc.connect("stranger").await {
        Err(_) => None,
        Ok(mut c) => c.request("GET", "/v1/keys", None, None).await.ok(),
    };
    assert!(answered.is_none(), "stranger got an answer: {answered:?}");
    let status = svc.stop()?;
    assert!(status.success());
    let o = svc.env.ok(&["audit", "verify", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["checkpoints"].as_u64().unwrap_or(0) > before,
        "no checkpoint at shutdown: {v}"
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

#[test]
fn records_removed_from_the_start_with_their_checkpoints_are_named() -> TestResult {
    let env = with_longer_history()?;
    assert!(env.sql_i64("SELECT MAX(seq) FROM audit")? > 20);
    env.sql("DELETE FROM audit WHERE seq <= 10; DELETE FROM audit_checkpoints WHERE seq <= 10;")?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    assert!(
        problems[0].starts_with("records 1..10 were removed"),
        "{problems:?}"
    );
    Ok(())
}

#[test]
fn unhashed_records_are_named_even_when_rewritten() -> TestResult {
    let env = with_history()?;
    env.sql("UPDATE audit SET hash = NULL, actor = 'someone-else' WHERE seq <= 3")?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    assert!(
        problems[0].starts_with("record 1 has no hash"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("record 3 has no hash")),
        "{problems:?}"
    );
    // The rewritten content is noticed too: the next record was chained to other content.
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("record 3 was altered")),
        "{problems:?}"
    );

    // Moving the start of the chain on (as if records 1..3 were from before the hash chain)
    // does not help: record 4 was not the first of a chain.
    let env = with_history()?;
    // Up to and including the first record a checkpoint signed (record 3 before issue 17 added
    // the integrity key's records at the start of every inventory).
    let n: i64 = env
        .sql_rows("SELECT MIN(seq) FROM audit_checkpoints")?
        .trim()
        .parse()?;
    env.sql(&format!(
        "UPDATE audit SET hash = NULL, actor = 'someone-else' WHERE seq <= {n};
             UPDATE audit_state SET value = {} WHERE name = 'chain_from';",
        n + 1
    ))?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    assert!(
        problems[0].contains(&format!("before the start of the chain (record {})", n + 1)),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&format!("record {} does not start the chain", n + 1))),
        "{problems:?}"
    );
    Ok(())
}

#[test]
fn removed_checkpoints_are_named() -> TestResult {
    // All of them.
    let env = with_history()?;
    let n = env.sql_i64("SELECT COUNT(*) FROM audit_checkpoints")?;
    assert!(n >= 3, "{n} checkpoints");
    env.sql("DELETE FROM audit_checkpoints")?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    for id in 1..=n {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("checkpoint {id} was removed"))),
            "checkpoint {id}: {problems:?}"
        );
    }

    // One in the middle.
    let env = with_history()?;
    env.sql("DELETE FROM audit_checkpoints WHERE id = 2")?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    assert!(
        problems[0].starts_with("checkpoint 2 was removed"),
        "{problems:?}"
    );
    Ok(())
}

#[test]
fn a_trail_without_checkpoints_beyond_checkpoint_every_is_refused() -> TestResult {
    let env = Env::new()?;
    let mut cfg = std::fs::read_to_string(env.config())?;
    cfg.push_str("\n[audit]\ncheckpoint_every = 3\n");
    std::fs::write(env.config(), cfg)?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.ok(&["key", "show", "k"])?;
    env.ok(&["key", "list"])?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(0), "{problems:?}");
    // Every checkpoint and every trace of one removed, the records renumbered and the chain
    // recomputed: a consistent chain, but far more records than checkpoint_every unsigned.
    let first = env.sql_i64("SELECT MIN(seq) FROM audit WHERE action = 'audit.checkpoint'")?;
    env.sql(
        "DELETE FROM audit_checkpoints; DELETE FROM audit WHERE action = 'audit.checkpoint';
         UPDATE audit SET seq = (SELECT COUNT(*) FROM audit a WHERE a.seq <= audit.seq);
         UPDATE sqlite_sequence SET seq = (SELECT MAX(seq) FROM audit) WHERE name = 'audit';",
    )?;
    rechain_from(&env, first)?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("covered by no checkpoint")
            && problems[0].contains("no checkpoint at all")
            && problems[0].contains("more than checkpoint_every (3)"),
        "{problems:?}"
    );
    Ok(())
}

#[test]
fn checkpoints_are_records_in_the_trail() -> TestResult {
    let env = with_history()?;
    // The history ends with a read-only command (`key show`), which logs in to no token and so
    // signs no checkpoint at its end (issue 23): the next checkpoint covers its record.
    let o = env.ok(&["audit", "checkpoint"])?;
    assert!(
        stdout(&o).contains("checkpoint signed over record"),
        "{}",
        stdout(&o)
    );
    // Asking again adds nothing: the only record after the last checkpoint is its own.
    let o = env.ok(&["audit", "checkpoint"])?;
    assert!(
        stdout(&o).contains("nothing new since the last checkpoint"),
        "{}",
        stdout(&o)
    );
    let before = env.sql_i64("SELECT COUNT(*) FROM audit_checkpoints")?;
    let o = env.ok(&["audit", "checkpoint"])?;
    assert!(stdout(&o).contains("nothing new"), "{}", stdout(&o));
    assert_eq!(
        env.sql_i64("SELECT COUNT(*) FROM audit_checkpoints")?,
        before
    );

    // Each checkpoint is a record (what `kms audit list` shows is what is shipped).
    let last =
        env.sql_rows("SELECT id, seq, head_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1")?;
    let o = env.ok(&["audit", "list", "--json"])?;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let rows = rows.as_array().ok_or("array")?;
    let cps: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["action"] == "audit.checkpoint")
        .collect();
    assert_eq!(cps.len() as i64, before, "{cps:?}");
    let mut f = last.split('|');
    let (id, seq, head) = (
        f.next().ok_or("id")?,
        f.next().ok_or("seq")?,
        f.next().ok_or("head")?,
    );
    let rec = cps
        .iter()
        .find(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("checkpoint={id} ")))
        })
        .ok_or("no record of the last checkpoint")?;
    assert_eq!(rec["actor"], "kms");
    assert_eq!(rec["outcome"], "ok");
    let detail = rec["detail"].as_str().ok_or("detail")?;
    assert!(detail.contains(&format!(" seq={seq} ")), "{detail}");
    assert!(detail.contains(&format!(" head={head} ")), "{detail}");
    assert!(detail.contains(" signature=M"), "base64 DER: {detail}");
    assert!(rec["seq"]
        .as_i64()
        .is_some_and(|s| s > seq.parse().unwrap_or(i64::MAX)));
    // They are part of the chain and the trail still verifies.
    let (code, problems) = verify(&env)?;
    assert_eq!(code, Some(0), "{problems}");

    // Cutting the tail with the checkpoints over it: a checkpoint whose record was cut goes
    // noticed. (A cut right after a checkpoint's own record, with every later checkpoint, leaves
    // nothing behind locally: the log server's copy has the records and the checkpoints.)
    let cp_record = env.sql_i64("SELECT MAX(seq) FROM audit WHERE action = 'audit.checkpoint'")?;
    let last = env.sql_rows("SELECT id || ' (over record ' || seq || ')' FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
    )?;
    env.sql(&format!(
        "DELETE FROM audit WHERE seq >= {cp_record};
             DELETE FROM audit_checkpoints WHERE seq >= {cp_record};"
    ))?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("checkpoint {last} has no audit record")),
        "{problems:?}"
    );
    Ok(())
}

#[test]
fn a_record_altered_with_the_chain_recomputed_is_named() -> TestResult {
    let env = with_longer_history()?;
    // The creation intent of k2: not the record its checkpoint signed (that is the creation
    // right after it), so naming the checkpoint's record would name the wrong one.
    let target = env
        .sql_i64("SELECT seq FROM audit WHERE action = 'key.create-intent' AND key_name = 'k2'")?;
    let signed = env.sql_i64(&format!(
        "SELECT MIN(seq) FROM audit_checkpoints WHERE seq >= {target}"
    ))?;
    assert!(signed > target, "checkpoint over {signed}, target {target}");
    env.sql(&format!(
        "UPDATE audit SET actor = 'someone-else' WHERE seq = {target}"
    ))?;
    rechain_from(&env, target)?;
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("record {target} differs from what checkpoint")),
        "{problems:?}"
    );
    assert!(
        !problems
            .iter()
            .any(|p| p.starts_with(&format!("record {} ", target - 1))),
        "{problems:?}"
    );
    Ok(())
}

/// The v2 text of checkpoint row `id`, as an intruder rebuilds it from the row.
fn checkpoint_text(env: &Env, id: &str) -> Res<Vec<u8>> {
    use sha2::Digest as _;
    let row = env.sql_rows(&format!(
        "SELECT seq, head_hash, at, prev_checkpoint_id, prev_head_hash, covered
             FROM audit_checkpoints WHERE id = {id}"
    ))?;
    let f: Vec<&str> = row.split('|').collect();
    let [seq, head, at, prev, prev_head, covered] = f.as_slice() else {
        return Err(format!("row {row}").into());
    };
    let digest = hex::encode(sha2::Sha384::digest(covered.as_bytes()));
    Ok(format!(
        "kms-audit-checkpoint/v2\nid: {id}\nseq: {seq}\nhead: {head}\nat: {at}\nprev: {prev}\nprev_head: {prev_head}\ncovered: {digest}\n"
    )
    .into_bytes())
}

#[test]
fn a_substituted_audit_key_is_named() -> TestResult {
    let env = with_history()?;
    let genuine = stdout(&env.ok(&["audit", "public-key"])?);
    // The intruder's own P-384 key; its public half replaces the audit key's in the inventory,
    // and every checkpoint is signed again with it.
    let key = env.path("intruder.pem");
    let key_s = key.to_str().ok_or("path")?;
    let o = openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        key_s,
    ])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let spki = env.path("intruder.der");
    let o = openssl(&[
        "ec",
        "-in",
        key_s,
        "-pubout",
        "-outform",
        "DER",
        "-out",
        spki.to_str().ok_or("path")?,
    ])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let spki_hex = hex::encode(std::fs::read(&spki)?);
    env.sql(&format!(
        "UPDATE key_versions SET public_key = {}
             WHERE key_id = (SELECT id FROM keys WHERE name = 'kms-audit')",
        env.sql_bytes(&spki_hex)
    ))?;
    let ids = env.sql_rows("SELECT id FROM audit_checkpoints ORDER BY id")?;
    for id in ids.lines() {
        let msg = env.write(&format!("cp-{id}.txt"), &checkpoint_text(&env, id)?)?;
        let sig = env.path(&format!("cp-{id}.sig"));
        let o = openssl(&[
            "dgst",
            "-sha384",
            "-sign",
            key_s,
            "-out",
            sig.to_str().ok_or("path")?,
            msg.to_str().ok_or("path")?,
        ])?;
        assert!(o.status.success(), "{}", stderr(&o));
        let sig_hex = hex::encode(std::fs::read(&sig)?);
        env.sql(&format!(
            "UPDATE audit_checkpoints SET signature = {} WHERE id = {id}",
            env.sql_bytes(&sig_hex)
        ))?;
    }
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    // Since issue 17 the edited key_versions row fails its HSM-made integrity tag first, and
    // verification names that; before, it named the key mismatch.
    assert!(
        problems[0].starts_with("the audit key in the inventory is not the one on the HSM")
            || (problems[0].contains("integrity check failed")
                && problems[0].contains("key_versions")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("has no valid signature from the audit key")),
        "the intruder's signatures were accepted: {problems:?}"
    );
    // The key printed for safekeeping is never the intruder's: the HSM's, or a refusal that
    // names the tampered row.
    let o = env.run(&["audit", "public-key"])?;
    if o.status.success() {
        assert_eq!(stdout(&o), genuine);
    } else {
        assert!(stderr(&o).contains("was not made by kms"), "{}", stderr(&o));
    }
    Ok(())
}

#[test]
fn a_grant_put_into_the_inventory_behind_kms_back_is_named() -> TestResult {
    let env = with_history()?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(0), "{out}");
    // An intruder with write access to the inventory file grants himself a key.
    env.sql(
        "INSERT INTO grants (id, principal, key_id, ops, not_before, not_after, ticket,
             justification, created_by, created_at, break_glass)
         SELECT 'g-forged000001', 'test-user', id, 'sign', '2020-01-01T00:00:00Z',
                '2099-01-01T00:00:00Z', 'X', 'x', 'nobody', '2020-01-01T00:00:00Z', 0
         FROM keys WHERE name = 'k'",
    )?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("grant g-forged000001"), "{out}");
    assert!(out.contains("outside kms"), "{out}");
    Ok(())
}
