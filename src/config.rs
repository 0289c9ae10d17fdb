//! `kms.toml` -> typed configuration.
//!
//! PINs are never literals in the file and never on argv: a token's `user_pin` names a *source*
//! (`env:VAR`, `file:PATH` with mode 0600, or `prompt`) and is resolved only when the token is opened.
//! Relative paths are resolved against the directory holding the config file.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

use crate::duration::HumanDuration;

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

/// `[backup]`: where copies go, how often the service drills them, whether it fails over.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub token: String,
    /// How often `kms serve` runs the restore drill over every copy (seconds).
    pub drill_every_secs: u64,
    /// Serve from backup copies while the primary token is down.
    pub failover: bool,
}

/// `[audit]`: tamper evidence and delivery to the log server.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Sign a checkpoint after this many records …
    pub checkpoint_every: u64,
    /// … or when the last one is older than this many seconds (and at shutdown).
    pub checkpoint_secs: u64,
    /// Where records are shipped (RFC 5424 syslog over TCP), if anywhere.
    pub syslog: Option<SyslogConfig>,
}

/// `[audit.syslog]`: the log server.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// host:port of the syslog server (TCP, octet-counting framing, RFC 6587).
    pub address: String,
    /// TLS (RFC 5425) with this CA (PEM); plain TCP when absent.
    pub tls_ca: Option<PathBuf>,
    /// Server name to verify in its certificate (default: the host part of `address`).
    pub tls_server_name: Option<String>,
    /// RFC 5424 APP-NAME.
    pub app_name: String,
    /// Seconds between shipping attempts in `kms serve`.
    pub interval_secs: u64,
}

/// `[access]`: requests, approvals and reviews.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// How often grants must be re-certified.
    pub review_every: HumanDuration,
    /// PKCS#11 module for people's approval cards when their URI has no module-path.
    pub card_module: PathBuf,
}

/// `[server]`: the mutual-TLS HTTPS service (`kms serve`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM, file mode 0600).
    pub key: PathBuf,
    /// CA whose certificates clients must present (PEM).
    pub client_ca: PathBuf,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// A request's head must arrive within this many seconds: from the end of the TLS handshake
    /// for a connection's first request, from its first byte for each next one.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight and no bytes either way for this many seconds is
    /// closed.
    pub idle_timeout_secs: u64,
    /// Open connections (handshaking included) from one source IP address at most.
    pub max_connections_per_address: usize,
    /// The JSON API door's connection limits (the four fields above, and the rest).
    pub limits: DoorLimits,
}

/// `[xks]`: the AWS KMS External Key Store proxy.
#[derive(Debug, Clone)]
pub struct XksConfig {
    pub listen: std::net::SocketAddr,
    /// Server certificate chain and key (PEM); default `[server] cert` / `key`.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Optional mutual TLS: the CA AWS KMS's client certificate chains to.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: the name the client certificate must carry (SAN dNSName or CN), e.g.
    /// `cks.kms.us-east-1.amazonaws.com`.
    pub client_name: Option<String>,
    /// The whole XksProxyUriPath, ending in `/kms/xks/v1` (e.g. `/acme/kms/xks/v1`).
    pub prefix: String,
    /// The SigV4 region AWS KMS signs with.
    pub region: String,
    /// One or two SigV4 credentials (two while rotating), each acting as a kms principal.
    pub credentials: Vec<XksCredential>,
    /// The XKS door's connection limits.
    pub limits: DoorLimits,
}

/// `[kmip]`: KMIP over mutual TLS (the `[server]` certificate, key and client CA).
#[derive(Debug, Clone)]
pub struct KmipConfig {
    pub listen: std::net::SocketAddr,
    /// Principals that may create keys over KMIP (an officer's standing decision): each key
    /// they create is owned by them, and they get a grant of its usage.
    pub may_create: Vec<String>,
    /// Classification of keys created over KMIP (default confidential).
    pub classification: crate::model::Classification,
    /// The KMIP door's connection limits.
    pub limits: DoorLimits,
}

/// One SigV4 credential of the XKS proxy. The secret is a source, never the value.
#[derive(Debug, Clone)]
pub struct XksCredential {
    pub access_key_id: String,
    pub secret: PinSource,
    pub principal: String,
}

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

/// The inventory on PostgreSQL (`[inventory] postgres`, `password`).
#[derive(Debug, Clone)]
pub struct PostgresInventory {
    /// `postgres://user@host:port/db`, without a password.
    pub url: String,
    pub password: Option<PinSource>,
}

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

/// Where a PIN comes from. Holds no secret itself, so `Debug` is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    Env(String),
    File(PathBuf),
    Prompt,
}

impl PinSource {
    /// Resolve the user PIN. The value is returned as a `SecretString`: zeroized on drop, masked in `Debug`.
    pub fn resolve(&self, token: &str) -> Result<SecretString, ConfigError> {
        self.resolve_kind(token, "User")
    }

    /// Resolve a PIN of kind `kind` ("User", "SO"); the kind is what a prompt asks for.
    pub fn resolve_kind(&self, token: &str, kind: &str) -> Result<SecretString, ConfigError> {
        let pin = match self {
            PinSource::Env(var) => std::env::var(var).map_err(|_| ConfigError::PinEnvMissing {
                token: token.to_owned(),
                var: var.clone(),
            })?,
            PinSource::File(path) => read_pin_file(token, path)?,
            PinSource::Prompt => {
                if !std::io::stdin().is_terminal() {
                    return Err(ConfigError::PinPromptNoTerminal {
                        token: token.to_owned(),
                    });
                }
                rpassword::prompt_password(format!("{kind} PIN for token '{token}': ")).map_err(
                    |source| ConfigError::PinPrompt {
                        token: token.to_owned(),
                        source,
                    },
                )?
            }
        };
        let pin = zeroize::Zeroizing::new(pin);
        let trimmed = pin.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(ConfigError::PinEmpty {
                token: token.to_owned(),
            });
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }
}

fn read_pin_file(token: &str, path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::PinFileRead {
        token: token.to_owned(),
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::PinFileMode {
            token: token.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(read_err)
}

// ---- the file format (serde), kept private: callers see only the validated `Config` ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    inventory: RawInventory,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    tokens: BTreeMap<String, RawToken>,
    server: Option<RawServer>,
    #[serde(default)]
    access: RawAccess,
    #[serde(default)]
    audit: RawAudit,
    backup: Option<RawBackup>,
    #[serde(default)]
    lifecycle: RawLifecycle,
    #[serde(default)]
    cards: BTreeMap<String, RawCard>,
    node: Option<RawNode>,
    xks: Option<RawXks>,
    kmip: Option<RawKmip>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKmip {
    #[serde(default = "default_kmip_listen")]
    listen: String,
    #[serde(default)]
    may_create: Vec<String>,
    classification: Option<String>,
    #[serde(flatten)]
    limits: RawDoorLimits,
}

fn default_kmip_listen() -> String {
    "127.0.0.1:5696".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXks {
    listen: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    client_name: Option<String>,
    prefix: String,
    region: String,
    #[serde(default)]
    credentials: Vec<RawXksCredential>,
    #[serde(flatten)]
    limits: RawDoorLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXksCredential {
    access_key_id: String,
    secret: String,
    principal: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<String>,
    site: Option<String>,
    #[serde(default = "default_lease_secs")]
    lease_secs: u64,
}

fn default_lease_secs() -> u64 {
    15
}

/// A node or site name: 1–64 characters of letters, digits, `-`, `_` and `.`.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCard {
    pin: String,
    mgm_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    token: String,
    drill_every_secs: Option<u64>,
    failover: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_every: Option<u64>,
    checkpoint_secs: Option<u64>,
    syslog: Option<RawSyslog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    address: String,
    tls_ca: Option<PathBuf>,
    tls_server_name: Option<String>,
    app_name: Option<String>,
    interval_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    review_every: Option<HumanDuration>,
    card_module: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: String,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "default_shutdown_grace")]
    shutdown_grace_secs: u64,
    #[serde(flatten)]
    limits: RawDoorLimits,
}

fn default_listen() -> String {
    "127.0.0.1:8443".to_owned()
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_shutdown_grace() -> u64 {
    30
}

// ---- Connection limits of a network door ([server], [xks], [kmip]) ------------------------------

/// The connection limits of one network door (`src/net/`): the same keys, parsed the same way, in
/// `[server]` (the JSON API), `[xks]` and `[kmip]`. See ARCHITECTURE.md, "Connection layer".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorLimits {
    /// Open connections at most, handshaking ones included (`max_connections`).
    pub max_connections: usize,
    /// Open connections from one source IP address at most (`max_connections_per_address`).
    pub max_connections_per_address: usize,
    /// Of `max_connections`, the slots only proven connections may hold: a registered client (or,
    /// on XKS, a SigV4-authenticated one) that completed a first request (`reserved_connections`).
    pub reserved_connections: usize,
    /// How long a peer may take to complete the TLS handshake (`handshake_timeout_secs`).
    pub handshake_timeout: std::time::Duration,
    /// A request head (KMIP: a whole message) must arrive within this once it started; the first
    /// one counted from the end of the handshake (`header_read_timeout_secs`).
    pub header_read_timeout: std::time::Duration,
    /// No request in flight and no bytes for this long: closed (`idle_timeout_secs`).
    pub idle_timeout: std::time::Duration,
    /// A connection not yet proven after this long gives up its slot to a newcomer when the door
    /// is full (`first_request_budget_ms`).
    pub first_request_budget: std::time::Duration,
    /// Engine calls (token and inventory work on blocking threads) in flight at once from this
    /// door; more wait their turn (`max_token_work`).
    pub max_token_work: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDoorLimits {
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    reserved_connections: Option<usize>,
    handshake_timeout_secs: Option<u64>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    first_request_budget_ms: Option<u64>,
    max_token_work: Option<usize>,
}

impl RawDoorLimits {
    /// Defaults filled in and ranges checked; `section` names the table in errors.
    fn parse(self, section: &str, default_max: usize) -> Result<DoorLimits, String> {
        use std::time::Duration;
        let invalid = |key: &str, value: String, range: String, default: String| {
            format!("{section} {key} = {value} is out of range: give {range} (default {default})")
        };
        let max_connections = self.max_connections.unwrap_or(default_max);
        if !(1..=100_000).contains(&max_connections) {
            return Err(format!("{section} max_connections must be 1..=100000"));
        }
        let per_address = self
            .max_connections_per_address
            .unwrap_or(32.min(max_connections));
        if !(1..=max_connections).contains(&per_address) {
            return Err(invalid(
                "max_connections_per_address",
                per_address.to_string(),
                format!("1..={max_connections} (at most max_connections)"),
                "32".into(),
            ));
        }
        let reserved = self.reserved_connections.unwrap_or(max_connections / 4);
        if reserved >= max_connections {
            return Err(invalid(
                "reserved_connections",
                reserved.to_string(),
                format!("0..={} (below max_connections)", max_connections - 1),
                "max_connections / 4".into(),
            ));
        }
        let secs = |key: &str, v: Option<u64>, default: u64, max: u64| {
            let v = v.unwrap_or(default);
            if (1..=max).contains(&v) {
                Ok(Duration::from_secs(v))
            } else {
                Err(invalid(
                    key,
                    v.to_string(),
                    format!("1..={max} seconds"),
                    default.to_string(),
                ))
            }
        };
        let budget = self.first_request_budget_ms.unwrap_or(1000);
        if !(10..=600_000).contains(&budget) {
            return Err(invalid(
                "first_request_budget_ms",
                budget.to_string(),
                "10..=600000 milliseconds".into(),
                "1000".into(),
            ));
        }
        let work = self.max_token_work.unwrap_or(32);
        if !(1..=4096).contains(&work) {
            return Err(invalid(
                "max_token_work",
                work.to_string(),
                "1..=4096".into(),
                "32".into(),
            ));
        }
        Ok(DoorLimits {
            max_connections,
            max_connections_per_address: per_address,
            reserved_connections: reserved,
            handshake_timeout: secs(
                "handshake_timeout_secs",
                self.handshake_timeout_secs,
                10,
                600,
            )?,
            header_read_timeout: secs(
                "header_read_timeout_secs",
                self.header_read_timeout_secs,
                10,
                3600,
            )?,
            idle_timeout: secs("idle_timeout_secs", self.idle_timeout_secs, 60, 86_400)?,
            first_request_budget: Duration::from_millis(budget),
            max_token_work: work,
        })
    }
}

// ---- end of connection limits --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default = "default_inventory_path")]
    path: PathBuf,
    /// `postgres://user@host:port/db`: the inventory on PostgreSQL (several nodes).
    postgres: Option<String>,
    /// Where the PostgreSQL password comes from (`env:VAR`, `file:PATH`, `prompt`).
    password: Option<String>,
}

impl Default for RawInventory {
    fn default() -> Self {
        RawInventory {
            path: default_inventory_path(),
            postgres: None,
            password: None,
        }
    }
}

fn default_inventory_path() -> PathBuf {
    PathBuf::from("kms.db")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default = "default_key_token")]
    token: String,
    #[serde(default = "default_rotate_every")]
    rotate_every: HumanDuration,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
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

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: scrubbed_toml_error(&e, text),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let base = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };

        let mut tokens = BTreeMap::new();
        for (name, t) in raw.tokens {
            let selector = match (t.label, t.serial) {
                (Some(l), None) => TokenSelector::Label(l),
                (None, Some(s)) => TokenSelector::Serial(s),
                _ => {
                    return Err(invalid(format!(
                        "token '{name}' must set exactly one of `label` or `serial` (never a slot id: slot ids change)"
                    )))
                }
            };
            let user_pin = parse_pin_source(&t.user_pin, &resolve).ok_or_else(|| {
                invalid(format!(
                    "token '{name}': user_pin must be `env:VAR`, `file:PATH` or `prompt`; a PIN is never written in the config itself"
                ))
            })?;
            let so_pin = match &t.so_pin {
                None => PinSource::Prompt,
                Some(p) => parse_pin_source(p, &resolve).ok_or_else(|| {
                    invalid(format!(
                        "token '{name}': so_pin must be `env:VAR`, `file:PATH` or `prompt`; a PIN is never written in the config itself"
                    ))
                })?,
            };
            if !(1..=64).contains(&t.sessions) {
                return Err(invalid(format!(
                    "token '{name}': sessions must be between 1 and 64, not {}",
                    t.sessions
                )));
            }
            if let Some(site) = t.site.as_deref().filter(|s| !valid_name(s)) {
                return Err(invalid(format!(
                    "token '{name}': site '{site}' must be 1-64 letters, digits, '-', '_' or '.'"
                )));
            }
            tokens.insert(
                name.clone(),
                TokenConfig {
                    name,
                    module: resolve(&t.module),
                    selector,
                    user_pin,
                    so_pin,
                    sessions: t.sessions,
                    site: t.site,
                },
            );
        }
        if !tokens.contains_key(&raw.keys.token) {
            let known: Vec<&str> = tokens.keys().map(String::as_str).collect();
            return Err(invalid(format!(
                "[keys] token = '{}' names no [tokens.{}] entry (configured: {})",
                raw.keys.token,
                raw.keys.token,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        let server = match raw.server {
            None => None,
            Some(s) => {
                let listen = s.listen.parse().map_err(|_| {
                    invalid(format!(
                        "[server] listen = '{}' is not an address:port (e.g. 127.0.0.1:8443)",
                        s.listen
                    ))
                })?;
                if !(1024..=64 * 1024 * 1024).contains(&s.max_body_bytes) {
                    return Err(invalid(
                        "[server] max_body_bytes must be between 1024 and 67108864".into(),
                    ));
                }
                let limits = s.limits.parse("[server]", 256).map_err(invalid)?;
                Some(ServerConfig {
                    listen,
                    cert: resolve(&s.cert),
                    key: resolve(&s.key),
                    client_ca: resolve(&s.client_ca),
                    max_connections: limits.max_connections,
                    max_body_bytes: s.max_body_bytes,
                    shutdown_grace_secs: s.shutdown_grace_secs,
                    header_read_timeout_secs: limits.header_read_timeout.as_secs(),
                    idle_timeout_secs: limits.idle_timeout.as_secs(),
                    max_connections_per_address: limits.max_connections_per_address,
                    limits,
                })
            }
        };
        let key_module = tokens
            .get(&raw.keys.token)
            .map(|t| t.module.clone())
            .unwrap_or_default();
        let access = AccessConfig {
            review_every: raw.access.review_every.unwrap_or(HumanDuration::days(90)),
            card_module: raw
                .access
                .card_module
                .map(|p| resolve(&p))
                .unwrap_or(key_module),
        };
        let audit = AuditConfig {
            checkpoint_every: raw.audit.checkpoint_every.unwrap_or(1000).max(1),
            checkpoint_secs: raw.audit.checkpoint_secs.unwrap_or(60).max(1),
            syslog: raw.audit.syslog.map(|s| SyslogConfig {
                address: s.address,
                tls_ca: s.tls_ca.map(|p| resolve(&p)),
                tls_server_name: s.tls_server_name,
                app_name: s.app_name.unwrap_or_else(|| "kms".to_owned()),
                interval_secs: s.interval_secs.unwrap_or(2).max(1),
            }),
        };
        let backup = match raw.backup {
            None => None,
            Some(b) => {
                if !tokens.contains_key(&b.token) {
                    return Err(invalid(format!(
                        "[backup] token = '{}' names no [tokens.{}] entry",
                        b.token, b.token
                    )));
                }
                if b.token == raw.keys.token {
                    return Err(invalid(format!(
                        "[backup] token = '{}' is the [keys] token itself; a backup must live on a second token",
                        b.token
                    )));
                }
                Some(BackupConfig {
                    token: b.token,
                    drill_every_secs: b.drill_every_secs.unwrap_or(86_400).max(1),
                    failover: b.failover.unwrap_or(true),
                })
            }
        };
        let window = |v: &Option<String>, field: &str, default: u64| -> Result<u64, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => {
                    parse_window(s).map_err(|e| invalid(format!("[lifecycle] {field}: {e} (or 0)")))
                }
            }
        };
        let lifecycle = LifecycleConfig {
            reencrypt_window_secs: window(
                &raw.lifecycle.reencrypt_window,
                "reencrypt_window",
                7 * 86_400,
            )?,
            disposal_wait_secs: window(&raw.lifecycle.disposal_wait, "disposal_wait", 7 * 86_400)?,
            disposal_wait_min_secs: window(
                &raw.lifecycle.disposal_wait_min,
                "disposal_wait_min",
                86_400,
            )?,
            check_every_secs: raw.lifecycle.check_every_secs.unwrap_or(3600).max(1),
        };
        if lifecycle.disposal_wait_secs < lifecycle.disposal_wait_min_secs {
            return Err(invalid(
                "[lifecycle] disposal_wait is shorter than disposal_wait_min".into(),
            ));
        }
        let mut cards = BTreeMap::new();
        let mut card_mgm_keys = BTreeMap::new();
        for (serial, c) in raw.cards {
            if let Some(m) = &c.mgm_key {
                let src = parse_pin_source(m, &resolve).ok_or_else(|| {
                    invalid(format!(
                        "[cards.{serial}] mgm_key must be `env:VAR`, `file:PATH` or `prompt`"
                    ))
                })?;
                card_mgm_keys.insert(serial.clone(), src);
            }
            if serial.parse::<u32>().is_err() {
                return Err(invalid(format!(
                    "[cards.{serial}]: the table name is the card's serial number"
                )));
            }
            let pin = parse_pin_source(&c.pin, &resolve).ok_or_else(|| {
                invalid(format!(
                    "[cards.{serial}] pin must be `env:VAR`, `file:PATH` or `prompt`; a PIN is never written in the config itself"
                ))
            })?;
            cards.insert(serial, pin);
        }
        let postgres = match (raw.inventory.postgres, raw.inventory.password) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid(
                    "[inventory] password is set but postgres is not; the SQLite inventory (path) has no password".into(),
                ))
            }
            (Some(url), password) => {
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return Err(invalid(format!(
                        "[inventory] postgres must be a URL like postgres://kms@127.0.0.1:5432/kms, not '{}'",
                        url.split('@').next_back().unwrap_or("")
                    )));
                }
                if url
                    .split("://")
                    .nth(1)
                    .and_then(|rest| rest.split('@').next())
                    .is_some_and(|userinfo| userinfo.contains(':') && url.contains('@'))
                {
                    return Err(invalid(
                        "[inventory] postgres must not carry the password in the URL; set `password = \"file:PATH\"` (or env:VAR, prompt)".into(),
                    ));
                }
                let password = match password {
                    None => None,
                    Some(p) => Some(parse_pin_source(&p, &resolve).ok_or_else(|| {
                        invalid(
                            "[inventory] password must be `env:VAR`, `file:PATH` or `prompt`; a password is never written in the config itself".into(),
                        )
                    })?),
                };
                Some(PostgresInventory { url, password })
            }
        };
        let node = match raw.node {
            None => NodeConfig {
                name: default_node_name(),
                site: None,
                lease_secs: default_lease_secs(),
                configured: false,
            },
            Some(n) => {
                let name = n.name.unwrap_or_else(default_node_name);
                for (what, v) in [("name", Some(&name)), ("site", n.site.as_ref())] {
                    if let Some(v) = v.filter(|v| !valid_name(v)) {
                        return Err(invalid(format!(
                            "[node] {what} = '{v}' must be 1-64 letters, digits, '-', '_' or '.'"
                        )));
                    }
                }
                if !(3..=3600).contains(&n.lease_secs) {
                    return Err(invalid(format!(
                        "[node] lease_secs must be between 3 and 3600, not {}",
                        n.lease_secs
                    )));
                }
                if let Some(site) = &n.site {
                    if !tokens.values().any(|t| t.site.as_ref() == Some(site)) {
                        return Err(invalid(format!(
                            "[node] site = '{site}' but no [tokens.*] entry has site = '{site}': this node could serve no key; set `site` on the token(s) at this site"
                        )));
                    }
                }
                NodeConfig {
                    name,
                    site: n.site,
                    lease_secs: n.lease_secs,
                    configured: true,
                }
            }
        };
        let xks = match raw.xks {
            None => None,
            Some(x) => {
                let listen = x.listen.parse().map_err(|_| {
                    invalid(format!(
                        "[xks] listen = '{}' is not an address:port (e.g. 0.0.0.0:8444)",
                        x.listen
                    ))
                })?;
                let prefix = x.prefix.trim_end_matches('/').to_owned();
                let valid_chars = prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_'));
                if !prefix.starts_with('/')
                    || !prefix.ends_with("/kms/xks/v1")
                    || !valid_chars
                    || prefix.len() > 128
                    || prefix.contains("//")
                {
                    return Err(invalid(format!(
                        "[xks] prefix = '{}' must be the whole XksProxyUriPath: '/', then letters, digits, '/', '-' or '_', ending in /kms/xks/v1, at most 128 characters (e.g. /acme/kms/xks/v1)",
                        x.prefix
                    )));
                }
                if x.region.trim().is_empty() {
                    return Err(invalid(
                        "[xks] region must name the AWS region (e.g. us-east-1)".into(),
                    ));
                }
                if x.credentials.is_empty() || x.credentials.len() > 2 {
                    return Err(invalid(format!(
                        "[xks] needs one or two [[xks.credentials]] (two while rotating), not {}",
                        x.credentials.len()
                    )));
                }
                let mut credentials = Vec::new();
                for c in x.credentials {
                    if c.access_key_id.len() < 16
                        || c.access_key_id.len() > 128
                        || !c.access_key_id.chars().all(|ch| ch.is_ascii_alphanumeric())
                    {
                        return Err(invalid(format!(
                            "[xks.credentials] access_key_id '{}' must be 16..128 letters and digits (AWS asks for 20..30 of A-Z, 2-7)",
                            c.access_key_id
                        )));
                    }
                    let secret = parse_pin_source(&c.secret, &resolve).ok_or_else(|| {
                        invalid(format!(
                            "[xks.credentials] secret of '{}' must be env:VAR, file:PATH or prompt, never the secret itself",
                            c.access_key_id
                        ))
                    })?;
                    credentials.push(XksCredential {
                        access_key_id: c.access_key_id,
                        secret,
                        principal: c.principal,
                    });
                }
                if credentials.len() == 2
                    && credentials[0].access_key_id == credentials[1].access_key_id
                {
                    return Err(invalid(
                        "[xks] the two credentials have the same access_key_id".into(),
                    ));
                }
                let from_server = |what: &str| {
                    invalid(format!(
                        "[xks] {what} is not set and there is no [server] section to take it from"
                    ))
                };
                let cert = match (x.cert, &server) {
                    (Some(c), _) => resolve(&c),
                    (None, Some(s)) => s.cert.clone(),
                    (None, None) => return Err(from_server("cert")),
                };
                let key = match (x.key, &server) {
                    (Some(k), _) => resolve(&k),
                    (None, Some(s)) => s.key.clone(),
                    (None, None) => return Err(from_server("key")),
                };
                if x.client_name.is_some() && x.client_ca.is_none() {
                    return Err(invalid(
                        "[xks] client_name needs client_ca (mutual TLS)".into(),
                    ));
                }
                Some(XksConfig {
                    listen,
                    cert,
                    key,
                    client_ca: x.client_ca.map(|p| resolve(&p)),
                    client_name: x.client_name,
                    prefix,
                    region: x.region,
                    credentials,
                    limits: x.limits.parse("[xks]", 512).map_err(invalid)?,
                })
            }
        };
        let kmip = match raw.kmip {
            None => None,
            Some(k) => {
                let listen = k.listen.parse().map_err(|_| {
                    invalid(format!(
                        "[kmip] listen = '{}' is not an address:port (e.g. 0.0.0.0:5696)",
                        k.listen
                    ))
                })?;
                if server.is_none() {
                    return Err(invalid(
                        "[kmip] uses the [server] certificate, key and client CA: add [server]"
                            .into(),
                    ));
                }
                let classification = match k.classification {
                    None => crate::model::Classification::Confidential,
                    Some(c) => c.parse().map_err(|e: crate::model::ParseError| {
                        invalid(format!("[kmip] classification: {e}"))
                    })?,
                };
                Some(KmipConfig {
                    listen,
                    may_create: k.may_create,
                    classification,
                    limits: k.limits.parse("[kmip]", 256).map_err(invalid)?,
                })
            }
        };
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
            inventory_path: resolve(&raw.inventory.path),
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

fn default_node_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| valid_name(h))
        .unwrap_or_else(|| "kms".to_owned())
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

impl PinSource {
    /// Parse `env:VAR`, `file:PATH` or `prompt` (relative paths stay relative to the working
    /// directory). A literal PIN is refused: `None`.
    pub fn parse(s: &str) -> Option<PinSource> {
        parse_pin_source(s, &|p: &Path| p.to_owned())
    }
}

fn parse_pin_source(s: &str, resolve: &dyn Fn(&Path) -> PathBuf) -> Option<PinSource> {
    if let Some(var) = s.strip_prefix("env:") {
        (!var.is_empty()).then(|| PinSource::Env(var.to_owned()))
    } else if let Some(p) = s.strip_prefix("file:") {
        (!p.is_empty()).then(|| PinSource::File(resolve(Path::new(p))))
    } else if s == "prompt" {
        Some(PinSource::Prompt)
    } else {
        None
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
        let text = include_str!("../hsm-config/kms.toml");
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
    fn pin_file_must_be_private() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("pin");
        std::fs::write(&p, "1234\n")?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        let src = PinSource::File(p.clone());
        assert!(matches!(
            src.resolve("t"),
            Err(ConfigError::PinFileMode { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        let pin = src.resolve("t")?;
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pin), "1234");
        Ok(())
    }
}
