//! Delivery of the audit trail to the log server: RFC 5424 syslog messages (`syslog`) sent over
//! TCP with octet-counting framing, optionally TLS (`ship`). The hash chain and checkpoints
//! live in `inventory/audit.rs` and `engine/checkpoint.rs`.

pub mod ship;
pub mod syslog;
