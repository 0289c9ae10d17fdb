//! Grants, access requests and tampered-inventory checks, as several test files drive them.

use std::process::Output;

use crate::{json, path, stderr, stdout, Env, Res, USER};

/// `kms key sign KEY` of a small message as `test-user` (whatever the exit status).
pub fn sign_as_user(env: &Env, key: &str) -> Res<Output> {
    let m = env.write("m", b"a message for the user to sign")?;
    env.run_as(USER, &["key", "sign", key, "--in", path(&m)?])
}

/// The id of `test-user`'s grant on `key` (any state).
pub fn grant_id(env: &Env, key: &str) -> Res<String> {
    let g = json(&env.ok(&["grant", "list", "--principal", USER, "--all", "--json"])?)?;
    let g = g
        .as_array()
        .and_then(|a| a.iter().find(|g| g["key"] == key || g["key_name"] == key))
        .ok_or("grant")?;
    Ok(g["id"].as_str().ok_or("grant id")?.to_owned())
}

/// `kms inventory verify` fails (exit 1) and names each of `needles`; its report.
pub fn verify_names(env: &Env, needles: &[&str]) -> Res<String> {
    let o = env.run(&["inventory", "verify"])?;
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for n in needles {
        assert!(out.contains(n), "verify does not name {n}: {out}");
    }
    Ok(out)
}

/// `kms access request ARGS --json` as `who`; the new request's id.
pub fn access_request(env: &Env, who: &str, args: &[&str]) -> Res<String> {
    let mut all = vec!["access", "request"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = env.run_as(who, &all)?;
    if !out.status.success() {
        return Err(format!("access request failed: {}", stderr(&out)).into());
    }
    Ok(json(&out)?["id"].as_str().ok_or("no id")?.to_owned())
}

impl Env {
    /// A break-glass grant of every operation on `key` to `test-user`.
    pub fn grant_user(&self, key: &str) -> Res<Output> {
        self.grant_ops(
            key,
            "sign,verify,encrypt,decrypt,wrap,unwrap,read-inventory",
        )
    }

    /// A break-glass grant of exactly `ops` (e.g. "mac,verify-mac") on `key` to `test-user`.
    pub fn grant_ops(&self, key: &str, ops: &str) -> Res<Output> {
        // Break-glass grants last 30 days at most.
        let until = (time::OffsetDateTime::now_utc().date() + time::Duration::days(20)).to_string();
        self.ok(&[
            "--reason",
            "test fixture",
            "grant",
            "add",
            USER,
            key,
            "--ops",
            ops,
            "--until",
            &until,
            "--ticket",
            "TEST-1",
            "--justification",
            "test fixture",
        ])
    }
}
