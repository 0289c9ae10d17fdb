//! Errors of the inventory layer; the SQLite cause is kept.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot open the inventory {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("inventory {path} has mode {mode:o}; it must be readable by its owner only (chmod 600 {path})")]
    Mode { path: PathBuf, mode: u32 },
    #[error("{path} is not a usable KMS inventory ({source}); restore it from a backup or point [inventory] path elsewhere")]
    Corrupt {
        path: PathBuf,
        source: super::sql::Error,
    },
    #[error("{path} is a SQLite database of another application, not a KMS inventory; point [inventory] path at a new file")]
    Foreign { path: PathBuf },
    #[error("inventory {path} has schema version {found}, newer than this kms understands ({supported}); upgrade kms")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("a key named '{0}' already exists; choose another name (kms key list shows them)")]
    DuplicateName(String),
    #[error("no key named '{0}' in the inventory (kms key list shows the keys)")]
    NoSuchKey(String),
    #[error("no principal named '{0}' (kms principal list shows them)")]
    NoSuchPrincipal(String),
    #[error("no access request {0} (kms access list shows them)")]
    NoSuchRequest(String),
    #[error("no grant {0} (kms grant list --all shows them)")]
    NoSuchGrant(String),
    #[error("{0}")]
    Conflict(String),
    #[error("inventory row is unreadable: {0}")]
    BadRow(String),
    #[error("audit row not written: {0}")]
    AuditWriter(String),
    /// The inventory database cannot be reached now; kms connects again by itself.
    #[error("the inventory database cannot be reached ({0}); kms connects again by itself: try again shortly")]
    Unreachable(String),
    #[error("inventory integrity check failed: {0}; the inventory file was changed outside kms. Run `kms inventory verify` to list every such row, find out who changed the file, and restore it from a backup (kms backup import) or undo the change")]
    Tampered(super::integrity::BadRow),
    #[error("{}inventory rows cannot be checked: {why}", if *config { "configuration mismatch: " } else { "" })]
    IntegrityUnavailable { config: bool, why: String },
    #[error("inventory rows cannot be tagged: {0}")]
    Integrity(String),
    #[error("inventory database error: {0}")]
    Db(#[from] super::sql::Error),
}

impl InventoryError {
    /// Whether the database could not be reached: the request may succeed once it is back.
    pub fn is_unreachable(&self) -> bool {
        match self {
            InventoryError::Unreachable(_) => true,
            InventoryError::Db(e) => e.is_unreachable(),
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for InventoryError {
    fn from(e: rusqlite::Error) -> Self {
        InventoryError::Db(e.into())
    }
}
