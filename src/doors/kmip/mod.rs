//! KMIP (issue 16): TTLV over mutual TLS for the clients that speak it (databases, storage
//! arrays, PyKMIP). `ttlv` is the codec, `tags` the numbers, `ops` one request message → one
//! response through the engine, `server` the listener `kms serve` runs with `[kmip]`. Only the
//! service (cli/serve.rs) uses this module.

mod attributes;
mod failure;
mod items;
mod ops;
pub mod server;
mod tags;
pub mod ttlv;
