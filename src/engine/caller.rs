//! Who is asking, from where, and why: the facts every audit row carries.

/// The caller of an engine operation.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Identity recorded in the audit trail. For the officer CLI this is `--as NAME` or the OS
    /// user; it is asserted, not yet authenticated (principals with credentials come later).
    pub actor: String,
    /// System or device the request came from.
    pub host: String,
    /// Free-text reason, recorded as given.
    pub reason: Option<String>,
}

impl Caller {
    /// A caller on this machine: `actor` if given, else the OS user.
    pub fn local(actor: Option<String>, reason: Option<String>) -> Caller {
        let actor = actor
            .filter(|a| !a.trim().is_empty())
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
            .or_else(|| whoami::fallible::username().ok())
            .unwrap_or_else(|| "unknown-os-user".to_owned());
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".to_owned());
        Caller {
            actor,
            host,
            reason: reason.filter(|r| !r.trim().is_empty()),
        }
    }
}
