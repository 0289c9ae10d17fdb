//! Human tables and `--json` output, and the one way the CLI writes to stdout and stderr.
//!
//! Every line the CLI prints goes through [`write_stdout`] / [`write_stderr`] (the `outln!`,
//! `out!` and `errln!` macros of `cli/mod.rs`; clippy's `print_stdout`/`print_stderr` lints keep
//! `println!` out of the crate). A reader that went away (`kms key list | head -1`) ends that
//! stream quietly: later writes to it are dropped and the command finishes with its own status.
//! Any other write error on stdout (a full disk behind `>`) fails the command: [`finish`].

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use serde::Serialize;

use super::CliError;
use crate::model::{AuditRow, KeyRecord};

// Process-wide on purpose: stdout and stderr are the process's.

/// Stdout took its last write: its reader is gone, or a write failed.
static STDOUT_DONE: AtomicBool = AtomicBool::new(false);
/// Stderr's reader is gone (or it failed): nothing more is written there.
static STDERR_DONE: AtomicBool = AtomicBool::new(false);
/// The first stdout error that was not a closed pipe (reported by [`finish`]).
static STDOUT_ERROR: OnceLock<io::Error> = OnceLock::new();

/// Write `args` (and a newline when `newline`) to stdout, flushed. See the module docs.
pub fn write_stdout(args: fmt::Arguments<'_>, newline: bool) {
    if STDOUT_DONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = written {
        stdout_failed(e);
    }
}

/// Write `args` and a newline to stderr. A closed or failing stderr has nobody to tell: the
/// text is dropped (and so is every later line).
pub fn write_stderr(args: fmt::Arguments<'_>) {
    if STDERR_DONE.load(Ordering::Relaxed) {
        return;
    }
    let mut err = io::stderr().lock();
    if err
        .write_fmt(args)
        .and_then(|()| err.write_all(b"\n"))
        .and_then(|()| err.flush())
        .is_err()
    {
        STDERR_DONE.store(true, Ordering::Relaxed);
    }
}

/// Raw bytes to stdout (`--out -`): a closed pipe is the end of output like for
/// [`write_stdout`]; any other error is the command's error at once.
pub fn write_stdout_bytes(data: &[u8]) -> Result<(), CliError> {
    if STDOUT_DONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    match out.write_all(data).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_DONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(source) => {
            STDOUT_DONE.store(true, Ordering::Relaxed);
            Err(stdout_error(source))
        }
    }
}

/// After the command: `Err` when stdout lost output to anything but a closed pipe.
pub fn finish() -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    if !STDOUT_DONE.load(Ordering::Relaxed) {
        if let Err(e) = out.flush() {
            stdout_failed(e);
        }
    }
    match STDOUT_ERROR.get() {
        Some(e) => Err(stdout_error(io::Error::new(e.kind(), e.to_string()))),
        None => Ok(()),
    }
}

fn stdout_failed(e: io::Error) {
    STDOUT_DONE.store(true, Ordering::Relaxed);
    if e.kind() != io::ErrorKind::BrokenPipe {
        // Only the first error is kept; a second `set` has nothing to add.
        let _ = STDOUT_ERROR.set(e);
    }
}

fn stdout_error(source: io::Error) -> CliError {
    CliError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    }
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Usage(format!("cannot encode JSON: {e}")))?;
    outln!("{text}");
    Ok(())
}

/// Print rows as an aligned table under `headers`.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// RFC 3339 UTC time for tables.
pub fn fmt_time(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Audit rows as a table (`kms audit list`, `kms key history`).
pub fn print_rows(rows: &[AuditRow]) {
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let e = &r.entry;
            vec![
                r.seq.to_string(),
                fmt_time(e.at),
                format!(
                    "{}{}",
                    e.actor,
                    e.role
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
                e.host.clone(),
                e.action.clone(),
                match (&e.key_name, e.key_version) {
                    (Some(k), Some(v)) => format!("{k} v{v}"),
                    (Some(k), None) => k.clone(),
                    _ => "-".into(),
                },
                match &e.code {
                    Some(c) => format!("{} ({c})", e.outcome.as_str()),
                    None => e.outcome.as_str().into(),
                },
                dash(&e.reason),
                dash(&e.detail),
            ]
        })
        .collect();
    print_table(
        &[
            "SEQ", "TIME", "ACTOR", "FROM", "ACTION", "KEY", "OUTCOME", "REASON", "DETAIL",
        ],
        &table,
    );
}

/// One key in full (`kms key show`).
pub fn print_key(k: &KeyRecord, config: &crate::config::Config) {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    outln!("name:            {}", k.name);
    outln!("id:              {}", k.id);
    outln!("type:            {} ({})", k.key_type, k.kind);
    outln!("owner:           {}", k.owner);
    outln!("classification:  {}", k.classification);
    outln!("usage:           {}", k.usage);
    if let Some(scheme) = k.signature_scheme() {
        outln!("signature:       {scheme}");
    }
    outln!("origin:          {}", k.origin);
    if let Some(why) = &k.weak_reason {
        outln!("WEAK (accepted): {why}");
    }
    if k.key_type.is_legacy() {
        outln!(
            "legacy:          yes ({}){}",
            if k.allow_legacy_encrypt {
                "may still encrypt"
            } else {
                "decrypt only"
            },
            k.migrated_to
                .as_deref()
                .map(|m| format!("; migrating to '{m}'"))
                .unwrap_or_default()
        );
    }
    outln!("purpose:         {}", dash(&k.purpose));
    outln!("handling:        {}", dash(&k.handling));
    outln!("disposal:        {}", dash(&k.disposal));
    outln!(
        "expires:         {}",
        k.expires
            .map(|d| d.to_string())
            .unwrap_or_else(|| "-".into())
    );
    outln!("rotate every:    {}", k.rotate_every);
    outln!(
        "rotation due:    {}",
        k.rotation_due().map(fmt_time).unwrap_or_else(|| "-".into())
    );
    let labels: Vec<String> = k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect();
    outln!("labels:          {}", dash(&labels.join(", ")));
    outln!(
        "created:         {} by {}",
        fmt_time(k.created_at),
        k.created_by
    );
    outln!("updated:         {}", fmt_time(k.updated_at));
    outln!("versions:");
    for v in &k.versions {
        outln!(
            "  v{}  {:<9} token {} ({}, serial {})  CKA_ID {}  created {}",
            v.version,
            v.state.as_str(),
            config.token_at_site(&v.token),
            v.token_label,
            v.token_serial,
            v.object_id,
            fmt_time(v.created_at)
        );
    }
}
