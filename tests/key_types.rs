//! The key types of issue 14 on real SoftHSM2 tokens, checked with real openssl: every signature
//! scheme (CLI and API), HMAC tags (CLI and API agree), the legacy 3DES rules and its migration
//! to AES-GCM, aes-128, and backup copies of every new type on both tokens.

use common::service::Service;
use common::*;
use kms_testkit as common;

use kms::client::{Connection, Reply};
use serde_json::{json, Value};
use std::path::Path;

#[path = "key_types/backup.rs"]
mod backup;
#[path = "key_types/signatures.rs"]
mod signatures;
#[path = "key_types/symmetric.rs"]
mod symmetric;

async fn post(c: &mut Connection, path: &str, body: Value) -> Res<Reply> {
    Ok(c.request("POST", path, Some(&body), Some("key types test"))
        .await?)
}

/// How openssl verifies a signature of one scheme.
#[derive(Clone, Copy)]
enum Check {
    /// `openssl dgst -<hash> -verify` (ECDSA DER, RSA PKCS#1 v1.5).
    Dgst(&'static str),
    /// `openssl dgst -sha256` with PSS, salt 32.
    Pss,
    /// `openssl pkeyutl -verify -rawin` (pure Ed25519).
    Ed25519,
}

fn openssl_verifies(check: Check, pem: &str, msg: &str, sig: &str) -> Res<bool> {
    let (pem, msg, sig) = (Path::new(pem), Path::new(msg), Path::new(sig));
    let o = match check {
        Check::Dgst(hash) => openssl_dgst_verify(&[hash], pem, sig, msg)?,
        Check::Pss => openssl_dgst_verify(
            &[
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
            pem,
            sig,
            msg,
        )?,
        Check::Ed25519 => openssl_rawin_verify(pem, sig, msg)?,
    };
    let out = stdout(&o);
    Ok(o.status.success()
        && (out.contains("Verified OK") || out.contains("Signature Verified Successfully")))
}
