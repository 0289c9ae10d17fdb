//! The XKS request bodies (JSON, camelCase) and their shared checks.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;

use super::error::XksError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Metadata {
    pub(super) kms_request_id: String,
    pub(super) kms_operation: String,
    pub(super) aws_principal_arn: Option<String>,
    pub(super) kms_key_arn: Option<String>,
    pub(super) kms_via_service: Option<String>,
    pub(super) aws_source_vpc: Option<String>,
    pub(super) aws_source_vpce: Option<String>,
}

impl Metadata {
    /// The audit reason: what AWS says this call is for, and who asked.
    pub(super) fn reason(&self) -> String {
        let mut r = format!(
            "AWS KMS {} request {}",
            self.kms_operation, self.kms_request_id
        );
        if let Some(p) = &self.aws_principal_arn {
            r.push_str(&format!(" by {p}"));
        }
        if let Some(k) = &self.kms_key_arn {
            r.push_str(&format!(" for {k}"));
        }
        if let Some(v) = &self.kms_via_service {
            r.push_str(&format!(" via {v}"));
        }
        if let Some(v) = &self.aws_source_vpce {
            r.push_str(&format!(" from {v}"));
        } else if let Some(v) = &self.aws_source_vpc {
            r.push_str(&format!(" from {v}"));
        }
        r.chars().take(1000).collect()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MetaOnly {
    pub(super) request_metadata: Metadata,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EncryptReq {
    pub(super) request_metadata: Metadata,
    pub(super) plaintext: String,
    pub(super) encryption_algorithm: String,
    pub(super) additional_authenticated_data: Option<String>,
    pub(super) ciphertext_data_integrity_value_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DecryptReq {
    pub(super) request_metadata: Metadata,
    pub(super) ciphertext: String,
    pub(super) encryption_algorithm: String,
    pub(super) initialization_vector: String,
    pub(super) authentication_tag: String,
    pub(super) additional_authenticated_data: Option<String>,
    pub(super) ciphertext_metadata: Option<String>,
}

pub(super) fn b64(field: &str, v: &str) -> Result<Vec<u8>, XksError> {
    B64.decode(v)
        .map_err(|_| XksError::validation(format!("{field} is not standard Base64")))
}

pub(super) fn need_key_request(m: &Metadata) -> Result<(), XksError> {
    if m.aws_principal_arn.is_none() {
        return Err(XksError::validation(
            "requestMetadata.awsPrincipalArn is required",
        ));
    }
    if m.kms_key_arn.is_none() {
        return Err(XksError::validation(
            "requestMetadata.kmsKeyArn is required",
        ));
    }
    Ok(())
}
