//! Discover Versions: the versions asked for that kms answers (all, newest first, when none is asked).

use super::*;

pub(super) fn handle(_: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let asked: Vec<(i32, i32)> = p
        .children(t::PROTOCOL_VERSION)
        .map(|v| {
            (
                v.child(t::PROTOCOL_VERSION_MAJOR)
                    .and_then(Item::as_int)
                    .unwrap_or(0) as i32,
                v.child(t::PROTOCOL_VERSION_MINOR)
                    .and_then(Item::as_int)
                    .unwrap_or(0) as i32,
            )
        })
        .collect();
    Ok(VERSIONS
        .iter()
        .filter(|v| asked.is_empty() || asked.contains(v))
        .map(|(a, b)| version(*a, *b))
        .collect())
}
