//! `kms audit verify`: the whole chain, every checkpoint, the chain of checkpoints and their
//! records, records no checkpoint covers, and every grant's record of creation.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use p384::ecdsa::signature::Verifier as _;

use super::chain::{check_chain, first_changed};
use super::{AuditVerification, Problems};
use crate::engine::checkpoint::*;
use crate::engine::policy::require_role;
use crate::engine::{Caller, Engine, EngineError};
use crate::inventory::{AuditCheckpoint, GENESIS};
use crate::model::Role;

impl Engine {
    /// How many verifications found the trail altered (for the metrics).
    pub fn audit_verify_failures(&self) -> i64 {
        self.inventory.audit_state("verify_failures").unwrap_or(0)
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
            .filter(|r| !crate::engine::checkpoint::READ_ACTIONS.contains(&r.action.as_str()))
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
