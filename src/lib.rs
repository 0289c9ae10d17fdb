//! `kms`: a hardware-backed key management system.
//!
//! All key material lives inside PKCS#11 tokens; SQLite holds only the inventory (metadata, CKA_IDs,
//! public keys) and the audit trail. Every caller goes through [`engine::Engine`].
//!
//! # Layout
//! - [`audit`]: delivery of the audit trail to the log server (RFC 5424 over TCP/TLS).
//! - [`cli`]: clap definitions and the dispatch of each officer command into the engine.
//! - [`client`]: a minimal mTLS keep-alive client for the service (tests, bench, Rust applications).
//! - [`config`]: `kms.toml` -> typed configuration; PIN sources (`env:`, `file:`, `prompt`), masked `Debug`.
//! - [`doors`]: the XKS and KMIP doors over [`net`]: protocol in, neutral engine calls, protocol out.
//! - [`duration`]: human durations (`90d`, `12w`) used by rotation and expiry fields.
//! - [`engine`]: the one door: authorize -> act on token -> record in inventory -> audit.
//! - [`hsm`]: the only module importing `cryptoki`: module loading, token lookup, login, session pool,
//!   key generation, signing, ciphers, objects, public-key export.
//! - [`identity`]: client-certificate fingerprints and subjects (x509-cert).
//! - [`inventory`]: the only module importing `rusqlite`: schema, migrations, keys, versions, audit rows.
//! - [`logging`]: the binary's log subscriber; the smartcard crates' logs (APDUs carry PINs) forced off.
//! - [`model`]: plain domain types shared by every layer (key types, classifications, operations).
//! - [`net`]: the connection layer under every network door: accept, per-address and total slots,
//!   admission, TLS handshake, header/idle timeouts, drain, per-door metrics and token-work budgets.
//! - [`server`]: the JSON API door over [`net`] (hyper, axum); thin handlers into the engine.
//! - [`service`]: `kms serve` composed: the runtime, the three doors, the background jobs.
//! - [`softverify`]: signature verification in software from a stored SPKI (p384 / rsa).
//! - [`envelope`]: the versioned, self-describing ciphertext format.

// Output goes through cli::output (a closed pipe is not a panic): no print! macros in the library.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod audit;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod doors;
pub mod duration;
pub mod engine;
pub mod envelope;
pub mod hsm;
pub mod identity;
pub mod inventory;

pub mod logging;
pub mod model;
pub mod net;
pub mod service;
pub mod smartcard;
pub mod softverify;
