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
//!
//! `values.rs` values in and out (parameters, columns, rows), `connection.rs` connections,
//! statements and transactions over either driver, `convert.rs` the values each driver takes
//! and gives and SQLite's `?1` parameters rewritten for PostgreSQL.

mod connection;
mod convert;
mod values;

pub use connection::{Connection, TransactionBehavior};
pub use values::{Params, Row, ToValue, Value};

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
    /// The connection to PostgreSQL was lost inside a transaction: nothing of it was committed.
    #[error(
        "the connection to PostgreSQL was lost during a transaction; nothing of it was committed"
    )]
    Lost,
}

impl Error {
    /// Whether the database could not be reached (connection closed or refused, server
    /// shutting down or starting up): the request may succeed once it is back.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Lost => true,
            Error::Postgres(e) | Error::Statement(_, e) => pg_unreachable(e),
            _ => false,
        }
    }
}

fn pg_unreachable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // admin_shutdown, crash_shutdown, cannot_connect_now, and the connection_exception class.
        Some(db) => {
            let code = db.code().code();
            matches!(code, "57P01" | "57P02" | "57P03") || code.starts_with("08")
        }
        // No server answer at all: the socket failed (refused, reset, timed out).
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
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

/// `params![a, b, …]`: a slice of parameters of mixed types (the macro is in `values.rs`).
pub use crate::__inventory_params as params;
