//! Using keys: sign and decrypt on the token, verify and RSA-encrypt in software from the stored
//! public key, AES-GCM (through `aead.rs`) and data-key wrapping on the token. Each one authorized, audited, and
//! fail-closed. One file per kind of use: `sign.rs` (sign, verify), `encrypt.rs` (encrypt,
//! decrypt, break-glass decryption), `data_keys.rs` (data keys, unwrap, rewrap); here the
//! results and the checks they share (which version a ciphertext may be read with).

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::audit::AuditNote;
use super::{Caller, Engine, EngineError};
use crate::envelope::Header;
use crate::inventory::{KeyRecord, KeyVersion};
use crate::model::{Operation, VersionState};

mod data_keys;
mod encrypt;
mod sign;

pub(crate) use sign::{prepare, sign_prepared};

/// A signature and the key version that made it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub signature: Vec<u8>,
    pub key_version: u32,
    /// `ecdsa-p384-sha384` or `rsa-pss-sha256`.
    pub algorithm: &'static str,
}

/// The result of a verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyOutcome {
    pub valid: bool,
    /// The version whose public key verified the signature.
    pub key_version: Option<u32>,
}

/// A data key for an application: the plaintext (returned once, by design) and the same key
/// wrapped under the named key, in the self-describing envelope format.
pub struct IssuedDataKey {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub wrapped: Vec<u8>,
    pub key_version: u32,
}

/// What to sign: a message (hashed here) or a digest the caller computed.
#[derive(Debug, Clone, Copy)]
pub enum ToSign<'a> {
    Message(&'a [u8]),
    Digest(&'a [u8]),
}

impl Engine {
    /// Check a ciphertext/wrapped key names this key, then authorize `op` on the version it names.
    fn version_for<'k>(
        &self,
        caller: &Caller,
        key: &'k KeyRecord,
        header: &Header,
        op: Operation,
        note: &mut AuditNote,
    ) -> Result<&'k KeyVersion, EngineError> {
        if header.key_id != uuid_bytes(&key.id)? {
            return Err(EngineError::InvalidInput(format!(
                "this ciphertext was not made with key '{}' (it names key ID {})",
                key.name,
                uuid::Uuid::from_bytes(header.key_id)
            )));
        }
        let now = OffsetDateTime::now_utc();
        self.authorize_use(caller, key, op, Some(header.key_version), now, note)
    }

    /// The compromised version a break-glass operation may read: officer, reason, compromised.
    fn break_glass_version<'k>(
        &self,
        caller: &Caller,
        key: &'k KeyRecord,
        header: &Header,
    ) -> Result<&'k KeyVersion, EngineError> {
        super::policy::require_role(
            &self.inventory,
            caller,
            &[crate::model::Role::SecurityOfficer],
            "use the break-glass path",
        )?;
        if caller.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(EngineError::InvalidInput(
                "break-glass needs --reason (the incident and why the data must be read)".into(),
            ));
        }
        if header.key_id != uuid_bytes(&key.id)? {
            return Err(EngineError::InvalidInput(format!(
                "this data was not made with key '{}'",
                key.name
            )));
        }
        let v = key.version(header.key_version).ok_or_else(|| {
            EngineError::InvalidInput(format!(
                "key '{}' has no version {}",
                key.name, header.key_version
            ))
        })?;
        if v.state != VersionState::Compromised {
            return Err(EngineError::denied(
                super::Refusal::KeyState,
                format!(
                    "break-glass is only for data of a compromised version; v{} of '{}' is {} (use the normal path)",
                    v.version, key.name, v.state
                ),
            ));
        }
        Ok(v)
    }
}

/// The IV and ciphertext of a 3DES-CBC envelope body.
pub(crate) fn split_cbc(body: &[u8]) -> Result<([u8; 8], &[u8]), EngineError> {
    if body.len() < 16 || !body.len().is_multiple_of(8) {
        return Err(EngineError::InvalidInput(format!(
            "a 3DES-CBC body is an 8-byte IV and whole 8-byte blocks, not {} bytes",
            body.len()
        )));
    }
    let (iv, ct) = body.split_at(8);
    let mut out = [0u8; 8];
    out.copy_from_slice(iv);
    Ok((out, ct))
}

fn uuid_bytes(id: &str) -> Result<[u8; 16], EngineError> {
    uuid::Uuid::parse_str(id)
        .map(|u| *u.as_bytes())
        .map_err(|e| {
            EngineError::InvalidInput(format!("inventory key ID '{id}' is not a UUID: {e}"))
        })
}
