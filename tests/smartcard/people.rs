//! One card per person, and re-enrolment that keeps valid grants (issue 31), on virtual PIV
//! cards.

use super::*;

/// An access request by `who` for `ops` on `key`; returns its id.
fn request(env: &Env, who: &str, key: &str, ops: &str, ticket: &str) -> Res<String> {
    access_request(
        env,
        who,
        &[
            "--key",
            key,
            "--ops",
            ops,
            "--duration",
            "7d",
            "--ticket",
            ticket,
            "--justification",
            "release signing",
        ],
    )
}

fn step(env: &Env, who: &str, verb: &str, id: &str) -> Res<Output> {
    kms_pin(
        env,
        who,
        PIN,
        &["access", verb, id, "--card-pin", "env:CARD_PIN"],
    )
}

fn sign_as(env: &Env, who: &str, key: &str) -> Res<Output> {
    let m = env.write("m", b"v1.0")?;
    env.run_as(
        who,
        &[
            "key",
            "sign",
            key,
            "--in",
            path(&m)?,
            "--out",
            path(&env.path("m.sig"))?,
        ],
    )
}

/// The grant an approved request made.
fn grant_of(env: &Env, id: &str) -> Res<String> {
    let o = env.ok(&["access", "show", id, "--json"])?;
    let ev: Value = serde_json::from_slice(&o.stdout)?;
    Ok(ev["request"]["grant_id"]
        .as_str()
        .ok_or_else(|| format!("no grant in {ev}"))?
        .to_owned())
}

#[test]
fn one_card_carries_one_persons_approvals() -> TestResult {
    let _cards = cards();
    let env = Env::new()?;
    let (a, b) = (card(0)?, card(1)?);
    let o = enrol(&env, "alice", "security-admin", &a)?;
    assert!(o.status.success(), "{}", stderr(&o));
    // bob's key in another slot (9d) of alice's card: refused, whatever the slot.
    let o = kms_pin(
        &env,
        OFFICER,
        PIN,
        &[
            "card",
            "enrol",
            "--principal",
            "bob",
            "--role",
            "manager",
            "--serial",
            &a,
            "--slot",
            "9d",
            "--card-pin",
            "env:CARD_PIN",
            "--force",
        ],
    )?;
    assert_fails(
        &o,
        4,
        &[
            &format!("card piv:{a} already holds the approval key of 'alice'"),
            "one card carries one person's approvals",
        ],
    );
    let o = env.ok(&["principal", "list", "--json"])?;
    assert!(
        !stdout(&o).contains("\"bob\""),
        "bob was not registered: {}",
        stdout(&o)
    );
    // On his own card he is.
    let o = enrol(&env, "bob", "manager", &b)?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.ok(&["principal", "keys", "alice", "--json"])?;
    let keys: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(keys[0]["card"], format!("piv:{a}"), "{keys}");
    assert!(keys[0]["valid_until"].is_null(), "{keys}");
    Ok(())
}

#[test]
fn re_enrolment_keeps_grants_and_a_lost_card_revokes_exactly_its_grants() -> TestResult {
    let _cards = cards();
    let env = Env::new()?;
    let (a, b, c) = (card(0)?, card(1)?, card(2)?);
    for (who, role, serial) in [("alice", "security-admin", &a), ("bob", "manager", &b)] {
        let o = enrol(&env, who, role, serial)?;
        assert!(o.status.success(), "enrol {who}: {}", stderr(&o));
    }
    env.ok(&["principal", "add", "carol", "--role", "user"])?;
    env.ok(&create_args("release", "ec-p384", "sign,verify", &[]))?;

    // Grant 1: verified on alice's first card.
    let r1 = request(&env, "carol", "release", "sign", "CHG-1")?;
    for (who, verb) in [("alice", "verify"), ("bob", "approve")] {
        let o = step(&env, who, verb, &r1)?;
        assert!(o.status.success(), "{who} {verb}: {}", stderr(&o));
    }
    let g1 = grant_of(&env, &r1)?;
    assert!(sign_as(&env, "carol", "release")?.status.success());

    // alice's card is replaced: a new key on a new card.
    let o = enrol(&env, "alice", "security-admin", &c)?;
    assert!(o.status.success(), "re-enrol: {}", stderr(&o));
    // The grant her old card signed still holds (its signature was valid when made).
    let o = sign_as(&env, "carol", "release")?;
    assert!(
        o.status.success(),
        "grant 1 after re-enrolment: {}",
        stderr(&o)
    );
    let o = env.ok(&["access", "show", &r1, "--json"])?;
    let ev: Value = serde_json::from_slice(&o.stdout)?;
    let verify = &ev["steps"][0];
    assert_eq!(verify["key_is_registered"], true, "{ev}");
    assert_eq!(verify["key_is_current"], false, "{ev}");
    assert_eq!(verify["card"], format!("piv:{a}"), "{ev}");
    // The old card no longer signs for her.
    let r_old = request(&env, "carol", "release", "verify", "CHG-0")?;
    let o = kms_pin(
        &env,
        "alice",
        PIN,
        &[
            "access",
            "verify",
            &r_old,
            "--card",
            &format!("piv:serial={a};slot=9c"),
            "--card-pin",
            "env:CARD_PIN",
        ],
    )?;
    assert_fails(&o, 4, &["not the approval key registered for 'alice'"]);

    // Grant 2: verified on the new card. Both grants are active; either one serves.
    let r2 = request(&env, "carol", "release", "sign,verify", "CHG-2")?;
    for (who, verb) in [("alice", "verify"), ("bob", "approve")] {
        let o = step(&env, who, verb, &r2)?;
        assert!(o.status.success(), "{who} {verb}: {}", stderr(&o));
    }
    let g2 = grant_of(&env, &r2)?;
    assert!(sign_as(&env, "carol", "release")?.status.success());

    // The old card is reported lost: exactly the grant it signed is revoked.
    let o = env.ok(&[
        "card",
        "lost",
        "alice",
        "--serial",
        &a,
        "--justification",
        "INC-7: card lost on a train",
        "--json",
    ])?;
    let loss: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(loss["grants_revoked"], serde_json::json!([g1]), "{loss}");
    assert_eq!(loss["current_key_lost"], false, "{loss}");
    let o = env.ok(&["grant", "list", "--all", "--json"])?;
    let grants: Value = serde_json::from_slice(&o.stdout)?;
    let revoked = |id: &str| {
        grants
            .as_array()
            .and_then(|g| g.iter().find(|x| x["id"] == id))
            .map(|x| !x["revoked_at"].is_null())
    };
    assert_eq!(revoked(&g1), Some(true), "{grants}");
    assert_eq!(revoked(&g2), Some(false), "{grants}");
    // carol still signs, through grant 2.
    let o = sign_as(&env, "carol", "release")?;
    assert!(o.status.success(), "grant 2 serves: {}", stderr(&o));
    let o = env.ok(&["principal", "keys", "alice", "--json"])?;
    let keys: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(keys[0]["end_reason"], "lost", "{keys}");
    assert!(keys[1]["valid_until"].is_null(), "{keys}");
    // Reporting the current card lost leaves alice without an approval key.
    let o = env.ok(&[
        "card",
        "lost",
        "alice",
        "--justification",
        "INC-8: the new card too",
        "--json",
    ])?;
    let loss: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(loss["grants_revoked"], serde_json::json!([g2]), "{loss}");
    assert_eq!(loss["current_key_lost"], true, "{loss}");
    assert_fails(&sign_as(&env, "carol", "release")?, 4, &["no active grant"]);
    let r3 = request(&env, "carol", "release", "sign", "CHG-3")?;
    assert_fails(
        &step(&env, "alice", "verify", &r3)?,
        4,
        &["has no registered approval key"],
    );
    Ok(())
}
