//! Routing and authentication: an unknown path is 404 and a GET 405 (before authentication),
//! then SigV4 over the whole body, then the call on a blocking thread (`calls::run`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::error::XksError;
use super::{calls, ops, sigv4, Peer, XksState, MAX_BODY};

/// Which call a path is.
pub(super) enum Call {
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

fn json_ok(v: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub(super) async fn handle(
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
        .run(move || calls::run(&engine, &principal, &source, call, &body))
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
}
