//! The two tokens: made by `scripts/setup-softhsm`, and seen from outside kms (pkcs11-tool, PINs,
//! the backup pairing, objects by CKA_ID, SoftHSM2 files).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{repo_root, Env, Res, TestResult};

/// Two fresh tokens and a `kms.toml` in `dir`, by the project's own `scripts/setup-softhsm`
/// (on SoftHSM2's object store `backend` when given).
pub(crate) fn setup_softhsm(dir: &Path, backend: Option<&str>) -> TestResult {
    let mut setup = Command::new("bash");
    setup
        .arg(repo_root().join("scripts/setup-softhsm"))
        .env("KMS_DEV_DIR", dir);
    if let Some(backend) = backend {
        setup.env("KMS_SOFTHSM_BACKEND", backend);
    }
    let out = setup.output()?;
    if !out.status.success() {
        return Err(format!(
            "setup-softhsm failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

impl Env {
    pub fn softhsm_conf(&self) -> PathBuf {
        self.path("softhsm2.conf")
    }

    /// The SoftHSM2 directory of token `label` (its label is in `token.object` on the file
    /// store, in `sqlite3.db` on the db store).
    pub fn token_dir(&self, label: &str) -> Res<PathBuf> {
        for entry in std::fs::read_dir(self.path("tokens"))? {
            let dir = entry?.path();
            for file in ["token.object", "sqlite3.db"] {
                let meta = std::fs::read(dir.join(file)).unwrap_or_default();
                if meta.windows(label.len()).any(|w| w == label.as_bytes()) {
                    return Ok(dir);
                }
            }
        }
        Err(format!("no SoftHSM2 directory for token {label}").into())
    }

    pub fn so_pin(&self, label: &str) -> Res<String> {
        Ok(std::fs::read_to_string(
            self.path(&format!("pins/{label}.so-pin")),
        )?)
    }

    pub fn user_pin(&self, label: &str) -> Res<String> {
        Ok(std::fs::read_to_string(
            self.path(&format!("pins/{label}.user-pin")),
        )?)
    }

    /// The PKCS#11 module setup-softhsm found (as written into kms.toml).
    pub fn module(&self) -> Res<String> {
        let cfg = std::fs::read_to_string(self.config())?;
        cfg.lines()
            .find_map(|l| l.strip_prefix("module = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .map(str::to_owned)
            .ok_or_else(|| "no module in kms.toml".into())
    }

    /// pkcs11-tool against one of this environment's tokens, logged in as user.
    pub fn pkcs11_tool(&self, label: &str, args: &[&str]) -> Res<Output> {
        let pin = self.user_pin(label)?;
        let module = self.module()?;
        Ok(Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .args([
                "--module",
                &module,
                "--token-label",
                label,
                "--login",
                "--pin",
            ])
            .arg(pin)
            .args(args)
            .output()?)
    }

    /// The token's objects as pkcs11-tool lists them.
    pub fn list_objects(&self, label: &str) -> Res<String> {
        let out = self.pkcs11_tool(label, &["--list-objects"])?;
        if !out.status.success() {
            return Err(format!(
                "pkcs11-tool --list-objects failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// How many key objects the token holds, counted by pkcs11-tool (independent of kms).
    pub fn object_count(&self, label: &str) -> Res<usize> {
        Ok(self
            .list_objects(label)?
            .lines()
            .filter(|l| l.contains(" Object;") || l.starts_with("Secret Key Object"))
            .count())
    }
}

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

/// The `Access:` line of every private and secret key object in a pkcs11-tool listing
/// (`--list-objects`: "<kind> Key Object", then that object's "label:" and "Access:" lines), by
/// label.
pub fn key_access(listing: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut private = false;
    let mut label = String::new();
    for line in listing.lines() {
        if line.contains("Key Object") {
            private = !line.contains("Public");
            label.clear();
        } else if let Some(l) = line.trim_start().strip_prefix("label:") {
            label = l.trim().to_owned();
        } else if let Some(a) = line.trim_start().strip_prefix("Access:") {
            if private {
                out.insert(label.clone(), a.trim().to_owned());
            }
        }
    }
    out
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
