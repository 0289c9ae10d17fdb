//! `kms grant ...`: officer-made grants. The signed request/approval workflow will sit in front.

use clap::Subcommand;

use super::output::{fmt_time, print_json, print_table};
use super::CliError;
use crate::engine::{Caller, Engine, NewGrantRequest};
use crate::model::GrantFilter;
use crate::model::GrantOps;

#[derive(Debug, Subcommand)]
pub enum GrantCmd {
    /// Let a principal use a key: operations, last day of validity, ticket and justification.
    Add {
        principal: String,
        key: String,
        /// sign, verify, encrypt, decrypt, wrap, unwrap, read-inventory (comma-separated).
        #[arg(long, value_name = "OPS")]
        ops: GrantOps,
        /// Last day the grant is valid (YYYY-MM-DD, UTC); it ends at the following midnight.
        #[arg(long, value_name = "DATE", value_parser = super::args::parse_date)]
        until: time::Date,
        /// Change or access ticket reference.
        #[arg(long)]
        ticket: String,
        /// Business justification.
        #[arg(long)]
        justification: String,
        #[arg(long)]
        json: bool,
    },
    /// Grants in force (or all, with --all).
    List {
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        key: Option<String>,
        /// Include revoked and expired grants.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant at once (the global --reason is required).
    Revoke { id: String },
}

pub fn run(engine: &Engine, caller: &Caller, cmd: GrantCmd) -> Result<(), CliError> {
    match cmd {
        GrantCmd::Add {
            principal,
            key,
            ops,
            until,
            ticket,
            justification,
            json,
        } => {
            let g = engine.add_grant(
                caller,
                NewGrantRequest {
                    principal,
                    key,
                    ops,
                    until,
                    ticket,
                    justification,
                },
            )?;
            if json {
                return print_json(&g);
            }
            outln!(
                "grant {}: '{}' may {} with key '{}' until {}",
                g.id,
                g.principal,
                g.ops,
                g.key_name,
                fmt_time(g.not_after)
            );
            Ok(())
        }
        GrantCmd::List {
            principal,
            key,
            all,
            json,
        } => {
            let grants = engine.list_grants(
                caller,
                &GrantFilter {
                    principal,
                    key_name: key,
                    all,
                },
            )?;
            if json {
                return print_json(&grants);
            }
            let now = time::OffsetDateTime::now_utc();
            let rows: Vec<Vec<String>> = grants
                .iter()
                .map(|g| {
                    vec![
                        g.id.clone(),
                        g.principal.clone(),
                        g.key_name.clone(),
                        g.ops.to_string(),
                        fmt_time(g.not_after),
                        if g.revoked_at.is_some() {
                            "revoked".into()
                        } else if g.is_active(now) {
                            "active".into()
                        } else {
                            "expired".into()
                        },
                        g.ticket.clone(),
                    ]
                })
                .collect();
            print_table(
                &["ID", "PRINCIPAL", "KEY", "OPS", "UNTIL", "STATE", "TICKET"],
                &rows,
            );
            Ok(())
        }
        GrantCmd::Revoke { id } => super::revoke::revoke_grant(engine, caller, &id),
    }
}
