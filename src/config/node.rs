//! `[node]`: this process as one node of several on one inventory.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{valid_name, ConfigError, Ctx, TokenConfig};

/// This kms process as one node of several on one inventory (`[node]`).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Default: the host name.
    pub name: String,
    /// The node's site: when set, requests are served only from tokens at this site.
    pub site: Option<String>,
    /// How long the singleton lease (scheduler, drills, audit shipping, checkpoints) lasts
    /// without renewal; the holder renews it every third of that.
    pub lease_secs: u64,
    /// Whether a `[node]` section was given (records then name the node).
    pub configured: bool,
}

impl NodeConfig {
    /// `name@site`, or `name`.
    pub fn label(&self) -> String {
        match &self.site {
            Some(s) => format!("{}@{s}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    name: Option<String>,
    site: Option<String>,
    #[serde(default = "default_lease_secs")]
    lease_secs: u64,
}

fn default_lease_secs() -> u64 {
    15
}

fn default_node_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| valid_name(h))
        .unwrap_or_else(|| "kms".to_owned())
}

/// `[node]`, or the defaults (host name, no site) when the section is absent.
pub(super) fn validate(
    raw: Option<RawNode>,
    ctx: &Ctx,
    tokens: &BTreeMap<String, TokenConfig>,
) -> Result<NodeConfig, ConfigError> {
    let Some(n) = raw else {
        return Ok(NodeConfig {
            name: default_node_name(),
            site: None,
            lease_secs: default_lease_secs(),
            configured: false,
        });
    };
    let name = n.name.unwrap_or_else(default_node_name);
    for (what, v) in [("name", Some(&name)), ("site", n.site.as_ref())] {
        if let Some(v) = v.filter(|v| !valid_name(v)) {
            return Err(ctx.invalid(format!(
                "[node] {what} = '{v}' must be 1-64 letters, digits, '-', '_' or '.'"
            )));
        }
    }
    if !(3..=3600).contains(&n.lease_secs) {
        return Err(ctx.invalid(format!(
            "[node] lease_secs must be between 3 and 3600, not {}",
            n.lease_secs
        )));
    }
    if let Some(site) = &n.site {
        if !tokens.values().any(|t| t.site.as_ref() == Some(site)) {
            return Err(ctx.invalid(format!(
                "[node] site = '{site}' but no [tokens.*] entry has site = '{site}': this node could serve no key; set `site` on the token(s) at this site"
            )));
        }
    }
    Ok(NodeConfig {
        name,
        site: n.site,
        lease_secs: n.lease_secs,
        configured: true,
    })
}
