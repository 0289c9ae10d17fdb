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
#[path = "smartcard/own_card.rs"]
mod own_card;
#[path = "smartcard/people.rs"]
mod people;
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

#[test]
fn a_card_resident_key_signs_on_the_card_and_openssl_verifies() -> TestResult {
    let _cards = cards();
    let env = Env::new()?;
    let serial = card(2)?;
    let cfg = std::fs::read_to_string(env.config())?;
    std::fs::write(
        env.config(),
        format!("{cfg}\n[cards.\"{serial}\"]\npin = \"env:CARD_PIN\"\n"),
    )?;
    let create = |extra: &[&str]| -> Res<Output> {
        let mut args = create_args(
            "root-ca",
            "ec-p384",
            "sign,verify",
            &[
                "--on-card",
                &serial,
                "--slot",
                "9a",
                "--reencrypt-window",
                "0",
            ],
        );
        args.extend_from_slice(extra);
        kms_pin(&env, OFFICER, PIN, &args)
    };
    let o = create(&["--force"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    env.grant_user("root-ca")?;
    let k: Value = serde_json::from_slice(&env.ok(&["key", "show", "root-ca", "--json"])?.stdout)?;
    assert_eq!(k["versions"][0]["token"], "card");
    assert_eq!(k["versions"][0]["token_serial"], serial.as_str());
    assert_eq!(k["versions"][0]["object_id"], "9a");

    // Sign on the card; openssl verifies with the key's public half.
    let m = env.write("m", b"issue the intermediate")?;
    let sig = env.path("m.sig");
    let o = kms_pin(
        &env,
        USER,
        PIN,
        &[
            "key",
            "sign",
            "root-ca",
            "--in",
            path(&m)?,
            "--out",
            path(&sig)?,
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let pem = env.path("root.pem");
    env.public_pem("root-ca", &pem)?;
    let o = openssl_dgst_verify(&["-sha384"], &pem, &sig, &m)?;
    assert!(o.status.success(), "openssl: {}", stderr(&o));

    // The slot is taken now: refused without --force.
    let o = kms_pin(
        &env,
        OFFICER,
        PIN,
        &create_args(
            "other",
            "ec-p384",
            "sign,verify",
            &["--on-card", &serial, "--slot", "9a"],
        ),
    )?;
    assert_fails(&o, 4, &["already holds kms key 'root-ca'"]);
    // Backup by wrapping cannot apply, and says so.
    env.ok(&["--reason", "CHG-7", "backup", "init"])?;
    let o = env.run(&["backup", "verify"])?;
    assert!(
        stdout(&o).contains("cannot be wrapped out of the card"),
        "{}",
        stdout(&o)
    );
    // Rotation generates on the card (a free retired slot); window 0 wipes the old slot.
    let o = kms_pin(
        &env,
        OFFICER,
        PIN,
        &["--reason", "CHG-8", "key", "rotate", "root-ca"],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let k: Value = serde_json::from_slice(&env.ok(&["key", "show", "root-ca", "--json"])?.stdout)?;
    assert_eq!(k["versions"][1]["token"], "card");
    assert_ne!(k["versions"][1]["object_id"], "9a");
    let o = kms_pin(
        &env,
        USER,
        PIN,
        &[
            "key",
            "sign",
            "root-ca",
            "--in",
            path(&m)?,
            "--out",
            path(&sig)?,
        ],
    )?;
    assert!(o.status.success(), "v2 signs: {}", stderr(&o));
    // Window 0: v1's slot was wiped (key overwritten, certificate deleted) and the card reads fine.
    assert_eq!(k["versions"][0]["state"], "destroyed");
    let o = env.ok(&["card", "status", "--serial", &serial, "--json"])?;
    let st: Value = serde_json::from_slice(&o.stdout)?;
    let slots: Vec<&str> = st["slots"]
        .as_array()
        .ok_or("slots")?
        .iter()
        .filter_map(|x| x["slot"].as_str())
        .collect();
    assert!(!slots.contains(&"9a"), "9a still holds a certificate: {st}");
    Ok(())
}

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

#[test]
fn the_same_card_works_through_opensc_pkcs11() -> TestResult {
    let _cards = cards();
    let env = Env::new()?;
    let serial = card(1)?;
    let o = enrol(&env, "erin", "manager", &serial)?;
    assert!(o.status.success(), "{}", stderr(&o));
    let module = std::env::var("VPIV_OPENSC_MODULE")
        .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so".into());
    // OpenSC lists the card as a token and the enrolled key.
    let o = Command::new("pkcs11-tool")
        .args(["--module", &module, "-L"])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = stdout(&o);
    let mut slot_id = None;
    let mut current = None;
    for line in listing.lines() {
        if let Some(rest) = line.strip_prefix("Slot ") {
            // "Slot 1 (0x4): Yubico ..."
            current = rest.split(['(', ')']).nth(1).map(|h| h.trim().to_owned());
        }
        // OpenSC labels a PIV token with its certificate's CN: the one kms's enrolment wrote.
        if line.contains("token label") && line.trim_end().ends_with("kms approval key of erin") {
            slot_id = current.clone();
        }
    }
    let slot_id = slot_id
        .ok_or_else(|| format!("card {serial} (erin's) not among OpenSC's tokens:\n{listing}"))?;
    let module_slot = |args: &[&str]| -> Res<Output> {
        Ok(Command::new("pkcs11-tool")
            .args(["--module", &module, "--slot", &slot_id])
            .args(args)
            .output()?)
    };
    let o = module_slot(&["--login", "--pin", PIN, "-O"])?;
    let listing = stdout(&o);
    assert!(
        listing.contains("Private Key Object; EC"),
        "{listing}{}",
        stderr(&o)
    );
    // Sign through OpenSC with the card key (9c = ID 02) and verify with the registered key.
    let m = env.write("m", b"signed through PKCS#11")?;
    let sig = env.path("m.sig");
    let o = module_slot(&[
        "--login",
        "--pin",
        PIN,
        "--sign",
        "--id",
        "02",
        "--mechanism",
        "ECDSA-SHA384",
        "--signature-format",
        "openssl",
        "--input-file",
        path(&m)?,
        "--output-file",
        path(&sig)?,
    ])?;
    assert!(
        o.status.success(),
        "pkcs11-tool sign: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // The public key: from the certificate kms's enrolment stored in slot 9c, read through OpenSC.
    let cert = env.path("erin.der");
    let o = module_slot(&[
        "--read-object",
        "--type",
        "cert",
        "--id",
        "02",
        "-o",
        path(&cert)?,
    ])?;
    assert!(o.status.success(), "read cert: {}", stderr(&o));
    let o = openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        path(&cert)?,
        "-noout",
        "-pubkey",
    ])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let pubkey = env.write("erin.pem", &o.stdout)?;
    let o = openssl_dgst_verify(&["-sha384"], &pubkey, &sig, &m)?;
    assert!(
        o.status.success(),
        "the OpenSC signature verifies: {}",
        stderr(&o)
    );
    // And it is the key kms registered for erin: an approval she signs verifies against it.
    let subject = String::from_utf8_lossy(
        &openssl(&[
            "x509",
            "-inform",
            "DER",
            "-in",
            path(&cert)?,
            "-noout",
            "-subject",
        ])?
        .stdout,
    )
    .into_owned();
    assert!(subject.contains("kms approval key of erin"), "{subject}");

    // And as a configured kms token through OpenSC: found by label, logged in, objects listed.
    let cfg = std::fs::read_to_string(env.config())?;
    std::fs::write(
        env.config(),
        format!(
            "{cfg}\n[tokens.card]\nmodule = \"{module}\"\nlabel = \"kms approval key of erin\"\nuser_pin = \"env:CARD_PIN\"\nsessions = 1\n"
        ),
    )?;
    let o = kms_pin(
        &env,
        OFFICER,
        PIN,
        &["token", "list", "--json", "--objects", "--login"],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let tokens: Value = serde_json::from_slice(&o.stdout)?;
    let card_token = tokens
        .as_array()
        .ok_or("tokens")?
        .iter()
        .find(|t| t["name"] == "card")
        .ok_or("no card token")?;
    assert_eq!(card_token["logged_in"], true, "{card_token}");
    assert!(
        card_token["objects"].as_u64().is_some_and(|n| n >= 1),
        "{card_token}"
    );

    // kms's own PKCS#11 path: in another installation, erin's card key is registered by a
    // `pkcs11:` URI through OpenSC, and her verification of a request is signed through it
    // (slot 9c is always-authenticate: C_SignInit, context-specific login, then the signature).
    let other = Env::new()?;
    let cfg = std::fs::read_to_string(other.config())?;
    std::fs::write(
        other.config(),
        format!("{cfg}\n[access]\ncard_module = \"{module}\"\n"),
    )?;
    let uri = "pkcs11:token=kms%20approval%20key%20of%20erin;id=%02";
    let o = kms_pin(
        &other,
        OFFICER,
        PIN,
        &[
            "principal",
            "add",
            "erin",
            "--role",
            "security-admin",
            "--approval-key",
            uri,
            "--card-pin",
            "env:CARD_PIN",
        ],
    )?;
    assert!(
        o.status.success(),
        "register through OpenSC: {}",
        stderr(&o)
    );
    other.ok(&["principal", "add", "carol", "--role", "user"])?;
    other.ok(&create_args("k", "ec-p384", "sign,verify", &[]))?;
    let o = other.run_as(
        "carol",
        &[
            "access",
            "request",
            "--key",
            "k",
            "--ops",
            "sign",
            "--duration",
            "7d",
            "--ticket",
            "T-9",
            "--justification",
            "through PKCS#11",
            "--json",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let id = serde_json::from_slice::<Value>(&o.stdout)?["id"]
        .as_str()
        .ok_or("id")?
        .to_owned();
    let o = kms_pin(
        &other,
        "erin",
        PIN,
        &["access", "verify", &id, "--card-pin", "env:CARD_PIN"],
    )?;
    assert!(
        o.status.success(),
        "verify signed through OpenSC PKCS#11: {}",
        stderr(&o)
    );
    let ev: Value = serde_json::from_slice(&other.ok(&["access", "show", &id, "--json"])?.stdout)?;
    assert_eq!(ev["steps"][0]["signature_valid"], true, "{ev}");
    Ok(())
}

/// On a real YubiKey (selected by serial): status, and an enrolment in retired slot 95 (which it
/// overwrites: use a card whose slot 95 is free).
#[test]
#[ignore = "needs a physical YubiKey: KMS_TEST_YUBIKEY_SERIAL=… cargo test --test smartcard -- --ignored"]
fn real_yubikey_shows_status_and_enrols() -> TestResult {
    let serial = std::env::var("KMS_TEST_YUBIKEY_SERIAL")?;
    let env = Env::new()?;
    let o = env.ok(&["card", "status", "--serial", &serial])?;
    assert!(stdout(&o).contains(&serial));
    let o = kms_pin(
        &env,
        OFFICER,
        PIN,
        &[
            "card",
            "enrol",
            "--principal",
            "hw",
            "--role",
            "manager",
            "--serial",
            &serial,
            "--slot",
            "95",
            "--card-pin",
            "env:CARD_PIN",
            "--force",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    Ok(())
}
