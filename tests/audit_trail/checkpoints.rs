//! Checkpoints: records removed from the start or unhashed, removed checkpoints, checkpoints as
//! records, a chain recomputed after an alteration.

use super::*;

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
