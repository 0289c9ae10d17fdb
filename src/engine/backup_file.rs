//! The encrypted offline backup file (`kms backup export` / `import`).
//!
//! Layout: the line `KMS-BACKUP/1`, one line of JSON header (public facts: when, by whom, which
//! HSM key seals the file and where it lives, the GCM IV), then the sealed body. The body is a
//! JSON payload — the inventory snapshot (SQLite online backup) and every active key version
//! wrapped on the token under the backup pairing's key-encryption key (CKM_AES_KEY_WRAP_PAD) —
//! encrypted with AES-256-GCM *on the HSM* under the key `kms-backup-seal`, with the magic line
//! and the header as additional authenticated data. So: no plaintext key material in the file
//! (keys are wrapped under a KEK that never leaves an HSM), and any change to any byte makes the
//! import fail. The seal key is itself backed up like every key, so the backup token alone can
//! open the file after the primary is lost.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::policy::require_role;
use super::{Caller, CreateKey, Engine, EngineError, Refusal};
use crate::hsm::WrappedKey;
use crate::inventory::{Inventory, KeyRecord, Outcome};
use crate::model::{KeyType, ObjectId, Role};

/// The key that seals offline backup files.
pub const SEAL_KEY: &str = "kms-backup-seal";
const MAGIC: &[u8] = b"KMS-BACKUP/1\n";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    #[serde(with = "time::serde::rfc3339")]
    written_at: OffsetDateTime,
    written_by: String,
    /// CKA_ID of the seal key and the serials of the tokens holding it (original and copies).
    seal_object_id: String,
    seal_tokens: Vec<String>,
    seal_version: u32,
    iv: String,
    keys: usize,
    kek_id: String,
    /// The audit trail's head in the snapshot: shown at import, so an old file is recognised.
    audit_seq: i64,
    audit_head: String,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    inventory: String,
    keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize)]
struct FileKey {
    key: String,
    version: u32,
    key_type: KeyType,
    object_id: String,
    /// Base64 of the AES_KEY_WRAP_PAD blob: ciphertext under the KEK.
    wrapped: String,
    public: Vec<(String, String)>,
}

/// What `kms backup export` wrote.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub keys: usize,
    pub inventory_bytes: usize,
    pub sealed_with: String,
    pub sealed_version: u32,
}

/// What `kms backup import` did.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    #[serde(with = "time::serde::rfc3339")]
    pub written_at: OffsetDateTime,
    pub written_by: String,
    /// Audit trail head (sequence number, hash) of the file's inventory snapshot.
    pub audit_seq: i64,
    pub audit_head: String,
    pub keys: usize,
    pub inventory_restored: bool,
    pub restored: Vec<String>,
    pub present: Vec<String>,
    pub failed: Vec<(String, String)>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Engine {
    /// Build the sealed offline backup file.
    pub fn backup_export(&self, caller: &Caller) -> Result<(Vec<u8>, ExportReport), EngineError> {
        self.audited(caller, "backup.export", None, |note| {
            require_role(&self.inventory, caller, &[Role::SecurityOfficer], "export backups")?;
            let pair = self.backup_target()?.ok_or_else(|| {
                EngineError::denied(
                    Refusal::NotSupported,
                    "no backup pairing for the key token: run `kms backup init` first (the file's keys are wrapped under its key-encryption key)".to_owned(),
                )
            })?;
            let seal = self.seal_key()?;
            let seal_v = seal.current_version().cloned().ok_or_else(|| {
                EngineError::Incomplete(format!("the seal key '{SEAL_KEY}' has no active version"))
            })?;
            // Keys first, then the snapshot: the snapshot then also lists the seal key.
            let mut keys = Vec::new();
            for key in self.inventory.keys(&Default::default())? {
                for v in key.versions.iter().filter(|v| super::backup::holds_data(v.state)) {
                    if v.token_serial != pair.from_serial {
                        continue;
                    }
                    let token = self.token_for(v)?;
                    let w = token.wrap_for_copy(&pair.kek_id, &v.object_id, key.key_type)?;
                    keys.push(FileKey {
                        key: key.name.clone(),
                        version: v.version,
                        key_type: key.key_type,
                        object_id: v.object_id.to_hex(),
                        wrapped: b64().encode(w.blob()),
                        public: w
                            .public_parts()
                            .into_iter()
                            .map(|(n, v)| (n, b64().encode(v)))
                            .collect(),
                    });
                }
            }
            let tmp = self.temp_path("export");
            let snapshot = (|| {
                create_private(&tmp)?;
                self.inventory.snapshot_to(&tmp)?;
                std::fs::read(&tmp).map_err(|e| io_err(&tmp, e))
            })();
            let _ = std::fs::remove_file(&tmp);
            let snapshot = snapshot?;
            let (audit_seq, audit_head) = self.inventory.audit_head()?.unwrap_or_default();
            let payload = serde_json::to_vec(&Payload {
                inventory: b64().encode(&snapshot),
                keys,
            })
            .map_err(|e| EngineError::Incomplete(format!("encoding the backup: {e}")))?;
            let count = serde_json::from_slice::<serde_json::Value>(&payload)
                .ok()
                .and_then(|v| v["keys"].as_array().map(Vec::len))
                .unwrap_or(0);
            let iv: [u8; 12] = rand::random();
            let mut seal_tokens = vec![seal_v.token_serial.clone()];
            seal_tokens.extend(seal_v.copies.iter().map(|c| c.token_serial.clone()));
            let header = Header {
                format: 1,
                written_at: OffsetDateTime::now_utc(),
                written_by: caller.actor.clone(),
                seal_object_id: seal_v.object_id.to_hex(),
                seal_tokens,
                seal_version: seal_v.version,
                iv: hex::encode(iv),
                keys: count,
                kek_id: pair.kek_id.to_hex(),
                audit_seq,
                audit_head,
            };
            let mut head = MAGIC.to_vec();
            head.extend(
                serde_json::to_vec(&header)
                    .map_err(|e| EngineError::Incomplete(format!("encoding the header: {e}")))?,
            );
            head.push(b'\n');
            let sealed = self.on_version(note, &seal, &seal_v, |t, id| t.aes_gcm_encrypt(id, &iv, &head, &payload))?;
            let mut file = head;
            file.extend(sealed);
            note.detail = Some(format!(
                "exported {count} key version(s) wrapped under KEK {} and an inventory snapshot of {} bytes, sealed with '{SEAL_KEY}' v{}",
                pair.kek_id,
                snapshot.len(),
                seal_v.version
            ));
            Ok((
                file,
                ExportReport {
                    keys: count,
                    inventory_bytes: snapshot.len(),
                    sealed_with: SEAL_KEY.to_owned(),
                    sealed_version: seal_v.version,
                },
            ))
        })
    }

    /// Check and apply an offline backup file: authenticate it on whichever configured token holds
    /// the seal key; restore the inventory if this one holds no keys; put back every key version
    /// missing from the token the inventory locates it on (unwrapped under the KEK there).
    pub fn backup_import(
        &self,
        caller: &Caller,
        file: &[u8],
        to: Option<&str>,
        replace_inventory: bool,
    ) -> Result<ImportReport, EngineError> {
        self.audited(caller, "backup.import", None, |note| {
            require_role(&self.inventory, caller, &[Role::SecurityOfficer], "import backups")?;
            let _no_service = self.refuse_while_serving(&self.config.key_token)?;
            let altered = |why: &str| {
                EngineError::InvalidInput(format!(
                    "this is not an intact kms backup file ({why}); it was altered, truncated or is another file. Nothing was changed"
                ))
            };
            let rest = file.strip_prefix(MAGIC).ok_or_else(|| altered("no KMS-BACKUP/1 line"))?;
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| altered("no header"))?;
            let header: Header = serde_json::from_slice(&rest[..nl])
                .map_err(|_| altered("unreadable header"))?;
            let head_len = MAGIC.len() + nl + 1;
            let (head, sealed) = file.split_at(head_len);
            let iv: [u8; 12] = hex::decode(&header.iv)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| altered("bad IV"))?;
            let seal_id = ObjectId(
                hex::decode(&header.seal_object_id).map_err(|_| altered("bad seal key id"))?,
            );
            // The seal key the header names must be kms's own: the inventory's, or (in a fresh
            // inventory) an object labelled as it on the token.
            if let Ok(seal) = self.inventory.key(SEAL_KEY) {
                if !seal.versions.iter().any(|v| v.object_id == seal_id) {
                    return Err(altered("the seal key named in the header is not this inventory's"));
                }
            }
            // Open the seal on any configured token holding the seal key.
            let mut opened = None;
            let mut tried = Vec::new();
            let names: Vec<String> = self.hsm.names().map(str::to_owned).collect();
            for name in names {
                // Which token is which is read without a login: only a token the header names
                // is logged in to.
                let named = self
                    .hsm
                    .describe(&name)
                    .is_ok_and(|d| header.seal_tokens.contains(&d.serial));
                if !named {
                    continue;
                }
                let Ok(t) = self.hsm.token(&name) else { continue };
                if !header.seal_tokens.iter().any(|s| s == t.serial()) {
                    continue;
                }
                let is_seal = t.list_objects().is_ok_and(|objects| {
                    objects.iter().any(|o| {
                        o.id == seal_id && o.label.starts_with(&format!("kms:{SEAL_KEY}:v"))
                    })
                });
                if !is_seal {
                    tried.push(format!("{name} (no seal key)"));
                    continue;
                }
                tried.push(name.clone());
                match t.aes_gcm_decrypt(&seal_id, &iv, head, sealed) {
                    Ok(p) => {
                        opened = Some(p);
                        break;
                    }
                    Err(crate::hsm::HsmError::DecryptionFailed { .. }) => {
                        return Err(altered("authentication failed"))
                    }
                    Err(e) => {
                        tried.push(format!("{name}: {e}"));
                        continue;
                    }
                }
            }
            let payload = opened.ok_or_else(|| {
                EngineError::denied(
                    Refusal::NotSupported,
                    format!(
                        "no configured token holds the seal key of this file (it lives on token serial(s) {}; tried: {}). Configure one of them",
                        header.seal_tokens.join(", "),
                        if tried.is_empty() { "none".to_owned() } else { tried.join(", ") }
                    ),
                )
            })?;
            let payload: Payload =
                serde_json::from_slice(&payload).map_err(|_| altered("unreadable payload"))?;
            let mut report = ImportReport {
                written_at: header.written_at,
                written_by: header.written_by.clone(),
                audit_seq: header.audit_seq,
                audit_head: header.audit_head.clone(),
                keys: payload.keys.len(),
                inventory_restored: false,
                restored: Vec::new(),
                present: Vec::new(),
                failed: Vec::new(),
            };
            // A fresh inventory holds no keys but the audit key its first command made.
            let own = self.inventory.keys(&Default::default())?;
            let fresh = own
                .iter()
                .all(|k| k.name == super::AUDIT_KEY || k.name == super::INTEGRITY_KEY);
            if replace_inventory && !fresh {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!(
                        "--replace-inventory refused: this inventory holds {} key(s); an inventory is replaced only on a fresh installation. Nothing was changed",
                        own.len()
                    ),
                ));
            }
            if fresh && !replace_inventory && !payload.keys.is_empty() {
                return Err(EngineError::InvalidInput(format!(
                    "this inventory holds none of the file's keys; to rebuild it from the file (written {} by {}, audit trail up to record {}), run the import again with --replace-inventory. Nothing was changed",
                    header.written_at, header.written_by, header.audit_seq
                )));
            }
            if fresh && replace_inventory {
                let bytes = b64()
                    .decode(&payload.inventory)
                    .map_err(|_| altered("bad inventory snapshot"))?;
                let tmp = self.temp_path("import");
                let restored = (|| {
                    create_private(&tmp)?;
                    std::fs::write(&tmp, &bytes).map_err(|e| io_err(&tmp, e))?;
                    // Opening it checks it is a kms inventory (and migrates an older one).
                    drop(Inventory::open(&tmp)?);
                    self.inventory.restore_from(&tmp)?;
                    // The imported rows are tagged by the file's integrity key: check with it.
                    self.inventory.clear_integrity();
                    self.setup_integrity(false)?;
                    // The restored inventory is older than anything the tokens may have
                    // anchored: the officer's restore starts the anchor afresh from it.
                    self.write_anchor(Some("backup import --replace-inventory"))?;
                    Ok::<(), EngineError>(())
                })();
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
                }
                restored?;
                report.inventory_restored = true;
                // The fresh inventory's own audit key is replaced by the restored one: its
                // objects would be orphans.
                for k in &own {
                    for v in &k.versions {
                        if let Ok(t) = self.token_for(v) {
                            let _ = t.destroy(&v.object_id);
                        }
                    }
                }
            }
            let kek = ObjectId(hex::decode(&header.kek_id).map_err(|_| altered("bad KEK id"))?);
            for fk in &payload.keys {
                let label = format!("{}@v{}", fk.key, fk.version);
                match self.import_one(caller, fk, &kek, to) {
                    Ok(true) => report.restored.push(label),
                    Ok(false) => report.present.push(label),
                    Err(e) => report.failed.push((label, e.to_string())),
                }
            }
            note.detail = Some(format!(
                "backup file written {} by {}: {} key versions; inventory {}; {} restored, {} present, {} failed",
                header.written_at,
                header.written_by,
                report.keys,
                if report.inventory_restored { "restored" } else { "kept (it holds keys)" },
                report.restored.len(),
                report.present.len(),
                report.failed.len()
            ));
            Ok(report)
        })
    }

    fn import_one(
        &self,
        caller: &Caller,
        fk: &FileKey,
        kek: &ObjectId,
        to: Option<&str>,
    ) -> Result<bool, EngineError> {
        let key = self.inventory.key(&fk.key)?;
        let v = key.version(fk.version).ok_or_else(|| {
            EngineError::InvalidInput(format!(
                "the inventory has no version {} of '{}'",
                fk.version, fk.key
            ))
        })?;
        if !super::backup::holds_data(v.state) {
            return Err(EngineError::denied(
                Refusal::KeyState,
                format!(
                    "v{} is {} in the inventory; only versions that still hold data are put back",
                    v.version, v.state
                ),
            ));
        }
        if fk.object_id != v.object_id.to_hex() {
            return Err(EngineError::InvalidInput(format!(
                "the file holds CKA_ID {} for this version, the inventory {}; not restored",
                fk.object_id, v.object_id
            )));
        }
        let token = match to {
            Some(name) => self.hsm.token(name)?,
            None => self.token_for(v)?,
        };
        if token.serial() != v.token_serial {
            return Err(EngineError::Misconfigured(format!(
                "the inventory locates this version on token serial {}, not on '{}' (serial {}); restore onto a fresh token with `kms backup restore`",
                v.token_serial,
                token.name(),
                token.serial()
            )));
        }
        if token.exists(&v.object_id)? {
            return Ok(false);
        }
        let blob = b64()
            .decode(&fk.wrapped)
            .map_err(|_| EngineError::InvalidInput("bad wrapped key".into()))?;
        let mut public = Vec::new();
        for (n, val) in &fk.public {
            public.push((
                n.clone(),
                b64()
                    .decode(val)
                    .map_err(|_| EngineError::InvalidInput("bad public key".into()))?,
            ));
        }
        let wrapped = WrappedKey::from_parts(blob, &public).map_err(EngineError::InvalidInput)?;
        let label = crate::model::object_label(&key.name, v.version);
        token.unwrap_copy(
            kek,
            &v.object_id,
            key.key_type,
            &label,
            &key.usage,
            &wrapped,
        )?;
        let entry = self.entry(
            caller,
            "backup.import-key",
            Some(&key.name),
            Some(v.version),
            Outcome::Ok,
            Some(format!(
                "v{} put back on token '{}' (serial {}) cka_id={} from an offline backup file",
                v.version,
                token.name(),
                token.serial(),
                v.object_id
            )),
        );
        self.inventory.append_audit(&entry)?;
        Ok(true)
    }

    /// The seal key, created (and backed up) on first use.
    fn seal_key(&self) -> Result<KeyRecord, EngineError> {
        match self.inventory.key(SEAL_KEY) {
            Ok(k) => Ok(k),
            Err(crate::inventory::InventoryError::NoSuchKey(_)) => {
                let req = CreateKey::internal(
                    SEAL_KEY,
                    KeyType::Aes256,
                    "encrypt,decrypt",
                    "seals offline backup files (kms backup export)",
                    "keep while any offline backup file sealed with it must stay readable",
                )?;
                let mut system = self.system_caller();
                system.reason = Some("offline backup seal key, made on first export".into());
                self.create_key(&system, req)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn temp_path(&self, what: &str) -> PathBuf {
        let mut p = self.config.inventory_path.clone().into_os_string();
        p.push(format!(".{what}-{}.tmp", uuid::Uuid::new_v4()));
        PathBuf::from(p)
    }
}

fn io_err(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Incomplete(format!("{}: {e}", path.display()))
}

fn create_private(path: &Path) -> Result<(), EngineError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.flush())
        .map_err(|e| io_err(path, e))
}
