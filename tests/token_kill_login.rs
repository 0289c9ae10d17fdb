//! No SIGKILL of a command that must log in empties a token, on SoftHSM2's transactional `db`
//! object store (issue 23, item 4). Debian's softhsm2 is built with the `file` store only, whose
//! every `C_Login` truncates and rewrites `<tokendir>/<uuid>/token.object`: a command killed
//! then leaves it empty and the token is gone (tests/token_damage.rs; measured below). The `db`
//! store (SoftHSM2 2.6.1 built by scripts/lib/softhsm-db.sh, selected by
//! `KMS_SOFTHSM_BACKEND=db`) changes its `sqlite3.db` in journalled transactions. Here, 200
//! SIGKILLs (fewer, at least 60, if a loaded machine stretches the loop past 40 s) at seeded
//! random points inside the run time of `key sign`, `key encrypt`, `key decrypt`,
//! `grant add`, `key create` and `key rotate` must leave both tokens' databases intact, every
//! object that was on them in place (pkcs11-tool, logged in, from the test itself) and kms
//! working. Real SoftHSM2, the real binary.
//!
//! The db build is made once (minutes) and cached outside the checkout; `scripts/test` makes it
//! and sets `KMS_TEST_SCRIPT=1`, under which a missing build FAILS the test. Run by hand without
//! the build, the test says so and is skipped.
//!
//! `file_store_is_emptied_by_killed_logins` (ignored: a measurement, not a requirement) runs the
//! same loop on the file store and counts how many kills emptied a token:
//! `cargo test --all-features --test token_kill_login -- --ignored --nocapture`.

use common::*;
use kms_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const KILLS: usize = 200;
/// The loop stops early (after at least [`MIN_KILLS`]) when a loaded machine stretches it past
/// this; `KMS_TOKEN_KILLS=N` runs exactly N kills with no time limit (for measurements).
const TIME_LIMIT: Duration = Duration::from_secs(40);
const MIN_KILLS: usize = 60;

/// How many kills to make, and whether the time limit applies.
fn kills() -> (usize, bool) {
    match std::env::var("KMS_TOKEN_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(n) => (n, false),
        None => (KILLS, true),
    }
}
const SEED: u64 = 0x6c6f_6769_6e5f_6b6c;
const LABELS: [&str; 2] = ["kms-primary", "kms-backup"];

/// Where scripts/lib/softhsm-db.sh caches its build (the same rule as `softhsm_db_prefix`).
fn db_build() -> Option<PathBuf> {
    let prefix = match std::env::var_os("KMS_SOFTHSM_DB_CACHE") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            cache.join("kms/softhsm2-2.6.1-db")
        }
    };
    prefix.join(".complete").is_file().then_some(prefix)
}

/// A test environment and what the loop needs: a key pair `k` (with a signature made before
/// the kills), an AES key `s` (with a ciphertext), a key `r` to rotate, backup paired.
struct Fixture {
    env: Env,
    msg: String,
    sig: String,
    ct: String,
}

fn fixture(backend: &str) -> Res<Fixture> {
    let env = Env::new_on_store(backend)?;
    env.ok(&["--reason", "CHG-23 ceremony", "backup", "init"])?;
    env.ok(&["backup", "sync"])?;
    env.create("k", "ec-p256", "sign,verify")?;
    env.create("s", "aes-256", "encrypt,decrypt")?;
    env.create("r", "aes-256", "encrypt,decrypt")?;
    let msg = env.write("msg", b"signed before the kills")?;
    let sig = env.path("sig");
    env.sign_file("k", &msg, &sig)?;
    let ct = env.path("ct");
    env.ok(&[
        "key",
        "encrypt",
        "s",
        "--in",
        path(&msg)?,
        "--out",
        path(&ct)?,
    ])?;
    Ok(Fixture {
        msg: path(&msg)?.to_owned(),
        sig: path(&sig)?.to_owned(),
        ct: path(&ct)?.to_owned(),
        env,
    })
}

/// The token's objects as (kind, CKA_ID) pairs, sorted, from pkcs11-tool (logged in).
fn objects(env: &Env, label: &str) -> Res<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut kind = String::new();
    for line in env.list_objects(label)?.lines() {
        if line.contains("Object;") || line.starts_with("Secret Key Object") {
            kind = line.trim().to_owned();
        } else if let Some(id) = line.trim().strip_prefix("ID:") {
            out.push((kind.clone(), id.trim().to_owned()));
        }
    }
    out.sort();
    Ok(out)
}

/// The login-needing commands of the loop; `i` makes `key create` names unique.
fn command(f: &Fixture, which: u64, i: usize, until: &str) -> Vec<String> {
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    match which {
        0 => s(&[
            "key",
            "sign",
            "k",
            "--in",
            &f.msg,
            "--out",
            &f.env.path("sig2").display().to_string(),
        ]),
        1 => s(&[
            "key",
            "encrypt",
            "s",
            "--in",
            &f.msg,
            "--out",
            &f.env.path("ct2").display().to_string(),
        ]),
        2 => s(&[
            "key",
            "decrypt",
            "s",
            "--in",
            &f.ct,
            "--out",
            &f.env.path("pt2").display().to_string(),
        ]),
        3 => s(&[
            "--reason",
            "CHG-23",
            "grant",
            "add",
            USER,
            "k",
            "--ops",
            "sign,verify",
            "--until",
            until,
            "--ticket",
            "TEST-23",
            "--justification",
            "kill loop",
        ]),
        4 => create_args(
            &format!("n{i}"),
            "aes-256",
            "encrypt,decrypt",
            &["--reason", "CHG-23"],
        )
        .iter()
        .map(|a| (*a).to_owned())
        .collect(),
        _ => s(&["--reason", "CHG-23", "key", "rotate", "r"]),
    }
}

const COMMANDS: u64 = 6;

/// How long each command of the loop takes when it runs to its end (here, under this load):
/// kills land at random points inside that time, so that they hit the logins and the writes
/// (a `key sign` takes ~180 ms and first writes to a token ~75 ms after its start, so a fixed
/// 0–70 ms window would miss nearly all of them).
fn calibrate(f: &Fixture, until: &str) -> Res<Vec<Duration>> {
    (0..COMMANDS)
        .map(|which| {
            let args = command(f, which, 1_000_000 + which as usize, until);
            let strs: Vec<&str> = args.iter().map(String::as_str).collect();
            let t = Instant::now();
            f.env.ok(&strs)?;
            Ok(t.elapsed())
        })
        .collect()
}

/// Run `kms ARGS` and SIGKILL it `delay` after its start; whether it had already finished.
fn run_and_kill(env: &Env, args: &[String], delay: Duration) -> Res<bool> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = env
        .kms_as(actor_for(&strs))
        .args(&strs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(delay);
    let finished = child.try_wait()?.is_some();
    let _ = child.kill(); // SIGKILL
    child.wait()?;
    Ok(finished)
}

/// The files SoftHSM2 keeps a token in on `store` ("token.object" or "sqlite3.db").
fn store_files(env: &Env, store: &str) -> Res<Vec<PathBuf>> {
    LABELS
        .iter()
        .map(|l| Ok(env.token_dir(l)?.join(store)))
        .collect()
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn until() -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(20)).to_string()
}

#[test]
fn login_commands_survive_sigkill_on_the_db_store() -> TestResult {
    if db_build().is_none() {
        if std::env::var_os("KMS_TEST_SCRIPT").is_some() {
            return Err(
                "SoftHSM2's db build is missing: scripts/test must build it \
                        (scripts/lib/softhsm-db.sh)"
                    .into(),
            );
        }
        eprintln!(
            "SKIPPED: no SoftHSM2 db build; make it once with \
             `KMS_SOFTHSM_BACKEND=db KMS_DEV_DIR=$(mktemp -d) scripts/setup-softhsm` (or scripts/test)"
        );
        return Ok(());
    }
    let f = fixture("db")?;
    let env = &f.env;
    let dbs = store_files(env, "sqlite3.db")?;

    let until = until();
    let took = calibrate(&f, &until)?;
    let before = [objects(env, LABELS[0])?, objects(env, LABELS[1])?];
    let mut rng = Rng(SEED);
    let started = Instant::now();
    let mut finished_before_kill = 0;
    let mut per_command = [0usize; COMMANDS as usize];
    let (kills, limited) = kills();
    let mut made = 0;
    for i in 0..kills {
        if limited && i >= MIN_KILLS && started.elapsed() > TIME_LIMIT {
            break;
        }
        made += 1;
        let which = rng.below(COMMANDS);
        per_command[which as usize] += 1;
        let args = command(&f, which, i, &until);
        let delay = Duration::from_micros(rng.below(took[which as usize].as_micros() as u64 + 1));
        if run_and_kill(env, &args, delay)? {
            finished_before_kill += 1;
        }
        for db in &dbs {
            assert!(
                size(db) > 0,
                "kill {i} (`kms {}`) emptied {}",
                args.join(" "),
                db.display()
            );
        }
    }
    eprintln!(
        "{made} SIGKILLs (seed {SEED:#x}) at random points inside each command's run time \
         {took:?}; per command sign/encrypt/decrypt/grant/create/rotate {per_command:?}; \
         in {:?}; {finished_before_kill} had already finished",
        started.elapsed()
    );
    assert!(
        before[0].len() >= 8 && before[1].len() >= 7,
        "objects before: {before:?}"
    );

    // Each token's database is a sound SQLite database (a hot journal is rolled back here as
    // SoftHSM2 would), and every object on it before the kills is still there.
    for db in &dbs {
        let o = std::process::Command::new("sqlite3")
            .arg(db)
            .arg("PRAGMA integrity_check;")
            .output()?;
        assert_eq!(stdout(&o).trim(), "ok", "{}: {}", db.display(), stderr(&o));
    }
    for (label, was) in LABELS.iter().zip(&before) {
        let now = objects(env, label)?;
        let lost: Vec<_> = was.iter().filter(|o| !now.contains(o)).collect();
        eprintln!("{label}: {} objects before, {} after", was.len(), now.len());
        assert!(lost.is_empty(), "{label} lost objects: {lost:?}");
    }

    // And kms still works on both tokens with the keys made before the kills.
    env.ok(&["key", "verify", "k", "--in", &f.msg, "--sig", &f.sig])?;
    let back = env.path("back");
    env.ok(&["key", "decrypt", "s", "--in", &f.ct, "--out", path(&back)?])?;
    assert_eq!(std::fs::read(&back)?, b"signed before the kills");
    let sig = env.path("sig3");
    env.ok(&["key", "sign", "k", "--in", &f.msg, "--out", path(&sig)?])?;
    env.ok(&["key", "verify", "k", "--in", &f.msg, "--sig", path(&sig)?])?;
    let o = env.run(&["reconcile", "--login"])?;
    eprintln!(
        "reconcile --login after the kills: exit {:?}\n{}",
        o.status.code(),
        stdout(&o)
    );
    // Killed `key create`s leave orphans and pending versions, which reconcile names (exit 1).
    // A kill inside SoftHSM2's object creation can leave an object whose attributes cannot be
    // read (CKR_ATTRIBUTE_VALUE_INVALID): it is listed as unreadable and the rest of the token is
    // still checked, never "could not be checked".
    assert!(
        !stdout(&o).contains("missing"),
        "an object the inventory records is missing from a token: {}",
        stdout(&o)
    );
    assert!(
        !stdout(&o).contains("could not be checked"),
        "reconcile gave up on a token: {}",
        stdout(&o)
    );
    Ok(())
}

#[test]
#[ignore = "a measurement of the file store (minutes), not a requirement; run with --ignored"]
fn file_store_is_emptied_by_killed_logins() -> TestResult {
    let until = until();
    let mut rng = Rng(SEED);
    let started = Instant::now();
    let mut f = fixture("file")?;
    let mut took = calibrate(&f, &until)?;
    let mut files = store_files(&f.env, "token.object")?;
    let mut emptied_at = Vec::new();
    let mut since = 0;
    let (kills, _) = kills();
    for i in 0..kills {
        let which = rng.below(COMMANDS);
        let args = command(&f, which, i, &until);
        let delay = Duration::from_micros(rng.below(took[which as usize].as_micros() as u64 + 1));
        run_and_kill(&f.env, &args, delay)?;
        since += 1;
        if let Some(empty) = files.iter().find(|p| size(p) == 0) {
            eprintln!(
                "kill {i} (`kms {}`) emptied {}",
                args.join(" "),
                empty.display()
            );
            emptied_at.push(since);
            since = 0;
            f = fixture("file")?;
            took = calibrate(&f, &until)?;
            files = store_files(&f.env, "token.object")?;
        }
    }
    eprintln!(
        "file store: {kills} SIGKILLs (seed {SEED:#x}) in {:?} emptied a token {} times; \
         kills between emptyings: {emptied_at:?}",
        started.elapsed(),
        emptied_at.len()
    );
    Ok(())
}
