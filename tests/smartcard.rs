//! Smartcards (issue 8) on **virtual PIV cards** behind a real pcscd (tests/virtual-piv,
//! started by `scripts/test` through scripts/lib/virtual-piv.sh, which exports
//! `PCSCLITE_CSOCK_NAME` and `VPIV_SERIALS`): the real `yubikey` crate and real OpenSC drive them.
//! Each test uses its own card (by index in `VPIV_SERIALS`), so PIN counters never interfere.
//!
//! Real hardware: `KMS_TEST_YUBIKEY_SERIAL=12345678 cargo test --test smartcard -- --ignored`
//! (the card's PIV application must have its factory PIN, PUK and management key; the test
//! uses retired slot 95).

use common::*;
use kms_testkit as common;

#[path = "smartcard/errors.rs"]
mod errors;
#[path = "smartcard/logs.rs"]
mod logs;
#[path = "smartcard/on_card.rs"]
mod on_card;
#[path = "smartcard/opensc.rs"]
mod opensc;
#[path = "smartcard/own_card.rs"]
mod own_card;
#[path = "smartcard/people.rs"]
mod people;
#[path = "smartcard/pin.rs"]
mod pin;
#[path = "smartcard/puk.rs"]
mod puk;

use std::process::{Command, Output};

use serde_json::Value;

const PIN: &str = "123456";
const PUK: &str = "12345678";

/// The cards are shared by the tests of this file: one at a time.
static CARDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cards() -> std::sync::MutexGuard<'static, ()> {
    CARDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serial of virtual card `i`.
fn card(i: usize) -> Res<String> {
    let serials = std::env::var("VPIV_SERIALS").map_err(|_| {
        "VPIV_SERIALS is not set: run the tests with scripts/test, which starts the virtual PIV cards (scripts/lib/virtual-piv.sh)"
    })?;
    Ok(serials
        .split_whitespace()
        .nth(i)
        .ok_or_else(|| format!("no virtual card {i} in VPIV_SERIALS={serials}"))?
        .to_owned())
}

/// `kms ARGS` as `actor` with the card PIN in CARD_PIN.
fn kms_pin(env: &Env, actor: &str, pin: &str, args: &[&str]) -> Res<Output> {
    Ok(env.kms_as(actor).env("CARD_PIN", pin).args(args).output()?)
}

fn enrol(env: &Env, who: &str, role: &str, serial: &str) -> Res<Output> {
    kms_pin(
        env,
        OFFICER,
        PIN,
        &[
            "card",
            "enrol",
            "--principal",
            who,
            "--role",
            role,
            "--serial",
            serial,
            "--card-pin",
            "env:CARD_PIN",
            "--force",
        ],
    )
}

#[test]
fn approvals_are_signed_on_the_approvers_cards() -> TestResult {
    let _cards = cards();
    let env = Env::new()?;
    let (a, b) = (card(0)?, card(1)?);
    let o = env.ok(&["card", "list", "--json"])?;
    let cards: Value = serde_json::from_slice(&o.stdout)?;
    let serials: Vec<String> = cards
        .as_array()
        .ok_or("cards")?
        .iter()
        .filter_map(|c| c["serial"].as_u64().map(|s| s.to_string()))
        .collect();
    assert!(serials.contains(&a) && serials.contains(&b), "{cards}");

    for (who, role, serial) in [("alice", "security-admin", &a), ("bob", "manager", &b)] {
        let o = enrol(&env, who, role, serial)?;
        assert!(o.status.success(), "enrol {who}: {}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("piv:serial={serial};slot=9c")),
            "{}",
            stdout(&o)
        );
    }
    // A slot holding someone's approval key is never overwritten, --force or not.
    let o = kms_pin(
        &env,
        OFFICER,
        PIN,
        &[
            "card",
            "enrol",
            "--principal",
            "frank",
            "--role",
            "manager",
            "--serial",
            &a,
            "--card-pin",
            "env:CARD_PIN",
        ],
    )?;
    assert_fails(&o, 4, &["holds the approval key of 'alice'"]);
    let o = enrol(&env, "frank", "manager", &a)?;
    assert_fails(&o, 4, &["holds the approval key of 'alice'"]);
    // Even at trace level, no PIN reaches the logs (the yubikey crate traces APDUs).
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", PIN)
        .env("KMS_LOG", "trace")
        .args([
            "card",
            "enrol",
            "--principal",
            "alice",
            "--serial",
            &a,
            "--card-pin",
            "env:CARD_PIN",
            "--force",
        ])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        !log.contains(PIN) && !log.contains("49, 50, 51, 52, 53, 54"),
        "PIN in the log"
    );
    let o = env.ok(&["card", "status", "--serial", &a, "--json"])?;
    let s: Value = serde_json::from_slice(&o.stdout)?;
    assert!(
        s["slots"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["slot"] == "9c")),
        "slot 9c in use: {s}"
    );

    // The access workflow with approvals signed on the cards.
    env.ok(&["principal", "add", "carol", "--role", "user"])?;
    env.ok(&create_args("release", "ec-p384", "sign,verify", &[]))?;
    let o = env.run_as(
        "carol",
        &[
            "access",
            "request",
            "--key",
            "release",
            "--ops",
            "sign",
            "--duration",
            "7d",
            "--ticket",
            "CHG-88",
            "--justification",
            "release signing",
            "--json",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let id = serde_json::from_slice::<Value>(&o.stdout)?["id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    for (who, verb) in [("alice", "verify"), ("bob", "approve")] {
        let o = kms_pin(
            &env,
            who,
            PIN,
            &["access", verb, &id, "--card-pin", "env:CARD_PIN"],
        )?;
        assert!(o.status.success(), "{who} {verb}: {}", stderr(&o));
    }
    let m = env.write("m", b"v1.0")?;
    let o = env.run_as(
        "carol",
        &[
            "key",
            "sign",
            "release",
            "--in",
            path(&m)?,
            "--out",
            path(&env.path("m.sig"))?,
        ],
    )?;
    assert!(
        o.status.success(),
        "carol signs with the grant the cards approved: {}",
        stderr(&o)
    );
    // The evidence verifies offline (signatures by the card keys over the canonical text).
    let o = env.ok(&["access", "show", &id, "--json"])?;
    let ev: Value = serde_json::from_slice(&o.stdout)?;
    let steps = ev["steps"].as_array().ok_or("steps")?;
    assert_eq!(steps.len(), 2, "{ev}");
    assert!(
        steps
            .iter()
            .all(|s| s["signature_valid"] == true && s["key_is_registered"] == true),
        "{ev}"
    );
    Ok(())
}
