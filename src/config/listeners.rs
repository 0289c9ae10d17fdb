//! The listeners `kms serve` runs: `[server]` (the JSON API), `[xks]` (the AWS KMS External Key
//! Store proxy) and `[kmip]`. Kept together: the three doors share certificates and limits.

use std::path::PathBuf;

use serde::Deserialize;

pub use super::door_limits::DoorLimits;
use super::door_limits::RawDoorLimits;
use super::{ConfigError, Ctx, PinSource};

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

/// One SigV4 credential of the XKS proxy. The secret is a source, never the value.
#[derive(Debug, Clone)]
pub struct XksCredential {
    pub access_key_id: String,
    pub secret: PinSource,
    pub principal: String,
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

// ---- [server] ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
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

impl RawServer {
    pub(super) fn validate(self, ctx: &Ctx) -> Result<ServerConfig, ConfigError> {
        let s = self;
        let listen = s.listen.parse().map_err(|_| {
            ctx.invalid(format!(
                "[server] listen = '{}' is not an address:port (e.g. 127.0.0.1:8443)",
                s.listen
            ))
        })?;
        if !(1024..=64 * 1024 * 1024).contains(&s.max_body_bytes) {
            return Err(
                ctx.invalid("[server] max_body_bytes must be between 1024 and 67108864".into())
            );
        }
        let limits = s
            .limits
            .parse("[server]", 256)
            .map_err(|e| ctx.invalid(e))?;
        Ok(ServerConfig {
            listen,
            cert: ctx.resolve(&s.cert),
            key: ctx.resolve(&s.key),
            client_ca: ctx.resolve(&s.client_ca),
            max_connections: limits.max_connections,
            max_body_bytes: s.max_body_bytes,
            shutdown_grace_secs: s.shutdown_grace_secs,
            header_read_timeout_secs: limits.header_read_timeout.as_secs(),
            idle_timeout_secs: limits.idle_timeout.as_secs(),
            max_connections_per_address: limits.max_connections_per_address,
            limits,
        })
    }
}

// ---- [xks] ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawXks {
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

impl RawXks {
    /// `server`: the validated `[server]`, whose certificate and key are the defaults.
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        server: Option<&ServerConfig>,
    ) -> Result<XksConfig, ConfigError> {
        let x = self;
        let listen = x.listen.parse().map_err(|_| {
            ctx.invalid(format!(
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
            return Err(ctx.invalid(format!(
                "[xks] prefix = '{}' must be the whole XksProxyUriPath: '/', then letters, digits, '/', '-' or '_', ending in /kms/xks/v1, at most 128 characters (e.g. /acme/kms/xks/v1)",
                x.prefix
            )));
        }
        if x.region.trim().is_empty() {
            return Err(
                ctx.invalid("[xks] region must name the AWS region (e.g. us-east-1)".into())
            );
        }
        if x.credentials.is_empty() || x.credentials.len() > 2 {
            return Err(ctx.invalid(format!(
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
                return Err(ctx.invalid(format!(
                    "[xks.credentials] access_key_id '{}' must be 16..128 letters and digits (AWS asks for 20..30 of A-Z, 2-7)",
                    c.access_key_id
                )));
            }
            let secret = ctx.pin_source(&c.secret).ok_or_else(|| {
                ctx.invalid(format!(
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
        if credentials.len() == 2 && credentials[0].access_key_id == credentials[1].access_key_id {
            return Err(ctx.invalid("[xks] the two credentials have the same access_key_id".into()));
        }
        let from_server = |what: &str| {
            ctx.invalid(format!(
                "[xks] {what} is not set and there is no [server] section to take it from"
            ))
        };
        let cert = match (x.cert, server) {
            (Some(c), _) => ctx.resolve(&c),
            (None, Some(s)) => s.cert.clone(),
            (None, None) => return Err(from_server("cert")),
        };
        let key = match (x.key, server) {
            (Some(k), _) => ctx.resolve(&k),
            (None, Some(s)) => s.key.clone(),
            (None, None) => return Err(from_server("key")),
        };
        if x.client_name.is_some() && x.client_ca.is_none() {
            return Err(ctx.invalid("[xks] client_name needs client_ca (mutual TLS)".into()));
        }
        Ok(XksConfig {
            listen,
            cert,
            key,
            client_ca: x.client_ca.map(|p| ctx.resolve(&p)),
            client_name: x.client_name,
            prefix,
            region: x.region,
            credentials,
            limits: x.limits.parse("[xks]", 512).map_err(|e| ctx.invalid(e))?,
        })
    }
}

// ---- [kmip] ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKmip {
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

impl RawKmip {
    /// `server`: the validated `[server]`, whose certificate, key and client CA KMIP uses.
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        server: Option<&ServerConfig>,
    ) -> Result<KmipConfig, ConfigError> {
        let k = self;
        let listen = k.listen.parse().map_err(|_| {
            ctx.invalid(format!(
                "[kmip] listen = '{}' is not an address:port (e.g. 0.0.0.0:5696)",
                k.listen
            ))
        })?;
        if server.is_none() {
            return Err(ctx.invalid(
                "[kmip] uses the [server] certificate, key and client CA: add [server]".into(),
            ));
        }
        let classification = match k.classification {
            None => crate::model::Classification::Confidential,
            Some(c) => c.parse().map_err(|e: crate::model::ParseError| {
                ctx.invalid(format!("[kmip] classification: {e}"))
            })?,
        };
        Ok(KmipConfig {
            listen,
            may_create: k.may_create,
            classification,
            limits: k.limits.parse("[kmip]", 256).map_err(|e| ctx.invalid(e))?,
        })
    }
}
