//! A wrong PIN counts down, blocks the card, and the PUK unblocks it.

use super::*;

#[test]
fn a_wrong_pin_counts_down_blocks_and_the_puk_unblocks() -> TestResult {
    let _cards = cards();
    let env = Env::new()?;
    let serial = card(3)?;
    let tries = |env: &Env| -> Res<u64> {
        let o = env.ok(&["card", "status", "--serial", &serial, "--json"])?;
        let s: Value = serde_json::from_slice(&o.stdout)?;
        s["pin_tries_left"]
            .as_u64()
            .ok_or_else(|| format!("no tries: {s}").into())
    };
    assert_eq!(tries(&env)?, 3);
    let enrol_wrong = || {
        kms_pin(
            &env,
            OFFICER,
            "000000",
            &[
                "card",
                "enrol",
                "--principal",
                "dave",
                "--role",
                "manager",
                "--serial",
                &serial,
                "--card-pin",
                "env:CARD_PIN",
                "--force",
            ],
        )
    };
    assert_fails(
        &enrol_wrong()?,
        5,
        &["wrong PIN; tries left before the PIN is blocked: 2"],
    );
    assert_fails(
        &enrol_wrong()?,
        5,
        &["wrong PIN; tries left before the PIN is blocked: 1"],
    );
    // kms does not use the last try on its own (a stale configured PIN must not block a card).
    assert_fails(
        &enrol_wrong()?,
        5,
        &["one PIN try is left", "KMS_ALLOW_FINAL_PIN_TRY"],
    );
    assert_eq!(tries(&env)?, 1);
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", "000000")
        .env("KMS_ALLOW_FINAL_PIN_TRY", "1")
        .args([
            "card",
            "enrol",
            "--principal",
            "dave",
            "--role",
            "manager",
            "--serial",
            &serial,
            "--card-pin",
            "env:CARD_PIN",
            "--force",
        ])
        .output()?;
    assert_fails(&o, 5, &["PIN is blocked", "kms card unblock"]);
    assert_fails(&enrol_wrong()?, 5, &["PIN is blocked"]);
    assert_eq!(tries(&env)?, 0);
    // A wrong PUK counts down too; the right one unblocks and sets a new PIN.
    let o = env
        .kms_as(OFFICER)
        .env("PUK", "87654321")
        .env("NEWPIN", PIN)
        .args([
            "card",
            "unblock",
            "--serial",
            &serial,
            "--puk",
            "env:PUK",
            "--new-pin",
            "env:NEWPIN",
        ])
        .output()?;
    assert_fails(&o, 5, &["wrong PUK"]);
    let o = env
        .kms_as(OFFICER)
        .env("PUK", PUK)
        .env("NEWPIN", PIN)
        .args([
            "card",
            "unblock",
            "--serial",
            &serial,
            "--puk",
            "env:PUK",
            "--new-pin",
            "env:NEWPIN",
        ])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(tries(&env)?, 3);
    // No PIN on argv: a literal PIN is refused as a source.
    let o = env.run(&[
        "card",
        "enrol",
        "--principal",
        "x",
        "--role",
        "manager",
        "--card-pin",
        "123456",
    ])?;
    assert_fails(&o, 2, &["never the PIN itself"]);

    // The other errors a person meets, each saying what to do.
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", PIN)
        .env("MGM", "0102030405060708010203040506070801020304050607ff")
        .args([
            "card",
            "enrol",
            "--principal",
            "dave",
            "--role",
            "manager",
            "--serial",
            &serial,
            "--card-pin",
            "env:CARD_PIN",
            "--mgm-key-source",
            "env:MGM",
            "--force",
        ])
        .output()?;
    assert_fails(&o, 5, &["refused the management key", "--mgm-key-source"]);
    assert_eq!(tries(&env)?, 3, "a wrong management key costs no PIN try");
    let o = env.run(&["card", "status", "--serial", "1"])?;
    assert_fails(&o, 5, &["no card with serial 1", "cards present"]);
    let o = env
        .kms_as(OFFICER)
        .env("PCSCLITE_CSOCK_NAME", env.path("no-pcscd.comm"))
        .args(["card", "list"])
        .output()?;
    assert_fails(&o, 5, &["is pcscd running"]);
    Ok(())
}
