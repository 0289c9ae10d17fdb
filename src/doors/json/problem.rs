//! Errors as RFC 9457 `application/problem+json`, each with a stable machine `code`. Messages
//! carry what the caller needs to fix its request and nothing internal: no token return codes,
//! no paths, no PIN, no key byte.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::{EngineError, ErrorKind, Missing, Refusal};

/// Every (status, code) the service answers with. docs/openapi.json lists exactly these (a test
/// compares them), and `Problem::new` refuses, in debug builds, a code missing from here.
pub const CODES: &[(u16, &str)] = &[
    (400, "bad-request"),
    (400, "bad-base64"),
    (400, "bad-size"),
    (400, "unknown-field"),
    (400, "bad-ciphertext"),
    // Reserved: a connection without a client certificate is refused in the TLS handshake.
    (401, "unauthenticated"),
    (403, "unknown-principal"),
    (403, "principal-disabled"),
    (403, "source-not-allowed"),
    (403, "no-grant"),
    (403, "grant-expired"),
    (403, "review-lapsed"),
    (403, "operation-not-granted"),
    (403, "wrong-role"),
    (403, "separation-of-duties"),
    (403, "bad-signature"),
    (403, "inventory-tampered"),
    (404, "key-not-found"),
    (404, "request-not-found"),
    (404, "no-such-route"),
    (405, "method-not-allowed"),
    (409, "operation-not-supported"),
    (409, "usage-not-allowed"),
    (409, "key-expired"),
    (409, "key-state"),
    (409, "wrong-state"),
    (409, "wrong-object"),
    (413, "body-too-large"),
    (500, "internal"),
    (503, "token-unavailable"),
    (503, "not-on-this-site"),
    (503, "inventory-unavailable"),
];

/// `Retry-After` of a 503 `inventory-unavailable`: kms connects again before the next request.
const RETRY_AFTER_SECS: &str = "2";

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        debug_assert!(
            CODES.contains(&(status.as_u16(), code)),
            "problem code {code} with status {status} is not in problem::CODES (nor documented)"
        );
        Problem {
            kind: format!("urn:kms:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Whether the failure was the token's (counted as a token error in the metrics).
    pub fn is_token_error(&self) -> bool {
        self.code == "token-unavailable"
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        // A database that went away comes back by itself: tell the client when to retry.
        if self.code == "inventory-unavailable" {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        // Kept for the layer that audits responses no handler audited (api::audit_the_rest).
        response.extensions_mut().insert(self);
        response
    }
}

impl From<EngineError> for Problem {
    /// The JSON API's wire format for the engine's [`ErrorKind`]s.
    fn from(e: EngineError) -> Problem {
        use StatusCode as S;
        let m = e.public_message();
        match e.kind() {
            ErrorKind::BadInput | ErrorKind::NotFound(Missing::Principal) => {
                Problem::bad_request("bad-request", m)
            }
            ErrorKind::BadCiphertext => Problem::bad_request("bad-ciphertext", m),
            ErrorKind::TooLarge => Problem::bad_request("bad-size", m),
            ErrorKind::NotFound(Missing::Key) => Problem::new(S::NOT_FOUND, "key-not-found", m),
            ErrorKind::NotFound(Missing::Request) => {
                Problem::new(S::NOT_FOUND, "request-not-found", m)
            }
            ErrorKind::Refused(why) => Problem::new(refusal_status(why), why.code(), m),
            ErrorKind::WrongObject => {
                tracing::error!(error = %e, "a key's object on the token is not the recorded one");
                Problem::new(S::CONFLICT, "wrong-object", m)
            }
            ErrorKind::NotOnSite => Problem::new(S::SERVICE_UNAVAILABLE, "not-on-this-site", m),
            ErrorKind::InventoryUnavailable => {
                tracing::warn!(error = %e, "inventory unavailable");
                Problem::new(S::SERVICE_UNAVAILABLE, "inventory-unavailable", m)
            }
            ErrorKind::Unavailable
            | ErrorKind::Configuration
            | ErrorKind::NotFound(Missing::TokenObject) => {
                tracing::error!(error = %e, "token unavailable");
                Problem::new(S::SERVICE_UNAVAILABLE, "token-unavailable", m)
            }
            ErrorKind::NotFound(Missing::Grant) | ErrorKind::Conflict | ErrorKind::Internal => {
                tracing::error!(error = %e, "internal error");
                Problem::new(S::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

/// Refusals of the caller's rights are 403; refusals of what the key can do now are 409.
fn refusal_status(why: Refusal) -> StatusCode {
    match why {
        Refusal::UnknownPrincipal
        | Refusal::PrincipalDisabled
        | Refusal::NoGrant
        | Refusal::GrantExpired
        | Refusal::OperationNotGranted
        | Refusal::WrongRole
        | Refusal::ReviewLapsed
        | Refusal::SourceNotAllowed
        | Refusal::SeparationOfDuties
        | Refusal::BadSignature
        | Refusal::InventoryTampered => StatusCode::FORBIDDEN,
        Refusal::NotSupported
        | Refusal::UsageNotAllowed
        | Refusal::KeyExpired
        | Refusal::KeyState
        | Refusal::WrongState => StatusCode::CONFLICT,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    type Pairs = BTreeSet<(u16, String)>;

    fn codes() -> Pairs {
        CODES.iter().map(|(s, c)| (*s, (*c).to_owned())).collect()
    }

    fn spec() -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
    }

    #[test]
    fn every_refusal_has_a_listed_code() {
        for why in Refusal::ALL {
            let p = Problem::from(EngineError::Denied(why, "x".into()));
            assert!(
                CODES.contains(&(p.status, p.code)),
                "{why:?} answers {} {}, which CODES does not list",
                p.status,
                p.code
            );
            assert_eq!(p.code, why.code());
        }
    }

    /// The table in the API description lists exactly [`CODES`].
    #[test]
    fn the_documented_code_table_is_complete() -> Result<(), Box<dyn std::error::Error>> {
        let spec = spec()?;
        let desc = spec["info"]["description"]
            .as_str()
            .ok_or("openapi.json has no info.description")?;
        let mut table = Pairs::new();
        for line in desc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let Some(status) = cells.get(1).and_then(|c| c.parse::<u16>().ok()) else {
                continue;
            };
            let text = cells.get(2).ok_or("a table row without codes")?;
            // Codes are the back-quoted words of the cell.
            for (i, part) in text.split('`').enumerate() {
                if i % 2 == 1 {
                    table.insert((status, part.to_owned()));
                }
            }
        }
        assert_eq!(
            table,
            codes(),
            "docs/openapi.json's code table vs problem::CODES"
        );
        Ok(())
    }

    /// The shared problem responses list exactly [`CODES`] in their `status`/`code` enums.
    #[test]
    fn the_documented_problem_responses_are_complete() -> Result<(), Box<dyn std::error::Error>> {
        let spec = spec()?;
        let responses = spec["components"]["responses"]
            .as_object()
            .ok_or("openapi.json has no components.responses")?;
        let mut listed = Pairs::new();
        for r in responses.values() {
            let Some(parts) =
                r["content"]["application/problem+json"]["schema"]["allOf"].as_array()
            else {
                continue;
            };
            for part in parts {
                let props = &part["properties"];
                let (Some(statuses), Some(codes)) = (
                    props["status"]["enum"].as_array(),
                    props["code"]["enum"].as_array(),
                ) else {
                    continue;
                };
                for s in statuses.iter().filter_map(serde_json::Value::as_u64) {
                    for c in codes.iter().filter_map(serde_json::Value::as_str) {
                        listed.insert((u16::try_from(s)?, c.to_owned()));
                    }
                }
            }
        }
        assert_eq!(
            listed,
            codes(),
            "docs/openapi.json's problem responses vs problem::CODES"
        );
        Ok(())
    }
}
