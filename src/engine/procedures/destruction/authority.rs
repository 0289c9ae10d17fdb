//! What authorises a destruction, re-proved from evidence at the moment of destruction.

use super::super::super::{Engine, EngineError, Refusal};
use crate::clock::lifecycle_now;
use crate::inventory::{KeyRecord, KeyVersion};
use crate::model::VersionState;

/// What gives a destruction its authority; each is re-checked from evidence at the moment of
/// destruction (see ARCHITECTURE.md, "Destruction re-proves its authority").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authority {
    /// A rotation: the version is deactivated and its re-encryption window is over (both in
    /// its HSM-tagged row), and the key's current active version is newer and present on its
    /// token. A version already recorded destroyed only has its leftovers removed.
    Rotation,
    /// Closing a compromise: the version is recorded compromised and a compromise record
    /// names it.
    Compromise,
    /// A disposal whose two card signatures, signers and waiting period were re-checked just
    /// now (`execute_disposal`).
    Disposal,
    /// Rolling back a rotation that never switched: the version is still pending and the key
    /// has an older, finished version.
    RollBack,
    /// `kms key abandon` of an unfinished creation: the version is still pending.
    Abandon,
}

impl Authority {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Authority::Rotation => "rotation",
            Authority::Compromise => "compromise",
            Authority::Disposal => "disposal",
            Authority::RollBack => "rotation roll-back",
            Authority::Abandon => "abandoned creation",
        }
    }
}

impl Engine {
    /// Re-prove, from evidence, that `authority` allows destroying version `v` of `key` now.
    /// Disposal's evidence (signatures, signers, waiting period) is checked by
    /// `execute_disposal` before it calls here; the rest is checked here.
    pub(crate) fn check_destroy_authority(
        &self,
        key: &KeyRecord,
        v: &KeyVersion,
        authority: Authority,
    ) -> Result<(), EngineError> {
        let refuse = |code: Refusal, why: String| {
            Err(EngineError::denied(
                code,
                format!(
                    "v{} of '{}' is not destroyed ({}): {why}",
                    v.version,
                    key.name,
                    authority.as_str()
                ),
            ))
        };
        if authority != Authority::Abandon && super::super::super::internal_key(&key.name) {
            return refuse(
                Refusal::NotSupported,
                "it is kms's own key; no rotation, compromise, disposal or repair destroys it"
                    .into(),
            );
        }
        match authority {
            Authority::Disposal => Ok(()),
            Authority::Rotation => match v.state {
                VersionState::Destroyed => Ok(()),
                VersionState::Deactivated => {
                    let now = lifecycle_now();
                    match v.destroy_after {
                        Some(t) if t <= now => {}
                        Some(t) => {
                            return refuse(
                                Refusal::KeyState,
                                format!(
                                    "its re-encryption window runs until {}",
                                    crate::inventory::fmt_time(t)
                                ),
                            )
                        }
                        None => {
                            return refuse(
                                Refusal::KeyState,
                                "its row records no end of its re-encryption window".into(),
                            )
                        }
                    }
                    let Some(newer) = key.current_version().filter(|n| n.version > v.version)
                    else {
                        return refuse(
                            Refusal::KeyState,
                            "the key has no newer active version to replace it".into(),
                        );
                    };
                    if let Err(e) = self.newer_version_present(key, newer) {
                        return refuse(
                            Refusal::KeyState,
                            format!(
                                "the newer version v{} could not be shown on its token '{}' (serial {}): {e}",
                                newer.version, newer.token, newer.token_serial
                            ),
                        );
                    }
                    Ok(())
                }
                other => refuse(
                    Refusal::KeyState,
                    format!("it is {other}; a rotation destroys only a deactivated version"),
                ),
            },
            Authority::Compromise => {
                if !matches!(
                    v.state,
                    VersionState::Compromised | VersionState::DestroyedCompromised
                ) {
                    return refuse(
                        Refusal::KeyState,
                        format!("it is {}, not compromised", v.state),
                    );
                }
                if !self
                    .inventory
                    .compromises(&key.id)?
                    .iter()
                    .any(|c| c.version == v.version)
                {
                    return refuse(Refusal::KeyState, "no compromise record names it".into());
                }
                Ok(())
            }
            Authority::Abandon => {
                if v.state != VersionState::Pending {
                    return refuse(
                        Refusal::KeyState,
                        format!(
                            "it is {}; only an unfinished creation is abandoned",
                            v.state
                        ),
                    );
                }
                Ok(())
            }
            Authority::RollBack => {
                if v.state != VersionState::Pending {
                    return refuse(
                        Refusal::KeyState,
                        format!("it is {}; only a pending version is rolled back", v.state),
                    );
                }
                if !key
                    .versions
                    .iter()
                    .any(|o| o.version < v.version && o.state != VersionState::Pending)
                {
                    return refuse(
                        Refusal::KeyState,
                        "the key has no older finished version, so this is no rotation (an unfinished creation is removed with `kms key abandon`)".into(),
                    );
                }
                Ok(())
            }
        }
    }

    /// The newer version's object is on its token and is that version's object.
    fn newer_version_present(
        &self,
        key: &KeyRecord,
        newer: &KeyVersion,
    ) -> Result<(), EngineError> {
        if newer.token == super::super::super::CARD_TOKEN {
            let card = super::super::super::cards::card_serial(&newer.token_serial)?;
            let slot = crate::smartcard::parse_slot(&newer.object_id.to_hex())?;
            let pk = crate::smartcard::public_key(Some(card), slot)?;
            if newer.public_key.as_deref() != Some(pk.as_slice()) {
                return Err(EngineError::Incomplete(
                    "the card slot holds another key".into(),
                ));
            }
            return Ok(());
        }
        let token = self.token_for(newer)?;
        super::super::super::failover::check_object(&token, key, newer, &newer.object_id)?;
        Ok(())
    }
}
