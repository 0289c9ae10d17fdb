//! The JSON API's request and response bodies, and the base64 fields they carry.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::call::RequestBody;
use super::problem::Problem;
use crate::model::KeyRecord;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignReq {
    pub(super) message: Option<String>,
    pub(super) digest: Option<String>,
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyReq {
    pub(super) message: Option<String>,
    pub(super) digest: Option<String>,
    pub(super) signature: String,
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MacReq {
    pub(super) message: String,
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyMacReq {
    pub(super) message: String,
    pub(super) mac: String,
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EncryptReq {
    pub(super) plaintext: String,
    pub(super) aad: Option<String>,
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecryptReq {
    pub(super) ciphertext: String,
    pub(super) aad: Option<String>,
    pub(super) reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DataKeyReq {
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessReq {
    pub(super) key: String,
    pub(super) ops: Vec<String>,
    pub(super) duration: String,
    pub(super) ticket: String,
    pub(super) justification: String,
    pub(super) reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WrappedReq {
    pub(super) wrapped: String,
    pub(super) reason: Option<String>,
}

/// `POST /v1/keys/{name}/rewrap`: a wrapped data key, or a ciphertext (with its AAD).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RewrapReq {
    pub(super) wrapped: Option<String>,
    pub(super) ciphertext: Option<String>,
    pub(super) aad: Option<String>,
    pub(super) reason: Option<String>,
}

#[derive(Serialize)]
pub(super) struct KeySummary {
    pub(super) name: String,
    pub(super) key_type: crate::model::KeyType,
    pub(super) owner: String,
    pub(super) classification: crate::model::Classification,
    pub(super) usage: crate::model::OperationSet,
    pub(super) current_version: Option<u32>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub(super) rotation_due: Option<time::OffsetDateTime>,
    pub(super) expires: Option<String>,
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

impl RequestBody for SignReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl RequestBody for VerifyReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl RequestBody for MacReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl RequestBody for VerifyMacReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl RequestBody for EncryptReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl RequestBody for DecryptReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl RequestBody for AccessReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl RequestBody for WrappedReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl RequestBody for RewrapReq {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// An empty body asks for a data key with no reason of its own.
impl RequestBody for DataKeyReq {
    const EMPTY_OK: bool = true;
    fn empty() -> Option<Self> {
        Some(DataKeyReq::default())
    }
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn unb64(field: &'static str, s: &str) -> Result<Vec<u8>, Problem> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Problem::bad_request("bad-base64", format!("`{field}` is not valid base64")))
}

/// Exactly one of `message` / `digest`: (is it a message, its bytes).
pub(super) fn to_sign(
    message: Option<String>,
    digest: Option<String>,
) -> Result<(bool, Vec<u8>), Problem> {
    match (message, digest) {
        (Some(m), None) => Ok((true, unb64("message", &m)?)),
        (None, Some(d)) => Ok((false, unb64("digest", &d)?)),
        _ => Err(Problem::bad_request(
            "bad-request",
            "give exactly one of `message` or `digest`",
        )),
    }
}
