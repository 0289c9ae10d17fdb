//! Making the wrapped copies on the backup token (`kms backup sync`), recording versions their
//! token says can never be copied, and `kms backup status`.

use time::OffsetDateTime;

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError};
use super::{drill, holds_data, no_pairing, BackupStatus, SyncReport, BACKUP_ADMINS, DRILL_ROLES};
use crate::hsm::{HsmError, NoCopy};
use crate::inventory::{BackupPair, KeyCopy, KeyRecord, KeyVersion, Outcome};
use crate::model::VersionState;

impl Engine {
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
        super::super::failover::check_object(&src, key, v, &v.object_id)?;
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

    /// The token's answer, now, that `v` can never be copied (`None`: it can, or the token
    /// could not say). Wraps the key under the pairing's KEK and drops the blob.
    pub(super) fn never_copyable_now(
        &self,
        key: &KeyRecord,
        v: &KeyVersion,
        pair: &BackupPair,
    ) -> Option<String> {
        let src = self
            .paired_token(&pair.from_token, &pair.from_serial)
            .ok()?;
        if v.token_serial != pair.from_serial
            || super::super::failover::check_object(&src, key, v, &v.object_id).is_err()
        {
            return None;
        }
        match src.wrap_for_copy(&pair.kek_id, &v.object_id, key.key_type) {
            Err(HsmError::NeverCopyable { why, .. }) => Some(why),
            _ => None,
        }
    }
}
