//! Test fixture: a fresh pair of real SoftHSM2 tokens per test, made by the project's own
//! `scripts/setup-softhsm` in a temporary directory, and the real `kms` binary run against them.
//!
//! Every caller is a registered principal. The fixture registers `test-officer` (security
//! officer: administration) and `test-user` (user: key use through grants). `Env::run`/`ok`
//! act as the officer, except key-use commands (`key sign|verify|encrypt|decrypt|public`),
//! which act as `test-user`; `Env::create` gives `test-user` a break-glass grant on the new key
//! for every operation, so the key's own policy is what those tests exercise.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
pub mod cards;
pub mod rsyslog;
pub mod service;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The security officer every test environment has.
pub const OFFICER: &str = "test-officer";
/// The ordinary user that uses keys through grants.
pub const USER: &str = "test-user";

/// Key use acts as the user; administration as the officer.
pub fn actor_for(args: &[&str]) -> &'static str {
    let cmd: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.starts_with("--"))
        .collect();
    match cmd.as_slice() {
        ["key", "sign" | "verify" | "encrypt" | "decrypt" | "public", ..] => USER,
        _ => OFFICER,
    }
}
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub struct Env {
    pub dir: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    std::env::var_os("KMS_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

impl Env {
    /// Two fresh tokens (`kms-primary`, `kms-backup`) and a ready `kms.toml`.
    pub fn new() -> Res<Env> {
        let dir = tempfile::tempdir()?;
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/setup-softhsm"))
            .env("KMS_DEV_DIR", dir.path())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "setup-softhsm failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let env = Env { dir };
        env.ok(&["principal", "add", OFFICER, "--role", "security-officer"])?;
        env.ok(&["principal", "add", USER, "--role", "user"])?;
        Ok(env)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("kms.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.path("kms.db")
    }

    pub fn softhsm_conf(&self) -> PathBuf {
        self.path("softhsm2.conf")
    }

    /// The SoftHSM2 directory of token `label`.
    pub fn token_dir(&self, label: &str) -> Res<PathBuf> {
        for entry in std::fs::read_dir(self.path("tokens"))? {
            let dir = entry?.path();
            let meta = std::fs::read(dir.join("token.object")).unwrap_or_default();
            if meta.windows(label.len()).any(|w| w == label.as_bytes()) {
                return Ok(dir);
            }
        }
        Err(format!("no SoftHSM2 directory for token {label}").into())
    }

    pub fn so_pin(&self, label: &str) -> Res<String> {
        Ok(std::fs::read_to_string(
            self.path(&format!("pins/{label}.so-pin")),
        )?)
    }

    pub fn user_pin(&self, label: &str) -> Res<String> {
        Ok(std::fs::read_to_string(
            self.path(&format!("pins/{label}.user-pin")),
        )?)
    }

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
        let mut c = Command::new(env!("CARGO_BIN_EXE_kms"));
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

    /// A break-glass grant of every operation on `key` to `test-user`.
    pub fn grant_user(&self, key: &str) -> Res<Output> {
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
            "sign,verify,encrypt,decrypt,wrap,unwrap,read-inventory",
            "--until",
            &until,
            "--ticket",
            "TEST-1",
            "--justification",
            "test fixture",
        ])
    }

    /// Run `kms ARGS` and fail the test unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> Res<Output> {
        let out = self.run(args)?;
        if !out.status.success() {
            return Err(format!(
                "kms {} failed ({:?}): {}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(out)
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

    /// The PKCS#11 module setup-softhsm found (as written into kms.toml).
    pub fn module(&self) -> Res<String> {
        let cfg = std::fs::read_to_string(self.config())?;
        cfg.lines()
            .find_map(|l| l.strip_prefix("module = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .map(str::to_owned)
            .ok_or_else(|| "no module in kms.toml".into())
    }

    /// The CKA_ID (hex) of the newest version of `key`, from `kms key show --json`.
    pub fn object_id(&self, key: &str) -> Res<String> {
        let o = self.ok(&["key", "show", key, "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        let versions = v["versions"].as_array().ok_or("no versions")?;
        let last = versions.last().ok_or("no versions")?;
        Ok(last["object_id"].as_str().ok_or("no object_id")?.to_owned())
    }

    /// pkcs11-tool against one of this environment's tokens, logged in as user.
    pub fn pkcs11_tool(&self, label: &str, args: &[&str]) -> Res<Output> {
        let pin = self.user_pin(label)?;
        let module = self.module()?;
        Ok(Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .args([
                "--module",
                &module,
                "--token-label",
                label,
                "--login",
                "--pin",
            ])
            .arg(pin)
            .args(args)
            .output()?)
    }

    /// The token's objects as pkcs11-tool lists them.
    pub fn list_objects(&self, label: &str) -> Res<String> {
        let out = self.pkcs11_tool(label, &["--list-objects"])?;
        if !out.status.success() {
            return Err(format!(
                "pkcs11-tool --list-objects failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// How many key objects the token holds, counted by pkcs11-tool (independent of kms).
    /// Re-seal every inventory row as it reads now (the `testing` build's hook): for tests that
    /// simulate the passing of time or a crash's leftovers by editing rows, which kms would
    /// otherwise (rightly) refuse as tampered.
    pub fn retag(&self) -> Res<()> {
        self.ok(&["inventory", "retag-for-tests"]).map(drop)
    }

    pub fn object_count(&self, label: &str) -> Res<usize> {
        Ok(self
            .list_objects(label)?
            .lines()
            .filter(|l| l.contains(" Object;") || l.starts_with("Secret Key Object"))
            .count())
    }

    /// Write a file in the test directory.
    pub fn write(&self, rel: &str, data: &[u8]) -> Res<PathBuf> {
        let p = self.path(rel);
        std::fs::write(&p, data)?;
        Ok(p)
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the command failed with `code` and that stderr contains every one of `needles`.
pub fn assert_fails(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}; stderr: {err}; stdout: {}",
        stdout(o)
    );
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}; got: {err}");
    }
}

/// `openssl` with arguments; returns the output.
pub fn openssl(args: &[&str]) -> Res<Output> {
    Ok(Command::new("openssl").args(args).output()?)
}

/// `kms key create NAME --type T --usage U` with the other inventory fields filled in, plus `extra`.
pub fn create_args<'a>(
    name: &'a str,
    key_type: &'a str,
    usage: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "key",
        "create",
        name,
        "--type",
        key_type,
        "--owner",
        "payments-team",
        "--classification",
        "confidential",
        "--usage",
        usage,
        "--purpose",
        "integration test",
    ];
    args.extend_from_slice(extra);
    args
}

/// A path as the `&str` argument of a command line.
pub fn path(p: &Path) -> Res<&str> {
    p.to_str().ok_or_else(|| "non-UTF-8 path".into())
}

/// A command's standard output as JSON.
pub fn json(o: &Output) -> Res<serde_json::Value> {
    Ok(serde_json::from_slice(&o.stdout)?)
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
