//! `kms inventory verify`: check the integrity tag of every row that grants power.

use clap::Subcommand;

use super::output::print_json;
use super::CliError;
use crate::engine::{Caller, Engine};

#[derive(Debug, Subcommand)]
pub enum InventoryCmd {
    /// Check every principal, grant, key version and backup pairing against its HSM-made
    /// integrity tag; name each row that fails (exit 1).
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Copy this SQLite inventory into a new, empty PostgreSQL database (several nodes, two
    /// sites); then point `[inventory] postgres` (and `password`) at it on every node.
    Migrate {
        /// postgres://USER@HOST:PORT/DB (loopback or a Unix socket; no password in the URL).
        #[arg(long)]
        to: String,
        /// Where the PostgreSQL password comes from: env:VAR, file:PATH or prompt.
        #[arg(long)]
        password: Option<String>,
    },
    /// Testing builds only: re-seal every row as it reads now (tests that simulate time
    /// passing by editing rows).
    #[cfg(feature = "testing")]
    #[command(hide = true)]
    RetagForTests,
}

pub fn run(engine: &Engine, caller: &Caller, cmd: InventoryCmd) -> Result<(), CliError> {
    match cmd {
        InventoryCmd::Verify { json } => {
            let v = engine.inventory_verify(caller)?;
            if json {
                print_json(&v)?;
            } else {
                outln!("{} inventory row(s) checked", v.rows_checked);
                for b in &v.bad {
                    outln!("  TAMPERED {b}");
                }
                if let Some(a) = &v.anchor {
                    match (&a.problem, a.anchored_last) {
                        (Some(p), _) => outln!("  ROLLED BACK {p}"),
                        (None, Some(l)) => outln!(
                            "the change log ({} changes, last #{}) holds the {} changes the token anchored (up to #{l})",
                            a.changes,
                            a.last,
                            a.anchored_changes.unwrap_or(0)
                        ),
                        (None, None) => outln!("no anchor on the token yet"),
                    }
                }
                if v.bad.is_empty() {
                    outln!("every row carries a valid integrity tag");
                }
            }
            let rolled_back = v.anchor.as_ref().and_then(|a| a.problem.clone());
            if let Some(p) = rolled_back {
                Err(CliError::Negative(format!(
                    "the inventory does not match the token's anchor: {p}; put the newest inventory back (or restore it with kms backup import)"
                )))
            } else if v.bad.is_empty() {
                Ok(())
            } else {
                Err(CliError::Negative(format!(
                    "{} inventory row(s) fail their integrity check: the file was changed outside kms; restore it from a backup (kms backup import) or undo the change",
                    v.bad.len()
                )))
            }
        }
        InventoryCmd::Migrate { to, password } => {
            let source = match password.as_deref() {
                None => None,
                Some(p) => Some(crate::config::PinSource::parse(p).ok_or_else(|| {
                    CliError::Usage(
                        "--password must be env:VAR, file:PATH or prompt (never the password itself)".into(),
                    )
                })?),
            };
            let m = engine.inventory_migrate(caller, &to, source.as_ref())?;
            outln!(
                "copied {} rows of {} tables; now set on every node:\n  [inventory]\n  postgres = \"{}\"{}",
                m.rows,
                m.tables,
                to,
                password
                    .map(|p| format!("\n  password = \"{p}\""))
                    .unwrap_or_default()
            );
            Ok(())
        }
        #[cfg(feature = "testing")]
        InventoryCmd::RetagForTests => {
            let n = engine.retag_for_tests()?;
            outln!("{n} row(s) re-tagged");
            Ok(())
        }
    }
}
