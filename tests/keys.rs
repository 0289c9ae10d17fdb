//! End-to-end behaviour of the officer CLI against real SoftHSM2 tokens.

use common::*;
use kms_testkit as common;

#[path = "keys/reconcile.rs"]
mod reconcile;
#[path = "keys/token.rs"]
mod token;

#[test]
fn ec_p384_signature_verifies_with_openssl_and_kms() -> TestResult {
    let env = Env::new()?;
    env.create("release-signing", "ec-p384", "sign,verify")?;
    let msg = env.write("msg.txt", b"release 1.2.3 artefact digest list\n")?;
    let sig = env.path("msg.sig");
    let pem = env.path("pub.pem");
    env.sign_file("release-signing", &msg, &sig)?;
    env.public_pem("release-signing", &pem)?;

    let o = openssl(&["pkey", "-pubin", "-in", path(&pem)?, "-noout", "-text"])?;
    assert!(o.status.success(), "openssl pkey reads the PEM");
    assert!(stdout(&o).contains("384 bit"), "{}", stdout(&o));

    let o = openssl_dgst_verify(&["-sha384"], &pem, &sig, &msg)?;
    assert!(
        stdout(&o).contains("Verified OK"),
        "openssl: {}",
        stderr(&o)
    );

    let o = env.ok(&[
        "key",
        "verify",
        "release-signing",
        "--in",
        path(&msg)?,
        "--sig",
        path(&sig)?,
    ])?;
    assert!(stdout(&o).contains("signature valid"));

    // A changed message does not verify, and kms says so with exit 1.
    let other = env.write("other.txt", b"release 1.2.4\n")?;
    let o = env.run(&[
        "key",
        "verify",
        "release-signing",
        "--in",
        path(&other)?,
        "--sig",
        path(&sig)?,
    ])?;
    assert_fails(&o, 1, &["NOT valid"]);
    Ok(())
}

#[test]
fn rsa_pss_signature_verifies_with_openssl_and_oaep_round_trips() -> TestResult {
    let env = Env::new()?;
    env.create("doc-signing", "rsa-3072", "sign,verify,encrypt,decrypt")?;
    let msg = env.write("doc.txt", b"contract v7")?;
    let sig = env.path("doc.sig");
    let pem = env.path("doc.pem");
    env.sign_file("doc-signing", &msg, &sig)?;
    env.public_pem("doc-signing", &pem)?;
    let o = openssl_dgst_verify(
        &[
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
        ],
        &pem,
        &sig,
        &msg,
    )?;
    assert!(
        stdout(&o).contains("Verified OK"),
        "openssl: {}",
        stderr(&o)
    );
    env.ok(&[
        "key",
        "verify",
        "doc-signing",
        "--in",
        path(&msg)?,
        "--sig",
        path(&sig)?,
    ])?;

    // RSA-OAEP: encrypted in software to the stored public key, decrypted on the token.
    let secret = env.write("secret.bin", b"a 32-byte data key, for example")?;
    let ct = env.path("secret.kms");
    let back = env.path("secret.out");
    env.ok(&[
        "key",
        "encrypt",
        "doc-signing",
        "--in",
        path(&secret)?,
        "--out",
        path(&ct)?,
    ])?;
    env.ok(&[
        "key",
        "decrypt",
        "doc-signing",
        "--in",
        path(&ct)?,
        "--out",
        path(&back)?,
    ])?;
    assert_eq!(std::fs::read(&back)?, b"a 32-byte data key, for example");
    Ok(())
}

#[test]
fn aes_gcm_round_trip_with_aad_and_versioned_format() -> TestResult {
    let env = Env::new()?;
    env.create("records-dek", "aes-256", "encrypt,decrypt")?;
    let plain = env.write("p.txt", b"customer record 42")?;
    let ct = env.path("p.kms");
    let back = env.path("p.out");
    env.ok(&[
        "key",
        "encrypt",
        "records-dek",
        "--in",
        path(&plain)?,
        "--out",
        path(&ct)?,
        "--aad",
        "tenant=42",
    ])?;
    let data = std::fs::read(&ct)?;
    assert_eq!(&data[..4], b"KMSE", "magic");
    assert_eq!(data[4], 1, "format version");
    assert_eq!(data[5], 1, "AES-256-GCM");
    assert_eq!(
        u32::from_be_bytes([data[22], data[23], data[24], data[25]]),
        1
    );
    assert_eq!(data.len(), 26 + 12 + 18 + 16, "header, IV, ciphertext, tag");
    assert!(!data.windows(8).any(|w| w == b"customer"), "no plaintext");

    env.ok(&[
        "key",
        "decrypt",
        "records-dek",
        "--in",
        path(&ct)?,
        "--out",
        path(&back)?,
        "--aad",
        "tenant=42",
    ])?;
    assert_eq!(std::fs::read(&back)?, b"customer record 42");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&back)?.permissions().mode() & 0o777,
        0o600
    );

    // Two encryptions of the same plaintext differ (fresh IV).
    let ct2 = env.path("p2.kms");
    env.ok(&[
        "key",
        "encrypt",
        "records-dek",
        "--in",
        path(&plain)?,
        "--out",
        path(&ct2)?,
        "--aad",
        "tenant=42",
    ])?;
    assert_ne!(std::fs::read(&ct2)?, data);
    Ok(())
}

#[test]
fn rsa_4096_and_all_inventory_fields_are_recorded() -> TestResult {
    let env = Env::new()?;
    env.ok(&[
        "key",
        "create",
        "archive-kek",
        "--type",
        "rsa-4096",
        "--owner",
        "records-team",
        "--classification",
        "restricted",
        "--usage",
        "encrypt,decrypt,wrap,unwrap",
        "--purpose",
        "archive key encryption",
        "--handling",
        "dual control; never exported",
        "--disposal",
        "destroy 30 days after contract end",
        "--rotate-every",
        "180d",
        "--expires",
        "2030-12-31",
        "--label",
        "env=prod",
        "--label",
        "site=bangalore",
        "--reason",
        "CHG-77",
    ])?;
    // Reading the public key is key use: the user needs a grant on the key.
    env.grant_user("archive-kek")?;
    let o = env.ok(&["key", "show", "archive-kek", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["name"], "archive-kek");
    assert_eq!(v["key_type"], "rsa-4096");
    assert_eq!(v["kind"], "asymmetric");
    assert_eq!(v["owner"], "records-team");
    assert_eq!(v["classification"], "restricted");
    assert_eq!(
        v["usage"],
        serde_json::json!(["encrypt", "decrypt", "wrap", "unwrap"])
    );
    assert_eq!(v["purpose"], "archive key encryption");
    assert_eq!(v["handling"], "dual control; never exported");
    assert_eq!(v["disposal"], "destroy 30 days after contract end");
    assert_eq!(v["rotate_every"], "180d");
    assert_eq!(
        v["expires"].as_str().map(|s| s.starts_with("2030")),
        Some(true)
    );
    assert_eq!(v["labels"]["site"], "bangalore");
    assert_eq!(v["created_by"], "test-officer");
    assert_eq!(v["versions"][0]["state"], "active");
    assert_eq!(v["versions"][0]["token_label"], "kms-primary");
    assert_eq!(
        v["versions"][0]["object_id"].as_str().map(str::len),
        Some(32)
    );

    let pem = env.path("kek.pem");
    env.public_pem("archive-kek", &pem)?;
    let o = openssl(&["pkey", "-pubin", "-in", path(&pem)?, "-noout", "-text"])?;
    assert!(stdout(&o).contains("4096 bit"), "{}", stdout(&o));
    Ok(())
}
