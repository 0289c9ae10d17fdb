//! The same card works through OpenSC's PKCS#11 module.

use super::*;

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
