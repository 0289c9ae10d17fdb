//! Backup to a second token (A10): the key ceremony, copies of every key version, restore drills
//! and restore. The token mechanics are in `hsm/backup/`; this module decides what is copied
//! where, proves it, and keeps the inventory and the audit trail in step:
//! - `ceremony.rs`: pairing two tokens (`kms backup init`);
//! - `copy.rs`: making the wrapped copies (`kms backup sync`, `kms backup status`);
//! - `drill.rs`: restore drills (`kms backup verify`, the scheduled drill);
//! - `prove.rs`: proving a copy is the same key as its original, without a key leaving a token;
//! - `restore.rs`: rebuilding a token from the copies (`kms backup restore`).

mod ceremony;
mod copy;
mod drill;
mod prove;
mod restore;

pub(crate) use prove::drill;

use std::sync::Arc;

use serde::Serialize;

use super::{Engine, EngineError, Refusal};
use crate::hsm::Token;
use crate::inventory::BackupPair;
use crate::model::{Role, VersionState};

/// What `kms backup sync` did.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    /// key@version copied now.
    pub copied: Vec<String>,
    /// key@version that already had a copy on the backup token.
    pub already: usize,
    /// key@version whose copy failed, with why.
    pub failed: Vec<(String, String)>,
    /// Pending versions activated because their copy now exists.
    pub activated: Vec<String>,
    /// key@version whose token answered, this time too, that it can never be copied (not
    /// extractable, or a type the token cannot wrap), with the token's reason. Not a failure.
    pub never_copyable: Vec<(String, String)>,
}

/// What `kms backup status` shows besides every key's versions and copies.
#[derive(Debug, Default, Serialize)]
pub struct BackupStatus {
    pub pairs: Vec<BackupPair>,
    /// Versions their token said can never have a backup copy, with why (recorded once).
    pub never_copyable: Vec<crate::inventory::NeverCopyable>,
}

/// One drill result.
#[derive(Debug, Clone, Serialize)]
pub struct DrillResult {
    pub key: String,
    pub version: u32,
    pub token: String,
    pub ok: bool,
    /// How the copy was proven, or why it failed.
    pub detail: String,
}

/// What `kms backup verify` found.
#[derive(Debug, Default, Serialize)]
pub struct DrillReport {
    pub results: Vec<DrillResult>,
    /// Pairings whose key-encryption key is missing or no longer trusted.
    pub pair_problems: Vec<String>,
    /// Active versions with no copy at all (backup configured).
    pub uncopied: Vec<String>,
    /// Versions backup by wrapping cannot apply to (card-resident keys), and why.
    pub not_applicable: Vec<String>,
}

impl DrillReport {
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| !r.ok).count()
            + self.pair_problems.len()
            + self.uncopied.len()
    }
}

/// What `kms backup restore` did.
#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub restored: Vec<String>,
    pub proven: Vec<String>,
    pub failed: Vec<(String, String)>,
}

const BACKUP_ADMINS: &[Role] = &[Role::SecurityOfficer];
const DRILL_ROLES: &[Role] = &[Role::SecurityOfficer, Role::Auditor];

impl Engine {
    /// The pairing new keys are copied under: from the key token to the configured backup token.
    /// `None` when no backup is configured or no ceremony was held yet.
    pub(crate) fn backup_target(&self) -> Result<Option<BackupPair>, EngineError> {
        let Some(backup) = &self.config.backup else {
            return Ok(None);
        };
        let from = self.hsm.describe(&self.config.key_token)?;
        let to = self.hsm.describe(&backup.token)?;
        Ok(self.inventory.backup_pair(&from.serial, &to.serial)?)
    }

    /// A token of a pairing, checked to still be the token the pairing was made with.
    fn paired_token(&self, name: &str, serial: &str) -> Result<Arc<Token>, EngineError> {
        let t = self.hsm.token(name)?;
        if t.serial() != serial {
            return Err(EngineError::Misconfigured(format!(
                "token '{name}' is now serial {}, but the backup pairing was made with serial {serial}; run `kms backup init` for the new token",
                t.serial()
            )));
        }
        Ok(t)
    }
}

/// A drill of a symmetric copy needs the original; without it the copy is not blamed.
const ORIGINAL_UNREACHABLE: &str = "not drilled: the original's token is unreachable (a symmetric copy is proven against the original)";

/// Versions whose key still protects data somewhere: active, deactivated (within its
/// re-encryption window) and compromised (until its data is moved off it). Backed up, drilled,
/// restored and exported alike.
pub(crate) fn holds_data(s: VersionState) -> bool {
    matches!(
        s,
        VersionState::Active | VersionState::Deactivated | VersionState::Compromised
    )
}

fn pair_name(p: &BackupPair) -> String {
    format!("{} -> {}", p.from_token, p.to_token)
}

fn no_pairing() -> EngineError {
    EngineError::denied(
        Refusal::NotSupported,
        "no backup pairing for the key token: configure [backup] and run `kms backup init` first"
            .to_owned(),
    )
}
