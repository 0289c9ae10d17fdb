//! The PUK guard (issue 31): wrong PUKs count down, kms never spends the PUK's last try without
//! `--last-try`, and a blocked PUK says so and what to do. On a card of this test's own (a
//! blocked PUK ruins a card).

use serde_json::Value;

use super::own_card::OwnCard;
use super::*;

/// `kms card unblock` on `serial` with `puk` (and the factory PIN as the new PIN).
fn unblock(env: &Env, serial: &str, puk: &str, last_try: bool) -> Res<Output> {
    let mut c = env.kms_as(OFFICER);
    c.env("PUK", puk).env("NEWPIN", PIN).args([
        "card",
        "unblock",
        "--serial",
        serial,
        "--puk",
        "env:PUK",
        "--new-pin",
        "env:NEWPIN",
    ]);
    if last_try {
        c.arg("--last-try");
    }
    Ok(c.output()?)
}

fn puk_tries(env: &Env, serial: &str) -> Res<u64> {
    let o = env.ok(&["card", "status", "--serial", serial, "--json"])?;
    let s: Value = serde_json::from_slice(&o.stdout)?;
    s["puk_tries_left"]
        .as_u64()
        .ok_or_else(|| format!("no puk_tries_left: {s}").into())
}

#[test]
fn three_runs_with_a_wrong_puk_leave_one_try_and_a_blocked_puk_says_so() -> TestResult {
    // Own card, but the same pcscd: a reader in use by one process is skipped by another's
    // `card list`, so this test runs alone like the others.
    let _cards = cards();
    let env = Env::new()?;
    let card = OwnCard::start(&env)?;
    let serial = card.serial.as_str();
    const WRONG: &str = "87654321";
    assert_eq!(puk_tries(&env, serial)?, 3, "a new card's PUK tries");
    let o = env.ok(&["card", "status", "--serial", serial])?;
    assert!(stdout(&o).contains("PUK tries left:  3"), "{}", stdout(&o));

    // Three runs with a stale PUK: two tries spent, the third run refused before any try.
    assert_fails(
        &unblock(&env, serial, WRONG, false)?,
        5,
        &["wrong PUK; tries left before the PUK is blocked too: 2"],
    );
    assert_fails(
        &unblock(&env, serial, WRONG, false)?,
        5,
        &["wrong PUK; tries left before the PUK is blocked too: 1"],
    );
    assert_fails(
        &unblock(&env, serial, WRONG, false)?,
        5,
        &["one PUK try is left", "--last-try"],
    );
    assert_eq!(puk_tries(&env, serial)?, 1, "the guard spent no try");
    // Even the right PUK needs --last-try now; with it, it unblocks and the counter is reset.
    assert_fails(
        &unblock(&env, serial, PUK, false)?,
        5,
        &["one PUK try is left"],
    );
    let o = unblock(&env, serial, PUK, true)?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        puk_tries(&env, serial)?,
        3,
        "a right PUK resets its counter"
    );
    let rows: Value = serde_json::from_slice(
        &env.ok(&["audit", "list", "--json", "--limit", "1000"])?
            .stdout,
    )?;
    assert!(
        rows.as_array().is_some_and(|a| a.iter().any(|r| {
            r["action"] == "card.unblock"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("--last-try"))
        })),
        "the audit records --last-try: {rows}"
    );

    // Down to one try again; --last-try spends it, and the card then says the PUK is blocked.
    for left in [2, 1] {
        assert_fails(
            &unblock(&env, serial, WRONG, false)?,
            5,
            &[&format!("tries left before the PUK is blocked too: {left}")],
        );
    }
    assert_fails(
        &unblock(&env, serial, WRONG, true)?,
        5,
        &["PUK is blocked", "PIV reset", "erases every key"],
    );
    assert_eq!(puk_tries(&env, serial)?, 0);
    // Blocked: refused before the card is asked, --last-try or not, right PUK or not.
    for last_try in [false, true] {
        let o = unblock(&env, serial, PUK, last_try)?;
        assert_fails(
            &o,
            5,
            &["PUK is blocked", "ykman piv reset", "kms card enrol"],
        );
        assert!(!stderr(&o).contains("tries left: 0"), "{}", stderr(&o));
    }
    Ok(())
}
