//! The front doors over the one engine: each turns its protocol into the engine's neutral
//! operations and their answers back into its protocol, and nothing else (no policy, no token,
//! no inventory). `json`: the JSON API for applications (`/v1`, mutual TLS); `xks`: the AWS KMS External Key Store proxy API (SigV4 over HTTPS); `kmip`:
//! KMIP 1.0–1.4 (TTLV over mutual TLS). `kms serve` (`service/`) runs them.

pub mod json;
pub mod kmip;
pub mod xks;
