//! Authorization: the one place that decides whether a caller may do something.
//!
//! - Every caller is a registered principal with a role. Administration needs a role: keys and
//!   principals the security officer; the audit trail the auditor or officer; the whole inventory
//!   officer, security admin, manager or auditor.
//! - Key *use* needs an active grant naming the key and the operation, for everyone, officers
//!   included; expiry and the review deadline are checked here, at the moment of use.
//! - Then the key's own policy: its type supports the operation, its inventory usage allows it,
//!   it is not expired for operations that protect new data, the version is active.

use time::OffsetDateTime;

use super::audit::AuditNote;
use super::{Caller, Engine, EngineError, Refusal};
use crate::inventory::{
    Grant, GrantFilter, Inventory, InventoryError, KeyRecord, KeyVersion, Principal,
};
use crate::model::{GrantOp, Operation, Role, VersionState};

/// Roles that may read the whole key inventory (the "site permission"); others need a
/// read-inventory grant per key.
pub(crate) const INVENTORY_READERS: &[Role] = &[
    Role::SecurityOfficer,
    Role::SecurityAdmin,
    Role::Manager,
    Role::Auditor,
];

/// The registered, enabled principal the caller acts as.
pub(crate) fn acting_principal(
    inventory: &Inventory,
    caller: &Caller,
) -> Result<Principal, EngineError> {
    if caller.kind == super::CallerKind::System {
        return Ok(Principal {
            name: caller.actor.clone(),
            role: Role::SecurityOfficer,
            cert_fingerprint: None,
            cert_subject: None,
            approval_key: None,
            approval_key_uri: None,
            allowed_networks: Vec::new(),
            disabled_at: None,
            disabled_by: None,
            created_by: "kms".into(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        });
    }
    let p = match inventory.principal(&caller.actor) {
        Ok(p) => p,
        Err(InventoryError::NoSuchPrincipal(_)) => {
            return Err(EngineError::denied(
                Refusal::UnknownPrincipal,
                format!(
                    "'{}' is not a registered principal; a security officer registers people with `kms principal add NAME --role ROLE --approval-key URI` (pass --as NAME)",
                    caller.actor
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if p.disabled_at.is_some() {
        return Err(EngineError::denied(
            Refusal::PrincipalDisabled,
            format!("principal '{}' is disabled", p.name),
        ));
    }
    Ok(p)
}

/// The caller must hold one of `roles` to do `what`.
pub(crate) fn require_role(
    inventory: &Inventory,
    caller: &Caller,
    roles: &[Role],
    what: &str,
) -> Result<Principal, EngineError> {
    let p = acting_principal(inventory, caller)?;
    if roles.contains(&p.role) {
        return Ok(p);
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(EngineError::denied(
        Refusal::WrongRole,
        format!(
            "'{}' is {} and may not {what}; that needs the role {}",
            p.name,
            p.role,
            names.join(" or ")
        ),
    ))
}

impl Engine {
    /// Whether the caller may read key `key_name`'s inventory entry: an inventory-reading role, or
    /// a read-inventory grant on the key.
    pub(crate) fn check_inventory_read(
        &self,
        caller: &Caller,
        key_name: &str,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        let p = acting_principal(&self.inventory, caller)?;
        if INVENTORY_READERS.contains(&p.role) {
            return Ok(());
        }
        self.check_grant(caller, key_name, Some(GrantOp::ReadInventory), now)
            .map(drop)
    }

    /// The caller may do `op` on key `key_name` (officers always; principals through a grant).
    /// `None` asks for any active grant on the key, whatever its operations.
    pub(crate) fn check_grant(
        &self,
        caller: &Caller,
        key_name: &str,
        op: Option<GrantOp>,
        now: OffsetDateTime,
    ) -> Result<Option<Grant>, EngineError> {
        find_grant(
            &self.inventory,
            &self.proven_grants,
            caller,
            key_name,
            op,
            now,
        )
    }

    /// The caller may use `key` for `op` now: grant (for principals) and the key's own policy.
    /// Picks the version to use: the current one, or the one a ciphertext names. The grant that
    /// authorized it goes on the operation's audit note (its ticket and justification belong to
    /// the record's "reason").
    pub(crate) fn authorize_use<'k>(
        &self,
        caller: &Caller,
        key: &'k KeyRecord,
        op: Operation,
        version: Option<u32>,
        now: OffsetDateTime,
        note: &mut AuditNote,
    ) -> Result<&'k KeyVersion, EngineError> {
        if let Some(g) = self.check_grant(caller, &key.name, Some(op.into()), now)? {
            note.grant = Some(format!(
                "grant {} (ticket {}: {})",
                g.id, g.ticket, g.justification
            ));
        }
        authorize_key(key, op, version, now)
    }
}

/// [`Engine::check_grant`], with the engine's inventory and its cache of proven grants.
fn find_grant(
    inventory: &Inventory,
    proven: &ProvenGrants,
    caller: &Caller,
    key_name: &str,
    op: Option<GrantOp>,
    now: OffsetDateTime,
) -> Result<Option<Grant>, EngineError> {
    // The caller must be a registered, enabled principal right now (disabling takes effect at
    // once, at the console as over the service — where `identify` checked it for this request).
    if !matches!(caller.kind, super::CallerKind::Principal { .. }) {
        acting_principal(inventory, caller)?;
    }
    let grants = inventory.grants(
        &GrantFilter {
            principal: Some(caller.actor.clone()),
            key_name: Some(key_name.to_owned()),
            all: true,
        },
        now,
    )?;
    let active: Vec<&Grant> = grants.iter().filter(|g| g.is_active(now)).collect();
    // Every active grant for the operation is considered, not only the oldest: a grant that
    // does not hold (its provenance fails) does not hide a newer one that does.
    let mut unproven = None;
    for g in active
        .iter()
        .filter(|g| op.is_none_or(|op| g.ops.contains(op)))
    {
        // The row must carry its HSM-made tag (an edit of key, principal, operations, validity,
        // review deadline or revocation behind kms's back fails here, and is never skipped),
        // then its provenance.
        inventory.check_grant_row(&g.id)?;
        match check_provenance(inventory, proven, g) {
            Ok(()) => return Ok(Some((*g).clone())),
            Err(e) => {
                unproven.get_or_insert(e);
            }
        }
    }
    if let Some(e) = unproven {
        return Err(e);
    }
    if let (Some(g), Some(op)) = (active.first(), op) {
        return Err(EngineError::denied(
            Refusal::OperationNotGranted,
            format!(
                "'{}' may {} with key '{key_name}' (grant {}), but not {op}",
                caller.actor, g.ops, g.id
            ),
        ));
    }
    if let Some(g) = grants.iter().find(|g| g.review_lapsed(now)) {
        return Err(EngineError::denied(
            Refusal::ReviewLapsed,
            format!(
                "grant {} of '{}' on key '{key_name}' lapsed: it was not re-certified by {}",
                g.id,
                caller.actor,
                g.review_due
                    .map(crate::inventory::fmt_time)
                    .unwrap_or_default()
            ),
        ));
    }
    let expired = grants
        .iter()
        .filter(|g| g.revoked_at.is_none() && g.not_after <= now)
        .max_by_key(|g| g.not_after);
    if let Some(g) = expired {
        return Err(EngineError::denied(
            Refusal::GrantExpired,
            format!(
                "grant {} of '{}' on key '{key_name}' expired at {}",
                g.id,
                caller.actor,
                crate::inventory::fmt_time(g.not_after)
            ),
        ));
    }
    Err(EngineError::denied(
        Refusal::NoGrant,
        format!(
            "'{}' holds no active grant on key '{key_name}'",
            caller.actor
        ),
    ))
}

/// Grants proven to come from kms itself (checked once, then trusted): one per [`Engine`], since
/// the proof is about that engine's inventory.
#[derive(Debug, Default)]
pub(crate) struct ProvenGrants(std::sync::Mutex<std::collections::HashSet<String>>);

/// A grant row counts only if kms made it: an approved request whose verify and approve steps
/// still carry valid signatures by the signers' registered keys over the request as it reads, and
/// whose grantee, key, operations and time match the grant; or a break-glass grant whose creation
/// record is in the audit trail. A row put into the inventory file by hand has neither.
fn check_provenance(
    inventory: &Inventory,
    proven: &ProvenGrants,
    g: &Grant,
) -> Result<(), EngineError> {
    // Cached by everything the proof covers, so a row changed later is proven again.
    let fingerprint = format!(
        "{}|{}|{}|{}|{}|{}|{:?}|{}",
        g.id,
        g.principal,
        g.key_name,
        g.ops,
        crate::inventory::fmt_time(g.not_before),
        crate::inventory::fmt_time(g.not_after),
        g.request_id,
        g.break_glass
    );
    {
        let proven = proven.0.lock().unwrap_or_else(|p| p.into_inner());
        if proven.contains(&fingerprint) {
            return Ok(());
        }
    }
    let refuse = |why: String| {
        Err(EngineError::denied(
            Refusal::BadSignature,
            format!(
                "grant {} was not made by kms ({why}); it is not honoured",
                g.id
            ),
        ))
    };
    match (&g.request_id, g.break_glass) {
        (Some(rid), false) => {
            let r = match inventory.request(rid) {
                Ok(r) => r,
                Err(_) => return refuse(format!("its request {rid} does not exist")),
            };
            let matches = r.grant_id.as_deref() == Some(g.id.as_str())
                && r.grantee == g.principal
                && r.key_name == g.key_name
                && r.ops == g.ops
                && r.state == crate::inventory::RequestState::Approved;
            if !matches {
                return refuse(format!("it does not match approved request {rid}"));
            }
            let steps = inventory.signed_steps(rid)?;
            for needed in ["verify", "approve"] {
                let Some(s) = steps.iter().find(|s| s.step == needed) else {
                    return refuse(format!("request {rid} has no {needed} signature"));
                };
                let expected = super::approval_message(&r, needed, &s.signer, s.note.as_deref());
                // The key was the signer's when they signed (a re-enrolled card keeps what it
                // signed valid; issue 31).
                let registered = super::approval_keys::key_of_signer_at(
                    inventory,
                    &s.signer,
                    &s.public_key,
                    s.signed_at,
                )?
                .is_some();
                let valid = crate::softverify::key_type_of_spki(&s.public_key)
                    .and_then(|kt| {
                        crate::softverify::verify(kt, &s.public_key, &s.message, &s.signature)
                    })
                    .unwrap_or(false);
                if expected != s.message || !registered || !valid {
                    return refuse(format!(
                        "the {needed} signature on request {rid} does not hold"
                    ));
                }
                if needed == "approve"
                    && g.not_after > s.signed_at + r.duration.to_time() + time::Duration::minutes(1)
                {
                    return refuse("it lasts longer than the approved duration".into());
                }
            }
            // Two people on two cards signed it.
            if let (Some(v), Some(a)) = (
                steps.iter().find(|s| s.step == "verify"),
                steps.iter().find(|s| s.step == "approve"),
            ) {
                if let Err(e) = super::approval_keys::check_two_signed(inventory, v, a) {
                    return refuse(e.to_string());
                }
            }
        }
        (None, true) => {
            // The creation record names the grant, its grantee, key, operations and end exactly
            // (the key too: a grant re-pointed at another key must not match its record).
            let prefix = format!(
                "BREAK-GLASS grant {} to '{}' on key '{}': {} until {} ",
                g.id,
                g.principal,
                g.key_name,
                g.ops,
                crate::inventory::fmt_time(g.not_after)
            );
            if !inventory.has_record_starting("grant.break-glass", &prefix)? {
                return refuse("there is no record of its creation".into());
            }
        }
        _ => {
            return refuse("it names neither an approved request nor a break-glass creation".into())
        }
    }
    proven
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(fingerprint);
    Ok(())
}

/// The key's own policy.
pub(crate) fn authorize_key(
    key: &KeyRecord,
    op: Operation,
    version: Option<u32>,
    now: OffsetDateTime,
) -> Result<&KeyVersion, EngineError> {
    if !key.key_type.supported_operations().contains(&op) {
        let can: Vec<&str> = key
            .key_type
            .supported_operations()
            .iter()
            .map(|o| o.as_str())
            .collect();
        return Err(EngineError::denied(
            Refusal::NotSupported,
            format!(
                "key '{}' is {} and cannot {op}; {} keys support: {}",
                key.name,
                key.key_type,
                key.key_type,
                can.join(", ")
            ),
        ));
    }
    if !key.usage.contains(op) {
        return Err(EngineError::denied(
            Refusal::UsageNotAllowed,
            format!(
                "key '{}' is not allowed to {op}: its acceptable usage is {} (set when the key was created)",
                key.name, key.usage
            ),
        ));
    }
    if key.key_type.legacy_producing(op) && (!key.allow_legacy_encrypt || key.migrated_to.is_some())
    {
        return Err(EngineError::denied(
            Refusal::UsageNotAllowed,
            match &key.migrated_to {
                Some(to) => format!(
                    "key '{}' is legacy {} being migrated to '{to}': it only decrypts; encrypt with '{to}'",
                    key.name, key.key_type
                ),
                None => format!(
                    "key '{}' is legacy {}: it only decrypts (it was not created with --allow-legacy-encrypt); `kms key migrate {} --to aes-256` moves its data to AES",
                    key.name, key.key_type, key.name
                ),
            },
        ));
    }
    let protects_new_data = matches!(
        op,
        Operation::Sign | Operation::Encrypt | Operation::Wrap | Operation::Mac
    );
    let _ = now;
    // Lifecycle decisions use the lifecycle clock (real time, or a test offset).
    let now = crate::clock::lifecycle_now();
    if let Some(at) = key.disposed_at {
        return Err(EngineError::denied(
            Refusal::KeyState,
            format!(
                "key '{}' was disposed of on {}: every version is destroyed",
                key.name,
                crate::inventory::fmt_time(at)
            ),
        ));
    }
    if let Some(expires) = key.expires {
        if protects_new_data && now.date() > expires {
            return Err(EngineError::denied(
                Refusal::KeyExpired,
                format!(
                    "key '{}' expired on {expires}; it may still verify and decrypt, but not {op}",
                    key.name
                ),
            ));
        }
    }
    let chosen = match version {
        Some(v) => key.version(v).ok_or_else(|| {
            EngineError::InvalidInput(format!("key '{}' has no version {v}", key.name))
        })?,
        None => key.current_version().ok_or_else(|| {
            EngineError::denied(
                Refusal::KeyState,
                format!(
                    "key '{}' has no active version: its creation never finished (`kms key abandon {}` removes it; `kms reconcile` shows what the token holds)",
                    key.name, key.name
                ),
            )
        })?,
    };
    version_allows(key, chosen, op, now)?;
    Ok(chosen)
}

/// What a version's state and usage periods allow (NIST SP 800-57): active versions do all their
/// key's usage; deactivated ones only decrypt, unwrap and verify; compromised, pending and
/// destroyed ones nothing. After the originator period no new sign / encrypt / wrap; after the
/// recipient period nothing.
pub(crate) fn version_allows(
    key: &KeyRecord,
    v: &KeyVersion,
    op: Operation,
    now: OffsetDateTime,
) -> Result<(), EngineError> {
    let processes = matches!(
        op,
        Operation::Decrypt
            | Operation::Unwrap
            | Operation::Verify
            | Operation::VerifyMac
            // A revoked secret still opens what it protects until it is disposed of.
            | Operation::Reveal
    );
    let current = key.current_version().map(|c| c.version);
    let refuse = |m: String| Err(EngineError::denied(Refusal::KeyState, m));
    match v.state {
        VersionState::Active => {}
        VersionState::Deactivated if processes => {}
        // The public half outlives the private one (NIST SP 800-57): signatures made before
        // a routine destruction still verify, within the recipient period.
        VersionState::Destroyed if op == Operation::Verify => {}
        VersionState::Deactivated => {
            return refuse(format!(
                "version {} of key '{}' was rotated out{}: it only decrypts, unwraps and verifies now{}; new data uses {}",
                v.version,
                key.name,
                v.deactivated_at.map(|t| format!(" on {}", crate::inventory::fmt_time(t))).unwrap_or_default(),
                v.destroy_after.map(|t| format!(" (until it is destroyed after {})", crate::inventory::fmt_time(t))).unwrap_or_default(),
                current.map(|c| format!("v{c}")).unwrap_or_else(|| "the current version".into())
            ))
        }
        VersionState::Compromised => {
            return refuse(format!(
                "version {} of key '{}' is compromised: no operation is allowed (a security officer may decrypt it through the audited break-glass, `kms key decrypt --break-glass`, to re-encrypt the data)",
                v.version, key.name
            ))
        }
        other => {
            return refuse(format!(
                "version {} of key '{}' is {other}, not usable",
                v.version, key.name
            ))
        }
    }
    let start = v.activated_at.unwrap_or(v.created_at);
    if let Some(p) = key.protect_for {
        let end = start + p.to_time();
        if !processes && now > end {
            return Err(EngineError::denied(
                Refusal::KeyExpired,
                format!(
                    "the originator usage period of version {} of key '{}' ended on {} ({p} after activation): it may still decrypt, unwrap and verify, but not {op}; rotate the key",
                    v.version,
                    key.name,
                    crate::inventory::fmt_time(end)
                ),
            ));
        }
    }
    if let Some(q) = key.process_for {
        let end = start + q.to_time();
        if now > end {
            return Err(EngineError::denied(
                Refusal::KeyExpired,
                format!(
                    "the recipient usage period of version {} of key '{}' ended on {} ({q} after activation): no operation is allowed",
                    v.version,
                    key.name,
                    crate::inventory::fmt_time(end)
                ),
            ));
        }
    }
    Ok(())
}
