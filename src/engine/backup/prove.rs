//! Proving a copy is the same key as its original without any key leaving a token.

use super::ORIGINAL_UNREACHABLE;
use crate::hsm::Token;
use crate::inventory::{KeyCopy, KeyRecord, KeyVersion};
use crate::model::{KeyFamily, Operation};

/// Prove `copy` (on `dst`) is the same key as `version` (on `src`) without any key leaving a
/// token: a signature made by the copy verifies with the original's public key; data encrypted
/// by the original decrypts with the copy; a data key wrapped by the original unwraps with the
/// copy. Returns how it was proven.
pub(crate) fn drill(
    key: &KeyRecord,
    version: &KeyVersion,
    public_key: Option<&[u8]>,
    src: Option<&Token>,
    dst: &Token,
    copy: &KeyCopy,
) -> Result<String, String> {
    let challenge: [u8; 32] = rand::random();
    let e = |e: crate::hsm::HsmError| e.to_string();
    match key.key_type.family() {
        KeyFamily::Ec(_) | KeyFamily::Ed25519 | KeyFamily::Rsa => {
            let spki = public_key.ok_or("the inventory has no public key for this version")?;
            if key.usage.contains(Operation::Sign) {
                let scheme = key
                    .signature_scheme()
                    .ok_or("this key type makes no signatures")?;
                let signed = crate::engine::ToSign::Message(&challenge);
                let prepared =
                    super::super::crypto::prepare(scheme, signed, (&key.name, key.key_type))
                        .map_err(|e| e.to_string())?;
                let sig =
                    super::super::crypto::sign_prepared(dst, &copy.object_id, scheme, &prepared)
                        .map_err(e)?;
                let ok = crate::softverify::verify_scheme(
                    scheme,
                    spki,
                    crate::softverify::Signed::Message(&challenge),
                    &sig,
                )
                .map_err(|e| e.to_string())?;
                if ok {
                    Ok(
                        "a signature made on the copy verified with the original's public key"
                            .into(),
                    )
                } else {
                    Err("a signature made on the copy does NOT verify with the original's public key".into())
                }
            } else if key.usage.contains(Operation::Decrypt) && key.key_type.rsa_bits().is_some() {
                let ct = crate::softverify::rsa_oaep_encrypt(spki, &challenge)
                    .map_err(|e| e.to_string())?;
                let pt = dst.rsa_oaep_decrypt(&copy.object_id, &ct).map_err(e)?;
                if pt.as_slice() == challenge {
                    Ok("data encrypted to the original's public key decrypted on the copy".into())
                } else {
                    Err(
                        "the copy decrypted data encrypted to the original into something else"
                            .into(),
                    )
                }
            } else {
                let theirs = dst.public_key(&copy.object_id, key.key_type).map_err(e)?;
                if theirs == spki {
                    Ok("verify-only key: the copy's public key matches (no private operation allowed)".into())
                } else {
                    Err("the copy's public key differs from the original's".into())
                }
            }
        }
        KeyFamily::Secret => {
            // A copy is wrap-with-trusted (the KEK pins it), so it cannot be read back in place;
            // both objects HMAC the same challenge instead (CKA_SIGN is set for this alone).
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            let a = src
                .mac(
                    &version.object_id,
                    crate::model::KeyType::HmacSha256,
                    &challenge,
                )
                .map_err(e)?;
            let b = dst
                .mac(
                    &copy.object_id,
                    crate::model::KeyType::HmacSha256,
                    &challenge,
                )
                .map_err(e)?;
            if a == b {
                Ok("original and copy make the same HMAC over a challenge (same value)".into())
            } else {
                Err("the copy holds a different value from the original".into())
            }
        }
        KeyFamily::Hmac if key.usage.contains(Operation::Mac) => {
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            let a = src
                .mac(&version.object_id, key.key_type, &challenge)
                .map_err(e)?;
            let b = dst
                .mac(&copy.object_id, key.key_type, &challenge)
                .map_err(e)?;
            if a == b {
                Ok("original and copy make the same MAC".into())
            } else {
                Err("the copy makes a different MAC from the original".into())
            }
        }
        KeyFamily::Des3 if key.usage.contains(Operation::Encrypt) => {
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            let iv: [u8; 8] = rand::random();
            let ct = src
                .des3_cbc_encrypt(&version.object_id, &iv, &challenge)
                .map_err(e)?;
            let pt = dst.des3_cbc_decrypt(&copy.object_id, &iv, &ct).map_err(e)?;
            if pt.as_slice() == challenge {
                Ok("data encrypted on the original decrypted on the copy".into())
            } else {
                Err("the copy decrypted the original's ciphertext into something else".into())
            }
        }
        KeyFamily::Hmac | KeyFamily::Des3 => {
            // Nothing the key may do makes a comparable output (decrypt-only 3DES, verify-only
            // HMAC): compare the tokens' key check values (CKA_CHECK_VALUE).
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            let a = src.check_value(&version.object_id).map_err(e)?;
            let b = dst.check_value(&copy.object_id).map_err(e)?;
            match (a, b) {
                (Some(a), Some(b)) if a == b => Ok(format!(
                    "original and copy have the same key check value ({})",
                    hex::encode(a)
                )),
                (Some(_), Some(_)) => Err("the copy's key check value differs from the original's".into()),
                // SoftHSM2 2.6.1 computes CKA_CHECK_VALUE when it generates a key, never when it
                // unwraps one: a copy has none. A decrypt-only 3DES key still proves its copy by
                // decrypting: the same four random blocks, raw (no padding), on both tokens
                // must give the same 32 bytes, which two different keys do with probability
                // 2^-256. Nothing but random challenge bytes is ever decrypted.
                _ if key.key_type.family() == KeyFamily::Des3
                    && key.usage.contains(Operation::Decrypt) =>
                {
                    let a = src
                        .des3_ecb_decrypt_blocks(&version.object_id, &challenge)
                        .map_err(e)?;
                    let b = dst
                        .des3_ecb_decrypt_blocks(&copy.object_id, &challenge)
                        .map_err(e)?;
                    if a.as_slice() == b.as_slice() {
                        Ok("original and copy decrypt the same random blocks to the same bytes (the copy has no CKA_CHECK_VALUE)".into())
                    } else {
                        Err("the copy decrypts random blocks differently from the original".into())
                    }
                }
                (a, b) => Err(format!(
                    "no key check value to compare (CKA_CHECK_VALUE: original on '{}' {}, copy on '{}' {}), and this key's usage allows no operation that could prove the copy",
                    src.name(),
                    a.map(|v| format!("= {}", hex::encode(v))).unwrap_or_else(|| "empty".into()),
                    dst.name(),
                    b.map(|v| format!("= {}", hex::encode(v))).unwrap_or_else(|| "empty".into()),
                )),
            }
        }
        KeyFamily::Aes => {
            let src = src.ok_or(ORIGINAL_UNREACHABLE)?;
            if key.usage.contains(Operation::Encrypt) && !key.usage.contains(Operation::Decrypt) {
                // Encrypt-only: GCM is deterministic for one key, IV and input, so the same
                // ciphertext from both proves the same key.
                let iv: [u8; 12] = rand::random();
                let aad = b"kms backup drill";
                let a = src
                    .aes_gcm_encrypt(&version.object_id, &iv, aad, &challenge)
                    .map_err(e)?;
                let b = dst
                    .aes_gcm_encrypt(&copy.object_id, &iv, aad, &challenge)
                    .map_err(e)?;
                return if a == b {
                    Ok("original and copy encrypt to the same ciphertext".into())
                } else {
                    Err("the copy encrypts differently from the original".into())
                };
            }
            if key.usage.contains(Operation::Encrypt) && key.usage.contains(Operation::Decrypt) {
                let iv: [u8; 12] = rand::random();
                let aad = b"kms backup drill";
                let ct = src
                    .aes_gcm_encrypt(&version.object_id, &iv, aad, &challenge)
                    .map_err(e)?;
                let pt = dst
                    .aes_gcm_decrypt(&copy.object_id, &iv, aad, &ct)
                    .map_err(e)?;
                if pt.as_slice() == challenge {
                    Ok("data encrypted on the original decrypted on the copy".into())
                } else {
                    Err("the copy decrypted the original's ciphertext into something else".into())
                }
            } else if key.usage.contains(Operation::Wrap) && key.usage.contains(Operation::Unwrap) {
                let dk = src.generate_data_key(&version.object_id).map_err(e)?;
                let got = dst
                    .unwrap_data_key(&copy.object_id, &dk.wrapped)
                    .map_err(e)?;
                if got.as_slice() == dk.plaintext.as_slice() {
                    Ok("a data key wrapped on the original unwrapped on the copy".into())
                } else {
                    Err("the copy unwrapped the original's data key into something else".into())
                }
            } else {
                Err(format!(
                    "an {} key with usage {} cannot be drilled (needs encrypt+decrypt or wrap+unwrap)",
                    key.key_type, key.usage
                ))
            }
        }
    }
}
