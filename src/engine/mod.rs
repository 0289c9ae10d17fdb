//! The one door. Every operation — from the CLI today, the service and the scheduler later — is a
//! method here that runs *authorize -> act on token -> record in inventory -> audit*. Nothing else
//! opens a PKCS#11 session or writes to the inventory.
//!
//! Audit is fail-closed: an operation whose audit row cannot be written returns an error and its
//! result (a signature, a plaintext) is dropped.

mod access;
mod aead;
mod anchor;
mod approval_keys;
mod audit;
mod audit_read;
mod backup;
mod backup_file;
mod caller;
mod card_loss;
mod cards;
mod checkpoint;
mod connections;
mod crypto;
mod door_records;
mod dual_control;
mod error;
mod failover;
mod import;
mod integrity;
mod keys;
mod legacy;
mod nodes;
mod owned_keys;
mod piv_uri;
mod policy;
mod principal_keys;
mod procedures;
mod reconcile;
mod requests;
mod secrets;
mod service_lock;
mod shipping;
mod tokens;
mod verify_audit;

pub use access::{ApprovalKey, NewGrantRequest, NewPrincipal};
pub use aead::{Aead, KeyRef, Sealed};
pub use backup::{BackupStatus, DrillReport, DrillResult, RestoreReport, SyncReport};
pub use backup_file::{ExportReport, ImportReport, SEAL_KEY};
pub use caller::{Caller, CallerKind};
pub use card_loss::CardLoss;
pub use cards::Enrolment;
pub use checkpoint::{checkpoint_message, CheckpointReport, AUDIT_KEY};
pub use connections::{Admission, REFUSAL_WINDOW};
pub use crypto::{IssuedDataKey, Signed, ToSign, VerifyOutcome};
pub use door_records::{Answered, DoorConnection, SignedRequest, RECORDED_EACH, SUMMARY_EVERY};
pub use dual_control::{CardAccess, Step};
pub use error::{EngineError, ErrorKind, Missing, Refusal};
pub use failover::TokenDown;
pub use import::{Adopt, IMPORT_KEY};
pub use integrity::{InventoryVerification, INTEGRITY_KEY};
pub use keys::{CreateKey, Import, OnCard, PlainKey, CARD_TOKEN};
pub use legacy::{LegacyKey, Mac};
pub use nodes::{NodeHealth, SINGLETONS};
pub use owned_keys::{KeyStatus, LabelChange, OwnedKey};
pub use piv_uri::PivUri;
pub use procedures::{
    disposal_message, CompromiseReport, DestructionReport, DisposalEvidence, DueReport,
    RepairReport, RotationReport, RotationStatus, UsageSummary,
};
pub use reconcile::{Finding, LeftoverRemoval, ReconcileReport};
pub use requests::{
    approval_message, recertify_message, RequestEvidence, RequestInput, StepEvidence,
};
pub use secrets::Revealed;
pub use service_lock::ServiceLock;
pub use shipping::{ShipReport, ShipStatus};
pub use tokens::{Health, TokenHealth, TokenLiveness, TokenStatus};
pub use verify_audit::AuditVerification;

use crate::config::Config;
use crate::hsm::Hsm;
use crate::inventory::Inventory;

/// The engine: configuration, the tokens and the inventory, behind one set of operations.
/// Keys kms itself uses (audit checkpoints, sealing offline backups): never granted to anyone.
pub(crate) fn internal_key(name: &str) -> bool {
    name == AUDIT_KEY || name == SEAL_KEY || name == INTEGRITY_KEY || name == IMPORT_KEY
}

pub struct Engine {
    config: Config,
    hsm: Hsm,
    inventory: Inventory,
    /// Audit records written by this process since its last checkpoint.
    since_checkpoint: std::sync::atomic::AtomicU64,
    /// Failures found by the last restore drill (copies, pairings, missing copies).
    drill_failures: std::sync::atomic::AtomicU64,
    /// Tokens out of service and when to probe them again.
    failover: failover::Failover,
    /// Inventory rows refused by their integrity check (shared with the installed checker).
    integrity_failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Rate limit of the audit rows for connections refused after the handshake.
    refusals: connections::RefusalThrottle,
    /// Whether this node holds the singleton lease (`nodes.rs`).
    singletons: std::sync::atomic::AtomicBool,
    /// The last change of the inventory's change log this process anchored on the token.
    anchored: std::sync::atomic::AtomicI64,
    /// The integrity key's tokens (name, serial) and CKA_ID (hex): where the anchor lives.
    anchor_at: std::sync::Mutex<Option<anchor::AnchorPlaces>>,
    /// One shipping run at a time (the service's loop and its shutdown run; `shipping.rs`).
    shipping: std::sync::Mutex<()>,
    /// Only one checkpoint at a time (`checkpoint.rs`; also keeps it from re-entering itself).
    checkpointing: std::sync::Mutex<()>,
    /// Denials per actor in the current minute (`audit.rs`, burst warnings).
    denials: audit::DenialCounts,
    /// Grants already proven to come from kms (`policy.rs`).
    proven_grants: policy::ProvenGrants,
    /// Whether `kms audit verify` lets rows be read unchecked now (`integrity.rs`).
    unchecked_when_unavailable: std::sync::Arc<integrity::UncheckedWhenUnavailable>,
}

impl Engine {
    /// Open the inventory and prepare the tokens (opened lazily, on first use).
    pub fn open(config: Config) -> Result<Engine, EngineError> {
        let inventory = match &config.postgres {
            None => Inventory::open(&config.inventory_path)?,
            Some(pg) => {
                let password = match &pg.password {
                    Some(source) => Some(source.resolve_kind("inventory", "PostgreSQL")?),
                    None => None,
                };
                Inventory::open_postgres(
                    &pg.url,
                    password.as_ref().map(secrecy::ExposeSecret::expose_secret),
                    &config.inventory_path,
                )?
            }
        };
        let hsm = Hsm::new(&config);
        let engine = Engine {
            config,
            hsm,
            inventory,
            since_checkpoint: std::sync::atomic::AtomicU64::new(0),
            drill_failures: std::sync::atomic::AtomicU64::new(0),
            failover: failover::Failover::default(),
            integrity_failures: Default::default(),
            refusals: connections::RefusalThrottle::default(),
            singletons: std::sync::atomic::AtomicBool::new(false),
            anchored: std::sync::atomic::AtomicI64::new(0),
            anchor_at: std::sync::Mutex::new(None),
            shipping: std::sync::Mutex::new(()),
            checkpointing: std::sync::Mutex::new(()),
            denials: Default::default(),
            proven_grants: Default::default(),
            unchecked_when_unavailable: Default::default(),
        };
        engine.setup_integrity(true)?;
        Ok(engine)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The token holding `version`, checked to be the very token the version was created on: a
    /// config entry re-pointed at another token is refused, not silently used.
    pub(crate) fn token_for(
        &self,
        version: &crate::inventory::KeyVersion,
    ) -> Result<std::sync::Arc<crate::hsm::Token>, EngineError> {
        if version.token == CARD_TOKEN {
            return Err(EngineError::denied(
                Refusal::NotSupported,
                format!(
                    "version {} lives on PIV card {} (slot {}), not on an HSM: only signing (and verification in software) apply to it",
                    version.version, version.token_serial, version.object_id
                ),
            ));
        }
        let token = self.hsm.token(&version.token)?;
        if token.serial() != version.token_serial {
            return Err(EngineError::Misconfigured(format!(
                "token '{}' is now the token with serial {} (label '{}'), but this key version was created on serial {} (label '{}'); restore the token entry in the config",
                version.token,
                token.serial(),
                token.label(),
                version.token_serial,
                version.token_label
            )));
        }
        Ok(token)
    }
}
