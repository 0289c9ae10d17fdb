//! Prometheus metrics of the service, one registry for every door (the JSON API serves it at
//! `/metrics`): request counts and latency histograms per operation, token errors, the audit
//! records not yet shipped to the log server, and per door the connections open and the ones the
//! connection layer closed, by reason.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    door: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoorLabels {
    door: String,
}

pub struct Metrics {
    registry: Registry,
    connections_closed: Family<ReasonLabels, Counter>,
    connections_open: Family<DoorLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
    token_errors: Family<OperationLabels, Counter>,
    audit_backlog: Gauge,
    audit_verify_failures: Gauge,
    backup_drill_failures: Gauge,
    inventory_integrity_failures: Gauge,
    token_lookups: Counter,
    tokens_down: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kms");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            // 0.25 ms .. ~8 s, doubling.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_25, 2.0, 16,
            ))
        });
        let token_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "API request latency by operation",
            latency.clone(),
        );
        registry.register(
            "token_errors",
            "Requests that failed at the token",
            token_errors.clone(),
        );
        let audit_backlog = Gauge::default();
        let audit_verify_failures = Gauge::default();
        registry.register(
            "audit_verify_failures",
            "Audit-trail verifications (kms audit verify) that found the trail altered",
            audit_verify_failures.clone(),
        );
        registry.register(
            "audit_backlog",
            "Audit records not yet taken by the log server",
            audit_backlog.clone(),
        );
        let backup_drill_failures = Gauge::default();
        let tokens_down = Gauge::default();
        let inventory_integrity_failures = Gauge::default();
        let token_lookups = Counter::default();
        registry.register(
            "token_lookups",
            "Object searches (C_FindObjectsInit) on the tokens; flat once keys' handles are cached",
            token_lookups.clone(),
        );
        registry.register(
            "inventory_integrity_failures",
            "Inventory rows refused by this process because their HSM-made integrity tag failed",
            inventory_integrity_failures.clone(),
        );
        registry.register(
            "backup_drill_failures",
            "Problems found by the last restore drill (failed copies, pairings, keys without a copy)",
            backup_drill_failures.clone(),
        );
        registry.register(
            "tokens_down",
            "Tokens out of service; their keys are served from backup copies",
            tokens_down.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections the service closed on its own, by door (api, xks, kmip) and reason (address-limit, busy, evicted, handshake-failed, handshake-timeout, unregistered, admission-failed, header-timeout, idle-timeout)",
            connections_closed.clone(),
        );
        let connections_open = Family::<DoorLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open now, by door (api, xks, kmip), handshaking ones included",
            connections_open.clone(),
        );
        Metrics {
            connections_closed,
            connections_open,
            backup_drill_failures,
            inventory_integrity_failures,
            token_lookups,
            tokens_down,
            registry,
            requests,
            latency,
            token_errors,
            audit_backlog,
            audit_verify_failures,
        }
    }

    pub fn record(&self, operation: &str, status: u16, elapsed: Duration, token_error: bool) {
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.to_owned(),
                status,
            })
            .inc();
        let op = OperationLabels {
            operation: operation.to_owned(),
        };
        self.latency
            .get_or_create(&op)
            .observe(elapsed.as_secs_f64());
        if token_error {
            self.token_errors.get_or_create(&op).inc();
        }
    }

    /// `kms_connections_closed_total{door, reason}`.
    pub fn connection_closed(&self, door: &str, reason: &str) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                door: door.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// `kms_connections_open{door}`.
    pub fn set_connections_open(&self, door: &str, open: usize) {
        self.connections_open
            .get_or_create(&DoorLabels {
                door: door.to_owned(),
            })
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// `kms_audit_verify_failures`, read from the inventory when metrics are scraped.
    pub fn set_audit_verify_failures(&self, n: i64) {
        self.audit_verify_failures.set(n);
    }

    /// `kms_backup_drill_failures` and `kms_tokens_down`, read when metrics are scraped.
    pub fn set_backup(&self, drill_failures: u64, tokens_down: usize) {
        self.backup_drill_failures
            .set(i64::try_from(drill_failures).unwrap_or(i64::MAX));
        self.tokens_down
            .set(i64::try_from(tokens_down).unwrap_or(i64::MAX));
    }

    /// `kms_token_lookups_total`, read from the token layer when metrics are scraped.
    pub fn set_token_lookups(&self, n: u64) {
        self.token_lookups
            .inner()
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// `kms_inventory_integrity_failures`, read when metrics are scraped.
    pub fn set_integrity_failures(&self, n: u64) {
        self.inventory_integrity_failures
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `kms_audit_backlog`, set by the audit shipping loop.
    pub fn set_audit_backlog(&self, records: i64) {
        self.audit_backlog.set(records);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
