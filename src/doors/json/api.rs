//! The `/v1` API: routes and thin handlers. Each handler names the body it takes ([`Call`]),
//! how that body becomes the engine's input, and the one engine call it makes; identification
//! (per request, so a revocation or a disabled principal takes effect on open connections too),
//! audit of refused input, error mapping and metrics are [`AppState::run`]'s.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::bodies::*;
use super::call::{audited, capped, endpoint, internal_problem, Call, NoBody};
pub use super::call::{AppState, ConnInfo};
use super::problem::Problem;
use super::unrouted;
use crate::engine::{RequestInput, ToSign};
use crate::model::KeyFilter;

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
            unrouted::audit_the_rest,
        ))
        .with_state(state)
}

// ---- monitoring ----

async fn health(State(app): State<AppState>, call: Call<NoBody>) -> Response {
    if let Err(r) = app.identified(call).await {
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
        Err(_) => internal_problem().into_response(),
    }
}

async fn metrics(State(app): State<AppState>, call: Call<NoBody>) -> Response {
    if let Err(r) = app.identified(call).await {
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

// ---- key records ----

async fn list_keys(State(app): State<AppState>, call: Call<NoBody>) -> Response {
    let ep = endpoint("list-keys", "key.list", None);
    app.run(
        call,
        ep,
        |_| Ok(()),
        |engine, caller, ()| {
            let keys = engine.list_keys(caller, &KeyFilter::default())?;
            let keys: Vec<KeySummary> = keys.iter().map(KeySummary::from).collect();
            Ok(serde_json::json!({ "keys": keys }))
        },
    )
    .await
}

async fn get_key(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<NoBody>,
) -> Response {
    let ep = endpoint("get-key", "key.show", Some(&name));
    app.run(
        call,
        ep,
        |_| Ok(()),
        move |engine, caller, ()| engine.show_key(caller, &name),
    )
    .await
}

async fn public_key(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<NoBody>,
) -> Response {
    let ep = endpoint("public-key", "key.public", Some(&name));
    app.run(
        call,
        ep,
        |_| Ok(()),
        move |engine, caller, ()| {
            let (pem, v) = engine.public_key_pem(caller, &name)?;
            Ok(serde_json::json!({ "key_version": v, "pem": pem }))
        },
    )
    .await
}

// ---- key operations ----

fn as_to_sign(is_message: bool, data: &[u8]) -> ToSign<'_> {
    if is_message {
        ToSign::Message(data)
    } else {
        ToSign::Digest(data)
    }
}

async fn sign(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<SignReq>,
) -> Response {
    let ep = endpoint("sign", "key.sign", Some(&name));
    let input = |r: SignReq| to_sign(r.message, r.digest);
    app.run(
        call,
        ep,
        input,
        move |engine, caller, (is_message, data)| {
            let s = engine.sign_data(caller, &name, as_to_sign(is_message, &data))?;
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
    Path(name): Path<String>,
    call: Call<VerifyReq>,
) -> Response {
    let ep = endpoint("verify", "key.verify", Some(&name));
    let input = |r: VerifyReq| {
        let sig = unb64("signature", &r.signature)?;
        let (is_message, data) = to_sign(r.message, r.digest)?;
        Ok((sig, is_message, data))
    };
    app.run(
        call,
        ep,
        input,
        move |engine, caller, (sig, is_message, data)| {
            engine.verify_data(caller, &name, as_to_sign(is_message, &data), &sig)
        },
    )
    .await
}

async fn mac(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<MacReq>,
) -> Response {
    let ep = endpoint("mac", "key.mac", Some(&name));
    let input = |r: MacReq| unb64("message", &r.message);
    app.run(call, ep, input, move |engine, caller, data| {
        let m = engine.mac(caller, &name, &data)?;
        Ok(serde_json::json!({
            "mac": b64(&m.tag),
            "key_version": m.key_version,
            "algorithm": m.algorithm,
        }))
    })
    .await
}

async fn verify_mac(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<VerifyMacReq>,
) -> Response {
    let ep = endpoint("verify-mac", "key.verify-mac", Some(&name));
    let input = |r: VerifyMacReq| Ok((unb64("message", &r.message)?, unb64("mac", &r.mac)?));
    app.run(call, ep, input, move |engine, caller, (data, tag)| {
        engine.verify_mac(caller, &name, &data, &tag)
    })
    .await
}

async fn encrypt(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<EncryptReq>,
) -> Response {
    let ep = endpoint("encrypt", "key.encrypt", Some(&name));
    let input = |r: EncryptReq| {
        let pt = zeroize::Zeroizing::new(unb64("plaintext", &r.plaintext)?);
        let aad = r.aad.as_deref().map(|a| unb64("aad", a)).transpose()?;
        Ok((pt, aad.unwrap_or_default()))
    };
    app.run(call, ep, input, move |engine, caller, (pt, aad)| {
        let (ct, v) = engine.encrypt(caller, &name, &pt, &aad)?;
        Ok(serde_json::json!({ "ciphertext": b64(&ct), "key_version": v }))
    })
    .await
}

async fn decrypt(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<DecryptReq>,
) -> Response {
    let ep = endpoint("decrypt", "key.decrypt", Some(&name));
    let input = |r: DecryptReq| {
        let ct = unb64("ciphertext", &r.ciphertext)?;
        let aad = r.aad.as_deref().map(|a| unb64("aad", a)).transpose()?;
        Ok((ct, aad.unwrap_or_default()))
    };
    app.run(call, ep, input, move |engine, caller, (ct, aad)| {
        let (pt, v) = engine.decrypt(caller, &name, &ct, &aad)?;
        Ok(serde_json::json!({ "plaintext": b64(&pt), "key_version": v }))
    })
    .await
}

async fn data_key(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<DataKeyReq>,
) -> Response {
    let ep = endpoint("data-key", "key.data-key", Some(&name));
    app.run(
        call,
        ep,
        |_| Ok(()),
        move |engine, caller, ()| {
            let dk = engine.data_key(caller, &name)?;
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
    Path(name): Path<String>,
    call: Call<WrappedReq>,
) -> Response {
    let ep = endpoint("unwrap", "key.unwrap", Some(&name));
    let input = |r: WrappedReq| unb64("wrapped", &r.wrapped);
    app.run(call, ep, input, move |engine, caller, wrapped| {
        let (pt, v) = engine.unwrap(caller, &name, &wrapped)?;
        Ok(serde_json::json!({ "plaintext": b64(&pt), "key_version": v }))
    })
    .await
}

async fn rewrap(
    State(app): State<AppState>,
    Path(name): Path<String>,
    call: Call<RewrapReq>,
) -> Response {
    let ep = endpoint("rewrap", "key.rewrap", Some(&name));
    let input = |r: RewrapReq| {
        let aad = r.aad.as_deref().map(|a| unb64("aad", a)).transpose()?;
        match (r.wrapped, r.ciphertext) {
            (Some(w), None) => Ok((unb64("wrapped", &w)?, aad.unwrap_or_default(), "wrapped")),
            (None, Some(c)) => Ok((unb64("ciphertext", &c)?, aad.unwrap_or_default(), "ciphertext")),
            _ => Err(Problem::bad_request(
                "bad-request",
                "send exactly one of `wrapped` (a data key) or `ciphertext` (with its `aad`, if any)",
            )),
        }
    };
    app.run(
        call,
        ep,
        input,
        move |engine, caller, (data, aad, field)| {
            let (w, v) = engine.rewrap_with(caller, &name, &data, &aad, false)?;
            Ok(serde_json::json!({ field: b64(&w), "key_version": v }))
        },
    )
    .await
}

// ---- access requests ----

async fn access_request(State(app): State<AppState>, call: Call<AccessReq>) -> Response {
    let key = call.body().map(|r| r.key.clone());
    let ep = endpoint("access-request", "access.request", key.as_deref());
    let input = |r: AccessReq| {
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
        Ok(RequestInput {
            key: r.key,
            ops,
            duration,
            ticket: r.ticket,
            justification: r.justification,
            grantee: None,
        })
    };
    app.run(call, ep, input, |engine, caller, input| {
        engine.request_access(caller, input)
    })
    .await
}

async fn access_show(
    State(app): State<AppState>,
    Path(id): Path<String>,
    call: Call<NoBody>,
) -> Response {
    let ep = endpoint("access-show", "access.show", None);
    app.run(
        call,
        ep,
        |_| Ok(()),
        move |engine, caller, ()| engine.request_evidence(caller, &id),
    )
    .await
}
