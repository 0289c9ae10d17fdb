//! Disposal on contract termination: a request naming the contract and a justification; a
//! security admin's verification and a manager's approval, each signed on their own card as in the
//! access workflow; a waiting period (cancellable); then secure deletion of every version on every
//! token, validated by searching each token for the CKA_IDs, and a destruction record signed by the
//! audit key. The key stays in the inventory as a tombstone: its name is never reused.

use serde::Serialize;
use sha2::{Digest as _, Sha384};
use time::OffsetDateTime;

use super::super::dual_control::Subject;
use super::super::dual_control::{CardAccess, Step};
use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError, Refusal};
use super::DestructionReport;
use crate::clock::{failpoint, lifecycle_now};
use crate::inventory::{Disposal, KeyRecord, Outcome, SignedStep};
use crate::model::Role;

/// The canonical text signers sign for a disposal step (same escaping as access approvals).
pub fn disposal_message(d: &Disposal, key: &str, step: &str, signer: &str) -> Vec<u8> {
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    let mut m = String::from("kms-key-disposal/v1\n");
    for (k, v) in [
        ("disposal", d.id.as_str()),
        ("step", step),
        ("signer", signer),
        ("requester", d.requested_by.as_str()),
        ("key", key),
        ("key-id", d.key_id.as_str()),
        ("contract", d.contract_ref.as_str()),
        ("justification", d.justification.as_str()),
        (
            "wait",
            &crate::duration::HumanDuration::from_secs(d.wait_secs)
                .map(|w| w.to_string())
                .unwrap_or_else(|| "0".into()),
        ),
    ] {
        m.push_str(&format!("{k}: {}\n", esc(v)));
    }
    m.into_bytes()
}

/// A disposal with its signed steps and, once done, its signed destruction record.
#[derive(Debug, Clone, Serialize)]
pub struct DisposalEvidence {
    pub disposal: Disposal,
    pub key: String,
    pub steps: Vec<SignedStep>,
    /// The destruction record is signed by the audit key (ECDSA P-384 over SHA-384, DER,
    /// base64), verifiable with `kms audit public-key`.
    pub record_signature_b64: Option<String>,
    pub audit_key_version: Option<u32>,
    /// The record's signature verifies with that audit key version's public key.
    pub record_signature_valid: Option<bool>,
    /// SHA-384 of the record, as the `key.dispose` audit record states it.
    pub record_sha384: Option<String>,
}

impl Engine {
    /// `kms key dispose NAME --contract-ref REF --justification TEXT [--wait D]`.
    pub fn request_disposal(
        &self,
        caller: &Caller,
        name: &str,
        contract_ref: &str,
        justification: &str,
        wait_secs: Option<u64>,
    ) -> Result<Disposal, EngineError> {
        self.audited(caller, "key.dispose-request", Some(name), |note| {
            require_role(&self.inventory, caller, &[Role::SecurityOfficer], "request disposals")?;
            if contract_ref.trim().is_empty() {
                return Err(EngineError::InvalidInput(
                    "--contract-ref must name the terminated contract (its reference confirms the termination)".into(),
                ));
            }
            if justification.trim().is_empty() {
                return Err(EngineError::InvalidInput(
                    "--justification must give the business reason for deleting the key".into(),
                ));
            }
            let wait = wait_secs.unwrap_or(self.config.lifecycle.disposal_wait_secs);
            let min = self.config.lifecycle.disposal_wait_min_secs;
            if wait < min {
                return Err(EngineError::InvalidInput(format!(
                    "--wait is shorter than the configured minimum waiting period ({} s, [lifecycle] disposal_wait_min)",
                    min
                )));
            }
            let key = self.inventory.key(name)?;
            if super::super::internal_key(name) {
                return Err(EngineError::denied(
                    Refusal::NotSupported,
                    format!("'{name}' is kms's own key and is not disposed of"),
                ));
            }
            if key.disposed_at.is_some() {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{name}' was disposed of already"),
                ));
            }
            if self
                .inventory
                .disposals()?
                .iter()
                .any(|d| d.key_id == key.id && matches!(d.state.as_str(), "requested" | "verified" | "approved"))
            {
                return Err(EngineError::denied(
                    Refusal::WrongState,
                    format!("key '{name}' already has an open disposal request (`kms key disposals`)"),
                ));
            }
            let d = Disposal {
                id: format!("d-{}", uuid::Uuid::new_v4()),
                key_id: key.id.clone(),
                contract_ref: contract_ref.to_owned(),
                justification: justification.to_owned(),
                requested_by: caller.actor.clone(),
                requested_at: OffsetDateTime::now_utc(),
                wait_secs: wait,
                state: "requested".into(),
                not_before: None,
                done_at: None,
                record: None,
                record_signature: None,
            };
            note.detail = Some(format!(
                "disposal {} requested: contract {contract_ref}; {justification}; waiting period {wait} s after approval",
                d.id
            ));
            let entry = self.change_entry(caller, "key.dispose-request", Some(name), note);
            self.inventory.insert_disposal(&d, &entry)?;
            note.recorded = true;
            Ok(self.inventory.disposal(&d.id)?)
        })
    }

    /// Verify (security admin) or approve (manager) a disposal, signing on the signer's card.
    pub fn sign_disposal(
        &self,
        caller: &Caller,
        id: &str,
        step: Step,
        card: &CardAccess,
    ) -> Result<Disposal, EngineError> {
        let d0 = self.inventory.disposal(id)?;
        let key_name = self.key_name_of(&d0.key_id);
        let action = format!("key.dispose-{}", step.as_str());
        self.audited(caller, &action, key_name.as_deref(), |note| {
            let roles: &[Role] = match step {
                Step::Verify => &[Role::SecurityAdmin],
                Step::Approve => &[Role::Manager],
                Step::Deny => {
                    return Err(EngineError::InvalidInput(
                        "a disposal is stopped with --cancel".into(),
                    ))
                }
            };
            let signer = require_role(
                &self.inventory,
                caller,
                roles,
                &format!("{} disposals", step.as_str()),
            )?;
            let d = self.inventory.disposal(id)?;
            let key = key_name.clone().unwrap_or_default();
            let excluded = [d.requested_by.as_str()];
            let subject = Subject {
                noun: "disposal",
                id,
                excluded: &excluded,
                excluded_as: "requested this disposal",
            };
            self.dual_check_signer(&subject, &signer, step)?;
            let wanted = if step == Step::Verify {
                "requested"
            } else {
                "verified"
            };
            if d.state != wanted {
                return Err(EngineError::denied(
                    Refusal::WrongState,
                    format!(
                        "disposal {id} is {}; it cannot be {} now",
                        d.state,
                        if step == Step::Verify {
                            "verified"
                        } else {
                            "approved"
                        }
                    ),
                ));
            }
            let earlier = self.inventory.signed_steps(id)?;
            let first = match step {
                Step::Approve => {
                    Some(
                        self.dual_check_second(&subject, &signer, &earlier, "verify", |v| {
                            self.check_disposal_step(&d, &key, v)
                        })?,
                    )
                }
                _ => None,
            };
            let message = disposal_message(&d, &key, step.as_str(), &signer.name);
            let record = self.dual_sign(&subject, &signer, step, first, message, None, card)?;
            let (to, not_before) = match step {
                Step::Verify => ("verified", None),
                _ => (
                    "approved",
                    Some(lifecycle_now() + time::Duration::seconds(d.wait_secs as i64)),
                ),
            };
            note.detail = Some(match not_before {
                Some(t) => format!(
                    "disposal {id} approved (signed); key destroyed on every token after {}",
                    crate::inventory::fmt_time(t)
                ),
                None => format!("disposal {id} verified (signed)"),
            });
            let entry = self.change_entry(caller, &action, key_name.as_deref(), note);
            self.inventory
                .disposal_step(id, &record, to, not_before, &entry)?;
            note.recorded = true;
            Ok(self.inventory.disposal(id)?)
        })
    }

    /// Stop a disposal before its destruction.
    pub fn cancel_disposal(&self, caller: &Caller, id: &str) -> Result<Disposal, EngineError> {
        let d0 = self.inventory.disposal(id)?;
        let key_name = self.key_name_of(&d0.key_id);
        self.audited(caller, "key.dispose-cancel", key_name.as_deref(), |note| {
            require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer, Role::SecurityAdmin, Role::Manager],
                "cancel disposals",
            )?;
            note.detail = Some(format!("disposal {id} cancelled; the key stays as it is"));
            let entry = self.change_entry(caller, "key.dispose-cancel", key_name.as_deref(), note);
            self.inventory
                .cancel_disposal(id, &entry)
                .map_err(|e| EngineError::denied(Refusal::WrongState, e.to_string()))?;
            note.recorded = true;
            Ok(self.inventory.disposal(id)?)
        })
    }

    /// Carry out an approved disposal whose waiting period is over (officer, or the scheduler).
    pub fn execute_disposal(&self, caller: &Caller, id: &str) -> Result<Disposal, EngineError> {
        let d0 = self.inventory.disposal(id)?;
        let key_name = self.key_name_of(&d0.key_id);
        self.audited(caller, "key.dispose", key_name.as_deref(), |note| {
            require_role(&self.inventory, caller, &[Role::SecurityOfficer], "carry out disposals")?;
            let d = self.inventory.disposal(id)?;
            let name = key_name.clone().unwrap_or_default();
            // `executing`: an execution was interrupted (a crash); it only rolls forward, but
            // its authority is proved again exactly as for a first execution: a row's state
            // is no evidence.
            let resuming = d.state == "executing";
            if !resuming && d.state != "approved" {
                return Err(EngineError::denied(
                    Refusal::WrongState,
                    format!("disposal {id} is {}; only an approved disposal is carried out", d.state),
                ));
            }
            self.check_disposal_authority(&d, &name)?;
            let key = self.inventory.key(&name)?;
            let (proc_id, _owner, record) = self.dispose_tokens(caller, &d, &key, !resuming)?;
            failpoint("dispose:destroyed");
            let text = serde_json::to_string(&record)
                .map_err(|e| EngineError::Incomplete(format!("encoding the destruction record: {e}")))?;
            let (signature, audit_version) = self.sign_with_audit_key(text.as_bytes())?;
            note.detail = Some(format!(
                "disposal {id} carried out: contract {}; {} version(s) destroyed and validated absent on every token; destruction record sha384={} signed by audit key v{audit_version}",
                d.contract_ref,
                record["versions"].as_array().map(Vec::len).unwrap_or(0),
                hex::encode(Sha384::digest(text.as_bytes()))
            ));
            let entry = self.change_entry(caller, "key.dispose", Some(&name), note);
            self.inventory.finish_disposal(id, &key.id, &text, &signature, &entry)?;
            self.inventory.end_procedure(&proc_id, "done")?;
            note.recorded = true;
            Ok(self.inventory.disposal(id)?)
        })
    }

    /// A disposal with its evidence (for `kms key disposals --show ID`).
    pub fn disposal_evidence(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<DisposalEvidence, EngineError> {
        self.audited(caller, "key.dispose-show", None, |_| {
            require_role(
                &self.inventory,
                caller,
                &[
                    Role::SecurityOfficer,
                    Role::SecurityAdmin,
                    Role::Manager,
                    Role::Auditor,
                ],
                "read disposals",
            )?;
            let d = self.inventory.disposal(id)?;
            let key = self.key_name_of(&d.key_id).unwrap_or_default();
            use base64::Engine as _;
            let audit_key_version = d
                .record
                .as_deref()
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
                .and_then(|v| v["audit_key_version"].as_u64())
                .and_then(|v| u32::try_from(v).ok());
            let audit_key = self.inventory.key(super::super::AUDIT_KEY).ok();
            let record_signature_valid = match (&d.record, &d.record_signature, audit_key_version) {
                (Some(r), Some(sig), Some(v)) => Some(
                    audit_key
                        .as_ref()
                        .and_then(|k| k.version(v))
                        .and_then(|kv| kv.public_key.as_deref())
                        .is_some_and(|spki| {
                            crate::softverify::verify(
                                crate::model::KeyType::EcP384,
                                spki,
                                r.as_bytes(),
                                sig,
                            )
                            .unwrap_or(false)
                        }),
                ),
                _ => None,
            };
            Ok(DisposalEvidence {
                record_signature_valid,
                record_sha384: d
                    .record
                    .as_deref()
                    .map(|r| hex::encode(Sha384::digest(r.as_bytes()))),
                steps: self.inventory.signed_steps(id)?,
                record_signature_b64: d
                    .record_signature
                    .as_ref()
                    .map(|s| base64::engine::general_purpose::STANDARD.encode(s)),
                audit_key_version,
                key,
                disposal: d,
            })
        })
    }

    /// Every disposal request.
    pub fn list_disposals(&self, caller: &Caller) -> Result<Vec<(Disposal, String)>, EngineError> {
        self.audited(caller, "key.dispose-list", None, |_| {
            require_role(
                &self.inventory,
                caller,
                &[
                    Role::SecurityOfficer,
                    Role::SecurityAdmin,
                    Role::Manager,
                    Role::Auditor,
                ],
                "read disposals",
            )?;
            Ok(self
                .inventory
                .disposals()?
                .into_iter()
                .map(|d| {
                    let k = self.key_name_of(&d.key_id).unwrap_or_default();
                    (d, k)
                })
                .collect())
        })
    }

    /// Destroy every remaining version on every token (idempotent, validated) and build the
    /// destruction record.
    fn dispose_tokens(
        &self,
        caller: &Caller,
        d: &Disposal,
        key: &KeyRecord,
        begin: bool,
    ) -> Result<(String, super::ownership::ProcedureLock, serde_json::Value), EngineError> {
        let data = serde_json::json!({"disposal": d.id});
        let intent = self.entry(
            caller,
            "key.dispose-intent",
            Some(&key.name),
            None,
            Outcome::Ok,
            Some(format!(
                "about to destroy every version of '{}' on every token (disposal {})",
                key.name, d.id
            )),
        );
        let (proc_id, _owner) = self.new_procedure()?;
        // The disposal becomes `executing` (no longer cancellable) in the same transaction that
        // records the procedure's intent.
        let proc_id = self.inventory.start_procedure_for_disposal(
            &proc_id,
            begin.then_some(d.id.as_str()),
            &key.id,
            &data,
            &caller.actor,
            &intent,
        )?;
        failpoint("dispose:intent");
        let mut versions = Vec::new();
        for v in &key.versions {
            let target = super::destruction::target_state(v.state);
            let report: DestructionReport =
                self.destroy_places(caller, key, v, target, super::Authority::Disposal)?;
            versions.push(report);
            failpoint("dispose:version-destroyed");
        }
        let audit_key_version = self
            .inventory
            .key(super::super::AUDIT_KEY)
            .ok()
            .and_then(|k| k.current_version().map(|v| v.version));
        Ok((
            proc_id,
            _owner,
            serde_json::json!({
                "format": "kms-destruction-record/v1",
                "disposal": d.id,
                "key": key.name,
                "key_id": key.id,
                "contract": d.contract_ref,
                "justification": d.justification,
                "requested_by": d.requested_by,
                "signed_steps": self.inventory.signed_steps(&d.id)?.iter().map(|s| serde_json::json!({"step": s.step, "signer": s.signer, "signed_at": crate::inventory::fmt_time(s.signed_at)})).collect::<Vec<_>>(),
                "versions": versions,
                "done_at": crate::inventory::fmt_time(OffsetDateTime::now_utc()),
            "note": "offline backup files (kms backup export) written before this disposal still hold the key wrapped under the backup KEK; destroy them too",
                "audit_key_version": audit_key_version,
            }),
        ))
    }

    /// What authorises a disposal's destruction, proved from evidence each time it is carried
    /// out (first time or resumed after a crash): the key is not kms's own; the verification
    /// (a security admin's) and the approval (a manager's) are both signed by the signers'
    /// registered keys over the disposal as it reads now; the requester, the verifier and the
    /// approver are three people with two different keys; and the waiting period (its length is
    /// part of the signed text) is over — counted from the approval's record in the hash-chained
    /// trail, from the approval's own time, and from the disposal's `not_before`, whichever is
    /// latest.
    fn check_disposal_authority(&self, d: &Disposal, name: &str) -> Result<(), EngineError> {
        let id = &d.id;
        let key = self.inventory.key(name)?;
        if super::super::internal_key(name) || key.id != d.key_id {
            return Err(EngineError::denied(
                Refusal::NotSupported,
                format!("disposal {id} names kms's own key '{name}' (or no key): it is never disposed of"),
            ));
        }
        let steps = self.inventory.signed_steps(id)?;
        let step = |want: &str| {
            steps.iter().find(|s| s.step == want).ok_or_else(|| {
                EngineError::denied(
                    Refusal::BadSignature,
                    format!("disposal {id} lacks its {want} signature; nothing is destroyed"),
                )
            })
        };
        let (verify, approve) = (step("verify")?, step("approve")?);
        self.check_disposal_step(d, name, verify)?;
        self.check_disposal_step(d, name, approve)?;
        crate::engine::approval_keys::check_two_signed(&self.inventory, verify, approve)?;
        let role_of = |who: &str| self.inventory.principal(who).ok().map(|p| p.role);
        if role_of(&verify.signer) != Some(Role::SecurityAdmin)
            || role_of(&approve.signer) != Some(Role::Manager)
        {
            return Err(EngineError::denied(
                Refusal::WrongRole,
                format!(
                    "disposal {id}: the verification must be a security admin's and the approval a manager's ('{}' verified, '{}' approved); nothing is destroyed",
                    verify.signer, approve.signer
                ),
            ));
        }
        if verify.signer == approve.signer
            || verify.public_key == approve.public_key
            || verify.signer == d.requested_by
            || approve.signer == d.requested_by
        {
            return Err(EngineError::denied(
                Refusal::SeparationOfDuties,
                format!(
                    "disposal {id}: requested by '{}', verified by '{}', approved by '{}' — three different people with two different keys are needed; nothing is destroyed",
                    d.requested_by, verify.signer, approve.signer
                ),
            ));
        }
        let wait = time::Duration::seconds(i64::try_from(d.wait_secs).unwrap_or(i64::MAX));
        let marker = format!("disposal {id} approved");
        let recorded = self
            .inventory
            .audit_rows_filtered(&crate::inventory::AuditFilter {
                key_name: Some(name.to_owned()),
                limit: u32::MAX,
                ..Default::default()
            })?
            .into_iter()
            .filter(|r| {
                r.entry.action == "key.dispose-approve"
                    && r.entry.outcome == Outcome::Ok
                    && r.entry.detail.as_deref().is_some_and(|t| t.starts_with(&marker))
            })
            .map(|r| r.entry.at)
            .max()
            .ok_or_else(|| {
                EngineError::denied(
                    Refusal::WrongState,
                    format!("disposal {id}: the audit trail holds no record of its approval; nothing is destroyed"),
                )
            })?;
        let mut until = recorded.max(approve.signed_at).saturating_add(wait);
        if let Some(nb) = d.not_before {
            until = until.max(nb);
        }
        if lifecycle_now() < until {
            return Err(EngineError::denied(
                Refusal::WrongState,
                format!(
                    "disposal {id} is in its waiting period until {} (`kms key dispose --cancel {id}` stops it)",
                    crate::inventory::fmt_time(until)
                ),
            ));
        }
        Ok(())
    }

    fn check_disposal_step(
        &self,
        d: &Disposal,
        key: &str,
        s: &SignedStep,
    ) -> Result<(), EngineError> {
        let expected = disposal_message(d, key, &s.step, &s.signer);
        let valid = crate::softverify::key_type_of_spki(&s.public_key)
            .and_then(|kt| crate::softverify::verify(kt, &s.public_key, &s.message, &s.signature))
            .unwrap_or(false);
        // The key must have been the signer's when they signed (their key history).
        let registered = crate::engine::approval_keys::key_of_signer_at(
            &self.inventory,
            &s.signer,
            &s.public_key,
            s.signed_at,
        )?
        .is_some();
        if expected != s.message || !valid || !registered {
            return Err(EngineError::denied(
                Refusal::BadSignature,
                format!(
                    "the {} signature of '{}' on disposal {} does not hold for the disposal as it reads now (altered, or not by their registered key)",
                    s.step, s.signer, d.id
                ),
            ));
        }
        Ok(())
    }

    /// Sign `message` (SHA-384) with the audit key; returns (DER signature, audit key version).
    fn sign_with_audit_key(&self, message: &[u8]) -> Result<(Vec<u8>, u32), EngineError> {
        let key = self.inventory.key(super::super::AUDIT_KEY)?;
        let v = key
            .current_version()
            .ok_or_else(|| EngineError::Incomplete("the audit key has no active version".into()))?;
        let token = self.token_for(v)?;
        let digest: [u8; 48] = Sha384::digest(message).into();
        Ok((token.sign_ecdsa_p384(&v.object_id, &digest)?, v.version))
    }

    fn key_name_of(&self, key_id: &str) -> Option<String> {
        self.inventory
            .keys(&Default::default())
            .ok()?
            .into_iter()
            .find(|k| k.id == key_id)
            .map(|k| k.name)
    }
}
