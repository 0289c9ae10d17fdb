//! Multi-step lifecycle procedures (issue 7): rotation, destruction of a version, compromise,
//! disposal, and the repair / scheduling that finishes what a crash interrupted.
//!
//! Each procedure records its intent in the `procedures` table (with its audit record) before it
//! touches a token, records each step as it completes, and ends `done` or `rolled-back`. After a
//! crash the next `kms reconcile --repair` (or the service's scheduler) finishes it or rolls it
//! back (`repair.rs`): before a rotation's switch nothing is lost by rolling back; a destruction
//! only ever rolls forward.

mod compromise;
mod destruction;
mod disposal;
mod ownership;
mod repair;
mod rotation;
mod schedule;

pub use compromise::{CompromiseReport, UsageSummary};
pub use destruction::DestructionReport;
pub(crate) use destruction::{Authority, Place};
pub use disposal::{disposal_message, DisposalEvidence};
pub use repair::RepairReport;
pub use rotation::RotationReport;
pub use schedule::{DueReport, RotationStatus};
