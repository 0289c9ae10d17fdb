//! Revoke: Key Compromise declares the compromise (the procedure); any other reason deactivates the current version.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    let code = p
        .child(t::REVOCATION_REASON)
        .and_then(|r| r.child(t::REVOCATION_REASON_CODE))
        .and_then(Item::as_enum)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Revocation Reason"))?;
    let message = p
        .child(t::REVOCATION_REASON)
        .and_then(|r| r.child(t::REVOCATION_MESSAGE))
        .and_then(Item::as_text);
    if code != t::REVOKE_KEY_COMPROMISE {
        let why = format!(
            "revoked over KMIP, reason code {code}{}",
            message.map(|m| format!(": {m}")).unwrap_or_default()
        );
        engine.deactivate_current(caller, split_uid(&id).0, "kmip.revoke", &why)?;
        return Ok(vec![text(t::UNIQUE_IDENTIFIER, &id)]);
    }
    let message = message.unwrap_or("declared compromised over KMIP");
    let name = engine.key_by_id(caller, split_uid(&id).0)?.name;
    engine.compromise_key(caller, &name, None, message)?;
    Ok(vec![text(t::UNIQUE_IDENTIFIER, &id)])
}
