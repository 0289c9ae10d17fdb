//! Principals and grants: who may call the service, and what each may do with which key.
//! Officers administer both from the console; the service only identifies callers.

use time::{Date, OffsetDateTime, Time};

use sha2::Digest as _;

use super::policy::{require_role, INVENTORY_READERS};
use super::{Caller, CallerKind, Engine, EngineError, Refusal};
use crate::config::PinSource;
use crate::identity::CertIdentity;
use crate::inventory::{Grant, GrantFilter, Outcome, Principal};
use crate::model::{GrantOps, Role};

/// Where a person's approval key is: on a token (read through PKCS#11), or given as a PEM
/// public key when the card cannot be reached from the KMS host.
#[derive(Debug, Clone)]
pub enum ApprovalKey {
    Card {
        uri: String,
        pin: PinSource,
    },
    Pem(Vec<u8>),
    /// Generated on a PIV card by `kms card enrol` (its public key and `piv:` URI).
    Piv {
        spki: Vec<u8>,
        uri: String,
    },
}

/// What `kms principal add` asks for.
#[derive(Debug, Clone)]
pub struct NewPrincipal {
    pub name: String,
    pub role: Role,
    pub cert_pem: Option<Vec<u8>>,
    pub approval_key: Option<ApprovalKey>,
    /// CIDR networks the service accepts this principal from (empty: any).
    pub allowed_networks: Vec<String>,
}

/// Break-glass grants end within this many days.
pub const BREAK_GLASS_MAX_DAYS: i64 = 30;

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
    /// Register a principal: applications by the SHA-256 fingerprint of their client
    /// certificate; people by the public key of the approval key on the token they hold.
    /// The first security officer may be registered by whoever operates the KMS host
    /// (bootstrap); after that only a security officer registers principals.
    pub fn add_principal(
        &self,
        caller: &Caller,
        req: NewPrincipal,
    ) -> Result<Principal, EngineError> {
        self.audited(caller, "principal.add", None, |note| {
            let bootstrap = !self.inventory.has_security_officer()?;
            if bootstrap {
                if req.role != Role::SecurityOfficer || req.name != caller.actor {
                    return Err(EngineError::denied(
                        Refusal::WrongRole,
                        "no security officer is registered yet: first register yourself as one (kms principal add YOUR-NAME --role security-officer --as YOUR-NAME)",
                    ));
                }
            } else {
                require_role(&self.inventory, caller, &[Role::SecurityOfficer], "register principals")?;
            }
            validate_name(&req.name, "principal")?;
            let cert = match req.cert_pem.as_deref() {
                Some(pem) => Some(
                    CertIdentity::from_pem(pem)
                        .map_err(|e| EngineError::InvalidInput(format!("--cert: {e}")))?,
                ),
                None if req.role == Role::Application => {
                    return Err(EngineError::InvalidInput(
                        "an application principal needs --cert (its client certificate, PEM)"
                            .into(),
                    ))
                }
                None => None,
            };
            let mut networks = Vec::new();
            for n in &req.allowed_networks {
                let net: ipnet::IpNet = n.parse().map_err(|_| {
                    EngineError::InvalidInput(format!(
                        "--allow-from '{n}' is not a network; write CIDR like 10.20.0.0/16 or 127.0.0.1/32"
                    ))
                })?;
                networks.push(net.to_string());
            }
            // The key, and the card it lives on (all the ids that card is known by).
            let (approval_key, approval_key_uri, cards) = match &req.approval_key {
                Some(k) => {
                    let (spki, uri, cards) = self.resolve_approval_key(k)?;
                    (Some(spki), uri, cards)
                }
                None => (None, None, Vec::new()),
            };
            if let Some(k) = &approval_key {
                if let Some(owner) = self.inventory.principal_by_approval_key(k)? {
                    return Err(EngineError::denied(
                        Refusal::SeparationOfDuties,
                        format!("this approval key is already registered to '{owner}'; one key, one person"),
                    ));
                }
            }
            // One card, one person: no other person's approval key may live on the same card.
            super::approval_keys::refuse_shared_card(&self.inventory, &req.name, &cards)?;
            if approval_key.is_none()
                && matches!(req.role, Role::SecurityAdmin | Role::Manager)
            {
                return Err(EngineError::InvalidInput(format!(
                    "a {} signs approvals: register them with --approval-key pkcs11:token=...;object=... (the key on the token they hold) or --approval-pubkey PEM",
                    req.role
                )));
            }
            let p = Principal {
                name: req.name.clone(),
                role: req.role,
                cert_fingerprint: cert.as_ref().map(|c| c.fingerprint.clone()),
                cert_subject: cert.as_ref().map(CertIdentity::describe),
                approval_key,
                approval_key_uri,
                allowed_networks: networks,
                disabled_at: None,
                disabled_by: None,
                created_by: caller.actor.clone(),
                created_at: OffsetDateTime::now_utc(),
            };
            note.diff = super::audit::diff(serde_json::Value::Null, serde_json::to_value(&p).unwrap_or_default());
            note.detail = Some(format!(
                "registered principal '{}' role={}{}{}{}{}",
                p.name,
                p.role,
                if bootstrap { " (bootstrap)" } else { "" },
                cert.map(|c| format!(" cert sha256={} subject={}", c.fingerprint, c.describe()))
                    .unwrap_or_default(),
                p.approval_key
                    .as_deref()
                    .map(|k| format!(" approval-key sha256={}", hex::encode(sha2::Sha256::digest(k))))
                    .unwrap_or_default(),
                if p.allowed_networks.is_empty() {
                    String::new()
                } else {
                    format!(" allow-from={}", p.allowed_networks.join(","))
                }
            ));
            let entry = self.change_entry(caller, "principal.add", None, note);
            self.inventory.add_principal(&p, cards.first().map(String::as_str), &entry)?;
            note.recorded = true;
            Ok(p)
        })
    }

    pub fn list_principals(&self, caller: &Caller) -> Result<Vec<Principal>, EngineError> {
        self.audited(caller, "principal.list", None, |_| {
            require_role(
                &self.inventory,
                caller,
                INVENTORY_READERS,
                "list principals",
            )?;
            Ok(self.inventory.principals()?)
        })
    }

    pub fn show_principal(&self, caller: &Caller, name: &str) -> Result<Principal, EngineError> {
        self.audited(caller, "principal.show", None, |_| {
            require_role(
                &self.inventory,
                caller,
                INVENTORY_READERS,
                "read principals",
            )?;
            Ok(self.inventory.principal(name)?)
        })
    }

    /// Disable a principal: refused from its next request on, even on an open connection.
    pub fn disable_principal(&self, caller: &Caller, name: &str) -> Result<(), EngineError> {
        self.audited(caller, "principal.disable", None, |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "disable principals",
            )?;
            let target = self.inventory.principal(name)?;
            if target.role == Role::SecurityOfficer
                && target.disabled_at.is_none()
                && self.inventory.enabled_security_officers()? <= 1
            {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    "this is the last enabled security officer; register another one first",
                ));
            }
            note.detail = Some(format!("disabled principal '{name}'"));
            note.diff = super::audit::diff(
                serde_json::json!({ "principal": name, "disabled": false }),
                serde_json::json!({ "principal": name, "disabled": true }),
            );
            let entry = self.change_entry(caller, "principal.disable", None, note);
            self.inventory.disable_principal(
                name,
                &caller.actor,
                OffsetDateTime::now_utc(),
                &entry,
            )?;
            note.recorded = true;
            Ok(())
        })
    }

    /// Break-glass: a security officer grants operations on a key directly, outside the signed
    /// request → verify → approve workflow, with a reason; never to themselves. Recorded as
    /// break-glass in the grant and the audit trail, and due for review like any grant.
    pub fn add_grant(&self, caller: &Caller, req: NewGrantRequest) -> Result<Grant, EngineError> {
        self.audited(caller, "grant.break-glass", Some(&req.key), |note| {
            require_role(&self.inventory, caller, &[Role::SecurityOfficer], "grant access directly (break-glass)")?;
            if caller.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(EngineError::InvalidInput(
                    "a break-glass grant needs --reason (the emergency that justifies skipping the approval workflow)".into(),
                ));
            }
            if req.principal == caller.actor {
                return Err(EngineError::denied(
                    Refusal::SeparationOfDuties,
                    "a security officer may not grant themselves access; use kms access request",
                ));
            }
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
            if not_after - now > time::Duration::days(BREAK_GLASS_MAX_DAYS + 1) {
                return Err(EngineError::InvalidInput(format!(
                    "a break-glass grant lasts at most {BREAK_GLASS_MAX_DAYS} days; longer access goes through kms access request"
                )));
            }
            let key = self.inventory.key(&req.key)?;
            if super::internal_key(&key.name) {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    format!("'{}' is used by kms itself and is never granted", key.name),
                ));
            }
            if key.current_version().is_none() {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{}' has no active version; nothing to grant", key.name),
                ));
            }
            let principal = self.inventory.principal(&req.principal)?;
            if principal.disabled_at.is_some() {
                return Err(EngineError::denied(
                    Refusal::PrincipalDisabled,
                    format!("principal '{}' is disabled", req.principal),
                ));
            }
            let new = crate::inventory::NewGrant {
                id: crate::inventory::new_grant_id(),
                principal: req.principal.clone(),
                key_name: req.key.clone(),
                ops: req.ops.clone(),
                not_before: now,
                not_after,
                ticket: req.ticket.clone(),
                justification: req.justification.clone(),
                created_by: caller.actor.clone(),
                request_id: None,
                review_due: Some(now + self.config.access.review_every.to_time()),
                break_glass: true,
            };
            note.detail = Some(format!(
                "BREAK-GLASS grant {} to '{}' on key '{}': {} until {} (ticket {}; {})",
                new.id,
                new.principal,
                new.key_name,
                new.ops,
                crate::inventory::fmt_time(new.not_after),
                new.ticket,
                new.justification
            ));
            note.diff = super::audit::diff(
                serde_json::Value::Null,
                serde_json::json!({
                    "id": new.id, "principal": new.principal, "key_name": new.key_name,
                    "ops": new.ops, "not_before": crate::inventory::fmt_time(new.not_before),
                    "not_after": crate::inventory::fmt_time(new.not_after), "ticket": new.ticket,
                    "justification": new.justification, "break_glass": true,
                    "review_due": new.review_due.map(crate::inventory::fmt_time),
                }),
            );
            let entry = self.change_entry(caller, "grant.break-glass", Some(&req.key), note);
            let g = self.inventory.add_grant(&new, now, &entry)?;
            note.recorded = true;
            Ok(g)
        })
    }

    pub fn list_grants(
        &self,
        caller: &Caller,
        filter: &GrantFilter,
    ) -> Result<Vec<Grant>, EngineError> {
        self.audited(caller, "grant.list", filter.key_name.as_deref(), |_| {
            require_role(&self.inventory, caller, INVENTORY_READERS, "list grants")?;
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
        let key_name = self.inventory.grant(id).ok().map(|g| g.key_name);
        self.audited(caller, "grant.revoke", key_name.as_deref(), |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer, Role::SecurityAdmin, Role::Manager],
                "revoke grants",
            )?;
            if reason.trim().is_empty() {
                return Err(EngineError::InvalidInput(
                    "--reason is required to revoke".into(),
                ));
            }
            let before = self.inventory.grant(id)?;
            let now = OffsetDateTime::now_utc();
            let mut after = serde_json::to_value(&before).unwrap_or_default();
            after["revoked_at"] = serde_json::json!(crate::inventory::fmt_time(now));
            after["revoked_by"] = serde_json::json!(caller.actor);
            after["revoke_reason"] = serde_json::json!(reason);
            note.diff =
                super::audit::diff(serde_json::to_value(&before).unwrap_or_default(), after);
            note.detail = Some(format!(
                "revoked grant {} of '{}' on '{}': {reason}",
                before.id, before.principal, before.key_name
            ));
            let entry = self.change_entry(caller, "grant.revoke", Some(&before.key_name), note);
            let g = self
                .inventory
                .revoke_grant(id, &caller.actor, reason, now, &entry)?;
            note.recorded = true;
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
            Some(p) if !source_allowed(&p.allowed_networks, source) => Some((
                Refusal::SourceNotAllowed,
                format!(
                    "principal '{}' may connect only from {}, not from {source}",
                    p.name,
                    p.allowed_networks.join(", ")
                ),
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
                    tally: Default::default(),
                    actor,
                    host: source.to_owned(),
                    reason: reason.clone(),
                    kind: CallerKind::Principal {
                        role: Role::Application,
                    },
                    role: found.as_ref().map(|p| p.role),
                    os_user: None,
                    cert_fingerprint: Some(cert.fingerprint.clone()),
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
            tally: Default::default(),
            actor: p.name,
            host: source.to_owned(),
            reason: reason.filter(|r| !r.trim().is_empty()),
            kind: CallerKind::Principal { role: p.role },
            role: Some(p.role),
            os_user: None,
            cert_fingerprint: Some(cert.fingerprint.clone()),
        })
    }
}

/// Whether `source` ("ip:port" or "ip") lies in one of `networks` (none = anywhere).
pub(crate) fn source_allowed(networks: &[String], source: &str) -> bool {
    if networks.is_empty() {
        return true;
    }
    let ip: Option<std::net::IpAddr> = source
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| source.parse().ok());
    let Some(ip) = ip.map(|i| i.to_canonical()) else {
        return false;
    };
    networks
        .iter()
        .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
        .any(|n| n.contains(&ip))
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
