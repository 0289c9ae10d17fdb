//! `[access]`: the access workflow's reviews and people's approval cards.

use std::path::PathBuf;

use serde::Deserialize;

use super::Ctx;
use crate::duration::HumanDuration;

/// `[access]`: requests, approvals and reviews.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// How often grants must be re-certified.
    pub review_every: HumanDuration,
    /// PKCS#11 module for people's approval cards when their URI has no module-path.
    pub card_module: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    review_every: Option<HumanDuration>,
    card_module: Option<PathBuf>,
}

impl RawAccess {
    /// `key_module`: the `[keys]` token's module, the default `card_module`.
    pub(super) fn validate(self, ctx: &Ctx, key_module: PathBuf) -> AccessConfig {
        AccessConfig {
            review_every: self.review_every.unwrap_or(HumanDuration::days(90)),
            card_module: self
                .card_module
                .map(|p| ctx.resolve(&p))
                .unwrap_or(key_module),
        }
    }
}
