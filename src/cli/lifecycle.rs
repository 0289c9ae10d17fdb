//! Lifecycle commands: `kms key rotate|compromise|dispose|disposals|rewrap`, `kms report
//! rotation`, `kms schedule run`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::args::{card, parse_iv, CardArgs};
use super::io::{read_input, write_output};
use super::output::{print_json, print_table};
use super::CliError;
use crate::engine::{Caller, CompromiseReport, Engine, Step};

#[derive(Debug, Args)]
pub struct RotateArgs {
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CompromiseArgs {
    name: String,
    /// The compromised version (default: the current one).
    #[arg(long = "key-version", value_name = "N")]
    key_version: Option<u32>,
    /// Show the kept report(s): who used the version, re-encryption progress.
    #[arg(long, conflicts_with = "close")]
    status: bool,
    /// Close the compromise: destroy the version on every token (destroyed-compromised). A
    /// second security officer (not the one who declared it) closes it.
    #[arg(long)]
    close: bool,
    /// With --close and --reason: close although not every protection was moved off it.
    #[arg(long, requires = "close")]
    accept_loss: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DisposeArgs {
    /// The key to dispose of (to file a request).
    name: Option<String>,
    /// Reference of the terminated contract (confirms the termination).
    #[arg(long, value_name = "REF")]
    contract_ref: Option<String>,
    /// Business justification for deleting the key.
    #[arg(long, value_name = "TEXT")]
    justification: Option<String>,
    /// Waiting period between approval and destruction (default [lifecycle] disposal_wait).
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_window)]
    wait: Option<u64>,
    /// Verify request ID (security admin, signed on your card).
    #[arg(long, value_name = "ID", group = "act")]
    verify: Option<String>,
    /// Approve request ID (manager, signed on your card).
    #[arg(long, value_name = "ID", group = "act")]
    approve: Option<String>,
    /// Cancel request ID before the destruction.
    #[arg(long, value_name = "ID", group = "act")]
    cancel: Option<String>,
    /// Carry out approved request ID now that its waiting period is over.
    #[arg(long, value_name = "ID", group = "act")]
    execute: Option<String>,
    #[command(flatten)]
    card: CardArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DisposalsArgs {
    /// One request with its signatures and signed destruction record.
    #[arg(long, value_name = "ID")]
    show: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RewrapArgs {
    name: String,
    /// A ciphertext from `kms key encrypt` or a wrapped data key.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The ciphertext's additional authenticated data, if it had any.
    #[arg(long, value_name = "TEXT")]
    aad: Option<String>,
    /// Security officer only, with --reason: move data off a compromised version.
    #[arg(long)]
    break_glass: bool,
    /// The input is a raw 3DES-CBC ciphertext made with this IV (16 hex digits), as `openssl enc
    /// -des-ede3-cbc` writes it; it moves to AES-GCM under the des3 key's successor.
    #[arg(long, value_name = "HEX")]
    iv: Option<String>,
    /// With --iv: the des3 key version that made it (default: the newest not destroyed).
    #[arg(long, value_name = "N", requires = "iv")]
    key_version: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// Keys due (within 14 days) and overdue for rotation, and versions awaiting destruction.
    Rotation {
        #[arg(long)]
        json: bool,
    },
    /// Every legacy key (des3): owner, since when its data is due to move to AES, migration state.
    Legacy {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Do what is due now (what `kms serve` does every [lifecycle] check_every_secs): finish
    /// interrupted procedures, rotate due keys, destroy versions whose window ended, carry out
    /// approved disposals whose waiting period is over.
    Run {
        #[arg(long)]
        json: bool,
    },
}

pub fn rotate(engine: &Engine, caller: &Caller, a: RotateArgs) -> Result<(), CliError> {
    let r = engine.rotate_key(caller, &a.name, "manual")?;
    if a.json {
        return print_json(&r);
    }
    outln!(
        "rotated '{}': v{} -> v{}{}",
        r.key,
        r.old_version,
        r.new_version,
        r.backup_copy
            .as_deref()
            .map(|c| format!(" (backup copy on {c})"))
            .unwrap_or_default()
    );
    outln!(
        "{} grant(s) now apply to v{}",
        r.grants_moved.len(),
        r.new_version
    );
    match (&r.old_destroyed, r.old_destroy_after) {
        (Some(d), _) => outln!(
            "v{} destroyed at once on {} token(s), validated absent",
            r.old_version,
            d.tokens.len()
        ),
        (None, Some(t)) => outln!(
            "v{} decrypts / unwraps / verifies only until {}, then is destroyed on every token",
            r.old_version,
            super::output::fmt_time(t)
        ),
        _ => {}
    }
    Ok(())
}

fn print_compromise(r: &CompromiseReport) {
    outln!(
        "key '{}' v{}: COMPROMISED {} by {} — {}",
        r.key,
        r.version,
        super::output::fmt_time(r.compromise.declared_at),
        r.compromise.declared_by,
        r.compromise.reason
    );
    match r.new_version {
        Some(n) => outln!("replaced by v{n} (grants apply to it)"),
        None => outln!("no replacement version (it was not the current one)"),
    }
    outln!("used by:");
    let rows: Vec<Vec<String>> = r
        .users
        .iter()
        .map(|u| {
            vec![
                u.actor.clone(),
                u.role.clone().unwrap_or_default(),
                u.sources.join("; "),
                u.first.clone(),
                u.last.clone(),
                u.uses
                    .iter()
                    .map(|(a, n)| format!("{a}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    print_table(&["WHO", "ROLE", "FROM", "FIRST", "LAST", "USES"], &rows);
    outln!(
        "re-encryption: {} rewrap(s) done / {} protection(s) made with v{} (ciphertexts, data keys, signatures){}",
        r.rewraps_done,
        r.protections_seen,
        r.version,
        if r.closed {
            "; CLOSED: destroyed on every token"
        } else {
            "; open: `kms key rewrap --break-glass` moves data, `--close` destroys it"
        }
    );
}

pub fn compromise(engine: &Engine, caller: &Caller, a: CompromiseArgs) -> Result<(), CliError> {
    let reports = if a.status {
        engine.compromise_status(caller, &a.name)?
    } else if a.close {
        vec![engine.close_compromise(caller, &a.name, a.key_version, a.accept_loss)?]
    } else {
        let reason = caller.reason.clone().unwrap_or_default();
        vec![engine.compromise_key(caller, &a.name, a.key_version, &reason)?]
    };
    if a.json {
        return print_json(&reports);
    }
    for r in &reports {
        print_compromise(r);
    }
    Ok(())
}

pub fn dispose(engine: &Engine, caller: &Caller, a: DisposeArgs) -> Result<(), CliError> {
    let d = if let Some(id) = &a.verify {
        engine.sign_disposal(caller, id, Step::Verify, &card(a.card)?)?
    } else if let Some(id) = &a.approve {
        engine.sign_disposal(caller, id, Step::Approve, &card(a.card)?)?
    } else if let Some(id) = &a.cancel {
        engine.cancel_disposal(caller, id)?
    } else if let Some(id) = &a.execute {
        engine.execute_disposal(caller, id)?
    } else {
        let name = a.name.ok_or_else(|| {
            CliError::Usage(
                "name the key: kms key dispose NAME --contract-ref REF --justification TEXT".into(),
            )
        })?;
        engine.request_disposal(
            caller,
            &name,
            a.contract_ref.as_deref().unwrap_or_default(),
            a.justification.as_deref().unwrap_or_default(),
            a.wait,
        )?
    };
    if a.json {
        return print_json(&d);
    }
    outln!("disposal {}: {}", d.id, d.state);
    if let Some(t) = d.not_before {
        if d.state == "approved" {
            outln!(
                "the key is destroyed on every token after {} (`kms key dispose --cancel {}` stops it)",
                super::output::fmt_time(t),
                d.id
            );
        }
    }
    if d.state == "done" {
        outln!("every version destroyed and validated absent; destruction record signed by the audit key (`kms key disposals --show {}`)", d.id);
    }
    Ok(())
}

pub fn disposals(engine: &Engine, caller: &Caller, a: DisposalsArgs) -> Result<(), CliError> {
    if let Some(id) = a.show {
        let e = engine.disposal_evidence(caller, &id)?;
        return print_json(&e);
    }
    let list = engine.list_disposals(caller)?;
    if a.json {
        let v: Vec<_> = list
            .iter()
            .map(|(d, k)| serde_json::json!({"key": k, "disposal": d}))
            .collect();
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|(d, k)| {
            vec![
                d.id.clone(),
                k.clone(),
                d.state.clone(),
                d.contract_ref.clone(),
                d.requested_by.clone(),
                d.not_before
                    .map(super::output::fmt_time)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "KEY",
            "STATE",
            "CONTRACT",
            "REQUESTED BY",
            "NOT BEFORE",
        ],
        &rows,
    );
    Ok(())
}

pub fn rewrap(engine: &Engine, caller: &Caller, a: RewrapArgs) -> Result<(), CliError> {
    let mut data = read_input(&a.input)?;
    if let Some(iv) = &a.iv {
        let iv = parse_iv(iv)?;
        data = engine.legacy_envelope(&a.name, a.key_version, &iv, &data)?;
    }
    let aad = a.aad.unwrap_or_default();
    let (out, v) = engine.rewrap_with(caller, &a.name, &data, aad.as_bytes(), a.break_glass)?;
    write_output(Some(&a.out), &out, false)?;
    errln!(
        "re-encrypted under v{v} (of '{}' or, for legacy data, of its AES successor)",
        a.name
    );
    Ok(())
}

pub fn report(engine: &Engine, caller: &Caller, cmd: ReportCmd) -> Result<(), CliError> {
    match cmd {
        ReportCmd::Legacy { json } => {
            let r = engine.legacy_report(caller)?;
            if json {
                return print_json(&r);
            }
            let rows: Vec<Vec<String>> = r
                .iter()
                .map(|k| {
                    vec![
                        k.key.clone(),
                        k.key_type.to_string(),
                        k.owner.clone(),
                        super::output::fmt_time(k.due),
                        k.status.to_owned(),
                        if k.allow_legacy_encrypt {
                            "encrypt+decrypt".into()
                        } else {
                            "decrypt".into()
                        },
                        k.migrated_to.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            super::output::print_table(
                &[
                    "KEY",
                    "TYPE",
                    "OWNER",
                    "DUE SINCE",
                    "STATUS",
                    "MAY",
                    "SUCCESSOR",
                ],
                &rows,
            );
            Ok(())
        }
        ReportCmd::Rotation { json } => {
            let r = engine.rotation_report(caller)?;
            if json {
                return print_json(&r);
            }
            let rows: Vec<Vec<String>> = r
                .iter()
                .map(|s| {
                    vec![
                        s.key.clone(),
                        s.current_version
                            .map(|v| format!("v{v}"))
                            .unwrap_or_default(),
                        s.rotate_every.clone(),
                        s.rotation_due
                            .map(super::output::fmt_time)
                            .unwrap_or_default(),
                        s.status.to_owned(),
                        s.retiring
                            .iter()
                            .map(|(v, t)| format!("v{v} until {}", t.clone().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join("; "),
                    ]
                })
                .collect();
            print_table(
                &["KEY", "CURRENT", "EVERY", "DUE", "STATUS", "RETIRING"],
                &rows,
            );
            Ok(())
        }
    }
}

pub fn schedule(engine: &Engine, caller: &Caller, cmd: ScheduleCmd) -> Result<(), CliError> {
    match cmd {
        ScheduleCmd::Run { json } => {
            let r = engine.run_due(caller)?;
            if json {
                print_json(&r)?;
            } else {
                for p in &r.repaired.finished {
                    outln!("finished   {p}");
                }
                for p in &r.repaired.rolled_back {
                    outln!("rolled back {p}");
                }
                for k in &r.rotated {
                    outln!("rotated    {k}");
                }
                for k in &r.destroyed {
                    outln!("destroyed  {k}");
                }
                for d in &r.disposed {
                    outln!("disposed   {d}");
                }
                for (what, why) in r.failed.iter().chain(&r.repaired.failed) {
                    outln!("FAILED     {what}: {why}");
                }
            }
            if r.failed.is_empty() && r.repaired.failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::Negative("some due procedures failed".into()))
            }
        }
    }
}
