//! The configured tokens and their state.

use serde::Serialize;

use super::{Caller, Engine, EngineError};
use crate::model::Role;

/// One configured token as `kms token list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenStatus {
    pub name: String,
    /// Where the token is (`[tokens.X] site`).
    pub site: Option<String>,
    pub module: String,
    pub selector: String,
    pub label: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub manufacturer: Option<String>,
    pub logged_in: bool,
    /// Every object the user sees, counted after a login (`kms token list --objects --login`).
    pub objects: Option<usize>,
    /// The public objects (public keys, a KEK an SO installed), counted in a session without a
    /// login (`kms token list --objects`); private and secret keys are not visible so.
    pub public_objects: Option<usize>,
    /// Why the token could not be found or logged in to.
    pub error: Option<String>,
}

impl Engine {
    /// Object searches this process made on its tokens (`kms_token_lookups_total`).
    pub fn token_lookups(&self) -> u64 {
        crate::hsm::lookups_total()
    }

    /// Every configured token: found? logged in? how many objects? One token's failure is
    /// reported in its row and does not hide the others.
    ///
    /// Without `login` no token is logged in to: the token info is read, and with
    /// `count_objects` the public objects counted, in sessions without a login (SoftHSM2
    /// rewrites its token file at every login, and a process killed during that write destroys
    /// the token). `logged_in` then says whether this process already holds a login. With
    /// `login` (and `count_objects`) each token is logged in to and all its objects counted.
    pub fn token_status(
        &self,
        caller: &Caller,
        count_objects: bool,
        login: bool,
    ) -> Result<Vec<TokenStatus>, EngineError> {
        self.audited(caller, "token.list", None, |note| {
            super::policy::require_role(
                &self.inventory,
                caller,
                &[Role::SecurityOfficer, Role::Auditor],
                "list tokens",
            )?;
            let mut out = Vec::new();
            for name in self.hsm.names() {
                let Some(cfg) = self.hsm.config(name) else {
                    continue;
                };
                let mut status = TokenStatus {
                    name: name.to_owned(),
                    site: cfg.site.clone(),
                    module: cfg.module.display().to_string(),
                    selector: cfg.selector.to_string(),
                    label: None,
                    serial: None,
                    model: None,
                    manufacturer: None,
                    logged_in: false,
                    objects: None,
                    public_objects: None,
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
                if !count_objects || !login {
                    if count_objects {
                        match self.hsm.inspect_without_login(name, &[]) {
                            Ok((_, objects, _)) => status.public_objects = Some(objects.len()),
                            Err(e) => status.error = Some(e.to_string()),
                        }
                    }
                    status.logged_in = self.hsm.is_open(name);
                    out.push(status);
                    continue;
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
            let found = out.iter().filter(|s| s.serial.is_some()).count();
            let ok = out.iter().filter(|s| s.logged_in).count();
            note.detail = Some(if count_objects && login {
                format!("{ok} of {} tokens logged in", out.len())
            } else {
                format!("{found} of {} tokens found (no login)", out.len())
            });
            Ok(out)
        })
    }
}

/// Reachability of one token, for `GET /v1/health`.
#[derive(Debug, Clone, Serialize)]
/// Fields that do not apply are omitted, never `null` (docs/openapi.json: string or absent).
pub struct TokenHealth {
    pub name: String,
    /// Where the token is (`[tokens.X] site`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub reachable: bool,
    pub logged_in: bool,
    /// Pool sessions open / idle / pool size (plus one held session that keeps the login).
    pub sessions_open: usize,
    pub sessions_idle: usize,
    pub sessions_max: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Out of service since (failover): operations use backup copies meanwhile.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub down_since: Option<time::OffsetDateTime>,
}

/// Service health: `ok` when the key token is reachable and logged in; `failover` when it is
/// down and its keys are served from the backup token; `degraded` when neither serves.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: &'static str,
    /// The token that serves key operations right now (absent when none does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
    pub tokens: Vec<TokenHealth>,
    /// This node, when kms runs as one of several (`[node]`): its site, whether it runs the
    /// once-only work, and which keys it can serve at its site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<super::NodeHealth>,
}

impl Engine {
    /// Token reachability and login state. Not audited: it touches no key and monitors poll it.
    /// Opening a token here (re-)establishes its login.
    pub fn health(&self) -> Health {
        let mut tokens = Vec::new();
        let down = self.tokens_down();
        for name in self.hsm.names() {
            let mut h = TokenHealth {
                name: name.to_owned(),
                site: self.config.token_site(name).map(str::to_owned),
                label: None,
                serial: None,
                reachable: false,
                logged_in: false,
                sessions_open: 0,
                sessions_idle: 0,
                sessions_max: 0,
                error: None,
                down_since: None,
            };
            if let Some(d) = down.iter().find(|d| d.token == name) {
                // Not touched here: the failover probe decides when it is back.
                h.down_since = Some(d.since);
                h.error = Some("token down; failover to backup copies".into());
                tokens.push(h);
                continue;
            }
            let token = self.hsm.token(name);
            if let Ok(t) = &token {
                (h.sessions_open, h.sessions_idle, h.sessions_max) = t.session_stats();
            }
            match token.and_then(|t| t.description()) {
                Ok(d) => {
                    h.label = Some(d.label);
                    h.serial = Some(d.serial);
                    h.reachable = true;
                    h.logged_in = true;
                }
                Err(e) => h.error = Some(health_error(&e)),
            }
            tokens.push(h);
        }
        let key_token_ok = tokens
            .iter()
            .any(|t| t.name == self.config.key_token && t.logged_in);
        let backup = self
            .config
            .backup
            .as_ref()
            .filter(|b| b.failover)
            .map(|b| b.token.clone());
        let backup_ok = backup
            .as_ref()
            .is_some_and(|b| tokens.iter().any(|t| &t.name == b && t.logged_in));
        let (status, serving) = if self.config.node.site.is_some() {
            // A node with a site serves from the tokens at its site.
            match tokens
                .iter()
                .find(|t| self.config.serves_from(&t.name) && t.logged_in)
            {
                Some(t) => ("ok", Some(t.name.clone())),
                None => ("degraded", None),
            }
        } else if key_token_ok {
            ("ok", Some(self.config.key_token.clone()))
        } else if backup_ok {
            ("failover", backup)
        } else {
            ("degraded", None)
        };
        Health {
            status,
            serving,
            tokens,
            node: self.config.node.configured.then(|| self.node_health()),
        }
    }
}

/// A short, non-revealing description for the health endpoint.
fn health_error(e: &crate::hsm::HsmError) -> String {
    use crate::hsm::HsmError as H;
    match e {
        H::TokenNotFound { .. } => "token not present".into(),
        H::WrongPin { .. } | H::PinLocked { .. } | H::Pin(_) => "login failed".into(),
        H::ModuleLoad { .. } | H::ModuleInit { .. } => "PKCS#11 module unavailable".into(),
        _ => "token error".into(),
    }
}

/// One token's answer to [`Engine::token_liveness`].
#[derive(Debug, Clone)]
pub struct TokenLiveness {
    pub name: String,
    /// Manufacturer and model, or `unknown`.
    pub model: String,
    /// The token did something that needs a live, logged-in session.
    pub live: bool,
}

impl Engine {
    /// Every configured token asked to do something that needs a live, logged-in session
    /// (random CKA_ID from its RNG and a search), now; audited as `action`.
    pub fn token_liveness(
        &self,
        caller: &Caller,
        action: &str,
    ) -> Result<Vec<TokenLiveness>, EngineError> {
        self.audited(caller, action, None, |note| {
            let names: Vec<String> = self.hsm.names().map(str::to_owned).collect();
            let mut out = Vec::new();
            for name in names {
                let model = self
                    .hsm
                    .describe(&name)
                    .map(|d| format!("{} {}", d.manufacturer, d.model))
                    .unwrap_or_else(|_| "unknown".into());
                let live = self
                    .hsm
                    .token(&name)
                    .and_then(|t| t.new_object_id())
                    .is_ok();
                out.push(TokenLiveness { name, model, live });
            }
            note.detail = Some(
                out.iter()
                    .map(|t| format!("{}={}", t.name, if t.live { "live" } else { "unavailable" }))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            Ok(out)
        })
    }
}
