//! The inventory's row integrity key (`kms-integrity`): an EC P-384 key on the HSM that signs
//! every row granting power (principals, grants, key versions, backup pairings).
//!
//! - **Tags are made on the HSM** (CKM_ECDSA over a SHA-384 of the row's canonical encoding), so
//!   whoever can write the inventory file but not use the token cannot make one.
//! - **Tags are checked in software** against the public half read **from the token** (never
//!   from SQLite, which the attacker could rewrite), without logging in; a checked (row, tag) pair
//!   is remembered for the process, so the hot path pays one hash and a set lookup.
//! - The key is an ordinary inventory key made by kms itself (like the audit key), so it is
//!   copied to the backup token, drilled and failed over like every key: the public half is read
//!   from whichever copy answers.
//! - **Migration**: an inventory made before tags existed gets its key on first open, and every
//!   row is tagged once, in one transaction, with an `inventory.integrity-tagged` record. After
//!   that, a row without a tag is refused like a row with a wrong one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha384};
use time::OffsetDateTime;

use super::{Engine, EngineError};
use crate::hsm::Hsm;
use crate::inventory::{CheckFailure, InventoryError, Outcome, RowIntegrity, TaggedTable};
use crate::model::{KeyType, ObjectId};

/// The inventory key that tags inventory rows; used by kms itself only.
pub const INTEGRITY_KEY: &str = "kms-integrity";
/// The audit action of the one-time tagging of an older inventory's rows.
pub const TAGGED_ACTION: &str = "inventory.integrity-tagged";
/// The audit action of the one-time tagging of the tables tagged since issue 23.
pub const TAGGED_23_ACTION: &str = "inventory.integrity-tagged-23";

/// Where the integrity key's private half (and its copies) live.
#[derive(Debug, Clone)]
struct Place {
    token: String,
    serial: String,
    id: ObjectId,
}

/// Tags rows on the HSM and checks them in software.
pub(crate) struct HsmRowIntegrity {
    hsm: Hsm,
    places: Vec<Place>,
    version: u32,
    public: Mutex<Option<p384::ecdsa::VerifyingKey>>,
    checked: Mutex<HashSet<[u8; 48]>>,
    /// The highest change number seen per row (`table:identity`) by this process.
    heads: Mutex<std::collections::HashMap<String, i64>>,
    failures: Arc<AtomicU64>,
    /// Whether a verification lets rows be read unchecked now (shared with the engine).
    unchecked: Arc<UncheckedWhenUnavailable>,
    /// Set when the inventory and the tokens disagree about the key itself: every check fails.
    broken: Option<String>,
}

const CHECKED_MAX: usize = 200_000;

/// Set only around `kms audit verify`'s reads ([`Engine::unchecked_when_unavailable`]): when no
/// token can give the integrity key's public half (the primary lost, no backup copy), rows are
/// read unchecked and the verification says so. A row that *fails* its check is still refused.
/// One per [`Engine`], shared with its installed checker; the inventory's reads carry no call
/// context, so while a verification runs it holds for every read of that engine (only the CLI's
/// `kms audit verify`, one operation per process, turns it on).
#[derive(Debug, Default)]
pub(crate) struct UncheckedWhenUnavailable {
    /// Verifications running now.
    active: AtomicUsize,
    /// A row was read unchecked since the last verification started.
    went_unchecked: AtomicBool,
}

impl Engine {
    /// Run `f` (a read-only verification) letting rows be read unchecked when the integrity key
    /// cannot be reached at all; returns whether that happened.
    pub(crate) fn unchecked_when_unavailable<T>(&self, f: impl FnOnce() -> T) -> (T, bool) {
        let u = &self.unchecked_when_unavailable;
        u.went_unchecked.store(false, Ordering::SeqCst);
        u.active.fetch_add(1, Ordering::SeqCst);
        let out = f();
        u.active.fetch_sub(1, Ordering::SeqCst);
        (out, u.went_unchecked.swap(false, Ordering::SeqCst))
    }
}

impl HsmRowIntegrity {
    fn public_key(&self) -> Result<p384::ecdsa::VerifyingKey, CheckFailure> {
        let mut slot = self.public.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = slot.as_ref() {
            return Ok(*k);
        }
        let mut errors = Vec::new();
        let mut config = false;
        for p in &self.places {
            if let Ok(d) = self.hsm.describe(&p.token) {
                if d.serial != p.serial {
                    config = true;
                    errors.push(format!(
                        "token '{}' is now the token with serial {}, but the integrity key was made on serial {}; restore the token entry in the config",
                        p.token, d.serial, p.serial
                    ));
                    continue;
                }
            }
            match self
                .hsm
                .public_key_without_login(&p.token, &p.id, KeyType::EcP384)
            {
                Ok((serial, spki, label)) => {
                    if serial != p.serial {
                        config = true;
                        errors.push(format!(
                            "token '{}' is now serial {serial}, not {}",
                            p.token, p.serial
                        ));
                        continue;
                    }
                    if !label.starts_with(&format!("kms:{INTEGRITY_KEY}:")) {
                        errors.push(format!(
                            "the object under the integrity key's CKA_ID on token '{}' is labelled '{label}', not kms's integrity key",
                            p.token
                        ));
                        continue;
                    }
                    match p384::ecdsa::VerifyingKey::from_public_key_der(&spki) {
                        Ok(k) => {
                            *slot = Some(k);
                            return Ok(k);
                        }
                        Err(e) => errors.push(format!("token '{}': {e}", p.token)),
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(CheckFailure::Unavailable {
            config,
            why: format!(
                "the public half of the inventory's integrity key could not be read from any token ({})",
                errors.join("; ")
            ),
        })
    }
}

impl RowIntegrity for HsmRowIntegrity {
    fn seen(&self, key: &str) -> i64 {
        self.heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn raise(&self, key: &str, seq: i64) {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        let e = heads.entry(key.to_owned()).or_insert(0);
        if seq > *e {
            *e = seq;
        }
    }

    fn failed(&self, why: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(reason = %why, "inventory row failed its integrity check");
    }

    fn tag(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        let digest: [u8; 48] = Sha384::digest(message).into();
        let mut errors = Vec::new();
        for p in &self.places {
            let token = match self.hsm.token(&p.token) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            if token.serial() != p.serial {
                errors.push(format!(
                    "token '{}' is serial {}, not {}",
                    p.token,
                    token.serial(),
                    p.serial
                ));
                continue;
            }
            match token.sign_ecdsa_p384(&p.id, &digest) {
                Ok(sig) => return Ok(sig),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(format!(
            "no token could sign with the integrity key {INTEGRITY_KEY} v{} ({})",
            self.version,
            errors.join("; ")
        ))
    }

    fn check(&self, message: &[u8], tag: &[u8]) -> Result<(), CheckFailure> {
        let fail = |why: String| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(reason = %why, "inventory row failed its integrity check");
            Err(CheckFailure::Tampered(why))
        };
        if let Some(why) = &self.broken {
            return fail(why.clone());
        }
        let digest: [u8; 48] = Sha384::digest(message).into();
        let memo: [u8; 48] = {
            let mut h = Sha384::new();
            h.update(digest);
            h.update(tag);
            h.finalize().into()
        };
        if self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&memo)
        {
            return Ok(());
        }
        let key = match self.public_key() {
            Ok(k) => k,
            Err(CheckFailure::Unavailable { .. })
                if self.unchecked.active.load(Ordering::SeqCst) > 0 =>
            {
                self.unchecked.went_unchecked.store(true, Ordering::SeqCst);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Ok(sig) = p384::ecdsa::Signature::from_der(tag) else {
            return fail("its integrity tag is not a signature".into());
        };
        if key.verify_prehash(&digest, &sig).is_err() {
            return fail(format!(
                "its integrity tag does not match its content (checked with {INTEGRITY_KEY} v{})",
                self.version
            ));
        }
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if checked.len() >= CHECKED_MAX {
            checked.clear();
        }
        checked.insert(memo);
        Ok(())
    }
}

/// What `kms inventory verify` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InventoryVerification {
    pub rows_checked: usize,
    pub bad: Vec<crate::inventory::BadRow>,
    /// The inventory's change log against the token's anchor.
    pub anchor: Option<super::anchor::AnchorReport>,
}

impl Engine {
    /// Rows that failed their integrity check in this process (the `kms_inventory_integrity_failures_total` metric).
    pub fn integrity_failures(&self) -> u64 {
        self.integrity_failures.load(Ordering::Relaxed)
    }

    fn install_integrity(&self, version: u32, places: Vec<Place>, broken: Option<String>) {
        // Where the anchor lives: the integrity key's places, as found when it was installed
        // (never from a later, checked read that a bad row would make fail).
        if let Some(first) = places.first() {
            *self.anchor_at.lock().unwrap_or_else(|p| p.into_inner()) = Some((
                places
                    .iter()
                    .map(|p| (p.token.clone(), p.serial.clone()))
                    .collect(),
                first.id.to_hex(),
            ));
        }
        self.inventory.set_integrity(Arc::new(HsmRowIntegrity {
            hsm: self.hsm.clone(),
            places,
            version,
            public: Mutex::new(None),
            checked: Mutex::new(HashSet::new()),
            heads: Mutex::new(std::collections::HashMap::new()),
            failures: Arc::clone(&self.integrity_failures),
            unchecked: Arc::clone(&self.unchecked_when_unavailable),
            broken,
        }));
    }

    /// Tag the untagged rows of `tables` once, with the `action` record.
    fn tag_once(
        &self,
        action: &str,
        tables: &[TaggedTable],
        what: &str,
        version: u32,
    ) -> Result<(), EngineError> {
        let entry = self.entry(
            &self.system_caller(),
            action,
            Some(INTEGRITY_KEY),
            Some(version),
            Outcome::Ok,
            Some(format!(
                "rows of {what} tagged with {INTEGRITY_KEY} v{version} at {}",
                crate::inventory::fmt_time(OffsetDateTime::now_utc())
            )),
        );
        let n = self
            .inventory
            .tag_untagged(tables, &entry)
            .map_err(EngineError::AuditFailed)?;
        tracing::info!(
            rows = n,
            action,
            "inventory rows tagged with the integrity key"
        );
        Ok(())
    }

    /// Refuse every checked read from now on, naming `why` (the inventory is not the one the
    /// token anchored).
    pub(super) fn refuse_inventory(&self, why: String) {
        self.install_integrity(0, Vec::new(), Some(why));
    }

    /// At open: find (or, for a new or older inventory, make) the integrity key and install it
    /// in the inventory; tag an older inventory's rows once.
    /// With `check_anchor` (every open but an officer's restore), an inventory that does not
    /// match the token's anchor is refused before anything else happens.
    pub(super) fn setup_integrity(&self, check_anchor: bool) -> Result<(), EngineError> {
        let key = match self.inventory.key(INTEGRITY_KEY) {
            Ok(k) => Some(k),
            Err(InventoryError::NoSuchKey(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let key = match key {
            Some(k) => k,
            None => {
                // The inventory has no record of the key. If it holds keys and a token holds an
                // integrity key, rows were deleted behind kms's back: refuse everything rather
                // than make a new key and bless whatever the file now says. (An inventory
                // without keys is a fresh start — e.g. before `kms backup import` — and an
                // inventory from before issue 17 has keys but no integrity key anywhere.)
                let has_keys = !self
                    .inventory
                    .keys(&crate::inventory::KeyFilter::default())?
                    .is_empty();
                for name in self
                    .hsm
                    .names()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .filter(|_| has_keys)
                {
                    let Ok(token) = self.hsm.token(&name) else {
                        continue;
                    };
                    let found = token.list_objects().map(|objs| {
                        objs.into_iter()
                            .any(|o| o.label.starts_with(&format!("kms:{INTEGRITY_KEY}:")))
                    });
                    if let Ok(true) = found {
                        self.install_integrity(
                            0,
                            Vec::new(),
                            Some(format!(
                                "token '{name}' holds kms's integrity key but the inventory has no record of it: the inventory file was replaced or edited; restore it from a backup (kms backup import)"
                            )),
                        );
                        return Ok(());
                    }
                }
                let req = super::CreateKey::internal(
                    INTEGRITY_KEY,
                    KeyType::EcP384,
                    "sign,verify",
                    "signs inventory rows that grant power (principals, grants, key versions, backup pairings)",
                    "keep while the inventory is in use",
                )?;
                let mut caller = self.system_caller();
                caller.reason = Some("inventory integrity key".into());
                self.create_key(&caller, req)?
            }
        };
        let Some(v) = key.current_version() else {
            self.install_integrity(
                0,
                Vec::new(),
                Some(format!(
                    "the inventory's integrity key {INTEGRITY_KEY} has no active version (its creation was interrupted): run `kms reconcile --repair`"
                )),
            );
            return Ok(());
        };
        let mut places = vec![Place {
            token: v.token.clone(),
            serial: v.token_serial.clone(),
            id: v.object_id.clone(),
        }];
        places.extend(v.copies.iter().map(|c| Place {
            token: c.token.clone(),
            serial: c.token_serial.clone(),
            id: c.object_id.clone(),
        }));
        self.install_integrity(v.version, places, None);
        // The token's anchor first: an inventory that does not match it is refused before
        // anything is tagged. Once the token holds this inventory's anchor, rows are never
        // tagged in bulk again (whatever the change log or the audit table now say).
        let anchored = self.anchor_exists();
        if check_anchor && anchored && !self.enforce_anchor()? {
            return Ok(());
        }
        let mut tagged = false;
        // An inventory whose rows were never tagged (made before tags, or a first open
        // interrupted before the tagging committed) is tagged once, as an audited step.
        if !anchored
            && self.inventory.last_change()? == 0
            && self.inventory.any_untagged(&TaggedTable::ALL)?
            && !self.inventory.has_record_starting(TAGGED_ACTION, "")?
        {
            tagged = true;
            self.tag_once(
                TAGGED_ACTION,
                &TaggedTable::ALL,
                "principals, grants, key versions and backup pairings",
                v.version,
            )?;
        }
        // The tables tagged since issue 23 (keys, copies, requests, signatures, compromises,
        // disposals, procedures): their rows from before are tagged once, as an audited step,
        // and only in an inventory without any recorded change (one from before issue 23):
        // once kms has logged a change, an untagged row is a forged one.
        if !anchored
            && self.inventory.last_change()? == 0
            && self.inventory.any_untagged(&TaggedTable::SINCE_23)?
            && !self.inventory.has_record_starting(TAGGED_23_ACTION, "")?
        {
            tagged = true;
            self.tag_once(
                TAGGED_23_ACTION,
                &TaggedTable::SINCE_23,
                "keys, backup copies, access requests, signatures, compromises, disposals and procedures",
                v.version,
            )?;
        }
        // The first anchor is written as soon as the rows are tagged, so that the one-time
        // tagging can never run again on this inventory.
        if tagged {
            if let Err(e) = self.write_anchor(None) {
                tracing::warn!(error = %e, "the inventory anchor could not be written to the token");
            }
        }
        Ok(())
    }

    /// `kms inventory verify`: check every tagged row and name the bad ones.
    /// Copy this SQLite inventory into a new PostgreSQL one (officer only, audited in the
    /// source first, so the record travels with the rows).
    pub fn inventory_migrate(
        &self,
        caller: &super::Caller,
        url: &str,
        password: Option<&crate::config::PinSource>,
    ) -> Result<crate::inventory::Migrated, EngineError> {
        super::policy::require_role(
            &self.inventory,
            caller,
            &[crate::model::Role::SecurityOfficer],
            "migrate the inventory",
        )?;
        let password = match password {
            Some(p) => Some(p.resolve_kind("inventory", "PostgreSQL")?),
            None => None,
        };
        let target = url.split('?').next().unwrap_or_default().to_owned();
        self.audited(caller, "inventory.migrate", None, |note| {
            // The intent travels with the rows: the copy starts with its own record.
            let entry = self.entry(
                caller,
                "inventory.migrate-intent",
                None,
                None,
                crate::inventory::Outcome::Ok,
                Some(format!("copying the inventory to PostgreSQL at {target}")),
            );
            self.inventory.append_audit(&entry)?;
            let m = self.inventory.migrate_to_postgres(
                url,
                password.as_ref().map(secrecy::ExposeSecret::expose_secret),
            )?;
            note.detail = Some(format!(
                "copied {} rows of {} tables to PostgreSQL at {target}",
                m.rows, m.tables
            ));
            Ok(m)
        })
    }

    pub fn inventory_verify(
        &self,
        caller: &super::Caller,
    ) -> Result<InventoryVerification, EngineError> {
        self.audited(caller, "inventory.verify", None, |note| {
            super::policy::require_role(
                &self.inventory,
                caller,
                &[
                    crate::model::Role::SecurityOfficer,
                    crate::model::Role::Auditor,
                ],
                "verify the inventory",
            )?;
            let (rows_checked, bad) = self.inventory.verify_rows()?;
            let anchor = self.check_anchor().ok();
            let anchor_problem = anchor.as_ref().and_then(|a| a.problem.clone());
            let detail = if let Some(p) = &anchor_problem {
                format!("{rows_checked} rows checked; ROLLED BACK: {p}")
            } else if bad.is_empty() {
                format!("{rows_checked} rows checked, all intact")
            } else {
                format!(
                    "{rows_checked} rows checked, {} failed: {}",
                    bad.len(),
                    bad.iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            note.detail = Some(detail);
            Ok(InventoryVerification {
                rows_checked,
                bad,
                anchor,
            })
        })
    }

    /// `testing` builds only: re-tag every row as it reads now (tests that simulate the passing
    /// of time by editing rows re-seal them this way).
    #[cfg(feature = "testing")]
    pub fn retag_for_tests(&self) -> Result<usize, EngineError> {
        Ok(self.inventory.retag_all_for_tests()?)
    }
}
