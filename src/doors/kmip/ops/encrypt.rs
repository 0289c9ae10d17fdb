//! Encrypt: AES-GCM on the token through the engine's one AEAD path, with the current version (IV from the client or fresh). From KMIP 1.4 the tag travels apart; before, at the end of Data.

use super::*;

pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let Cx {
        engine,
        caller,
        separate_tag,
        ..
    } = *cx;

    let id = uid(p)?;
    gcm_only(p)?;
    let data = p
        .child(t::DATA)
        .and_then(Item::as_bytes)
        .ok_or_else(|| Failure::field("no Data"))?;
    let iv = p.child(t::IV_COUNTER_NONCE).and_then(Item::as_bytes);
    let aad = p
        .child(t::AE_ADDITIONAL_DATA)
        .and_then(Item::as_bytes)
        .unwrap_or_default();
    let accept = |key: &KeyRecord| aes_only(key, "Encrypt");
    let aad_for_version = |_| Ok(aad.to_vec());
    let sealed = engine.aead_encrypt(
        caller,
        Aead {
            action: "kmip.encrypt",
            key: KeyRef::Id(&id),
            accept: &accept,
            aad_for_version: &aad_for_version,
        },
        data,
        iv,
        false,
    )?;
    let mut out = vec![text(t::UNIQUE_IDENTIFIER, &id)];
    if separate_tag {
        out.push(bytes(t::DATA, &sealed.ciphertext));
        out.push(bytes(t::IV_COUNTER_NONCE, &sealed.iv));
        out.push(bytes(t::AE_TAG, &sealed.tag));
    } else {
        let mut joined = sealed.ciphertext.clone();
        joined.extend_from_slice(&sealed.tag);
        out.push(bytes(t::DATA, &joined));
        out.push(bytes(t::IV_COUNTER_NONCE, &sealed.iv));
    }
    Ok(out)
}
