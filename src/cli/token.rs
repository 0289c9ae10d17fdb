//! `kms token ...`

use clap::Subcommand;

use super::output::{print_json, print_table};
use super::CliError;
use crate::engine::{Caller, Engine};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Configured tokens: label, serial, model, module; with --objects also login state and
    /// object count. Exit 1 when a configured token is missing or cannot be read.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Log in to every token and count its objects. Without it no token is logged in to
        /// (SoftHSM2 rewrites its token file at every login).
        #[arg(long)]
        objects: bool,
    },
}

/// Whether the command only reads token information without a login (so the exit checkpoint,
/// which logs in to sign, is left to the next command or the service).
pub fn reads_without_login(cmd: &TokenCmd) -> bool {
    matches!(cmd, TokenCmd::List { objects: false, .. })
}

pub fn run(engine: &Engine, caller: &Caller, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::List { json, objects } => {
            let tokens = engine.token_status(caller, objects)?;
            let failed = tokens.iter().filter(|t| t.error.is_some()).count();
            let verdict = || {
                if failed == 0 {
                    Ok(())
                } else {
                    Err(CliError::Negative(format!(
                        "{failed} configured token(s) could not be read; see above"
                    )))
                }
            };
            if json {
                print_json(&tokens)?;
                for t in tokens.iter().filter(|t| t.error.is_some()) {
                    eprintln!("token '{}': {}", t.name, t.error.as_deref().unwrap_or("-"));
                }
                return verdict();
            }
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        opt(&t.site),
                        opt(&t.label),
                        opt(&t.serial),
                        opt(&t.model),
                        if t.logged_in {
                            "logged-in".into()
                        } else if objects {
                            "no".into()
                        } else {
                            "-".into()
                        },
                        t.objects
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "-".into()),
                        t.module.clone(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME", "SITE", "LABEL", "SERIAL", "MODEL", "LOGIN", "OBJECTS", "MODULE",
                ],
                &rows,
            );
            for t in tokens.iter().filter(|t| t.error.is_some()) {
                eprintln!("token '{}': {}", t.name, opt(&t.error));
            }
            verdict()
        }
    }
}
