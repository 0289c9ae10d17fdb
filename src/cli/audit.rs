//! `kms audit ...`

use clap::Subcommand;

use super::output::{print_json, print_table};
use super::CliError;
use crate::engine::{Caller, Engine};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// The newest audit rows, oldest first.
    List {
        /// Only rows about this key.
        #[arg(long)]
        key: Option<String>,
        /// How many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(engine: &Engine, caller: &Caller, cmd: AuditCmd) -> Result<(), CliError> {
    match cmd {
        AuditCmd::List { key, limit, json } => {
            let rows = engine.audit_log(caller, key.as_deref(), limit)?;
            if json {
                return print_json(&rows);
            }
            let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let e = &r.entry;
                    vec![
                        r.seq.to_string(),
                        super::output::fmt_time(e.at),
                        e.actor.clone(),
                        e.host.clone(),
                        e.action.clone(),
                        match (&e.key_name, e.key_version) {
                            (Some(k), Some(v)) => format!("{k} v{v}"),
                            (Some(k), None) => k.clone(),
                            _ => "-".into(),
                        },
                        e.outcome.as_str().into(),
                        dash(&e.reason),
                        dash(&e.detail),
                    ]
                })
                .collect();
            print_table(
                &[
                    "SEQ", "TIME", "ACTOR", "HOST", "ACTION", "KEY", "OUTCOME", "REASON", "DETAIL",
                ],
                &table,
            );
            Ok(())
        }
    }
}
