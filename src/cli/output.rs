//! Human tables and `--json` output.

use serde::Serialize;

use super::CliError;
use crate::inventory::{AuditRow, KeyRecord};

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Usage(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
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
        println!("{}", parts.join("  ").trim_end());
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
    println!("name:            {}", k.name);
    println!("id:              {}", k.id);
    println!("type:            {} ({})", k.key_type, k.kind);
    println!("owner:           {}", k.owner);
    println!("classification:  {}", k.classification);
    println!("usage:           {}", k.usage);
    if let Some(scheme) = k.signature_scheme() {
        println!("signature:       {scheme}");
    }
    println!("origin:          {}", k.origin);
    if let Some(why) = &k.weak_reason {
        println!("WEAK (accepted): {why}");
    }
    if k.key_type.is_legacy() {
        println!(
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
    println!("purpose:         {}", dash(&k.purpose));
    println!("handling:        {}", dash(&k.handling));
    println!("disposal:        {}", dash(&k.disposal));
    println!(
        "expires:         {}",
        k.expires
            .map(|d| d.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!("rotate every:    {}", k.rotate_every);
    println!(
        "rotation due:    {}",
        k.rotation_due().map(fmt_time).unwrap_or_else(|| "-".into())
    );
    let labels: Vec<String> = k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect();
    println!("labels:          {}", dash(&labels.join(", ")));
    println!(
        "created:         {} by {}",
        fmt_time(k.created_at),
        k.created_by
    );
    println!("updated:         {}", fmt_time(k.updated_at));
    println!("versions:");
    for v in &k.versions {
        println!(
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
