//! High availability: when the token holding a key version stops answering, operations run on
//! the version's backup copy; the primary is probed again every few seconds and used again as
//! soon as it answers. Both transitions are audited.
//!
//! "Stops answering" is decided by asking the token, not by the error: an operation error is
//! followed by a health probe (token info + a session call); only a token that fails the probe
//! is taken out. A wrong ciphertext or a missing object on a healthy token is the caller's error.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use super::audit::AuditNote;
use super::{Engine, EngineError};
use crate::hsm::{HsmError, Token};
use crate::inventory::{KeyVersion, Outcome};
use crate::model::ObjectId;

/// How long a failed token rests before the next attempt to use it again.
const PROBE_EVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(crate) struct Failover {
    down: Mutex<HashMap<String, Down>>,
}

struct Down {
    since: OffsetDateTime,
    next_probe: Instant,
    /// Every handle of the token forgotten while it was down: the module may be re-initialised
    /// only when all of them are gone (their sessions closed).
    old: Vec<Weak<Token>>,
    reason: String,
}

/// A token that is out of service right now.
#[derive(Debug, Clone, Serialize)]
pub struct TokenDown {
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub reason: String,
}

impl Failover {
    pub(crate) fn down_list(&self) -> Vec<TokenDown> {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<TokenDown> = down
            .iter()
            .map(|(k, d)| TokenDown {
                token: k.clone(),
                since: d.since,
                reason: d.reason.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.token.cmp(&b.token));
        out
    }

    pub(crate) fn is_down(&self, token: &str) -> bool {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.contains_key(token)
    }

    /// Whether to try the token now: `Some(false)` it is up; `Some(true)` it is down and this
    /// caller probes it (one at a time, every PROBE_EVERY); `None` it is down, use the copy.
    fn should_try(&self, token: &str) -> Option<bool> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match down.get_mut(token) {
            None => Some(false),
            Some(d) if Instant::now() >= d.next_probe => {
                d.next_probe = Instant::now() + PROBE_EVERY;
                Some(true)
            }
            Some(_) => None,
        }
    }
}

impl Engine {
    /// Run `op` on the token object holding `version`: on its own token, or — when that token
    /// stopped answering and failover is on — on its first healthy backup copy. Which copy served
    /// goes on the operation's audit note.
    pub(crate) fn on_version<T>(
        &self,
        note: &mut AuditNote,
        key: &crate::inventory::KeyRecord,
        version: &KeyVersion,
        op: impl Fn(&Token, &ObjectId) -> Result<T, HsmError>,
    ) -> Result<T, EngineError> {
        // Whichever token serves it, the object must be the one the inventory recorded.
        let op = |t: &Token, id: &ObjectId| {
            check_object(t, key, version, id)?;
            op(t, id)
        };
        let failover = self.config.backup.as_ref().is_some_and(|b| b.failover);
        let primary = version.token.as_str();
        // A node with a site serves only from tokens at its site (issue 13): a version made at
        // another site is served from its copy here, or not at all.
        let local = self.config.serves_from(primary);
        if !failover && local {
            let token = self.token_for(version)?;
            return Ok(op(&token, &version.object_id)?);
        }
        let mut first_error = None;
        let tried = if local {
            self.failover.should_try(primary)
        } else {
            None
        };
        if let Some(probe) = tried {
            if probe {
                self.prepare_probe(primary);
            }
            // Only a probe brings a token back: a request that started before the token was
            // marked down and happened to succeed proves nothing.
            match self.token_for(version) {
                Ok(token) => match op(&token, &version.object_id) {
                    Ok(v) => {
                        if probe {
                            self.token_back(primary);
                        }
                        return Ok(v);
                    }
                    Err(e) => {
                        if token.responds() {
                            // The token is fine: the request failed on its own merits.
                            if probe {
                                self.token_back(primary);
                            }
                            return Err(e.into());
                        }
                        self.token_lost(primary, &e.to_string());
                        first_error = Some(EngineError::from(e));
                    }
                },
                // A configuration mismatch or a refusal (a card-resident version asked for an HSM
                // operation) says nothing about the token's health.
                Err(e @ (EngineError::Misconfigured(_) | EngineError::Denied(..))) => {
                    return Err(e)
                }
                Err(e) => {
                    self.token_lost(primary, &e.to_string());
                    first_error = Some(e);
                }
            }
        }
        let mut last = first_error;
        for copy in version
            .copies
            .iter()
            .filter(|c| !c.drill_failing() && self.config.serves_from(&c.token))
        {
            if self.failover.is_down(&copy.token) && self.failover.should_try(&copy.token).is_none()
            {
                continue;
            }
            let token = match self.hsm.token(&copy.token) {
                Ok(t) if t.serial() == copy.token_serial => t,
                Ok(_) => continue,
                Err(e) => {
                    last = Some(e.into());
                    continue;
                }
            };
            match op(&token, &copy.object_id) {
                Ok(v) => {
                    let why = if local {
                        format!("token '{primary}' is down")
                    } else {
                        format!(
                            "this node serves site '{}' only",
                            self.config.node.site.as_deref().unwrap_or("")
                        )
                    };
                    note.served_by = Some(format!(
                        "served by the backup copy on token '{}' (serial {}): {why}",
                        copy.token, copy.token_serial
                    ));
                    return Ok(v);
                }
                Err(e) => last = Some(e.into()),
            }
        }
        if !local && last.is_none() {
            return Err(EngineError::NotOnSite(format!(
                "version {} of key '{}' is on token '{primary}' (site '{}') and has no usable copy at this node's site '{}' (node {}); send the request to a node at site '{}', or copy it here with `kms backup sync`",
                version.version,
                key.name,
                self.config.token_site(primary).unwrap_or("none"),
                self.config.node.site.as_deref().unwrap_or(""),
                self.config.node.name,
                self.config.token_site(primary).unwrap_or("none"),
            )));
        }
        Err(last.unwrap_or_else(|| {
            EngineError::Incomplete(format!(
                "token '{primary}' is down and version {} has no usable backup copy; see `kms token health`",
                version.version
            ))
        }))
    }

    /// Before probing a token that is down: let the module start afresh if it can. The `down`
    /// map is not held meanwhile, so a slow module never blocks requests served by copies.
    fn prepare_probe(&self, token: &str) {
        let old = {
            let mut down = self.failover.down.lock().unwrap_or_else(|p| p.into_inner());
            match down.get_mut(token) {
                Some(d) => {
                    d.old.retain(|w| w.strong_count() > 0);
                    d.old.clone()
                }
                None => return,
            }
        };
        self.hsm.reset_module(token, &old);
    }

    fn token_lost(&self, token: &str, reason: &str) {
        let old = self.hsm.forget(token);
        let mut down = self.failover.down.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = down.get_mut(token) {
            d.old.extend(old);
            return;
        }
        down.insert(
            token.to_owned(),
            Down {
                since: OffsetDateTime::now_utc(),
                next_probe: Instant::now() + PROBE_EVERY,
                old: old.into_iter().collect(),
                reason: reason.to_owned(),
            },
        );
        drop(down);
        tracing::error!(token, reason, "token failed; serving from backup copies");
        self.system_event(
            "token.failover",
            Outcome::Error,
            format!(
                "token '{token}' stopped answering ({reason}); operations are served from backup copies until it answers again{}",
                if self.hsm.module_shared(token) {
                    " (its PKCS#11 module is shared with another token, so kms cannot re-initialise it; if the token does not come back by itself, restart kms)"
                } else {
                    ""
                }
            ),
        );
    }

    fn token_back(&self, token: &str) {
        let was = {
            let mut down = self.failover.down.lock().unwrap_or_else(|p| p.into_inner());
            down.remove(token)
        };
        if let Some(d) = was {
            let secs = (OffsetDateTime::now_utc() - d.since).whole_seconds();
            tracing::warn!(token, "token answers again; serving from it");
            self.system_event(
                "token.failback",
                Outcome::Ok,
                format!("token '{token}' answers again after {secs} s; operations use it again"),
            );
        }
    }

    /// An audit record of something kms itself noticed.
    fn system_event(&self, action: &str, outcome: Outcome, detail: String) {
        let caller = self.system_caller();
        let mut entry = self.entry(&caller, action, None, None, outcome, Some(detail));
        entry.reason = Some("availability".into());
        if let Err(e) = self.inventory.append_audit(&entry) {
            tracing::error!(action, error = %e, "could not audit a token state change");
        }
    }

    /// Tokens out of service right now.
    pub fn tokens_down(&self) -> Vec<TokenDown> {
        self.failover.down_list()
    }
}

/// Refuse unless the object under `id` on `token` is version `version` of `key` as the
/// inventory recorded it: its label, key type and, for key pairs, public key.
pub(crate) fn check_object(
    token: &Token,
    key: &crate::inventory::KeyRecord,
    version: &KeyVersion,
    id: &ObjectId,
) -> Result<(), HsmError> {
    let label = crate::model::object_label(&key.name, version.version);
    token.check_identity(
        id,
        &crate::hsm::Expected {
            label: &label,
            key_type: key.key_type,
            public_key: version.public_key.as_deref(),
        },
    )
}
