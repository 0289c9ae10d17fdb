//! `kms backup ...`: key ceremony, copies, restore drills, restore, offline export/import.

use std::path::PathBuf;

use clap::Subcommand;

use super::output::{fmt_time, print_json, print_table};
use super::CliError;
use crate::engine::{Caller, Engine};

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Key ceremony: pair two tokens so keys on FROM can be copied to TO (asks for FROM's SO PIN
    /// unless its `so_pin` source is configured). Run it again with --from backup --to NEW to
    /// prepare a restore onto a new token.
    Init {
        /// Token whose keys are copied (default: the [keys] token).
        #[arg(long)]
        from: Option<String>,
        /// Token that receives the copies (default: the [backup] token).
        #[arg(long)]
        to: Option<String>,
    },
    /// Copy every key version that has no backup copy yet; activate versions waiting for theirs.
    Sync {
        #[arg(long)]
        json: bool,
    },
    /// Restore drill: prove each backup copy works (sign/verify, encrypt/decrypt, wrap/unwrap),
    /// without taking any key out. Exit 1 if any copy fails.
    Verify {
        /// Only this key (default: every key).
        key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild token TO from the copies on token FROM (after `kms backup init --from FROM --to TO`)
    /// and point the inventory at TO.
    Restore {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// Pairings and the backup state of every key version.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Write an encrypted offline backup: the inventory snapshot and every key wrapped under the
    /// backup key-encryption key, sealed with AES-256-GCM under a key on the HSM.
    Export {
        /// Output file (written 0600).
        file: PathBuf,
    },
    /// Read an offline backup written by `kms backup export`: refuse it if it was altered, then
    /// put back every key missing from its token and, into an empty inventory, the inventory.
    Import {
        file: PathBuf,
        /// Token to unwrap missing keys on (must hold the backup key-encryption key).
        #[arg(long)]
        to: Option<String>,
        /// Rebuild a fresh inventory (one holding no keys) from the file: principals, grants,
        /// keys and audit trail as they were when the file was written.
        #[arg(long)]
        replace_inventory: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(engine: &Engine, caller: &Caller, cmd: BackupCmd) -> Result<(), CliError> {
    match cmd {
        BackupCmd::Init { from, to } => {
            let from = from.unwrap_or_else(|| engine.config().key_token.clone());
            let to = match to.or_else(|| engine.config().backup.as_ref().map(|b| b.token.clone())) {
                Some(t) => t,
                None => {
                    return Err(CliError::Usage(
                        "no --to token and no [backup] token in the configuration".into(),
                    ))
                }
            };
            errln!("Key ceremony: pairing token '{from}' with token '{to}'.");
            let say = |s: &str| errln!("{s}");
            let pair = engine.backup_init(caller, &from, &to, &say)?;
            outln!(
                "paired: '{}' (serial {}) -> '{}' (serial {}), key-encryption key {} (pairing {})",
                pair.from_token,
                pair.from_serial,
                pair.to_token,
                pair.to_serial,
                pair.kek_id,
                pair.id
            );
            let keys = engine.list_keys(caller, &Default::default())?;
            let without: usize = keys
                .iter()
                .flat_map(|k| &k.versions)
                .filter(|v| v.state == crate::model::VersionState::Active)
                .filter(|v| v.token_serial == pair.from_serial)
                .filter(|v| !v.copies.iter().any(|c| c.token_serial == pair.to_serial))
                .count();
            if without > 0 {
                outln!(
                    "{without} active key version(s) on '{}' have no copy on '{}' yet: run `kms backup sync`",
                    pair.from_token, pair.to_token
                );
            }
            Ok(())
        }
        BackupCmd::Sync { json } => {
            let r = engine.backup_sync(caller)?;
            if json {
                print_json(&r)?;
            } else {
                for k in &r.copied {
                    outln!("copied     {k}");
                }
                for k in &r.activated {
                    outln!("activated  {k} (its backup copy now exists)");
                }
                for (k, why) in &r.never_copyable {
                    outln!("never      {k}: {why}");
                }
                for (k, why) in &r.failed {
                    outln!("FAILED     {k}: {why}");
                }
                outln!(
                    "{} copied, {} activated, {} already backed up, {} never copyable, {} failed",
                    r.copied.len(),
                    r.activated.len(),
                    r.already,
                    r.never_copyable.len(),
                    r.failed.len()
                );
            }
            if r.failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::Negative(format!(
                    "{} version(s) could not be copied",
                    r.failed.len()
                )))
            }
        }
        BackupCmd::Verify { key, json } => {
            let r = engine.backup_verify(caller, key.as_deref())?;
            if json {
                print_json(&r)?;
            } else {
                for d in &r.results {
                    outln!(
                        "{}  {}@v{} on '{}': {}",
                        if d.ok { "ok  " } else { "FAIL" },
                        d.key,
                        d.version,
                        d.token,
                        d.detail
                    );
                }
                for p in &r.pair_problems {
                    outln!("FAIL  {p}");
                }
                for k in &r.uncopied {
                    outln!("FAIL  {k} has no backup copy (run `kms backup sync`)");
                }
                for k in &r.not_applicable {
                    outln!("n/a   {k}");
                }
                outln!(
                    "{} copies drilled, {} problem(s)",
                    r.results.len(),
                    r.failures()
                );
            }
            if r.failures() == 0 {
                Ok(())
            } else {
                Err(CliError::Negative(format!(
                    "restore drill failed for {} item(s)",
                    r.failures()
                )))
            }
        }
        BackupCmd::Restore { from, to, json } => {
            let r = engine.backup_restore(caller, &from, &to)?;
            if json {
                print_json(&r)?;
            } else {
                for k in &r.restored {
                    outln!("restored  {k} (proven by drill)");
                }
                for (k, why) in &r.failed {
                    outln!("FAILED    {k}: {why}");
                }
                outln!("{} restored, {} failed", r.restored.len(), r.failed.len());
            }
            if r.failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::Negative(format!(
                    "{} version(s) could not be restored",
                    r.failed.len()
                )))
            }
        }
        BackupCmd::Status { json } => {
            let status = engine.backup_status(caller)?;
            let keys = engine.list_keys(caller, &Default::default())?;
            if json {
                return print_json(&serde_json::json!({"pairs": status.pairs, "keys": keys,
                    "never_copyable": status.never_copyable}));
            }
            let pairs = &status.pairs;
            let rows: Vec<Vec<String>> = pairs
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        format!(
                            "{} ({})",
                            engine.config().token_at_site(&p.from_token),
                            p.from_serial
                        ),
                        format!(
                            "{} ({})",
                            engine.config().token_at_site(&p.to_token),
                            p.to_serial
                        ),
                        p.kek_id.to_string(),
                        fmt_time(p.created_at),
                        p.created_by.clone(),
                    ]
                })
                .collect();
            print_table(&["PAIR", "FROM", "TO", "KEK", "CREATED", "BY"], &rows);
            outln!();
            let mut rows = Vec::new();
            for k in &keys {
                for v in &k.versions {
                    let never = status
                        .never_copyable
                        .iter()
                        .find(|n| n.key == k.name && n.version == v.version);
                    let copies = match never {
                        Some(n) if v.copies.is_empty() => {
                            format!("NEVER COPYABLE ({}): {}", n.code, n.reason)
                        }
                        _ if v.copies.is_empty() => "none".to_owned(),
                        _ => v
                            .copies
                            .iter()
                            .map(|c| {
                                format!(
                                    "{}: {}",
                                    engine.config().token_at_site(&c.token),
                                    match (&c.drill_error, c.verified_at) {
                                        (Some(e), _) => format!("DRILL FAILED ({e})"),
                                        (None, Some(t)) => format!("verified {}", fmt_time(t)),
                                        (None, None) => "not drilled yet".into(),
                                    }
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; "),
                    };
                    rows.push(vec![
                        format!("{}@v{}", k.name, v.version),
                        v.state.to_string(),
                        engine.config().token_at_site(&v.token),
                        copies,
                        v.pending_reason.clone().unwrap_or_default(),
                    ]);
                }
            }
            print_table(
                &["KEY", "STATE", "TOKEN", "BACKUP COPIES", "WHY PENDING"],
                &rows,
            );
            Ok(())
        }
        BackupCmd::Export { file } => {
            let (bytes, r) = engine.backup_export(caller)?;
            super::io::write_output(Some(&file), &bytes, true)?;
            outln!(
                "wrote {}: {} key version(s) wrapped under the backup KEK, inventory snapshot of {} bytes, sealed under key '{}' v{}",
                file.display(),
                r.keys,
                r.inventory_bytes,
                r.sealed_with,
                r.sealed_version
            );
            Ok(())
        }
        BackupCmd::Import {
            file,
            to,
            json,
            replace_inventory,
        } => {
            let bytes = super::io::read_input(&file)?;
            let r = engine.backup_import(caller, &bytes, to.as_deref(), replace_inventory)?;
            if json {
                return print_json(&r);
            }
            outln!(
                "authentic backup file written {} by {} ({} key versions; its audit trail ends at record {}, hash {})",
                r.written_at, r.written_by, r.keys, r.audit_seq, r.audit_head
            );
            if r.inventory_restored {
                outln!("inventory restored from the file");
            }
            for k in &r.restored {
                outln!("restored  {k}");
            }
            for k in &r.present {
                outln!("present   {k} (already on its token)");
            }
            for (k, why) in &r.failed {
                outln!("FAILED    {k}: {why}");
            }
            if r.failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::Negative(format!(
                    "{} key version(s) could not be restored",
                    r.failed.len()
                )))
            }
        }
    }
}
