//! The PKCS#11 layer: the only module that imports `cryptoki`.
//!
//! - `module`: load + `C_Initialize` each module once per process (OS locking).
//! - `token`: find a token by label/serial, log in once, keep the login for the process.
//! - `pool`: logged-in sessions handed out one per worker.
//! - `keygen`, `sign`, `cipher`, `objects`, `public_key`: operations, split by kind.
//!
//! [`Hsm`] is the registry of configured tokens, opened lazily so one unreachable token does not
//! stop work on the others.

mod adopt;
mod anchor;
mod backup;
mod cipher;
mod error;
mod identity;
mod import;
mod keygen;
mod mac;
mod module;
mod objects;
mod personal;
mod pool;
mod public_key;
mod raw;
mod reveal;
mod sign;
mod store;
mod token;
mod uri;
mod wrap;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub use adopt::Adoptable;
pub use backup::{KekState, NoCopy, TransportPublicKey, WrappedKey};
pub use error::HsmError;
pub use identity::Expected;
pub use keygen::GeneratedKey;
pub use objects::{lookups_total, TokenObject};
pub use personal::{card_public_key, sign_with_card, CardKey, CardSignature};
pub use token::{Token, TokenDescription};
pub use uri::{Pkcs11Uri, UriError};
pub use wrap::DataKey;

use crate::config::{Config, TokenConfig};

/// The configured tokens of this process.
/// Cheap to clone: clones share the open tokens (the inventory's row-integrity signer holds one).
#[derive(Clone)]
pub struct Hsm {
    configs: Arc<BTreeMap<String, TokenConfig>>,
    open: Arc<Mutex<HashMap<String, Arc<Token>>>>,
    /// The backup token (`[backup] token`), named in the advice for a lost token.
    backup: Option<String>,
}

/// The raw token layer, for `scripts/bench`'s baseline only: compiled in with the `bench-raw`
/// feature, never in the `kms` binary, so nothing outside the engine can reach a token.
#[cfg(feature = "bench-raw")]
pub fn open_for_benchmark(config: &Config) -> Hsm {
    Hsm::new(config)
}

impl Hsm {
    pub(crate) fn new(config: &Config) -> Hsm {
        module::prepare_environment(&config.environment);
        Hsm {
            configs: Arc::new(config.tokens.clone()),
            open: Arc::new(Mutex::new(HashMap::new())),
            backup: config.backup.as_ref().map(|b| b.token.clone()),
        }
    }

    /// Configured token names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.configs.keys().map(String::as_str)
    }

    pub fn config(&self, name: &str) -> Option<&TokenConfig> {
        self.configs.get(name)
    }

    /// The logged-in token `name`, opening it on first use.
    pub fn token(&self, name: &str) -> Result<Arc<Token>, HsmError> {
        {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = open.get(name) {
                return Ok(Arc::clone(t));
            }
        }
        let cfg = self
            .configs
            .get(name)
            .ok_or_else(|| self.not_configured(name))?;
        // Opened without holding the registry: a token that hangs on login must not block
        // every other token (the backup serving during a failover, say).
        let token = Arc::new(Token::open(cfg).map_err(|e| self.explain(e))?);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(
            open.entry(name.to_owned()).or_insert_with(|| token),
        ))
    }

    /// Whether this process holds token `name` open (logged in) right now.
    pub fn is_open(&self, name: &str) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.contains_key(name)
    }

    /// Step 2 of a key ceremony, as the SO of token `name`: see [`backup::so_make_trusted_kek`].
    /// Refused while this process holds the token open (the user login must be gone first).
    pub fn so_make_trusted_kek(
        &self,
        name: &str,
        so_pin: &secrecy::SecretString,
        transport: &TransportPublicKey,
        transport_id: &crate::model::ObjectId,
        kek_id: &crate::model::ObjectId,
        label: &str,
    ) -> Result<Vec<u8>, HsmError> {
        let cfg = self
            .configs
            .get(name)
            .ok_or_else(|| self.not_configured(name))?;
        if !self.release(name) {
            return Err(HsmError::UserHoldsToken {
                token: name.to_owned(),
            });
        }
        backup::so_make_trusted_kek(cfg, so_pin, transport, transport_id, kek_id, label)
    }

    /// Close this process's hold on token `name` (its sessions and so its user login). False if
    /// the token is still in use elsewhere in the process.
    pub fn release(&self, name: &str) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.remove(name) {
            None => true,
            Some(t) => match Arc::try_unwrap(t) {
                Ok(token) => {
                    drop(token);
                    true
                }
                Err(t) => {
                    open.insert(name.to_owned(), t);
                    false
                }
            },
        }
    }

    /// Forget a token that stopped answering: the next `token(name)` finds it and logs in
    /// afresh. Returns a weak handle that dies when the last in-flight user lets go.
    pub fn forget(&self, name: &str) -> Option<std::sync::Weak<Token>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(name).map(|t| Arc::downgrade(&t))
    }

    /// Re-initialise the module of token `name` (C_Finalize, then C_Initialize on next use),
    /// which SoftHSM2 and several HSM clients need to see a token again after it was lost. Only
    /// done when no other configured token uses the module and nothing holds the old token:
    /// stale sessions of other tokens must never outlive a re-initialisation.
    pub fn reset_module(&self, name: &str, old: &[std::sync::Weak<Token>]) -> bool {
        if !self.configs.contains_key(name) || self.module_shared(name) {
            return false;
        }
        let Some(cfg) = self.configs.get(name) else {
            return false;
        };
        if old.iter().any(|w| w.strong_count() > 0) {
            return false;
        }
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.contains_key(name) {
            return false;
        }
        module::reset(&cfg.module);
        true
    }

    /// Whether token `name` shares its PKCS#11 module with another configured token (compared
    /// as canonical paths: two paths to one library file are one module instance).
    pub fn module_shared(&self, name: &str) -> bool {
        let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        self.configs.get(name).is_some_and(|cfg| {
            let mine = canon(&cfg.module);
            self.configs
                .values()
                .any(|c| c.name != cfg.name && canon(&c.module) == mine)
        })
    }

    /// What the token says about itself, without logging in.
    pub fn describe(&self, name: &str) -> Result<TokenDescription, HsmError> {
        match self.configs.get(name) {
            Some(cfg) => token::describe(cfg).map_err(|e| self.explain(e)),
            None => Err(self.not_configured(name)),
        }
    }

    /// The public half (SPKI DER) and label of key pair `id` on token `name`, read without
    /// logging in (public objects are readable in a plain session), with the token's serial.
    /// The values of the anchor objects `application` on token `name`, read without logging in,
    /// with the token's serial.
    pub fn anchors_without_login(
        &self,
        name: &str,
        application: &str,
    ) -> Result<(String, Vec<Vec<u8>>), HsmError> {
        match self.configs.get(name) {
            Some(cfg) => anchor::read_without_login(cfg, application),
            None => Err(self.not_configured(name)),
        }
    }

    pub fn public_key_without_login(
        &self,
        name: &str,
        id: &crate::model::ObjectId,
        key_type: crate::model::KeyType,
    ) -> Result<(String, Vec<u8>, String), HsmError> {
        match self.configs.get(name) {
            Some(cfg) => token::public_key_without_login(cfg, id, key_type),
            None => Err(self.not_configured(name)),
        }
    }

    /// Token `name` as a session without a login sees it: see [`token::inspect_without_login`].
    #[allow(clippy::type_complexity)]
    pub fn inspect_without_login(
        &self,
        name: &str,
        checks: &[(crate::model::ObjectId, Expected<'_>)],
    ) -> Result<
        (
            TokenDescription,
            Vec<TokenObject>,
            Vec<Result<bool, HsmError>>,
        ),
        HsmError,
    > {
        match self.configs.get(name) {
            Some(cfg) => token::inspect_without_login(cfg, checks).map_err(|e| self.explain(e)),
            None => Err(self.not_configured(name)),
        }
    }

    /// A token that is not found: if the module's file store holds a damaged token file, name it
    /// and say how to recover (restore from the backup token).
    fn explain(&self, e: HsmError) -> HsmError {
        let HsmError::TokenNotFound {
            token,
            selector,
            module,
            present,
            mut advice,
        } = e
        else {
            return e;
        };
        let (conf, damaged) = store::damaged_token_files(&module);
        if !damaged.is_empty() {
            let files = damaged
                .iter()
                .map(|d| format!("{} {}", d.file.display(), d.problem))
                .collect::<Vec<_>>()
                .join("; ");
            let conf = conf.map(|c| c.display().to_string()).unwrap_or_default();
            advice.push_str(&format!(
                ". The token store of {conf} has a damaged token file: {files}. SoftHSM2 rewrites that file at every login, and a process killed during the write leaves it empty, so the token (and every key on it) no longer appears"
            ));
            // Out of the token directory, or SoftHSM2 (and this check) would still see it.
            let (dir, aside) = damaged
                .first()
                .map(|d| {
                    let aside = match (d.dir.parent().and_then(|p| p.parent()), d.dir.file_name()) {
                        (Some(up), Some(n)) => up.join(format!("{}.damaged", n.to_string_lossy())),
                        _ => d.dir.with_extension("damaged"),
                    };
                    (d.dir.display().to_string(), aside.display().to_string())
                })
                .unwrap_or_default();
            let init = match self.configs.get(&token).map(|c| &c.selector) {
                Some(crate::config::TokenSelector::Label(l)) => format!(
                    "initialise a fresh token with the same label (`softhsm2-util --init-token --free --label '{l}'`, with the PINs that [tokens.{token}] reads)"
                ),
                _ => format!(
                    "initialise a fresh token (`softhsm2-util --init-token --free --label LABEL`, with the PINs that [tokens.{token}] reads) and put its serial in [tokens.{token}]"
                ),
            };
            let fresh =
                format!("move the damaged directory out of the token directory (`mv {dir} {aside}`), {init}");
            match self.backup.as_deref() {
                Some(backup) if backup != token => advice.push_str(&format!(
                    ". To recover: {fresh}, then restore its keys from the backup token: `kms backup init --from {backup} --to {token}` and `kms backup restore --from {backup} --to {token}`; afterwards pair it again with `kms backup init && kms backup sync`. Without a usable backup token, `kms backup import FILE` puts the keys back from the latest offline backup file"
                )),
                Some(_) => advice.push_str(&format!(
                    ". This is the backup token: {fresh}, then `kms backup init && kms backup sync` copies every key to it again"
                )),
                None => advice.push_str(&format!(
                    ". To recover: {fresh}, then `kms backup import FILE` puts the keys back from the latest offline backup file (no [backup] token is configured)"
                )),
            }
        }
        HsmError::TokenNotFound {
            token,
            selector,
            module,
            present,
            advice,
        }
    }

    fn not_configured(&self, name: &str) -> HsmError {
        HsmError::NotConfigured {
            token: name.to_owned(),
            configured: self.configs.keys().cloned().collect(),
        }
    }
}
