//! `kms inventory migrate --to postgres://…` (issue 13): an SQLite inventory with keys, grants
//! and an audit trail moves into a new PostgreSQL database with its integrity tags, its hash
//! chain and its checkpoints intact, and kms then runs on it. Needs a PostgreSQL server
//! (`KMS_TEST_POSTGRES`, as scripts/test's second pass sets); skipped with a note without one.

use common::*;
use kms_testkit as common;

#[test]
fn an_sqlite_inventory_moves_to_postgresql_intact() -> TestResult {
    let Some(target) = PgDb::create()? else {
        eprintln!("skipped: no PostgreSQL server (KMS_TEST_POSTGRES)");
        return Ok(());
    };
    let env = Env::new_sqlite()?;
    env.create("sig", "ec-p384", "sign,verify")?;
    env.create("dek", "aes-256", "encrypt,decrypt")?;
    let m = env.write("m", b"before the move")?;
    env.ok(&["key", "sign", "sig", "--in", path(&m)?, "--out", "-"])?;
    env.ok(&["audit", "checkpoint"])?;
    let keys_before = stdout(&env.ok(&["key", "list", "--json"])?);
    let url = target.url()?;
    let password = format!("file:{}", target.password_file().display());

    // Only an officer moves it.
    let o = env.run_as(
        USER,
        &[
            "inventory",
            "migrate",
            "--to",
            &url,
            "--password",
            &password,
        ],
    )?;
    assert_fails(&o, 4, &[]);
    let o = env.ok(&[
        "inventory",
        "migrate",
        "--to",
        &url,
        "--password",
        &password,
    ])?;
    assert!(stdout(&o).contains("copied"), "{}", stdout(&o));
    // A second move into the same database is refused: it is not empty any more.
    let o = env.run(&[
        "inventory",
        "migrate",
        "--to",
        &url,
        "--password",
        &password,
    ])?;
    assert_fails(&o, 6, &["already holds"]);

    // kms on the PostgreSQL inventory: the same keys, every row's tag and the chain intact.
    let cfg = std::fs::read_to_string(env.config())?;
    let line = cfg
        .lines()
        .find(|l| l.starts_with("path = ") && l.contains("kms.db"))
        .ok_or("no inventory path")?
        .to_owned();
    std::fs::write(
        env.config(),
        cfg.replacen(
            &line,
            &format!("{line}\npostgres = \"{url}\"\npassword = \"{password}\""),
            1,
        ),
    )?;
    assert_eq!(stdout(&env.ok(&["key", "list", "--json"])?), keys_before);
    env.ok(&["inventory", "verify"])?;
    let o = env.ok(&["audit", "verify"])?;
    assert!(stdout(&o).contains("intact"), "{}", stdout(&o));
    let o = env.ok(&["audit", "list", "--json"])?;
    assert!(
        stdout(&o).contains("inventory.migrate-intent"),
        "the move is on the record"
    );
    // It keeps working: a signature, a new key, and the chain still verifies.
    env.ok(&["key", "sign", "sig", "--in", path(&m)?, "--out", "-"])?;
    env.create("after", "ec-p384", "sign,verify")?;
    let o = env.ok(&["audit", "verify"])?;
    assert!(stdout(&o).contains("intact"), "{}", stdout(&o));
    target.drop_database();
    Ok(())
}
