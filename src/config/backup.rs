//! `[backup]`: the second token copies go to, the restore drill, failover.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Ctx, TokenConfig};

/// `[backup]`: where copies go, how often the service drills them, whether it fails over.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub token: String,
    /// How often `kms serve` runs the restore drill over every copy (seconds).
    pub drill_every_secs: u64,
    /// Serve from backup copies while the primary token is down.
    pub failover: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    token: String,
    drill_every_secs: Option<u64>,
    failover: Option<bool>,
}

impl RawBackup {
    /// `key_token`: the `[keys]` token, which the backup token must not be.
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        tokens: &BTreeMap<String, TokenConfig>,
        key_token: &str,
    ) -> Result<BackupConfig, ConfigError> {
        let b = self;
        if !tokens.contains_key(&b.token) {
            return Err(ctx.invalid(format!(
                "[backup] token = '{}' names no [tokens.{}] entry",
                b.token, b.token
            )));
        }
        if b.token == key_token {
            return Err(ctx.invalid(format!(
                "[backup] token = '{}' is the [keys] token itself; a backup must live on a second token",
                b.token
            )));
        }
        Ok(BackupConfig {
            token: b.token,
            drill_every_secs: b.drill_every_secs.unwrap_or(86_400).max(1),
            failover: b.failover.unwrap_or(true),
        })
    }
}
