//! `[tokens.NAME]` and `[keys]`: the PKCS#11 tokens, and the one new keys are generated on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{valid_name, ConfigError, Ctx, PinSource};
use crate::duration::HumanDuration;

/// One configured token. Found by label or serial, never by slot id (slot ids move).
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub name: String,
    pub module: PathBuf,
    pub selector: TokenSelector,
    pub user_pin: PinSource,
    /// The security officer's PIN, needed only for key ceremonies (default: prompt).
    pub so_pin: PinSource,
    pub sessions: usize,
    /// Where the token is (free text, e.g. "bangalore"); a node serves keys from the tokens at
    /// its own site only.
    pub site: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "label '{l}'"),
            TokenSelector::Serial(s) => write!(f, "serial '{s}'"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    module: PathBuf,
    label: Option<String>,
    serial: Option<String>,
    user_pin: String,
    so_pin: Option<String>,
    #[serde(default = "default_sessions")]
    sessions: usize,
    site: Option<String>,
}

fn default_sessions() -> usize {
    4
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    #[serde(default = "default_key_token")]
    pub(super) token: String,
    #[serde(default = "default_rotate_every")]
    pub(super) rotate_every: HumanDuration,
}

impl Default for RawKeys {
    fn default() -> Self {
        RawKeys {
            token: default_key_token(),
            rotate_every: default_rotate_every(),
        }
    }
}

fn default_key_token() -> String {
    "primary".to_owned()
}

fn default_rotate_every() -> HumanDuration {
    HumanDuration::days(90)
}

/// Every `[tokens.*]` entry, then `[keys] token` must name one of them.
pub(super) fn validate(
    raw: BTreeMap<String, RawToken>,
    keys: &RawKeys,
    ctx: &Ctx,
) -> Result<BTreeMap<String, TokenConfig>, ConfigError> {
    let mut tokens = BTreeMap::new();
    for (name, t) in raw {
        let selector = match (t.label, t.serial) {
            (Some(l), None) => TokenSelector::Label(l),
            (None, Some(s)) => TokenSelector::Serial(s),
            _ => {
                return Err(ctx.invalid(format!(
                    "token '{name}' must set exactly one of `label` or `serial` (never a slot id: slot ids change)"
                )))
            }
        };
        let user_pin = ctx.pin_source(&t.user_pin).ok_or_else(|| {
            ctx.invalid(format!(
                "token '{name}': user_pin must be `env:VAR`, `file:PATH` or `prompt`; a PIN is never written in the config itself"
            ))
        })?;
        let so_pin = match &t.so_pin {
            None => PinSource::Prompt,
            Some(p) => ctx.pin_source(p).ok_or_else(|| {
                ctx.invalid(format!(
                    "token '{name}': so_pin must be `env:VAR`, `file:PATH` or `prompt`; a PIN is never written in the config itself"
                ))
            })?,
        };
        if !(1..=64).contains(&t.sessions) {
            return Err(ctx.invalid(format!(
                "token '{name}': sessions must be between 1 and 64, not {}",
                t.sessions
            )));
        }
        if let Some(site) = t.site.as_deref().filter(|s| !valid_name(s)) {
            return Err(ctx.invalid(format!(
                "token '{name}': site '{site}' must be 1-64 letters, digits, '-', '_' or '.'"
            )));
        }
        tokens.insert(
            name.clone(),
            TokenConfig {
                name,
                module: ctx.resolve(&t.module),
                selector,
                user_pin,
                so_pin,
                sessions: t.sessions,
                site: t.site,
            },
        );
    }
    if !tokens.contains_key(&keys.token) {
        let known: Vec<&str> = tokens.keys().map(String::as_str).collect();
        return Err(ctx.invalid(format!(
            "[keys] token = '{}' names no [tokens.{}] entry (configured: {})",
            keys.token,
            keys.token,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(tokens)
}
