//! Get: a public key (X.509 SubjectPublicKeyInfo) or Secret Data; other material never leaves the token.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    let (kms_id, public) = split_uid(&id);
    let key = engine.describe_key(caller, kms_id, "kmip.get")?;
    if key.key_type.family() == KeyFamily::Secret && !public {
        let secret = engine.reveal_secret(caller, &key.name)?;
        let data_type = key
            .labels
            .get(SECRET_DATA_TYPE_LABEL)
            .and_then(|v| v.parse().ok())
            .unwrap_or(t::SECRET_PASSWORD);
        return Ok(vec![
            enumeration(t::OBJECT_TYPE, object::SECRET_DATA),
            text(t::UNIQUE_IDENTIFIER, &id),
            Item::structure(
                t::SECRET_DATA,
                vec![
                    enumeration(t::SECRET_DATA_TYPE, data_type),
                    Item::structure(
                        t::KEY_BLOCK,
                        vec![
                            enumeration(t::KEY_FORMAT_TYPE, t::FORMAT_OPAQUE),
                            Item::structure(
                                t::KEY_VALUE,
                                vec![bytes(t::KEY_MATERIAL, &secret.value)],
                            ),
                        ],
                    ),
                ],
            ),
        ]);
    }
    let spki = key.current_version().and_then(|v| v.public_key.clone());
    let Some(spki) = spki.filter(|_| public) else {
        return Err(Failure::new(
            result::PERMISSION_DENIED,
            format!(
                "key '{}' is {}: its material never leaves the token",
                key.name, key.key_type
            ),
        ));
    };
    Ok(vec![
        enumeration(t::OBJECT_TYPE, object::PUBLIC_KEY),
        text(t::UNIQUE_IDENTIFIER, &id),
        Item::structure(
            t::PUBLIC_KEY,
            vec![Item::structure(
                t::KEY_BLOCK,
                vec![
                    enumeration(t::KEY_FORMAT_TYPE, t::FORMAT_X509),
                    Item::structure(t::KEY_VALUE, vec![bytes(t::KEY_MATERIAL, &spki)]),
                    enumeration(t::CRYPTOGRAPHIC_ALGORITHM, algorithm(key.key_type)),
                    int(t::CRYPTOGRAPHIC_LENGTH, length(key.key_type)),
                ],
            )],
        ),
    ])
}
