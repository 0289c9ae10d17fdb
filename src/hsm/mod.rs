//! The PKCS#11 layer: the only module that imports `cryptoki`.
//!
//! - `module`: load + `C_Initialize` each module once per process (OS locking).
//! - `token`: find a token by label/serial, log in once, keep the login for the process.
//! - `pool`: logged-in sessions handed out one per worker.
//! - `keygen`, `sign`, `cipher`, `objects`, `public_key`: operations, split by kind.
//!
//! [`Hsm`] is the registry of configured tokens, opened lazily so one unreachable token does not
//! stop work on the others.

mod cipher;
mod error;
mod keygen;
mod module;
mod objects;
mod personal;
mod pool;
mod public_key;
mod sign;
mod token;
mod uri;
mod wrap;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub use error::HsmError;
pub use keygen::GeneratedKey;
pub use objects::TokenObject;
pub use personal::{card_public_key, sign_with_card, CardSignature};
pub use token::{Token, TokenDescription};
pub use uri::{Pkcs11Uri, UriError};
pub use wrap::DataKey;

use crate::config::{Config, TokenConfig};

/// The configured tokens of this process.
pub struct Hsm {
    configs: BTreeMap<String, TokenConfig>,
    open: Mutex<HashMap<String, Arc<Token>>>,
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
            configs: config.tokens.clone(),
            open: Mutex::new(HashMap::new()),
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
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = open.get(name) {
            return Ok(Arc::clone(t));
        }
        let cfg = self
            .configs
            .get(name)
            .ok_or_else(|| self.not_configured(name))?;
        let token = Arc::new(Token::open(cfg)?);
        open.insert(name.to_owned(), Arc::clone(&token));
        Ok(token)
    }

    /// What the token says about itself, without logging in.
    pub fn describe(&self, name: &str) -> Result<TokenDescription, HsmError> {
        match self.configs.get(name) {
            Some(cfg) => token::describe(cfg),
            None => Err(self.not_configured(name)),
        }
    }

    fn not_configured(&self, name: &str) -> HsmError {
        HsmError::NotConfigured {
            token: name.to_owned(),
            configured: self.configs.keys().cloned().collect(),
        }
    }
}
