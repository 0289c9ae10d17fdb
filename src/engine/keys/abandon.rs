//! Abandoning a key whose creation never finished: its token objects destroyed, its rows and
//! the grants that named it removed.

use crate::engine::policy::require_role;
use crate::engine::procedures::{Authority, Place};
use crate::engine::{Caller, Engine, EngineError, Refusal};
use crate::model::{KeyOrigin, Role};

impl Engine {
    /// Remove a key whose creation never finished (every version still `pending`, e.g. after a
    /// crash): destroy whatever the token holds under its CKA_IDs, then delete its rows.
    pub fn abandon_key(&self, caller: &Caller, name: &str) -> Result<usize, EngineError> {
        self.audited(caller, "key.abandon", Some(name), |note| {
            require_role(&self.inventory, caller, &[Role::SecurityOfficer], "abandon keys")?;
            let key = self.inventory.key(name)?;
            if key
                .versions
                .iter()
                .any(|v| v.state != crate::model::VersionState::Pending)
            {
                return Err(EngineError::denied(
                    Refusal::KeyState,
                    format!("key '{name}' has a finished version; only an unfinished creation can be abandoned"),
                ));
            }
            if key.origin == KeyOrigin::Adopted {
                // An unfinished adoption: the object was there before kms and stays; only the
                // rows go (its label may already be kms's).
                let grants = self.inventory.delete_pending_key(&key.id)?;
                note.detail = Some(format!(
                    "abandoned an unfinished adoption: the adopted object was left on its token; removed {grants} grant(s) that named it"
                ));
                return Ok(0);
            }
            // Every copy on every token: the version's own token, the copies the inventory
            // records, and every other configured token (a creation killed after its backup copy
            // was made but before activation recorded it leaves an unrecorded copy). The rows go
            // only once a CKA_ID search finds nothing left anywhere, so a failure can be re-run.
            // Each object is destroyed through the one choke point (`destroy_at`): only what
            // is labelled as this pending version, of its type, under its own CKA_ID, and only
            // once every place has been checked.
            let pairs = self.inventory.backup_pairs()?;
            let mut destroyed = 0;
            let mut places: Vec<String> = Vec::new();
            for v in &key.versions {
                self.check_destroy_authority(&key, v, Authority::Abandon)?;
                let own = self.token_for(v)?;
                let mut at = vec![Place {
                    token: v.token.clone(),
                    serial: own.serial().to_owned(),
                    object_id: v.object_id.clone(),
                    copy: false,
                }];
                // Tokens that may hold a copy: the recorded ones, and the backup token when a
                // pairing from this version's token exists (the copy precedes its record).
                let mut required: Vec<&str> = v.copies.iter().map(|c| c.token.as_str()).collect();
                if let Some(b) = &self.config.backup {
                    if pairs.iter().any(|p| p.from_serial == v.token_serial) {
                        required.push(b.token.as_str());
                    }
                }
                for c in &v.copies {
                    at.push(Place {
                        token: c.token.clone(),
                        serial: c.token_serial.clone(),
                        object_id: c.object_id.clone(),
                        copy: true,
                    });
                }
                let names: Vec<String> = self.hsm.names().map(str::to_owned).collect();
                for name in names
                    .iter()
                    .filter(|n| **n != v.token && !v.copies.iter().any(|c| &c.token == *n))
                {
                    let token = match self.hsm.token(name) {
                        Ok(t) => t,
                        Err(e) if required.contains(&name.as_str()) => {
                            return Err(EngineError::Incomplete(format!(
                                "key '{name_k}' v{ver} may have a copy on token '{name}', which cannot be opened ({e}); nothing was removed from the inventory: make the token available and run `kms key abandon {name_k}` again",
                                name_k = key.name,
                                ver = v.version
                            )));
                        }
                        Err(e) => {
                            tracing::warn!(token = %name, error = %e, "abandon: token not reachable; it holds no recorded copy");
                            places.push(format!("'{name}' not reachable (no recorded copy)"));
                            continue;
                        }
                    };
                    at.push(Place {
                        token: name.clone(),
                        serial: token.serial().to_owned(),
                        object_id: v.object_id.clone(),
                        copy: true,
                    });
                }
                let report = self
                    .destroy_at(caller, &key, v, v.state, Authority::Abandon, &at)
                    .map_err(|e| match e {
                        EngineError::Incomplete(m) => EngineError::Incomplete(format!(
                            "{m}; key '{}' stays in the inventory, run `kms key abandon {}` again",
                            key.name, key.name
                        )),
                        other => other,
                    })?;
                for d in &report.tokens {
                    destroyed += d.objects_destroyed;
                    if d.token == v.token
                        || d.objects_destroyed > 0
                        || required.contains(&d.token.as_str())
                    {
                        places.push(format!("'{}' v{}: {}", d.token, v.version, d.objects_destroyed));
                    }
                }
            }
            let grants = self.inventory.delete_pending_key(&key.id)?;
            note.detail = Some(format!(
                "abandoned unfinished key; destroyed {destroyed} token object(s) ({}), none left under its CKA_IDs on any reachable token; removed {grants} grant(s) that named it",
                places.join(", ")
            ));
            Ok(destroyed)
        })
    }
}
