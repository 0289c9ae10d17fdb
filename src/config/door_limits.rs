//! The connection limits of a network door (`[server]`, `[xks]`, `[kmip]`): the same keys, parsed
//! the same way, for every door `src/net/` runs.

use serde::Deserialize;

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
pub(super) struct RawDoorLimits {
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
    pub(super) fn parse(self, section: &str, default_max: usize) -> Result<DoorLimits, String> {
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
