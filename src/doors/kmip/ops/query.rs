//! Query: the operations and object types kms serves, and who it is.

use super::*;

pub(super) fn handle(_: &Cx, _: &Item) -> Result<Vec<Item>, Failure> {
    let mut out: Vec<Item> = [
        op::CREATE,
        op::CREATE_KEY_PAIR,
        op::REGISTER,
        op::LOCATE,
        op::GET,
        op::GET_ATTRIBUTES,
        op::ACTIVATE,
        op::REVOKE,
        op::DESTROY,
        op::QUERY,
        op::DISCOVER_VERSIONS,
        op::ENCRYPT,
        op::DECRYPT,
        op::SIGN,
        op::SIGNATURE_VERIFY,
        op::MAC,
        op::GET_ATTRIBUTE_LIST,
        op::ADD_ATTRIBUTE,
        op::MODIFY_ATTRIBUTE,
        op::DELETE_ATTRIBUTE,
    ]
    .iter()
    .map(|o| enumeration(t::OPERATION, *o))
    .collect();
    out.extend(
        [
            object::SYMMETRIC_KEY,
            object::PUBLIC_KEY,
            object::PRIVATE_KEY,
            object::SECRET_DATA,
        ]
        .iter()
        .map(|o| enumeration(t::OBJECT_TYPE, *o)),
    );
    out.push(text(t::VENDOR_IDENTIFICATION, "kms"));
    out.push(Item::structure(
        t::SERVER_INFORMATION,
        vec![text(
            t::VENDOR_IDENTIFICATION,
            concat!("kms ", env!("CARGO_PKG_VERSION")),
        )],
    ));
    Ok(out)
}
