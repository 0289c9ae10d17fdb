//! Checks by real openssl, independent of kms: a signature made by `kms key sign` verified
//! against the public key `kms key public` wrote.

use std::path::Path;
use std::process::{Command, Output};

use crate::{path, Env, Res};

/// `openssl` with arguments; returns the output.
pub fn openssl(args: &[&str]) -> Res<Output> {
    Ok(Command::new("openssl").args(args).output()?)
}

/// `openssl dgst OPTS -verify PEM -signature SIG MSG` (e.g. OPTS `["-sha384"]`); the output.
pub fn openssl_dgst_verify(opts: &[&str], pem: &Path, sig: &Path, msg: &Path) -> Res<Output> {
    let mut args = vec!["dgst"];
    args.extend_from_slice(opts);
    args.extend(["-verify", path(pem)?, "-signature", path(sig)?, path(msg)?]);
    openssl(&args)
}

/// `openssl pkeyutl -verify -rawin` (pure Ed25519) of `sig` over `msg`; the output.
pub fn openssl_rawin_verify(pem: &Path, sig: &Path, msg: &Path) -> Res<Output> {
    openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        path(pem)?,
        "-rawin",
        "-in",
        path(msg)?,
        "-sigfile",
        path(sig)?,
    ])
}

impl Env {
    /// `kms key sign KEY --in MSG --out SIG`, failing unless it exits 0.
    pub fn sign_file(&self, key: &str, msg: &Path, sig: &Path) -> Res<Output> {
        self.ok(&["key", "sign", key, "--in", path(msg)?, "--out", path(sig)?])
    }

    /// `kms key public KEY --out PEM`, failing unless it exits 0.
    pub fn public_pem(&self, key: &str, pem: &Path) -> Res<Output> {
        self.ok(&["key", "public", key, "--out", path(pem)?])
    }
}
