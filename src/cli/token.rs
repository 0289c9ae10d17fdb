//! `kms token ...`

use clap::Subcommand;

use super::output::{print_json, print_table};
use super::CliError;
use crate::engine::{Caller, Engine};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Configured tokens: label, serial, model, module, login state, object count.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(engine: &Engine, caller: &Caller, cmd: TokenCmd) -> Result<(), CliError> {
    match cmd {
        TokenCmd::List { json } => {
            let tokens = engine.token_status(caller)?;
            if json {
                return print_json(&tokens);
            }
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        opt(&t.label),
                        opt(&t.serial),
                        opt(&t.model),
                        if t.logged_in {
                            "logged-in".into()
                        } else {
                            "no".into()
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
                    "NAME", "LABEL", "SERIAL", "MODEL", "LOGIN", "OBJECTS", "MODULE",
                ],
                &rows,
            );
            for t in tokens.iter().filter(|t| t.error.is_some()) {
                eprintln!("token '{}': {}", t.name, opt(&t.error));
            }
            Ok(())
        }
    }
}
