//! The audit key's public half: read from the HSM without logging in (the object must be
//! labelled as the audit key), printed for keeping outside the KMS, and, when its token is
//! gone, taken from a backup copy or the inventory's copy; the keys checkpoints are checked with.

use std::collections::{BTreeSet, HashMap};

use p384::pkcs8::DecodePublicKey as _;

use super::Problems;
use crate::engine::checkpoint::*;
use crate::engine::policy::require_role;
use crate::engine::{Caller, Engine, EngineError};
use crate::inventory::AuditCheckpoint;
use crate::model::{KeyType, Role};

impl Engine {
    /// Version `version` of the audit key as the HSM has it (SPKI DER), read from the object
    /// the inventory names, and the inventory's copy of it. The object must be labelled as the
    /// audit key: an inventory pointed at another key's object is refused.
    fn audit_key_from_hsm(&self, version: u32) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
        let key = self
            .inventory
            .key(AUDIT_KEY)
            .map_err(|e| format!("the audit key '{AUDIT_KEY}' is not in the inventory ({e})"))?;
        let v = key.version(version).ok_or_else(|| {
            format!("the audit key '{AUDIT_KEY}' has no version {version} in the inventory")
        })?;
        // Read without logging in (the public half is a public object): verifying the trail and
        // printing the audit key never log in to a token (SoftHSM2 rewrites its token file at
        // every login; a command killed during that rewrite empties the token).
        let (serial, der, label) = self
            .hsm
            .public_key_without_login(&v.token, &v.object_id, KeyType::EcP384)
            .map_err(|e| e.to_string())?;
        if serial != v.token_serial {
            return Err(format!(
                "token '{}' is now the token with serial {serial}, but {AUDIT_KEY} v{version} was created on serial {}; restore the token entry in the config",
                v.token, v.token_serial
            ));
        }
        if !label.starts_with(&format!("kms:{AUDIT_KEY}:")) {
            return Err(format!(
                "the HSM object {} that the inventory names as {AUDIT_KEY} v{version} is labelled '{label}', not as the audit key: the inventory was pointed at another key",
                v.object_id.to_hex(),
            ));
        }
        Ok((der, v.public_key.clone()))
    }

    /// The audit public key (PEM), for keeping outside the KMS and verifying offline. It is
    /// read from the HSM, never from the inventory's copy.
    pub fn audit_public_key(&self, caller: &Caller) -> Result<String, EngineError> {
        self.audited(caller, "audit.public-key", Some(AUDIT_KEY), |_| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer, Role::Auditor],
                "read the audit key",
            )?;
            let key = self.inventory.key(AUDIT_KEY)?;
            let version = key.current_version().ok_or_else(|| {
                EngineError::InvalidInput("the audit key has no public key yet".into())
            })?;
            let (der, stored) = self
                .audit_key_from_hsm(version.version)
                .map_err(EngineError::Incomplete)?;
            if stored.as_deref() != Some(der.as_slice()) {
                tracing::warn!(
                    key = AUDIT_KEY,
                    version = version.version,
                    "the audit key in the inventory is not the one on the HSM: the inventory's copy was replaced; printing the HSM's"
                );
            }
            der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &der)
                .map_err(|e| EngineError::InvalidInput(e.to_string()))
        })
    }

    /// The keys to check checkpoints with, by audit-key version: the one kept outside the KMS
    /// (`public_key_pem`) for every version, or else each version as the HSM has it.
    pub(super) fn checkpoint_keys(
        &self,
        public_key_pem: Option<&str>,
        checkpoints: &[AuditCheckpoint],
        p: &mut Problems,
        notes: &mut Vec<String>,
    ) -> Result<HashMap<u32, Option<p384::ecdsa::VerifyingKey>>, EngineError> {
        let mut versions: BTreeSet<u32> = checkpoints.iter().map(|c| c.key_version).collect();
        if let Ok(k) = self.inventory.key(AUDIT_KEY) {
            versions.extend(k.current_version().map(|v| v.version));
        }
        let mut keys = HashMap::new();
        if let Some(pem) = public_key_pem {
            let der = crate::softverify::spki_from_pem(pem.as_bytes())?;
            let vk = p384::ecdsa::VerifyingKey::from_public_key_der(&der).ok();
            if vk.is_none() {
                p.push(
                    0,
                    "the given audit public key is not an EC P-384 key".into(),
                );
            }
            for v in versions {
                keys.insert(v, vk);
            }
            return Ok(keys);
        }
        for v in versions {
            let vk = match self.audit_key_from_hsm(v) {
                Ok((der, stored)) => {
                    if stored.as_deref() != Some(der.as_slice()) {
                        p.push(
                            0,
                            format!(
                                "the audit key in the inventory is not the one on the HSM ({AUDIT_KEY} v{v}): its copy in the inventory was replaced; checkpoints are checked with the HSM's key"
                            ),
                        );
                    }
                    p384::ecdsa::VerifyingKey::from_public_key_der(&der).ok()
                }
                Err(e) if !self.audit_token_gone(v) => {
                    // The token answers but the key is not as recorded (missing, or another
                    // key's object): that is a finding, never a reason to look elsewhere.
                    p.push(
                        0,
                        format!(
                            "checkpoints signed by {AUDIT_KEY} v{v} cannot be checked: {e}; verify with --pubkey and the audit key kept outside the KMS"
                        ),
                    );
                    None
                }
                Err(e) => match self.audit_key_elsewhere(v) {
                    Ok((der, source)) => {
                        tracing::warn!(key = AUDIT_KEY, version = v, error = %e, "the audit key's token is unavailable");
                        notes.push(format!(
                            "the token holding {AUDIT_KEY} v{v} is unavailable (`kms token list` says why and how to restore it); checkpoints signed by it were checked with its public half {source}"
                        ));
                        p384::ecdsa::VerifyingKey::from_public_key_der(&der).ok()
                    }
                    Err(why) => {
                        p.push(
                            0,
                            format!(
                                "checkpoints signed by {AUDIT_KEY} v{v} cannot be checked: {e}; {why}; verify with --pubkey and the audit key kept outside the KMS"
                            ),
                        );
                        None
                    }
                },
            };
            keys.insert(v, vk);
        }
        Ok(keys)
    }

    /// Whether the token that holds version `version` of the audit key cannot be opened at all
    /// (not found — e.g. its SoftHSM2 file was emptied — or its module does not load).
    fn audit_token_gone(&self, version: u32) -> bool {
        use crate::hsm::HsmError as H;
        let Some(v) = self
            .inventory
            .key(AUDIT_KEY)
            .ok()
            .and_then(|k| k.version(version).cloned())
        else {
            return false;
        };
        // Asked without logging in: the token's info says whether it is there.
        matches!(
            self.hsm.describe(&v.token),
            Err(H::TokenNotFound { .. } | H::ModuleLoad { .. } | H::ModuleInit { .. })
        )
    }

    /// Version `version` of the audit key's public half when its own token is gone: from a
    /// backup copy the inventory records (read from that token; the copy must carry the audit
    /// key's label and agree with the inventory), else the copy the inventory stored when the
    /// key was created. Returns the SPKI DER and where it came from.
    fn audit_key_elsewhere(&self, version: u32) -> Result<(Vec<u8>, String), String> {
        let key = self
            .inventory
            .key(AUDIT_KEY)
            .map_err(|e| format!("the audit key is not in the inventory ({e})"))?;
        let v = key
            .version(version)
            .ok_or_else(|| format!("the inventory has no version {version} of the audit key"))?;
        let stored = v.public_key.clone();
        let label = format!("kms:{AUDIT_KEY}:");
        for c in &v.copies {
            // Without logging in, like the audit key's own token above.
            let Ok((serial, der, copy_label)) =
                self.hsm
                    .public_key_without_login(&c.token, &c.object_id, KeyType::EcP384)
            else {
                continue;
            };
            if serial != c.token_serial || !copy_label.starts_with(&label) {
                continue;
            }
            if stored.as_deref().is_some_and(|s| s != der.as_slice()) {
                return Err(format!(
                    "its backup copy on token '{}' (serial {}) differs from the inventory's copy: one of them was replaced",
                    c.token, c.token_serial
                ));
            }
            return Ok((
                der,
                format!(
                    "read from its backup copy on token '{}' (serial {})",
                    c.token, c.token_serial
                ),
            ));
        }
        match stored {
            Some(der) => Ok((
                der,
                "recorded in the inventory when the key was created (kept by kms, not read from an HSM: for proof independent of this host, verify with --pubkey and the audit key kept outside the KMS)".to_owned(),
            )),
            None => Err("no backup copy answers and the inventory holds no copy of its public half".to_owned()),
        }
    }
}
