//! Bad input, refusals and failures: every one must exit with the right code, say clearly what was
//! wrong, and leave the tokens (counted independently by pkcs11-tool) and the inventory as they were.
//!
//! Exit codes (src/engine/error.rs, src/cli/mod.rs): 2 bad input / usage, 3 not found, 4 refused by
//! policy, 5 token, 6 inventory or audit, 7 configuration or PIN source.
//!
//! SoftHSM2 2.6.1 never locks a user PIN, so there is no locked-PIN test here.

use common::*;
use kms_testkit as common;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

#[path = "bad_input/config.rs"]
mod config;
#[path = "bad_input/decrypt.rs"]
mod decrypt;
#[path = "bad_input/failures.rs"]
mod failures;
#[path = "bad_input/keys.rs"]
mod keys;

// ---- helpers ---------------------------------------------------------------------------------

/// What a refused request must leave exactly as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    primary: usize,
    backup: usize,
    /// `kms key list --json`.
    keys: String,
}

fn snapshot(env: &Env) -> Res<Snapshot> {
    let keys = env.ok(&["key", "list", "--json"])?;
    Ok(Snapshot {
        primary: env.object_count("kms-primary")?,
        backup: env.object_count("kms-backup")?,
        keys: stdout(&keys),
    })
}

/// Fail unless both tokens hold the same objects count and the inventory lists the same keys.
fn assert_unchanged(env: &Env, before: &Snapshot, what: &str) -> TestResult {
    let after = snapshot(env)?;
    assert_eq!(
        after.primary, before.primary,
        "{what}: object count on kms-primary changed"
    );
    assert_eq!(
        after.backup, before.backup,
        "{what}: object count on kms-backup changed"
    );
    assert_eq!(after.keys, before.keys, "{what}: the key inventory changed");
    Ok(())
}

fn try_create(env: &Env, name: &str, key_type: &str, usage: &str, extra: &[&str]) -> Res<Output> {
    env.run(&create_args(name, key_type, usage, extra))
}

fn run_with(env: &Env, config: &Path, args: &[&str]) -> Res<Output> {
    Ok(env.kms_with_config(config).args(args).output()?)
}

/// A copy of `kms.toml` at `rel` whose `key = ...` line in `[section]` is replaced by `line`
/// (which may be several lines).
fn config_with(env: &Env, rel: &str, section: &str, key: &str, line: &str) -> Res<PathBuf> {
    let text = std::fs::read_to_string(env.config())?;
    let header = format!("[{section}]");
    let mut current = String::new();
    let mut out = String::new();
    let mut replaced = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            current = t.to_owned();
        }
        let is_key = t.split('=').next().map(str::trim) == Some(key) && t.contains('=');
        if current == header && is_key && !replaced {
            out.push_str(line);
            replaced = true;
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    if !replaced {
        return Err(format!("kms.toml has no `{key}` in {header}:\n{text}").into());
    }
    env.write(rel, out.as_bytes())
}

/// A file only its owner may read (what kms insists on for inventories).
fn write_private(path: &Path, data: &[u8]) -> TestResult {
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, data)?;
    f.sync_all()?;
    Ok(())
}

/// Files in the test directory whose name starts with `prefix` (finds `out` and `out.kms-tmp-*`).
fn files_starting_with(env: &Env, prefix: &str) -> Res<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(env.dir.path())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            found.push(name);
        }
    }
    Ok(found)
}
