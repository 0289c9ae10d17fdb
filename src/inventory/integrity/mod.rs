//! Rows that prove themselves: every row whose content grants power (principals, grants, key
//! versions, backup pairings) carries `integrity_tag`, a signature made on the HSM over a
//! canonical encoding of the row's identity and every field that matters.
//!
//! The inventory does not know how tags are made: the engine installs a [`RowIntegrity`] (an
//! HSM-held key) once the inventory is open. Writers tag each row they write, inside the same
//! transaction; a write that changes existing rows first checks their tags, so a legitimate
//! update never launders a row edited behind kms's back. Readers the engine relies on check the
//! tag and refuse a row that fails ([`InventoryError::Tampered`](super::InventoryError::Tampered)).
//!
//! `tables.rs` the tagged tables and the columns each tag covers, `canonical.rs` the encoding a
//! tag signs, `check.rs` reading and checking a row's tag, `tag.rs` tagging rows as they are
//! written, `change_log.rs` the change log `row_changes` (freshness: no replayed row), and
//! `inventory_api.rs` the [`Inventory`](super::Inventory) methods built on them.

mod canonical;
mod change_log;
mod check;
mod inventory_api;
mod tables;
mod tag;

pub(crate) use change_log::record_deleted;
pub use change_log::ChangeLogState;
pub(crate) use check::{check_tail, check_where, tail};
pub use tables::Table;
pub(crate) use tag::{guarded, tag_where};

/// Makes and checks tags. Implemented by the engine with a key on the HSM.
pub trait RowIntegrity: Send + Sync {
    /// The tag of `message` (a canonical row encoding).
    fn tag(&self, message: &[u8]) -> Result<Vec<u8>, String>;
    /// Ok if `tag` is a valid tag of `message`; Err says why not.
    fn check(&self, message: &[u8], tag: &[u8]) -> Result<(), CheckFailure>;
    /// The highest change number this process has seen for the row `key` (0 if none).
    fn seen(&self, _key: &str) -> i64 {
        0
    }
    /// Remember that the row `key` was seen (or written) at change `seq`.
    fn raise(&self, _key: &str, _seq: i64) {}
    /// A row failed its check (counted, logged).
    fn failed(&self, _why: &str) {}
}

/// Why a check did not pass.
#[derive(Debug, Clone)]
pub enum CheckFailure {
    /// The tag is missing or does not match the row: the row was changed outside kms.
    Tampered(String),
    /// The check could not be made (the integrity key's token is unreachable or the
    /// configuration points elsewhere): refused, but not called tampering.
    Unavailable { config: bool, why: String },
}

/// A row that failed its check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadRow {
    pub table: &'static str,
    /// The row's identity, e.g. `grant g-…` or `key_versions key=… version=2`.
    pub row: String,
    pub why: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}: {}", self.table, self.row, self.why)
    }
}
