//! Test fixture: a fresh pair of real SoftHSM2 tokens per test, made by the project's own
//! `scripts/setup-softhsm` in a temporary directory, and the real `kms` binary run against them.
//!
//! Every caller is a registered principal. The fixture registers `test-officer` (security
//! officer: administration) and `test-user` (user: key use through grants). `Env::run`/`ok`
//! act as the officer, except key-use commands (`key sign|verify|encrypt|decrypt|public`),
//! which act as `test-user`; `Env::create` gives `test-user` a break-glass grant on the new key
//! for every operation, so the key's own policy is what those tests exercise.
//!
//! A library of its own (`kms-testkit`, a dev-dependency of `kms`), so it is compiled once rather
//! than into each of the ~30 test binaries, and what one binary does not use is not dead code.
//! Test files import it as `use kms_testkit as common;`.

use std::path::{Path, PathBuf};
use std::process::Output;
pub mod access;
pub mod api;
pub mod cards;
mod inventory;
pub mod net;
pub mod openssl;
mod pg;
pub mod rsyslog;
mod run;
pub mod service;
pub mod tokens;
pub mod wire;

pub use access::{access_request, grant_id, sign_as_user, verify_names};
pub use api::{b64, body_text, expect, unb64};
pub use net::{loopback, tcp_from, tls_from};
pub use openssl::{openssl, openssl_dgst_verify, openssl_rawin_verify};
pub use pg::PgDb;
pub use run::{actor_for, kill_at, kms_bin};
pub use tokens::{key_access, on_token, paired, token_file, Rng};
pub use wire::{kmip_request, read_kmip_message, xks_headers};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The security officer every test environment has.
pub const OFFICER: &str = "test-officer";
/// The ordinary user that uses keys through grants.
pub const USER: &str = "test-user";

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub struct Env {
    pub dir: tempfile::TempDir,
    /// With `KMS_TEST_POSTGRES=DIR` (a `scripts/setup-postgres` directory), each environment
    /// gets its own database there, dropped with it.
    pub pg: Option<PgDb>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            pg.drop_database();
        }
    }
}

/// The repository's root (this crate lives in `tests/support`), or `KMS_REPO_ROOT`.
pub fn repo_root() -> PathBuf {
    std::env::var_os("KMS_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

impl Env {
    /// Two fresh tokens (`kms-primary`, `kms-backup`) and a ready `kms.toml`.
    pub fn new() -> Res<Env> {
        Env::make(true, None)
    }

    /// Like [`Env::new`], with the tokens on SoftHSM2's object store `backend` ("file" or
    /// "db": `scripts/setup-softhsm`'s `KMS_SOFTHSM_BACKEND`) whatever the run's default.
    pub fn new_on_store(backend: &str) -> Res<Env> {
        Env::make(true, Some(backend))
    }

    /// Like [`Env::new`], with the inventory on SQLite even when the run is on PostgreSQL.
    pub fn new_sqlite() -> Res<Env> {
        Env::make(false, None)
    }

    fn make(postgres: bool, backend: Option<&str>) -> Res<Env> {
        let dir = tempfile::tempdir()?;
        tokens::setup_softhsm(dir.path(), backend)?;
        let pg = if postgres { PgDb::create()? } else { None };
        if let Some(pg) = &pg {
            pg.point_config_at(&dir.path().join("kms.toml"))?;
        }
        let env = Env { dir, pg };
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
