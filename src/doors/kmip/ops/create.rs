//! Create: an AES key generated on the token for a principal `[kmip] may_create` names.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let (engine, caller) = (cx.engine, cx.caller);
    if p.child(t::OBJECT_TYPE).and_then(Item::as_enum) != Some(object::SYMMETRIC_KEY) {
        return Err(Failure::new(
            result::OPERATION_NOT_SUPPORTED,
            "Create makes symmetric keys (Object Type Symmetric Key)",
        ));
    }
    let attrs = template(p);
    let get = |n: &str| find(&attrs, n);
    let algorithm = get("Cryptographic Algorithm").and_then(Item::as_enum);
    let length = get("Cryptographic Length").and_then(Item::as_int);
    let key_type = match (algorithm, length) {
        (Some(alg::AES) | None, Some(256) | None) => KeyType::Aes256,
        (Some(alg::AES) | None, Some(128)) => KeyType::Aes128,
        (a, l) => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                format!("Create makes AES-128 and AES-256 keys, not algorithm {a:?} length {l:?}"),
            ))
        }
    };
    let mask = get("Cryptographic Usage Mask")
        .and_then(Item::as_int)
        .unwrap_or(usage::ENCRYPT | usage::DECRYPT);
    let ops = usage_of_mask(Some(mask), key_type);
    if ops.is_empty() {
        return Err(Failure::field(
            "the Cryptographic Usage Mask allows nothing an AES key does (Encrypt, Decrypt, Wrap Key, Unwrap Key)",
        ));
    }
    let name = name_of(&attrs);
    let key = create_owned(
        engine,
        caller,
        name,
        key_type,
        OperationSet(ops),
        None,
        &a8(&attrs)?,
    )?;
    Ok(vec![
        enumeration(t::OBJECT_TYPE, object::SYMMETRIC_KEY),
        text(t::UNIQUE_IDENTIFIER, &key.id),
    ])
}
