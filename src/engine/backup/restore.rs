//! Rebuilding a token from the copies on another (`kms backup restore`).

use super::super::policy::require_role;
use super::super::{Caller, Engine, EngineError, Refusal};
use super::{holds_data, RestoreReport, BACKUP_ADMINS};
use crate::inventory::{KeyVersion, Outcome};

impl Engine {
    /// Rebuild token `to` from the copies on token `from`: every active version that has a copy
    /// on `from` is wrapped there under the `from -> to` pairing's KEK (made by `kms backup init
    /// --from FROM --to TO`), unwrapped on `to`, proven, and the inventory repointed to `to`.
    pub fn backup_restore(
        &self,
        caller: &Caller,
        from: &str,
        to: &str,
    ) -> Result<RestoreReport, EngineError> {
        self.audited(caller, "backup.restore", None, |note| {
            require_role(&self.inventory, caller, BACKUP_ADMINS, "restore keys")?;
            let src_desc = self.hsm.describe(from)?;
            let dst_desc = self.hsm.describe(to)?;
            let pair = self
                .inventory
                .backup_pair(&src_desc.serial, &dst_desc.serial)?
                .ok_or_else(|| {
                    EngineError::denied(
                        Refusal::NotSupported,
                        format!(
                            "no key ceremony pairs '{from}' (serial {}) with '{to}' (serial {}); run `kms backup init --from {from} --to {to}` first",
                            src_desc.serial, dst_desc.serial
                        ),
                    )
                })?;
            let mut report = RestoreReport::default();
            for key in self.inventory.keys(&Default::default())? {
                for v in key.versions.iter().filter(|v| holds_data(v.state)) {
                    let label = format!("{}@v{}", key.name, v.version);
                    if v.token_serial == dst_desc.serial {
                        continue;
                    }
                    let Some(copy) = v.copies.iter().find(|c| c.token_serial == src_desc.serial)
                    else {
                        report.failed.push((label, format!("no copy on '{from}'")));
                        continue;
                    };
                    // Wrap the copy on `from`, unwrap it on `to` under the same CKA_ID.
                    let as_version = KeyVersion {
                        object_id: copy.object_id.clone(),
                        ..v.clone()
                    };
                    match self.copy_version(&key, &as_version, v.public_key.as_deref(), &pair) {
                        Ok(_) => {
                            let entry = self.entry(
                                caller,
                                "backup.restore-key",
                                Some(&key.name),
                                Some(v.version),
                                Outcome::Ok,
                                Some(format!(
                                    "v{} restored from '{from}' (serial {}) to '{to}' (serial {}) cka_id={}, proven by drill; the inventory now locates it on '{to}' (was '{}' serial {})",
                                    v.version, src_desc.serial, dst_desc.serial, copy.object_id, v.token, v.token_serial
                                )),
                            );
                            self.inventory.relocate_version(
                                &key.id,
                                v.version,
                                to,
                                &dst_desc.label,
                                &dst_desc.serial,
                                &entry,
                            )?;
                            report.restored.push(label.clone());
                            report.proven.push(label);
                        }
                        Err(e) => report.failed.push((label, e.to_string())),
                    }
                }
            }
            note.detail = Some(format!(
                "restored {} versions from '{from}' to '{to}', {} failed",
                report.restored.len(),
                report.failed.len()
            ));
            Ok(report)
        })
    }
}
