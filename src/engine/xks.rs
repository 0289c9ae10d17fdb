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

use super::policy::authorize_key;
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
            self.check_grant(caller, name, None, OffsetDateTime::now_utc())?;
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
        self.audited(caller, "xks.encrypt", Some(name), |note| {
            let key = self.inventory.key(name)?;
            xks_spec(&key)?;
            let now = OffsetDateTime::now_utc();
            // What the key cannot do is InvalidKeyUsage whoever asks; then the grant.
            authorize_key(&key, Operation::Encrypt, None, now)?;
            let version = self.authorize_use(caller, &key, Operation::Encrypt, None, now, note)?;
            note.key_version = Some(version.version);
            let mut metadata = METADATA_TAG.to_vec();
            metadata.extend_from_slice(&version.version.to_be_bytes());
            let gcm_aad = xks_aad(aad, &metadata)?;
            let iv: [u8; 12] = rand::random();
            let mut sealed = self.on_version(note, &key, version, |t, id| {
                t.aes_gcm_encrypt(id, &iv, &gcm_aad, plaintext)
            })?;
            if sealed.len() < 16 {
                return Err(EngineError::Incomplete(
                    "the token returned no GCM tag".into(),
                ));
            }
            let tag_bytes = sealed.split_off(sealed.len() - 16);
            let mut tag = [0u8; 16];
            tag.copy_from_slice(&tag_bytes);
            let integrity = if integrity {
                let value = xks_integrity(aad, &metadata, &iv, &sealed, &tag);
                // The spec: compute the value, then prove the ciphertext decrypts, then answer.
                authorize_key(&key, Operation::Decrypt, Some(version.version), now)?;
                let mut whole = sealed.clone();
                whole.extend_from_slice(&tag);
                let back = self.on_version(note, &key, version, |t, id| {
                    t.aes_gcm_decrypt(id, &iv, &gcm_aad, &whole)
                })?;
                if back.as_slice() != plaintext {
                    return Err(EngineError::Incomplete(
                        "the ciphertext did not decrypt back to the plaintext on the token".into(),
                    ));
                }
                Some(value)
            } else {
                None
            };
            note.detail = Some(format!(
                "encrypted {} bytes (AAD {} bytes){}",
                plaintext.len(),
                aad.len(),
                if integrity.is_some() {
                    ", integrity value checked by decrypting"
                } else {
                    ""
                }
            ));
            Ok(XksSealed {
                ciphertext: sealed,
                iv,
                tag,
                metadata,
                integrity,
            })
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
        self.audited(caller, "xks.decrypt", Some(name), |note| {
            let key = self.inventory.key(name)?;
            xks_spec(&key)?;
            let now = OffsetDateTime::now_utc();
            let version = match metadata.strip_prefix(METADATA_TAG.as_slice()) {
                Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                _ => return Err(EngineError::Envelope(EnvelopeError::Truncated)),
            };
            if key.version(version).is_none() {
                return Err(EngineError::Envelope(EnvelopeError::Truncated));
            }
            authorize_key(&key, Operation::Decrypt, Some(version), now)?;
            let v =
                self.authorize_use(caller, &key, Operation::Decrypt, Some(version), now, note)?;
            note.key_version = Some(v.version);
            let iv: [u8; 12] = iv
                .try_into()
                .map_err(|_| EngineError::Envelope(EnvelopeError::Truncated))?;
            let gcm_aad = xks_aad(aad, metadata)?;
            let mut whole = ciphertext.to_vec();
            whole.extend_from_slice(tag);
            let plaintext = self.on_version(note, &key, v, |t, id| {
                t.aes_gcm_decrypt(id, &iv, &gcm_aad, &whole)
            })?;
            note.detail = Some(format!(
                "decrypted {} bytes with v{}",
                plaintext.len(),
                v.version
            ));
            Ok(plaintext)
        })
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
