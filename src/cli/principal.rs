//! `kms principal ...`

use std::path::PathBuf;

use clap::Subcommand;

use super::io::read_input;
use super::output::{fmt_time, print_json, print_table};
use super::CliError;
use crate::engine::{Caller, Engine};
use crate::model::Role;

#[derive(Debug, Subcommand)]
pub enum PrincipalCmd {
    /// Register a principal. Applications are identified by their client certificate's SHA-256
    /// fingerprint (the certificate's key is never stored).
    Add {
        name: String,
        /// security-officer | security-admin | manager | auditor | application | user
        #[arg(long)]
        role: Role,
        /// Client certificate (PEM); required for applications.
        #[arg(long, value_name = "PEM")]
        cert: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Registered principals.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One principal.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable a principal: refused from its next request on.
    Disable { name: String },
}

pub fn run(engine: &Engine, caller: &Caller, cmd: PrincipalCmd) -> Result<(), CliError> {
    match cmd {
        PrincipalCmd::Add {
            name,
            role,
            cert,
            json,
        } => {
            let pem = cert.as_deref().map(read_input).transpose()?;
            let p = engine.add_principal(caller, &name, role, pem.as_deref())?;
            if json {
                return print_json(&p);
            }
            println!(
                "registered principal '{}' ({}){}",
                p.name,
                p.role,
                p.cert_fingerprint
                    .map(|f| format!(" with certificate sha256 {f}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        PrincipalCmd::List { json } => {
            let all = engine.list_principals(caller)?;
            if json {
                return print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.role.to_string(),
                        if p.disabled_at.is_some() {
                            "disabled".into()
                        } else {
                            "active".into()
                        },
                        p.cert_subject.clone().unwrap_or_else(|| "-".into()),
                        fmt_time(p.created_at),
                    ]
                })
                .collect();
            print_table(&["NAME", "ROLE", "STATE", "CERTIFICATE", "CREATED"], &rows);
            Ok(())
        }
        PrincipalCmd::Show { name, json } => {
            let p = engine.show_principal(caller, &name)?;
            if json {
                return print_json(&p);
            }
            println!("name:         {}", p.name);
            println!("role:         {}", p.role);
            println!("certificate:  {}", p.cert_subject.as_deref().unwrap_or("-"));
            println!(
                "sha256:       {}",
                p.cert_fingerprint.as_deref().unwrap_or("-")
            );
            println!(
                "state:        {}",
                match (&p.disabled_at, &p.disabled_by) {
                    (Some(at), by) => format!(
                        "disabled {} by {}",
                        fmt_time(*at),
                        by.as_deref().unwrap_or("?")
                    ),
                    _ => "active".into(),
                }
            );
            println!(
                "created:      {} by {}",
                fmt_time(p.created_at),
                p.created_by
            );
            Ok(())
        }
        PrincipalCmd::Disable { name } => {
            engine.disable_principal(caller, &name)?;
            println!("principal '{name}' disabled");
            Ok(())
        }
    }
}
