//! `kms.toml` -> typed configuration, one file per section, each in two steps: the file format
//! (serde, `deny_unknown_fields`, private to this module) and its validation into the public types
//! every other layer reads.
//!
//! `tokens.rs` `[tokens.*]` and `[keys]`; `inventory.rs` `[inventory]`; `listeners.rs` `[server]`,
//! `[xks]` and `[kmip]`; `access.rs`; `audit.rs` (with `[audit.syslog]`); `backup.rs`;
//! `lifecycle.rs`; `cards.rs`; `node.rs`; `pin.rs` PIN and secret sources.
//!
//! PINs are never literals in the file and never on argv: a token's `user_pin` names a *source*
//! (`env:VAR`, `file:PATH` with mode 0600, or `prompt`) and is resolved only when the token is opened.
//! Relative paths are resolved against the directory holding the config file.

mod access;
mod audit;
mod backup;
mod cards;
mod door_limits;
mod inventory;
mod lifecycle;
mod listeners;
mod node;
mod pin;
mod tokens;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::HumanDuration;

pub use access::AccessConfig;
pub use audit::{AuditConfig, SyslogConfig};
pub use backup::BackupConfig;
pub use inventory::PostgresInventory;
pub use lifecycle::{parse_window, LifecycleConfig};
pub use listeners::{DoorLimits, KmipConfig, ServerConfig, XksConfig, XksCredential};
pub use node::NodeConfig;
pub use pin::PinSource;
pub use tokens::{TokenConfig, TokenSelector};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "KMS_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no configuration: pass --config PATH or set {CONFIG_ENV} (scripts/setup-softhsm writes a dev one to .kms-dev/kms.toml)")]
    NotGiven,
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "config file {path} is not valid: {message}(hsm-config/kms.toml documents every field)"
    )]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("PIN for token '{token}': environment variable {var} is not set")]
    PinEnvMissing { token: String, var: String },
    #[error("PIN for token '{token}': cannot read {path}: {source}")]
    PinFileRead {
        token: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("PIN for token '{token}': {path} has mode {mode:o}; it must be readable by its owner only (chmod 600 {path})")]
    PinFileMode {
        token: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("PIN for token '{token}' is empty")]
    PinEmpty { token: String },
    #[error("PIN for token '{token}' must be typed at a prompt, but there is no terminal; use env:VAR or file:PATH for unattended runs")]
    PinPromptNoTerminal { token: String },
    #[error("PIN prompt for token '{token}' failed: {source}")]
    PinPrompt {
        token: String,
        source: std::io::Error,
    },
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config was read from (for messages).
    pub path: PathBuf,
    /// Environment variables set before any PKCS#11 module is loaded (e.g. `SOFTHSM2_CONF`).
    pub environment: BTreeMap<String, String>,
    pub inventory_path: PathBuf,
    /// Name of the token (a key of `tokens`) where new keys are generated.
    pub key_token: String,
    pub rotate_every: HumanDuration,
    pub tokens: BTreeMap<String, TokenConfig>,
    /// The HTTPS service, if configured.
    pub server: Option<ServerConfig>,
    /// The access workflow (A9).
    pub access: AccessConfig,
    /// The audit trail: checkpoints and shipping.
    pub audit: AuditConfig,
    /// The backup token, when backup is configured.
    pub backup: Option<BackupConfig>,
    /// Rotation, destruction and disposal timing.
    pub lifecycle: LifecycleConfig,
    /// PIN sources of PIV cards holding card-resident keys, by card serial.
    pub cards: BTreeMap<String, PinSource>,
    /// Management-key sources of those cards (rotation and destruction on the card); absent:
    /// the factory key.
    pub card_mgm_keys: BTreeMap<String, PinSource>,
    /// This process as a node (`[node]`; defaults: host name, no site).
    pub node: NodeConfig,
    /// `[inventory] postgres`: the inventory on PostgreSQL instead of the SQLite file
    /// `inventory_path` (which then only names where local lock files go).
    pub postgres: Option<PostgresInventory>,
    /// The AWS KMS External Key Store proxy (`[xks]`), served by `kms serve` on its own listener.
    pub xks: Option<XksConfig>,
    /// The KMIP listener (`[kmip]`), mutual TLS with the `[server]` certificates.
    pub kmip: Option<KmipConfig>,
}

// ---- the file format (serde), kept private: callers see only the validated `Config` ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    inventory: inventory::RawInventory,
    #[serde(default)]
    keys: tokens::RawKeys,
    #[serde(default)]
    tokens: BTreeMap<String, tokens::RawToken>,
    server: Option<listeners::RawServer>,
    #[serde(default)]
    access: access::RawAccess,
    #[serde(default)]
    audit: audit::RawAudit,
    backup: Option<backup::RawBackup>,
    #[serde(default)]
    lifecycle: lifecycle::RawLifecycle,
    #[serde(default)]
    cards: BTreeMap<String, cards::RawCard>,
    node: Option<node::RawNode>,
    xks: Option<listeners::RawXks>,
    kmip: Option<listeners::RawKmip>,
}

/// What every section's validation needs: the file (named in messages) and its directory
/// (relative paths are resolved against it).
struct Ctx<'a> {
    path: &'a Path,
    base: PathBuf,
}

impl Ctx<'_> {
    fn invalid(&self, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            message,
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// A PIN or secret source; `file:` paths relative to the config's directory.
    fn pin_source(&self, s: &str) -> Option<PinSource> {
        pin::parse_pin_source(s, &|p: &Path| self.resolve(p))
    }
}

/// A node or site name: 1–64 characters of letters, digits, `-`, `_` and `.`.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Config {
    /// Find the config path: `--config` first, then `KMS_CONFIG`.
    pub fn locate(flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(p) = flag {
            return Ok(p.to_owned());
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err(ConfigError::NotGiven),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parse the file, then validate it section by section, in the order the sections were
    /// always checked in (a file with several faults still reports the same one first).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: scrubbed_toml_error(&e, text),
        })?;
        let ctx = Ctx {
            path,
            base: path
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let tokens = tokens::validate(raw.tokens, &raw.keys, &ctx)?;
        let server = raw.server.map(|s| s.validate(&ctx)).transpose()?;
        let key_module = tokens
            .get(&raw.keys.token)
            .map(|t| t.module.clone())
            .unwrap_or_default();
        let access = raw.access.validate(&ctx, key_module);
        let audit = raw.audit.validate(&ctx);
        let backup = raw
            .backup
            .map(|b| b.validate(&ctx, &tokens, &raw.keys.token))
            .transpose()?;
        let lifecycle = raw.lifecycle.validate(&ctx)?;
        let (cards, card_mgm_keys) = cards::validate(raw.cards, &ctx)?;
        let (inventory_path, postgres) = raw.inventory.validate(&ctx)?;
        let node = node::validate(raw.node, &ctx, &tokens)?;
        let xks = raw
            .xks
            .map(|x| x.validate(&ctx, server.as_ref()))
            .transpose()?;
        let kmip = raw
            .kmip
            .map(|k| k.validate(&ctx, server.as_ref()))
            .transpose()?;
        Ok(Config {
            kmip,
            xks,
            node,
            card_mgm_keys,
            cards,
            lifecycle,
            backup,
            server,
            access,
            audit,
            path: path.to_owned(),
            environment: raw.environment,
            inventory_path,
            postgres,
            key_token: raw.keys.token,
            rotate_every: raw.keys.rotate_every,
            tokens,
        })
    }

    pub fn token(&self, name: &str) -> Option<&TokenConfig> {
        self.tokens.get(name)
    }

    /// `name`, or `name@site` when the token has a site (for listings).
    pub fn token_at_site(&self, name: &str) -> String {
        match self.token_site(name) {
            Some(site) => format!("{name}@{site}"),
            None => name.to_owned(),
        }
    }

    /// The site of token `name`, if configured.
    pub fn token_site(&self, name: &str) -> Option<&str> {
        self.tokens.get(name).and_then(|t| t.site.as_deref())
    }

    /// Whether this node may serve from token `name`: always without a node site; with one,
    /// only tokens at that site.
    pub fn serves_from(&self, name: &str) -> bool {
        match &self.node.site {
            None => true,
            Some(site) => self.token_site(name) == Some(site.as_str()),
        }
    }
}

/// A TOML error without the offending source line or value: a config file may hold a PIN typed
/// where a PIN source belongs, and that value must not reach a terminal or a CI log.
fn scrubbed_toml_error(e: &toml::de::Error, text: &str) -> String {
    // Quoted parts are values, except field names ([a-z_] only, like every name of the schema):
    // those are kept so "unknown field `colour`" still says which field.
    let raw = e.message();
    let mut message = String::new();
    let mut parts = raw.split('`');
    if let Some(first) = parts.next() {
        message.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            let is_name =
                !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            message.push('`');
            message.push_str(if is_name { part } else { "…" });
            message.push('`');
        } else {
            message.push_str(part);
        }
        inside = !inside;
    }
    match e.span() {
        Some(span) => {
            // The span is a byte offset: step back to a character boundary before slicing.
            let mut end = span.start.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let before = text.get(..end).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message} ")
        }
        None => format!("{message} "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [inventory]
        path = "inv.db"
        [tokens.primary]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        label = "kms-primary"
        user_pin = "env:KMS_TEST_PIN"
    "#;

    #[test]
    fn door_limits_are_the_same_keys_in_each_door_section() -> Result<(), ConfigError> {
        let server = "\n[server]\ncert = \"s.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n";
        let xks = "\n[xks]\nlisten = \"127.0.0.1:0\"\nprefix = \"/a/kms/xks/v1\"\nregion = \"us-east-1\"\n";
        let kmip = "\n[kmip]\nlisten = \"127.0.0.1:0\"\n";
        let credential = "[[xks.credentials]]\naccess_key_id = \"AKIAXKSTESTKEY0000001\"\nsecret = \"env:XKS_SECRET\"\nprincipal = \"app\"\n";
        let limited = "max_connections = 40\nreserved_connections = 8\nidle_timeout_secs = 7\nfirst_request_budget_ms = 250\n";
        let c = Config::parse(
            Path::new("k.toml"),
            &format!("{GOOD}{server}{limited}{kmip}{limited}"),
        )?;
        let s = c.server.ok_or(ConfigError::NotGiven)?;
        let k = c.kmip.ok_or(ConfigError::NotGiven)?;
        assert_eq!(s.limits, k.limits);
        assert_eq!(k.limits.max_connections, 40);
        assert_eq!(k.limits.reserved_connections, 8);
        assert_eq!(k.limits.idle_timeout, std::time::Duration::from_secs(7));
        assert_eq!(
            k.limits.first_request_budget,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(
            s.idle_timeout_secs, 7,
            "the [server] fields follow its limits"
        );
        // Defaults.
        let c = Config::parse(Path::new("k.toml"), &format!("{GOOD}{server}{kmip}"))?;
        let k = c.kmip.ok_or(ConfigError::NotGiven)?.limits;
        assert_eq!(
            (
                k.max_connections,
                k.reserved_connections,
                k.max_connections_per_address
            ),
            (256, 64, 32)
        );
        assert_eq!(k.handshake_timeout, std::time::Duration::from_secs(10));
        assert_eq!(k.max_token_work, 32);
        for (section, bad, says) in [
            (
                kmip,
                "reserved_connections = 256",
                "[kmip] reserved_connections = 256 is out of range",
            ),
            (
                kmip,
                "handshake_timeout_secs = 0",
                "[kmip] handshake_timeout_secs = 0 is out of range",
            ),
            (
                xks,
                "first_request_budget_ms = 1",
                "[xks] first_request_budget_ms = 1 is out of range",
            ),
            (
                xks,
                "max_token_work = 0",
                "[xks] max_token_work = 0 is out of range",
            ),
            (kmip, "idle_timeout = 5", "idle_timeout"),
        ] {
            let tail = if section == xks { credential } else { "" };
            let e = Config::parse(
                Path::new("k.toml"),
                &format!("{GOOD}{server}{section}{bad}\n{tail}"),
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
        Ok(())
    }

    #[test]
    fn parses_and_resolves_relative_paths() -> Result<(), ConfigError> {
        let c = Config::parse(Path::new("/etc/kms/kms.toml"), GOOD)?;
        assert_eq!(c.inventory_path, PathBuf::from("/etc/kms/inv.db"));
        assert_eq!(c.key_token, "primary");
        assert_eq!(c.rotate_every, HumanDuration::days(90));
        let t = c.token("primary").map(|t| t.sessions);
        assert_eq!(t, Some(4));
        Ok(())
    }

    #[test]
    fn rejects_unknown_fields_and_literal_pins() {
        let unknown = format!("{GOOD}\ncolour = \"blue\"\n");
        let e = Config::parse(Path::new("k.toml"), &unknown)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("colour")));
        let literal = GOOD.replace("env:KMS_TEST_PIN", "123456");
        let e = Config::parse(Path::new("k.toml"), &literal)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("never written in the config")));
    }

    #[test]
    fn a_pin_typed_into_the_config_is_not_echoed_by_the_parse_error() {
        for bad in [
            GOOD.replace("\"env:KMS_TEST_PIN\"", "839201774"),
            GOOD.replace("\"env:KMS_TEST_PIN\"", "839201774x"),
            format!("{GOOD}\n839201774 = 1\n"),
        ] {
            let e = Config::parse(Path::new("k.toml"), &bad)
                .err()
                .map(|e| e.to_string());
            let m = e.unwrap_or_default();
            assert!(!m.is_empty());
            assert!(!m.contains("839201774"), "{m}");
        }
    }

    #[test]
    fn the_reference_config_parses() -> Result<(), ConfigError> {
        let text = include_str!("../../hsm-config/kms.toml");
        let c = Config::parse(Path::new("/etc/kms/kms.toml"), text)?;
        assert_eq!(c.tokens.len(), 2);
        assert!(c.server.is_some());
        Ok(())
    }

    #[test]
    fn server_connection_limits_have_defaults_and_are_checked() -> Result<(), ConfigError> {
        let server = "\n[server]\ncert = \"s.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n";
        let c = Config::parse(Path::new("k.toml"), &format!("{GOOD}{server}"))?;
        let s = c.server.ok_or(ConfigError::NotGiven)?;
        assert_eq!(s.header_read_timeout_secs, 10);
        assert_eq!(s.idle_timeout_secs, 60);
        assert_eq!(s.max_connections_per_address, 32);
        for (bad, says) in [
            (
                "header_read_timeout_secs = 0",
                "header_read_timeout_secs = 0 is out of range",
            ),
            (
                "idle_timeout_secs = 0",
                "idle_timeout_secs = 0 is out of range",
            ),
            (
                "max_connections = 8\nmax_connections_per_address = 9",
                "max_connections_per_address = 9 is out of range: give 1..=8",
            ),
            ("header_timeout = 5", "header_timeout"),
        ] {
            let e = Config::parse(Path::new("k.toml"), &format!("{GOOD}{server}{bad}\n"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
        Ok(())
    }

    /// One refusal per section, word for word: the split into files kept every message.
    #[test]
    fn each_section_says_what_is_wrong() {
        let server = "[server]\ncert = \"s.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n";
        let xks = "[xks]\nlisten = \"127.0.0.1:0\"\nprefix = \"/kms/xks/v1\"\nregion = \"r\"\n\
                   [[xks.credentials]]\naccess_key_id = \"AAAAAAAAAAAAAAAAAAAA\"\n\
                   secret = \"env:S\"\nprincipal = \"p\"\n";
        for (text, says) in [
            (
                GOOD.replace("label = \"kms-primary\"", "label = \"a\"\nserial = \"1\""),
                "token 'primary' must set exactly one of `label` or `serial` (never a slot id: slot ids change)",
            ),
            (
                format!("{GOOD}[keys]\ntoken = \"nope\"\n"),
                "[keys] token = 'nope' names no [tokens.nope] entry (configured: primary)",
            ),
            (
                format!("{GOOD}[backup]\ntoken = \"primary\"\n"),
                "[backup] token = 'primary' is the [keys] token itself; a backup must live on a second token",
            ),
            (
                format!("{GOOD}[lifecycle]\ndisposal_wait = \"1h\"\n"),
                "[lifecycle] disposal_wait is shorter than disposal_wait_min",
            ),
            (
                format!("{GOOD}[cards.abc]\npin = \"env:X\"\n"),
                "[cards.abc]: the table name is the card's serial number",
            ),
            (
                GOOD.replace("path = \"inv.db\"", "path = \"inv.db\"\npassword = \"env:P\""),
                "[inventory] password is set but postgres is not; the SQLite inventory (path) has no password",
            ),
            (
                format!("{GOOD}[node]\nlease_secs = 1\n"),
                "[node] lease_secs must be between 3 and 3600, not 1",
            ),
            (
                format!("{GOOD}{xks}"),
                "[xks] cert is not set and there is no [server] section to take it from",
            ),
            (
                format!("{GOOD}[kmip]\n"),
                "[kmip] uses the [server] certificate, key and client CA: add [server]",
            ),
            (
                format!("{GOOD}{server}[kmip]\nclassification = \"secret\"\n"),
                "[kmip] classification: invalid classification 'secret': expected one of confidential, restricted, public",
            ),
        ] {
            let e = Config::parse(Path::new("k.toml"), &text)
                .err()
                .map(|e| e.to_string());
            assert_eq!(e, Some(format!("config file k.toml: {says}")), "{text}");
        }
    }

    #[test]
    fn sections_resolve_paths_against_the_config_directory() -> Result<(), ConfigError> {
        let server = "[server]\ncert = \"s.pem\"\nkey = \"/abs/k.pem\"\nclient_ca = \"ca.pem\"\n";
        let text = format!(
            "{GOOD}{server}[cards.123]\npin = \"file:pins/card\"\n\
             [audit.syslog]\naddress = \"127.0.0.1:514\"\ntls_ca = \"ca/log.pem\"\n"
        );
        let c = Config::parse(Path::new("/etc/kms/kms.toml"), &text)?;
        let s = c.server.ok_or(ConfigError::NotGiven)?;
        assert_eq!(s.cert, PathBuf::from("/etc/kms/s.pem"));
        assert_eq!(s.key, PathBuf::from("/abs/k.pem"));
        assert_eq!(
            c.cards.get("123"),
            Some(&PinSource::File(PathBuf::from("/etc/kms/pins/card")))
        );
        let tls_ca = c.audit.syslog.and_then(|s| s.tls_ca);
        assert_eq!(tls_ca, Some(PathBuf::from("/etc/kms/ca/log.pem")));
        assert_eq!(
            c.access.card_module,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        Ok(())
    }
}
