//! Delete Attribute: Name (back to the kms name) or a custom (`x-…`) attribute, by the key's owner.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    let name = p
        .child(t::ATTRIBUTE_NAME)
        .and_then(Item::as_text)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Attribute Name"))?;
    let old = set_attribute(engine, caller, split_uid(&id).0, name, None, None)?;
    let old = old.unwrap_or_default();
    let value = if name == "Name" {
        name_value(&old)
    } else {
        Value::Text(old)
    };
    Ok(vec![
        text(t::UNIQUE_IDENTIFIER, &id),
        Item::structure(
            t::ATTRIBUTE,
            vec![
                text(t::ATTRIBUTE_NAME, name),
                Item::new(t::ATTRIBUTE_VALUE, value),
            ],
        ),
    ])
}
