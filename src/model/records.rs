//! Plain records the inventory stores and returns. No key material and no PIN is ever among them.

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Date, OffsetDateTime};

use crate::duration::HumanDuration;
use crate::model::{
    Classification, KeyOrigin, KeyType, ObjectId, OperationSet, SignatureScheme, VersionState,
};

time::serde::format_description!(iso_date, Date, "[year]-[month]-[day]");

/// One key of the inventory (A8): every field of the key-management procedure.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    /// Stable inventory ID (UUID), never reused.
    pub id: String,
    /// Unique, human-chosen name.
    pub name: String,
    pub key_type: KeyType,
    /// "symmetric" or "asymmetric", derived from the type, as the procedure lists it.
    pub kind: &'static str,
    pub owner: String,
    pub classification: Classification,
    /// Acceptable usage: allowed operations …
    pub usage: OperationSet,
    /// … and the purpose they serve.
    pub purpose: String,
    pub handling: String,
    pub disposal: String,
    #[serde(with = "iso_date::option")]
    pub expires: Option<Date>,
    pub rotate_every: HumanDuration,
    pub labels: BTreeMap<String, String>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// After a rotation, how long the old version still decrypts / unwraps / verifies before it
    /// is destroyed (0: destroyed at once).
    pub reencrypt_window_secs: u64,
    /// Originator usage period of each version (NIST SP 800-57): no new sign / encrypt / wrap
    /// after it. `None`: until rotation.
    pub protect_for: Option<HumanDuration>,
    /// Recipient usage period of each version: no decrypt / unwrap / verify after it either.
    pub process_for: Option<HumanDuration>,
    /// Disposed of (tombstone): every version destroyed, the name never reused.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disposed_at: Option<OffsetDateTime>,
    /// The one signature scheme the key signs with (asymmetric keys; fixed at creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureScheme>,
    /// A legacy (3DES) key created with `--allow-legacy-encrypt`: it may still encrypt and MAC.
    pub allow_legacy_encrypt: bool,
    /// Generated on the token, imported wrapped (BYOK) or adopted from a token.
    pub origin: KeyOrigin,
    /// An adopted key kms found weak (extractable in the clear or not sensitive), accepted by an
    /// officer for this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weak_reason: Option<String>,
    /// A legacy key being migrated: the AES key its data is re-encrypted to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrated_to: Option<String>,
    pub versions: Vec<KeyVersion>,
}

impl KeyRecord {
    /// The scheme this key signs with: the one recorded at creation, else its type's default.
    /// `None` for keys that make no signatures.
    pub fn signature_scheme(&self) -> Option<SignatureScheme> {
        self.signature
            .or_else(|| self.key_type.signature_schemes().first().copied())
    }

    /// The newest active version: the one new operations use.
    pub fn current_version(&self) -> Option<&KeyVersion> {
        self.versions
            .iter()
            .filter(|v| v.state == VersionState::Active)
            .max_by_key(|v| v.version)
    }

    pub fn version(&self, version: u32) -> Option<&KeyVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// When the current version is due for rotation.
    pub fn rotation_due(&self) -> Option<OffsetDateTime> {
        if self.key_type.is_legacy() {
            // A legacy key is overdue from the day it was made: its data must move to AES.
            return Some(self.created_at);
        }
        self.current_version().and_then(|v| {
            v.activated_at
                .unwrap_or(v.created_at)
                .checked_add(self.rotate_every.to_time())
        })
    }
}

/// One version of a key: which token holds it and under which CKA_ID.
#[derive(Debug, Clone, Serialize)]
pub struct KeyVersion {
    pub version: u32,
    /// Config name of the token (e.g. "primary").
    pub token: String,
    pub token_label: String,
    pub token_serial: String,
    /// CKA_ID on that token (hex).
    pub object_id: ObjectId,
    pub state: VersionState,
    /// SubjectPublicKeyInfo DER, for asymmetric keys.
    #[serde(skip)]
    pub public_key: Option<Vec<u8>>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub activated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub destroyed_at: Option<OffsetDateTime>,
    /// Why a version is not active yet (e.g. its backup copy failed); `None` once active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// Backup copies of this version on other tokens.
    pub copies: Vec<KeyCopy>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deactivated_at: Option<OffsetDateTime>,
    /// A deactivated version is destroyed on every token after this.
    #[serde(with = "time::serde::rfc3339::option")]
    pub destroy_after: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub compromised_at: Option<OffsetDateTime>,
}

/// A backup copy of one key version: unwrapped on another token under the same CKA_ID.
#[derive(Debug, Clone, Serialize)]
pub struct KeyCopy {
    pub token: String,
    pub token_label: String,
    pub token_serial: String,
    pub object_id: ObjectId,
    /// The key ceremony (pairing) whose key-encryption key carried it.
    pub pair_id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub copied_at: OffsetDateTime,
    /// Last restore drill that proved the copy works.
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    /// Last failed drill, if it is more recent than the last success.
    #[serde(with = "time::serde::rfc3339::option")]
    pub drill_failed_at: Option<OffsetDateTime>,
    pub drill_error: Option<String>,
}

impl KeyCopy {
    /// The copy's last drill failed (and no later drill passed).
    pub fn drill_failing(&self) -> bool {
        self.drill_failed_at.is_some()
    }
}

/// One key ceremony: `from` token's SO made a trusted key-encryption key that also lives on `to`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupPair {
    pub id: i64,
    pub from_token: String,
    pub from_serial: String,
    pub to_token: String,
    pub to_serial: String,
    /// CKA_ID of the key-encryption key (the same on both tokens).
    pub kek_id: ObjectId,
    /// CKA_ID of the RSA transport pair on `to` (and its trusted public key on `from`).
    pub transport_id: ObjectId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// A key about to be created, with its first version.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub key_type: KeyType,
    pub owner: String,
    pub classification: Classification,
    pub usage: OperationSet,
    pub purpose: String,
    pub handling: String,
    pub disposal: String,
    pub expires: Option<Date>,
    pub rotate_every: HumanDuration,
    pub labels: BTreeMap<String, String>,
    pub created_by: String,
    pub reencrypt_window_secs: u64,
    pub protect_for: Option<HumanDuration>,
    pub process_for: Option<HumanDuration>,
    pub signature: Option<SignatureScheme>,
    pub allow_legacy_encrypt: bool,
    pub origin: KeyOrigin,
    pub weak_reason: Option<String>,
}

/// Outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// How many audit records were written for one caller (shared by the caller's clones and by
/// the entries made for it): a door compares it before and after serving a message to know
/// whether any record came of it. Explicit state passed along, not a thread-local: the record
/// may be written on another thread (the group-commit writer).
#[derive(Debug, Clone, Default)]
pub struct RecordTally(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl RecordTally {
    pub fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
    pub fn add(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One audit row: time, who, from where, what, on which key, why, and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub host: String,
    pub action: String,
    pub key_name: Option<String>,
    pub key_version: Option<u32>,
    pub reason: Option<String>,
    pub outcome: Outcome,
    /// What changed, or why it failed. Never key material or a PIN.
    pub detail: Option<String>,
    /// The actor's role at the time.
    pub role: Option<String>,
    /// At the console: the operating-system user running `kms`.
    pub os_user: Option<String>,
    /// Over the service: SHA-256 of the client certificate.
    pub cert_fingerprint: Option<String>,
    /// Stable error or refusal code, when the outcome is not ok.
    pub code: Option<String>,
    /// For changes: `{"before": …, "after": …}` of the metadata.
    pub diff: Option<serde_json::Value>,
    /// The node that wrote the record (`name@site`), when kms runs as a configured node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The tally of the caller the record is written for, counted when the row is inserted.
    #[serde(skip)]
    pub tally: Option<RecordTally>,
}

/// An audit row as stored, with its sequence number and its place in the hash chain.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// SHA-384 (hex) of the previous record; 96 zeros for the first.
    pub prev_hash: Option<String>,
    /// SHA-384 (hex) over `prev_hash` and this record's canonical form.
    pub hash: Option<String>,
}

/// A signed checkpoint over the chain head.
#[derive(Debug, Clone, Serialize)]
pub struct AuditCheckpoint {
    pub id: i64,
    pub seq: i64,
    pub head_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub key_name: String,
    pub key_version: u32,
    #[serde(skip)]
    pub signature: Vec<u8>,
    /// What the signature covers: 1 (rows from before schema 5) signs seq, head and time; 2 also
    /// signs the checkpoint's own id, its predecessor (id and head hash) and `covered`.
    pub format: u32,
    /// The checkpoint before this one (0 for the first), format 2.
    pub prev_checkpoint_id: Option<i64>,
    /// That checkpoint's head hash (`GENESIS` for the first), format 2.
    pub prev_head_hash: Option<String>,
    /// The records signed since the predecessor, to name the first one altered later:
    /// `FROM:h,h,…` with the first 16 hex digits of each record's hash from record FROM on
    /// (`-` for a record that was missing or unhashed), format 2.
    #[serde(skip)]
    pub covered: Option<String>,
}

/// Filters of `kms audit list`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub key_name: Option<String>,
    pub actor: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Only rows after this sequence number (shipping, paging).
    pub after_seq: Option<i64>,
    pub limit: u32,
}

/// Filters of `kms key list`.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub owner: Option<String>,
    pub classification: Option<Classification>,
}

/// A registered principal. Applications are identified by the SHA-256 fingerprint of their
/// client certificate; the certificate's key is never stored.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: crate::model::Role,
    pub cert_fingerprint: Option<String>,
    pub cert_subject: Option<String>,
    /// SubjectPublicKeyInfo DER of the key that signs this person's approvals (its private
    /// half lives on a token the person holds).
    #[serde(skip)]
    pub approval_key: Option<Vec<u8>>,
    /// Where that key lives (RFC 7512 PKCS#11 URI), for the record.
    pub approval_key_uri: Option<String>,
    /// Source networks (CIDR) the service accepts this principal from; empty = any.
    pub allowed_networks: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    pub disabled_by: Option<String>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A grant: a principal may perform `ops` on one key between `not_before` and `not_after`.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub id: String,
    pub principal: String,
    pub key_name: String,
    pub ops: crate::model::GrantOps,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub ticket: String,
    pub justification: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    /// The access request this grant was approved from (none for break-glass grants).
    pub request_id: Option<String>,
    /// Re-certification deadline: a grant not re-certified by then lapses.
    #[serde(with = "time::serde::rfc3339::option")]
    pub review_due: Option<OffsetDateTime>,
    /// Made directly by a security officer outside the approval workflow.
    pub break_glass: bool,
}

impl Grant {
    /// In force at `now`: not revoked, started, not expired, review not lapsed.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none()
            && self.not_before <= now
            && now < self.not_after
            && self.review_due.is_none_or(|due| now < due)
    }

    /// Lapsed because its review deadline passed (while otherwise valid).
    pub fn review_lapsed(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none()
            && now < self.not_after
            && self.review_due.is_some_and(|due| due <= now)
    }
}

/// State of an access request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Pending,
    Verified,
    Approved,
    Denied,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Verified => "verified",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
        }
    }
}

/// An access request (A9): who wants what on which key, for how long, why.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRequest {
    pub id: String,
    pub requester: String,
    pub grantee: String,
    pub key_name: String,
    pub key_id: String,
    pub ops: crate::model::GrantOps,
    pub duration: HumanDuration,
    pub ticket: String,
    pub justification: String,
    pub state: RequestState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub grant_id: Option<String>,
}

/// One signed step (verify, approve, deny, recertify) with the exact bytes that were signed.
#[derive(Debug, Clone, Serialize)]
pub struct SignedStep {
    pub subject: String,
    pub step: String,
    pub signer: String,
    #[serde(skip)]
    pub message: Vec<u8>,
    #[serde(skip)]
    pub signature: Vec<u8>,
    #[serde(skip)]
    pub public_key: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub signed_at: OffsetDateTime,
    pub note: Option<String>,
}

/// A grant to record.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// Chosen before recording (see `new_grant_id`), so the audit record can name it.
    pub id: String,
    pub principal: String,
    pub key_name: String,
    pub ops: crate::model::GrantOps,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub ticket: String,
    pub justification: String,
    pub created_by: String,
    pub request_id: Option<String>,
    pub review_due: Option<OffsetDateTime>,
    pub break_glass: bool,
}

/// Filters of `kms grant list`.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub principal: Option<String>,
    pub key_name: Option<String>,
    /// Include revoked and expired grants.
    pub all: bool,
}
