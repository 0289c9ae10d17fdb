//! Verifying the audit trail offline: the hash chain from genesis, every checkpoint and the
//! chain of checkpoints, their records in the trail, the audit key on the HSM, and grant
//! provenance. Names the first record that was altered, removed or inserted.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use p384::ecdsa::signature::Verifier as _;
use p384::pkcs8::DecodePublicKey as _;

use super::checkpoint::*;
use super::policy::require_role;
use super::{Caller, Engine, EngineError};
use crate::inventory::{AuditCheckpoint, StoredRecord, GENESIS};
use crate::model::{KeyType, Role};

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
    /// How the checks were made where it matters (e.g. the audit key read from its backup copy
    /// or from the inventory because its token is unavailable). Not problems.
    pub notes: Vec<String>,
}

/// Problems found, each with the record it is about (for the order of the report).
#[derive(Default)]
struct Problems(Vec<(i64, String)>);

impl Problems {
    fn push(&mut self, seq: i64, text: String) {
        self.0.push((seq, text));
    }

    /// In record order (the order found for the same record), each text once.
    fn into_sorted(mut self) -> Vec<String> {
        self.0.sort_by_key(|(seq, _)| *seq);
        let mut seen = std::collections::HashSet::new();
        self.0
            .into_iter()
            .filter_map(|(_, t)| seen.insert(t.clone()).then_some(t))
            .collect()
    }
}

/// Check the hash chain from `start` on; returns each record's hash as the chain has it (for an
/// unhashed record, the hash of its content) by sequence number.
fn check_chain(chain: &[StoredRecord], start: i64, p: &mut Problems) -> HashMap<i64, String> {
    let mut hashes = HashMap::new();
    let mut prev_hash = GENESIS.to_owned();
    let mut expected_seq = start;
    let mut first = true;
    // The previous record, when it had no hash of its own.
    let mut prev_unhashed: Option<i64> = None;
    for r in chain {
        if r.seq < start {
            // Written before migration 4: never hashed.
            if r.hash.is_some() {
                p.push(
                    r.seq,
                    format!(
                        "record {} is hashed but lies before the start of the chain (record {start}): where the chain starts was changed",
                        r.seq
                    ),
                );
            }
            continue;
        }
        if r.seq != expected_seq {
            if first {
                p.push(
                    start,
                    format!(
                        "records {}..{} were removed (the chain starts at record {start}; its first record now is {})",
                        start,
                        r.seq - 1,
                        r.seq
                    ),
                );
            } else {
                p.push(
                    expected_seq,
                    format!(
                        "record(s) {}..{} were removed (the chain jumps from {} to {})",
                        expected_seq,
                        r.seq - 1,
                        expected_seq - 1,
                        r.seq
                    ),
                );
            }
            prev_unhashed = None;
        }
        let claimed_prev = r.prev_hash.as_deref();
        if claimed_prev != Some(prev_hash.as_str()) {
            match prev_unhashed {
                Some(u) => p.push(
                    u,
                    format!(
                        "record {u} was altered (record {} was chained to other content)",
                        r.seq
                    ),
                ),
                None if first && r.seq == start => p.push(
                    r.seq,
                    format!(
                        "record {} does not start the chain (its prev_hash is not the genesis value): the records before it were removed or altered",
                        r.seq
                    ),
                ),
                None => p.push(
                    r.seq,
                    format!(
                        "record {} does not follow its predecessor (inserted, or the record before it was removed or altered)",
                        r.seq
                    ),
                ),
            }
        }
        let hash = match r.hash.as_deref() {
            Some(stored) => {
                if r.compute_hash(claimed_prev.unwrap_or(GENESIS)) != stored {
                    p.push(
                        r.seq,
                        format!(
                            "record {} was altered (its content no longer matches its hash)",
                            r.seq
                        ),
                    );
                }
                stored.to_owned()
            }
            None => {
                p.push(
                    r.seq,
                    format!("record {} has no hash: altered or inserted", r.seq),
                );
                r.compute_hash(claimed_prev.unwrap_or(&prev_hash))
            }
        };
        prev_unhashed = r.hash.is_none().then_some(r.seq);
        hashes.insert(r.seq, hash.clone());
        prev_hash = hash;
        expected_seq = r.seq + 1;
        first = false;
    }
    hashes
}

/// The first record whose hash differs from what checkpoint `c` signed for it (`c.covered`).
fn first_changed(c: &AuditCheckpoint, hashes: &HashMap<i64, String>) -> Option<i64> {
    let (from, list) = c.covered.as_deref()?.split_once(':')?;
    let from: i64 = from.parse().ok()?;
    list.split(',')
        .zip(from..)
        .find(|(signed, seq)| {
            !signed.is_empty()
                && *signed != "-"
                && hashes.get(seq).map(|h| prefix(h)) != Some(*signed)
        })
        .map(|(_, seq)| seq)
}

impl Engine {
    /// How many verifications found the trail altered (for the metrics).
    pub fn audit_verify_failures(&self) -> i64 {
        self.inventory.audit_state("verify_failures").unwrap_or(0)
    }

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
    fn checkpoint_keys(
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

    /// Check the whole chain, every checkpoint, the chain of checkpoints and their records.
    /// `public_key_pem` is the audit key kept outside the KMS; without it the audit key is read
    /// from the HSM (and compared with the inventory's copy).
    pub fn verify_audit(
        &self,
        caller: &Caller,
        public_key_pem: Option<&str>,
    ) -> Result<AuditVerification, EngineError> {
        self.audited(caller, "audit.verify", None, |note| {
            let (v, unchecked) = self.unchecked_when_unavailable(|| {
                require_role(
                    &self.inventory,
                    caller,
                    &[Role::SecurityOfficer, Role::Auditor],
                    "verify the audit trail",
                )?;
                self.verify_trail(public_key_pem)
            });
            let mut v = v?;
            if unchecked {
                v.notes.push(
                    "inventory rows were read without their integrity check: no token could give the integrity key's public half (restore the token, then run `kms inventory verify`)"
                        .into(),
                );
            }
            note.detail = Some(match v.problems.first() {
                None => format!(
                    "{} records, {} checkpoints: intact",
                    v.records, v.checkpoints
                ),
                Some(first) => {
                    format!("NOT intact ({} problems); first: {first}", v.problems.len())
                }
            });
            Ok(v)
        })
    }

    fn verify_trail(&self, public_key_pem: Option<&str>) -> Result<AuditVerification, EngineError> {
        let chain = self.inventory.audit_chain()?;
        let checkpoints = self.inventory.checkpoints()?;
        let start = self.inventory.chain_start()?;
        let mut p = Problems::default();
        let hashes = check_chain(&chain, start, &mut p);
        let head = chain.last().map(|r| r.seq).unwrap_or(0);
        let mut notes = Vec::new();
        let keys = self.checkpoint_keys(public_key_pem, &checkpoints, &mut p, &mut notes)?;

        // The checkpoints' own records in the trail, by checkpoint id.
        let mut recorded: HashMap<i64, (i64, CheckpointDetail)> = HashMap::new();
        for r in &chain {
            if !is_checkpoint_record(&r.action, &r.actor, r.detail.as_deref()) {
                continue;
            }
            match r.detail.as_deref().and_then(parse_detail) {
                Some(d) => {
                    if let Some((other, _)) = recorded.get(&d.id) {
                        p.push(
                            r.seq,
                            format!(
                                "records {other} and {} both record checkpoint {}",
                                r.seq, d.id
                            ),
                        );
                    }
                    recorded.insert(d.id, (r.seq, d));
                }
                None => p.push(
                    r.seq,
                    format!(
                        "record {} is a checkpoint record that cannot be read",
                        r.seq
                    ),
                ),
            }
        }

        // Checkpoint ids that no longer have a row: gaps in the ids, and checkpoints whose record
        // remains. Each with the record to sort its problem by.
        let mut removed: Vec<(i64, i64)> = Vec::new();
        let mut expected_id = 1;
        for c in &checkpoints {
            if c.id > expected_id {
                if c.id - expected_id > 10_000 {
                    p.push(
                        c.seq,
                        format!(
                            "checkpoints {expected_id}..{} were removed (the checkpoint ids jump to {})",
                            c.id - 1,
                            c.id
                        ),
                    );
                } else {
                    removed.extend((expected_id..c.id).map(|id| (id, c.seq)));
                }
            }
            expected_id = expected_id.max(c.id + 1);
        }
        let rows: HashMap<i64, &AuditCheckpoint> = checkpoints.iter().map(|c| (c.id, c)).collect();
        for (id, (_, d)) in &recorded {
            if !rows.contains_key(id) && !removed.iter().any(|(r, _)| r == id) {
                removed.push((*id, d.seq));
            }
        }
        let removed_ids: BTreeSet<i64> = removed.iter().map(|(id, _)| *id).collect();
        for (id, next_seq) in &removed {
            match recorded.get(id) {
                Some((record, d)) => p.push(
                    d.seq.min(*next_seq),
                    format!(
                        "checkpoint {id} was removed (it signed record {}; its audit record {record} remains)",
                        d.seq
                    ),
                ),
                None => p.push(*next_seq, format!("checkpoint {id} was removed")),
            }
        }

        let mut valid = 0;
        let mut prev: Option<&AuditCheckpoint> = None;
        let mut last_good_seq = start - 1;
        let mut rewritten_from: Option<i64> = None;
        for c in &checkpoints {
            let pred = prev.replace(c);
            if c.key_name != AUDIT_KEY {
                p.push(
                    c.seq,
                    format!(
                        "checkpoint {} names key '{}', not the audit key",
                        c.id, c.key_name
                    ),
                );
            }
            match c.format {
                2 => {
                    let (want_id, want_head) = pred
                        .map(|q| (q.id, q.head_hash.as_str()))
                        .unwrap_or((0, GENESIS));
                    let named = c.prev_checkpoint_id.unwrap_or(-1);
                    if named != want_id && !removed_ids.contains(&named) {
                        p.push(
                            c.seq,
                            format!(
                                "checkpoint {} is not chained to checkpoint {want_id} before it (it was signed after checkpoint {named}): checkpoints were removed or replaced",
                                c.id
                            ),
                        );
                    } else if named == want_id && c.prev_head_hash.as_deref() != Some(want_head) {
                        p.push(
                            c.seq,
                            format!(
                                "checkpoint {} signed another head for its predecessor checkpoint {want_id}: checkpoint {want_id} was replaced",
                                c.id
                            ),
                        );
                    }
                    match recorded.get(&c.id) {
                        None => p.push(
                            c.seq,
                            format!(
                                "checkpoint {} (over record {}) has no audit record: its record was removed",
                                c.id, c.seq
                            ),
                        ),
                        Some((record, d)) => {
                            let sig =
                                base64::engine::general_purpose::STANDARD.encode(&c.signature);
                            if d.seq != c.seq || d.head != c.head_hash || d.signature != sig {
                                p.push(
                                    *record,
                                    format!(
                                        "checkpoint {} does not match its audit record {record}: one of them was replaced",
                                        c.id
                                    ),
                                );
                            } else if *record <= c.seq {
                                p.push(
                                    *record,
                                    format!(
                                        "checkpoint {} is recorded in record {record}, before the record {} it signed",
                                        c.id, c.seq
                                    ),
                                );
                            }
                        }
                    }
                }
                1 if pred.is_some_and(|q| q.format >= 2) => p.push(
                    c.seq,
                    format!(
                        "checkpoint {} has the old unchained format but follows chained checkpoints: it was inserted",
                        c.id
                    ),
                ),
                _ => {}
            }
            let text = signed_text(c);
            let sig_ok = match (
                keys.get(&c.key_version).and_then(Option::as_ref),
                p384::ecdsa::Signature::from_der(&c.signature),
                text,
            ) {
                (Some(vk), Ok(sig), Some(text)) => vk.verify(&text, &sig).is_ok(),
                _ => false,
            };
            if !sig_ok {
                p.push(
                    c.seq,
                    format!(
                        "checkpoint {} (record {}) has no valid signature from the audit key",
                        c.id, c.seq
                    ),
                );
                continue;
            }
            match hashes.get(&c.seq) {
                Some(h) if *h == c.head_hash => {
                    valid += 1;
                    last_good_seq = last_good_seq.max(c.seq);
                }
                Some(_) => match rewritten_from {
                    Some(f) => p.push(
                        c.seq,
                        format!(
                            "record {} differs from what checkpoint {} signed: the chain was rewritten from record {f} on",
                            c.seq, c.id
                        ),
                    ),
                    None => match first_changed(c, &hashes) {
                        Some(f) => {
                            rewritten_from = Some(f);
                            p.push(
                                f,
                                format!(
                                    "record {f} differs from what checkpoint {} signed (over record {}): it was altered and the chain after it recomputed",
                                    c.id, c.seq
                                ),
                            );
                        }
                        None => {
                            let f = last_good_seq + 1;
                            rewritten_from = Some(f);
                            p.push(
                                f,
                                format!(
                                    "records {f}..{}: one of them differs from what checkpoint {} signed (over record {}): altered, and the chain after it recomputed",
                                    c.seq, c.id, c.seq
                                ),
                            );
                        }
                    },
                },
                None if c.seq < start => p.push(
                    c.seq,
                    format!(
                        "checkpoint {} signed record {}, which lies before the start of the chain (record {start}): where the chain starts was changed",
                        c.id, c.seq
                    ),
                ),
                None if c.seq > head => p.push(
                    head + 1,
                    format!(
                        "records {}..{} were removed from the end (checkpoint {} signed record {})",
                        head + 1,
                        c.seq,
                        c.id,
                        c.seq
                    ),
                ),
                None => p.push(
                    c.seq,
                    format!("record {} signed by checkpoint {} is missing", c.seq, c.id),
                ),
            }
        }

        // Records after the last checkpoint: at most `checkpoint_every` are normal. Records of
        // read-only commands do not count: those commands log in to no token, so they sign no
        // checkpoint at their end (issue 23), and a run of them is covered by the next one.
        let covered_to = checkpoints.iter().map(|c| c.seq).max();
        let uncovered: Vec<i64> = chain
            .iter()
            .filter(|r| !super::checkpoint::READ_ACTIONS.contains(&r.action.as_str()))
            .map(|r| r.seq)
            .filter(|s| *s >= start && covered_to.is_none_or(|c| *s > c))
            .collect();
        let every = self.config.audit.checkpoint_every;
        if let (Some(first), Some(last)) = (uncovered.first(), uncovered.last()) {
            if uncovered.len() as u64 > every {
                let what = match covered_to {
                    Some(c) => format!("after the last checkpoint (over record {c})"),
                    None => "and there is no checkpoint at all".into(),
                };
                p.push(
                    *first,
                    format!(
                        "{} records ({first}..{last}) are covered by no checkpoint {what}, more than checkpoint_every ({every}): checkpoints were removed or never made",
                        uncovered.len()
                    ),
                );
            }
        }

        // Every grant must have the record that created it (break-glass or an approval, both
        // written in the grant's own transaction): a grant without one was put into the inventory
        // from outside kms.
        let grants = self.inventory.grants(
            &crate::inventory::GrantFilter {
                all: true,
                ..Default::default()
            },
            time::OffsetDateTime::now_utc(),
        )?;
        for g in &grants {
            let created = chain.iter().any(|r| {
                matches!(r.action.as_str(), "grant.break-glass" | "access.approve")
                    && r.outcome == "ok"
                    && r.detail
                        .as_deref()
                        .is_some_and(|d| d.contains(&format!("grant {} ", g.id)))
            });
            if !created {
                p.push(
                    head + 1,
                    format!(
                        "grant {} ('{}' on '{}') has no record of its creation: it was put into the inventory outside kms",
                        g.id, g.principal, g.key_name
                    ),
                );
            }
        }

        let problems = p.into_sorted();
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
            notes,
        })
    }
}
