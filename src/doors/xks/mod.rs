//! The AWS KMS External Key Store proxy API (XKS Proxy API v1) on its own HTTPS listener:
//! `POST {prefix}/keys/{keyId}/metadata|encrypt|decrypt` and `POST {prefix}/health`, where
//! `prefix` is the configured XksProxyUriPath (ending in `/kms/xks/v1`).
//!
//! Order, as the spec and AWS's test client expect: an unknown path is 404
//! InvalidUriPathException and a GET 405, both before authentication; then SigV4 over the whole
//! body (401 AuthenticationFailedException); then the JSON (400 ValidationException); then one
//! engine call on a blocking thread, as the credential's principal. Errors are
//! `{"errorName": …, "errorMessage": …}` with the spec's status codes. Every request, refused
//! ones included, is an audit record.
//!
//! `http` routes and authenticates, `calls` parses a call's body (`bodies`) and makes its
//! engine call (`ops`), `error` is the spec's error shape and the engine's errors in its words,
//! `door` the listener and its admission; `sigv4` verifies signatures.

use std::net::SocketAddr;
use std::sync::Arc;

mod bodies;
mod calls;
mod door;
mod error;
mod http;
mod ops;
pub mod sigv4;

pub use door::XksServer;

use crate::config::XksConfig;
use crate::engine::Engine;
use crate::net::Metrics;

/// Largest request body read (the spec's largest legitimate request is about 25 KiB).
const MAX_BODY: usize = 64 * 1024;
/// Largest plaintext and AAD served (the spec's minimums are 4,300 and 8,192 bytes); more is
/// UnsupportedOperationException, as the spec says for a limit above its minimum.
const MAX_PLAINTEXT: usize = 8192;
const MAX_AAD: usize = 16384;
/// ciphertextMetadata is at most 20 bytes (spec).
const MAX_METADATA: usize = 20;

#[derive(Clone)]
struct XksState {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    config: Arc<XksConfig>,
    /// The credentials' secrets, read from their sources once at start (a `prompt` source asks
    /// then, never in the middle of a request).
    secrets: Arc<Vec<(String, secrecy::SecretString)>>,
    /// Engine calls off the async workers, within the XKS door's budget.
    work: crate::net::TokenWork,
}

#[derive(Clone, Copy)]
struct Peer(SocketAddr);

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;

    use super::ops;

    #[test]
    fn the_spec_example_integrity_value() -> Result<(), base64::DecodeError> {
        // XKS Proxy API spec, Encrypt example: the CDIV over AAD || metadata || IV || ct || tag.
        let aad = B64.decode("cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n")?;
        let md = B64.decode("a2V5X3ZlcnNpb249MQ==")?;
        let iv = B64.decode("HMrlRw85cAJUd5Ax")?;
        let ct = B64.decode("ghxkK1txeDNn3q8Y")?;
        let tag = B64.decode("vBxN2ncH1oEkR8WVXpmyYQ==")?;
        let v = ops::xks_integrity(&aad, &md, &iv, &ct, &tag);
        assert_eq!(
            B64.encode(v),
            "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="
        );
        let full = ops::xks_aad(&aad, &md).unwrap_or_default();
        assert_eq!(&full[..2], &[0, 33]);
        assert_eq!(full[35], 13);
        Ok(())
    }
}
