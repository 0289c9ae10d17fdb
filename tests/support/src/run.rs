//! The real `kms` binary run against an [`Env`]: as which principal, expecting success or
//! not, key creation with its grant, and a run killed at a failpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{create_args, json, Env, Res, TestResult, OFFICER, USER};

/// Key use acts as the user; administration as the officer.
pub fn actor_for(args: &[&str]) -> &'static str {
    let cmd: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with("--"))
        .collect();
    match cmd.as_slice() {
        ["key", "sign" | "verify" | "encrypt" | "decrypt" | "public" | "mac" | "verify-mac", ..] => {
            USER
        }
        _ => OFFICER,
    }
}

/// The `kms` binary under test: `CARGO_BIN_EXE_kms`, which cargo sets when it runs an
/// integration test, or else `kms` beside the directory of the running test binary
/// (`target/<profile>/deps/<test>` → `target/<profile>/kms`), for a test binary run directly.
pub fn kms_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_kms") {
        return PathBuf::from(bin);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("kms")))
        .unwrap_or_else(|| PathBuf::from("kms"))
}

impl Env {
    /// The real `kms` binary with this environment's config.
    pub fn kms(&self) -> Command {
        self.kms_with_config(&self.config())
    }

    pub fn kms_with_config(&self, config: &Path) -> Command {
        self.kms_as_with_config(OFFICER, config)
    }

    /// The real `kms` binary acting as principal `actor`.
    pub fn kms_as(&self, actor: &str) -> Command {
        self.kms_as_with_config(actor, &self.config())
    }

    /// The real `kms` binary acting as principal `actor`, with another config file.
    pub fn kms_as_with_config(&self, actor: &str, config: &Path) -> Command {
        let mut c = Command::new(kms_bin());
        c.env_remove("KMS_CONFIG")
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .arg("--config")
            .arg(config)
            .arg("--as")
            .arg(actor);
        c
    }

    /// Run `kms ARGS`, returning the output whatever the exit status. Key use acts as
    /// `test-user`, everything else as `test-officer`.
    pub fn run(&self, args: &[&str]) -> Res<Output> {
        Ok(self.kms_as(actor_for(args)).args(args).output()?)
    }

    /// Run `kms ARGS` as `actor`.
    pub fn run_as(&self, actor: &str, args: &[&str]) -> Res<Output> {
        Ok(self.kms_as(actor).args(args).output()?)
    }

    /// Run `kms ARGS` as `test-user` and fail the test unless it exits 0 (key use that
    /// [`actor_for`] does not route to the user: `key mac`, `key verify-mac`, `key rewrap`).
    pub fn user_ok(&self, args: &[&str]) -> Res<Output> {
        succeeded(
            self.run_as(USER, args)?,
            &format!("kms {} (as {USER})", args.join(" ")),
        )
    }

    /// Run `kms ARGS` and fail the test unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> Res<Output> {
        succeeded(self.run(args)?, &format!("kms {}", args.join(" ")))
    }

    /// Create a key with sensible inventory fields, and grant `test-user` its use.
    pub fn create(&self, name: &str, key_type: &str, usage: &str) -> Res<Output> {
        let out = self.ok(&create_args(
            name,
            key_type,
            usage,
            &["--reason", "CHG-1 test setup"],
        ))?;
        self.grant_user(name)?;
        Ok(out)
    }

    /// The CKA_ID (hex) of the newest version of `key`, from `kms key show --json`.
    pub fn object_id(&self, key: &str) -> Res<String> {
        let o = self.ok(&["key", "show", key, "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        let versions = v["versions"].as_array().ok_or("no versions")?;
        let last = versions.last().ok_or("no versions")?;
        Ok(last["object_id"].as_str().ok_or("no object_id")?.to_owned())
    }

    /// The name of the key whose ID (KMIP unique identifier) is `id`.
    pub fn key_name_by_id(&self, id: &str) -> Res<String> {
        let keys = json(&self.ok(&["key", "list", "--json"])?)?;
        Ok(keys
            .as_array()
            .and_then(|a| a.iter().find(|k| k["id"] == id))
            .and_then(|k| k["name"].as_str())
            .ok_or_else(|| format!("no key with id {id} in the inventory"))?
            .to_owned())
    }

    /// Re-seal every inventory row as it reads now (the `testing` build's hook): for tests that
    /// simulate the passing of time or a crash's leftovers by editing rows, which kms would
    /// otherwise (rightly) refuse as tampered.
    pub fn retag(&self) -> Res<()> {
        self.ok(&["inventory", "retag-for-tests"]).map(drop)
    }
}

/// `out` if the command (`what`) exited 0, else an error with its status and stderr.
fn succeeded(out: Output, what: &str) -> Res<Output> {
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

/// Run `kms ARGS` as the officer with failpoint `fp` (and the lifecycle clock moved by
/// `offset`, e.g. "0d"; `testing` builds); wait until it stops there, then SIGKILL it.
pub fn kill_at(env: &Env, offset: &str, fp: &str, args: &[&str]) -> TestResult {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = env
        .kms_as(OFFICER)
        .env("KMS_FAILPOINT", fp)
        .env("KMS_TEST_CLOCK_OFFSET", offset)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let want = format!("failpoint {fp} reached");
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(&want) {
                let _ = tx.send(Ok(()));
                return;
            }
        }
        let _ = tx.send(Err(seen));
    });
    let reached = rx.recv_timeout(std::time::Duration::from_secs(30));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()?;
    let _ = child.wait();
    match reached {
        Ok(Ok(())) => Ok(()),
        Ok(Err(seen)) => Err(format!("{fp} never reached: {seen}").into()),
        Err(_) => Err(format!("{fp}: timed out").into()),
    }
}
