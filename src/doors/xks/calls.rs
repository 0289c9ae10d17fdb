//! One XKS call: parse and check the body, then one engine call as the credential's principal.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::bodies::{b64, need_key_request, DecryptReq, EncryptReq, MetaOnly, Metadata};
use super::error::{from_engine, XksError};
use super::http::Call;
use super::{ops, MAX_AAD, MAX_METADATA, MAX_PLAINTEXT};
use crate::engine::{Engine, EngineError};

/// Parse the body, then one engine call as the credential's principal.
pub(super) fn run(
    engine: &Engine,
    principal: &str,
    source: &str,
    call: Call,
    body: &[u8],
) -> Result<serde_json::Value, XksError> {
    let parse_err = |e: serde_json::Error| XksError::validation(format!("request body: {e}"));
    let metadata_of = || -> Result<Metadata, XksError> {
        serde_json::from_slice::<MetaOnly>(body)
            .map(|m| m.request_metadata)
            .map_err(parse_err)
    };
    // A request that does not parse is still on the record, as the principal's.
    let rejected = |action: &str, key: Option<&str>, err: XksError| -> XksError {
        if let Ok(caller) = ops::caller(
            engine,
            principal,
            source,
            format!("XKS request refused: {}", err.message),
        ) {
            let _ = engine.audit_rejected_request(&caller, action, key, &err.message);
        }
        err
    };
    match call {
        Call::Health => {
            let m = metadata_of().map_err(|e| rejected("xks.health", None, e))?;
            let caller = ops::caller(engine, principal, source, m.reason()).map_err(from_engine)?;
            let tokens = ops::health(engine, &caller).map_err(from_engine)?;
            let fleet: Vec<serde_json::Value> = tokens
                .iter()
                .take(10)
                .map(
                    |t| serde_json::json!({"id": t.name, "model": t.model, "healthStatus": ops::health_status(t)}),
                )
                .collect();
            Ok(serde_json::json!({
                "xksProxyFleetSize": 1,
                "xksProxyVendor": "kms",
                "xksProxyModel": concat!("kms ", env!("CARGO_PKG_VERSION")),
                "ekmVendor": "PKCS#11",
                "ekmFleetDetails": fleet,
            }))
        }
        Call::Metadata(key) => {
            let m = metadata_of().map_err(|e| rejected("xks.metadata", Some(&key), e))?;
            if m.aws_principal_arn.is_none() {
                return Err(rejected(
                    "xks.metadata",
                    Some(&key),
                    XksError::validation("requestMetadata.awsPrincipalArn is required"),
                ));
            }
            let caller = ops::caller(engine, principal, source, m.reason()).map_err(from_engine)?;
            let info = ops::key_metadata(engine, &caller, &key).map_err(from_engine)?;
            Ok(serde_json::json!({
                "keySpec": info.key_spec,
                "keyUsage": info.usage,
                "keyStatus": if info.enabled { "ENABLED" } else { "DISABLED" },
            }))
        }
        Call::Encrypt(key) => {
            let r: EncryptReq = serde_json::from_slice(body)
                .map_err(parse_err)
                .map_err(|e| rejected("xks.encrypt", Some(&key), e))?;
            let checked = (|| {
                need_key_request(&r.request_metadata)?;
                if r.encryption_algorithm != "AES_GCM" {
                    return Err(XksError::validation("encryptionAlgorithm must be AES_GCM"));
                }
                let integrity = match r.ciphertext_data_integrity_value_algorithm.as_deref() {
                    None => false,
                    Some("SHA_256") => true,
                    Some(_) => {
                        return Err(XksError::validation(
                            "ciphertextDataIntegrityValueAlgorithm must be SHA_256",
                        ))
                    }
                };
                let plaintext = zeroize::Zeroizing::new(b64("plaintext", &r.plaintext)?);
                let aad = match &r.additional_authenticated_data {
                    Some(a) => b64("additionalAuthenticatedData", a)?,
                    None => Vec::new(),
                };
                if plaintext.len() > MAX_PLAINTEXT {
                    return Err(XksError::unsupported(format!(
                        "plaintext is {} bytes; this proxy encrypts at most {MAX_PLAINTEXT}",
                        plaintext.len()
                    )));
                }
                if aad.len() > MAX_AAD {
                    return Err(XksError::unsupported(format!(
                        "additionalAuthenticatedData is {} bytes; this proxy takes at most {MAX_AAD}",
                        aad.len()
                    )));
                }
                Ok((plaintext, aad, integrity))
            })();
            let (plaintext, aad, integrity) =
                checked.map_err(|e| rejected("xks.encrypt", Some(&key), e))?;
            let caller = ops::caller(engine, principal, source, r.request_metadata.reason())
                .map_err(from_engine)?;
            let sealed = ops::encrypt(engine, &caller, &key, &plaintext, &aad, integrity)
                .map_err(from_engine)?;
            let mut out = serde_json::json!({
                "ciphertext": B64.encode(&sealed.ciphertext),
                "ciphertextMetadata": B64.encode(&sealed.metadata),
                "initializationVector": B64.encode(sealed.iv),
                "authenticationTag": B64.encode(sealed.tag),
            });
            if let Some(v) = sealed.integrity {
                out["ciphertextDataIntegrityValue"] = B64.encode(v).into();
            }
            Ok(out)
        }
        Call::Decrypt(key) => {
            let r: DecryptReq = serde_json::from_slice(body)
                .map_err(parse_err)
                .map_err(|e| rejected("xks.decrypt", Some(&key), e))?;
            let checked = (|| {
                need_key_request(&r.request_metadata)?;
                if r.encryption_algorithm != "AES_GCM" {
                    return Err(XksError::validation("encryptionAlgorithm must be AES_GCM"));
                }
                let ct = b64("ciphertext", &r.ciphertext)?;
                let iv = b64("initializationVector", &r.initialization_vector)?;
                let tag = b64("authenticationTag", &r.authentication_tag)?;
                let aad = match &r.additional_authenticated_data {
                    Some(a) => b64("additionalAuthenticatedData", a)?,
                    None => Vec::new(),
                };
                let metadata = match &r.ciphertext_metadata {
                    Some(m) => b64("ciphertextMetadata", m)?,
                    None => Vec::new(),
                };
                if iv.len() != 12 && iv.len() != 16 {
                    return Err(XksError::validation(
                        "initializationVector must be 12 or 16 bytes",
                    ));
                }
                if tag.len() != 16 {
                    return Err(XksError::validation("authenticationTag must be 16 bytes"));
                }
                if metadata.len() > MAX_METADATA {
                    return Err(XksError::validation("ciphertextMetadata is over 20 bytes"));
                }
                if ct.len() > MAX_PLAINTEXT {
                    return Err(XksError::unsupported(format!(
                        "ciphertext is {} bytes; this proxy decrypts at most {MAX_PLAINTEXT}",
                        ct.len()
                    )));
                }
                if aad.len() > MAX_AAD {
                    return Err(XksError::unsupported(format!(
                        "additionalAuthenticatedData is {} bytes; this proxy takes at most {MAX_AAD}",
                        aad.len()
                    )));
                }
                Ok((ct, iv, tag, aad, metadata))
            })();
            let (ct, iv, tag, aad, metadata) =
                checked.map_err(|e| rejected("xks.decrypt", Some(&key), e))?;
            let caller = ops::caller(engine, principal, source, r.request_metadata.reason())
                .map_err(from_engine)?;
            if iv.len() != 12 {
                // kms only ever makes 12-byte IVs: a 16-byte one is not a ciphertext of ours.
                return Err(from_engine(EngineError::Envelope(
                    crate::envelope::EnvelopeError::Truncated,
                )));
            }
            let plaintext = ops::decrypt(engine, &caller, &key, &ct, &iv, &tag, &aad, &metadata)
                .map_err(from_engine)?;
            Ok(serde_json::json!({ "plaintext": B64.encode(plaintext.as_slice()) }))
        }
    }
}
