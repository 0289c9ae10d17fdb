//! The `/v1` API: routes and thin handlers. Each handler parses its JSON body, then runs on a
//! blocking thread: identify the caller from its certificate (per request, so a revocation or a
//! disabled principal takes effect on open connections too), then one engine call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::problem::Problem;
use crate::engine::{Caller, Engine, EngineError, ToSign};
use crate::identity::CertIdentity;
use crate::inventory::{KeyFilter, KeyRecord};
use crate::net::{Metrics, TokenWork};

/// Every route the service has: (method, path). The OpenAPI description is checked against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/health"),
    ("GET", "/metrics"),
    ("GET", "/v1/keys"),
    ("GET", "/v1/keys/{name}"),
    ("GET", "/v1/keys/{name}/public-key"),
    ("POST", "/v1/keys/{name}/sign"),
    ("POST", "/v1/keys/{name}/verify"),
    ("POST", "/v1/keys/{name}/mac"),
    ("POST", "/v1/keys/{name}/verify-mac"),
    ("POST", "/v1/keys/{name}/encrypt"),
    ("POST", "/v1/keys/{name}/decrypt"),
    ("POST", "/v1/keys/{name}/data-key"),
    ("POST", "/v1/keys/{name}/unwrap"),
    ("POST", "/v1/keys/{name}/rewrap"),
    ("POST", "/v1/access/requests"),
    ("GET", "/v1/access/requests/{id}"),
];

/// Header carrying the caller's reason for the audit row.
pub const REASON_HEADER: &str = "x-kms-reason";

/// The longest reason (header or body field), ticket or justification accepted, in characters
/// (docs/openapi.json `maxLength`). Longer text is refused with 400 rather than stored in every
/// audit row.
pub const MAX_TEXT_CHARS: usize = 1024;

/// The longest request path quoted in an audit row for a request no route took.
const MAX_PATH_CHARS: usize = 256;

/// Marks a response whose audit row (or deliberate absence of one: successful health and metrics
/// polls) was taken care of by its handler. [`audit_the_rest`] audits every other error response.
#[derive(Debug, Clone, Copy)]
struct Audited;

/// Who is on the other end of this TLS connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub cert: Arc<CertIdentity>,
    pub peer: SocketAddr,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// Engine calls off the async workers, within the JSON API door's budget.
    pub work: TokenWork,
}

pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/{name}", get(get_key))
        .route("/v1/keys/{name}/public-key", get(public_key))
        .route("/v1/keys/{name}/sign", post(sign))
        .route("/v1/keys/{name}/verify", post(verify))
        .route("/v1/keys/{name}/mac", post(mac))
        .route("/v1/keys/{name}/verify-mac", post(verify_mac))
        .route("/v1/keys/{name}/encrypt", post(encrypt))
        .route("/v1/keys/{name}/decrypt", post(decrypt))
        .route("/v1/keys/{name}/data-key", post(data_key))
        .route("/v1/keys/{name}/unwrap", post(unwrap))
        .route("/v1/keys/{name}/rewrap", post(rewrap))
        .route("/v1/access/requests", post(access_request))
        .route("/v1/access/requests/{id}", get(access_show))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no-such-route",
                "no such route; see docs/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take that method; see docs/openapi.json",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_the_rest,
        ))
        .with_state(state)
}

/// Every request that reaches the router leaves an audit row. Handlers audit their own; this
/// layer audits what no handler saw — no such route (404), wrong method (405), a path axum
/// could not decode (`/v1/keys/%FF`), a panic — identifying the certificate through the engine
/// (an unregistered one is refused and audited by `identify`), and turns any error that is not
/// yet `application/problem+json` into one. A panic in the request's handler is caught and
/// becomes a 500 problem with an audit row, not a dropped connection.
async fn audit_the_rest(
    State(app): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let method = req.method().to_string();
    let path: String = req.uri().path().chars().take(MAX_PATH_CHARS).collect();
    let reason = header_reason(req.headers()).ok().flatten();
    // Polled in place (a task per request cost a cross-thread hand-off on every request).
    let response =
        match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(next.run(req)))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // The panic payload is a message or nothing; it never carries a secret kms put there,
                // but it is logged by kind only, like every error that might quote input.
                let kind = if e.is::<String>() || e.is::<&str>() {
                    "message"
                } else {
                    "other"
                };
                tracing::error!(payload = kind, %method, "request handler panicked");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
                .into_response()
            }
        };
    let status = response.status();
    if response.extensions().get::<Audited>().is_some()
        || !(status.is_client_error() || status.is_server_error())
    {
        return response;
    }
    let problem = match response.extensions().get::<Problem>() {
        Some(p) => p.clone(),
        None => {
            // An extractor's rejection (plain text): keep its status, say what it said.
            let text = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .chars()
                        .take(512)
                        .collect::<String>()
                })
                .unwrap_or_default();
            let code = match status {
                StatusCode::NOT_FOUND => "no-such-route",
                StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
                StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
                s if s.is_server_error() => "internal",
                _ => "bad-request",
            };
            let detail = if text.trim().is_empty() {
                format!("the request to {path} cannot be served")
            } else {
                format!(
                    "{}; check the request against docs/openapi.json",
                    text.trim()
                )
            };
            Problem::new(status, code, detail)
        }
    };
    let Some(conn) = conn else {
        return problem.into_response();
    };
    let engine = Arc::clone(&app.engine);
    let action = format!("http.{}", problem.code);
    let started = Instant::now();
    let audited = app
        .work
        .run(move || {
            let caller = engine
                .identify(&conn.cert, &conn.peer.to_string(), reason)
                .map_err(Problem::from)?;
            let what = format!("{method} {path}: {}", problem.detail);
            engine
                .audit_rejected_request(&caller, &action, None, &what)
                .map_err(Problem::from)?;
            Ok::<_, Problem>(problem)
        })
        .await;
    let problem = match audited {
        Ok(Ok(p) | Err(p)) => p,
        Err(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        ),
    };
    app.metrics.record(
        "unrouted",
        problem.status().as_u16(),
        started.elapsed(),
        false,
    );
    problem.into_response()
}

// ---- request and response bodies ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignReq {
    message: Option<String>,
    digest: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyReq {
    message: Option<String>,
    digest: Option<String>,
    signature: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MacReq {
    message: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyMacReq {
    message: String,
    mac: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptReq {
    plaintext: String,
    aad: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecryptReq {
    ciphertext: String,
    aad: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DataKeyReq {
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessReq {
    key: String,
    ops: Vec<String>,
    duration: String,
    ticket: String,
    justification: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedReq {
    wrapped: String,
    reason: Option<String>,
}

/// `POST /v1/keys/{name}/rewrap`: a wrapped data key, or a ciphertext (with its AAD).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RewrapReq {
    wrapped: Option<String>,
    ciphertext: Option<String>,
    aad: Option<String>,
    reason: Option<String>,
}

#[derive(Serialize)]
struct KeySummary {
    name: String,
    key_type: crate::model::KeyType,
    owner: String,
    classification: crate::model::Classification,
    usage: crate::model::OperationSet,
    current_version: Option<u32>,
    #[serde(with = "time::serde::rfc3339::option")]
    rotation_due: Option<time::OffsetDateTime>,
    expires: Option<String>,
}

impl From<&KeyRecord> for KeySummary {
    fn from(k: &KeyRecord) -> KeySummary {
        KeySummary {
            name: k.name.clone(),
            key_type: k.key_type,
            owner: k.owner.clone(),
            classification: k.classification,
            usage: k.usage.clone(),
            current_version: k.current_version().map(|v| v.version),
            rotation_due: k.rotation_due(),
            expires: k.expires.map(|d| d.to_string()),
        }
    }
}

// ---- plumbing shared by the handlers ----

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(field: &'static str, s: &str) -> Result<Vec<u8>, Problem> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Problem::bad_request("bad-base64", format!("`{field}` is not valid base64")))
}

fn parse_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    empty_ok: bool,
) -> Result<T, Problem> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "request body exceeds the service's limit",
            )
        } else {
            Problem::bad_request("bad-request", "cannot read the request body")
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("unknown field") {
            Problem::bad_request("unknown-field", msg)
        } else {
            Problem::bad_request("bad-request", format!("invalid JSON body: {msg}"))
        }
    })
}

/// Bodies that must be present: wraps a type without `Default`.
struct Required<T>(Option<T>);

impl<T> Default for Required<T> {
    fn default() -> Self {
        Required(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Required<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|t| Required(Some(t)))
    }
}

fn required<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    parse_body::<Required<T>>(body, false)?
        .0
        .ok_or_else(|| Problem::bad_request("bad-request", "a JSON body is required"))
}

/// The `X-KMS-Reason` header, as UTF-8 text of at most [`MAX_TEXT_CHARS`] characters.
fn header_reason(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get(REASON_HEADER) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(v.as_bytes()).map_err(|_| {
        Problem::bad_request("bad-request", "the X-KMS-Reason header is not UTF-8 text")
    })?;
    capped("the X-KMS-Reason header", text)?;
    Ok(Some(text.to_owned()))
}

/// Refuse free text (reasons, tickets, justifications) longer than [`MAX_TEXT_CHARS`].
fn capped(what: &str, text: &str) -> Result<(), Problem> {
    let n = text.chars().count();
    if n > MAX_TEXT_CHARS {
        return Err(Problem::bad_request(
            "bad-request",
            format!("{what} is {n} characters long; at most {MAX_TEXT_CHARS} are accepted: shorten it (put details in the ticket system)"),
        ));
    }
    Ok(())
}

impl AppState {
    /// Identify the caller, then run `op` with the parsed input on a blocking thread (PKCS#11 and
    /// SQLite block). A request whose body could not be parsed is still identified and audited
    /// (as `action`, outcome error) before its problem is returned. Records the metrics.
    async fn call<I, R, F>(
        &self,
        endpoint: Endpoint,
        conn: ConnInfo,
        reason: Result<Option<String>, Problem>,
        input: Result<I, Problem>,
        op: F,
    ) -> Response
    where
        I: Send + 'static,
        R: Serialize + Send + 'static,
        F: FnOnce(&Engine, &Caller, I) -> Result<R, Problem> + Send + 'static,
    {
        let started = Instant::now();
        let engine = Arc::clone(&self.engine);
        // An unacceptable reason is not recorded; the request is refused (and audited) instead.
        let (reason, input) = match reason {
            Ok(r) => (r, input),
            Err(p) => (None, Err(p)),
        };
        let Endpoint {
            metric,
            action,
            key,
        } = endpoint;
        let joined = self
            .work
            .run(move || {
                let caller = engine
                    .identify(&conn.cert, &conn.peer.to_string(), reason)
                    .map_err(Problem::from)?;
                match input {
                    Ok(input) => op(&engine, &caller, input),
                    Err(problem) => {
                        engine
                            .audit_rejected_request(
                                &caller,
                                action,
                                key.as_deref(),
                                &problem.detail,
                            )
                            .map_err(Problem::from)?;
                        Err(problem)
                    }
                }
            })
            .await;
        let result = joined.unwrap_or_else(|e| {
            tracing::error!(error = %e, "request task failed");
            Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ))
        });
        let (status, token_error, response) = match result {
            Ok(body) => (StatusCode::OK, false, Json(body).into_response()),
            Err(p) => (p.status(), p.is_token_error(), p.into_response()),
        };
        self.metrics
            .record(metric, status.as_u16(), started.elapsed(), token_error);
        audited(response)
    }
}

/// Which operation a request is: its metric label, its audit action, and the key it names.
struct Endpoint {
    metric: &'static str,
    action: &'static str,
    key: Option<String>,
}

fn endpoint(metric: &'static str, action: &'static str, key: Option<&str>) -> Endpoint {
    Endpoint {
        metric,
        action,
        key: key.map(str::to_owned),
    }
}

fn engine_err(e: EngineError) -> Problem {
    Problem::from(e)
}

/// The reason for the audit row: the header, else the body's `reason` field.
fn reason_of(headers: &HeaderMap, body_reason: Option<String>) -> Result<Option<String>, Problem> {
    if let Some(r) = &body_reason {
        capped("`reason`", r)?;
    }
    Ok(header_reason(headers)?.or(body_reason))
}

fn audited(mut response: Response) -> Response {
    response.extensions_mut().insert(Audited);
    response
}

// ---- handlers ----

/// Health and metrics need a registered, enabled principal connecting from an allowed network
/// (refusals are audited by `identify`); successful polls are not audited — monitors poll often
/// and they touch no key.
async fn identified(app: &AppState, conn: ConnInfo) -> Result<(), Response> {
    let engine = Arc::clone(&app.engine);
    let who = app
        .work
        .run(move || {
            engine
                .identify(&conn.cert, &conn.peer.to_string(), None)
                .map(drop)
        })
        .await;
    match who {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(audited(Problem::from(e).into_response())),
        Err(_) => Err(audited(
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response(),
        )),
    }
}

async fn health(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    // Refused (and audited by `audit_the_rest`) like every route's over-long reason.
    if let Err(p) = header_reason(&headers) {
        return p.into_response();
    }
    if let Err(r) = identified(&app, conn).await {
        return r;
    }
    let engine = Arc::clone(&app.engine);
    match app.work.run(move || engine.health()).await {
        Ok(h) => {
            // During failover the service still serves: a load balancer must keep sending.
            let status = if h.status == "ok" || h.status == "failover" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            audited((status, Json(h)).into_response())
        }
        Err(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .into_response(),
    }
}

async fn metrics(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = header_reason(&headers) {
        return p.into_response();
    }
    if let Err(r) = identified(&app, conn).await {
        return r;
    }
    let engine = Arc::clone(&app.engine);
    if let Ok((n, drill, down, integrity)) = app
        .work
        .run(move || {
            (
                engine.audit_verify_failures(),
                engine.backup_drill_failures(),
                engine.tokens_down().len(),
                engine.integrity_failures(),
            )
        })
        .await
    {
        app.metrics.set_integrity_failures(integrity);
        app.metrics.set_token_lookups(app.engine.token_lookups());
        app.metrics.set_audit_verify_failures(n);
        app.metrics.set_backup(drill, down);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn list_keys(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    app.call(
        endpoint("list-keys", "key.list", None),
        conn,
        header_reason(&headers),
        Ok(()),
        |engine, caller, ()| {
            let keys = engine
                .list_keys(caller, &KeyFilter::default())
                .map_err(engine_err)?;
            let keys: Vec<KeySummary> = keys.iter().map(KeySummary::from).collect();
            Ok(serde_json::json!({ "keys": keys }))
        },
    )
    .await
}

async fn get_key(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    app.call(
        endpoint("get-key", "key.show", Some(&name)),
        conn,
        header_reason(&headers),
        Ok(()),
        move |engine, caller, ()| engine.show_key(caller, &name).map_err(engine_err),
    )
    .await
}

async fn public_key(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    app.call(
        endpoint("public-key", "key.public", Some(&name)),
        conn,
        header_reason(&headers),
        Ok(()),
        move |engine, caller, ()| {
            let (pem, v) = engine.public_key_pem(caller, &name).map_err(engine_err)?;
            Ok(serde_json::json!({ "key_version": v, "pem": pem }))
        },
    )
    .await
}

/// Exactly one of `message` / `digest`.
fn to_sign(message: Option<String>, digest: Option<String>) -> Result<(bool, Vec<u8>), Problem> {
    match (message, digest) {
        (Some(m), None) => Ok((true, unb64("message", &m)?)),
        (None, Some(d)) => Ok((false, unb64("digest", &d)?)),
        _ => Err(Problem::bad_request(
            "bad-request",
            "give exactly one of `message` or `digest`",
        )),
    }
}

async fn sign(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<SignReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let input = parsed.and_then(|r| to_sign(r.message, r.digest));
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("sign", "key.sign", Some(&name)),
        conn,
        reason,
        input,
        move |engine, caller, (is_message, data)| {
            let what = if is_message {
                ToSign::Message(&data)
            } else {
                ToSign::Digest(&data)
            };
            let s = engine.sign_data(caller, &name, what).map_err(engine_err)?;
            Ok(serde_json::json!({
                "signature": b64(&s.signature),
                "key_version": s.key_version,
                "algorithm": s.algorithm,
            }))
        },
    )
    .await
}

async fn verify(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<VerifyReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let input = parsed.and_then(|r| {
        let sig = unb64("signature", &r.signature)?;
        let (is_message, data) = to_sign(r.message, r.digest)?;
        Ok((sig, is_message, data))
    });
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("verify", "key.verify", Some(&name)),
        conn,
        reason,
        input,
        move |engine, caller, (sig, is_message, data)| {
            let what = if is_message {
                ToSign::Message(&data)
            } else {
                ToSign::Digest(&data)
            };
            engine
                .verify_data(caller, &name, what, &sig)
                .map_err(engine_err)
        },
    )
    .await
}

async fn mac(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<MacReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let input = parsed.and_then(|r| unb64("message", &r.message));
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("mac", "key.mac", Some(&name)),
        conn,
        reason,
        input,
        move |engine, caller, data| {
            let m = engine.mac(caller, &name, &data).map_err(engine_err)?;
            Ok(serde_json::json!({
                "mac": b64(&m.tag),
                "key_version": m.key_version,
                "algorithm": m.algorithm,
            }))
        },
    )
    .await
}

async fn verify_mac(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<VerifyMacReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let input = parsed.and_then(|r| Ok((unb64("message", &r.message)?, unb64("mac", &r.mac)?)));
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("verify-mac", "key.verify-mac", Some(&name)),
        conn,
        reason,
        input,
        move |engine, caller, (data, tag)| {
            engine
                .verify_mac(caller, &name, &data, &tag)
                .map_err(engine_err)
        },
    )
    .await
}

async fn encrypt(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<EncryptReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let input = parsed.and_then(|r| {
        let pt = zeroize::Zeroizing::new(unb64("plaintext", &r.plaintext)?);
        let aad = r.aad.as_deref().map(|a| unb64("aad", a)).transpose()?;
        Ok((pt, aad.unwrap_or_default()))
    });
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("encrypt", "key.encrypt", Some(&name)),
        conn,
        reason,
        input,
        move |engine, caller, (pt, aad)| {
            let (ct, v) = engine
                .encrypt(caller, &name, &pt, &aad)
                .map_err(engine_err)?;
            Ok(serde_json::json!({ "ciphertext": b64(&ct), "key_version": v }))
        },
    )
    .await
}

async fn decrypt(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<DecryptReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let input = parsed.and_then(|r| {
        let ct = unb64("ciphertext", &r.ciphertext)?;
        let aad = r.aad.as_deref().map(|a| unb64("aad", a)).transpose()?;
        Ok((ct, aad.unwrap_or_default()))
    });
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("decrypt", "key.decrypt", Some(&name)),
        conn,
        reason,
        input,
        move |engine, caller, (ct, aad)| {
            let (pt, v) = engine
                .decrypt(caller, &name, &ct, &aad)
                .map_err(engine_err)?;
            Ok(serde_json::json!({ "plaintext": b64(&pt), "key_version": v }))
        },
    )
    .await
}

async fn data_key(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = parse_body::<DataKeyReq>(body, true);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("data-key", "key.data-key", Some(&name)),
        conn,
        reason,
        parsed.map(drop),
        move |engine, caller, ()| {
            let dk = engine.data_key(caller, &name).map_err(engine_err)?;
            Ok(serde_json::json!({
                "plaintext": b64(&dk.plaintext),
                "wrapped": b64(&dk.wrapped),
                "key_version": dk.key_version,
            }))
        },
    )
    .await
}

async fn unwrap(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<WrappedReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let input = parsed.and_then(|r| unb64("wrapped", &r.wrapped));
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("unwrap", "key.unwrap", Some(&name)),
        conn,
        reason,
        input,
        move |engine, caller, wrapped| {
            let (pt, v) = engine.unwrap(caller, &name, &wrapped).map_err(engine_err)?;
            Ok(serde_json::json!({ "plaintext": b64(&pt), "key_version": v }))
        },
    )
    .await
}

async fn rewrap(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<RewrapReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let input = parsed.and_then(|r| {
        let aad = r.aad.as_deref().map(|a| unb64("aad", a)).transpose()?;
        match (r.wrapped, r.ciphertext) {
            (Some(w), None) => Ok((unb64("wrapped", &w)?, aad.unwrap_or_default(), "wrapped")),
            (None, Some(c)) => Ok((unb64("ciphertext", &c)?, aad.unwrap_or_default(), "ciphertext")),
            _ => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "send exactly one of `wrapped` (a data key) or `ciphertext` (with its `aad`, if any)",
            )),
        }
    });
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("rewrap", "key.rewrap", Some(&name)),
        conn,
        reason,
        input,
        move |engine, caller, (data, aad, field)| {
            let (w, v) = engine
                .rewrap_with(caller, &name, &data, &aad, false)
                .map_err(engine_err)?;
            Ok(serde_json::json!({ field: b64(&w), "key_version": v }))
        },
    )
    .await
}

async fn access_request(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = required::<AccessReq>(body);
    let body_reason = parsed.as_ref().ok().and_then(|r| r.reason.clone());
    let key = parsed.as_ref().ok().map(|r| r.key.clone());
    let input = parsed.and_then(|r| {
        let ops = r
            .ops
            .join(",")
            .parse()
            .map_err(|e: crate::model::ParseError| {
                Problem::bad_request("bad-request", e.to_string())
            })?;
        let duration = r
            .duration
            .parse()
            .map_err(|e: crate::duration::DurationError| {
                Problem::bad_request("bad-request", e.to_string())
            })?;
        capped("`ticket`", &r.ticket)?;
        capped("`justification`", &r.justification)?;
        Ok(crate::engine::RequestInput {
            key: r.key,
            ops,
            duration,
            ticket: r.ticket,
            justification: r.justification,
            grantee: None,
        })
    });
    let reason = reason_of(&headers, body_reason);
    app.call(
        endpoint("access-request", "access.request", key.as_deref()),
        conn,
        reason,
        input,
        move |engine, caller, input| engine.request_access(caller, input).map_err(engine_err),
    )
    .await
}

async fn access_show(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    app.call(
        endpoint("access-show", "access.show", None),
        conn,
        header_reason(&headers),
        Ok(()),
        move |engine, caller, ()| engine.request_evidence(caller, &id).map_err(engine_err),
    )
    .await
}
