//! An XKS error: `{"errorName": …, "errorMessage": …}` with the spec's status code, and the
//! engine's refusals and failures in the spec's words.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::engine::{EngineError, ErrorKind, Missing, Refusal};

/// An XKS error: the spec's name and status, and a message (printable ASCII, < 512).
pub(super) struct XksError {
    status: StatusCode,
    name: &'static str,
    pub(super) message: String,
}

impl XksError {
    pub(super) fn new(
        status: StatusCode,
        name: &'static str,
        message: impl Into<String>,
    ) -> XksError {
        XksError {
            status,
            name,
            message: message.into(),
        }
    }
    pub(super) fn validation(m: impl Into<String>) -> XksError {
        XksError::new(StatusCode::BAD_REQUEST, "ValidationException", m)
    }
    pub(super) fn unsupported(m: impl Into<String>) -> XksError {
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
pub(super) fn from_engine(e: EngineError) -> XksError {
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
