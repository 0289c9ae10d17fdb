//! Key lifecycle procedures (issue 7) on real SoftHSM2 tokens: rotation through its windows with
//! the lifecycle clock moved forward (`KMS_TEST_CLOCK_OFFSET`, `testing` feature), compromise,
//! disposal with signed approvals, and crash safety (the process SIGKILLed at each step).
#![cfg(feature = "testing")]

use common::*;
use kms_testkit as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

#[path = "lifecycle/crash.rs"]
mod crash;
#[path = "lifecycle/disposal.rs"]
mod disposal;
#[path = "lifecycle/rotation.rs"]
mod rotation;

/// `kms ARGS` as `actor` with the lifecycle clock moved forward by `offset` (e.g. "91d").
fn at(env: &Env, offset: &str, actor: &str, args: &[&str]) -> Res<Output> {
    Ok(env
        .kms_as(actor)
        .env("KMS_TEST_CLOCK_OFFSET", offset)
        .args(args)
        .output()?)
}

fn ok_at(env: &Env, offset: &str, args: &[&str]) -> Res<Output> {
    let o = at(env, offset, actor_for(args), args)?;
    if !o.status.success() {
        return Err(format!(
            "kms {} (+{offset}) failed: {}{}",
            args.join(" "),
            stdout(&o),
            stderr(&o)
        )
        .into());
    }
    Ok(o)
}

/// The version number in a ciphertext / wrapped key header (bytes 22..26, big endian).
fn header_version(data: &[u8]) -> u32 {
    u32::from_be_bytes([data[22], data[23], data[24], data[25]])
}

fn versions(env: &Env, key: &str) -> Res<Vec<Value>> {
    let v = json(&env.ok(&["key", "show", key, "--json"])?)?;
    Ok(v["versions"].as_array().cloned().unwrap_or_default())
}

fn state_of(env: &Env, key: &str, version: u64) -> Res<String> {
    Ok(versions(env, key)?
        .iter()
        .find(|v| v["version"] == version)
        .and_then(|v| v["state"].as_str())
        .ok_or("no such version")?
        .to_owned())
}

fn people(env: &Env) -> TestResult {
    env.register_person("alice", "security-admin")?;
    env.register_person("bob", "manager")?;
    Ok(())
}

fn dispose_request(env: &Env, key: &str, wait: &str) -> Res<String> {
    let o = env.ok(&[
        "key",
        "dispose",
        key,
        "--contract-ref",
        "CTR-2026-17",
        "--justification",
        "client contract ended",
        "--wait",
        wait,
        "--json",
    ])?;
    Ok(json(&o)?["id"].as_str().ok_or("id")?.to_owned())
}

fn dispose_step(env: &Env, who: &str, verb: &str, id: &str) -> Res<Output> {
    env.as_person(
        who,
        &["key", "dispose", verb, id, "--card-pin", "env:CARD_PIN"],
    )
}
