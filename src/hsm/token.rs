//! Finding a token by label or serial (never by slot id), logging in once for the process, and
//! handing out pooled sessions.
//!
//! SoftHSM2 (and PKCS#11 in general) drops the login when the application's last session on the
//! token closes, so a `Token` keeps one dedicated session open for its whole life: the login lives
//! as long as the `Token`.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::objects::KeyClass;
use super::pool::{session_broken, SessionPool};
use super::{module, HsmError};
use crate::config::{TokenConfig, TokenSelector};
use crate::model::ObjectId;

/// What a token says about itself; no secrets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenDescription {
    pub label: String,
    pub serial: String,
    pub model: String,
    pub manufacturer: String,
    pub user_pin_locked: bool,
    /// The token says the next wrong PIN locks it.
    pub user_pin_final_try: bool,
}

/// A logged-in token with its session pool.
pub struct Token {
    name: String,
    module: PathBuf,
    ctx: Pkcs11,
    slot: Slot,
    /// Serial and label as found at open (they identify the token; they do not change).
    serial: String,
    label: String,
    /// Kept (zeroized on drop, never printed) to log in again if the token drops the login,
    /// e.g. after an HSM restart; the login itself lives as long as this session.
    pin: SecretString,
    login: Mutex<Session>,
    pool: SessionPool,
    /// Objects whose identity was checked against the inventory (`identity.rs`), by a digest of
    /// CKA_ID and what was expected of it. Dropped with the token (logout, failover, reset).
    identities: Mutex<std::collections::HashMap<[u8; 48], u64>>,
    /// CKA_ID and class -> object handle (`objects.rs`, `Token::handle`): no search per operation.
    handles: Mutex<std::collections::HashMap<(ObjectId, KeyClass), ObjectHandle>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

/// Find the configured token without logging in.
pub fn describe(cfg: &TokenConfig) -> Result<TokenDescription, HsmError> {
    let _gate = module::gate();
    let ctx = module::load(&cfg.module)?;
    let (_, description) = find_slot(&ctx, cfg)?;
    Ok(description)
}

/// The serial, public half (SPKI DER) and label of key pair `id`, without logging in.
pub fn public_key_without_login(
    cfg: &TokenConfig,
    id: &crate::model::ObjectId,
    key_type: crate::model::KeyType,
) -> Result<(String, Vec<u8>, String), HsmError> {
    let _gate = module::gate();
    let ctx = module::load(&cfg.module)?;
    let (slot, description) = find_slot(&ctx, cfg)?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(HsmError::ck(&cfg.name, "opening a session"))?;
    let spki = super::public_key::export(&cfg.name, &session, id, key_type)?;
    let label = super::objects::label_of(&cfg.name, &session, id)?;
    Ok((description.serial, spki, label))
}

/// What a session without a login sees on the token: its description and its public objects,
/// and, for each `(id, expected)` asked, whether the public half is there and is the key
/// expected (`Ok(true)` / `Ok(false)` absent / `Err` another object). No login, so no write to
/// a SoftHSM2 token file.
#[allow(clippy::type_complexity)]
pub fn inspect_without_login(
    cfg: &TokenConfig,
    checks: &[(ObjectId, super::Expected<'_>)],
) -> Result<
    (
        TokenDescription,
        Vec<super::TokenObject>,
        Vec<Result<bool, HsmError>>,
    ),
    HsmError,
> {
    let _gate = module::gate();
    let ctx = module::load(&cfg.module)?;
    let (slot, description) = find_slot(&ctx, cfg)?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(HsmError::ck(&cfg.name, "opening a session"))?;
    let objects = super::objects::list_in(&cfg.name, &session)?;
    let checked = checks
        .iter()
        .map(|(id, expected)| {
            super::identity::check_public_identity(&cfg.name, &session, id, expected)
        })
        .collect();
    Ok((description, objects, checked))
}

impl Token {
    /// Find the token, resolve its PIN from the configured source and log in.
    pub(crate) fn open(cfg: &TokenConfig) -> Result<Token, HsmError> {
        let _gate = module::gate();
        let ctx = module::load(&cfg.module)?;
        let (slot, description) = find_slot(&ctx, cfg)?;
        if description.user_pin_locked {
            return Err(HsmError::PinLocked {
                token: cfg.name.clone(),
            });
        }
        // A stale PIN in a scheduled job must not burn a real HSM's last try.
        if description.user_pin_final_try && std::env::var_os("KMS_ALLOW_FINAL_PIN_TRY").is_none() {
            return Err(HsmError::PinFinalTry {
                token: cfg.name.clone(),
            });
        }
        let pin = cfg.user_pin.resolve(&cfg.name)?;
        let login = ctx
            .open_rw_session(slot)
            .map_err(HsmError::ck(&cfg.name, "opening the login session"))?;
        login_user(&ctx, slot, &login, &pin, &cfg.name)?;
        Ok(Token {
            name: cfg.name.clone(),
            module: cfg.module.clone(),
            pool: SessionPool::new(&cfg.name, ctx.clone(), slot, cfg.sessions),
            ctx,
            slot,
            serial: description.serial,
            label: description.label,
            pin,
            login: Mutex::new(login),
            identities: Mutex::new(std::collections::HashMap::new()),
            handles: Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `memo` was checked for the object now at `handle` (a new handle: check again).
    pub(super) fn identity_checked(&self, memo: &[u8; 48], handle: ObjectHandle) -> bool {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(memo)
            .is_some_and(|h| *h == handle.handle())
    }

    pub(super) fn remember_identity(&self, memo: [u8; 48], handle: ObjectHandle) {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(memo, handle.handle());
    }

    pub(super) fn cached_handle(&self, id: &ObjectId, class: KeyClass) -> Option<ObjectHandle> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(id.clone(), class))
            .copied()
    }

    pub(super) fn cache_handle(&self, id: &ObjectId, class: KeyClass, h: ObjectHandle) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((id.clone(), class), h);
    }

    /// Drop every cached handle (a destroy, an invalid handle, a new login).
    pub(crate) fn forget_handles(&self) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Forget every identity check (after an object was destroyed: a new one may take its CKA_ID).
    pub(crate) fn forget_identities(&self) {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The user PIN, for a context-specific login (always-authenticate keys).
    pub(crate) fn pin(&self) -> &SecretString {
        &self.pin
    }

    pub fn module(&self) -> &std::path::Path {
        &self.module
    }

    /// Session pool usage: (open, idle, size).
    pub fn session_stats(&self) -> (usize, usize, usize) {
        self.pool.stats()
    }

    pub fn description(&self) -> Result<TokenDescription, HsmError> {
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(HsmError::ck(&self.name, "reading token info"))?;
        Ok(describe_info(&info))
    }

    /// Run `f` on a pooled session. A session the token reports as broken is closed, not reused;
    /// if the token says the login is gone, log in again and try `f` once more.
    pub(crate) fn run<T>(
        &self,
        f: impl Fn(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let result = self.run_once(&f);
        match &result {
            Err(e) if e.rv() == Some(RvError::UserNotLoggedIn) => {
                tracing::warn!(token = %self.name, "token dropped the login; logging in again");
                self.relogin()?;
                self.forget_handles();
                self.run_once(&f)
            }
            // A cached handle the token no longer knows (the object was destroyed or the token
            // re-initialised behind kms's back): search again, once.
            Err(e)
                if matches!(
                    e.rv(),
                    Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
                ) =>
            {
                tracing::warn!(token = %self.name, "a cached object handle is invalid; looking the object up again");
                self.forget_handles();
                self.forget_identities();
                self.run_once(&f)
            }
            _ => result,
        }
    }

    fn run_once<T>(&self, f: &impl Fn(&Session) -> Result<T, HsmError>) -> Result<T, HsmError> {
        let session = self.pool.get()?;
        let result = f(&session);
        if let Err(e) = &result {
            if e.rv().is_some_and(session_broken) {
                session.discard();
            }
        }
        result
    }

    /// Log in again on the held session, or on a new one if that session is gone too.
    fn relogin(&self) -> Result<(), HsmError> {
        let mut login = self.login.lock().unwrap_or_else(|p| p.into_inner());
        match login_user(&self.ctx, self.slot, &login, &self.pin, &self.name) {
            Ok(()) => Ok(()),
            Err(e) if e.rv().is_some_and(session_broken) => {
                let fresh = self
                    .ctx
                    .open_rw_session(self.slot)
                    .map_err(HsmError::ck(&self.name, "opening the login session"))?;
                login_user(&self.ctx, self.slot, &fresh, &self.pin, &self.name)?;
                *login = fresh;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn login_user(
    ctx: &Pkcs11,
    slot: Slot,
    session: &Session,
    pin: &SecretString,
    token: &str,
) -> Result<(), HsmError> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            let info = ctx.get_token_info(slot).ok();
            Err(HsmError::WrongPin {
                token: token.to_owned(),
                final_try: info.as_ref().is_some_and(|i| i.user_pin_final_try()),
                count_low: info.as_ref().is_some_and(|i| i.user_pin_count_low()),
            })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked {
            token: token.to_owned(),
        }),
        Err(e) => Err(HsmError::ck(token, "logging in")(e)),
    }
}

pub(super) fn find_slot(
    ctx: &Pkcs11,
    cfg: &TokenConfig,
) -> Result<(Slot, TokenDescription), HsmError> {
    // A slot whose token info cannot be read right now (SoftHSM2's file store under concurrent
    // processes, a busy HSM) is retried a few times before the token is called absent.
    let mut attempt = 0u64;
    loop {
        let slots = ctx
            .get_slots_with_token()
            .map_err(HsmError::ck(&cfg.name, "listing slots"))?;
        let mut present = Vec::new();
        let mut unreadable = None;
        for slot in slots {
            let info = match ctx.get_token_info(slot) {
                Ok(info) => info,
                Err(e) => {
                    unreadable = Some(e);
                    continue;
                }
            };
            if !info.token_initialized() {
                continue;
            }
            let d = describe_info(&info);
            let hit = match &cfg.selector {
                TokenSelector::Label(l) => d.label == *l,
                TokenSelector::Serial(s) => d.serial == *s,
            };
            if hit {
                return Ok((slot, d));
            }
            present.push(format!("'{}' (serial {})", d.label, d.serial));
        }
        match unreadable {
            Some(_) if attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
            }
            Some(e) => return Err(HsmError::ck(&cfg.name, "reading token info")(e)),
            None => {
                return Err(HsmError::TokenNotFound {
                    token: cfg.name.clone(),
                    selector: cfg.selector.to_string(),
                    module: cfg.module.clone(),
                    present,
                    advice: String::new(),
                })
            }
        }
    }
}

fn describe_info(info: &cryptoki::slot::TokenInfo) -> TokenDescription {
    TokenDescription {
        label: info.label().trim_end().to_owned(),
        serial: info.serial_number().trim_end().to_owned(),
        model: info.model().trim_end().to_owned(),
        manufacturer: info.manufacturer_id().trim_end().to_owned(),
        user_pin_locked: info.user_pin_locked(),
        user_pin_final_try: info.user_pin_final_try(),
    }
}
