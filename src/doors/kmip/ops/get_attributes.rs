//! Get Attributes: the standard attributes kms reports and the custom (`x-…`) ones.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    let (kms_id, public) = split_uid(&id);
    let key = engine.describe_key(caller, kms_id, "kmip.get-attributes")?;
    let wanted: Vec<&str> = p
        .children(t::ATTRIBUTE_NAME)
        .filter_map(Item::as_text)
        .collect();
    let mut out = vec![text(t::UNIQUE_IDENTIFIER, &id)];
    out.extend(
        attributes(&key, public)
            .into_iter()
            .filter(|(n, _)| wanted.is_empty() || wanted.contains(n))
            .map(|(n, v)| {
                Item::structure(
                    t::ATTRIBUTE,
                    vec![text(t::ATTRIBUTE_NAME, n), Item::new(t::ATTRIBUTE_VALUE, v)],
                )
            }),
    );
    out.extend(
        custom_attributes(&key)
            .into_iter()
            .filter(|(n, _)| wanted.is_empty() || wanted.contains(&n.as_str()))
            .map(|(n, v)| {
                Item::structure(
                    t::ATTRIBUTE,
                    vec![text(t::ATTRIBUTE_NAME, &n), text(t::ATTRIBUTE_VALUE, &v)],
                )
            }),
    );
    Ok(out)
}
