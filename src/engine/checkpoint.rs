//! Tamper evidence for the audit trail: checkpoints over the hash-chain head, signed by the
//! audit key (EC P-384, generated inside the HSM as key `kms-audit`). Their offline
//! verification is in `verify_audit/`.
//!
//! Checkpoints are chained too: each one signs its own id, the id and head hash of the
//! checkpoint before it, and the hashes of the records it covers since that one (so that a
//! record altered later, with the chain after it recomputed, can be named). Each checkpoint is
//! also an audit record (`audit.checkpoint`, written in the same transaction), so it is in the
//! hash chain and travels to the log server with the records; a removed checkpoint row leaves
//! its record behind, and a removed record breaks the chain.

use std::collections::HashMap;

use base64::Engine as _;
use sha2::{Digest, Sha384};
use time::OffsetDateTime;

use super::policy::require_role;
use super::{Caller, CallerKind, Engine, EngineError};
use crate::inventory::{AuditCheckpoint, AuditFilter, Outcome, GENESIS};
use crate::model::{KeyType, Role};

/// The inventory name of the audit key.
pub const AUDIT_KEY: &str = "kms-audit";

/// The audit actions of read-only commands. They log in to no token, so they sign no
/// checkpoint at their end; `audit verify` does not count them against `checkpoint_every`.
pub(crate) const READ_ACTIONS: &[&str] = &[
    "access.list",
    "access.review",
    "access.show",
    "audit.public-key",
    "audit.read",
    "audit.ship-status",
    "audit.verify",
    "backup.status",
    "card.list",
    "card.status",
    "grant.list",
    "inventory.reconcile",
    "inventory.verify",
    "key.compromise-status",
    "key.dispose-list",
    "key.dispose-show",
    "key.history",
    "key.list",
    "key.public",
    "key.show",
    "key.verify",
    "principal.list",
    "principal.show",
    "report.legacy",
    "report.rotation",
    "token.list",
];

/// The action of the audit record every checkpoint leaves in the trail.
pub const CHECKPOINT_ACTION: &str = "audit.checkpoint";

/// The actor of the KMS's own records.
pub(super) const SYSTEM_ACTOR: &str = "kms";

/// At most this many record hashes are kept with a checkpoint (the newest ones it covers).
pub(super) const COVERED_MAX: i64 = 4096;

/// Hex digits of each record hash kept with a checkpoint: enough to find the altered record.
pub(super) const COVERED_DIGITS: usize = 16;

/// The text a format-1 checkpoint signs (SHA-384, ECDSA P-384). Only rows written before
/// schema 5 have it; they are still verified.
pub fn checkpoint_message(seq: i64, head_hash: &str, at: &str) -> Vec<u8> {
    format!("kms-audit-checkpoint/v1\nseq: {seq}\nhead: {head_hash}\nat: {at}\n").into_bytes()
}

/// The text a checkpoint signs (format 2): its id, the record it covers and that record's hash,
/// the time, the checkpoint before it (id 0 and `GENESIS` for the first) and the SHA-384 (hex)
/// of its `covered` list.
pub fn checkpoint_message_v2(
    id: i64,
    seq: i64,
    head_hash: &str,
    at: &str,
    prev_id: i64,
    prev_head_hash: &str,
    covered_digest: &str,
) -> Vec<u8> {
    format!(
        "kms-audit-checkpoint/v2\nid: {id}\nseq: {seq}\nhead: {head_hash}\nat: {at}\n\
         prev: {prev_id}\nprev_head: {prev_head_hash}\ncovered: {covered_digest}\n"
    )
    .into_bytes()
}

/// The text checkpoint row `c` must carry a signature over, by its format.
pub(super) fn signed_text(c: &AuditCheckpoint) -> Option<Vec<u8>> {
    let at = crate::inventory::fmt_time(c.at);
    match c.format {
        1 => Some(checkpoint_message(c.seq, &c.head_hash, &at)),
        2 => Some(checkpoint_message_v2(
            c.id,
            c.seq,
            &c.head_hash,
            &at,
            c.prev_checkpoint_id?,
            c.prev_head_hash.as_deref()?,
            &covered_digest(c.covered.as_deref().unwrap_or("")),
        )),
        _ => None,
    }
}

pub(super) fn covered_digest(covered: &str) -> String {
    hex::encode(Sha384::digest(covered.as_bytes()))
}

/// `FROM:h,h,…`: the first digits of the hash of each record from `from` to `to`.
pub(super) fn covered_list(from: i64, to: i64, hashes: &[(i64, Option<String>)]) -> String {
    let by_seq: HashMap<i64, &str> = hashes
        .iter()
        .filter_map(|(s, h)| h.as_deref().map(|h| (*s, h)))
        .collect();
    let parts: Vec<&str> = (from..=to)
        .map(|s| by_seq.get(&s).map_or("-", |h| prefix(h)))
        .collect();
    format!("{from}:{}", parts.join(","))
}

pub(super) fn prefix(hash: &str) -> &str {
    hash.get(..COVERED_DIGITS).unwrap_or(hash)
}

/// What an `audit.checkpoint` record says about its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CheckpointDetail {
    pub(super) id: i64,
    pub(super) seq: i64,
    pub(super) head: String,
    pub(super) signature: String,
}

/// The detail of the `audit.checkpoint` record: every field the checkpoint signs, its key
/// version and its signature (base64), so the log server's copy can be checked on its own.
#[allow(clippy::too_many_arguments)]
pub(super) fn checkpoint_detail(
    id: i64,
    seq: i64,
    head: &str,
    at: &str,
    prev_id: i64,
    prev_head: &str,
    covered: &str,
    key_version: u32,
    signature: &[u8],
) -> String {
    format!(
        "checkpoint={id} seq={seq} head={head} at={at} prev={prev_id} prev_head={prev_head} \
         covered={covered} key={AUDIT_KEY} key_version={key_version} signature={}",
        base64::engine::general_purpose::STANDARD.encode(signature)
    )
}

pub(super) fn parse_detail(detail: &str) -> Option<CheckpointDetail> {
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for token in detail.split_whitespace() {
        let (k, v) = token.split_once('=')?;
        fields.insert(k, v);
    }
    Some(CheckpointDetail {
        id: fields.get("checkpoint")?.parse().ok()?,
        seq: fields.get("seq")?.parse().ok()?,
        head: (*fields.get("head")?).to_owned(),
        signature: (*fields.get("signature")?).to_owned(),
    })
}

/// Whether a record is the `audit.checkpoint` record of a checkpoint (written by the KMS).
pub(super) fn is_checkpoint_record(action: &str, actor: &str, detail: Option<&str>) -> bool {
    action == CHECKPOINT_ACTION && actor == SYSTEM_ACTOR && detail.is_some()
}

/// A checkpoint that was made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointReport {
    pub seq: i64,
    pub head_hash: String,
}

impl Engine {
    /// The caller the KMS itself acts as for its own housekeeping (audit key, checkpoints).
    pub(super) fn system_caller(&self) -> Caller {
        Caller {
            tally: Default::default(),
            actor: SYSTEM_ACTOR.into(),
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
    ///
    /// Several nodes write one shared trail, and a node killed before its count reaches
    /// `checkpoint_every` takes its count with it. So every `checkpoint_every / 8` records of
    /// its own, a node also looks at the shared trail, and signs once half of `checkpoint_every`
    /// records of any node are past the last checkpoint.
    pub(crate) fn checkpoint_if_due(&self) {
        use std::sync::atomic::Ordering;
        let every = self.config.audit.checkpoint_every;
        let n = self.since_checkpoint.fetch_add(1, Ordering::Relaxed) + 1;
        let look_every = (every / 8).max(1);
        let due = n >= every || (n.is_multiple_of(look_every) && self.shared_trail_due(every));
        if due {
            // Not re-entrantly: creating the audit key inside `checkpoint()` writes records too.
            let busy = self.checkpointing.try_lock().is_err();
            if busy {
                return;
            }
            self.since_checkpoint.store(0, Ordering::Relaxed);
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "audit checkpoint failed");
            }
        }
    }

    /// Whether at least half of `every` records (of any node) follow the last checkpoint.
    fn shared_trail_due(&self, every: u64) -> bool {
        let Ok(Some((head, _))) = self.inventory.audit_head() else {
            return false;
        };
        let covered = match self.inventory.last_checkpoint() {
            Ok(Some(c)) => c.seq,
            Ok(None) => 0,
            Err(_) => return false,
        };
        (head - covered).max(0) as u64 >= (every / 2).max(1)
    }

    /// Whether checkpoint `c` covers the chain up to record `head`: it signed `head`, or the
    /// only record after the one it signed is its own `audit.checkpoint` record.
    pub(super) fn covers_head(&self, c: &AuditCheckpoint, head: i64) -> bool {
        if head == c.seq {
            return true;
        }
        if c.format < 2 {
            return false;
        }
        let after = self.inventory.audit_rows_filtered(&AuditFilter {
            after_seq: Some(c.seq),
            limit: 2,
            ..Default::default()
        });
        match after.as_deref() {
            Ok([only]) => {
                only.seq == head
                    && is_checkpoint_record(
                        &only.entry.action,
                        &only.entry.actor,
                        only.entry.detail.as_deref(),
                    )
                    && only
                        .entry
                        .detail
                        .as_deref()
                        .and_then(parse_detail)
                        .is_some_and(|d| d.id == c.id)
            }
            _ => false,
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
                        .is_some_and(|(s, _)| self.covers_head(&c, s))
            });
        if !recent {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "audit checkpoint failed");
            }
        }
    }

    /// The end of a CLI command: sign a checkpoint (as [`Engine::checkpoint_on_exit`]) only when
    /// this process already holds the audit key's token logged in. A command that logged in to
    /// no token (every read-only command) never logs in just for the checkpoint: SoftHSM2
    /// rewrites its token file at every login, and a command killed during that rewrite empties
    /// the token. Its records are covered by the next checkpoint (the next command that logs in,
    /// or the service's timer); `audit verify` does not count read records against
    /// `checkpoint_every`.
    pub fn checkpoint_at_command_end(&self) {
        // The audit key's token, or, before the audit key exists, the key token it will be
        // created on (the first checkpoint creates it).
        let token = match self.inventory.key(AUDIT_KEY) {
            Ok(k) => k.current_version().map(|v| v.token.clone()),
            Err(crate::inventory::InventoryError::NoSuchKey(_)) => {
                Some(self.config.key_token.clone())
            }
            Err(_) => None,
        };
        let logged_in = token.is_some_and(|token| self.hsm.is_open(&token));
        if logged_in {
            self.checkpoint_on_exit();
        }
    }

    /// Sign the current chain head with the audit key (created on the key token on first use),
    /// chained to the previous checkpoint, and record the checkpoint in the trail.
    pub fn checkpoint(&self) -> Result<Option<CheckpointReport>, EngineError> {
        let _one = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        let key = match self.inventory.key(AUDIT_KEY) {
            Ok(k) => k,
            Err(crate::inventory::InventoryError::NoSuchKey(_)) => {
                let req = super::CreateKey::internal(
                    AUDIT_KEY,
                    KeyType::EcP384,
                    "sign,verify",
                    "signs audit-trail checkpoints",
                    "keep while any checkpoint it signed must stay verifiable",
                )?;
                self.create_key(&self.system_caller(), req)?
            }
            Err(e) => return Err(e.into()),
        };
        let version = key.current_version().ok_or_else(|| {
            EngineError::Incomplete(format!("the audit key '{AUDIT_KEY}' has no active version"))
        })?;
        let token = self.token_for(version)?;
        // Another process (the service and a CLI command) may store a checkpoint between our
        // reading the last one and storing ours: then ours is prepared and signed again.
        for _ in 0..5 {
            let Some((seq, head_hash)) = self.inventory.audit_head()? else {
                return Ok(None);
            };
            let last = self.inventory.last_checkpoint()?;
            if last.as_ref().is_some_and(|c| self.covers_head(c, seq)) {
                return Ok(None);
            }
            let (prev_id, prev_head, from) = match &last {
                Some(c) => (c.id, c.head_hash.clone(), c.seq + 1),
                None => (0, GENESIS.to_owned(), self.inventory.chain_start()?),
            };
            let from = from.max(seq - COVERED_MAX + 1);
            let covered = covered_list(from, seq, &self.inventory.audit_hashes(from, seq)?);
            let digest_of_covered = covered_digest(&covered);
            let id = self.inventory.next_checkpoint_id()?;
            let now = OffsetDateTime::now_utc();
            let at = crate::inventory::fmt_time(now);
            let message = checkpoint_message_v2(
                id,
                seq,
                &head_hash,
                &at,
                prev_id,
                &prev_head,
                &digest_of_covered,
            );
            let digest: [u8; 48] = Sha384::digest(&message).into();
            let signature = token.sign_ecdsa_p384(&version.object_id, &digest)?;
            let detail = checkpoint_detail(
                id,
                seq,
                &head_hash,
                &at,
                prev_id,
                &prev_head,
                &digest_of_covered,
                version.version,
                &signature,
            );
            let entry = self.entry(
                &self.system_caller(),
                CHECKPOINT_ACTION,
                None,
                None,
                Outcome::Ok,
                Some(detail),
            );
            let checkpoint = AuditCheckpoint {
                id,
                seq,
                head_hash: head_hash.clone(),
                at: now,
                key_name: AUDIT_KEY.into(),
                key_version: version.version,
                signature,
                format: 2,
                prev_checkpoint_id: Some(prev_id),
                prev_head_hash: Some(prev_head),
                covered: Some(covered),
            };
            if self
                .inventory
                .add_checkpoint(&checkpoint, &entry)
                .map_err(EngineError::AuditFailed)?
                .is_some()
            {
                return Ok(Some(CheckpointReport { seq, head_hash }));
            }
        }
        Err(EngineError::Incomplete(
            "no audit checkpoint: other processes kept storing checkpoints meanwhile".into(),
        ))
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
}
