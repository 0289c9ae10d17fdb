//! `[inventory]`: the SQLite file, or PostgreSQL and its password source.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Ctx, PinSource};

/// The inventory on PostgreSQL (`[inventory] postgres`, `password`).
#[derive(Debug, Clone)]
pub struct PostgresInventory {
    /// `postgres://user@host:port/db`, without a password.
    pub url: String,
    pub password: Option<PinSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    #[serde(default = "default_inventory_path")]
    path: PathBuf,
    /// `postgres://user@host:port/db`: the inventory on PostgreSQL (several nodes).
    postgres: Option<String>,
    /// Where the PostgreSQL password comes from (`env:VAR`, `file:PATH`, `prompt`).
    password: Option<String>,
}

impl Default for RawInventory {
    fn default() -> Self {
        RawInventory {
            path: default_inventory_path(),
            postgres: None,
            password: None,
        }
    }
}

fn default_inventory_path() -> PathBuf {
    PathBuf::from("kms.db")
}

impl RawInventory {
    /// The SQLite file's path (resolved; with PostgreSQL, where local lock files go) and the
    /// PostgreSQL inventory, if `postgres` is set.
    pub(super) fn validate(
        self,
        ctx: &Ctx,
    ) -> Result<(PathBuf, Option<PostgresInventory>), ConfigError> {
        let path = ctx.resolve(&self.path);
        let postgres = match (self.postgres, self.password) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ctx.invalid(
                    "[inventory] password is set but postgres is not; the SQLite inventory (path) has no password".into(),
                ))
            }
            (Some(url), password) => {
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return Err(ctx.invalid(format!(
                        "[inventory] postgres must be a URL like postgres://kms@127.0.0.1:5432/kms, not '{}'",
                        url.split('@').next_back().unwrap_or("")
                    )));
                }
                if url
                    .split("://")
                    .nth(1)
                    .and_then(|rest| rest.split('@').next())
                    .is_some_and(|userinfo| userinfo.contains(':') && url.contains('@'))
                {
                    return Err(ctx.invalid(
                        "[inventory] postgres must not carry the password in the URL; set `password = \"file:PATH\"` (or env:VAR, prompt)".into(),
                    ));
                }
                let password = match password {
                    None => None,
                    Some(p) => Some(ctx.pin_source(&p).ok_or_else(|| {
                        ctx.invalid(
                            "[inventory] password must be `env:VAR`, `file:PATH` or `prompt`; a password is never written in the config itself".into(),
                        )
                    })?),
                };
                Some(PostgresInventory { url, password })
            }
        };
        Ok((path, postgres))
    }
}
