//! The engine used in-process from many threads at once, as the service will: one login per token,
//! a bounded session pool shared by the workers, every operation audited.
//!
//! One test in this binary on purpose: a PKCS#11 module reads its configuration (SOFTHSM2_CONF)
//! once per process, so a process serves one token directory.

use common::*;
use kms_testkit as common;

use kms::config::Config;
use kms::engine::{Caller, CreateKey, Engine, NewGrantRequest, NewPrincipal};
use kms::model::{Classification, KeyType, Role};

const THREADS: usize = 8; // twice the configured pool of 4 sessions
const ROUNDS: usize = 15;

/// A principal with no certificate, approval key or network restriction.
fn principal(name: &str, role: Role) -> NewPrincipal {
    NewPrincipal {
        name: name.to_owned(),
        role,
        cert_pem: None,
        approval_key: None,
        allowed_networks: Vec::new(),
    }
}

#[test]
fn many_threads_share_one_login_and_a_bounded_session_pool() -> TestResult {
    let env = Env::new()?;
    let engine = Engine::open(Config::load(&env.config())?)?;
    // The fixture's security officer administers; the workers are users with grants.
    let officer = Caller::local(Some(OFFICER.into()), Some("thread test".into()));
    for (name, key_type, usage) in [
        ("t-ec", KeyType::EcP384, "sign,verify"),
        ("t-aes", KeyType::Aes256, "encrypt,decrypt"),
    ] {
        engine.create_key(
            &officer,
            CreateKey::new(
                name,
                key_type,
                "team",
                Classification::Restricted,
                usage.parse()?,
            ),
        )?;
    }
    // Key use needs a grant: each worker is a user with a break-glass grant on both keys.
    let until = time::OffsetDateTime::now_utc().date() + time::Duration::days(30);
    for t in 0..THREADS {
        let worker = format!("worker-{t}");
        engine.add_principal(&officer, principal(&worker, Role::User))?;
        for (key, ops) in [("t-ec", "sign,verify"), ("t-aes", "encrypt,decrypt")] {
            engine.add_grant(
                &officer,
                NewGrantRequest {
                    principal: worker.clone(),
                    key: key.to_owned(),
                    ops: ops.parse()?,
                    until,
                    ticket: "TEST-THREADS".into(),
                    justification: "thread test".into(),
                },
            )?;
        }
    }
    std::thread::scope(|scope| -> TestResult {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let engine = &engine;
                scope.spawn(move || -> Result<(), String> {
                    let app = Caller::local(Some(format!("worker-{t}")), None);
                    for i in 0..ROUNDS {
                        let msg = format!("thread {t} message {i}");
                        let signed = engine
                            .sign(&app, "t-ec", msg.as_bytes())
                            .map_err(|e| e.to_string())?;
                        let ok = engine
                            .verify(&app, "t-ec", msg.as_bytes(), &signed.signature)
                            .map_err(|e| e.to_string())?;
                        if !ok.valid {
                            return Err("signature did not verify".to_owned());
                        }
                        let (ct, _) = engine
                            .encrypt(&app, "t-aes", msg.as_bytes(), b"aad")
                            .map_err(|e| e.to_string())?;
                        let (pt, _) = engine
                            .decrypt(&app, "t-aes", &ct, b"aad")
                            .map_err(|e| e.to_string())?;
                        if pt.as_slice() != msg.as_bytes() {
                            return Err("round trip changed the data".to_owned());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "worker panicked")??;
        }
        Ok(())
    })?;

    let rows = engine.audit_log(&officer, Some("t-ec"), 10_000)?;
    let signs = rows.iter().filter(|r| r.entry.action == "key.sign").count();
    assert_eq!(signs, THREADS * ROUNDS, "every signature audited");
    assert!(
        rows.iter()
            .filter(|r| r.entry.action == "key.sign")
            .all(|r| r.entry.actor.starts_with("worker-")),
        "signatures are on record under the workers that made them"
    );
    Ok(())
}
