//! Loading PKCS#11 modules: each module file is loaded and `C_Initialize`d once per process, with OS
//! locking, and shared by every token that uses it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::HsmError;

/// Process-wide by necessity: a PKCS#11 library is initialised once per process
/// (`C_Initialize`), whichever engine or token uses it.
static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Calls made on a module outside a `Token` (finding slots, logging in, describing) hold this for
/// reading; re-initialising a module holds it for writing, so `C_Finalize` never runs while such a
/// call is in flight. Process-wide, like the modules it guards.
static GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Hold while calling a module outside a `Token`'s sessions.
pub fn gate() -> std::sync::RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|p| p.into_inner())
}

/// Set the environment the modules read at `C_Initialize` (e.g. `SOFTHSM2_CONF`): the config file
/// says where its tokens are, so its values win over whatever the shell exported. Called when the
/// engine opens, before any module is loaded and before the process starts worker threads.
pub fn prepare_environment(environment: &BTreeMap<String, String>) {
    for (k, v) in environment {
        std::env::set_var(k, v);
    }
}

/// The initialised context for the module at `path`, loading it on first use.
pub fn load(path: &Path) -> Result<Pkcs11, HsmError> {
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut modules = modules.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.get(path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|source| HsmError::ModuleLoad {
        path: path.to_owned(),
        source,
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(source) => {
            return Err(HsmError::ModuleInit {
                path: path.to_owned(),
                source,
            })
        }
    }
    modules.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// Finalize the module at `path` and forget it, so the next `load` initialises it afresh. The
/// caller guarantees no session of this module is still open.
pub fn reset(path: &Path) {
    let _exclusive = GATE.write().unwrap_or_else(|p| p.into_inner());
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut modules = modules.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.remove(path) {
        if let Err(e) = ctx.finalize() {
            tracing::warn!(module = %path.display(), error = %e, "C_Finalize failed");
        }
    }
}
