//! Admission of a new service connection, right after its TLS handshake: a client certificate
//! that maps to no registered, enabled principal gets no HTTP at all.
//!
//! The refusal is audited, but rate-limited so a flood of connections cannot flood the audit
//! trail: at most one `auth.connect` row per certificate fingerprint per [`REFUSAL_WINDOW`]; the
//! refusals not recorded meanwhile are counted, and the next row that is written says how many.
//! The caller (the server) logs a refusal only when a row was written, so its log lines follow
//! the same rule.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Caller, CallerKind, Engine, EngineError, Refusal};
use crate::identity::CertIdentity;
use crate::inventory::Outcome;
use crate::model::Role;

/// At most one audit row per refused certificate in this window.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Windows kept at most; beyond it, expired ones are dropped (and, if all are live, the oldest).
const MAX_TRACKED: usize = 4096;

/// What the engine decided about a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The certificate belongs to a registered, enabled principal: serve HTTP.
    Admitted,
    /// Close the connection now.
    Refused {
        /// Why, for the log (names the certificate by subject and fingerprint; no secret).
        message: String,
        /// `Some(n)`: an audit row was written for this refusal, and `n` earlier refusals of
        /// the same certificate went unrecorded since the previous row. `None`: this refusal
        /// was counted, not recorded (a row for this certificate was written less than
        /// [`REFUSAL_WINDOW`] ago).
        recorded: Option<u64>,
    },
}

/// Per-fingerprint refusal windows.
#[derive(Debug, Default)]
pub(crate) struct RefusalThrottle {
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the last row for this certificate was written.
    recorded_at: Instant,
    /// Refusals since then that were not recorded.
    suppressed: u64,
}

impl RefusalThrottle {
    /// Whether this refusal of `fingerprint` gets a row (`Some(suppressed before it)`) or is only
    /// counted (`None`).
    fn check(&self, fingerprint: &str, now: Instant) -> Option<u64> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = windows.get_mut(fingerprint) {
            if now.saturating_duration_since(w.recorded_at) < REFUSAL_WINDOW {
                w.suppressed += 1;
                return None;
            }
            let suppressed = w.suppressed;
            *w = Window {
                recorded_at: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| now.saturating_duration_since(w.recorded_at) < REFUSAL_WINDOW);
            if windows.len() >= MAX_TRACKED {
                let oldest = windows
                    .iter()
                    .min_by_key(|(_, w)| w.recorded_at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    windows.remove(&k);
                }
            }
        }
        windows.insert(
            fingerprint.to_owned(),
            Window {
                recorded_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Forget a refusal that was counted as recorded but whose row could not be written, so the
    /// next refusal tries again.
    fn forget(&self, fingerprint: &str) {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(fingerprint);
    }
}

impl Engine {
    /// Decide whether a freshly handshaken service connection may send requests: only when its
    /// client certificate belongs to a registered principal that is not disabled. (Where the
    /// principal may connect from is checked per request, as before, with a 403 naming the rule.)
    ///
    /// A refusal writes an `auth.connect` / denied audit row, rate-limited per certificate (see
    /// the module documentation). An error means the inventory or the audit trail failed; the
    /// caller closes the connection then too.
    pub fn admit_connection(
        &self,
        cert: &CertIdentity,
        source: &str,
    ) -> Result<Admission, EngineError> {
        let found = self.inventory.principal_by_fingerprint(&cert.fingerprint)?;
        let (why, message) = match &found {
            None => (
                Refusal::UnknownPrincipal,
                format!(
                    "client certificate {} (sha256 {}) is not registered to any principal; connection closed",
                    cert.describe(),
                    cert.fingerprint
                ),
            ),
            Some(p) if p.disabled_at.is_some() => (
                Refusal::PrincipalDisabled,
                format!(
                    "principal '{}' (certificate sha256 {}) is disabled; connection closed",
                    p.name, cert.fingerprint
                ),
            ),
            Some(_) => return Ok(Admission::Admitted),
        };
        let Some(suppressed) = self.refusals.check(&cert.fingerprint, Instant::now()) else {
            return Ok(Admission::Refused {
                message,
                recorded: None,
            });
        };
        let detail = if suppressed == 0 {
            format!("{} ({})", message, why.code())
        } else {
            format!(
                "{} ({}); {suppressed} more refused connection(s) of this certificate since the previous record were not recorded (at most one record per certificate per {} s)",
                message,
                why.code(),
                REFUSAL_WINDOW.as_secs()
            )
        };
        let actor = found
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("cert:{}", cert.fingerprint.get(..16).unwrap_or("?")));
        let entry = self.entry(
            &Caller {
                tally: Default::default(),
                actor,
                host: source.to_owned(),
                reason: None,
                kind: CallerKind::Principal {
                    role: Role::Application,
                },
                role: found.as_ref().map(|p| p.role),
                os_user: None,
                cert_fingerprint: Some(cert.fingerprint.clone()),
            },
            "auth.connect",
            None,
            None,
            Outcome::Denied,
            Some(detail),
        );
        if let Err(e) = self.inventory.append_audit(&entry) {
            self.refusals.forget(&cert.fingerprint);
            return Err(EngineError::AuditFailed(e));
        }
        Ok(Admission::Refused {
            message,
            recorded: Some(suppressed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_certificate_per_window_with_the_count_of_the_rest() {
        let t = RefusalThrottle::default();
        let start = Instant::now();
        assert_eq!(t.check("aa", start), Some(0));
        assert_eq!(t.check("aa", start + Duration::from_secs(1)), None);
        assert_eq!(t.check("aa", start + Duration::from_secs(59)), None);
        // Another certificate has its own window.
        assert_eq!(t.check("bb", start + Duration::from_secs(2)), Some(0));
        // The next row for "aa" carries the two unrecorded refusals.
        assert_eq!(t.check("aa", start + REFUSAL_WINDOW), Some(2));
        assert_eq!(t.check("aa", start + REFUSAL_WINDOW), None);
        t.forget("aa");
        assert_eq!(t.check("aa", start + REFUSAL_WINDOW), Some(0));
    }

    #[test]
    fn the_table_of_windows_stays_bounded() {
        let t = RefusalThrottle::default();
        let start = Instant::now();
        for i in 0..(MAX_TRACKED + 10) {
            assert_eq!(t.check(&format!("fp{i}"), start), Some(0));
        }
        let n = t
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        assert!(n <= MAX_TRACKED, "{n}");
    }
}
