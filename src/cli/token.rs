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
        /// Count each token's objects: without --login the public ones only (public keys and
        /// a security officer's KEK), seen without logging in.
        #[arg(long)]
        objects: bool,
        /// With --objects: log in to every token and count all its objects, private and secret
        /// keys included. SoftHSM2 rewrites its token file at every login, and a kms killed
        /// during that rewrite empties the token: without this flag no token is logged in to.
        #[arg(long, requires = "objects")]
        login: bool,
    },
}

pub fn run(engine: &Engine, caller: &Caller, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::List {
            json,
            objects,
            login,
        } => {
            let tokens = engine.token_status(caller, objects, login)?;
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
                    errln!("token '{}': {}", t.name, t.error.as_deref().unwrap_or("-"));
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
                        match (t.objects, t.public_objects) {
                            (Some(n), _) => n.to_string(),
                            (None, Some(n)) => format!("{n} public"),
                            (None, None) => "-".into(),
                        },
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
            if objects && !login {
                outln!("public objects only, counted without logging in; private and secret keys need a login: `kms token list --objects --login`");
            }
            for t in tokens.iter().filter(|t| t.error.is_some()) {
                errln!("token '{}': {}", t.name, opt(&t.error));
            }
            verdict()
        }
    }
}
