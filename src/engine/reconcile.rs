//! Comparing the inventory with what the tokens really hold. Report only: nothing is changed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Caller, Engine, EngineError};
use crate::inventory::KeyFilter;
use crate::model::Role;
use crate::model::{ObjectId, VersionState};

/// One discrepancy between inventory and tokens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    /// An object on a token that no inventory version points at.
    OrphanObject {
        token: String,
        cka_id: ObjectId,
        label: String,
        class: String,
    },
    /// An inventory version whose object is not on its token.
    MissingObject {
        token: String,
        key: String,
        version: u32,
        cka_id: ObjectId,
    },
    /// A version whose creation never finished (a crash between token and inventory).
    PendingVersion {
        token: String,
        key: String,
        version: u32,
        cka_id: ObjectId,
        on_token: bool,
    },
    /// Two objects of the same class sharing one CKA_ID on a token.
    DuplicateId {
        token: String,
        cka_id: ObjectId,
        class: String,
        count: usize,
    },
    /// Two keys of the same class sharing one CKA_LABEL on a token.
    DuplicateLabel {
        token: String,
        label: String,
        class: String,
        count: usize,
    },
    /// A token the inventory refers to (or the config names) that could not be checked.
    TokenUnreachable { token: String, error: String },
    /// An inventory version on a token that no reachable config entry resolves to.
    VersionUnchecked {
        key: String,
        version: u32,
        token: String,
        token_serial: String,
    },
    /// A backup copy the inventory records that is not on its token.
    MissingCopy {
        token: String,
        key: String,
        version: u32,
        cka_id: ObjectId,
    },
    /// Two config entries that resolve to the same physical token.
    SameToken { tokens: Vec<String>, serial: String },
    /// An object kms made for a creation (or rotation) that never activated and whose inventory
    /// rows are gone: labelled as kms's, its CKA_ID named by a creation intent in this trail,
    /// and no live version's. `kms reconcile --repair` removes it.
    LeftoverObject {
        token: String,
        cka_id: ObjectId,
        label: String,
        class: String,
    },
    /// The object under a version's (or copy's) CKA_ID is not the key the inventory recorded:
    /// another label, key type or public key. kms refuses to use it.
    WrongObject {
        token: String,
        key: String,
        version: u32,
        cka_id: ObjectId,
        why: String,
    },
}

/// What `kms reconcile --repair` did with objects left by creations that never activated.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LeftoverRemoval {
    /// (token, CKA_ID, label, objects destroyed), each validated absent afterwards.
    pub removed: Vec<(String, ObjectId, String, usize)>,
    /// Tokens that could not be checked, with why.
    pub unreachable: Vec<(String, String)>,
}

/// The inventory's view of which objects are live, for telling leftovers from keys.
struct Live {
    /// CKA_IDs of every version not destroyed (pending included: abandon owns those), every
    /// recorded copy, and the key ceremonies' objects.
    ids: BTreeSet<ObjectId>,
    /// `kms:NAME:vN` of every version not destroyed.
    labels: BTreeSet<String>,
    /// `kms:NAME:vN` of every version the inventory records, in any state: never a leftover
    /// (an unfinished creation's pending row is deleted when it is rolled back or abandoned).
    recorded: BTreeSet<String>,
    /// CKA_IDs (hex) that a creation or rotation intent in the audit trail names.
    intended: BTreeSet<String>,
}

impl Live {
    /// Whether `o` is an object kms made for a creation that never activated: not live by
    /// CKA_ID, labelled `kms:NAME:vN` (not a ceremony's `kms:backup:` object) but not as a live
    /// version, and its CKA_ID named by an intent record of this installation's trail.
    fn leftover(&self, o: &crate::hsm::TokenObject) -> bool {
        if self.ids.contains(&o.id) || o.id.0.is_empty() {
            return false;
        }
        let Some(rest) = o.label.strip_prefix("kms:") else {
            return false;
        };
        let Some((name, version)) = rest.rsplit_once(":v") else {
            return false;
        };
        if name.is_empty()
            || name == "backup"
            || super::internal_key(name)
            || version.parse::<u32>().is_err()
        {
            return false;
        }
        !self.labels.contains(&o.label)
            && !self.recorded.contains(&o.label)
            && self.intended.contains(&o.id.to_hex())
    }
}

impl Engine {
    fn live_objects(&self) -> Result<Live, EngineError> {
        let mut live = Live {
            ids: BTreeSet::new(),
            labels: BTreeSet::new(),
            recorded: BTreeSet::new(),
            intended: BTreeSet::new(),
        };
        // A checked listing: a forged or edited row (a live version marked destroyed, say)
        // fails it, and nothing is removed.
        for key in self.inventory.keys(&KeyFilter::default())? {
            live.recorded.extend(
                key.versions
                    .iter()
                    .map(|v| crate::model::object_label(&key.name, v.version)),
            );
            for v in key.versions.iter().filter(|v| !v.state.is_destroyed()) {
                live.ids.insert(v.object_id.clone());
                live.ids
                    .extend(v.copies.iter().map(|c| c.object_id.clone()));
                live.labels
                    .insert(crate::model::object_label(&key.name, v.version));
            }
        }
        for p in self.inventory.backup_pairs()? {
            live.ids.insert(p.kek_id.clone());
            live.ids.insert(p.transport_id.clone());
        }
        for r in self.inventory.audit_chain()? {
            let Some(detail) = r.detail.as_deref() else {
                continue;
            };
            if !detail.starts_with("about to generate") {
                continue;
            }
            if let Some(hex) = detail.split("as cka_id=").nth(1) {
                let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
                live.intended.insert(hex);
            }
        }
        Ok(live)
    }

    /// Destroy, on every configured token, the objects left by creations that never activated
    /// (see [`Finding::LeftoverObject`]); never a live version's object. Each removal is
    /// validated by a CKA_ID search and named in the audit record.
    pub fn remove_leftovers(&self, caller: &Caller) -> Result<LeftoverRemoval, EngineError> {
        self.audited(caller, "inventory.remove-leftovers", None, |note| {
            super::policy::require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer],
                "remove objects left by unfinished creations",
            )?;
            let live = self.live_objects()?;
            let mut report = LeftoverRemoval::default();
            let names: Vec<String> = self.hsm.names().map(str::to_owned).collect();
            let mut failure = None;
            for name in names {
                let listed = self
                    .hsm
                    .token(&name)
                    .and_then(|t| t.list_objects().map(|o| (t, o)));
                let (token, objects) = match listed {
                    Ok(x) => x,
                    Err(e) => {
                        report.unreachable.push((name.clone(), e.to_string()));
                        continue;
                    }
                };
                let mut done: BTreeSet<&ObjectId> = BTreeSet::new();
                for o in objects.iter().filter(|o| live.leftover(o)) {
                    if !done.insert(&o.id) {
                        continue;
                    }
                    let n = token.destroy(&o.id)?;
                    if token.exists(&o.id)? {
                        failure = Some(format!(
                            "token '{name}' still holds CKA_ID {} after destroying it",
                            o.id
                        ));
                        continue;
                    }
                    report
                        .removed
                        .push((name.clone(), o.id.clone(), o.label.clone(), n));
                }
            }
            let removed = report
                .removed
                .iter()
                .map(|(t, id, label, n)| format!("'{t}' cka_id={id} '{label}' ({n} object(s))"))
                .collect::<Vec<_>>();
            note.detail = Some(if removed.is_empty() {
                "no objects left by unfinished creations".to_owned()
            } else {
                format!(
                    "removed objects left by creations that never activated, validated absent: {}",
                    removed.join(", ")
                )
            });
            match failure {
                Some(f) => Err(EngineError::Incomplete(format!(
                    "{f}; run `kms reconcile --repair` again"
                ))),
                None => Ok(report),
            }
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub tokens_checked: Vec<String>,
    pub versions_checked: usize,
    pub objects_checked: usize,
    pub findings: Vec<Finding>,
    /// Whether the tokens were logged in to (`kms reconcile --login`). Without a login only
    /// public objects are seen.
    pub logged_in: bool,
    /// Without a login: the versions and copies that could not be checked because their key
    /// half is a private object (secret keys; key pairs whose public half is not on the token),
    /// as `token: key vN`.
    pub not_checked_without_login: Vec<String>,
}

/// What reconcile saw of a version's (or copy's) object.
enum Seen {
    Present,
    Absent,
    Wrong(String),
    /// Not visible without a login.
    Unknown,
}

impl Engine {
    /// Compare the inventory with the tokens. Without `login` no token is logged in to
    /// (SoftHSM2 rewrites its token file at every login, and a process killed during that
    /// rewrite empties the token): the public objects are listed in sessions without a login,
    /// key pairs are checked by their public half (present, label, key type, public key), and
    /// what only a login shows (secret keys, private halves) is named in
    /// `not_checked_without_login`, not reported as missing. With `login` every token is
    /// logged in to (once) and every object checked.
    pub fn reconcile(&self, caller: &Caller, login: bool) -> Result<ReconcileReport, EngineError> {
        self.audited(caller, "inventory.reconcile", None, |note| {
            super::policy::require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer, Role::Auditor],
                "reconcile the inventory",
            )?;
            let keys = self.inventory.keys(&KeyFilter::default())?;
            let pairs = self.inventory.backup_pairs()?;
            let mut report = ReconcileReport {
                tokens_checked: Vec::new(),
                versions_checked: 0,
                objects_checked: 0,
                findings: Vec::new(),
                logged_in: login,
                not_checked_without_login: Vec::new(),
            };
            let live = self.live_objects()?;
            let names: Vec<String> = self.hsm.names().map(str::to_owned).collect();
            let mut serials: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for name in names {
                let listed = if login {
                    self.hsm.token(&name).and_then(|t| {
                        let d = t.description()?;
                        let objects = t.list_objects()?;
                        Ok((Some(t), d, objects, BTreeMap::new()))
                    })
                } else {
                    self.inspect_public(&name, &keys)
                };
                let (token, desc, objects, public) = match listed {
                    Ok(x) => x,
                    Err(e) => {
                        report.findings.push(Finding::TokenUnreachable {
                            token: name.clone(),
                            error: e.to_string(),
                        });
                        continue;
                    }
                };
                // What is known of the object under `id` that should hold `v` of `key`; `half`:
                // only its key half (private or secret) counts, as for a backup copy.
                let seen = |key: &crate::inventory::KeyRecord,
                            v: &crate::inventory::KeyVersion,
                            id: &ObjectId,
                            half: bool| {
                    match &token {
                        Some(token) => {
                            let present = objects.iter().any(|o| {
                                o.id == *id
                                    && (!half
                                        || o.class == "private-key"
                                        || o.class == "secret-key")
                            });
                            match present.then(|| wrong_object(token, key, v, id)) {
                                None => Seen::Absent,
                                Some(Some(why)) => Seen::Wrong(why),
                                Some(None) => Seen::Present,
                            }
                        }
                        None => match public.get(id) {
                            Some(Ok(true)) => Seen::Present,
                            Some(Err(crate::hsm::HsmError::WrongObject { why, .. })) => {
                                Seen::Wrong(why.clone())
                            }
                            _ => Seen::Unknown,
                        },
                    }
                };
                report.tokens_checked.push(name.clone());
                serials
                    .entry(desc.serial.clone())
                    .or_default()
                    .push(name.clone());
                report.objects_checked += objects.len();
                let on_token: BTreeSet<&ObjectId> = objects.iter().map(|o| &o.id).collect();
                let mut known: BTreeSet<&ObjectId> = BTreeSet::new();
                // The key ceremonies' objects: the KEK on both tokens, the trusted transport
                // public key on the `from` token.
                for p in &pairs {
                    if p.from_serial == desc.serial {
                        known.insert(&p.kek_id);
                        known.insert(&p.transport_id);
                    }
                    if p.to_serial == desc.serial {
                        known.insert(&p.kek_id);
                    }
                }
                for key in &keys {
                    for v in &key.versions {
                        // A destroyed version's CKA_ID is not "known": anything still under it is
                        // reported as an orphan.
                        if v.state.is_destroyed() {
                            continue;
                        }
                        for c in v.copies.iter().filter(|c| c.token_serial == desc.serial) {
                            known.insert(&c.object_id);
                            if v.state == VersionState::Pending {
                                continue;
                            }
                            // The copy's key half (private or secret) must be there, not only
                            // its public half.
                            match seen(key, v, &c.object_id, true) {
                                Seen::Present => {}
                                Seen::Absent => report.findings.push(Finding::MissingCopy {
                                    token: name.clone(),
                                    key: key.name.clone(),
                                    version: v.version,
                                    cka_id: c.object_id.clone(),
                                }),
                                Seen::Wrong(why) => report.findings.push(Finding::WrongObject {
                                    token: name.clone(),
                                    key: key.name.clone(),
                                    version: v.version,
                                    cka_id: c.object_id.clone(),
                                    why,
                                }),
                                Seen::Unknown => report.not_checked_without_login.push(format!(
                                    "{name}: {} v{} (backup copy)",
                                    key.name, v.version
                                )),
                            }
                        }
                    }
                }
                for key in &keys {
                    for v in &key.versions {
                        if v.token_serial != desc.serial {
                            continue;
                        }
                        report.versions_checked += 1;
                        if !v.state.is_destroyed() {
                            known.insert(&v.object_id);
                        }
                        let present = on_token.contains(&v.object_id);
                        match v.state {
                            VersionState::Pending => {
                                report.findings.push(Finding::PendingVersion {
                                    token: name.clone(),
                                    key: key.name.clone(),
                                    version: v.version,
                                    cka_id: v.object_id.clone(),
                                    on_token: present,
                                })
                            }
                            VersionState::Active
                            | VersionState::Deactivated
                            | VersionState::Compromised => {
                                match seen(key, v, &v.object_id, false) {
                                    Seen::Present => {}
                                    Seen::Absent => report.findings.push(Finding::MissingObject {
                                        token: name.clone(),
                                        key: key.name.clone(),
                                        version: v.version,
                                        cka_id: v.object_id.clone(),
                                    }),
                                    Seen::Wrong(why) => {
                                        report.findings.push(Finding::WrongObject {
                                            token: name.clone(),
                                            key: key.name.clone(),
                                            version: v.version,
                                            cka_id: v.object_id.clone(),
                                            why,
                                        })
                                    }
                                    Seen::Unknown => report
                                        .not_checked_without_login
                                        .push(format!("{name}: {} v{}", key.name, v.version)),
                                }
                            }
                            _ => {}
                        }
                    }
                }
                let mut by_id: BTreeMap<(&ObjectId, &str), usize> = BTreeMap::new();
                let mut by_label: BTreeMap<(&str, &str), usize> = BTreeMap::new();
                let mut orphans: BTreeSet<&ObjectId> = BTreeSet::new();
                for o in &objects {
                    *by_id.entry((&o.id, o.class.as_str())).or_default() += 1;
                    if !o.label.is_empty() {
                        *by_label
                            .entry((o.label.as_str(), o.class.as_str()))
                            .or_default() += 1;
                    }
                    if !known.contains(&o.id) && live.leftover(o) && orphans.insert(&o.id) {
                        report.findings.push(Finding::LeftoverObject {
                            token: name.clone(),
                            cka_id: o.id.clone(),
                            label: o.label.clone(),
                            class: o.class.clone(),
                        });
                    } else if !known.contains(&o.id) && orphans.insert(&o.id) {
                        report.findings.push(Finding::OrphanObject {
                            token: name.clone(),
                            cka_id: o.id.clone(),
                            label: o.label.clone(),
                            class: o.class.clone(),
                        });
                    }
                }
                for ((id, class), count) in by_id.into_iter().filter(|(_, n)| *n > 1) {
                    report.findings.push(Finding::DuplicateId {
                        token: name.clone(),
                        cka_id: id.clone(),
                        class: class.to_owned(),
                        count,
                    });
                }
                for ((label, class), count) in by_label.into_iter().filter(|(_, n)| *n > 1) {
                    report.findings.push(Finding::DuplicateLabel {
                        token: name.clone(),
                        label: label.to_owned(),
                        class: class.to_owned(),
                        count,
                    });
                }
            }
            for (serial, tokens) in &serials {
                if tokens.len() > 1 {
                    report.findings.push(Finding::SameToken {
                        tokens: tokens.clone(),
                        serial: serial.clone(),
                    });
                }
            }
            for key in &keys {
                for v in &key.versions {
                    let checked = serials.contains_key(&v.token_serial);
                    if !checked && !v.state.is_destroyed() && v.token != super::CARD_TOKEN {
                        report.findings.push(Finding::VersionUnchecked {
                            key: key.name.clone(),
                            version: v.version,
                            token: v.token.clone(),
                            token_serial: v.token_serial.clone(),
                        });
                    }
                }
            }
            note.detail = Some(format!("{} findings", report.findings.len()));
            Ok(report)
        })
    }
}

impl Engine {
    /// Token `name` seen without a login: its description, its public objects, and the check
    /// of each key pair's public half (versions and copies on it) by CKA_ID.
    #[allow(clippy::type_complexity)]
    fn inspect_public(
        &self,
        name: &str,
        keys: &[crate::inventory::KeyRecord],
    ) -> Result<
        (
            Option<std::sync::Arc<crate::hsm::Token>>,
            crate::hsm::TokenDescription,
            Vec<crate::hsm::TokenObject>,
            BTreeMap<ObjectId, Result<bool, crate::hsm::HsmError>>,
        ),
        crate::hsm::HsmError,
    > {
        let serial = self.hsm.describe(name)?.serial;
        let mut wanted: Vec<(ObjectId, String, &crate::inventory::KeyRecord, &[u8])> = Vec::new();
        for key in keys.iter().filter(|k| !k.key_type.is_symmetric()) {
            for v in key.versions.iter().filter(|v| !v.state.is_destroyed()) {
                let label = crate::model::object_label(&key.name, v.version);
                let recorded = v.public_key.as_deref().unwrap_or_default();
                if v.token_serial == serial {
                    wanted.push((v.object_id.clone(), label.clone(), key, recorded));
                }
                for c in v.copies.iter().filter(|c| c.token_serial == serial) {
                    wanted.push((c.object_id.clone(), label.clone(), key, recorded));
                }
            }
        }
        let checks: Vec<(ObjectId, crate::hsm::Expected<'_>)> = wanted
            .iter()
            .map(|(id, label, key, recorded)| {
                (
                    id.clone(),
                    crate::hsm::Expected {
                        label,
                        key_type: key.key_type,
                        public_key: (!recorded.is_empty()).then_some(*recorded),
                    },
                )
            })
            .collect();
        let (desc, objects, results) = self.hsm.inspect_without_login(name, &checks)?;
        let public = checks.into_iter().map(|(id, _)| id).zip(results).collect();
        Ok((None, desc, objects, public))
    }
}

/// Why the object under `id` on `token` is not `key`'s version `v` as recorded, if it is not.
fn wrong_object(
    token: &crate::hsm::Token,
    key: &crate::inventory::KeyRecord,
    v: &crate::inventory::KeyVersion,
    id: &ObjectId,
) -> Option<String> {
    match super::failover::check_object(token, key, v, id) {
        Err(crate::hsm::HsmError::WrongObject { why, .. }) => Some(why),
        _ => None,
    }
}
