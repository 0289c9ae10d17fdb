//! Get Attribute List: the names Get Attributes reports.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    let (kms_id, public) = split_uid(&id);
    let key = engine.describe_key(caller, kms_id, "kmip.get-attribute-list")?;
    let mut out = vec![text(t::UNIQUE_IDENTIFIER, &id)];
    out.extend(
        attributes(&key, public)
            .into_iter()
            .map(|(n, _)| text(t::ATTRIBUTE_NAME, n)),
    );
    Ok(out)
}
