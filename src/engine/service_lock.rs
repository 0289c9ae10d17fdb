//! Which process holds the tokens' user login: `kms serve` takes an exclusive advisory lock on
//! `<inventory>.serve.lock` for its whole life (the file holds its pid). A key ceremony needs the
//! security officer logged in, which PKCS#11 allows only while no user is logged in to the token,
//! so the ceremony checks this lock and refuses clearly instead of failing half-way on a token
//! that shares login state across processes (as network HSMs do).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use super::{Engine, EngineError, Refusal};

/// Held by `kms serve`; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct ServiceLock {
    _files: Vec<File>,
}

impl Engine {
    /// `<inventory>.serve.lock`, or `<inventory>.serve.<node>.lock` for a configured node (so
    /// several nodes may serve one inventory, each holding its own).
    fn service_lock_path(&self) -> PathBuf {
        let mut p = self.config.inventory_path.clone().into_os_string();
        if self.config.node.configured {
            p.push(format!(".serve.{}.lock", self.config.node.name));
        } else {
            p.push(".serve.lock");
        }
        PathBuf::from(p)
    }

    /// Every service lock file of this inventory on this machine (any node's).
    fn all_lock_paths(&self) -> Vec<PathBuf> {
        let inv = &self.config.inventory_path;
        let mut paths = vec![self.service_lock_path()];
        let (Some(dir), Some(name)) = (inv.parent(), inv.file_name().and_then(|n| n.to_str()))
        else {
            return paths;
        };
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        let prefix = format!("{name}.serve");
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let f = e.file_name();
                let f = f.to_string_lossy();
                if f.starts_with(&prefix) && f.ends_with(".lock") {
                    let p = dir.join(&*f);
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
            }
        }
        paths
    }

    fn open_lock(&self) -> Result<File, EngineError> {
        self.open_lock_at(&self.service_lock_path())
    }

    fn open_lock_at(&self, path: &std::path::Path) -> Result<File, EngineError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| EngineError::Incomplete(format!("{}: {e}", path.display())))
    }

    /// Take the service lock for the life of `kms serve`; refused if another service runs on
    /// the same inventory.
    pub fn hold_service_lock(&self) -> Result<ServiceLock, EngineError> {
        let mut file = self.open_lock()?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.set_len(0);
                let _ = file.rewind();
                let _ = write!(file, "{}", std::process::id());
                let _ = file.flush();
                Ok(ServiceLock { _files: vec![file] })
            }
            Err(TryLockError::WouldBlock) => Err(EngineError::denied(
                Refusal::KeyState,
                format!(
                    "another kms process (pid {}) holds this inventory's tokens: a running `kms serve`, or a key ceremony or backup import in progress",
                    read_pid(&mut file)
                ),
            )),
            Err(TryLockError::Error(e)) => Err(EngineError::Incomplete(format!(
                "{}: {e}",
                self.service_lock_path().display()
            ))),
        }
    }

    /// Refuse when `kms serve` runs on this inventory (it holds the user login on the tokens);
    /// otherwise hold the lock until the returned guard drops, so no service starts meanwhile.
    pub(crate) fn refuse_while_serving(&self, token: &str) -> Result<ServiceLock, EngineError> {
        let mut held = Vec::new();
        for path in self.all_lock_paths() {
            let mut file = self.open_lock_at(&path)?;
            match file.try_lock() {
                Ok(()) => held.push(file),
                Err(TryLockError::WouldBlock) => {
                    return Err(EngineError::denied(
                        Refusal::KeyState,
                        format!(
                            "`kms serve` (pid {}) is running and holds the user login on token '{token}' (or another ceremony or import runs); the security officer can log in only when no user is. Stop the service (SIGTERM lets in-flight requests finish), run this again, then start it",
                            read_pid(&mut file)
                        ),
                    ))
                }
                Err(TryLockError::Error(e)) => {
                    return Err(EngineError::Incomplete(format!("{}: {e}", path.display())))
                }
            }
        }
        Ok(ServiceLock { _files: held })
    }
}

fn read_pid(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() {
        "unknown".into()
    } else {
        s.to_owned()
    }
}
