//! No PIN, PUK or management key in any output (issue 31), whatever the log directives: real
//! kms commands that send them to a card (enrolment: PIN and management key; an approval
//! signature: PIN; unblock with a wrong and the right PUK: PUK and new PIN), each under every
//! directive form that could re-enable the `yubikey` crate's APDU traces, and stdout and stderr
//! searched for the secrets in every encoding a log line could use.

use super::own_card::OwnCard;
use super::*;

/// The card's PINs in this test: 8 digits each (a 6-digit PIN could turn up by chance in a
/// trace log full of numbers), alternated by every right-PUK unblock.
const PINS: [&str; 2] = ["73519246", "64028135"];
const WRONG_PUK: &str = "86420975";
/// The directive forms under which every command runs (enrolment and a wrong PUK too).
const FULL: [&str; 3] = ["trace", "yubikey::apdu=trace", "[apdu]=trace"];
/// The virtual card's factory 3DES management key (hex).
const MGM: &str = "010203040506070801020304050607080102030405060708";

/// Every way a log line could show `secret`: text, a Debug byte list (decimal, hex, 0x-hex),
/// contiguous and spaced hex.
fn encodings(secret: &[u8]) -> Vec<String> {
    let dec: Vec<String> = secret.iter().map(|b| b.to_string()).collect();
    let lo: Vec<String> = secret.iter().map(|b| format!("{b:02x}")).collect();
    let up: Vec<String> = secret.iter().map(|b| format!("{b:02X}")).collect();
    let ox: Vec<String> = secret.iter().map(|b| format!("{b:#04x}")).collect();
    let mut out = vec![
        dec.join(", "),
        dec.join(","),
        lo.concat(),
        up.concat(),
        lo.join(" "),
        up.join(" "),
        lo.join(", "),
        up.join(", "),
        ox.join(", "),
    ];
    if secret.iter().all(|b| b.is_ascii_graphic()) {
        out.push(String::from_utf8_lossy(secret).into_owned());
    }
    out
}

/// Fails the test if `o`'s stdout or stderr shows any of `secrets` in any encoding.
fn assert_no_secret(o: &Output, what: &str, secrets: &[(&str, Vec<u8>)]) {
    for (stream, text) in [("stdout", stdout(o)), ("stderr", stderr(o))] {
        for (name, secret) in secrets {
            for enc in encodings(secret) {
                assert!(
                    !text.contains(&enc),
                    "{what}: the {name} ({enc}) is in {stream}"
                );
            }
        }
    }
}

#[test]
fn no_directive_form_brings_a_pin_puk_or_management_key_into_the_output() -> TestResult {
    // Own card, but the same pcscd: a reader in use by one process is skipped by another's
    // `card list`, so this test runs alone like the others.
    let _cards = cards();
    let env = Env::new()?;
    let card = OwnCard::start(&env)?;
    let serial = card.serial.as_str();
    let mgm = hex::decode(MGM)?;
    let secrets = |pin: &str, new_pin: &str| -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("PIN", pin.as_bytes().to_vec()),
            ("new PIN", new_pin.as_bytes().to_vec()),
            ("PUK", PUK.as_bytes().to_vec()),
            ("wrong PUK", WRONG_PUK.as_bytes().to_vec()),
            ("management key", mgm.clone()),
        ]
    };
    // The card's PIN becomes PINS[0] (factory PIN and PUK on a new card).
    let o = env
        .kms_as(OFFICER)
        .env("PUK", PUK)
        .env("NEWPIN", PINS[0])
        .args([
            "card",
            "unblock",
            "--serial",
            serial,
            "--puk",
            "env:PUK",
            "--new-pin",
            "env:NEWPIN",
        ])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    env.ok(&["principal", "add", "carol", "--role", "user"])?;
    env.ok(&create_args("release", "ec-p384", "sign,verify", &[]))?;

    // (variable, directives): KMS_LOG in every form; RUST_LOG, which kms does not read.
    let mut forms: Vec<(&str, &str)> = [
        "trace",
        "debug",
        "yubikey=trace",
        "yubikey::apdu=trace",
        "yubikey::apdu[]=trace",
        "yubikey::transaction=trace",
        "[apdu]=trace",
        "[{pin}]=trace",
        "pcsc=trace",
        "trace,yubikey=trace",
        "warn,yubikey::apdu=trace,pcsc=trace,log=trace",
    ]
    .iter()
    .map(|d| ("KMS_LOG", *d))
    .collect();
    forms.push(("RUST_LOG", "trace"));

    let mut pin = 0;
    for (var, directives) in forms {
        let (cur, next) = (PINS[pin], PINS[1 - pin]);
        let secrets = secrets(cur, next);
        let kms = |actor: &str| {
            let mut c = env.kms_as(actor);
            c.env_remove("KMS_LOG")
                .env_remove("RUST_LOG")
                .env(var, directives)
                .env("CARD_PIN", cur)
                .env("MGM", MGM);
            c
        };
        let what = |cmd: &str| format!("{var}={directives} {cmd}");

        // Enrolment (PIN, management key) and a wrong PUK take seconds each on the virtual
        // card: under the main forms only (the first form enrols alice). The PIN of a card
        // signature and the PUK and new PIN of an unblock go through every form.
        let full = FULL.contains(&directives);
        if full {
            let o = kms(OFFICER)
                .args([
                    "card",
                    "enrol",
                    "--principal",
                    "alice",
                    "--role",
                    "security-admin",
                    "--serial",
                    serial,
                    "--card-pin",
                    "env:CARD_PIN",
                    "--mgm-key-source",
                    "env:MGM",
                    "--force",
                ])
                .output()?;
            assert!(o.status.success(), "{}: {}", what("enrol"), stderr(&o));
            assert_no_secret(&o, &what("card enrol"), &secrets);
        }

        let o = kms("carol")
            .args([
                "access",
                "request",
                "--key",
                "release",
                "--ops",
                "sign",
                "--duration",
                "7d",
                "--ticket",
                "CHG-31",
                "--justification",
                "log test",
                "--json",
            ])
            .output()?;
        assert!(o.status.success(), "{}: {}", what("request"), stderr(&o));
        let id = serde_json::from_slice::<serde_json::Value>(&o.stdout)?["id"]
            .as_str()
            .ok_or("id")?
            .to_owned();
        let o = kms("alice")
            .args(["access", "verify", &id, "--card-pin", "env:CARD_PIN"])
            .output()?;
        assert!(o.status.success(), "{}: {}", what("verify"), stderr(&o));
        assert_no_secret(&o, &what("access verify (a card signature)"), &secrets);
        if var == "KMS_LOG" && (directives == "trace" || directives == "debug") {
            // kms's own smartcard lines (no secrets) do reach the log: logging is on.
            assert!(
                stderr(&o).contains("PIN tries before VERIFY"),
                "{}: kms's own debug lines are logged: {}",
                what("verify"),
                stderr(&o)
            );
        }

        let puks: &[(&str, bool)] = if full {
            &[(WRONG_PUK, false), (PUK, true)]
        } else {
            &[(PUK, true)]
        };
        for &(puk, ok) in puks {
            let o = kms(OFFICER)
                .env("PUK", puk)
                .env("NEWPIN", next)
                .args([
                    "card",
                    "unblock",
                    "--serial",
                    serial,
                    "--puk",
                    "env:PUK",
                    "--new-pin",
                    "env:NEWPIN",
                ])
                .output()?;
            assert_eq!(
                o.status.success(),
                ok,
                "{}: {}",
                what("unblock"),
                stderr(&o)
            );
            assert_no_secret(&o, &what("card unblock"), &secrets);
        }
        pin = 1 - pin;
    }
    Ok(())
}
