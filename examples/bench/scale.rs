//! `scripts/bench --keys 10,1000,10000`: the scale axis (issue 12). For each size the primary
//! and the backup token are topped up with that many filler objects (AES keys made raw on the
//! token: a bench-only fast path, no drills; what the measured operations pay for is the number
//! of objects on the token), then raw sign, service sign and unwrap, and the service's RSS are
//! measured. Last, `kms key list --json` over 100,000 inventory rows inserted directly.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kms::config::Config;
use kms::hsm::Token;
use kms::model::{KeyType, ObjectId};

use super::{bench_app_tls, run_http, run_threads, start_service, stop_service, Res, Stats};

/// What one size measured.
struct Size {
    objects: usize,
    raw_sign: Stats,
    service_sign: Stats,
    service_unwrap: Stats,
    rss_kib: u64,
    rss_idle_kib: u64,
}

/// Fill `token` with AES filler objects until `have` reaches `want`.
fn top_up(token: &Token, have: &mut usize, want: usize) -> Res<()> {
    let usage = "encrypt,decrypt".parse()?;
    while *have < want {
        let id = ObjectId(rand::random::<[u8; 16]>().to_vec());
        token.generate(KeyType::Aes256, &id, "bench-filler", &usage)?;
        *have += 1;
    }
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Config,
    pki: &Path,
    kms_bin: &Path,
    sizes: &[usize],
    secs: f64,
    ec_id: &ObjectId,
    sign_body: serde_json::Value,
    unwrap_body: serde_json::Value,
) -> Res<()> {
    let hsm = kms::hsm::open_for_benchmark(config);
    let primary = hsm.token(&config.key_token)?;
    let backup = match &config.backup {
        Some(b) => Some(hsm.token(&b.token)?),
        None => None,
    };
    let tls = bench_app_tls(pki)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut on_primary, mut on_backup) = (0usize, 0usize);
    let mut results = Vec::new();
    let digest = [7u8; 48];
    for &size in sizes {
        let t = Instant::now();
        top_up(&primary, &mut on_primary, size)?;
        if let Some(b) = &backup {
            top_up(b, &mut on_backup, size)?;
        }
        eprintln!(
            "scale: {size} filler objects on each token ({:.1} s to add)",
            t.elapsed().as_secs_f64()
        );
        let raw_sign = run_threads(1, secs, &|| {
            Ok(primary.sign_ecdsa_p384(ec_id, &digest).map(drop)?)
        })?;
        let (mut child, addr) = start_service(kms_bin)?;
        // Before any request: what the process holds once the module is initialised and the
        // tokens logged in (SoftHSM2 reads every object file of every token at C_Initialize).
        let rss_idle = rss_kib(child.id());
        let measured: Res<(Stats, Stats)> = rt.block_on(async {
            // Warm-up: the first request of each key caches its handle.
            run_http(
                addr,
                Arc::clone(&tls),
                1,
                0.2,
                "/v1/keys/bench-ec/sign".into(),
                sign_body.clone(),
            )
            .await?;
            let s = run_http(
                addr,
                Arc::clone(&tls),
                2,
                secs,
                "/v1/keys/bench-ec/sign".into(),
                sign_body.clone(),
            )
            .await?;
            let u = run_http(
                addr,
                Arc::clone(&tls),
                2,
                secs,
                "/v1/keys/bench-kek/unwrap".into(),
                unwrap_body.clone(),
            )
            .await?;
            Ok((s, u))
        });
        let rss = rss_kib(child.id());
        stop_service(&mut child);
        let (service_sign, service_unwrap) = measured?;
        results.push(Size {
            objects: size,
            raw_sign,
            service_sign,
            service_unwrap,
            rss_kib: rss,
            rss_idle_kib: rss_idle,
        });
    }
    println!();
    println!("| filler objects per token | raw sign c=1 ops/s | service sign c=2 ops/s | service unwrap c=2 ops/s | service RSS MiB | RSS before any request MiB |");
    println!("|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.objects,
            r.raw_sign.ops_per_sec,
            r.service_sign.ops_per_sec,
            r.service_unwrap.ops_per_sec,
            r.rss_kib as f64 / 1024.0,
            r.rss_idle_kib as f64 / 1024.0
        );
    }
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
        println!(
            "  service sign at {} objects vs {}: {:.2} (target >= 0.90)",
            last.objects,
            first.objects,
            ratio(
                last.service_sign.ops_per_sec,
                first.service_sign.ops_per_sec
            )
        );
        println!(
            "  service unwrap at {} objects vs {}: {:.2} (target >= 0.90)",
            last.objects,
            first.objects,
            ratio(
                last.service_unwrap.ops_per_sec,
                first.service_unwrap.ops_per_sec
            )
        );
        println!(
            "  service RSS at {} objects: {:.1} MiB (target < 64)",
            last.objects,
            last.rss_kib as f64 / 1024.0
        );
    }
    list_timing(config, kms_bin)
}

/// `kms key list --json` (and `--owner`) over 100,000 inventory rows inserted directly into the
/// inventory's `keys` table (a bench-only shortcut: rows without versions, never used).
fn list_timing(config: &Config, kms_bin: &Path) -> Res<()> {
    const ROWS: usize = 100_000;
    {
        let mut db = rusqlite::Connection::open(&config.inventory_path)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        let tx = db.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO keys (id, name, key_type, owner, classification, usage, purpose,
                     rotate_every_secs, created_by, created_at, updated_at)
                 VALUES (?1, ?2, 'aes-256', ?3, 'restricted', 'encrypt,decrypt', 'bench row',
                     7776000, 'bench', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            )?;
            for i in 0..ROWS {
                stmt.execute(rusqlite::params![
                    format!("bench-row-{i}"),
                    format!("bench-row-{i:06}"),
                    format!("team-{}", i % 100),
                ])?;
            }
        }
        tx.commit()?;
    }
    let time = |args: &[&str]| -> Res<f64> {
        let t = Instant::now();
        let o = std::process::Command::new(kms_bin)
            .env("KMS_AS", "bench")
            .args(args)
            .output()?;
        if !o.status.success() {
            return Err(format!(
                "kms {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            )
            .into());
        }
        Ok(t.elapsed().as_secs_f64())
    };
    // The floor: a command that initialises the module and reads token info, and nothing else.
    let floor = time(&["token", "list"])?;
    let all = time(&["key", "list", "--json"])?;
    let owner = time(&["key", "list", "--json", "--owner", "team-7"])?;
    println!(
        "  kms key list --json over {ROWS} inventory rows: {all:.3} s (target < 0.5); --owner team-7 (1,000 rows): {:.1} ms (target < 50)",
        owner * 1e3
    );
    println!(
        "  kms token list (module initialised, token info only, no login, no search): {:.1} ms",
        floor * 1e3
    );
    Ok(())
}
