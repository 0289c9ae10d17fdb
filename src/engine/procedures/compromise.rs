//! The compromised-key procedure: the version is compromised at once (no operation at all, except
//! an officer's audited break-glass decryption to re-encrypt data), a new version is generated and
//! activated, grants apply to it, and a report of who used the compromised version — when, from
//! where, for what — is printed and kept, with the re-encryption progress (rewraps done against
//! protections seen), until an officer closes it by destroying the version (destroyed-compromised).

use std::collections::BTreeMap;

use serde::Serialize;

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError, Refusal};
use super::rotation::Retire;
use crate::inventory::{AuditFilter, Compromise, KeyRecord, Outcome};
use crate::model::{Role, VersionState};

/// One principal's use of the compromised version, from the audit trail.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UsageSummary {
    pub actor: String,
    pub role: Option<String>,
    /// Hosts and client-certificate fingerprints the uses came from.
    pub sources: Vec<String>,
    pub first: String,
    pub last: String,
    /// Successful uses by action (key.sign, key.encrypt, ...).
    pub uses: BTreeMap<String, u64>,
}

/// What `kms key compromise` reports (and `--status` refreshes).
#[derive(Debug, Clone, Serialize)]
pub struct CompromiseReport {
    pub compromise: Compromise,
    pub key: String,
    pub version: u32,
    pub new_version: Option<u32>,
    pub users: Vec<UsageSummary>,
    /// Ciphertexts, data keys and signatures made with the version (its protections).
    pub protections_seen: u64,
    /// Ciphertexts and data keys moved off it since the compromise (rewraps).
    pub rewraps_done: u64,
    pub closed: bool,
}

const PROTECTING: &[&str] = &["key.encrypt", "key.data-key", "key.sign"];

impl Engine {
    /// Declare version `version` (default: the current one) of `name` compromised.
    pub fn compromise_key(
        &self,
        caller: &Caller,
        name: &str,
        version: Option<u32>,
        reason: &str,
    ) -> Result<CompromiseReport, EngineError> {
        self.audited(caller, "key.compromise", Some(name), |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "declare keys compromised",
            )?;
            if reason.trim().is_empty() {
                return Err(EngineError::InvalidInput(
                    "--reason must say what happened (incident ticket, what was exposed)".into(),
                ));
            }
            if super::super::internal_key(name) {
                return Err(EngineError::denied(
                    Refusal::NotSupported,
                    format!(
                        "'{name}' is kms's own key; replacing it while keeping what it signed or sealed verifiable is not supported yet (see ARCHITECTURE.md). Stop kms and contact the project"
                    ),
                ));
            }
            let key = self.inventory.key(name)?;
            let v = match version {
                Some(n) => key.version(n).cloned().ok_or_else(|| {
                    EngineError::InvalidInput(format!("key '{name}' has no version {n}"))
                })?,
                None => key.current_version().cloned().ok_or_else(|| {
                    EngineError::denied(
                        Refusal::KeyState,
                        format!("key '{name}' has no active version"),
                    )
                })?,
            };
            if !matches!(v.state, VersionState::Active | VersionState::Deactivated) {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!(
                        "version {} of '{name}' is {}; only an active or deactivated version can be declared compromised",
                        v.version, v.state
                    ),
                ));
            }
            note.key_version = Some(v.version);
            // 1. At once: the version is out of service.
            let mut entry = self.entry(
                caller,
                "key.compromised",
                Some(name),
                Some(v.version),
                Outcome::Ok,
                Some(format!("v{} declared compromised: {reason}", v.version)),
            );
            entry.diff = super::super::audit::diff(
                serde_json::json!({"version": v.version, "state": v.state.as_str()}),
                serde_json::json!({"version": v.version, "state": "compromised"}),
            );
            let declared_at = crate::clock::lifecycle_now();
            let id = format!("c-{}", uuid::Uuid::new_v4());
            let record = Compromise {
                id: id.clone(),
                key_id: key.id.clone(),
                version: v.version,
                reason: reason.to_owned(),
                declared_by: caller.actor.clone(),
                declared_at,
                replaced_by: None,
                report: serde_json::json!({}),
                closed_at: None,
                closed_by: None,
            };
            self.inventory.declare_compromise(&record, &entry)?;
            // 2. A new version replaces it, if it was the one in use.
            let mut new_version = None;
            if v.state == VersionState::Active {
                let fresh = self.inventory.key(name)?;
                match self.rotate_inner(caller, &fresh, Retire::AlreadyCompromised, "compromise") {
                    Ok(r) => new_version = Some(r.new_version),
                    Err(e) => {
                        note.detail = Some(format!(
                            "v{} compromised; generating its replacement FAILED ({e}); run `kms key rotate {name}`",
                            v.version
                        ));
                        return Err(EngineError::Incomplete(format!(
                            "v{} of '{name}' is compromised and out of service, but no replacement could be generated: {e}. Run `kms key rotate {name}` once the cause is fixed",
                            v.version
                        )));
                    }
                }
            }
            let report = self.compromise_report(&key, &id)?;
            self.inventory
                .update_compromise_report(&id, &serde_json::to_value(&report.users).unwrap_or_default(), new_version)?;
            note.detail = Some(format!(
                "v{} compromised ({reason}); replaced by {}; {} principal(s) used it, {} protection(s) seen",
                v.version,
                new_version.map(|n| format!("v{n}")).unwrap_or_else(|| "no new version (it was not the current one)".into()),
                report.users.len(),
                report.protections_seen
            ));
            self.compromise_report(&key, &id)
        })
    }

    /// The kept compromise reports of `name`, refreshed from the audit trail.
    pub fn compromise_status(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Vec<CompromiseReport>, EngineError> {
        self.audited(caller, "key.compromise-status", Some(name), |_| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer, Role::Auditor],
                "read compromise reports",
            )?;
            let key = self.inventory.key(name)?;
            let mut out = Vec::new();
            for c in self.inventory.compromises(&key.id)? {
                out.push(self.compromise_report(&key, &c.id)?);
            }
            Ok(out)
        })
    }

    /// Close a compromise: destroy the version everywhere (destroyed-compromised).
    pub fn close_compromise(
        &self,
        caller: &Caller,
        name: &str,
        version: Option<u32>,
        accept_loss: bool,
    ) -> Result<CompromiseReport, EngineError> {
        self.audited(caller, "key.compromise-close", Some(name), |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "close compromises",
            )?;
            let key = self.inventory.key(name)?;
            let open: Vec<Compromise> = self
                .inventory
                .compromises(&key.id)?
                .into_iter()
                .filter(|c| c.closed_at.is_none() && version.is_none_or(|n| c.version == n))
                .collect();
            let c = match open.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(EngineError::denied(
                        Refusal::KeyState,
                        format!("key '{name}' has no open compromise{}", version.map(|n| format!(" of v{n}")).unwrap_or_default()),
                    ))
                }
                _ => {
                    return Err(EngineError::InvalidInput(format!(
                        "key '{name}' has several open compromises; say which with --version"
                    )))
                }
            };
            note.key_version = Some(c.version);
            if caller.actor == c.declared_by {
                return Err(EngineError::denied(
                    Refusal::SeparationOfDuties,
                    format!(
                        "'{}' declared this compromise; a second security officer closes it (destroying v{} cannot be one person's decision)",
                        caller.actor, c.version
                    ),
                ));
            }
            let before = self.compromise_report(&key, &c.id)?;
            if before.rewraps_done < before.protections_seen && !accept_loss {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!(
                        "only {} of {} protections made with v{} were moved off it (`kms key rewrap --break-glass`); closing now makes the rest unreadable for good. Move them first, or pass --accept-loss with --reason",
                        before.rewraps_done, before.protections_seen, c.version
                    ),
                ));
            }
            if accept_loss && caller.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(EngineError::InvalidInput("--accept-loss needs --reason".into()));
            }
            self.destroy_version(
                caller,
                &key,
                c.version,
                "compromise closed",
                super::Authority::Compromise,
            )?;
            let entry = self.entry(
                caller,
                "key.compromise-closed",
                Some(name),
                Some(c.version),
                Outcome::Ok,
                Some(format!(
                    "compromise {} of v{} closed by '{}' (declared by '{}'); {} of {} protections moved{}",
                    c.id,
                    c.version,
                    caller.actor,
                    c.declared_by,
                    before.rewraps_done,
                    before.protections_seen,
                    if accept_loss { "; the rest accepted as lost" } else { "" }
                )),
            );
            self.inventory.close_compromise(&c.id, &caller.actor, &entry)?;
            note.detail = Some(format!(
                "compromise of v{} closed: destroyed on every token (destroyed-compromised); {} rewrap(s) done against {} protection(s) seen",
                c.version, before.rewraps_done, before.protections_seen
            ));
            let key = self.inventory.key(name)?;
            self.compromise_report(&key, &c.id)
        })
    }

    fn compromise_report(
        &self,
        key: &KeyRecord,
        id: &str,
    ) -> Result<CompromiseReport, EngineError> {
        let c = self
            .inventory
            .compromises(&key.id)?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| EngineError::Incomplete(format!("compromise {id} vanished")))?;
        let rows = self.inventory.audit_rows_filtered(&AuditFilter {
            key_name: Some(key.name.clone()),
            limit: u32::MAX,
            ..Default::default()
        })?;
        let mut users: BTreeMap<String, UsageSummary> = BTreeMap::new();
        let mut protections = 0;
        let mut rewraps = 0;
        let from_marker = format!("from v{} to", c.version);
        for r in &rows {
            let e = &r.entry;
            if e.outcome != Outcome::Ok {
                continue;
            }
            if (e.action == "key.rewrap" || e.action == "key.rewrap-break-glass")
                && e.at >= c.declared_at
                && e.detail
                    .as_deref()
                    .is_some_and(|d| d.contains(&from_marker))
            {
                rewraps += 1;
            }
            if e.key_version != Some(c.version) || !e.action.starts_with("key.") {
                continue;
            }
            let use_actions = [
                "key.sign",
                "key.verify",
                "key.encrypt",
                "key.decrypt",
                "key.data-key",
                "key.unwrap",
                "key.rewrap",
                "key.decrypt-break-glass",
            ];
            if !use_actions.contains(&e.action.as_str()) {
                continue;
            }
            if PROTECTING.contains(&e.action.as_str()) {
                protections += 1;
            }
            let at = crate::inventory::fmt_time(e.at);
            let u = users
                .entry(e.actor.clone())
                .or_insert_with(|| UsageSummary {
                    actor: e.actor.clone(),
                    role: e.role.clone(),
                    sources: Vec::new(),
                    first: at.clone(),
                    last: at.clone(),
                    uses: BTreeMap::new(),
                });
            let source = match &e.cert_fingerprint {
                Some(fp) => format!(
                    "{} (cert {})",
                    e.host,
                    fp.chars().take(16).collect::<String>()
                ),
                None => format!("{} ({})", e.host, e.os_user.clone().unwrap_or_default()),
            };
            if !u.sources.contains(&source) {
                u.sources.push(source);
            }
            if at < u.first {
                u.first = at.clone();
            }
            if at > u.last {
                u.last = at;
            }
            *u.uses.entry(e.action.clone()).or_default() += 1;
        }
        Ok(CompromiseReport {
            key: key.name.clone(),
            version: c.version,
            new_version: c.replaced_by,
            users: users.into_values().collect(),
            protections_seen: protections,
            rewraps_done: rewraps,
            closed: c.closed_at.is_some(),
            compromise: c,
        })
    }
}
