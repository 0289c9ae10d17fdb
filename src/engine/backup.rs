//! Backup to a second token (A10): the key ceremony, copies of every key version, restore drills
//! and restore. The token mechanics are in `hsm/backup.rs`; this file decides what is copied
//! where, proves it, and keeps the inventory and the audit trail in step.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use super::policy::require_role;
use super::{Caller, Engine, EngineError, Refusal};
use crate::hsm::{HsmError, KekState, NoCopy, Token};
use crate::inventory::{BackupPair, KeyCopy, KeyRecord, KeyVersion, NewBackupPair, Outcome};
use crate::model::{KeyFamily, Operation, Role, VersionState};

/// What `kms backup sync` did.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    /// key@version copied now.
    pub copied: Vec<String>,
    /// key@version that already had a copy on the backup token.
    pub already: usize,
    /// key@version whose copy failed, with why.
    pub failed: Vec<(String, String)>,
    /// Pending versions activated because their copy now exists.
    pub activated: Vec<String>,
    /// key@version whose token answered, this time too, that it can never be copied (not
    /// extractable, or a type the token cannot wrap), with the token's reason. Not a failure.
    pub never_copyable: Vec<(String, String)>,
}

/// What `kms backup status` shows besides every key's versions and copies.
#[derive(Debug, Default, Serialize)]
pub struct BackupStatus {
    pub pairs: Vec<BackupPair>,
    /// Versions their token said can never have a backup copy, with why (recorded once).
    pub never_copyable: Vec<crate::inventory::NeverCopyable>,
}

/// One drill result.
#[derive(Debug, Clone, Serialize)]
pub struct DrillResult {
    pub key: String,
    pub version: u32,
    pub token: String,
    pub ok: bool,
    /// How the copy was proven, or why it failed.
    pub detail: String,
}

/// What `kms backup verify` found.
#[derive(Debug, Default, Serialize)]
pub struct DrillReport {
    pub results: Vec<DrillResult>,
    /// Pairings whose key-encryption key is missing or no longer trusted.
    pub pair_problems: Vec<String>,
    /// Active versions with no copy at all (backup configured).
    pub uncopied: Vec<String>,
    /// Versions backup by wrapping cannot apply to (card-resident keys), and why.
    pub not_applicable: Vec<String>,
}

impl DrillReport {
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| !r.ok).count()
            + self.pair_problems.len()
            + self.uncopied.len()
    }
}

/// What `kms backup restore` did.
#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub restored: Vec<String>,
    pub proven: Vec<String>,
    pub failed: Vec<(String, String)>,
}

const BACKUP_ADMINS: &[Role] = &[Role::SecurityOfficer];
const DRILL_ROLES: &[Role] = &[Role::SecurityOfficer, Role::Auditor];

impl Engine {
    /// The key ceremony: pair token `from` with token `to` so that keys on `from` can be copied to
    /// `to`. `say` receives an explanation of each step as it happens.
    pub fn backup_init(
        &self,
        caller: &Caller,
        from: &str,
        to: &str,
        say: &dyn Fn(&str),
    ) -> Result<BackupPair, EngineError> {
        self.audited(caller, "backup.init", None, |note| {
            require_role(&self.inventory, caller, BACKUP_ADMINS, "run a key ceremony")?;
            if from == to {
                return Err(EngineError::InvalidInput(format!(
                    "--from and --to are both '{from}'; a backup pairs two different tokens"
                )));
            }
            let from_cfg = self.hsm.config(from).cloned().ok_or_else(|| {
                EngineError::InvalidInput(format!("no token '{from}' in the configuration"))
            })?;
            if self.hsm.config(to).is_none() {
                return Err(EngineError::InvalidInput(format!(
                    "no token '{to}' in the configuration"
                )));
            }
            let _no_service = self.refuse_while_serving(from)?;
            let from_desc = self.hsm.describe(from)?;
            say(&format!(
                "1/4  Opening '{to}' as its user and generating an RSA-3072 transport key pair there. Its private half can only unwrap, never leaves '{to}', and is destroyed at the end."
            ));
            let dst = self.hsm.token(to)?;
            if dst.serial() == from_desc.serial {
                return Err(EngineError::InvalidInput(format!(
                    "'{from}' and '{to}' are the same token (serial {}); a backup needs a second token",
                    dst.serial()
                )));
            }
            let transport_id = dst.new_object_id()?;
            let kek_id = dst.new_object_id()?;
            // Unique per ceremony: a token may hold the KEKs of several pairings.
            let label = format!("kms:backup:{from}->{to}:{}", &kek_id.to_hex()[..8]);
            let transport = dst.generate_transport_pair(&transport_id, &label)?;
            say(&format!(
                "2/4  The KEK will go to '{to}' = token '{}' serial {} ({}). Check this is your backup HSM before typing the SO PIN. Logging in to '{from}' = token '{}' serial {} as its security officer: importing the transport public key as a trusted session key, generating an AES-256 key-encryption key (KEK), wrapping it under the transport key (RSA-OAEP) for '{to}', and installing it on '{from}' as a trusted, never-extractable key whose unwrap template forces every key unwrapped under it to stay sensitive. Only a trusted key can wrap kms keys, and only the SO can make one.",
                dst.label(),
                dst.serial(),
                dst.description().map(|d| d.model).unwrap_or_default(),
                from_desc.label,
                from_desc.serial
            ));
            let so_pin = from_cfg.so_pin.resolve_kind(from, "SO")?;
            let wrapped = match self.hsm.so_make_trusted_kek(
                from,
                &so_pin,
                &transport,
                &transport_id,
                &kek_id,
                &label,
            ) {
                Ok(w) => w,
                Err(e) => {
                    let _ = dst.destroy(&transport_id);
                    return Err(e.into());
                }
            };
            drop(so_pin);
            say(&format!(
                "3/4  Unwrapping the KEK on '{to}' under the same CKA_ID ({kek_id}) as an unwrap-only, non-extractable key; destroying the transport pair."
            ));
            if let Err(e) = dst.receive_kek(&transport_id, &kek_id, &label, &wrapped) {
                let _ = dst.destroy(&transport_id);
                return Err(EngineError::Incomplete(format!(
                    "the KEK was made on '{from}' but could not be unwrapped on '{to}' ({e}); no pairing was recorded. The unused KEK labelled '{label}' stays on '{from}' (non-extractable; anything wrapped under it can only be unwrapped sensitive), and `kms reconcile` lists it as an orphan until the SO removes it. Run the ceremony again"
                )));
            }
            say(&format!(
                "4/4  Checking both sides and recording the pairing. From now on new keys on '{from}' are copied to '{to}' before they become active; run `kms backup sync` for keys made before."
            ));
            let src = self.hsm.token(from)?;
            let src_kek = src.kek_state(&kek_id)?;
            let dst_kek = dst.kek_state(&kek_id)?;
            if !(src_kek.present && src_kek.trusted && src_kek.wrap && dst_kek.present && dst_kek.unwrap) {
                return Err(EngineError::Incomplete(format!(
                    "after the ceremony the KEK is not as it must be (on '{from}': {src_kek:?}; on '{to}': {dst_kek:?}); nothing was recorded"
                )));
            }
            let pair = NewBackupPair {
                from_token: from.to_owned(),
                from_serial: src.serial().to_owned(),
                to_token: to.to_owned(),
                to_serial: dst.serial().to_owned(),
                kek_id: kek_id.clone(),
                transport_id,
                created_by: caller.actor.clone(),
            };
            note.detail = Some(format!(
                "paired token '{from}' (serial {}) -> '{to}' (serial {}); trusted KEK cka_id={kek_id}",
                pair.from_serial, pair.to_serial
            ));
            let mut entry = self.change_entry(caller, "backup.init", None, note);
            entry.diff = super::audit::diff(
                serde_json::Value::Null,
                serde_json::json!({"from": from, "from_serial": pair.from_serial,
                    "to": to, "to_serial": pair.to_serial, "kek_id": kek_id.to_hex()}),
            );
            let stored = self
                .inventory
                .insert_backup_pair(&pair, OffsetDateTime::now_utc(), &entry)?;
            note.recorded = true;
            Ok(stored)
        })
    }

    /// The pairing new keys are copied under: from the key token to the configured backup token.
    /// `None` when no backup is configured or no ceremony was held yet.
    pub(crate) fn backup_target(&self) -> Result<Option<BackupPair>, EngineError> {
        let Some(backup) = &self.config.backup else {
            return Ok(None);
        };
        let from = self.hsm.describe(&self.config.key_token)?;
        let to = self.hsm.describe(&backup.token)?;
        Ok(self.inventory.backup_pair(&from.serial, &to.serial)?)
    }

    /// Copy one version to the pairing's `to` token (replacing a broken copy under the same
    /// CKA_ID), and prove the copy with a drill. Returns the copy record (not yet stored).
    pub(crate) fn copy_version(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        public_key: Option<&[u8]>,
        pair: &BackupPair,
    ) -> Result<KeyCopy, EngineError> {
        let src = self.paired_token(&pair.from_token, &pair.from_serial)?;
        let dst = self.paired_token(&pair.to_token, &pair.to_serial)?;
        let mut copy = KeyCopy {
            token: pair.to_token.clone(),
            token_label: dst.label().to_owned(),
            token_serial: dst.serial().to_owned(),
            object_id: version.object_id.clone(),
            pair_id: pair.id,
            copied_at: OffsetDateTime::now_utc(),
            verified_at: None,
            drill_failed_at: None,
            drill_error: None,
        };
        if dst.exists(&version.object_id)? {
            // A copy (or part of one) is already there: keep it if it proves itself, so a good
            // copy is never destroyed for a retry that might fail.
            if drill(key, version, public_key, Some(&src), &dst, &copy).is_ok() {
                copy.verified_at = Some(OffsetDateTime::now_utc());
                return Ok(copy);
            }
            dst.destroy(&version.object_id)?;
        }
        let wrapped = src.wrap_for_copy(&pair.kek_id, &version.object_id, key.key_type)?;
        let label = crate::model::object_label(&key.name, version.version);
        dst.unwrap_copy(
            &pair.kek_id,
            &version.object_id,
            key.key_type,
            &label,
            &key.usage,
            &wrapped,
        )?;
        match drill(key, version, public_key, Some(&src), &dst, &copy) {
            Ok(_) => copy.verified_at = Some(OffsetDateTime::now_utc()),
            Err(why) => {
                let _ = dst.destroy(&version.object_id);
                return Err(EngineError::Incomplete(format!(
                    "the copy of '{}' v{} on '{}' failed its drill ({why}); it was destroyed",
                    key.name, version.version, pair.to_token
                )));
            }
        }
        Ok(copy)
    }

    /// A token of a pairing, checked to still be the token the pairing was made with.
    fn paired_token(&self, name: &str, serial: &str) -> Result<Arc<Token>, EngineError> {
        let t = self.hsm.token(name)?;
        if t.serial() != serial {
            return Err(EngineError::Misconfigured(format!(
                "token '{name}' is now serial {}, but the backup pairing was made with serial {serial}; run `kms backup init` for the new token",
                t.serial()
            )));
        }
        Ok(t)
    }

    /// Copy every version that has no copy yet (keys made before the ceremony, or whose copy
    /// failed), and activate pending versions whose only missing step was the copy.
    pub fn backup_sync(&self, caller: &Caller) -> Result<SyncReport, EngineError> {
        self.audited(caller, "backup.sync", None, |note| {
            require_role(
                &self.inventory,
                caller,
                BACKUP_ADMINS,
                "copy keys to the backup token",
            )?;
            let pair = self.backup_target()?.ok_or_else(no_pairing)?;
            let mut report = SyncReport::default();
            for key in self.inventory.keys(&Default::default())? {
                for v in &key.versions {
                    let label = format!("{}@v{}", key.name, v.version);
                    let waiting = v.state == VersionState::Pending && v.pending_reason.is_some();
                    if !holds_data(v.state) && !waiting {
                        continue;
                    }
                    if v.token_serial != pair.from_serial {
                        continue;
                    }
                    let has_copy = v
                        .copies
                        .iter()
                        .any(|c| c.token_serial == pair.to_serial && !c.drill_failing());
                    if has_copy && !waiting {
                        report.already += 1;
                        continue;
                    }
                    match self.sync_one(caller, &key, v, &pair, waiting) {
                        Ok(()) if waiting => report.activated.push(label),
                        Ok(()) => report.copied.push(label),
                        Err(EngineError::Hsm(HsmError::NeverCopyable { code, why, .. })) => {
                            match self.note_never_copyable(caller, &key, v, &pair, code, &why) {
                                Ok(()) => report.never_copyable.push((label, why)),
                                Err(e) => report.failed.push((label, e.to_string())),
                            }
                        }
                        Err(e) => report.failed.push((label, e.to_string())),
                    }
                }
            }
            note.detail = Some(format!(
                "copied {}, activated {}, already copied {}, never copyable {}, failed {}",
                report.copied.len(),
                report.activated.len(),
                report.already,
                report.never_copyable.len(),
                report.failed.len()
            ));
            Ok(report)
        })
    }

    /// The token answered that `v` can never be copied: check the object is the one this
    /// version names (label, type, public key: the identity check), then record the finding
    /// once, with its audit record. The row is memory only: the next sync asks the token again.
    fn note_never_copyable(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        v: &KeyVersion,
        pair: &BackupPair,
        code: NoCopy,
        why: &str,
    ) -> Result<(), EngineError> {
        let src = self.paired_token(&pair.from_token, &pair.from_serial)?;
        super::failover::check_object(&src, key, v, &v.object_id)?;
        self.record_never_copyable(caller, key, v, src.serial(), code, why)
    }

    /// Record (once, audited as `backup.never-copyable`) that the token said `v` can never be
    /// copied. Callers have the token's answer and have checked the object's identity.
    pub(crate) fn record_never_copyable(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        v: &KeyVersion,
        serial: &str,
        code: NoCopy,
        why: &str,
    ) -> Result<(), EngineError> {
        let entry = self.entry(
            caller,
            "backup.never-copyable",
            Some(&key.name),
            Some(v.version),
            Outcome::Ok,
            Some(format!(
                "v{} (token serial {serial}, cka_id={}) can never have a backup copy: {why}",
                v.version, v.object_id
            )),
        );
        self.inventory.record_never_copyable(
            &key.id,
            v.version,
            serial,
            &v.object_id,
            code.as_str(),
            why,
            OffsetDateTime::now_utc(),
            &entry,
        )?;
        Ok(())
    }

    /// `kms backup status`: the pairings and the versions that can never have a copy.
    pub fn backup_status(&self, caller: &Caller) -> Result<BackupStatus, EngineError> {
        self.audited(caller, "backup.status", None, |_| {
            require_role(
                &self.inventory,
                caller,
                DRILL_ROLES,
                "read the backup status",
            )?;
            Ok(BackupStatus {
                pairs: self.inventory.backup_pairs()?,
                never_copyable: self.inventory.never_copyable()?,
            })
        })
    }

    fn sync_one(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        v: &KeyVersion,
        pair: &BackupPair,
        waiting: bool,
    ) -> Result<(), EngineError> {
        let src = self.paired_token(&pair.from_token, &pair.from_serial)?;
        let public_key = if key.key_type.is_symmetric() {
            None
        } else {
            match &v.public_key {
                Some(p) => Some(p.clone()),
                None => Some(src.public_key(&v.object_id, key.key_type)?),
            }
        };
        let copy = self.copy_version(key, v, public_key.as_deref(), pair)?;
        let detail = format!(
            "backup copy of v{} on token '{}' (serial {}) cka_id={}, drill passed",
            v.version, copy.token, copy.token_serial, copy.object_id
        );
        if waiting {
            let entry = self.entry(
                caller,
                "key.activate",
                Some(&key.name),
                Some(v.version),
                Outcome::Ok,
                Some(format!("{detail}; version activated")),
            );
            self.inventory.activate_version(
                &key.id,
                v.version,
                public_key.as_deref(),
                Some(&copy),
                crate::clock::lifecycle_now(),
                &entry,
            )?;
            self.inventory.forget_never_copyable(&key.id, v.version)?;
        } else {
            let entry = self.entry(
                caller,
                "backup.copy",
                Some(&key.name),
                Some(v.version),
                Outcome::Ok,
                Some(detail),
            );
            self.inventory
                .record_copy(&key.id, v.version, &copy, &entry)?;
        }
        Ok(())
    }

    /// The restore drill: prove every backup copy of `key` (or of every key) works, without
    /// taking any key out of a token. Each outcome is recorded on the copy and audited.
    pub fn backup_verify(
        &self,
        caller: &Caller,
        key: Option<&str>,
    ) -> Result<DrillReport, EngineError> {
        self.audited(caller, "backup.verify", key, |note| {
            require_role(&self.inventory, caller, DRILL_ROLES, "run restore drills")?;
            let keys = match key {
                Some(k) => vec![self.inventory.key(k)?],
                None => self.inventory.keys(&Default::default())?,
            };
            let mut report = DrillReport::default();
            for pair in self.inventory.backup_pairs()? {
                if let Some(p) = self.pair_problem(&pair) {
                    report.pair_problems.push(p);
                }
            }
            let target = match self.config.backup {
                Some(_) => self.backup_target()?,
                None => None,
            };
            let never: std::collections::HashSet<(String, u32)> = self
                .inventory
                .never_copyable()?
                .into_iter()
                .map(|n| (n.key, n.version))
                .collect();
            for key in &keys {
                for v in key.versions.iter().filter(|v| holds_data(v.state)) {
                    if v.token == super::CARD_TOKEN {
                        report.not_applicable.push(format!(
                            "{}@v{}: on PIV card {} — a card key cannot be wrapped out of the card, so it has no backup copy",
                            key.name, v.version, v.token_serial
                        ));
                        continue;
                    }
                    if v.copies.is_empty() {
                        let label = format!("{}@v{}", key.name, v.version);
                        match &target {
                            // Recorded as never copyable: the token is asked again, so the
                            // row alone never excuses a missing copy.
                            Some(pair) if never.contains(&(key.name.clone(), v.version)) => {
                                match self.never_copyable_now(key, v, pair) {
                                    Some(why) => report
                                        .not_applicable
                                        .push(format!("{label}: never copyable: {why}")),
                                    None => report.uncopied.push(label),
                                }
                            }
                            Some(_) => report.uncopied.push(label),
                            None => {}
                        }
                        continue;
                    }
                    for copy in &v.copies {
                        report.results.push(self.drill_copy(caller, key, v, copy)?);
                    }
                }
            }
            note.detail = Some(format!(
                "{} copies drilled, {} failed; {} pairing problems; {} active versions without a copy",
                report.results.len(),
                report.results.iter().filter(|r| !r.ok).count(),
                report.pair_problems.len(),
                report.uncopied.len()
            ));
            self.drill_failures.store(
                report.failures() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            Ok(report)
        })
    }

    /// The token's answer, now, that `v` can never be copied (`None`: it can, or the token
    /// could not say). Wraps the key under the pairing's KEK and drops the blob.
    fn never_copyable_now(
        &self,
        key: &KeyRecord,
        v: &KeyVersion,
        pair: &BackupPair,
    ) -> Option<String> {
        let src = self
            .paired_token(&pair.from_token, &pair.from_serial)
            .ok()?;
        if v.token_serial != pair.from_serial
            || super::failover::check_object(&src, key, v, &v.object_id).is_err()
        {
            return None;
        }
        match src.wrap_for_copy(&pair.kek_id, &v.object_id, key.key_type) {
            Err(HsmError::NeverCopyable { why, .. }) => Some(why),
            _ => None,
        }
    }

    /// The drill `kms serve` runs every `[backup] drill_every_secs`, as kms itself.
    pub fn scheduled_drill(&self) -> Result<DrillReport, EngineError> {
        let mut caller = self.system_caller();
        caller.reason = Some("scheduled restore drill".into());
        self.backup_verify(&caller, None)
    }

    /// Problems the last restore drill of this process found.
    pub fn backup_drill_failures(&self) -> u64 {
        self.drill_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn pair_problem(&self, pair: &BackupPair) -> Option<String> {
        let check = |name: &str, serial: &str, want: fn(KekState) -> bool| -> Option<String> {
            let t = match self.hsm.token(name) {
                Ok(t) if t.serial() == serial => t,
                // A pairing with a token that was replaced is history, not a problem.
                Ok(_) => return None,
                Err(e) => {
                    return Some(format!(
                        "pairing {} ({}): token '{name}': {e}",
                        pair.id,
                        pair_name(pair)
                    ))
                }
            };
            match t.kek_state(&pair.kek_id) {
                Ok(st) if want(st) => None,
                Ok(st) => Some(format!(
                    "pairing {} ({}): the key-encryption key {} on '{name}' is {}",
                    pair.id,
                    pair_name(pair),
                    pair.kek_id,
                    if st.present {
                        "no longer trusted/usable as made"
                    } else {
                        "missing"
                    }
                )),
                Err(e) => Some(format!("pairing {}: token '{name}': {e}", pair.id)),
            }
        };
        check(&pair.from_token, &pair.from_serial, |s| {
            s.present && s.trusted && s.wrap
        })
        .or_else(|| check(&pair.to_token, &pair.to_serial, |s| s.present && s.unwrap))
    }

    fn drill_copy(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        v: &KeyVersion,
        copy: &KeyCopy,
    ) -> Result<DrillResult, EngineError> {
        let outcome = (|| -> Result<String, String> {
            let dst = self.hsm.token(&copy.token).map_err(|e| e.to_string())?;
            if dst.serial() != copy.token_serial {
                return Err(format!(
                    "token '{}' is now serial {}, the copy was made on serial {}",
                    copy.token,
                    dst.serial(),
                    copy.token_serial
                ));
            }
            let src = if self.failover.is_down(&v.token) {
                None
            } else {
                self.token_for(v).ok()
            };
            drill(key, v, v.public_key.as_deref(), src.as_deref(), &dst, copy)
        })();
        if outcome.as_ref().is_err_and(|e| e == ORIGINAL_UNREACHABLE) {
            return Ok(DrillResult {
                key: key.name.clone(),
                version: v.version,
                token: copy.token.clone(),
                ok: false,
                detail: ORIGINAL_UNREACHABLE.to_owned(),
            });
        }
        let now = OffsetDateTime::now_utc();
        let (ok, detail) = match &outcome {
            Ok(how) => (true, how.clone()),
            Err(why) => (false, why.clone()),
        };
        let mut entry = self.entry(
            caller,
            "backup.drill",
            Some(&key.name),
            Some(v.version),
            if ok { Outcome::Ok } else { Outcome::Error },
            Some(format!(
                "copy on '{}' (serial {}): {detail}",
                copy.token, copy.token_serial
            )),
        );
        if !ok {
            entry.code = Some("backup-drill-failed".into());
            tracing::warn!(key = %key.name, version = v.version, token = %copy.token, %detail, "backup drill failed");
        }
        self.inventory.record_drill(
            &key.id,
            v.version,
            &copy.token_serial,
            outcome.as_ref().map(drop).map_err(String::as_str),
            now,
            &entry,
        )?;
        Ok(DrillResult {
            key: key.name.clone(),
            version: v.version,
            token: copy.token.clone(),
            ok,
            detail,
        })
    }

    /// Rebuild token `to` from the copies on token `from`: every active version that has a copy
    /// on `from` is wrapped there under the `from -> to` pairing's KEK (made by `kms backup init
    /// --from FROM --to TO`), unwrapped on `to`, proven, and the inventory repointed to `to`.
    pub fn backup_restore(
        &self,
        caller: &Caller,
        from: &str,
        to: &str,
    ) -> Result<RestoreReport, EngineError> {
        self.audited(caller, "backup.restore", None, |note| {
            require_role(&self.inventory, caller, BACKUP_ADMINS, "restore keys")?;
            let src_desc = self.hsm.describe(from)?;
            let dst_desc = self.hsm.describe(to)?;
            let pair = self
                .inventory
                .backup_pair(&src_desc.serial, &dst_desc.serial)?
                .ok_or_else(|| {
                    EngineError::denied(
                        Refusal::NotSupported,
                        format!(
                            "no key ceremony pairs '{from}' (serial {}) with '{to}' (serial {}); run `kms backup init --from {from} --to {to}` first",
                            src_desc.serial, dst_desc.serial
                        ),
                    )
                })?;
            let mut report = RestoreReport::default();
            for key in self.inventory.keys(&Default::default())? {
                for v in key.versions.iter().filter(|v| holds_data(v.state)) {
                    let label = format!("{}@v{}", key.name, v.version);
                    if v.token_serial == dst_desc.serial {
                        continue;
                    }
                    let Some(copy) = v.copies.iter().find(|c| c.token_serial == src_desc.serial)
                    else {
                        report.failed.push((label, format!("no copy on '{from}'")));
                        continue;
                    };
                    // Wrap the copy on `from`, unwrap it on `to` under the same CKA_ID.
                    let as_version = KeyVersion {
                        object_id: copy.object_id.clone(),
                        ..v.clone()
                    };
                    match self.copy_version(&key, &as_version, v.public_key.as_deref(), &pair) {
                        Ok(_) => {
                            let entry = self.entry(
                                caller,
                                "backup.restore-key",
                                Some(&key.name),
                                Some(v.version),
                                Outcome::Ok,
                                Some(format!(
                                    "v{} restored from '{from}' (serial {}) to '{to}' (serial {}) cka_id={}, proven by drill; the inventory now locates it on '{to}' (was '{}' serial {})",
                                    v.version, src_desc.serial, dst_desc.serial, copy.object_id, v.token, v.token_serial
                                )),
                            );
                            self.inventory.relocate_version(
                                &key.id,
                                v.version,
                                to,
                                &dst_desc.label,
                                &dst_desc.serial,
                                &entry,
                            )?;
                            report.restored.push(label.clone());
                            report.proven.push(label);
                        }
                        Err(e) => report.failed.push((label, e.to_string())),
                    }
                }
            }
            note.detail = Some(format!(
                "restored {} versions from '{from}' to '{to}', {} failed",
                report.restored.len(),
                report.failed.len()
            ));
            Ok(report)
        })
    }
}

/// A drill of a symmetric copy needs the original; without it the copy is not blamed.
const ORIGINAL_UNREACHABLE: &str = "not drilled: the original's token is unreachable (a symmetric copy is proven against the original)";

/// Versions whose key still protects data somewhere: active, deactivated (within its
/// re-encryption window) and compromised (until its data is moved off it). Backed up, drilled,
/// restored and exported alike.
pub(crate) fn holds_data(s: VersionState) -> bool {
    matches!(
        s,
        VersionState::Active | VersionState::Deactivated | VersionState::Compromised
    )
}

fn pair_name(p: &BackupPair) -> String {
    format!("{} -> {}", p.from_token, p.to_token)
}

fn no_pairing() -> EngineError {
    EngineError::denied(
        Refusal::NotSupported,
        "no backup pairing for the key token: configure [backup] and run `kms backup init` first"
            .to_owned(),
    )
}

/// Prove `copy` (on `dst`) is the same key as `version` (on `src`) without any key leaving a
/// token: a signature made by the copy verifies with the original's public key; data encrypted
/// by the original decrypts with the copy; a data key wrapped by the original unwraps with the
/// copy. Returns how it was proven.
pub(crate) fn drill(
    key: &KeyRecord,
    version: &KeyVersion,
    public_key: Option<&[u8]>,
    src: Option<&Token>,
    dst: &Token,
    copy: &KeyCopy,
) -> Result<String, String> {
    let challenge: [u8; 32] = rand::random();
    let e = |e: crate::hsm::HsmError| e.to_string();
    match key.key_type.family() {
        KeyFamily::Ec(_) | KeyFamily::Ed25519 | KeyFamily::Rsa => {
            let spki = public_key.ok_or("the inventory has no public key for this version")?;
            if key.usage.contains(Operation::Sign) {
                let scheme = key
                    .signature_scheme()
                    .ok_or("this key type makes no signatures")?;
                let signed = crate::engine::ToSign::Message(&challenge);
                let prepared = super::crypto::prepare(scheme, signed, (&key.name, key.key_type))
                    .map_err(|e| e.to_string())?;
                let sig = super::crypto::sign_prepared(dst, &copy.object_id, scheme, &prepared)
                    .map_err(e)?;
                let ok = crate::softverify::verify_scheme(
                    scheme,
                    spki,
                    crate::softverify::Signed::Message(&challenge),
                    &sig,
                )
                .map_err(|e| e.to_string())?;
                if ok {
                    Ok(
                        "a signature made on the copy verified with the original's public key"
                            .into(),
                    )
                } else {
                    Err("a signature made on the copy does NOT verify with the original's public key".into())
                }
            } else if key.usage.contains(Operation::Decrypt) && key.key_type.rsa_bits().is_some() {
                let ct = crate::softverify::rsa_oaep_encrypt(spki, &challenge)
                    .map_err(|e| e.to_string())?;
                let pt = dst.rsa_oaep_decrypt(&copy.object_id, &ct).map_err(e)?;
                if pt.as_slice() == challenge {
                    Ok("data encrypted to the original's public key decrypted on the copy".into())
                } else {
                    Err(
                        "the copy decrypted data encrypted to the original into something else"
                            .into(),
                    )
                }
            } else {
                let theirs = dst.public_key(&copy.object_id, key.key_type).map_err(e)?;
                if theirs == spki {
                    Ok("verify-only key: the copy's public key matches (no private operation allowed)".into())
                } else {
                    Err("the copy's public key differs from the original's".into())
                }
            }
        }
        KeyFamily::Secret => {
            // A copy is wrap-with-trusted (the KEK pins it), so it cannot be read back in place;
            // both objects HMAC the same challenge instead (CKA_SIGN is set for this alone).
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            let a = src
                .mac(
                    &version.object_id,
                    crate::model::KeyType::HmacSha256,
                    &challenge,
                )
                .map_err(e)?;
            let b = dst
                .mac(
                    &copy.object_id,
                    crate::model::KeyType::HmacSha256,
                    &challenge,
                )
                .map_err(e)?;
            if a == b {
                Ok("original and copy make the same HMAC over a challenge (same value)".into())
            } else {
                Err("the copy holds a different value from the original".into())
            }
        }
        KeyFamily::Hmac if key.usage.contains(Operation::Mac) => {
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            let a = src
                .mac(&version.object_id, key.key_type, &challenge)
                .map_err(e)?;
            let b = dst
                .mac(&copy.object_id, key.key_type, &challenge)
                .map_err(e)?;
            if a == b {
                Ok("original and copy make the same MAC".into())
            } else {
                Err("the copy makes a different MAC from the original".into())
            }
        }
        KeyFamily::Des3 if key.usage.contains(Operation::Encrypt) => {
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            let iv: [u8; 8] = rand::random();
            let ct = src
                .des3_cbc_encrypt(&version.object_id, &iv, &challenge)
                .map_err(e)?;
            let pt = dst.des3_cbc_decrypt(&copy.object_id, &iv, &ct).map_err(e)?;
            if pt.as_slice() == challenge {
                Ok("data encrypted on the original decrypted on the copy".into())
            } else {
                Err("the copy decrypted the original's ciphertext into something else".into())
            }
        }
        KeyFamily::Hmac | KeyFamily::Des3 => {
            // Nothing the key may do makes a comparable output (decrypt-only 3DES, verify-only
            // HMAC): compare the tokens' key check values (CKA_CHECK_VALUE).
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            let a = src.check_value(&version.object_id).map_err(e)?;
            let b = dst.check_value(&copy.object_id).map_err(e)?;
            match (a, b) {
                (Some(a), Some(b)) if a == b => Ok(format!(
                    "original and copy have the same key check value ({})",
                    hex::encode(a)
                )),
                (Some(_), Some(_)) => Err("the copy's key check value differs from the original's".into()),
                // SoftHSM2 2.6.1 computes CKA_CHECK_VALUE when it generates a key, never when it
                // unwraps one: a copy has none. A decrypt-only 3DES key still proves its copy by
                // decrypting: the same four random blocks, raw (no padding), on both tokens
                // must give the same 32 bytes, which two different keys do with probability
                // 2^-256. Nothing but random challenge bytes is ever decrypted.
                _ if key.key_type.family() == KeyFamily::Des3
                    && key.usage.contains(Operation::Decrypt) =>
                {
                    let a = src
                        .des3_ecb_decrypt_blocks(&version.object_id, &challenge)
                        .map_err(e)?;
                    let b = dst
                        .des3_ecb_decrypt_blocks(&copy.object_id, &challenge)
                        .map_err(e)?;
                    if a.as_slice() == b.as_slice() {
                        Ok("original and copy decrypt the same random blocks to the same bytes (the copy has no CKA_CHECK_VALUE)".into())
                    } else {
                        Err("the copy decrypts random blocks differently from the original".into())
                    }
                }
                (a, b) => Err(format!(
                    "no key check value to compare (CKA_CHECK_VALUE: original on '{}' {}, copy on '{}' {}), and this key's usage allows no operation that could prove the copy",
                    src.name(),
                    a.map(|v| format!("= {}", hex::encode(v))).unwrap_or_else(|| "empty".into()),
                    dst.name(),
                    b.map(|v| format!("= {}", hex::encode(v))).unwrap_or_else(|| "empty".into()),
                )),
            }
        }
        KeyFamily::Aes => {
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            if key.usage.contains(Operation::Encrypt) && !key.usage.contains(Operation::Decrypt) {
                // Encrypt-only: GCM is deterministic for one key, IV and input, so the same
                // ciphertext from both proves the same key.
                let iv: [u8; 12] = rand::random();
                let aad = b"kms backup drill";
                let a = src
                    .aes_gcm_encrypt(&version.object_id, &iv, aad, &challenge)
                    .map_err(e)?;
                let b = dst
                    .aes_gcm_encrypt(&copy.object_id, &iv, aad, &challenge)
                    .map_err(e)?;
                return if a == b {
                    Ok("original and copy encrypt to the same ciphertext".into())
                } else {
                    Err("the copy encrypts differently from the original".into())
                };
            }
            if key.usage.contains(Operation::Encrypt) && key.usage.contains(Operation::Decrypt) {
                let iv: [u8; 12] = rand::random();
                let aad = b"kms backup drill";
                let ct = src
                    .aes_gcm_encrypt(&version.object_id, &iv, aad, &challenge)
                    .map_err(e)?;
                let pt = dst
                    .aes_gcm_decrypt(&copy.object_id, &iv, aad, &ct)
                    .map_err(e)?;
                if pt.as_slice() == challenge {
                    Ok("data encrypted on the original decrypted on the copy".into())
                } else {
                    Err("the copy decrypted the original's ciphertext into something else".into())
                }
            } else if key.usage.contains(Operation::Wrap) && key.usage.contains(Operation::Unwrap) {
                let dk = src.generate_data_key(&version.object_id).map_err(e)?;
                let got = dst
                    .unwrap_data_key(&copy.object_id, &dk.wrapped)
                    .map_err(e)?;
                if got.as_slice() == dk.plaintext.as_slice() {
                    Ok("a data key wrapped on the original unwrapped on the copy".into())
                } else {
                    Err("the copy unwrapped the original's data key into something else".into())
                }
            } else {
                Err(format!(
                    "an {} key with usage {} cannot be drilled (needs encrypt+decrypt or wrap+unwrap)",
                    key.key_type, key.usage
                ))
            }
        }
    }
}
