//! Key lifecycle rows: version state transitions, multi-step procedures with their progress,
//! compromise records and disposal requests. Every change writes its audit record in the same
//! transaction.
//!
//! `procedures.rs` the procedures table (intent, steps, end), `versions.rs` a version's state
//! (pending versions, the rotation's switch, state moves), `compromises.rs` declared compromises,
//! `disposals.rs` disposal requests and the disposal's last transaction.

mod compromises;
mod disposals;
mod procedures;
mod versions;

pub use compromises::Compromise;
pub use disposals::Disposal;
pub use procedures::Procedure;

use super::InventoryError;

/// A row read out: the driver's error outside, a bad value inside.
type RowResult<T> = super::sql::Result<Result<T, InventoryError>>;
