//! `kms principal ...`

use std::path::PathBuf;

use clap::Subcommand;

use super::io::read_input;
use super::output::{fmt_time, print_json, print_table};
use super::CliError;
use crate::engine::{ApprovalKey, Caller, Engine, NewPrincipal};
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
        /// The person's approval key on the token they hold: an RFC 7512 PKCS#11 URI,
        /// e.g. pkcs11:token=alice-card;object=approval (required for security admins, managers).
        #[arg(long, value_name = "PKCS11-URI")]
        approval_key: Option<String>,
        /// PIN source for reading that token: env:VAR, file:PATH or prompt.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        card_pin: String,
        /// The approval public key as PEM, when the card cannot be reached from this host.
        #[arg(long, value_name = "PEM", conflicts_with = "approval_key")]
        approval_pubkey: Option<PathBuf>,
        /// Networks (CIDR, comma-separated) the service accepts this principal from.
        #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
        allow_from: Vec<String>,
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
    /// Every approval key a person ever had: the card it lives on and when it was theirs
    /// (a signature counts if its key was the signer's when it was made).
    Keys {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Give a person a new approval key (their card was replaced or lost). The old key stays in
    /// their key history: what it signed still counts. PIV cards: `kms card enrol --force`.
    Rekey {
        name: String,
        /// The new key on the token they hold (PKCS#11 URI).
        #[arg(
            long,
            value_name = "PKCS11-URI",
            required_unless_present = "approval_pubkey"
        )]
        approval_key: Option<String>,
        /// PIN source for reading that token: env:VAR, file:PATH or prompt.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        card_pin: String,
        /// The new public key as PEM, when the card cannot be reached from this host.
        #[arg(long, value_name = "PEM", conflicts_with = "approval_key")]
        approval_pubkey: Option<PathBuf>,
    },
}

pub fn run(engine: &Engine, caller: &Caller, cmd: PrincipalCmd) -> Result<(), CliError> {
    match cmd {
        PrincipalCmd::Add {
            name,
            role,
            cert,
            approval_key,
            card_pin,
            approval_pubkey,
            allow_from,
            json,
        } => {
            let pem = cert.as_deref().map(read_input).transpose()?;
            let approval_key = match (approval_key, approval_pubkey) {
                (Some(uri), _) => Some(ApprovalKey::Card {
                    uri,
                    pin: super::args::pin_source(&card_pin)?,
                }),
                (None, Some(path)) => Some(ApprovalKey::Pem(read_input(&path)?)),
                (None, None) => None,
            };
            let p = engine.add_principal(
                caller,
                NewPrincipal {
                    name,
                    role,
                    cert_pem: pem,
                    approval_key,
                    allowed_networks: allow_from,
                },
            )?;
            if json {
                return print_json(&p);
            }
            outln!(
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
            outln!("name:         {}", p.name);
            outln!("role:         {}", p.role);
            outln!("certificate:  {}", p.cert_subject.as_deref().unwrap_or("-"));
            outln!(
                "sha256:       {}",
                p.cert_fingerprint.as_deref().unwrap_or("-")
            );
            outln!(
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
            outln!(
                "created:      {} by {}",
                fmt_time(p.created_at),
                p.created_by
            );
            Ok(())
        }
        PrincipalCmd::Rekey {
            name,
            approval_key,
            card_pin,
            approval_pubkey,
        } => {
            let key = match (approval_key, approval_pubkey) {
                (Some(uri), _) => ApprovalKey::Card {
                    uri,
                    pin: super::args::pin_source(&card_pin)?,
                },
                (None, Some(path)) => ApprovalKey::Pem(read_input(&path)?),
                (None, None) => {
                    return Err(CliError::Usage(
                        "give the new key: --approval-key URI or --approval-pubkey PEM".into(),
                    ))
                }
            };
            engine.rekey_principal(caller, &name, &key)?;
            outln!("'{name}' has a new approval key; the old one stays in their key history (kms principal keys {name})");
            Ok(())
        }
        PrincipalCmd::Keys { name, json } => {
            let keys = engine.approval_key_history(caller, &name)?;
            if json {
                return print_json(&keys);
            }
            let t = fmt_time;
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id[..16].to_owned(),
                        k.card.clone().unwrap_or_else(|| "-".into()),
                        t(k.valid_from),
                        k.valid_until.map(t).unwrap_or_else(|| "(current)".into()),
                        k.end_reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["KEY (SHA-256)", "CARD", "FROM", "UNTIL", "ENDED"], &rows);
            Ok(())
        }
        PrincipalCmd::Disable { name } => {
            engine.disable_principal(caller, &name)?;
            outln!("principal '{name}' disabled");
            Ok(())
        }
    }
}
