//! A card-resident key signs on the card and openssl verifies; a real YubiKey (ignored unless
//! `KMS_TEST_YUBIKEY_SERIAL` is set) shows its status and enrols.

use super::*;

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
