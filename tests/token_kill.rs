//! No read-only command can empty a token by being killed (issue 23, item 4). SoftHSM2's file
//! store truncates and rewrites `<tokendir>/<uuid>/token.object` at every `C_Login`; a process
//! SIGKILLed inside that rewrite leaves it at 0 bytes and the token, with every key on it, is
//! gone. So read-only commands must never log in: each one is run to its end and must leave both
//! tokens' files untouched (mtime and bytes), then 200 SIGKILLs at seeded random points 0–70 ms
//! into those commands must leave both files non-empty, untouched, and every object in place
//! (counted by pkcs11-tool, logged in, from the test itself). Real SoftHSM2, the real binary.

use common::*;
use kms_testkit as common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

/// What a login would change: the file's modification time and its bytes.
fn state(p: &PathBuf) -> Res<(SystemTime, Vec<u8>)> {
    Ok((std::fs::metadata(p)?.modified()?, std::fs::read(p)?))
}

const KILLS: usize = 200;
const SEED: u64 = 0x6b6d_735f_6b69_6c6c;

#[test]
fn read_only_commands_never_log_in_and_survive_sigkill() -> TestResult {
    let env = Env::new_on_store("file")?;
    env.ok(&["--reason", "CHG-23 ceremony", "backup", "init"])?;
    env.ok(&["backup", "sync"])?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.create("s", "aes-256", "encrypt,decrypt")?;
    let msg = env.write("msg", b"signed before the kills")?;
    let sig = env.path("sig");
    env.sign_file("k", &msg, &sig)?;
    let (msg, sig) = (path(&msg)?.to_owned(), path(&sig)?.to_owned());

    let commands: Vec<Vec<&str>> = vec![
        vec!["key", "list"],
        vec!["key", "show", "k"],
        vec!["key", "history", "k"],
        vec!["key", "public", "k"],
        vec!["key", "verify", "k", "--in", &msg, "--sig", &sig],
        vec!["grant", "list"],
        vec!["audit", "list"],
        vec!["audit", "verify"],
        vec!["audit", "public-key"],
        vec!["inventory", "verify"],
        vec!["reconcile"],
        vec!["token", "list"],
        vec!["token", "list", "--objects"],
        vec!["backup", "status"],
        vec!["principal", "list"],
        vec!["access", "list"],
        vec!["report", "rotation"],
    ];

    let labels = ["kms-primary", "kms-backup"];
    let files = [token_file(&env, labels[0])?, token_file(&env, labels[1])?];
    let counts = [env.object_count(labels[0])?, env.object_count(labels[1])?];
    assert!(
        counts[0] >= 8 && counts[1] >= 7,
        "objects before: {counts:?}"
    );
    let before = [state(&files[0])?, state(&files[1])?];

    // Each command, run to its end, writes nothing to either token file: it never logged in.
    let mut took = Vec::new();
    for args in &commands {
        let t = Instant::now();
        env.ok(args)?;
        took.push((args.join(" "), t.elapsed()));
        for (file, was) in files.iter().zip(&before) {
            assert!(
                state(file)? == *was,
                "`kms {}` rewrote {} (it logged in to a token)",
                args.join(" "),
                file.display()
            );
        }
    }
    eprintln!("one run of each command: {took:?}");

    // SIGKILLs at seeded random points 0–70 ms into random read-only commands.
    let mut rng = Rng(SEED);
    let started = Instant::now();
    let mut finished_before_kill = 0;
    for _ in 0..KILLS {
        let args = &commands[rng.below(commands.len() as u64) as usize];
        let delay = Duration::from_micros(rng.below(70_001));
        let mut child = env
            .kms_as(actor_for(args))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(delay);
        if child.try_wait()?.is_some() {
            finished_before_kill += 1;
        }
        let _ = child.kill(); // SIGKILL
        child.wait()?;
    }
    eprintln!(
        "{KILLS} SIGKILLs (seed {SEED:#x}) over {} commands in {:?}; {finished_before_kill} had already finished",
        commands.len(),
        started.elapsed()
    );

    for (file, was) in files.iter().zip(&before) {
        let now = state(file)?;
        assert!(!now.1.is_empty(), "{} was emptied", file.display());
        assert!(
            now == *was,
            "{} was rewritten by a killed read-only command",
            file.display()
        );
    }
    let after = [env.object_count(labels[0])?, env.object_count(labels[1])?];
    eprintln!("objects (primary, backup): before {counts:?}, after {after:?}");
    assert_eq!(counts, after, "objects lost");

    // And kms still works on both tokens.
    env.ok(&["reconcile", "--login"])?;
    env.ok(&["key", "verify", "k", "--in", &msg, "--sig", &sig])?;
    let o = env.ok(&["audit", "verify"])?;
    assert!(stdout(&o).contains("audit trail intact"), "{}", stdout(&o));
    Ok(())
}

#[test]
fn reconcile_without_login_checks_public_halves_and_names_the_rest() -> TestResult {
    let env = Env::new_on_store("file")?;
    env.ok(&["--reason", "CHG-23 ceremony", "backup", "init"])?;
    env.ok(&["backup", "sync"])?;
    env.create("k", "ec-p384", "sign,verify")?;
    env.create("s", "aes-256", "encrypt,decrypt")?;
    let primary = token_file(&env, "kms-primary")?;
    let before = state(&primary)?;

    let o = env.ok(&["reconcile", "--json"])?;
    let r = json(&o)?;
    assert_eq!(r["logged_in"], false, "{r}");
    let unchecked: Vec<&str> = r["not_checked_without_login"]
        .as_array()
        .ok_or("array")?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // The AES key and its copy are private objects; the key pairs are checked by their public
    // halves.
    assert!(unchecked.contains(&"primary: s v1"), "{unchecked:?}");
    assert!(
        unchecked.contains(&"backup: s v1 (backup copy)"),
        "{unchecked:?}"
    );
    assert!(
        !unchecked.iter().any(|u| u.contains(" k v")),
        "{unchecked:?}"
    );
    let o = env.ok(&["reconcile"])?;
    assert!(
        stdout(&o).contains("`kms reconcile --login` checks them"),
        "{}",
        stdout(&o)
    );

    // A key pair's public half replaced by another key's (same CKA_ID and label): found
    // without a login.
    let id = env.object_id("k")?;
    let o = env.pkcs11_tool(
        "kms-primary",
        &["--delete-object", "--type", "pubkey", "--id", &id],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let other = openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        path(&env.path("other.pem"))?,
    ])?;
    assert!(other.status.success(), "{}", stderr(&other));
    let pubder = env.path("other-pub.der");
    let o = openssl(&[
        "ec",
        "-in",
        path(&env.path("other.pem"))?,
        "-pubout",
        "-outform",
        "DER",
        "-out",
        path(&pubder)?,
    ])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.pkcs11_tool(
        "kms-primary",
        &[
            "--write-object",
            path(&pubder)?,
            "--type",
            "pubkey",
            "--id",
            &id,
            "--label",
            "kms:k:v1",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let before = (before, state(&primary)?);
    let o = env.run(&["reconcile"])?;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("public key is not the one the inventory recorded"),
        "{}",
        stdout(&o)
    );
    assert!(
        state(&primary)? == before.1,
        "reconcile without --login logged in"
    );
    Ok(())
}
