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
use std::process::{Command, Output};
pub mod access;
pub mod api;
pub mod cards;
pub mod net;
pub mod openssl;
pub mod rsyslog;
pub mod service;
pub mod tokens;

pub use access::{access_request, grant_id, sign_as_user, verify_names};
pub use api::{b64, body_text, expect, unb64};
pub use net::{loopback, tcp_from, tls_from};
pub use openssl::{openssl, openssl_dgst_verify, openssl_rawin_verify};
pub use tokens::{on_token, paired, token_file, Rng};

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
        ["key", "sign" | "verify" | "encrypt" | "decrypt" | "public" | "mac" | "verify-mac", ..] => {
            USER
        }
        _ => OFFICER,
    }
}
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub struct Env {
    pub dir: tempfile::TempDir,
    /// With `KMS_TEST_POSTGRES=DIR` (a `scripts/setup-postgres` directory), each environment
    /// gets its own database there, dropped with it.
    pub pg: Option<PgDb>,
}

/// A throwaway PostgreSQL database of one test environment.
#[derive(Clone)]
pub struct PgDb {
    /// The server's `scripts/setup-postgres` directory (url, port, password).
    pub server: PathBuf,
    pub name: String,
}

impl PgDb {
    pub fn password_file(&self) -> PathBuf {
        self.server.join("password")
    }

    fn password(&self) -> Res<String> {
        Ok(std::fs::read_to_string(self.server.join("password"))?
            .trim()
            .to_owned())
    }

    fn port(&self) -> Res<String> {
        Ok(std::fs::read_to_string(self.server.join("port"))?
            .trim()
            .to_owned())
    }

    pub fn url(&self) -> Res<String> {
        Ok(format!(
            "postgres://kms@127.0.0.1:{}/{}",
            self.port()?,
            self.name
        ))
    }

    /// A client of database `db` on the server.
    pub fn client(&self, db: &str) -> Res<postgres::Client> {
        Ok(postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port()?.parse()?)
            .user("kms")
            .password(self.password()?)
            .dbname(db)
            .connect(postgres::NoTls)?)
    }

    /// A new, empty database on the `KMS_TEST_POSTGRES` server (None without one); dropped
    /// when the returned value is dropped.
    pub fn create() -> Res<Option<PgDb>> {
        let Some(server) = std::env::var_os("KMS_TEST_POSTGRES").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let name = format!(
            "kms_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let db = PgDb {
            server: PathBuf::from(server),
            name,
        };
        let d = db.clone();
        on_thread(move || {
            d.client("kms")?
                .batch_execute(&format!("CREATE DATABASE {}", d.name))?;
            Ok(())
        })?;
        Ok(Some(db))
    }
}

/// Run `f` on a thread of its own: the synchronous PostgreSQL client runs a runtime of its own,
/// which may not start inside the async tests' runtime.
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> Res<T> + Send + 'static) -> Res<T> {
    std::thread::spawn(move || f().map_err(|e| e.to_string()))
        .join()
        .map_err(|_| "the PostgreSQL helper thread panicked")?
        .map_err(Into::into)
}

static NEXT_DB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            pg.drop_database();
        }
    }
}

impl PgDb {
    pub fn drop_database(&self) {
        let pg = self.clone();
        let _ = on_thread(move || {
            pg.client("kms")?
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name))?;
            Ok(())
        });
    }
}

/// The repository's root (this crate lives in `tests/support`), or `KMS_REPO_ROOT`.
pub fn repo_root() -> PathBuf {
    std::env::var_os("KMS_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
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
        let mut setup = Command::new("bash");
        setup
            .arg(repo_root().join("scripts/setup-softhsm"))
            .env("KMS_DEV_DIR", dir.path());
        if let Some(backend) = backend {
            setup.env("KMS_SOFTHSM_BACKEND", backend);
        }
        let out = setup.output()?;
        if !out.status.success() {
            return Err(format!(
                "setup-softhsm failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let pg = if postgres { PgDb::create()? } else { None };
        if let Some(pg) = &pg {
            let cfg = dir.path().join("kms.toml");
            let text = std::fs::read_to_string(&cfg)?;
            let line = text
                .lines()
                .find(|l| l.starts_with("path = ") && l.contains("kms.db"))
                .ok_or("no inventory path in kms.toml")?
                .to_owned();
            let text = text.replacen(
                &line,
                &format!(
                    "{line}\npostgres = \"{}\"\npassword = \"file:{}\"",
                    pg.url()?,
                    pg.server.join("password").display()
                ),
                1,
            );
            std::fs::write(&cfg, text)?;
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

    /// Run SQL statements (no parameters) on the inventory, behind kms's back: on the SQLite
    /// file, or on this environment's PostgreSQL database.
    pub fn sql(&self, batch: &str) -> TestResult {
        match &self.pg {
            Some(pg) => {
                let (pg, batch) = (pg.clone(), batch.to_owned());
                on_thread(move || {
                    pg.client(&pg.name)?.batch_execute(&batch).map_err(|e| {
                        format!(
                            "{}: {batch}",
                            e.as_db_error()
                                .map(|d| d.message().to_owned())
                                .unwrap_or_else(|| e.to_string())
                        )
                    })?;
                    Ok(())
                })?
            }
            None => {
                let db = rusqlite::Connection::open(self.db())?;
                db.busy_timeout(std::time::Duration::from_secs(10))?;
                db.execute_batch(batch)?;
            }
        }
        Ok(())
    }

    /// A trigger named `name` that makes `event` (`BEFORE INSERT`, `BEFORE UPDATE OF state`,
    /// `BEFORE DELETE`) on `table` fail with `message`, when `condition` (on `NEW`) holds: a
    /// fault injected into the inventory, on SQLite or PostgreSQL.
    pub fn refuse(
        &self,
        name: &str,
        event: &str,
        table: &str,
        condition: Option<&str>,
        message: &str,
    ) -> TestResult {
        if self.pg.is_some() {
            self.sql(&format!(
                "CREATE FUNCTION {name}() RETURNS trigger AS $$
                 BEGIN RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql;
                 CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW {}
                 EXECUTE FUNCTION {name}();",
                condition.map(|c| format!("WHEN ({c})")).unwrap_or_default()
            ))
        } else {
            self.sql(&format!(
                "CREATE TRIGGER {name} {event} ON {table} {}
                 BEGIN SELECT RAISE(ABORT, '{message}'); END;",
                condition.map(|c| format!("WHEN {c}")).unwrap_or_default()
            ))
        }
    }

    /// Remove a trigger made by [`Env::refuse`].
    pub fn unrefuse(&self, name: &str, table: &str) -> TestResult {
        if self.pg.is_some() {
            self.sql(&format!(
                "DROP TRIGGER {name} ON {table}; DROP FUNCTION {name}();"
            ))
        } else {
            self.sql(&format!("DROP TRIGGER {name}"))
        }
    }

    /// Rows of `query` as `sqlite3` prints them: one line per row, columns joined by '|'.
    pub fn sql_rows(&self, query: &str) -> Res<String> {
        match &self.pg {
            Some(pg) => {
                let (pg, query) = (pg.clone(), query.to_owned());
                let msgs = on_thread(move || Ok(pg.client(&pg.name)?.simple_query(&query)?))?;
                let lines: Vec<String> = msgs
                    .iter()
                    .filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => Some(
                            (0..r.len())
                                .map(|i| r.get(i).unwrap_or_default().to_owned())
                                .collect::<Vec<_>>()
                                .join("|"),
                        ),
                        _ => None,
                    })
                    .collect();
                Ok(lines.join("\n"))
            }
            None => {
                let out = Command::new("sqlite3").arg(self.db()).arg(query).output()?;
                if !out.status.success() {
                    return Err(format!("sqlite3: {}", stderr(&out)).into());
                }
                Ok(stdout(&out).trim().to_owned())
            }
        }
    }

    /// One integer value from the inventory (`query`'s only row and column).
    pub fn sql_i64(&self, query: &str) -> Res<i64> {
        Ok(self.sql_rows(query)?.parse()?)
    }

    /// Rows of `query` as a JSON array of objects (`sqlite3 -json`; PostgreSQL's json_agg).
    pub fn sql_json(&self, query: &str) -> Res<String> {
        match &self.pg {
            Some(_) => self.sql_text(&format!(
                "SELECT COALESCE(json_agg(t), '[]'::json)::text FROM ({query}) t"
            )),
            None => {
                let out = Command::new("sqlite3")
                    .arg("-json")
                    .arg(self.db())
                    .arg(query)
                    .output()?;
                if !out.status.success() {
                    return Err(format!("sqlite3: {}", stderr(&out)).into());
                }
                Ok(stdout(&out))
            }
        }
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

    /// Everything the inventory holds, as bytes: the SQLite file and its WAL, or a `pg_dump`.
    pub fn inventory_bytes(&self) -> Res<Vec<u8>> {
        if self.pg.is_some() {
            return self.sql_dump();
        }
        let mut all = std::fs::read(self.db())?;
        all.extend(std::fs::read(self.db().with_extension("db-wal")).unwrap_or_default());
        Ok(all)
    }

    /// `pg_dump` of this environment's PostgreSQL database (every row, as text).
    pub fn sql_dump(&self) -> Res<Vec<u8>> {
        let pg = self.pg.as_ref().ok_or("not on PostgreSQL")?;
        let mut dump = Command::new("pg_dump");
        for dir in std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
        {
            let bin = dir.path().join("bin/pg_dump");
            if bin.exists() {
                dump = Command::new(bin);
            }
        }
        let out = dump
            .args(["--data-only", "--dbname", &pg.url()?])
            .env("PGPASSWORD", pg.password()?)
            .output()?;
        if !out.status.success() {
            return Err(format!("pg_dump: {}", stderr(&out)).into());
        }
        Ok(out.stdout)
    }

    /// Keep a whole copy of the inventory as it is now (the SQLite file and its WAL, or a
    /// PostgreSQL database made from this one as a template), for [`Env::put_back_inventory`].
    pub fn copy_inventory(&self) -> TestResult {
        match &self.pg {
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let from = format!("{}{suffix}", self.db().display());
                    if std::path::Path::new(&from).exists() {
                        std::fs::copy(&from, format!("{from}.saved"))?;
                    }
                }
            }
            Some(pg) => {
                let pg = pg.clone();
                on_thread(move || {
                    let mut c = pg.client("kms")?;
                    c.batch_execute(&format!("CREATE DATABASE {0}_saved TEMPLATE {0}", pg.name))?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Put the copy made by [`Env::copy_inventory`] in place of the inventory (an older backup
    /// restored behind kms's back, or a lagging standby promoted).
    pub fn put_back_inventory(&self) -> TestResult {
        match &self.pg {
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let to = format!("{}{suffix}", self.db().display());
                    let _ = std::fs::remove_file(&to);
                    let from = format!("{to}.saved");
                    if std::path::Path::new(&from).exists() {
                        std::fs::copy(&from, &to)?;
                    }
                }
            }
            Some(pg) => {
                let pg = pg.clone();
                on_thread(move || {
                    let mut c = pg.client("kms")?;
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name))?;
                    c.batch_execute(&format!("CREATE DATABASE {0} TEMPLATE {0}_saved", pg.name))?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Throw the inventory away (a lost database): the SQLite file, or the PostgreSQL database
    /// (made again empty).
    pub fn remove_inventory(&self) -> TestResult {
        match &self.pg {
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", self.db().display()));
                }
            }
            Some(pg) => {
                let pg = pg.clone();
                on_thread(move || {
                    // One statement each: neither may run inside a transaction block.
                    let mut c = pg.client("kms")?;
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name))?;
                    c.batch_execute(&format!("CREATE DATABASE {}", pg.name))?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// A bytes literal in the inventory's SQL dialect.
    pub fn sql_bytes(&self, hex: &str) -> String {
        if self.pg.is_some() {
            format!("decode('{hex}', 'hex')")
        } else {
            format!("X'{hex}'")
        }
    }

    /// One text value from the inventory (the first column of the first row, or "").
    pub fn sql_text(&self, query: &str) -> Res<String> {
        match &self.pg {
            Some(pg) => {
                let (pg, query) = (pg.clone(), query.to_owned());
                let rows = on_thread(move || Ok(pg.client(&pg.name)?.simple_query(&query)?))?;
                Ok(rows
                    .iter()
                    .find_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => {
                            Some(r.get(0).unwrap_or_default().to_owned())
                        }
                        _ => None,
                    })
                    .unwrap_or_default())
            }
            None => {
                let db = rusqlite::Connection::open(self.db())?;
                let v: Option<rusqlite::types::Value> = db
                    .query_row(query, [], |r| r.get(0))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                Ok(match v {
                    Some(rusqlite::types::Value::Text(t)) => t,
                    Some(rusqlite::types::Value::Integer(i)) => i.to_string(),
                    Some(rusqlite::types::Value::Real(r)) => r.to_string(),
                    _ => String::new(),
                })
            }
        }
    }

    /// True (and a note on stderr) when this test's subject is the SQLite file itself and the
    /// run is on PostgreSQL: the caller returns early.
    pub fn sqlite_only(&self, what: &str) -> bool {
        if self.pg.is_some() {
            eprintln!("skipped on PostgreSQL: {what} is about the SQLite inventory file");
            true
        } else {
            false
        }
    }

    pub fn softhsm_conf(&self) -> PathBuf {
        self.path("softhsm2.conf")
    }

    /// The SoftHSM2 directory of token `label` (its label is in `token.object` on the file
    /// store, in `sqlite3.db` on the db store).
    pub fn token_dir(&self, label: &str) -> Res<PathBuf> {
        for entry in std::fs::read_dir(self.path("tokens"))? {
            let dir = entry?.path();
            for file in ["token.object", "sqlite3.db"] {
                let meta = std::fs::read(dir.join(file)).unwrap_or_default();
                if meta.windows(label.len()).any(|w| w == label.as_bytes()) {
                    return Ok(dir);
                }
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

    /// A break-glass grant of exactly `ops` (e.g. "mac,verify-mac") on `key` to `test-user`.
    pub fn grant_ops(&self, key: &str, ops: &str) -> Res<Output> {
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

    /// Run `kms ARGS` as `test-user` and fail the test unless it exits 0 (key use that
    /// [`actor_for`] does not route to the user: `key mac`, `key verify-mac`, `key rewrap`).
    pub fn user_ok(&self, args: &[&str]) -> Res<Output> {
        let out = self.run_as(USER, args)?;
        if !out.status.success() {
            return Err(format!(
                "kms {} (as {USER}) failed ({:?}): {}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(out)
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
