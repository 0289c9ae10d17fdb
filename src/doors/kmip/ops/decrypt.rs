//! Decrypt: AES-GCM with the newest version that may decrypt and whose tag checks (a KMIP ciphertext does not say which version made it).

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx { engine, caller, .. } = *cx;

    let id = uid(p)?;
    gcm_only(p)?;
    let data = p
        .child(t::DATA)
        .and_then(Item::as_bytes)
        .ok_or_else(|| Failure::field("no Data"))?;
    let iv = p
        .child(t::IV_COUNTER_NONCE)
        .and_then(Item::as_bytes)
        .ok_or_else(|| Failure::field("no IV/Counter/Nonce"))?;
    let (data, tag) = match p.child(t::AE_TAG).and_then(Item::as_bytes) {
        Some(tag) => (data, tag),
        None if data.len() >= 16 => data.split_at(data.len() - 16),
        None => {
            return Err(Failure::field(
                "no Authenticated Encryption Tag, and Data is too short to end with one",
            ))
        }
    };
    let aad = p
        .child(t::AE_ADDITIONAL_DATA)
        .and_then(Item::as_bytes)
        .unwrap_or_default();
    let accept = |key: &KeyRecord| aes_only(key, "Decrypt");
    let aad_for_version = |_| Ok(aad.to_vec());
    let (plaintext, _) = engine.aead_decrypt(
        caller,
        Aead {
            action: "kmip.decrypt",
            key: KeyRef::Id(&id),
            accept: &accept,
            aad_for_version: &aad_for_version,
        },
        data,
        iv,
        tag,
        None,
    )?;
    Ok(vec![
        text(t::UNIQUE_IDENTIFIER, &id),
        bytes(t::DATA, &plaintext),
    ])
}
