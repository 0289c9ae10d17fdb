//! Create Key Pair: an RSA or EC key pair generated on the token.

use super::*;

/// CreateKeyPair: RSA-3072 or EC P-384 (Cryptographic Algorithm RSA or EC/ECDSA, Length 3072
/// or 384), usage sign,verify. The private key's identifier is the kms key ID; the public key's
/// is the same ID with `/public`.
pub(super) fn handle(cx: &Cx, p: &Item) -> Result<Vec<Item>, Failure> {
    let (engine, caller) = (cx.engine, cx.caller);
    let attrs = template(p);
    let get = |n: &str| find(&attrs, n);
    let algorithm = get("Cryptographic Algorithm").and_then(Item::as_enum);
    let length = get("Cryptographic Length").and_then(Item::as_int);
    let key_type = match (algorithm, length) {
        (Some(alg::RSA), Some(3072) | None) => KeyType::Rsa3072,
        (Some(alg::RSA), Some(2048)) => KeyType::Rsa2048,
        (Some(alg::RSA), Some(4096)) => KeyType::Rsa4096,
        (Some(alg::ECDSA | alg::EC), Some(384) | None) => KeyType::EcP384,
        (Some(alg::ECDSA | alg::EC), Some(256)) => KeyType::EcP256,
        (a, l) => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                format!("CreateKeyPair makes RSA (2048/3072/4096) and EC (P-256/P-384) key pairs, not algorithm {a:?} length {l:?}"),
            ))
        }
    };
    let name = name_of(&attrs);
    let usage = OperationSet([Operation::Sign, Operation::Verify].into_iter().collect());
    let key = create_owned(engine, caller, name, key_type, usage, None, &a8(&attrs)?)?;
    Ok(vec![
        text(t::PRIVATE_KEY_UNIQUE_IDENTIFIER, &key.id),
        text(
            t::PUBLIC_KEY_UNIQUE_IDENTIFIER,
            &format!("{}{PUBLIC_SUFFIX}", key.id),
        ),
    ])
}
