//! The configured tokens and their state.

use serde::Serialize;

use super::{Caller, Engine, EngineError};

/// One configured token as `kms token list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenStatus {
    pub name: String,
    pub module: String,
    pub selector: String,
    pub label: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub manufacturer: Option<String>,
    pub logged_in: bool,
    pub objects: Option<usize>,
    /// Why the token could not be found or logged in to.
    pub error: Option<String>,
}

impl Engine {
    /// Every configured token: found? logged in? how many objects? One token's failure is
    /// reported in its row and does not hide the others.
    pub fn token_status(&self, caller: &Caller) -> Result<Vec<TokenStatus>, EngineError> {
        self.audited(caller, "token.list", None, |note| {
            let mut out = Vec::new();
            for name in self.hsm.names() {
                let Some(cfg) = self.hsm.config(name) else {
                    continue;
                };
                let mut status = TokenStatus {
                    name: name.to_owned(),
                    module: cfg.module.display().to_string(),
                    selector: cfg.selector.to_string(),
                    label: None,
                    serial: None,
                    model: None,
                    manufacturer: None,
                    logged_in: false,
                    objects: None,
                    error: None,
                };
                match self.hsm.describe(name) {
                    Ok(d) => {
                        status.label = Some(d.label);
                        status.serial = Some(d.serial);
                        status.model = Some(d.model);
                        status.manufacturer = Some(d.manufacturer);
                    }
                    Err(e) => {
                        status.error = Some(e.to_string());
                        out.push(status);
                        continue;
                    }
                }
                match self.hsm.token(name).and_then(|t| t.list_objects()) {
                    Ok(objects) => {
                        status.logged_in = true;
                        status.objects = Some(objects.len());
                    }
                    Err(e) => status.error = Some(e.to_string()),
                }
                out.push(status);
            }
            let ok = out.iter().filter(|s| s.logged_in).count();
            note.detail = Some(format!("{ok} of {} tokens logged in", out.len()));
            Ok(out)
        })
    }
}
