//! Several nodes on one inventory (issue 13). Each `kms serve` is a node (`[node] name`,
//! `site`); requests go to any node, and work that must happen once — the lifecycle scheduler,
//! restore drills, audit shipping and periodic checkpoints — runs only on the holder of the
//! `singletons` lease (`inventory/leases.rs`). The holder renews it every third of
//! `lease_secs`; when it dies, the next node to ask after the expiry takes it over, and says so
//! in the audit trail.

use std::sync::atomic::Ordering;

use serde::Serialize;
use time::OffsetDateTime;

use super::Engine;
use crate::inventory::{LeaseAnswer, Outcome};
use crate::model::VersionState;

/// The lease that guards the once-only work.
pub const SINGLETONS: &str = "singletons";

/// What a node can serve, for `GET /v1/health` and `kms node status`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Whether this node holds the singleton lease right now.
    pub singletons: bool,
    /// Keys whose current version this node can serve from a token at its site.
    pub keys_servable: usize,
    /// Keys it cannot serve here (their current version has no copy at this site); at most 100
    /// names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys_not_servable: Vec<String>,
}

impl Engine {
    /// Take or renew the singleton lease; true while this node holds it. A database error
    /// counts as not holding it: once-only work is skipped rather than done twice.
    pub fn renew_singletons(&self) -> bool {
        let node = &self.config.node;
        let answer = self.inventory.take_lease(
            SINGLETONS,
            &node.name,
            OffsetDateTime::now_utc(),
            node.lease_secs,
        );
        let was = self.singletons.load(Ordering::Relaxed);
        let now = match &answer {
            Ok(LeaseAnswer::Held | LeaseAnswer::TakenOver { .. }) => true,
            Ok(LeaseAnswer::HeldBy { .. }) => false,
            Err(e) => {
                tracing::warn!(error = %e, "the singleton lease could not be renewed");
                false
            }
        };
        self.singletons.store(now, Ordering::Relaxed);
        let taken_over = matches!(answer, Ok(LeaseAnswer::TakenOver { .. }));
        if now && !was && (node.configured || taken_over) {
            let detail = match &answer {
                Ok(LeaseAnswer::TakenOver { from }) => format!(
                    "node '{}' took over the singleton lease from node '{from}', whose lease expired (scheduler, drills, audit shipping and checkpoints run here now)",
                    node.name
                ),
                _ => format!(
                    "node '{}' holds the singleton lease (scheduler, drills, audit shipping and checkpoints run here)",
                    node.name
                ),
            };
            tracing::info!(node = %node.name, "{detail}");
            self.node_event("node.lease-taken", detail);
        } else if was && !now {
            tracing::warn!(node = %node.name, "lost the singleton lease");
        }
        now
    }

    /// Whether this node holds the singleton lease (as of its last renewal).
    pub fn holds_singletons(&self) -> bool {
        self.singletons.load(Ordering::Relaxed)
    }

    /// Give the lease up at a clean stop, so another node takes over at once.
    pub fn release_singletons(&self) {
        if self.singletons.swap(false, Ordering::Relaxed) {
            if let Err(e) = self
                .inventory
                .release_lease(SINGLETONS, &self.config.node.name)
            {
                tracing::warn!(error = %e, "the singleton lease could not be released");
            }
        }
    }

    /// This node, its site and which keys it can serve there.
    pub fn node_health(&self) -> NodeHealth {
        let node = &self.config.node;
        let (mut servable, mut not) = (0usize, Vec::new());
        if let Ok(keys) = self.inventory.keys(&Default::default()) {
            for key in keys {
                let Some(v) = key
                    .versions
                    .iter()
                    .rev()
                    .find(|v| v.state == VersionState::Active)
                else {
                    continue;
                };
                let here = self.config.serves_from(&v.token)
                    || v.copies
                        .iter()
                        .any(|c| !c.drill_failing() && self.config.serves_from(&c.token));
                if here {
                    servable += 1;
                } else if not.len() < 100 {
                    not.push(key.name.clone());
                }
            }
        }
        NodeHealth {
            name: node.name.clone(),
            site: node.site.clone(),
            singletons: self.holds_singletons(),
            keys_servable: servable,
            keys_not_servable: not,
        }
    }

    fn node_event(&self, action: &str, detail: String) {
        let caller = self.system_caller();
        let mut entry = self.entry(&caller, action, None, None, Outcome::Ok, Some(detail));
        entry.reason = Some("availability".into());
        if let Err(e) = self.inventory.append_audit(&entry) {
            tracing::error!(action, error = %e, "could not audit a node event");
        }
    }
}
