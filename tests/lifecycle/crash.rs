//! SIGKILL at every step of rotation and disposal loses nothing.

use super::*;

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
