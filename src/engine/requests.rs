//! The access workflow (A9): request → verification by a security admin → approval by a manager,
//! each step a signature made on the signer's own token over a canonical text of the request;
//! then a time-bound grant, re-certified periodically (also signed) or lapsing.
//!
//! The signed text ("approval message") is documented in docs/access.md; it is stored with each signature
//! so anyone can check a step offline with openssl and the signer's public key.

use time::OffsetDateTime;

use super::dual_control::{CardAccess, Step, Subject};
use super::policy::{acting_principal, require_role, INVENTORY_READERS};
use super::{Caller, CallerKind, Engine, EngineError, Refusal};
use crate::duration::HumanDuration;
use crate::inventory::{AccessRequest, Grant, GrantFilter, NewGrant, RequestState, SignedStep};
use crate::model::{GrantOp, GrantOps, Role};
use crate::softverify;

/// What `kms access request` asks for.
#[derive(Debug, Clone)]
pub struct RequestInput {
    pub key: String,
    pub ops: GrantOps,
    pub duration: HumanDuration,
    pub ticket: String,
    pub justification: String,
    /// Who gets the access (default: the requester).
    pub grantee: Option<String>,
}

/// A request with every signed step and whether each still verifies.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestEvidence {
    pub request: AccessRequest,
    pub steps: Vec<StepEvidence>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StepEvidence {
    #[serde(flatten)]
    pub step: SignedStep,
    /// The stored message is exactly what the current request text says (nothing altered).
    pub message_matches_request: bool,
    /// The signature verifies over the stored message with the stored public key.
    pub signature_valid: bool,
    /// The stored public key was the signer's registered approval key when they signed (their
    /// key history, issue 31: a re-enrolled card keeps what it signed valid).
    pub key_is_registered: bool,
    /// The card the key lives on (`piv:SERIAL`, `pkcs11:serial=…`), when known.
    pub card: Option<String>,
    /// Whether the key is still the signer's current approval key.
    pub key_is_current: bool,
    pub message_text: String,
    pub signature_b64: String,
    pub public_key_pem: String,
}

/// The canonical text a signer signs. One `field: value` per line, fixed order, values with `\`,
/// CR and LF escaped; UTF-8; trailing newline.
pub fn approval_message(
    r: &AccessRequest,
    step: &str,
    signer: &str,
    note: Option<&str>,
) -> Vec<u8> {
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    let mut m = String::from("kms-access-approval/v1\n");
    for (k, v) in [
        ("request", r.id.as_str()),
        ("step", step),
        ("signer", signer),
        ("requester", r.requester.as_str()),
        ("grantee", r.grantee.as_str()),
        ("key", r.key_name.as_str()),
        ("key-id", r.key_id.as_str()),
        ("operations", &r.ops.to_string()),
        ("duration", &r.duration.to_string()),
        ("ticket", r.ticket.as_str()),
        ("justification", r.justification.as_str()),
    ] {
        m.push_str(&format!("{k}: {}\n", esc(v)));
    }
    if let Some(n) = note {
        m.push_str(&format!("note: {}\n", esc(n)));
    }
    m.into_bytes()
}

/// The text a reviewer signs to re-certify a grant.
pub fn recertify_message(g: &Grant, signer: &str, review_due: OffsetDateTime) -> Vec<u8> {
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    let mut m = String::from("kms-access-recertification/v1\n");
    for (k, v) in [
        ("grant", g.id.clone()),
        ("step", "recertify".to_owned()),
        ("signer", signer.to_owned()),
        ("grantee", g.principal.clone()),
        ("key", g.key_name.clone()),
        ("operations", g.ops.to_string()),
        ("not-after", crate::inventory::fmt_time(g.not_after)),
        ("review-due", crate::inventory::fmt_time(review_due)),
    ] {
        m.push_str(&format!("{k}: {}\n", esc(&v)));
    }
    m.into_bytes()
}

impl Engine {
    /// File an access request (pending until verified and approved).
    pub fn request_access(
        &self,
        caller: &Caller,
        input: RequestInput,
    ) -> Result<AccessRequest, EngineError> {
        self.audited(caller, "access.request", Some(&input.key), |note| {
            let me = acting_principal(&self.inventory, caller)?;
            let grantee = input.grantee.clone().unwrap_or_else(|| me.name.clone());
            if matches!(caller.kind, CallerKind::Principal { .. }) && grantee != me.name {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    "over the API a principal requests access for itself only",
                ));
            }
            let g = self.inventory.principal(&grantee)?;
            if g.disabled_at.is_some() {
                return Err(EngineError::denied(
                    Refusal::PrincipalDisabled,
                    format!("principal '{grantee}' is disabled"),
                ));
            }
            if input.ticket.trim().is_empty() || input.justification.trim().is_empty() {
                return Err(EngineError::InvalidInput(
                    "an access request needs --ticket and --justification".into(),
                ));
            }
            if input.ops.is_empty() {
                return Err(EngineError::InvalidInput("--ops must list at least one operation".into()));
            }
            let key = self.inventory.key(&input.key)?;
            if super::internal_key(&key.name) {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    format!("'{}' is used by kms itself and is never granted", key.name),
                ));
            }
            if key.current_version().is_none() {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{}' has no active version; there is nothing to request access to", key.name),
                ));
            }
            for op in input.ops.0.iter().copied() {
                if op == GrantOp::ReadInventory {
                    continue;
                }
                let allowed = key
                    .usage
                    .iter()
                    .any(|u| GrantOp::from(u) == op);
                if !allowed {
                    return Err(EngineError::InvalidInput(format!(
                        "key '{}' may not {op} at all (its acceptable usage is {}); request only operations it allows",
                        key.name, key.usage
                    )));
                }
            }
            let r = AccessRequest {
                id: format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
                requester: me.name.clone(),
                grantee,
                key_name: key.name.clone(),
                key_id: key.id.clone(),
                ops: input.ops.clone(),
                duration: input.duration,
                ticket: input.ticket.clone(),
                justification: input.justification.clone(),
                state: RequestState::Pending,
                created_at: OffsetDateTime::now_utc(),
                grant_id: None,
            };
            note.diff = super::audit::diff(serde_json::Value::Null, serde_json::to_value(&r).unwrap_or_default());
            note.detail = Some(format!(
                "request {} by '{}' for '{}': {} on '{}' for {} (ticket {}; {})",
                r.id, r.requester, r.grantee, r.ops, r.key_name, r.duration, r.ticket, r.justification
            ));
            let entry = self.change_entry(caller, "access.request", Some(&input.key), note);
            self.inventory.add_request(&r, &entry)?;
            note.recorded = true;
            Ok(r)
        })
    }

    /// Verify (security admin), approve (manager) or deny (either) a request, signing the
    /// canonical text on the signer's own token. Approval creates the grant.
    pub fn sign_request(
        &self,
        caller: &Caller,
        id: &str,
        step: Step,
        card: &CardAccess,
        note_text: Option<&str>,
    ) -> Result<(AccessRequest, Option<Grant>), EngineError> {
        let action = format!("access.{}", step.as_str());
        let key_name = self.inventory.request(id).ok().map(|r| r.key_name);
        self.audited(caller, &action, key_name.as_deref(), |note| {
            let roles: &[Role] = match step {
                Step::Verify => &[Role::SecurityAdmin],
                Step::Approve => &[Role::Manager],
                Step::Deny => &[Role::SecurityAdmin, Role::Manager],
            };
            let signer = require_role(
                &self.inventory,
                caller,
                roles,
                &format!("{} access requests", step.as_str()),
            )?;
            let r = self.inventory.request(id)?;
            let excluded = [r.requester.as_str(), r.grantee.as_str()];
            let subject = Subject {
                noun: "request",
                id,
                excluded: &excluded,
                excluded_as: "requested or would receive this access",
            };
            self.dual_check_signer(&subject, &signer, step)?;
            let earlier = self.inventory.signed_steps(id)?;
            let wanted_state = match step {
                Step::Verify => RequestState::Pending,
                Step::Approve => RequestState::Verified,
                Step::Deny => r.state,
            };
            if r.state != wanted_state
                || matches!(r.state, RequestState::Approved | RequestState::Denied)
            {
                return Err(EngineError::denied(
                    Refusal::WrongState,
                    format!(
                        "request {id} is {}; it cannot be {} now",
                        r.state.as_str(),
                        match step {
                            Step::Verify => "verified",
                            Step::Approve => "approved",
                            Step::Deny => "denied",
                        }
                    ),
                ));
            }
            // The verification must still hold for the request as it reads now.
            let first = match step {
                Step::Approve => Some(self.dual_check_second(
                    &subject,
                    &signer,
                    &earlier,
                    "verify",
                    |verify| self.check_step(&r, verify),
                )?),
                _ => None,
            };
            let message = approval_message(&r, step.as_str(), &signer.name, note_text);
            let record =
                self.dual_sign(&subject, &signer, step, first, message, note_text, card)?;
            let now = record.signed_at;
            let new_grant = (step == Step::Approve).then(|| NewGrant {
                id: crate::inventory::new_grant_id(),
                principal: r.grantee.clone(),
                key_name: r.key_name.clone(),
                ops: r.ops.clone(),
                not_before: now,
                not_after: now + r.duration.to_time(),
                ticket: r.ticket.clone(),
                justification: r.justification.clone(),
                created_by: signer.name.clone(),
                request_id: Some(id.to_owned()),
                review_due: Some(now + self.config.access.review_every.to_time()),
                break_glass: false,
            });
            let to_state = match step {
                Step::Verify => "verified",
                Step::Approve => "approved",
                Step::Deny => "denied",
            };
            note.detail = Some(match &new_grant {
                Some(g) => format!(
                    "approved request {id} (signed); grant {} to '{}': {} on '{}' until {}",
                    g.id,
                    g.principal,
                    g.ops,
                    g.key_name,
                    crate::inventory::fmt_time(g.not_after)
                ),
                None => format!(
                    "{} request {id} (signed){}",
                    step.as_str(),
                    note_text.map(|n| format!(": {n}")).unwrap_or_default()
                ),
            });
            note.diff = super::audit::diff(
                serde_json::json!({ "request": id, "state": r.state.as_str() }),
                serde_json::json!({
                    "request": id,
                    "state": to_state,
                    "grant": new_grant.as_ref().map(|g| g.id.clone()),
                }),
            );
            // The step, its effect and its audit record commit together.
            let entry = self.change_entry(caller, &action, Some(&r.key_name), note);
            let grant = match &new_grant {
                None if step == Step::Verify => {
                    self.inventory.verify_request(id, &record, &entry)?;
                    None
                }
                None => {
                    self.inventory.deny_request(id, &record, &entry)?;
                    None
                }
                Some(g) => Some(self.inventory.approve_request(id, &record, g, &entry)?),
            };
            note.recorded = true;
            let after = self.inventory.request(id)?;
            Ok((after, grant))
        })
    }

    /// Grants whose review is due within `horizon` (or overdue), for reviewers.
    pub fn grants_due_for_review(
        &self,
        caller: &Caller,
        horizon: HumanDuration,
    ) -> Result<Vec<Grant>, EngineError> {
        self.audited(caller, "access.review", None, |_| {
            require_role(
                &self.inventory,
                caller,
                INVENTORY_READERS,
                "list grants due for review",
            )?;
            let now = OffsetDateTime::now_utc();
            let limit = now + horizon.to_time();
            let all = self.inventory.grants(
                &GrantFilter {
                    all: true,
                    ..Default::default()
                },
                now,
            )?;
            Ok(all
                .into_iter()
                .filter(|g| g.revoked_at.is_none() && now < g.not_after)
                .filter(|g| g.review_due.is_some_and(|d| d <= limit))
                .collect())
        })
    }

    /// Re-certify a grant (security admin or manager, not its holder), signed on the reviewer's
    /// token: its review deadline moves one review period on.
    pub fn recertify_grant(
        &self,
        caller: &Caller,
        grant_id: &str,
        card: &CardAccess,
    ) -> Result<Grant, EngineError> {
        let key_name = self.inventory.grant(grant_id).ok().map(|g| g.key_name);
        self.audited(caller, "access.recertify", key_name.as_deref(), |note| {
            let signer = require_role(
                &self.inventory,
                caller,
                &[Role::SecurityAdmin, Role::Manager],
                "re-certify grants",
            )?;
            let g = self.inventory.grant(grant_id)?;
            if g.principal == signer.name {
                return Err(EngineError::denied(
                    Refusal::SeparationOfDuties,
                    "nobody re-certifies their own access",
                ));
            }
            let now = OffsetDateTime::now_utc();
            if g.revoked_at.is_some() || g.not_after <= now {
                return Err(EngineError::denied(
                    Refusal::WrongState,
                    format!("grant {grant_id} is revoked or expired"),
                ));
            }
            if g.review_lapsed(now) {
                return Err(EngineError::denied(
                    Refusal::WrongState,
                    format!(
                        "grant {grant_id} lapsed when its review deadline passed; a new access request is needed"
                    ),
                ));
            }
            let due = now + self.config.access.review_every.to_time();
            let message = recertify_message(&g, &signer.name, due);
            let (signature, _) = self.sign_on_card(&signer, card, &message)?;
            let record = SignedStep {
                subject: grant_id.to_owned(),
                step: "recertify".into(),
                signer: signer.name.clone(),
                message,
                signature,
                public_key: signer.approval_key.clone().unwrap_or_default(),
                signed_at: now,
                note: None,
            };
            note.diff = super::audit::diff(
                serde_json::json!({ "grant": grant_id, "review_due": g.review_due.map(crate::inventory::fmt_time) }),
                serde_json::json!({ "grant": grant_id, "review_due": crate::inventory::fmt_time(due) }),
            );
            note.detail = Some(format!(
                "re-certified grant {grant_id} (signed); next review by {}",
                crate::inventory::fmt_time(due)
            ));
            let entry = self.change_entry(caller, "access.recertify", Some(&g.key_name), note);
            let g = self.inventory.recertify_grant(grant_id, &record, due, &entry)?;
            note.recorded = true;
            Ok(g)
        })
    }

    /// Requests, newest first.
    pub fn list_requests(
        &self,
        caller: &Caller,
        state: Option<RequestState>,
    ) -> Result<Vec<AccessRequest>, EngineError> {
        self.audited(caller, "access.list", None, |_| {
            let me = acting_principal(&self.inventory, caller)?;
            let mut all = self.inventory.requests(state)?;
            if !INVENTORY_READERS.contains(&me.role) {
                all.retain(|r| r.requester == me.name || r.grantee == me.name);
            }
            Ok(all)
        })
    }

    /// A request with each signed step checked: message still matches, signature verifies,
    /// key still registered.
    pub fn request_evidence(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<RequestEvidence, EngineError> {
        self.audited(caller, "access.show", None, |_| {
            let me = acting_principal(&self.inventory, caller)?;
            let request = self.inventory.request(id)?;
            if !INVENTORY_READERS.contains(&me.role)
                && request.requester != me.name
                && request.grantee != me.name
            {
                return Err(EngineError::denied(
                    Refusal::WrongRole,
                    "only its requester, its grantee and inventory readers may see a request",
                ));
            }
            let mut steps = Vec::new();
            for s in self.inventory.signed_steps(id)? {
                steps.push(self.step_evidence(&request, s)?);
            }
            Ok(RequestEvidence { request, steps })
        })
    }

    fn step_evidence(&self, r: &AccessRequest, s: SignedStep) -> Result<StepEvidence, EngineError> {
        let expected = approval_message(r, &s.step, &s.signer, s.note.as_deref());
        let signature_valid = softverify::key_type_of_spki(&s.public_key)
            .and_then(|kt| softverify::verify(kt, &s.public_key, &s.message, &s.signature))
            .unwrap_or(false);
        let period = super::approval_keys::key_of_signer_at(
            &self.inventory,
            &s.signer,
            &s.public_key,
            s.signed_at,
        )?;
        let key_is_current = self
            .inventory
            .principal(&s.signer)
            .ok()
            .and_then(|p| p.approval_key)
            .is_some_and(|k| k == s.public_key);
        let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &s.public_key)
            .unwrap_or_default();
        use base64::Engine as _;
        Ok(StepEvidence {
            message_matches_request: expected == s.message,
            signature_valid,
            key_is_registered: period.is_some(),
            card: period.and_then(|p| p.card),
            key_is_current,
            message_text: String::from_utf8_lossy(&s.message).into_owned(),
            signature_b64: base64::engine::general_purpose::STANDARD.encode(&s.signature),
            public_key_pem: pem,
            step: s,
        })
    }

    /// A stored step must still be valid for the request as it reads now.
    fn check_step(&self, r: &AccessRequest, s: &SignedStep) -> Result<(), EngineError> {
        let e = self.step_evidence(r, s.clone())?;
        if !e.message_matches_request {
            return Err(EngineError::denied(
                Refusal::BadSignature,
                format!(
                    "request {} was altered after '{}' signed its {} step; it cannot proceed",
                    r.id, s.signer, s.step
                ),
            ));
        }
        if !e.signature_valid || !e.key_is_registered {
            return Err(EngineError::denied(
                Refusal::BadSignature,
                format!("the {} signature of '{}' on request {} does not verify against the approval key registered to them when they signed", s.step, s.signer, r.id),
            ));
        }
        Ok(())
    }
}
