//! One connection over either driver, its statements (prepared lazily, cached by text) and its
//! transactions; immediate transactions serialise writers on both databases.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use super::convert::{from_pg_row, from_sqlite, pg_args, to_pg_sql, to_sqlite};
use super::{Error, Params, Result, Row};

/// The advisory lock every PostgreSQL write transaction takes (any constant; "kms" in ASCII).
const PG_WRITE_LOCK: i64 = 0x006b_6d73;

// ---- connections ----

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
}

struct Pg {
    client: postgres::Client,
    cache: HashMap<String, postgres::Statement>,
    /// How to connect again when the server closed the connection (a restart, a failover).
    config: Option<postgres::Config>,
}

/// One database connection. Not shared between threads (the inventory holds it in a mutex).
pub struct Connection {
    backend: Backend,
    in_tx: std::cell::Cell<bool>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_postgres() {
            "Connection(postgres)"
        } else {
            "Connection(sqlite)"
        })
    }
}

/// `transaction_with_behavior`'s argument, as in rusqlite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionBehavior {
    Deferred,
    Immediate,
}

impl Connection {
    pub fn from_sqlite(conn: rusqlite::Connection) -> Connection {
        Connection {
            backend: Backend::Sqlite(conn),
            in_tx: std::cell::Cell::new(false),
        }
    }

    /// A PostgreSQL connection that connects again with `config` when the server has closed
    /// it, before the next statement outside a transaction (a transaction whose connection was
    /// lost fails as a whole: nothing of it was committed).
    pub fn from_postgres_healing(client: postgres::Client, config: postgres::Config) -> Connection {
        Connection::postgres(client, Some(config))
    }

    fn postgres(client: postgres::Client, config: Option<postgres::Config>) -> Connection {
        Connection {
            backend: Backend::Postgres(Box::new(RefCell::new(Pg {
                client,
                cache: HashMap::new(),
                config,
            }))),
            in_tx: std::cell::Cell::new(false),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The SQLite connection underneath (for SQLite-only work: pragmas, the online backup).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    pub fn sqlite_mut(&mut self) -> Option<&mut rusqlite::Connection> {
        match &mut self.backend {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    /// Run `sql` (several statements, no parameters).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.heal(self.in_tx.get())?;
                Ok(pg.client.batch_execute(sql)?)
            }
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let values = params.values();
        match &self.backend {
            Backend::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter().map(to_sqlite)))?)
            }
            Backend::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.heal(self.in_tx.get())?;
                let stmt = pg.prepare(sql)?;
                let args = pg_args(&values);
                let n = pg.client.execute(&stmt, &args)?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Every row of `sql`, read out.
    pub fn query_all<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>> {
        let values = params.values();
        match &self.backend {
            Backend::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let n = stmt.column_count();
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(values.iter().map(to_sqlite)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut vals = Vec::with_capacity(n);
                    for i in 0..n {
                        vals.push(from_sqlite(r.get_ref(i)?));
                    }
                    out.push(Row { values: vals });
                }
                Ok(out)
            }
            Backend::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.heal(self.in_tx.get())?;
                let stmt = pg.prepare(sql)?;
                let args = pg_args(&values);
                let rows = pg.client.query(&stmt, &args)?;
                rows.iter().map(from_pg_row).collect()
            }
        }
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row) -> Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<T> {
        let rows = self.query_all(sql, params)?;
        match rows.first() {
            Some(r) => f(r),
            None => Err(Error::QueryReturnedNoRows),
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_owned(),
        })
    }

    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare(sql)
    }

    /// Begin a transaction. Immediate ones take the write lock at once (SQLite) or the
    /// inventory's advisory lock (PostgreSQL), so writers never interleave.
    pub fn transaction_with_behavior(
        &mut self,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>> {
        if self.in_tx.get() {
            return Err(Error::Other("a transaction is already open".into()));
        }
        match (&self.backend, behavior) {
            (Backend::Sqlite(c), TransactionBehavior::Immediate) => {
                c.execute_batch("BEGIN IMMEDIATE")?
            }
            (Backend::Sqlite(c), TransactionBehavior::Deferred) => c.execute_batch("BEGIN")?,
            (Backend::Postgres(pg), b) => {
                let mut pg = pg.borrow_mut();
                pg.heal(false)?;
                pg.client.batch_execute("BEGIN")?;
                if b == TransactionBehavior::Immediate {
                    let lock = pg
                        .client
                        .execute("SELECT pg_advisory_xact_lock($1)", &[&PG_WRITE_LOCK]);
                    if let Err(e) = lock {
                        let _ = pg.client.batch_execute("ROLLBACK");
                        return Err(e.into());
                    }
                }
            }
        }
        self.in_tx.set(true);
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }

    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.transaction_with_behavior(TransactionBehavior::Deferred)
    }

    /// COMMIT or ROLLBACK on the connection the transaction ran on, never on a new one (a
    /// COMMIT on a fresh connection would "succeed" with nothing to commit).
    fn end(&self, sql: &str) -> Result<()> {
        let done = match &self.backend {
            Backend::Sqlite(c) => c.execute_batch(sql).map_err(Error::from),
            Backend::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                if pg.client.is_closed() {
                    Err(Error::Lost)
                } else {
                    pg.client.batch_execute(sql).map_err(Error::from)
                }
            }
        };
        self.in_tx.set(false);
        done
    }
}

impl Pg {
    /// Connect again if the server closed the connection. Inside a transaction the loss is the
    /// transaction's failure, never a silent new connection.
    fn heal(&mut self, in_tx: bool) -> Result<()> {
        if !self.client.is_closed() {
            return Ok(());
        }
        if in_tx {
            return Err(Error::Lost);
        }
        let Some(config) = &self.config else {
            return Err(Error::Lost);
        };
        let client = config.connect(postgres::NoTls)?;
        self.client = client;
        self.cache.clear();
        tracing::warn!("the connection to the PostgreSQL inventory was lost; connected again");
        Ok(())
    }

    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let text = to_pg_sql(sql);
        let stmt = self.client.prepare(&text).map_err(|e| {
            Error::Statement(text.split_whitespace().collect::<Vec<_>>().join(" "), e)
        })?;
        if self.cache.len() > 512 {
            self.cache.clear();
        }
        self.cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

/// A statement bound to its connection (rusqlite's shape; prepared lazily, cached by text).
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row) -> Result<T>>(
        &mut self,
        params: P,
        f: F,
    ) -> Result<T> {
        self.conn.query_row(&self.sql, params, f)
    }

    /// Every row mapped by `f`, as an iterator of results (rusqlite's shape).
    pub fn query_map<T, P: Params, F: FnMut(&Row) -> Result<T>>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.conn.query_all(&self.sql, params)?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }
}

/// An open transaction; rolled back when dropped without [`Transaction::commit`].
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.end("COMMIT")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.end("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::sql::{params, OptionalExtension};

    #[test]
    fn sqlite_round_trip_and_optional() -> Result<()> {
        let mut c = Connection::from_sqlite(rusqlite::Connection::open_in_memory()?);
        c.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c BLOB)")?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?3)",
            params![7i64, "x", vec![1u8, 2]],
        )?;
        tx.execute(
            "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?3)",
            params![8u32, None::<String>, None::<Vec<u8>>],
        )?;
        tx.commit()?;
        let (a, b, blob): (i64, String, Vec<u8>) =
            c.query_row("SELECT a, b, c FROM t WHERE a = ?1", [7], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        assert_eq!((a, b.as_str(), blob), (7, "x", vec![1, 2]));
        let none: Option<Option<String>> = c
            .query_row("SELECT b FROM t WHERE a = 8", [], |r| r.get(0))
            .optional()?;
        assert_eq!(none, Some(None));
        let missing: Option<i64> = c
            .query_row("SELECT a FROM t WHERE a = 9", [], |r| r.get(0))
            .optional()?;
        assert_eq!(missing, None);
        // Dropped without commit: rolled back.
        {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM t", [])?;
        }
        let n: i64 = c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?;
        assert_eq!(n, 2);
        Ok(())
    }
}
