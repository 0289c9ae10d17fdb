//! The audit hash chain checked from its start, and the first record a checkpoint signed that
//! differs from the chain.

use std::collections::HashMap;

use super::Problems;
use crate::engine::checkpoint::*;
use crate::inventory::{AuditCheckpoint, StoredRecord, GENESIS};

/// Check the hash chain from `start` on; returns each record's hash as the chain has it (for an
/// unhashed record, the hash of its content) by sequence number.
pub(super) fn check_chain(
    chain: &[StoredRecord],
    start: i64,
    p: &mut Problems,
) -> HashMap<i64, String> {
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
pub(super) fn first_changed(c: &AuditCheckpoint, hashes: &HashMap<i64, String>) -> Option<i64> {
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
