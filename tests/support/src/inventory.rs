//! The inventory seen behind kms's back, on SQLite or PostgreSQL alike: SQL statements and
//! queries, injected faults (refusing triggers), whole copies, dumps and losses.

use std::process::Command;

use crate::pg::on_thread;
use crate::{stderr, stdout, Env, Res, TestResult};

impl Env {
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
                for from in self.sqlite_files() {
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
                for to in self.sqlite_files() {
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
                for file in self.sqlite_files() {
                    let _ = std::fs::remove_file(file);
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

    /// The SQLite inventory's files: the database, its WAL and its shared memory.
    fn sqlite_files(&self) -> [String; 3] {
        ["", "-wal", "-shm"].map(|suffix| format!("{}{suffix}", self.db().display()))
    }
}
