//! One request's way through the JSON API door, written once: the [`Call`] extractor takes the
//! connection's certificate, the reason (header or body) and the parsed JSON body; [`AppState::run`]
//! identifies the caller on a blocking thread, runs one engine call, maps its error to a
//! problem, records the metrics and marks the response audited. Handlers only say which body
//! they take, how it becomes the engine's input, and which engine call they make.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::problem::Problem;
use crate::engine::{Caller, Engine, EngineError};
use crate::identity::CertIdentity;
use crate::net::{Metrics, TokenWork};

/// Header carrying the caller's reason for the audit row.
pub const REASON_HEADER: &str = "x-kms-reason";

/// The longest reason (header or body field), ticket or justification accepted, in characters
/// (docs/openapi.json `maxLength`). Longer text is refused with 400 rather than stored in every
/// audit row.
pub const MAX_TEXT_CHARS: usize = 1024;

/// Marks a response whose audit row (or deliberate absence of one: successful health and metrics
/// polls) was taken care of by its handler. `unrouted::audit_the_rest` audits every other error
/// response.
#[derive(Debug, Clone, Copy)]
pub(super) struct Audited;

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

/// A JSON request body the door accepts.
pub(super) trait RequestBody: DeserializeOwned + Send + 'static {
    /// Whether an empty body is accepted (as [`RequestBody::empty`]).
    const EMPTY_OK: bool = false;
    /// The body an empty request stands for, where one is accepted.
    fn empty() -> Option<Self> {
        None
    }
    /// The body's `reason` field, used when no `X-KMS-Reason` header is given.
    fn reason(&self) -> Option<&str>;
}

/// Routes that take no body (GET): the body, if any, is not read.
pub(super) struct NoBody;

/// A request, taken apart once: who sent it, the reason for its audit row, and its body. A
/// body or reason that cannot be accepted is kept as its problem, so that the request is still
/// identified and audited before it is refused.
pub(super) struct Call<B> {
    conn: Option<ConnInfo>,
    reason: Result<Option<String>, Problem>,
    body: Result<B, Problem>,
}

impl<B: RequestBody> FromRequest<AppState> for Call<B> {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let conn = req.extensions().get::<ConnInfo>().cloned();
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await;
        let body = read_body::<B>(bytes);
        let body_reason = body
            .as_ref()
            .ok()
            .and_then(|b| b.reason().map(str::to_owned));
        Ok(Call {
            conn,
            reason: reason_of(&headers, body_reason),
            body,
        })
    }
}

impl FromRequest<AppState> for Call<NoBody> {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Call {
            conn: req.extensions().get::<ConnInfo>().cloned(),
            reason: header_reason(req.headers()),
            body: Ok(NoBody),
        })
    }
}

impl<B> Call<B> {
    /// The parsed body, for what a handler needs before the call (the key an access request
    /// names, for its audit row).
    pub(super) fn body(&self) -> Option<&B> {
        self.body.as_ref().ok()
    }
}

/// Which operation a request is: its metric label, its audit action, and the key it names.
pub(super) struct Endpoint {
    pub metric: &'static str,
    pub action: &'static str,
    pub key: Option<String>,
}

pub(super) fn endpoint(metric: &'static str, action: &'static str, key: Option<&str>) -> Endpoint {
    Endpoint {
        metric,
        action,
        key: key.map(str::to_owned),
    }
}

impl AppState {
    /// Turn the body into the engine's input (`input`), identify the caller, then run `op` on a
    /// blocking thread (PKCS#11 and SQLite block). A request whose body, reason or input is not
    /// acceptable is still identified and audited (as `endpoint.action`, outcome error) before
    /// its problem is returned. Records the metrics.
    pub(super) async fn run<B, I, R>(
        &self,
        call: Call<B>,
        endpoint: Endpoint,
        input: impl FnOnce(B) -> Result<I, Problem>,
        op: impl FnOnce(&Engine, &Caller, I) -> Result<R, EngineError> + Send + 'static,
    ) -> Response
    where
        I: Send + 'static,
        R: Serialize + Send + 'static,
    {
        let started = Instant::now();
        let Some(conn) = call.conn else {
            return internal();
        };
        // An unacceptable reason is not recorded; the request is refused (and audited) instead.
        let (reason, input) = match call.reason {
            Ok(r) => (r, call.body.and_then(input)),
            Err(p) => (None, Err(p)),
        };
        let engine = Arc::clone(&self.engine);
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
                    Ok(input) => op(&engine, &caller, input).map_err(Problem::from),
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
            Err(internal_problem())
        });
        let (status, token_error, response) = match result {
            Ok(body) => (StatusCode::OK, false, Json(body).into_response()),
            Err(p) => (p.status(), p.is_token_error(), p.into_response()),
        };
        self.metrics
            .record(metric, status.as_u16(), started.elapsed(), token_error);
        audited(response)
    }

    /// Health and metrics need a registered, enabled principal connecting from an allowed
    /// network (refusals are audited by `identify`); successful polls are not audited —
    /// monitors poll often and they touch no key. An over-long reason is refused (and audited
    /// by `audit_the_rest`) like on every route.
    pub(super) async fn identified(&self, call: Call<NoBody>) -> Result<(), Response> {
        if let Err(p) = call.reason {
            return Err(p.into_response());
        }
        let Some(conn) = call.conn else {
            return Err(internal());
        };
        let engine = Arc::clone(&self.engine);
        let who = self
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
            Err(_) => Err(audited(internal_problem().into_response())),
        }
    }
}

pub(super) fn internal_problem() -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

fn internal() -> Response {
    internal_problem().into_response()
}

pub(super) fn audited(mut response: Response) -> Response {
    response.extensions_mut().insert(Audited);
    response
}

/// The body as `B`: a missing body where one is required, a body over the limit, invalid JSON
/// or an unknown field each get their own problem.
fn read_body<B: RequestBody>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<B, Problem> {
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
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return match (B::EMPTY_OK, B::empty()) {
            (true, Some(b)) => Ok(b),
            _ => Err(Problem::bad_request(
                "bad-request",
                "a JSON body is required",
            )),
        };
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

/// The `X-KMS-Reason` header, as UTF-8 text of at most [`MAX_TEXT_CHARS`] characters.
pub(super) fn header_reason(headers: &HeaderMap) -> Result<Option<String>, Problem> {
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
pub(super) fn capped(what: &str, text: &str) -> Result<(), Problem> {
    let n = text.chars().count();
    if n > MAX_TEXT_CHARS {
        return Err(Problem::bad_request(
            "bad-request",
            format!("{what} is {n} characters long; at most {MAX_TEXT_CHARS} are accepted: shorten it (put details in the ticket system)"),
        ));
    }
    Ok(())
}

/// The reason for the audit row: the header, else the body's `reason` field.
fn reason_of(headers: &HeaderMap, body_reason: Option<String>) -> Result<Option<String>, Problem> {
    if let Some(r) = &body_reason {
        capped("`reason`", r)?;
    }
    Ok(header_reason(headers)?.or(body_reason))
}
