//! The two tokens seen from outside kms: the backup pairing, objects by CKA_ID, SoftHSM2 files.

use std::path::PathBuf;

use crate::{Env, Res, TestResult};

/// The backup ceremony, then `backup sync`: the primary and backup tokens paired.
pub fn paired(env: &Env) -> TestResult {
    env.ok(&["--reason", "CHG-7 backup ceremony", "backup", "init"])?;
    env.ok(&["backup", "sync"])?;
    Ok(())
}

/// Whether any object with CKA_ID `id` is on token `label` (pkcs11-tool, independent of kms).
pub fn on_token(env: &Env, label: &str, id: &str) -> Res<bool> {
    let listing = env.list_objects(label)?;
    Ok(listing
        .lines()
        .any(|l| l.trim() == format!("ID:         {id}")))
}

/// The `token.object` file of the token labelled `label` (its label is stored in the file) on
/// SoftHSM2's file store.
pub fn token_file(env: &Env, label: &str) -> Res<PathBuf> {
    for entry in std::fs::read_dir(env.path("tokens"))? {
        let file = entry?.path().join("token.object");
        let bytes = std::fs::read(&file).unwrap_or_default();
        if bytes.windows(label.len()).any(|w| w == label.as_bytes()) {
            return Ok(file);
        }
    }
    Err(format!("no token.object holds label {label}").into())
}

/// xorshift64*: a seeded generator, so a failing run can be repeated exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
