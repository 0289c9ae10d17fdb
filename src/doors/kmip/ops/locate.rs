//! Locate: the caller's keys by Name and Object Type.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let (engine, caller) = (cx.engine, cx.caller);
    let attrs = template(p);
    let name = name_of(&attrs);
    let name = name.as_deref();
    let families: Vec<KeyFamily> = match attrs
        .iter()
        .find(|(n, _)| *n == "Object Type")
        .and_then(|(_, v)| v.as_enum())
    {
        None => Vec::new(),
        Some(object::SYMMETRIC_KEY) => vec![KeyFamily::Aes, KeyFamily::Hmac, KeyFamily::Des3],
        Some(object::SECRET_DATA) => vec![KeyFamily::Secret],
        Some(object::PUBLIC_KEY | object::PRIVATE_KEY) => vec![
            KeyFamily::Rsa,
            KeyFamily::Ed25519,
            KeyFamily::Ec(crate::model::Curve::P256),
            KeyFamily::Ec(crate::model::Curve::P384),
            KeyFamily::Ec(crate::model::Curve::P521),
        ],
        Some(_) => return Ok(Vec::new()),
    };
    let max = p
        .child(t::MAXIMUM_ITEMS)
        .and_then(Item::as_int)
        .unwrap_or(i64::MAX);
    let keys = engine.locate(caller, "kmip.locate", name, &|k| {
        name.is_none_or(|n| kmip_name(k) == n || k.name == n)
            && (families.is_empty() || families.contains(&k.key_type.family()))
    })?;
    Ok(keys
        .iter()
        .take(usize::try_from(max.max(0)).unwrap_or(usize::MAX))
        .map(|k| text(t::UNIQUE_IDENTIFIER, &k.id))
        .collect())
}
