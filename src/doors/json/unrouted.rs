//! The audit row of every request no handler audited: no such route, wrong method, a path that
//! does not decode, a panic.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::call::{header_reason, internal_problem, AppState, Audited, ConnInfo};
use super::problem::Problem;

/// The longest request path quoted in an audit row for a request no route took.
const MAX_PATH_CHARS: usize = 256;

/// Every request that reaches the router leaves an audit row. Handlers audit their own; this
/// layer audits what no handler saw — no such route (404), wrong method (405), a path axum
/// could not decode (`/v1/keys/%FF`), a panic — identifying the certificate through the engine
/// (an unregistered one is refused and audited by `identify`), and turns any error that is not
/// yet `application/problem+json` into one. A panic in the request's handler is caught and
/// becomes a 500 problem with an audit row, not a dropped connection.
pub(super) async fn audit_the_rest(
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
                internal_problem().into_response()
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
        Err(_) => internal_problem(),
    };
    app.metrics.record(
        "unrouted",
        problem.status().as_u16(),
        started.elapsed(),
        false,
    );
    problem.into_response()
}
