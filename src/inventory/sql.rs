//! The inventory's one door to a database: SQLite (embedded, the default) or PostgreSQL (shared
//! by several nodes, issue 13). Its API is the small part of rusqlite's the inventory uses —
//! `Connection`, `Statement`, `Row`, `params!`, `optional()`, immediate transactions — so the
//! inventory's queries are written once, in SQLite's syntax with numbered parameters (`?1`);
//! for PostgreSQL they are rewritten to `$1` and the few dialect differences are handled here
//! or named by [`Connection::is_postgres`].
//!
//! Values cross the door as [`Value`] (NULL, 64-bit integer, real, text, bytes): both schemas
//! store integers as 64-bit, times as RFC 3339 text, and bytes as BLOB / BYTEA.
//!
//! Writers are serialised on both: SQLite's `BEGIN IMMEDIATE` takes the database's write lock;
//! on PostgreSQL an immediate transaction takes one transaction-scoped advisory lock, so the
//! audit hash chain stays one total order across every node.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

/// The advisory lock every PostgreSQL write transaction takes (any constant; "kms" in ASCII).
const PG_WRITE_LOCK: i64 = 0x006b_6d73;

/// A database value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Errors of the database layer; the driver's error is kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("query returned no rows")]
    QueryReturnedNoRows,
    #[error("column {0}: {1}")]
    FromSql(usize, String),
    #[error("{0}")]
    Other(String),
    /// PostgreSQL refused a statement kms wrote: a bug in kms's SQL (the text is kept).
    #[error("{} in: {}", pg_message(.1), .0)]
    Statement(String, postgres::Error),
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl Error {
    /// A UNIQUE, PRIMARY KEY, CHECK or FOREIGN KEY constraint refused the change.
    pub fn is_constraint_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            // Class 23: integrity constraint violation.
            Error::Postgres(e) => e.code().is_some_and(|c| c.code().starts_with("23")),
            _ => false,
        }
    }

    /// The driver's own message (for a constraint violation: which constraint).
    pub fn detail(&self) -> String {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(_, Some(m))) => m.clone(),
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.optional()` on a single-row result, as in rusqlite.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ---- values in ----

/// Something that can be a statement parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u16, u8, u64, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

/// A statement's parameters: `params![a, b]`, `[a, b]` or `[]`.
pub trait Params {
    fn values(self) -> Vec<Value>;
}

impl Params for &[&dyn ToValue] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl Params for [&dyn ToValue; 0] {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}
macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(ToValue::to_value).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
impl Params for Vec<Value> {
    fn values(self) -> Vec<Value> {
        self
    }
}

/// `params![a, b, …]`: a slice of parameters of mixed types.
#[macro_export]
#[doc(hidden)]
macro_rules! __inventory_params {
    () => {
        &[] as &[&dyn $crate::inventory::sql::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::inventory::sql::ToValue),+] as &[&dyn $crate::inventory::sql::ToValue]
    };
}
pub use crate::__inventory_params as params;

// ---- values out ----

/// Something a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> std::result::Result<Self, String> {
                match v {
                    Value::Integer(i) => <$t>::try_from(*i)
                        .map_err(|_| format!("{i} is out of range for {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {}", kind(other))),
                }
            }
        }
    )*};
}
int_from_value!(i64, i32, u32, u16, u8, u64, usize);

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Real(r) => Ok(*r),
            Value::Integer(i) => Ok(*i as f64),
            other => Err(format!("expected a real, found {}", kind(other))),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {}", kind(other))),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            other => Err(format!("expected bytes, found {}", kind(other))),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        Ok(v.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A column index (rusqlite's `get::<_, T>(i)` spelling is kept).
pub trait RowIndex {
    fn index(&self) -> usize;
}
impl RowIndex for usize {
    fn index(&self) -> usize {
        *self
    }
}

/// One result row, read out of the driver.
#[derive(Debug, Clone)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// Every column, as read.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let i = idx.index();
        let v = self
            .values
            .get(i)
            .ok_or_else(|| Error::FromSql(i, "no such column".into()))?;
        T::from_value(v).map_err(|m| Error::FromSql(i, m))
    }
}

// ---- connections ----

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
}

struct Pg {
    client: postgres::Client,
    cache: HashMap<String, postgres::Statement>,
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

    pub fn from_postgres(client: postgres::Client) -> Connection {
        Connection {
            backend: Backend::Postgres(Box::new(RefCell::new(Pg {
                client,
                cache: HashMap::new(),
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
            Backend::Postgres(pg) => Ok(pg.borrow_mut().client.batch_execute(sql)?),
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

    fn end(&self, sql: &str) -> Result<()> {
        self.in_tx.set(false);
        self.execute_batch(sql)
    }
}

impl Pg {
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

// ---- SQLite ----

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Integer(i) => V::Integer(*i),
        Value::Real(r) => V::Real(*r),
        Value::Text(s) => V::Text(s.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef as V;
    match v {
        V::Null => Value::Null,
        V::Integer(i) => Value::Integer(i),
        V::Real(r) => Value::Real(r),
        V::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        V::Blob(b) => Value::Blob(b.to_vec()),
    }
}

// ---- PostgreSQL ----

/// `?1` → `$1` (and a bare `?` → the next number), outside quoted text.
pub fn to_pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let (mut quote, mut next) = (None::<char>, 1u32);
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

fn pg_args(values: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use postgres::types::{IsNull, Type};
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be a {ty} parameter").into()),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                _ => Err(format!("a real cannot be a {ty} parameter").into()),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                _ => s.as_str().to_sql(ty, out),
            },
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn from_pg_row(r: &postgres::Row) -> Result<Row> {
    use postgres::types::Type;
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Integer),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Integer(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Integer(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Integer(v.into())),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::NUMERIC => {
                return Err(Error::FromSql(
                    i,
                    "NUMERIC columns are not read by the inventory; cast to BIGINT".into(),
                ))
            }
            _ => r.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row { values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollar_parameters_outside_quotes() {
        assert_eq!(
            to_pg_sql("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12 OR e = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12 OR e = $1"
        );
    }

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
