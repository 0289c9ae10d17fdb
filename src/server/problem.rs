//! Errors as RFC 9457 `application/problem+json`, each with a stable machine `code`. Messages
//! carry what the caller needs to fix its request and nothing internal: no token return codes,
//! no paths, no PIN, no key byte.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::{EngineError, Refusal};
use crate::hsm::HsmError;
use crate::inventory::InventoryError;

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
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

impl From<EngineError> for Problem {
    fn from(e: EngineError) -> Problem {
        use StatusCode as S;
        match e {
            EngineError::InvalidInput(m) => Problem::bad_request("bad-request", m),
            EngineError::Envelope(e) => Problem::bad_request("bad-ciphertext", e.to_string()),
            EngineError::Hsm(HsmError::DecryptionFailed { .. }) => Problem::bad_request(
                "bad-ciphertext",
                "the ciphertext or its additional authenticated data is not valid for this key",
            ),
            EngineError::SoftCrypto(crate::softverify::SoftCryptoError::TooLong { max, given }) => {
                Problem::bad_request(
                    "bad-size",
                    format!("at most {max} bytes can be encrypted with this key, not {given}"),
                )
            }
            EngineError::Inventory(InventoryError::NoSuchKey(k)) => {
                Problem::new(S::NOT_FOUND, "key-not-found", format!("no key named '{k}'"))
            }
            EngineError::Inventory(InventoryError::NoSuchRequest(id)) => Problem::new(
                S::NOT_FOUND,
                "request-not-found",
                format!("no access request {id}"),
            ),
            EngineError::Inventory(InventoryError::NoSuchPrincipal(p)) => {
                Problem::bad_request("bad-request", format!("no principal named '{p}'"))
            }
            EngineError::Denied(why, m) => {
                let status = match why {
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
                    | Refusal::InventoryTampered => S::FORBIDDEN,
                    Refusal::NotSupported
                    | Refusal::UsageNotAllowed
                    | Refusal::KeyExpired
                    | Refusal::KeyState
                    | Refusal::WrongState => S::CONFLICT,
                };
                Problem::new(status, why.code(), m)
            }
            EngineError::Misconfigured(m) => {
                tracing::error!(error = %m, "configuration mismatch");
                Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "token-unavailable",
                    "the key's token is not available; try again later",
                )
            }
            EngineError::Hsm(e) => {
                tracing::error!(error = %e, "token error");
                Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "token-unavailable",
                    "the key's token is not available; try again later",
                )
            }
            other => {
                tracing::error!(error = %other, "internal error");
                Problem::new(S::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}
