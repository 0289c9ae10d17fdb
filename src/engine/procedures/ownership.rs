//! Who is running a procedure. A procedure's process holds an exclusive lock on
//! `<inventory>.procedures/<id>.lock` from before its intent is recorded until it ends; the kernel
//! releases the lock when the process dies. On a PostgreSQL inventory (several nodes, several
//! machines) the lock is a session-level advisory lock on a connection of its own instead, which
//! PostgreSQL releases when the process dies: the same rule, cluster-wide. Repair takes the same lock (without waiting) before it
//! touches a procedure, so a live procedure in another process — a `kms key rotate` at the console
//! while `kms serve`'s scheduler runs — is never mistaken for a crashed one, and two repairs never
//! work on the same procedure.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use super::super::{Engine, EngineError};

/// Held while a procedure runs (or is repaired); released and removed on drop.
#[derive(Debug)]
pub(crate) enum ProcedureLock {
    File {
        _file: File,
        path: PathBuf,
    },
    Cluster {
        _lock: crate::inventory::SessionLock,
    },
}

impl Drop for ProcedureLock {
    fn drop(&mut self) {
        if let ProcedureLock::File { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Engine {
    fn procedure_lock_path(&self, id: &str) -> Result<PathBuf, EngineError> {
        let mut dir = self.config.inventory_path.clone().into_os_string();
        dir.push(".procedures");
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| EngineError::Incomplete(format!("{}: {e}", dir.display())))?;
        Ok(dir.join(format!("{id}.lock")))
    }

    /// A new procedure id with its lock held.
    pub(crate) fn new_procedure(&self) -> Result<(String, ProcedureLock), EngineError> {
        let id = format!("p-{}", uuid::Uuid::new_v4());
        let lock = self
            .lock_procedure(&id)?
            .ok_or_else(|| EngineError::Incomplete(format!("procedure {id} is locked already")))?;
        Ok((id, lock))
    }

    /// The lock of procedure `id`, or `None` if a live process holds it.
    pub(crate) fn lock_procedure(&self, id: &str) -> Result<Option<ProcedureLock>, EngineError> {
        if self.inventory.is_postgres() {
            return Ok(self
                .inventory
                .try_session_lock(&format!("procedure:{id}"))?
                .map(|l| ProcedureLock::Cluster { _lock: l }));
        }
        let path = self.procedure_lock_path(id)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| EngineError::Incomplete(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ProcedureLock::File { _file: file, path })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => {
                Err(EngineError::Incomplete(format!("{}: {e}", path.display())))
            }
        }
    }
}
