//! `kms audit ...`: read, export, verify and ship the audit trail.

use std::path::PathBuf;

use clap::Subcommand;

use super::io::{read_input, write_output};
use super::output::{fmt_time, print_json, print_rows};
use super::CliError;
use crate::engine::{Caller, Engine};
use crate::model::{AuditFilter, AuditRow};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Audit records, oldest first (the newest --limit of those matching).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Export records as JSON lines or CSV.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// jsonl | csv
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check the hash chain and every signed checkpoint; names the first record that was
    /// altered, removed or inserted. Exit 1 when anything is wrong.
    Verify {
        /// The audit public key kept outside the KMS (PEM); default: the one in the inventory.
        #[arg(long, value_name = "PEM")]
        pubkey: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The audit public key (PEM), to keep outside the KMS for offline verification.
    PublicKey,
    /// Sign a checkpoint over the chain head now.
    Checkpoint,
    /// Ship records the log server has not taken yet; --status shows the backlog.
    Ship {
        #[arg(long)]
        status: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only records about this key.
    #[arg(long)]
    key: Option<String>,
    /// Only records by this actor.
    #[arg(long = "actor", id = "actor_filter", value_name = "NAME")]
    actor: Option<String>,
    /// From this time (RFC 3339, e.g. 2026-11-28T00:00:00Z, or a date YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    since: Option<time::OffsetDateTime>,
    /// Up to this time (same forms).
    #[arg(long, value_parser = parse_time)]
    until: Option<time::OffsetDateTime>,
    /// How many records at most (the newest).
    #[arg(long, default_value_t = u32::MAX)]
    limit: u32,
}

impl FilterArgs {
    fn filter(&self) -> AuditFilter {
        AuditFilter {
            key_name: self.key.clone(),
            actor: self.actor.clone(),
            since: self.since,
            until: self.until,
            after_seq: None,
            limit: self.limit,
        }
    }
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    super::args::parse_date(s)
        .map(|d| d.with_time(time::Time::MIDNIGHT).assume_utc())
        .map_err(|_| {
            format!("'{s}' is not a time; write RFC 3339 (2026-11-28T09:00:00Z) or YYYY-MM-DD")
        })
}

pub fn run(engine: &Engine, caller: &Caller, cmd: AuditCmd) -> Result<(), CliError> {
    match cmd {
        AuditCmd::List { filter, json } => {
            let rows = engine.audit_records(caller, &filter.filter())?;
            if json {
                return print_json(&rows);
            }
            print_rows(&rows);
            Ok(())
        }
        AuditCmd::Export {
            filter,
            format,
            out,
        } => {
            let rows = engine.audit_records(caller, &filter.filter())?;
            let data = if format == "csv" {
                to_csv(&rows)?
            } else {
                to_jsonl(&rows)?
            };
            write_output(out.as_deref(), &data, true)
        }
        AuditCmd::Verify { pubkey, json } => {
            let pem = pubkey
                .as_deref()
                .map(read_input)
                .transpose()?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let v = engine.verify_audit(caller, pem.as_deref())?;
            if json {
                print_json(&v)?;
            } else {
                outln!(
                    "{} records, {} checkpoints ({} valid)",
                    v.records,
                    v.checkpoints,
                    v.valid_checkpoints
                );
                for p in &v.problems {
                    outln!("  {p}");
                }
                for n in &v.notes {
                    outln!("  note: {n}");
                }
            }
            if v.ok {
                if !json {
                    outln!("audit trail intact");
                }
                Ok(())
            } else {
                Err(CliError::Negative(format!(
                    "audit trail NOT intact: {}",
                    v.problems.first().map(String::as_str).unwrap_or("")
                )))
            }
        }
        AuditCmd::PublicKey => {
            let pem = engine.audit_public_key(caller)?;
            write_output(None, pem.as_bytes(), false)
        }
        AuditCmd::Checkpoint => {
            match engine.checkpoint_for(caller)? {
                Some(c) => outln!("checkpoint signed over record {} ({})", c.seq, c.head_hash),
                None => outln!("nothing new since the last checkpoint"),
            }
            Ok(())
        }
        AuditCmd::Ship { status, json } => {
            if status {
                let s = engine.ship_status(caller)?;
                if json {
                    return print_json(&s);
                }
                outln!(
                    "log server: {}\nshipped up to record {} of {}; backlog {}",
                    s.server.as_deref().unwrap_or("(none configured)"),
                    s.cursor,
                    s.head,
                    s.backlog
                );
                return Ok(());
            }
            let r = engine.ship_audit_for(caller)?;
            if json {
                return print_json(&r);
            }
            outln!(
                "shipped {} record(s); up to {}; backlog {}",
                r.sent,
                r.cursor,
                r.backlog
            );
            Ok(())
        }
    }
}

fn to_jsonl(rows: &[AuditRow]) -> Result<Vec<u8>, CliError> {
    let mut out = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut out, r).map_err(|e| CliError::Usage(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

fn to_csv(rows: &[AuditRow]) -> Result<Vec<u8>, CliError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| CliError::Usage(e.to_string());
    w.write_record([
        "seq",
        "at",
        "actor",
        "role",
        "host",
        "os_user",
        "cert_fingerprint",
        "action",
        "key",
        "key_version",
        "reason",
        "outcome",
        "code",
        "detail",
        "diff",
        "prev_hash",
        "hash",
    ])
    .map_err(err)?;
    for r in rows {
        let e = &r.entry;
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        w.write_record([
            r.seq.to_string(),
            fmt_time(e.at),
            e.actor.clone(),
            o(&e.role),
            e.host.clone(),
            o(&e.os_user),
            o(&e.cert_fingerprint),
            e.action.clone(),
            o(&e.key_name),
            e.key_version.map(|v| v.to_string()).unwrap_or_default(),
            o(&e.reason),
            e.outcome.as_str().to_owned(),
            o(&e.code),
            o(&e.detail),
            e.diff.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            o(&r.prev_hash),
            o(&r.hash),
        ])
        .map_err(err)?;
    }
    w.into_inner().map_err(|e| CliError::Usage(e.to_string()))
}
