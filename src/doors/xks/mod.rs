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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;

mod ops;
pub mod sigv4;

use crate::config::XksConfig;
use crate::engine::{Engine, EngineError, ErrorKind, Missing, Refusal};
use crate::net::{Metrics, ServerError};

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

/// An XKS error: the spec's name and status, and a message (printable ASCII, < 512).
struct XksError {
    status: StatusCode,
    name: &'static str,
    message: String,
}

impl XksError {
    fn new(status: StatusCode, name: &'static str, message: impl Into<String>) -> XksError {
        XksError {
            status,
            name,
            message: message.into(),
        }
    }
    fn validation(m: impl Into<String>) -> XksError {
        XksError::new(StatusCode::BAD_REQUEST, "ValidationException", m)
    }
    fn unsupported(m: impl Into<String>) -> XksError {
        XksError::new(
            StatusCode::NOT_IMPLEMENTED,
            "UnsupportedOperationException",
            m,
        )
    }
}

impl IntoResponse for XksError {
    fn into_response(self) -> Response {
        let message: String = self
            .message
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
            .take(500)
            .collect();
        let body = serde_json::json!({ "errorName": self.name, "errorMessage": message });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The engine's refusals and failures in the spec's words.
fn from_engine(e: EngineError) -> XksError {
    let m = e.public_message();
    match e.kind() {
        ErrorKind::NotFound(Missing::Key) => {
            XksError::new(StatusCode::NOT_FOUND, "KeyNotFoundException", m)
        }
        ErrorKind::Refused(Refusal::NotSupported | Refusal::UsageNotAllowed) => {
            XksError::new(StatusCode::BAD_REQUEST, "InvalidKeyUsageException", m)
        }
        ErrorKind::Refused(Refusal::KeyState | Refusal::KeyExpired) => {
            XksError::new(StatusCode::BAD_REQUEST, "InvalidStateException", m)
        }
        ErrorKind::Refused(_) => XksError::new(StatusCode::FORBIDDEN, "AccessDeniedException", m),
        ErrorKind::BadCiphertext => XksError::new(
            StatusCode::BAD_REQUEST,
            "InvalidCiphertextException",
            "the ciphertext, IV, tag, AAD or ciphertext metadata does not authenticate",
        ),
        ErrorKind::BadInput | ErrorKind::TooLarge => XksError::validation(m),
        _ => {
            tracing::error!(error = %e, "xks: internal error");
            XksError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalException", m)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    kms_request_id: String,
    kms_operation: String,
    aws_principal_arn: Option<String>,
    kms_key_arn: Option<String>,
    kms_via_service: Option<String>,
    aws_source_vpc: Option<String>,
    aws_source_vpce: Option<String>,
}

impl Metadata {
    /// The audit reason: what AWS says this call is for, and who asked.
    fn reason(&self) -> String {
        let mut r = format!(
            "AWS KMS {} request {}",
            self.kms_operation, self.kms_request_id
        );
        if let Some(p) = &self.aws_principal_arn {
            r.push_str(&format!(" by {p}"));
        }
        if let Some(k) = &self.kms_key_arn {
            r.push_str(&format!(" for {k}"));
        }
        if let Some(v) = &self.kms_via_service {
            r.push_str(&format!(" via {v}"));
        }
        if let Some(v) = &self.aws_source_vpce {
            r.push_str(&format!(" from {v}"));
        } else if let Some(v) = &self.aws_source_vpc {
            r.push_str(&format!(" from {v}"));
        }
        r.chars().take(1000).collect()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaOnly {
    request_metadata: Metadata,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptReq {
    request_metadata: Metadata,
    plaintext: String,
    encryption_algorithm: String,
    additional_authenticated_data: Option<String>,
    ciphertext_data_integrity_value_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptReq {
    request_metadata: Metadata,
    ciphertext: String,
    encryption_algorithm: String,
    initialization_vector: String,
    authentication_tag: String,
    additional_authenticated_data: Option<String>,
    ciphertext_metadata: Option<String>,
}

/// Which call a path is.
enum Call {
    Health,
    Metadata(String),
    Encrypt(String),
    Decrypt(String),
}

impl Call {
    fn metric(&self) -> &'static str {
        match self {
            Call::Health => "xks-health",
            Call::Metadata(_) => "xks-metadata",
            Call::Encrypt(_) => "xks-encrypt",
            Call::Decrypt(_) => "xks-decrypt",
        }
    }
}

fn route(prefix: &str, path: &str) -> Option<Call> {
    let rest = path.strip_prefix(prefix)?;
    if rest == "/health" {
        return Some(Call::Health);
    }
    let rest = rest.strip_prefix("/keys/")?;
    let (id, op) = rest.rsplit_once('/')?;
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return None;
    }
    let id = id.to_owned();
    match op {
        "metadata" => Some(Call::Metadata(id)),
        "encrypt" => Some(Call::Encrypt(id)),
        "decrypt" => Some(Call::Decrypt(id)),
        _ => None,
    }
}

fn b64(field: &str, v: &str) -> Result<Vec<u8>, XksError> {
    B64.decode(v)
        .map_err(|_| XksError::validation(format!("{field} is not standard Base64")))
}

fn json_ok(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn handle(
    State(state): State<XksState>,
    Extension(Peer(peer)): Extension<Peer>,
    req: Request<Body>,
) -> Response {
    let started = Instant::now();
    let (response, metric) = serve(&state, peer, req).await;
    let status = response.status().as_u16();
    state
        .metrics
        .record(metric, status, started.elapsed(), status == 500);
    response
}

async fn serve(state: &XksState, peer: SocketAddr, req: Request<Body>) -> (Response, &'static str) {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let source = peer.to_string();
    let refuse = |what: String, err: XksError, metric: &'static str| {
        let engine = Arc::clone(&state.engine);
        let work = state.work.clone();
        let source = source.clone();
        async move {
            let _ = work
                .run(move || ops::refused(&engine, &source, "-", &what))
                .await;
            (err.into_response(), metric)
        }
    };
    let Some(call) = route(&state.config.prefix, &path) else {
        let shown: String = path.chars().take(200).collect();
        return refuse(
            format!("unknown XKS path {shown}"),
            XksError::new(
                StatusCode::NOT_FOUND,
                "InvalidUriPathException",
                format!("no XKS API at {shown}"),
            ),
            "xks-unknown",
        )
        .await;
    };
    let metric = call.metric();
    if parts.method != Method::POST {
        let mut r = refuse(
            format!("{} on {path}", parts.method),
            XksError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "ValidationException",
                "XKS APIs are POST only",
            ),
            metric,
        )
        .await;
        r.0.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return r;
    }
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                format!("request body over {MAX_BODY} bytes"),
                XksError::unsupported(format!("the request body is over {MAX_BODY} bytes")),
                metric,
            )
            .await
        }
    };
    // SigV4 over exactly what was sent.
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signed = sigv4::Request {
        method: parts.method.as_str(),
        path: &path,
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    let config = Arc::clone(&state.config);
    let verified = sigv4::verify(
        &signed,
        time::OffsetDateTime::now_utc(),
        &config.region,
        "kms-xks-proxy",
        |akid| {
            state
                .secrets
                .iter()
                .find(|(id, _)| id == akid)
                .map(|(_, secret)| secret.clone())
        },
    );
    let principal = match verified {
        Ok(akid) => {
            // An authenticated client: its connection keeps its slot (net/slots.rs).
            if let Some(standing) = parts.extensions.get::<crate::net::Standing>() {
                standing.prove();
            }
            config
                .credentials
                .iter()
                .find(|c| c.access_key_id == akid)
                .map(|c| c.principal.clone())
                .unwrap_or_default()
        }
        Err(e) => {
            let akid: String = headers
                .iter()
                .find(|(n, _)| n == "authorization")
                .and_then(|(_, v)| v.split("Credential=").nth(1))
                .and_then(|c| c.split('/').next())
                .unwrap_or("-")
                .chars()
                .take(40)
                .collect();
            let engine = Arc::clone(&state.engine);
            let what = format!("SigV4 authentication failed on {path}: {e}");
            let _ = state
                .work
                .run(move || ops::refused(&engine, &source, &akid, &what))
                .await;
            return (
                XksError::new(
                    StatusCode::UNAUTHORIZED,
                    "AuthenticationFailedException",
                    format!("SigV4 authentication failed: {e}"),
                )
                .into_response(),
                metric,
            );
        }
    };
    let engine = Arc::clone(&state.engine);
    let result = state
        .work
        .run(move || run(&engine, &principal, &source, call, &body))
        .await
        .unwrap_or_else(|_| {
            Err(XksError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalException",
                "request task failed",
            ))
        });
    (
        match result {
            Ok(v) => json_ok(v),
            Err(e) => e.into_response(),
        },
        metric,
    )
}

/// Parse the body, then one engine call as the credential's principal.
fn run(
    engine: &Engine,
    principal: &str,
    source: &str,
    call: Call,
    body: &[u8],
) -> Result<serde_json::Value, XksError> {
    let parse_err = |e: serde_json::Error| XksError::validation(format!("request body: {e}"));
    let metadata_of = || -> Result<Metadata, XksError> {
        serde_json::from_slice::<MetaOnly>(body)
            .map(|m| m.request_metadata)
            .map_err(parse_err)
    };
    // A request that does not parse is still on the record, as the principal's.
    let rejected = |action: &str, key: Option<&str>, err: XksError| -> XksError {
        if let Ok(caller) = ops::caller(
            engine,
            principal,
            source,
            format!("XKS request refused: {}", err.message),
        ) {
            let _ = engine.audit_rejected_request(&caller, action, key, &err.message);
        }
        err
    };
    match call {
        Call::Health => {
            let m = metadata_of().map_err(|e| rejected("xks.health", None, e))?;
            let caller = ops::caller(engine, principal, source, m.reason()).map_err(from_engine)?;
            let tokens = ops::health(engine, &caller).map_err(from_engine)?;
            let fleet: Vec<serde_json::Value> = tokens
                .iter()
                .take(10)
                .map(
                    |t| serde_json::json!({"id": t.name, "model": t.model, "healthStatus": ops::health_status(t)}),
                )
                .collect();
            Ok(serde_json::json!({
                "xksProxyFleetSize": 1,
                "xksProxyVendor": "kms",
                "xksProxyModel": concat!("kms ", env!("CARGO_PKG_VERSION")),
                "ekmVendor": "PKCS#11",
                "ekmFleetDetails": fleet,
            }))
        }
        Call::Metadata(key) => {
            let m = metadata_of().map_err(|e| rejected("xks.metadata", Some(&key), e))?;
            if m.aws_principal_arn.is_none() {
                return Err(rejected(
                    "xks.metadata",
                    Some(&key),
                    XksError::validation("requestMetadata.awsPrincipalArn is required"),
                ));
            }
            let caller = ops::caller(engine, principal, source, m.reason()).map_err(from_engine)?;
            let info = ops::key_metadata(engine, &caller, &key).map_err(from_engine)?;
            Ok(serde_json::json!({
                "keySpec": info.key_spec,
                "keyUsage": info.usage,
                "keyStatus": if info.enabled { "ENABLED" } else { "DISABLED" },
            }))
        }
        Call::Encrypt(key) => {
            let r: EncryptReq = serde_json::from_slice(body)
                .map_err(parse_err)
                .map_err(|e| rejected("xks.encrypt", Some(&key), e))?;
            let checked = (|| {
                need_key_request(&r.request_metadata)?;
                if r.encryption_algorithm != "AES_GCM" {
                    return Err(XksError::validation("encryptionAlgorithm must be AES_GCM"));
                }
                let integrity = match r.ciphertext_data_integrity_value_algorithm.as_deref() {
                    None => false,
                    Some("SHA_256") => true,
                    Some(_) => {
                        return Err(XksError::validation(
                            "ciphertextDataIntegrityValueAlgorithm must be SHA_256",
                        ))
                    }
                };
                let plaintext = zeroize::Zeroizing::new(b64("plaintext", &r.plaintext)?);
                let aad = match &r.additional_authenticated_data {
                    Some(a) => b64("additionalAuthenticatedData", a)?,
                    None => Vec::new(),
                };
                if plaintext.len() > MAX_PLAINTEXT {
                    return Err(XksError::unsupported(format!(
                        "plaintext is {} bytes; this proxy encrypts at most {MAX_PLAINTEXT}",
                        plaintext.len()
                    )));
                }
                if aad.len() > MAX_AAD {
                    return Err(XksError::unsupported(format!(
                        "additionalAuthenticatedData is {} bytes; this proxy takes at most {MAX_AAD}",
                        aad.len()
                    )));
                }
                Ok((plaintext, aad, integrity))
            })();
            let (plaintext, aad, integrity) =
                checked.map_err(|e| rejected("xks.encrypt", Some(&key), e))?;
            let caller = ops::caller(engine, principal, source, r.request_metadata.reason())
                .map_err(from_engine)?;
            let sealed = ops::encrypt(engine, &caller, &key, &plaintext, &aad, integrity)
                .map_err(from_engine)?;
            let mut out = serde_json::json!({
                "ciphertext": B64.encode(&sealed.ciphertext),
                "ciphertextMetadata": B64.encode(&sealed.metadata),
                "initializationVector": B64.encode(sealed.iv),
                "authenticationTag": B64.encode(sealed.tag),
            });
            if let Some(v) = sealed.integrity {
                out["ciphertextDataIntegrityValue"] = B64.encode(v).into();
            }
            Ok(out)
        }
        Call::Decrypt(key) => {
            let r: DecryptReq = serde_json::from_slice(body)
                .map_err(parse_err)
                .map_err(|e| rejected("xks.decrypt", Some(&key), e))?;
            let checked = (|| {
                need_key_request(&r.request_metadata)?;
                if r.encryption_algorithm != "AES_GCM" {
                    return Err(XksError::validation("encryptionAlgorithm must be AES_GCM"));
                }
                let ct = b64("ciphertext", &r.ciphertext)?;
                let iv = b64("initializationVector", &r.initialization_vector)?;
                let tag = b64("authenticationTag", &r.authentication_tag)?;
                let aad = match &r.additional_authenticated_data {
                    Some(a) => b64("additionalAuthenticatedData", a)?,
                    None => Vec::new(),
                };
                let metadata = match &r.ciphertext_metadata {
                    Some(m) => b64("ciphertextMetadata", m)?,
                    None => Vec::new(),
                };
                if iv.len() != 12 && iv.len() != 16 {
                    return Err(XksError::validation(
                        "initializationVector must be 12 or 16 bytes",
                    ));
                }
                if tag.len() != 16 {
                    return Err(XksError::validation("authenticationTag must be 16 bytes"));
                }
                if metadata.len() > MAX_METADATA {
                    return Err(XksError::validation("ciphertextMetadata is over 20 bytes"));
                }
                if ct.len() > MAX_PLAINTEXT {
                    return Err(XksError::unsupported(format!(
                        "ciphertext is {} bytes; this proxy decrypts at most {MAX_PLAINTEXT}",
                        ct.len()
                    )));
                }
                if aad.len() > MAX_AAD {
                    return Err(XksError::unsupported(format!(
                        "additionalAuthenticatedData is {} bytes; this proxy takes at most {MAX_AAD}",
                        aad.len()
                    )));
                }
                Ok((ct, iv, tag, aad, metadata))
            })();
            let (ct, iv, tag, aad, metadata) =
                checked.map_err(|e| rejected("xks.decrypt", Some(&key), e))?;
            let caller = ops::caller(engine, principal, source, r.request_metadata.reason())
                .map_err(from_engine)?;
            if iv.len() != 12 {
                // kms only ever makes 12-byte IVs: a 16-byte one is not a ciphertext of ours.
                return Err(from_engine(EngineError::Envelope(
                    crate::envelope::EnvelopeError::Truncated,
                )));
            }
            let plaintext = ops::decrypt(engine, &caller, &key, &ct, &iv, &tag, &aad, &metadata)
                .map_err(from_engine)?;
            Ok(serde_json::json!({ "plaintext": B64.encode(plaintext.as_slice()) }))
        }
    }
}

fn need_key_request(m: &Metadata) -> Result<(), XksError> {
    if m.aws_principal_arn.is_none() {
        return Err(XksError::validation(
            "requestMetadata.awsPrincipalArn is required",
        ));
    }
    if m.kms_key_arn.is_none() {
        return Err(XksError::validation(
            "requestMetadata.kmsKeyArn is required",
        ));
    }
    Ok(())
}

/// The XKS door: the XKS routes only; with `client_name`, only a client certificate carrying it.
struct XksDoor {
    app: axum::Router,
    client_name: Option<String>,
}

impl crate::net::Door for XksDoor {
    fn name(&self) -> &'static str {
        "xks"
    }

    async fn admit(
        &self,
        peer: SocketAddr,
        cert: Option<&Arc<crate::identity::CertIdentity>>,
    ) -> crate::net::Admit {
        let Some(want) = &self.client_name else {
            return crate::net::Admit::Admitted;
        };
        let named = cert.is_some_and(|id| {
            id.sans
                .iter()
                .any(|s| s.strip_prefix("DNS:") == Some(want.as_str()))
                || id
                    .subject
                    .split(',')
                    .any(|p| p.trim() == format!("CN={want}"))
        });
        if named {
            crate::net::Admit::Admitted
        } else {
            tracing::warn!(%peer, expected = %want, "XKS client certificate does not carry the configured name; connection closed");
            crate::net::Admit::Refused("unregistered")
        }
    }

    /// A connection is proven by its first request whose SigV4 signature verifies (`serve`).
    async fn serve(&self, conn: crate::net::Accepted) {
        let app = self.app.clone().layer(Extension(Peer(conn.peer)));
        crate::net::http::serve(conn, app, false).await;
    }
}

/// How long open XKS requests get to finish after SIGTERM.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The XKS listener: its own TLS (optionally mutual), the XKS routes only, over the connection
/// layer with the `[xks]` limits.
pub struct XksServer {
    listener: crate::net::Listener<XksDoor>,
}

impl XksServer {
    pub async fn bind(
        engine: Arc<Engine>,
        config: &XksConfig,
        metrics: Arc<Metrics>,
    ) -> Result<XksServer, ServerError> {
        let tls =
            crate::net::tls::server_config(&config.cert, &config.key, config.client_ca.as_deref())?;
        let mut secrets = Vec::new();
        for c in &config.credentials {
            let secret = c
                .secret
                .resolve_kind(
                    &format!("XKS credential {}", c.access_key_id),
                    "SigV4 secret",
                )
                .map_err(|e| ServerError::Config(format!("credential {}: {e}", c.access_key_id)))?;
            secrets.push((c.access_key_id.clone(), secret));
        }
        let state = XksState {
            engine,
            metrics: Arc::clone(&metrics),
            config: Arc::new(config.clone()),
            secrets: Arc::new(secrets),
            work: crate::net::TokenWork::new("xks", config.limits.max_token_work),
        };
        let app = axum::Router::new().fallback(handle).with_state(state);
        let door = XksDoor {
            app,
            client_name: config.client_name.clone(),
        };
        let listener = crate::net::Listener::bind(
            door,
            config.listen,
            tls,
            config.limits,
            DRAIN_GRACE,
            metrics,
        )
        .await?;
        Ok(XksServer { listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves, then let open requests finish (up to 10 s).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.listener.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_only_under_the_prefix() {
        let p = "/example/kms/xks/v1";
        assert!(matches!(
            route(p, "/example/kms/xks/v1/health"),
            Some(Call::Health)
        ));
        assert!(
            matches!(route(p, "/example/kms/xks/v1/keys/foo.bar_1-2/encrypt"), Some(Call::Encrypt(k)) if k == "foo.bar_1-2")
        );
        assert!(route(p, "/example/kms/xks/v1/keys/foo/sign").is_none());
        assert!(route(p, "/other/kms/xks/v1/health").is_none());
        assert!(route(p, "/example/kms/xks/v1/keys/a%2Fb/encrypt").is_none());
        assert!(route(p, "/example/kms/xks/v1/keys//encrypt").is_none());
    }

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
