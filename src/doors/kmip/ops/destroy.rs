//! Destroy: carries out an approved disposal; without one it is refused.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    engine.destroy_by_id(caller, split_uid(&id).0, "kmip.destroy", "KMIP Destroy")?;
    Ok(vec![text(t::UNIQUE_IDENTIFIER, &id)])
}
