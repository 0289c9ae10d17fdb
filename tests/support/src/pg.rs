//! A throwaway PostgreSQL database per test environment, on the `KMS_TEST_POSTGRES` server
//! (a `scripts/setup-postgres` directory): made with the environment, dropped with it.

use std::path::{Path, PathBuf};

use crate::Res;

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

    pub(crate) fn password(&self) -> Res<String> {
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

    pub fn drop_database(&self) {
        let pg = self.clone();
        let _ = on_thread(move || {
            pg.client("kms")?
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name))?;
            Ok(())
        });
    }

    /// Point the inventory of config file `cfg` (as `setup-softhsm` wrote it, on SQLite) at
    /// this database.
    pub(crate) fn point_config_at(&self, cfg: &Path) -> Res<()> {
        let text = std::fs::read_to_string(cfg)?;
        let line = text
            .lines()
            .find(|l| l.starts_with("path = ") && l.contains("kms.db"))
            .ok_or("no inventory path in kms.toml")?
            .to_owned();
        let text = text.replacen(
            &line,
            &format!(
                "{line}\npostgres = \"{}\"\npassword = \"file:{}\"",
                self.url()?,
                self.server.join("password").display()
            ),
            1,
        );
        std::fs::write(cfg, text)?;
        Ok(())
    }
}

/// Run `f` on a thread of its own: the synchronous PostgreSQL client runs a runtime of its own,
/// which may not start inside the async tests' runtime.
pub(crate) fn on_thread<T: Send + 'static>(f: impl FnOnce() -> Res<T> + Send + 'static) -> Res<T> {
    std::thread::spawn(move || f().map_err(|e| e.to_string()))
        .join()
        .map_err(|_| "the PostgreSQL helper thread panicked")?
        .map_err(Into::into)
}

static NEXT_DB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
