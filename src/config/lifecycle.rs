//! `[lifecycle]`: re-encryption windows, disposal waits, how often the scheduler runs.

use serde::Deserialize;

use super::{ConfigError, Ctx};
use crate::duration::HumanDuration;

/// `[lifecycle]`: the timing of the lifecycle procedures.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Default re-encryption window after a rotation (0: destroy the old version at once).
    pub reencrypt_window_secs: u64,
    /// Waiting period between a disposal's approval and the destruction.
    pub disposal_wait_secs: u64,
    /// The shortest waiting period a disposal may be given.
    pub disposal_wait_min_secs: u64,
    /// How often `kms serve` runs what is due (rotations, destructions, disposals, repairs).
    pub check_every_secs: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLifecycle {
    reencrypt_window: Option<String>,
    disposal_wait: Option<String>,
    disposal_wait_min: Option<String>,
    check_every_secs: Option<u64>,
}

/// A duration that may also be `0` (e.g. "destroy at once"), in seconds.
pub fn parse_window(s: &str) -> Result<u64, crate::duration::DurationError> {
    if s.trim() == "0" {
        return Ok(0);
    }
    s.parse::<HumanDuration>().map(HumanDuration::as_secs)
}

impl RawLifecycle {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<LifecycleConfig, ConfigError> {
        let window = |v: &Option<String>, field: &str, default: u64| -> Result<u64, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => parse_window(s)
                    .map_err(|e| ctx.invalid(format!("[lifecycle] {field}: {e} (or 0)"))),
            }
        };
        let lifecycle = LifecycleConfig {
            reencrypt_window_secs: window(&self.reencrypt_window, "reencrypt_window", 7 * 86_400)?,
            disposal_wait_secs: window(&self.disposal_wait, "disposal_wait", 7 * 86_400)?,
            disposal_wait_min_secs: window(&self.disposal_wait_min, "disposal_wait_min", 86_400)?,
            check_every_secs: self.check_every_secs.unwrap_or(3600).max(1),
        };
        if lifecycle.disposal_wait_secs < lifecycle.disposal_wait_min_secs {
            return Err(
                ctx.invalid("[lifecycle] disposal_wait is shorter than disposal_wait_min".into())
            );
        }
        Ok(lifecycle)
    }
}
