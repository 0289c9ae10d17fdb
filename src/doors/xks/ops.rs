//! The XKS operations over the engine's neutral ones: the SigV4 credential's principal is an
//! ordinary caller (`identify_signed`), each call needs an ordinary A9 grant on the key, uses the
//! key's current version through the engine's one AEAD path, and is one audit record whose reason
//! carries AWS's request metadata.
//!
//! Ciphertexts: AES-256-GCM on the token with a fresh 12-byte IV; the GCM additional data is the
//! spec's `u16be(len aad) || aad || u8(len metadata) || metadata`. `ciphertextMetadata` is
//! `"kmsv" || u32be(version)`: it names the key version that encrypted (so rotation keeps old
//! ciphertexts readable) and, being in the AAD, cannot be changed without the tag failing.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::engine::{
    Aead, Caller, Engine, EngineError, KeyRef, Refusal, SignedRequest, TokenLiveness,
};
use crate::envelope::EnvelopeError;
use crate::model::KeyRecord;
use crate::model::{KeyType, Operation, VersionState};

/// What `ciphertextMetadata` starts with.
const METADATA_TAG: &[u8; 4] = b"kmsv";

/// An XKS encryption's outputs, each a separate field of the response.
pub struct XksSealed {
    pub ciphertext: Vec<u8>,
    pub iv: [u8; 12],
    pub tag: [u8; 16],
    pub metadata: Vec<u8>,
    /// SHA-256 over aad || metadata || iv || ciphertext || tag, when asked for.
    pub integrity: Option<[u8; 32]>,
}

/// GetKeyMetadata's answer.
pub struct XksKeyInfo {
    pub key_spec: &'static str,
    pub usage: Vec<&'static str>,
    pub enabled: bool,
}

/// `ciphertextMetadata` for a key version.
fn metadata_of(version: u32) -> Vec<u8> {
    let mut metadata = METADATA_TAG.to_vec();
    metadata.extend_from_slice(&version.to_be_bytes());
    metadata
}

/// The GCM additional data the XKS spec defines.
pub fn xks_aad(aad: &[u8], metadata: &[u8]) -> Result<Vec<u8>, EngineError> {
    let aad_len = u16::try_from(aad.len()).map_err(|_| {
        EngineError::InvalidInput("additionalAuthenticatedData is over 65535 bytes".into())
    })?;
    let md_len = u8::try_from(metadata.len())
        .map_err(|_| EngineError::InvalidInput("ciphertextMetadata is over 255 bytes".into()))?;
    let mut out = Vec::with_capacity(3 + aad.len() + metadata.len());
    out.extend_from_slice(&aad_len.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(md_len);
    out.extend_from_slice(metadata);
    Ok(out)
}

/// The ciphertextDataIntegrityValue: SHA-256(aad || metadata || iv || ciphertext || tag).
pub fn xks_integrity(aad: &[u8], metadata: &[u8], iv: &[u8], ct: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [aad, metadata, iv, ct, tag] {
        h.update(part);
    }
    h.finalize().into()
}

/// The caller an authenticated XKS credential acts as (a refusal is audited as `xks.identify`).
pub fn caller(
    engine: &Engine,
    principal: &str,
    source: &str,
    reason: String,
) -> Result<Caller, EngineError> {
    engine.identify_signed(SignedRequest {
        principal,
        source,
        reason,
        door: "XKS",
        action: "xks.identify",
    })
}

/// A request that failed SigV4 (or named no key store of this proxy), on the record.
pub fn refused(
    engine: &Engine,
    source: &str,
    access_key: &str,
    what: &str,
) -> Result<(), EngineError> {
    let actor = format!("xks:{}", access_key.chars().take(32).collect::<String>());
    engine.record_refusal(actor, source, "xks.authenticate", what)
}

/// GetKeyMetadata: the key's spec, usage and whether it can serve now.
pub fn key_metadata(
    engine: &Engine,
    caller: &Caller,
    name: &str,
) -> Result<XksKeyInfo, EngineError> {
    let accept = |key: &KeyRecord| xks_spec(key).map(drop);
    let status = engine.key_status(caller, "xks.metadata", name, &accept)?;
    let mut usage = Vec::new();
    if status.key.usage.contains(Operation::Encrypt) {
        usage.push("ENCRYPT");
    }
    if status.key.usage.contains(Operation::Decrypt) {
        usage.push("DECRYPT");
    }
    Ok(XksKeyInfo {
        key_spec: xks_spec(&status.key)?,
        usage,
        enabled: status.enabled,
    })
}

/// Encrypt: AES-256-GCM on the token under the key's current version. With `integrity`, the
/// spec's integrity value is computed and the result decrypted once more on the token before it
/// is returned.
pub fn encrypt(
    engine: &Engine,
    caller: &Caller,
    name: &str,
    plaintext: &[u8],
    aad: &[u8],
    integrity: bool,
) -> Result<XksSealed, EngineError> {
    let accept = |key: &KeyRecord| xks_spec(key).map(drop);
    let aad_for_version = |v: u32| xks_aad(aad, &metadata_of(v));
    let sealed = engine.aead_encrypt(
        caller,
        Aead {
            action: "xks.encrypt",
            key: KeyRef::Name(name),
            accept: &accept,
            aad_for_version: &aad_for_version,
        },
        plaintext,
        None,
        integrity,
    )?;
    let metadata = metadata_of(sealed.version);
    let integrity = integrity
        .then(|| xks_integrity(aad, &metadata, &sealed.iv, &sealed.ciphertext, &sealed.tag));
    Ok(XksSealed {
        ciphertext: sealed.ciphertext,
        iv: sealed.iv,
        tag: sealed.tag,
        metadata,
        integrity,
    })
}

/// Decrypt with the version `metadata` names (any version that may still decrypt).
#[allow(clippy::too_many_arguments)]
pub fn decrypt(
    engine: &Engine,
    caller: &Caller,
    name: &str,
    ciphertext: &[u8],
    iv: &[u8],
    tag: &[u8],
    aad: &[u8],
    metadata: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EngineError> {
    let version = match metadata.strip_prefix(METADATA_TAG.as_slice()) {
        Some(v) if v.len() == 4 => Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        _ => None,
    };
    // Not a ciphertext of this key (its metadata names no version of it, or the IV is not
    // one kms makes): the same answer as a ciphertext that does not decrypt.
    let accept = |key: &KeyRecord| {
        xks_spec(key)?;
        match version {
            Some(v) if key.version(v).is_some() && iv.len() == 12 => Ok(()),
            _ => Err(EngineError::Envelope(EnvelopeError::Truncated)),
        }
    };
    let aad_for_version = |v: u32| xks_aad(aad, &metadata_of(v));
    let (plaintext, _) = engine.aead_decrypt(
        caller,
        Aead {
            action: "xks.decrypt",
            key: KeyRef::Name(name),
            accept: &accept,
            aad_for_version: &aad_for_version,
        },
        ciphertext,
        iv,
        tag,
        Some(version.unwrap_or_default()),
    )?;
    Ok(plaintext)
}

/// GetHealthStatus: every configured token asked, now (`ACTIVE` or `UNAVAILABLE`).
pub fn health(engine: &Engine, caller: &Caller) -> Result<Vec<TokenLiveness>, EngineError> {
    engine.token_liveness(caller, "xks.health")
}

/// A token's healthStatus.
pub fn health_status(t: &TokenLiveness) -> &'static str {
    if t.live {
        "ACTIVE"
    } else {
        "UNAVAILABLE"
    }
}

/// XKS keys are AES-256 (keySpec AES_256); any other type cannot serve.
fn xks_spec(key: &KeyRecord) -> Result<&'static str, EngineError> {
    if key.key_type != KeyType::Aes256 {
        return Err(EngineError::denied(
            Refusal::NotSupported,
            format!(
                "key '{}' is {}; an external key store serves aes-256 keys only",
                key.name, key.key_type
            ),
        ));
    }
    if key
        .versions
        .iter()
        .all(|v| v.state == VersionState::Pending)
    {
        return Err(EngineError::denied(
            Refusal::KeyState,
            format!("key '{}' has no active version", key.name),
        ));
    }
    Ok("AES_256")
}
