//! MAC: an HMAC on the token.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    let data = p
        .child(t::DATA)
        .and_then(Item::as_bytes)
        .ok_or_else(|| Failure::field("no Data"))?;
    let name = engine.key_by_id(caller, split_uid(&id).0)?.name;
    let m = engine.mac(caller, &name, data)?;
    Ok(vec![
        text(t::UNIQUE_IDENTIFIER, &id),
        bytes(t::MAC_DATA, &m.tag),
    ])
}
