//! Tamper evidence for the audit trail: checkpoints over the hash-chain head, signed by the
//! audit key (EC P-384, generated inside the HSM as key `kms-audit`), and offline verification
//! of the whole chain and every checkpoint from the audit public key (p384).

use std::sync::Mutex;

use p384::ecdsa::signature::Verifier as _;
use p384::pkcs8::DecodePublicKey as _;
use sha2::{Digest, Sha384};
use time::OffsetDateTime;

use super::policy::require_role;
use super::{Caller, CallerKind, Engine, EngineError};
use crate::inventory::{AuditCheckpoint, GENESIS};
use crate::model::{Classification, KeyType, Role};

/// The inventory name of the audit key.
pub const AUDIT_KEY: &str = "kms-audit";

/// Only one checkpoint at a time per process.
static CHECKPOINTING: Mutex<()> = Mutex::new(());

/// The text a checkpoint signs (SHA-384, ECDSA P-384).
pub fn checkpoint_message(seq: i64, head_hash: &str, at: &str) -> Vec<u8> {
    format!("kms-audit-checkpoint/v1\nseq: {seq}\nhead: {head_hash}\nat: {at}\n").into_bytes()
}

/// A checkpoint that was made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointReport {
    pub seq: i64,
    pub head_hash: String,
}

/// The result of `kms audit verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditVerification {
    pub records: usize,
    pub checkpoints: usize,
    pub valid_checkpoints: usize,
    /// Every problem found, in sequence order; the first one names the first record that was
    /// altered, removed or inserted.
    pub problems: Vec<String>,
    pub ok: bool,
}

impl Engine {
    /// The caller the KMS itself acts as for its own housekeeping (audit key, checkpoints).
    fn system_caller(&self) -> Caller {
        Caller {
            actor: "kms".into(),
            host: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            reason: Some("audit checkpoint key".into()),
            kind: CallerKind::System,
            role: Some(Role::SecurityOfficer),
            os_user: None,
            cert_fingerprint: None,
        }
    }

    /// Sign a checkpoint if `checkpoint_every` records or `checkpoint_secs` have passed since the
    /// last one. Failures are logged: the records themselves are already durable and chained.
    pub(crate) fn checkpoint_if_due(&self) {
        use std::sync::atomic::Ordering;
        let n = self.since_checkpoint.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.config.audit.checkpoint_every {
            self.since_checkpoint.store(0, Ordering::Relaxed);
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "audit checkpoint failed");
            }
        }
    }

    /// Sign a checkpoint now unless the last one is recent and covers the head (used at the
    /// end of a CLI command and by the service's timer and shutdown).
    pub fn checkpoint_on_exit(&self) {
        let recent = self
            .inventory
            .last_checkpoint()
            .ok()
            .flatten()
            .is_some_and(|c| {
                let age = OffsetDateTime::now_utc() - c.at;
                age.whole_seconds() < self.config.audit.checkpoint_secs as i64
                    && self
                        .inventory
                        .audit_head()
                        .ok()
                        .flatten()
                        .is_some_and(|(s, _)| s == c.seq)
            });
        if !recent {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "audit checkpoint failed");
            }
        }
    }

    /// Sign the current chain head with the audit key (created on the key token on first use).
    pub fn checkpoint(&self) -> Result<Option<CheckpointReport>, EngineError> {
        let _one = CHECKPOINTING.lock().unwrap_or_else(|p| p.into_inner());
        let key = match self.inventory.key(AUDIT_KEY) {
            Ok(k) => k,
            Err(crate::inventory::InventoryError::NoSuchKey(_)) => {
                let mut req = super::CreateKey::new(
                    AUDIT_KEY,
                    KeyType::EcP384,
                    "kms",
                    Classification::Restricted,
                    "sign,verify"
                        .parse()
                        .map_err(|e: crate::model::ParseError| {
                            EngineError::InvalidInput(e.to_string())
                        })?,
                );
                req.purpose = "signs audit-trail checkpoints; used by kms itself only".into();
                req.handling = "never granted to anyone; generated and kept on the HSM".into();
                req.disposal = "keep while any checkpoint it signed must stay verifiable".into();
                self.create_key(&self.system_caller(), req)?
            }
            Err(e) => return Err(e.into()),
        };
        let Some((seq, head_hash)) = self.inventory.audit_head()? else {
            return Ok(None);
        };
        if self
            .inventory
            .last_checkpoint()?
            .is_some_and(|c| c.seq == seq)
        {
            return Ok(None);
        }
        let version = key.current_version().ok_or_else(|| {
            EngineError::Incomplete(format!("the audit key '{AUDIT_KEY}' has no active version"))
        })?;
        let token = self.token_for(version)?;
        let now = OffsetDateTime::now_utc();
        let at = crate::inventory::fmt_time(now);
        let digest: [u8; 48] = Sha384::digest(checkpoint_message(seq, &head_hash, &at)).into();
        let signature = token.sign_ecdsa_p384(&version.object_id, &digest)?;
        self.inventory.add_checkpoint(&AuditCheckpoint {
            id: 0,
            seq,
            head_hash: head_hash.clone(),
            at: now,
            key_name: AUDIT_KEY.into(),
            key_version: version.version,
            signature,
        })?;
        Ok(Some(CheckpointReport { seq, head_hash }))
    }

    /// `kms audit checkpoint`: an officer or auditor asks for a checkpoint now.
    pub fn checkpoint_for(&self, caller: &Caller) -> Result<Option<CheckpointReport>, EngineError> {
        require_role(
            &self.inventory,
            caller,
            &[Role::SecurityOfficer, Role::Auditor],
            "sign audit checkpoints",
        )?;
        self.checkpoint()
    }

    /// How many verifications found the trail altered (for the metrics).
    pub fn audit_verify_failures(&self) -> i64 {
        self.inventory.audit_state("verify_failures").unwrap_or(0)
    }

    /// The audit public key (PEM), for keeping outside the KMS and verifying offline.
    pub fn audit_public_key(&self, caller: &Caller) -> Result<String, EngineError> {
        self.audited(caller, "audit.public-key", Some(AUDIT_KEY), |_| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer, Role::Auditor],
                "read the audit key",
            )?;
            let key = self.inventory.key(AUDIT_KEY)?;
            let der = key
                .current_version()
                .and_then(|v| v.public_key.clone())
                .ok_or_else(|| {
                    EngineError::InvalidInput("the audit key has no public key yet".into())
                })?;
            der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &der)
                .map_err(|e| EngineError::InvalidInput(e.to_string()))
        })
    }

    /// Check the whole chain and every checkpoint. `public_key_pem` is the audit key kept
    /// outside the KMS; without it the key recorded in the inventory is used.
    pub fn verify_audit(
        &self,
        caller: &Caller,
        public_key_pem: Option<&str>,
    ) -> Result<AuditVerification, EngineError> {
        require_role(
            &self.inventory,
            caller,
            &[Role::SecurityOfficer, Role::Auditor],
            "verify the audit trail",
        )?;
        let chain = self.inventory.audit_chain()?;
        let checkpoints = self.inventory.checkpoints()?;
        let mut problems = Vec::new();
        let mut prev_hash = GENESIS.to_owned();
        let mut expected_seq = chain.first().map(|r| r.seq).unwrap_or(1);
        let mut hashes = std::collections::BTreeMap::new();
        let mut started = false;
        for r in &chain {
            let Some(stored_hash) = r.hash.as_deref() else {
                if started {
                    problems.push(format!("record {} has no hash: inserted or altered", r.seq));
                }
                expected_seq = r.seq + 1;
                continue;
            };
            if !started {
                started = true;
                prev_hash = r.prev_hash.clone().unwrap_or_else(|| GENESIS.to_owned());
                if r.seq != 1 && r.prev_hash.as_deref() == Some(GENESIS) && r.seq != expected_seq {
                    problems.push(format!("records before {} were removed", r.seq));
                }
                if r.seq > 1 && r.prev_hash.as_deref() == Some(GENESIS) && chain[0].seq == r.seq {
                    problems.push(format!("records 1..{} were removed", r.seq - 1));
                }
            }
            if r.seq != expected_seq {
                problems.push(format!(
                    "record(s) {}..{} were removed (the chain jumps from {} to {})",
                    expected_seq,
                    r.seq - 1,
                    expected_seq - 1,
                    r.seq
                ));
            }
            if r.prev_hash.as_deref() != Some(prev_hash.as_str()) {
                problems.push(format!(
                    "record {} does not follow its predecessor (inserted, or the record before it was removed or altered)",
                    r.seq
                ));
            }
            let recomputed = r.compute_hash(r.prev_hash.as_deref().unwrap_or(GENESIS));
            if recomputed != stored_hash {
                problems.push(format!(
                    "record {} was altered (its content no longer matches its hash)",
                    r.seq
                ));
            }
            hashes.insert(r.seq, stored_hash.to_owned());
            prev_hash = stored_hash.to_owned();
            expected_seq = r.seq + 1;
        }
        let head = chain.last().map(|r| r.seq).unwrap_or(0);
        let key_der = match public_key_pem {
            Some(pem) => Some(crate::softverify::spki_from_pem(pem.as_bytes())?),
            None => self
                .inventory
                .key(AUDIT_KEY)
                .ok()
                .and_then(|k| k.versions.first().and_then(|v| v.public_key.clone())),
        };
        let vk = key_der
            .as_deref()
            .and_then(|d| p384::ecdsa::VerifyingKey::from_public_key_der(d).ok());
        let mut valid = 0;
        for c in &checkpoints {
            let at = crate::inventory::fmt_time(c.at);
            let msg = checkpoint_message(c.seq, &c.head_hash, &at);
            let sig_ok = match (&vk, p384::ecdsa::Signature::from_der(&c.signature)) {
                (Some(vk), Ok(sig)) => vk.verify(&msg, &sig).is_ok(),
                _ => false,
            };
            if !sig_ok {
                problems.push(format!(
                    "checkpoint {} (record {}) has no valid signature from the audit key",
                    c.id, c.seq
                ));
                continue;
            }
            match hashes.get(&c.seq) {
                Some(h) if *h == c.head_hash => valid += 1,
                Some(_) => problems.push(format!(
                    "record {} differs from what checkpoint {} signed: the chain up to it was rewritten",
                    c.seq, c.id
                )),
                None if c.seq > head => problems.push(format!(
                    "records {}..{} were removed from the end (checkpoint {} signed record {})",
                    head + 1,
                    c.seq,
                    c.id,
                    c.seq
                )),
                None => problems.push(format!("record {} signed by checkpoint {} is missing", c.seq, c.id)),
            }
        }
        problems.dedup();
        if let Some(first) = problems.first() {
            tracing::warn!(
                problems = problems.len(),
                first = %first,
                "audit trail verification FAILED: the trail was altered; keep the file for investigation and compare with the log server's copy"
            );
            let failures = self.inventory.audit_state("verify_failures").unwrap_or(0);
            let _ = self
                .inventory
                .set_audit_state("verify_failures", failures + 1);
        }
        Ok(AuditVerification {
            records: chain.len(),
            checkpoints: checkpoints.len(),
            valid_checkpoints: valid,
            ok: problems.is_empty(),
            problems,
        })
    }
}
