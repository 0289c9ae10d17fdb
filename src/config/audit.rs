//! `[audit]` and `[audit.syslog]`: checkpoints and delivery to the log server.

use std::path::PathBuf;

use serde::Deserialize;

use super::Ctx;

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
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

impl RawAudit {
    pub(super) fn validate(self, ctx: &Ctx) -> AuditConfig {
        AuditConfig {
            checkpoint_every: self.checkpoint_every.unwrap_or(1000).max(1),
            checkpoint_secs: self.checkpoint_secs.unwrap_or(60).max(1),
            syslog: self.syslog.map(|s| SyslogConfig {
                address: s.address,
                tls_ca: s.tls_ca.map(|p| ctx.resolve(&p)),
                tls_server_name: s.tls_server_name,
                app_name: s.app_name.unwrap_or_else(|| "kms".to_owned()),
                interval_secs: s.interval_secs.unwrap_or(2).max(1),
            }),
        }
    }
}
