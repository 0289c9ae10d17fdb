//! Activate: a key kms made is active from its creation; Activate checks it has a version that can be.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    let key = engine.describe_key(caller, split_uid(&id).0, "kmip.activate")?;
    if key.current_version().is_none() {
        return Err(Failure::new(
            result::ILLEGAL_OPERATION,
            format!("key '{}' has no version that can be active", key.name),
        ));
    }
    Ok(vec![text(t::UNIQUE_IDENTIFIER, &id)])
}
