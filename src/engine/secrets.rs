//! Secret data (`secret-data` keys, a door's Secret Data): a value its owner registered, kept on the
//! token as a sensitive object and given back, through the token, to a principal granted
//! `reveal` — audited, with the version, never the value.

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{Caller, Engine, EngineError, Refusal};
use crate::model::{KeyFamily, Operation, VersionState};

/// A revealed value and the version it came from.
pub struct Revealed {
    pub value: Zeroizing<Vec<u8>>,
    pub key_version: u32,
}

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revealed")
            .field("value", &"[redacted]")
            .field("key_version", &self.key_version)
            .finish()
    }
}

impl Engine {
    /// The current value of secret-data key `name`, for a caller granted `reveal` on it.
    pub fn reveal_secret(&self, caller: &Caller, name: &str) -> Result<Revealed, EngineError> {
        self.audited(caller, "key.reveal", Some(name), |note| {
            let key = self.inventory.key(name)?;
            if key.key_type.family() != KeyFamily::Secret {
                return Err(EngineError::denied(
                    Refusal::NotSupported,
                    format!(
                        "key '{name}' is {}: only secret-data values are ever read back; key material stays on the token",
                        key.key_type
                    ),
                ));
            }
            let now = OffsetDateTime::now_utc();
            // The current value; after a Revoke (no active version), the newest deactivated one,
            // which still opens what it protected.
            let version = key
                .current_version()
                .or_else(|| {
                    key.versions
                        .iter()
                        .filter(|v| v.state == VersionState::Deactivated)
                        .max_by_key(|v| v.version)
                })
                .map(|v| v.version);
            let v = self.authorize_use( caller, &key, Operation::Reveal, version, now, note)?;
            note.key_version = Some(v.version);
            let value = self.on_version(note, &key, v, |t, id| t.reveal_secret(id))?;
            note.detail = Some(format!("revealed the {}-byte value", value.len()));
            Ok(Revealed {
                value,
                key_version: v.version,
            })
        })
    }
}
