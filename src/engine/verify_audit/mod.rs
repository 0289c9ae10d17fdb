//! Verifying the audit trail offline: the hash chain from genesis, every checkpoint and the
//! chain of checkpoints, their records in the trail, the audit key on the HSM, and grant
//! provenance. Names the first record that was altered, removed or inserted.
//!
//! `chain.rs` the hash chain and what a checkpoint signed, `audit_key.rs` the audit key's public
//! half (from the HSM, a given PEM, a backup copy or the inventory's copy), `trail.rs` the
//! verification itself: checkpoints, their chain and records, uncovered records, grant
//! provenance.

mod audit_key;
mod chain;
mod trail;

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
pub(super) struct Problems(Vec<(i64, String)>);

impl Problems {
    pub(super) fn push(&mut self, seq: i64, text: String) {
        self.0.push((seq, text));
    }

    /// In record order (the order found for the same record), each text once.
    pub(super) fn into_sorted(mut self) -> Vec<String> {
        self.0.sort_by_key(|(seq, _)| *seq);
        let mut seen = std::collections::HashSet::new();
        self.0
            .into_iter()
            .filter_map(|(_, t)| seen.insert(t.clone()).then_some(t))
            .collect()
    }
}
