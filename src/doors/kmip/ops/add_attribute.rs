//! Add Attribute and Modify Attribute: Name and custom (`x-…`) attributes, by the key's owner.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx {
        engine,
        caller,
        operation,
        ..
    } = *cx;

    let id = uid(p)?;
    let a = p
        .child(t::ATTRIBUTE)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Attribute"))?;
    let name = a
        .child(t::ATTRIBUTE_NAME)
        .and_then(Item::as_text)
        .ok_or_else(|| Failure::field("no Attribute Name"))?;
    // A standard attribute is refused by the engine (audited) whatever its value.
    let value_item = a.child(t::ATTRIBUTE_VALUE);
    let value = match value_item.and_then(Item::as_text) {
        Some(v) => v,
        None if name == "Name" => value_item
            .and_then(|v| v.child(t::NAME_VALUE))
            .and_then(Item::as_text)
            .ok_or_else(|| Failure::field("a Name's value is a Name Value text"))?,
        None if !name.starts_with("x-") => "",
        None => {
            return Err(Failure::field(
                "a custom attribute's value is a Text String",
            ))
        }
    };
    set_attribute(
        engine,
        caller,
        split_uid(&id).0,
        name,
        Some(value),
        Some(operation == op::MODIFY_ATTRIBUTE),
    )?;
    Ok(vec![text(t::UNIQUE_IDENTIFIER, &id), a.clone()])
}
