//! Principals and grants: who may call the service, and what each may do with which key.
//! Officers administer both from the console; the service only identifies callers.

use time::{Date, OffsetDateTime, Time};

use super::policy::require_officer;
use super::{Caller, CallerKind, Engine, EngineError, Refusal};
use crate::identity::CertIdentity;
use crate::inventory::{Grant, GrantFilter, Outcome, Principal};
use crate::model::{GrantOps, Role};

/// What `kms grant add` asks for.
#[derive(Debug, Clone)]
pub struct NewGrantRequest {
    pub principal: String,
    pub key: String,
    pub ops: GrantOps,
    /// Last day of validity (UTC); the grant ends at the following midnight.
    pub until: Date,
    pub ticket: String,
    pub justification: String,
}

impl Engine {
    /// Register a principal; for applications, by the SHA-256 fingerprint of `cert_pem`.
    pub fn add_principal(
        &self,
        caller: &Caller,
        name: &str,
        role: Role,
        cert_pem: Option<&[u8]>,
    ) -> Result<Principal, EngineError> {
        self.audited(caller, "principal.add", None, |note| {
            require_officer(caller, "register principals")?;
            validate_name(name, "principal")?;
            let cert = match cert_pem {
                Some(pem) => Some(
                    CertIdentity::from_pem(pem)
                        .map_err(|e| EngineError::InvalidInput(format!("--cert: {e}")))?,
                ),
                None if role == Role::Application => {
                    return Err(EngineError::InvalidInput(
                        "an application principal needs --cert (its client certificate, PEM)"
                            .into(),
                    ))
                }
                None => None,
            };
            let p = Principal {
                name: name.to_owned(),
                role,
                cert_fingerprint: cert.as_ref().map(|c| c.fingerprint.clone()),
                cert_subject: cert.as_ref().map(CertIdentity::describe),
                disabled_at: None,
                disabled_by: None,
                created_by: caller.actor.clone(),
                created_at: OffsetDateTime::now_utc(),
            };
            self.inventory.add_principal(&p)?;
            note.detail = Some(format!(
                "registered principal '{name}' role={role}{}",
                cert.map(|c| format!(" cert sha256={} subject={}", c.fingerprint, c.describe()))
                    .unwrap_or_default()
            ));
            Ok(p)
        })
    }

    pub fn list_principals(&self, caller: &Caller) -> Result<Vec<Principal>, EngineError> {
        self.audited(caller, "principal.list", None, |_| {
            require_officer(caller, "list principals")?;
            Ok(self.inventory.principals()?)
        })
    }

    pub fn show_principal(&self, caller: &Caller, name: &str) -> Result<Principal, EngineError> {
        self.audited(caller, "principal.show", None, |_| {
            require_officer(caller, "read principals")?;
            Ok(self.inventory.principal(name)?)
        })
    }

    /// Disable a principal: refused from its next request on, even on an open connection.
    pub fn disable_principal(&self, caller: &Caller, name: &str) -> Result<(), EngineError> {
        self.audited(caller, "principal.disable", None, |note| {
            require_officer(caller, "disable principals")?;
            self.inventory
                .disable_principal(name, &caller.actor, OffsetDateTime::now_utc())?;
            note.detail = Some(format!("disabled principal '{name}'"));
            Ok(())
        })
    }

    /// Grant a principal operations on a key until the end of a day.
    pub fn add_grant(&self, caller: &Caller, req: NewGrantRequest) -> Result<Grant, EngineError> {
        self.audited(caller, "grant.add", Some(&req.key), |note| {
            require_officer(caller, "grant access")?;
            if req.ops.is_empty() {
                return Err(EngineError::InvalidInput(
                    "--ops must list at least one operation".into(),
                ));
            }
            if req.ticket.trim().is_empty() || req.justification.trim().is_empty() {
                return Err(EngineError::InvalidInput(
                    "a grant needs --ticket and --justification".into(),
                ));
            }
            let now = OffsetDateTime::now_utc();
            let not_after = req
                .until
                .next_day()
                .unwrap_or(req.until)
                .with_time(Time::MIDNIGHT)
                .assume_utc();
            if not_after <= now {
                return Err(EngineError::InvalidInput(format!(
                    "--until {} is in the past",
                    req.until
                )));
            }
            let principal = self.inventory.principal(&req.principal)?;
            if principal.disabled_at.is_some() {
                return Err(EngineError::denied(
                    Refusal::PrincipalDisabled,
                    format!("principal '{}' is disabled", req.principal),
                ));
            }
            let g = self.inventory.add_grant(
                &crate::inventory::NewGrant {
                    principal: req.principal.clone(),
                    key_name: req.key.clone(),
                    ops: req.ops.clone(),
                    not_before: now,
                    not_after,
                    ticket: req.ticket.clone(),
                    justification: req.justification.clone(),
                    created_by: caller.actor.clone(),
                },
                now,
            )?;
            note.detail = Some(format!(
                "grant {} to '{}': {} until {} (ticket {}; {})",
                g.id,
                g.principal,
                g.ops,
                crate::inventory::fmt_time(g.not_after),
                g.ticket,
                g.justification
            ));
            Ok(g)
        })
    }

    pub fn list_grants(
        &self,
        caller: &Caller,
        filter: &GrantFilter,
    ) -> Result<Vec<Grant>, EngineError> {
        self.audited(caller, "grant.list", filter.key_name.as_deref(), |_| {
            require_officer(caller, "list grants")?;
            Ok(self.inventory.grants(filter, OffsetDateTime::now_utc())?)
        })
    }

    /// Revoke a grant; it stops working at the next request.
    pub fn revoke_grant(
        &self,
        caller: &Caller,
        id: &str,
        reason: &str,
    ) -> Result<Grant, EngineError> {
        self.audited(caller, "grant.revoke", None, |note| {
            require_officer(caller, "revoke grants")?;
            if reason.trim().is_empty() {
                return Err(EngineError::InvalidInput(
                    "--reason is required to revoke".into(),
                ));
            }
            let g = self.inventory.revoke_grant(
                id,
                &caller.actor,
                reason,
                OffsetDateTime::now_utc(),
            )?;
            note.detail = Some(format!(
                "revoked grant {} of '{}' on '{}': {reason}",
                g.id, g.principal, g.key_name
            ));
            Ok(g)
        })
    }

    /// Map an authenticated client certificate to its principal. Unknown or disabled identities
    /// are refused and audited; a known one is returned as the caller for this request.
    pub fn identify(
        &self,
        cert: &CertIdentity,
        source: &str,
        reason: Option<String>,
    ) -> Result<Caller, EngineError> {
        let found = self.inventory.principal_by_fingerprint(&cert.fingerprint)?;
        let refusal = match &found {
            None => Some((
                Refusal::UnknownPrincipal,
                format!(
                    "client certificate {} (sha256 {}) is not registered to any principal",
                    cert.describe(),
                    cert.fingerprint
                ),
            )),
            Some(p) if p.disabled_at.is_some() => Some((
                Refusal::PrincipalDisabled,
                format!("principal '{}' is disabled", p.name),
            )),
            Some(_) => None,
        };
        if let Some((why, message)) = refusal {
            let actor = found
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| format!("cert:{}", &cert.fingerprint[..16]));
            let entry = self.entry(
                &Caller {
                    actor,
                    host: source.to_owned(),
                    reason: reason.clone(),
                    kind: CallerKind::Principal {
                        role: Role::Application,
                    },
                },
                "auth.identify",
                None,
                None,
                Outcome::Denied,
                Some(message.clone()),
            );
            self.inventory
                .append_audit(&entry)
                .map_err(EngineError::AuditFailed)?;
            return Err(EngineError::denied(why, message));
        }
        let p = found.ok_or_else(|| EngineError::InvalidInput("principal vanished".into()))?;
        Ok(Caller {
            actor: p.name,
            host: source.to_owned(),
            reason: reason.filter(|r| !r.trim().is_empty()),
            kind: CallerKind::Principal { role: p.role },
        })
    }
}

/// Names of principals (and keys) are short, printable identifiers.
pub(crate) fn validate_name(name: &str, what: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidInput(format!(
            "invalid {what} name '{name}': use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}
