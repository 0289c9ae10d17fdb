//! Register: a symmetric key (Raw) or Secret Data, put on the token as a sensitive object.

use super::*;

/// Register: a symmetric key in Raw format (AES-128/256, HMAC-SHA256/384) or Secret Data, put on
/// the token as a sensitive object.
pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let (engine, caller) = (cx.engine, cx.caller);
    match p.child(t::OBJECT_TYPE).and_then(Item::as_enum) {
        Some(object::SYMMETRIC_KEY) => {}
        Some(object::SECRET_DATA) => return register_secret_data(engine, caller, p),
        _ => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                "Register takes Symmetric Keys and Secret Data (key pairs are made on the token: CreateKeyPair, or kms key import)",
            ))
        }
    }
    let block = p
        .child(t::SYMMETRIC_KEY)
        .and_then(|k| k.child(t::KEY_BLOCK))
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Symmetric Key / Key Block"))?;
    if block.child(t::KEY_FORMAT_TYPE).and_then(Item::as_enum) != Some(t::FORMAT_RAW) {
        return Err(Failure::new(
            result::OPERATION_NOT_SUPPORTED,
            "Register takes symmetric keys in Raw format",
        ));
    }
    let material = key_material(block)?;
    let algorithm = block
        .child(t::CRYPTOGRAPHIC_ALGORITHM)
        .and_then(Item::as_enum);
    let key_type = match (algorithm, material.len()) {
        (Some(alg::AES), 32) => KeyType::Aes256,
        (Some(alg::AES), 16) => KeyType::Aes128,
        (Some(alg::HMAC_SHA256), 32) => KeyType::HmacSha256,
        (Some(alg::HMAC_SHA384), 48) => KeyType::HmacSha384,
        (a, n) => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                format!("Register takes AES-128/256 and HMAC-SHA256/384 keys, not algorithm {a:?} of {n} bytes"),
            ))
        }
    };
    let attrs = template(p);
    let get = |n: &str| find(&attrs, n);
    let mask = get("Cryptographic Usage Mask").and_then(Item::as_int);
    let ops = usage_of_mask(mask, key_type);
    let name = name_of(&attrs);
    let key = create_owned(
        engine,
        caller,
        name,
        key_type,
        OperationSet(ops),
        Some(crate::engine::PlainKey(zeroize::Zeroizing::new(
            material.to_vec(),
        ))),
        &a8(&attrs)?,
    )?;
    Ok(vec![text(t::UNIQUE_IDENTIFIER, &key.id)])
}

/// Register of Secret Data (a password or seed, Opaque or Raw): a `secret-data` key whose value
/// its grantees read back with Get. The usage mask is not kms's to honour: what a secret allows
/// is `reveal`, to its grantees.
fn register_secret_data(engine: &Engine, caller: &Caller, p: &Item) -> Result<Vec<Item>, Failure> {
    let secret = p
        .child(t::SECRET_DATA)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Secret Data"))?;
    let data_type = secret
        .child(t::SECRET_DATA_TYPE)
        .and_then(Item::as_enum)
        .unwrap_or(t::SECRET_PASSWORD);
    let block = secret
        .child(t::KEY_BLOCK)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Secret Data / Key Block"))?;
    match block.child(t::KEY_FORMAT_TYPE).and_then(Item::as_enum) {
        Some(t::FORMAT_OPAQUE | t::FORMAT_RAW) => {}
        _ => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                "Secret Data is registered in Opaque or Raw format",
            ))
        }
    }
    let material = key_material(block)?;
    let allowed = KeyType::SecretData.registered_len();
    if !allowed.contains(&material.len()) {
        return Err(Failure::field(format!(
            "Secret Data is {} to {} bytes, not {}",
            allowed.start(),
            allowed.end(),
            material.len()
        )));
    }
    let attrs = template(p);
    let key = create_owned(
        engine,
        caller,
        name_of(&attrs),
        KeyType::SecretData,
        OperationSet([Operation::Reveal].into_iter().collect()),
        Some(crate::engine::PlainKey(zeroize::Zeroizing::new(
            material.to_vec(),
        ))),
        &[
            a8(&attrs)?,
            vec![(SECRET_DATA_TYPE_LABEL, data_type.to_string())],
        ]
        .concat(),
    )?;
    Ok(vec![text(t::UNIQUE_IDENTIFIER, &key.id)])
}
