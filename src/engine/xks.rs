//! The AWS KMS External Key Store (XKS) operations. The XKS routes (`server/xks.rs`) parse and
//! authenticate (SigV4); everything else happens here, in the one engine: the SigV4 credential's
//! principal is an ordinary caller, each call needs an ordinary A9 grant on the key, uses the
//! key's current version through the same failover path, and is one audit record whose reason
//! carries AWS's request metadata.
//!
//! Ciphertexts: AES-256-GCM on the token with a fresh 12-byte IV; the GCM additional data is the
//! spec's `u16be(len aad) || aad || u8(len metadata) || metadata`. `ciphertextMetadata` is
//! `"kmsv" || u32be(version)`: it names the key version that encrypted (so rotation keeps old
//! ciphertexts readable) and, being in the AAD, cannot be changed without the tag failing.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::aead::{Aead, KeyRef};
use super::policy::check_grant;
use super::{Caller, CallerKind, Engine, EngineError, Refusal};
use crate::envelope::EnvelopeError;
use crate::inventory::{KeyRecord, Outcome};
use crate::model::{KeyType, Operation, Role, VersionState};

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

/// One token's health for GetHealthStatus.
pub struct XksTokenHealth {
    pub id: String,
    pub model: String,
    /// `ACTIVE` or `UNAVAILABLE`.
    pub status: &'static str,
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

impl Engine {
    /// The caller an authenticated XKS credential acts as: its principal, which must exist, be
    /// enabled, be an application and be allowed from `source`. A refusal is audited.
    pub fn xks_caller(
        &self,
        principal: &str,
        source: &str,
        reason: String,
    ) -> Result<Caller, EngineError> {
        let found = match self.inventory.principal(principal) {
            Ok(p) => Some(p),
            Err(crate::inventory::InventoryError::NoSuchPrincipal(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let refusal = match &found {
            None => Some((
                Refusal::UnknownPrincipal,
                format!("the XKS credential's principal '{principal}' is not registered (`kms principal add {principal} --role application`)"),
            )),
            Some(p) if p.disabled_at.is_some() => Some((
                Refusal::PrincipalDisabled,
                format!("principal '{}' is disabled", p.name),
            )),
            Some(p) if p.role != Role::Application => Some((
                Refusal::WrongRole,
                format!("principal '{}' is {}, not an application: XKS credentials act as applications", p.name, p.role),
            )),
            Some(p) if !super::access::source_allowed(&p.allowed_networks, source) => Some((
                Refusal::SourceNotAllowed,
                format!(
                    "principal '{}' may connect only from {}, not from {source}",
                    p.name,
                    p.allowed_networks.join(", ")
                ),
            )),
            Some(_) => None,
        };
        let caller = Caller {
            actor: principal.to_owned(),
            host: source.to_owned(),
            reason: Some(reason),
            kind: CallerKind::Principal {
                role: Role::Application,
            },
            role: Some(Role::Application),
            os_user: None,
            cert_fingerprint: None,
        };
        if let Some((why, message)) = refusal {
            let entry = self.entry(
                &caller,
                "xks.identify",
                None,
                None,
                Outcome::Denied,
                Some(message.clone()),
            );
            self.inventory
                .append_audit(&entry)
                .map_err(EngineError::AuditFailed)?;
            return Err(EngineError::denied(why, message));
        }
        Ok(caller)
    }

    /// A request that failed SigV4 (or named no key store of this proxy), on the record.
    pub fn xks_refused(
        &self,
        source: &str,
        access_key: &str,
        what: &str,
    ) -> Result<(), EngineError> {
        let caller = Caller {
            actor: format!("xks:{}", access_key.chars().take(32).collect::<String>()),
            host: source.to_owned(),
            reason: None,
            kind: CallerKind::Principal {
                role: Role::Application,
            },
            role: None,
            os_user: None,
            cert_fingerprint: None,
        };
        let entry = self.entry(
            &caller,
            "xks.authenticate",
            None,
            None,
            Outcome::Denied,
            Some(what.to_owned()),
        );
        self.inventory
            .append_audit(&entry)
            .map(drop)
            .map_err(EngineError::AuditFailed)
    }

    /// GetKeyMetadata: the key's spec, usage and whether it can serve now.
    pub fn xks_key_metadata(&self, caller: &Caller, name: &str) -> Result<XksKeyInfo, EngineError> {
        self.audited(caller, "xks.metadata", Some(name), |note| {
            let key = self.inventory.key(name)?;
            check_grant(
                &self.inventory,
                caller,
                name,
                None,
                OffsetDateTime::now_utc(),
            )?;
            let key_spec = xks_spec(&key)?;
            let mut usage = Vec::new();
            if key.usage.contains(Operation::Encrypt) {
                usage.push("ENCRYPT");
            }
            if key.usage.contains(Operation::Decrypt) {
                usage.push("DECRYPT");
            }
            let enabled = key.disposed_at.is_none()
                && key.current_version().is_some()
                && key
                    .expires
                    .is_none_or(|d| crate::clock::lifecycle_now().date() <= d);
            note.key_version = key.current_version().map(|v| v.version);
            note.detail = Some(format!(
                "{key_spec} {} {}",
                usage.join(","),
                if enabled { "ENABLED" } else { "DISABLED" }
            ));
            Ok(XksKeyInfo {
                key_spec,
                usage,
                enabled,
            })
        })
    }

    /// Encrypt: AES-256-GCM on the token under the key's current version. With `integrity`, the
    /// spec's integrity value is computed and the result decrypted once more on the token before
    /// it is returned.
    pub fn xks_encrypt(
        &self,
        caller: &Caller,
        name: &str,
        plaintext: &[u8],
        aad: &[u8],
        integrity: bool,
    ) -> Result<XksSealed, EngineError> {
        let accept = |key: &KeyRecord| xks_spec(key).map(drop);
        let aad_for_version = |v: u32| xks_aad(aad, &metadata_of(v));
        let sealed = self.aead_encrypt(
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
    pub fn xks_decrypt(
        &self,
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
        let accept = |key: &KeyRecord| {
            xks_spec(key)?;
            match version {
                Some(v) if key.version(v).is_some() && iv.len() == 12 => Ok(()),
                _ => Err(EngineError::Envelope(EnvelopeError::Truncated)),
            }
        };
        let aad_for_version = |v: u32| xks_aad(aad, &metadata_of(v));
        let (plaintext, _) = self.aead_decrypt(
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

    /// GetHealthStatus: every configured token asked to do something that needs a live,
    /// logged-in session (random CKA_ID from its RNG and a search), now.
    pub fn xks_health(&self, caller: &Caller) -> Result<Vec<XksTokenHealth>, EngineError> {
        self.audited(caller, "xks.health", None, |note| {
            let names: Vec<String> = self.hsm.names().map(str::to_owned).collect();
            let mut out = Vec::new();
            for name in names {
                let model = self
                    .hsm
                    .describe(&name)
                    .map(|d| format!("{} {}", d.manufacturer, d.model))
                    .unwrap_or_else(|_| "unknown".into());
                let ok = self
                    .hsm
                    .token(&name)
                    .and_then(|t| t.new_object_id())
                    .is_ok();
                out.push(XksTokenHealth {
                    id: name,
                    model,
                    status: if ok { "ACTIVE" } else { "UNAVAILABLE" },
                });
            }
            note.detail = Some(
                out.iter()
                    .map(|t| format!("{}={}", t.id, t.status))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            Ok(out)
        })
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
