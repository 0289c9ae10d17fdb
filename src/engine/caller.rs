//! Who is asking, from where, and why: the facts every audit row carries, and what the policy
//! needs to decide.

use crate::model::Role;

/// How the caller reached the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// A person at the console (the `kms` CLI on the KMS host), acting as the registered
    /// principal named by `--as` (or the OS user); the principal's role decides what it may do.
    Console,
    /// A registered principal authenticated by the service (mutual TLS).
    Principal { role: Role },
    /// The KMS itself, for its own housekeeping (the audit key, checkpoints).
    System,
}

/// The caller of an engine operation.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal's name: from the client certificate (service), or `--as NAME` / the OS user
    /// at the console, which must name a registered principal.
    pub actor: String,
    /// System or device the request came from (host name, or the client's address).
    pub host: String,
    /// Free-text reason, recorded as given.
    pub reason: Option<String>,
    pub kind: CallerKind,
    /// The role, when already known (the service resolves it with the identity).
    pub role: Option<Role>,
    /// At the console: the operating-system user running `kms`.
    pub os_user: Option<String>,
    /// Over the service: SHA-256 of the client certificate.
    pub cert_fingerprint: Option<String>,
    /// The audit records written for this caller so far (see [`RecordTally`]).
    pub tally: crate::model::RecordTally,
}

impl Caller {
    /// An officer on this machine: `actor` if given, else the OS user.
    pub fn local(actor: Option<String>, reason: Option<String>) -> Caller {
        let os_user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
            .or_else(|| whoami::fallible::username().ok())
            .unwrap_or_else(|| "unknown-os-user".to_owned());
        let actor = actor
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| os_user.clone());
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".to_owned());
        Caller {
            tally: Default::default(),
            actor,
            host,
            reason: reason.filter(|r| !r.trim().is_empty()),
            kind: CallerKind::Console,
            role: None,
            os_user: Some(os_user),
            cert_fingerprint: None,
        }
    }

    /// The same caller with another reason (a per-request reason over the API).
    pub fn with_reason(&self, reason: Option<String>) -> Caller {
        let mut c = self.clone();
        c.reason = reason.filter(|r| !r.trim().is_empty());
        c
    }

    pub fn is_console(&self) -> bool {
        self.kind == CallerKind::Console
    }
}
