//! Cards and tokens of people: one card per person, replaced and lost tokens, rekeying.

use super::*;

#[test]
fn one_card_carries_one_persons_approvals_at_registration_approval_and_use() -> TestResult {
    let env = people()?;
    // A second key pair on alice's card (a card with room for several keys).
    let pem = env.import_card_key("alice", "approval2", "02")?;
    let pin = common::cards::card_pin("alice");
    let second = "pkcs11:token=alice-card;object=approval2";
    // mallory's approval key on alice's card: refused at registration.
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", &pin)
        .args(["principal", "add", "mallory", "--role", "manager"])
        .args(["--approval-key", second, "--card-pin", "env:CARD_PIN"])
        .output()?;
    assert_fails(
        &o,
        4,
        &[
            "already holds the approval key of 'alice'",
            "one card carries one person's approvals",
        ],
    );
    // Registered by its public key alone, kms cannot see the card then...
    env.ok(&[
        "principal",
        "add",
        "mallory",
        "--role",
        "manager",
        "--approval-pubkey",
        path(&pem)?,
    ])?;
    // ...but it sees it when the key signs: alice verifies, "mallory" approves on her card.
    let id = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &id)?.status.success());
    let o = env
        .kms_as("mallory")
        .env("CARD_PIN", &pin)
        .args([
            "access",
            "approve",
            &id,
            "--card",
            second,
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert_fails(&o, 4, &["already holds the approval key of 'alice'"]);
    let o = env.ok(&["access", "show", &id, "--json"])?;
    let e: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(e["request"]["state"], "verified", "{e}");
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);

    // bob approves on his own card: a grant, and the evidence names both cards.
    assert!(step(&env, "bob", "approve", &id)?.status.success());
    assert!(sign_as(&env, "carol")?.status.success());
    let o = env.ok(&["access", "show", &id, "--json"])?;
    let e: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let (c0, c1) = (&e["steps"][0]["card"], &e["steps"][1]["card"]);
    assert!(
        c0.as_str().is_some_and(|c| c.starts_with("pkcs11:serial=")),
        "{e}"
    );
    assert_ne!(c0, c1, "{e}");
    // At use: a grant whose verification and approval the inventory places on one card (an
    // inventory from before this rule) is not honoured.
    env.sql("UPDATE approval_keys SET card = (SELECT card FROM approval_keys WHERE principal = 'alice') WHERE principal = 'bob'")?;
    env.retag()?;
    assert_fails(
        &sign_as(&env, "carol")?,
        4,
        &["same card", "two people must sign on two cards"],
    );
    Ok(())
}

#[test]
fn a_replaced_token_keeps_its_grants_and_reporting_it_lost_revokes_exactly_them() -> TestResult {
    let env = people()?;
    let first = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &first)?.status.success());
    assert!(step(&env, "bob", "approve", &first)?.status.success());
    let o = env.ok(&["principal", "keys", "alice", "--json"])?;
    let keys: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let old_card = keys[0]["card"].as_str().ok_or("card")?.to_owned();
    assert!(old_card.starts_with("pkcs11:serial="), "{keys}");

    // alice's token is replaced by a new one (a new key); her first grant still holds.
    env.make_card("alice-new")?;
    let new_pin = common::cards::card_pin("alice-new");
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", &new_pin)
        .args(["principal", "rekey", "alice"])
        .args([
            "--approval-key",
            &card_uri("alice-new"),
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        sign_as(&env, "carol")?.status.success(),
        "the first grant holds"
    );
    // The old token no longer signs for her; the new one does.
    let second = request(&env, "carol", &[])?;
    assert_fails(
        &env.as_person(
            "alice",
            &[
                "access",
                "verify",
                &second,
                "--card",
                &card_uri("alice"),
                "--card-pin",
                "env:CARD_PIN",
            ],
        )?,
        4,
        &["not the approval key registered for 'alice'"],
    );
    let o = env
        .kms_as("alice")
        .env("CARD_PIN", &new_pin)
        .args(["access", "verify", &second, "--card-pin", "env:CARD_PIN"])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(step(&env, "bob", "approve", &second)?.status.success());

    // The old token is reported lost: exactly the first grant is revoked; carol keeps the second.
    let o = env.ok(&[
        "card",
        "lost",
        "alice",
        "--serial",
        &old_card,
        "--justification",
        "INC-9 token lost",
        "--json",
    ])?;
    let loss: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let grant_of = |id: &str| -> Res<serde_json::Value> {
        let o = env.ok(&["access", "show", id, "--json"])?;
        Ok(serde_json::from_slice::<serde_json::Value>(&o.stdout)?["request"]["grant_id"].clone())
    };
    assert_eq!(
        loss["grants_revoked"],
        serde_json::json!([grant_of(&first)?]),
        "{loss}"
    );
    assert!(
        sign_as(&env, "carol")?.status.success(),
        "the second grant serves"
    );
    // The records say who did what, and why.
    let o = env.ok(&["audit", "list", "--json", "--limit", "1000"])?;
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let rows = rows.as_array().ok_or("rows")?;
    assert!(rows
        .iter()
        .any(|r| r["action"] == "principal.rekey" && r["outcome"] == "ok"));
    assert!(rows.iter().any(|r| r["action"] == "card.lost"
        && r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("INC-9 token lost"))));
    Ok(())
}

#[test]
fn a_person_registered_before_key_histories_keeps_their_grants_when_rekeyed() -> TestResult {
    let env = people()?;
    let first = request(&env, "carol", &[])?;
    assert!(step(&env, "alice", "verify", &first)?.status.success());
    assert!(step(&env, "bob", "approve", &first)?.status.success());
    // An inventory from before issue 31: nobody has a key history yet.
    env.sql("DELETE FROM approval_keys")?;
    env.retag()?;
    assert!(sign_as(&env, "carol")?.status.success());
    let o = env.ok(&["principal", "keys", "alice", "--json"])?;
    let keys: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(keys[0]["card"], "pkcs11:token=alice-card", "{keys}");
    // bob's key may not move onto alice's card (known by its label from her URI).
    env.import_card_key("alice", "approval2", "02")?;
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", common::cards::card_pin("alice"))
        .args(["principal", "rekey", "bob"])
        .args([
            "--approval-key",
            "pkcs11:token=alice-card;object=approval2",
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert_fails(&o, 4, &["already holds the approval key of 'alice'"]);
    // alice gets a new token: her old key gets its row, ended, and her grant holds.
    env.make_card("alice-new")?;
    let o = env
        .kms_as(OFFICER)
        .env("CARD_PIN", common::cards::card_pin("alice-new"))
        .args(["principal", "rekey", "alice"])
        .args([
            "--approval-key",
            &card_uri("alice-new"),
            "--card-pin",
            "env:CARD_PIN",
        ])
        .output()?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(sign_as(&env, "carol")?.status.success(), "the grant holds");
    let o = env.ok(&["principal", "keys", "alice", "--json"])?;
    let keys: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(keys.as_array().map(Vec::len), Some(2), "{keys}");
    assert_eq!(keys[0]["end_reason"], "replaced", "{keys}");
    let o = env.ok(&[
        "card",
        "lost",
        "alice",
        "--serial",
        "pkcs11:token=alice-card",
        "--justification",
        "INC-10",
        "--json",
    ])?;
    let loss: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(
        loss["grants_revoked"].as_array().map(Vec::len),
        Some(1),
        "{loss}"
    );
    assert_fails(&sign_as(&env, "carol")?, 4, &["no active grant"]);
    Ok(())
}
