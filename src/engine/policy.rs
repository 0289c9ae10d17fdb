//! Authorization for this stage: a key's own policy (type, usage, state, expiry). Principals,
//! roles and grants (A9) plug in here later; every operation already asks this one place.

use time::OffsetDateTime;

use super::EngineError;
use crate::inventory::{KeyRecord, KeyVersion};
use crate::model::Operation;

/// Check that `op` may be performed with `key` now, and pick the version to use: the current one,
/// or for decrypt/verify of old data, the version the caller names.
pub(crate) fn authorize(
    key: &KeyRecord,
    op: Operation,
    version: Option<u32>,
    now: OffsetDateTime,
) -> Result<&KeyVersion, EngineError> {
    if !key.key_type.supported_operations().contains(&op) {
        let can: Vec<&str> = key
            .key_type
            .supported_operations()
            .iter()
            .map(|o| o.as_str())
            .collect();
        return Err(EngineError::Denied(format!(
            "key '{}' is {} and cannot {op}; {} keys support: {}",
            key.name,
            key.key_type,
            key.key_type,
            can.join(", ")
        )));
    }
    if !key.usage.contains(op) {
        return Err(EngineError::Denied(format!(
            "key '{}' is not allowed to {op}: its acceptable usage is {} (set when the key was created)",
            key.name, key.usage
        )));
    }
    let protects_new_data = matches!(op, Operation::Sign | Operation::Encrypt | Operation::Wrap);
    if let Some(expires) = key.expires {
        if protects_new_data && now.date() > expires {
            return Err(EngineError::Denied(format!(
                "key '{}' expired on {expires}; it may still verify and decrypt, but not {op}",
                key.name
            )));
        }
    }
    let chosen = match version {
        Some(v) => key.version(v).ok_or_else(|| {
            EngineError::InvalidInput(format!("key '{}' has no version {v}", key.name))
        })?,
        None => key.current_version().ok_or_else(|| {
            EngineError::Denied(format!(
                "key '{}' has no active version (run `kms reconcile`)",
                key.name
            ))
        })?,
    };
    if chosen.state != crate::model::VersionState::Active {
        return Err(EngineError::Denied(format!(
            "version {} of key '{}' is {}, not active",
            chosen.version, key.name, chosen.state
        )));
    }
    Ok(chosen)
}
