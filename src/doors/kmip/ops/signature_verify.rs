//! Signature Verify: in software from the stored public key.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    let data = p
        .child(t::DATA)
        .and_then(Item::as_bytes)
        .ok_or_else(|| Failure::field("no Data"))?;
    let sig = p
        .child(t::SIGNATURE_DATA)
        .and_then(Item::as_bytes)
        .ok_or_else(|| Failure::field("no Signature Data"))?;
    let name = engine.key_by_id(caller, split_uid(&id).0)?.name;
    let v = engine.verify_data(caller, &name, ToSign::Message(data), sig)?;
    Ok(vec![
        text(t::UNIQUE_IDENTIFIER, &id),
        enumeration(
            t::VALIDITY_INDICATOR,
            if v.valid { t::VALID } else { t::INVALID },
        ),
    ])
}
