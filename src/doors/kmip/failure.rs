//! A failed KMIP batch item, and KMIP's result reasons for the engine's error kinds.

use super::tags::result;
use crate::engine::{EngineError, ErrorKind, Refusal};

/// A failed batch item: the spec's reason and a message.
pub(super) struct Failure {
    pub(super) reason: u32,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(reason: u32, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
    pub(super) fn field(m: impl Into<String>) -> Failure {
        Failure::new(result::INVALID_FIELD, m)
    }
}

impl From<EngineError> for Failure {
    /// KMIP's result reasons for the engine's [`ErrorKind`]s.
    fn from(e: EngineError) -> Failure {
        let reason = match e.kind() {
            ErrorKind::NotFound(_) => result::ITEM_NOT_FOUND,
            ErrorKind::Refused(
                Refusal::NotSupported
                | Refusal::UsageNotAllowed
                | Refusal::KeyState
                | Refusal::KeyExpired,
            ) => result::ILLEGAL_OPERATION,
            ErrorKind::Refused(_) => result::PERMISSION_DENIED,
            ErrorKind::BadCiphertext => result::CRYPTOGRAPHIC_FAILURE,
            ErrorKind::BadInput | ErrorKind::TooLarge => result::INVALID_FIELD,
            _ => {
                tracing::error!(error = %e, "kmip: general failure");
                result::GENERAL_FAILURE
            }
        };
        Failure {
            reason,
            message: e.public_message(),
        }
    }
}
