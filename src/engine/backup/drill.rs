//! Restore drills (`kms backup verify` and the scheduled drill): every copy proven, every
//! pairing's KEK checked, the outcome recorded on the copy and audited.

use time::OffsetDateTime;

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError};
use super::{
    drill, holds_data, pair_name, DrillReport, DrillResult, DRILL_ROLES, ORIGINAL_UNREACHABLE,
};
use crate::hsm::KekState;
use crate::inventory::{BackupPair, KeyCopy, KeyRecord, KeyVersion, Outcome};

impl Engine {
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
                    if v.token == super::super::CARD_TOKEN {
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
}
