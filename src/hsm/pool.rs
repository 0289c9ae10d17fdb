//! A pool of logged-in sessions for one token, handed out by ownership: one session per worker at a
//! time (`Session` is `Send` but not `Sync`). A session goes back to the pool when its guard drops;
//! a session that saw a session-level failure is closed instead of returned.

use std::ops::Deref;
use std::sync::{Condvar, Mutex};

use cryptoki::context::Pkcs11;
use cryptoki::error::RvError;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::HsmError;

/// How long a worker waits for a free session before giving up.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct SessionPool {
    token: String,
    ctx: Pkcs11,
    slot: Slot,
    max: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
}

impl SessionPool {
    pub fn new(token: &str, ctx: Pkcs11, slot: Slot, max: usize) -> SessionPool {
        SessionPool {
            token: token.to_owned(),
            ctx,
            slot,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// Take a session, opening one if the pool is below its size, else waiting for one to return.
    pub fn get(&self) -> Result<PooledSession<'_>, HsmError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(PooledSession {
                    pool: self,
                    session: Some(session),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.ctx.open_rw_session(self.slot) {
                    Ok(session) => Ok(PooledSession {
                        pool: self,
                        session: Some(session),
                    }),
                    Err(e) => {
                        self.forget_one();
                        Err(HsmError::ck(&self.token, "opening a session")(e))
                    }
                };
            }
            let (next, timeout) = self
                .returned
                .wait_timeout(state, POOL_WAIT)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            if timeout.timed_out() && state.idle.is_empty() && state.open >= self.max {
                return Err(HsmError::PoolExhausted {
                    token: self.token.clone(),
                    size: self.max,
                    waited_secs: POOL_WAIT.as_secs(),
                });
            }
        }
    }

    /// (open sessions, idle sessions, pool size): every open session is idle when no request is
    /// in flight, so `open == idle` at rest means none leaked.
    pub fn stats(&self) -> (usize, usize, usize) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.open, state.idle.len(), self.max)
    }

    fn forget_one(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open = state.open.saturating_sub(1);
        self.returned.notify_one();
    }

    fn put_back(&self, session: Session) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.idle.push(session);
        self.returned.notify_one();
    }
}

/// A session on loan from the pool.
pub struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl PooledSession<'_> {
    /// Close this session instead of returning it to the pool: used when the token said the
    /// session itself is broken (closed, logged out, device removed).
    pub fn discard(mut self) {
        if let Some(s) = self.session.take() {
            drop(s);
            self.pool.forget_one();
        }
    }
}

/// Whether a PKCS#11 return code means the session, not the request, is broken.
pub fn session_broken(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn
    )
}

impl Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // The Option is emptied only by `discard` (which consumes the guard) and by `drop`.
        match &self.session {
            Some(s) => s,
            None => unreachable_session(),
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_session() -> ! {
    panic!("pooled session used after it was discarded")
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.pool.put_back(s);
        }
    }
}
