//! Revoking a grant: one command under two nouns, `kms grant revoke` and `kms access revoke`.

use super::CliError;
use crate::engine::{Caller, Engine};

/// `kms grant revoke` and `kms access revoke`: at once, with the global --reason.
pub fn revoke_grant(engine: &Engine, caller: &Caller, id: &str) -> Result<(), CliError> {
    let reason = caller
        .reason
        .clone()
        .ok_or_else(|| CliError::Usage("revoking a grant needs --reason TEXT".into()))?;
    let g = engine.revoke_grant(caller, id, &reason)?;
    outln!(
        "grant {} of '{}' on '{}' revoked",
        g.id,
        g.principal,
        g.key_name
    );
    Ok(())
}
