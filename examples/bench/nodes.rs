//! `scripts/bench --nodes`: sign and unwrap through two `kms serve` nodes sharing one
//! PostgreSQL inventory, against the one node on SQLite measured before (issue 13). The bench's
//! SQLite inventory is moved with the real `kms inventory migrate`; both nodes use the same
//! token on this one machine, and the load client spreads its connections over both.

use std::path::Path;
use std::sync::Arc;

use super::{row, run_http_many, Res, Stats};

/// One node's config: the bench's, with the inventory on PostgreSQL and a `[node]`.
fn node_config(base: &str, url: &str, password: &Path, name: &str) -> String {
    let mut out = String::new();
    for line in base.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[inventory]" {
            out.push_str(&format!(
                "postgres = \"{url}\"\npassword = \"file:{}\"\n",
                password.display()
            ));
        }
    }
    out.push_str(&format!("\n[node]\nname = \"{name}\"\nlease_secs = 15\n"));
    out
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    config_path: &Path,
    kms_bin: &Path,
    tls: Arc<rustls::ClientConfig>,
    secs: f64,
    single: &[(usize, Stats, Stats)],
    sign_body: serde_json::Value,
    unwrap_body: serde_json::Value,
) -> Res<()> {
    let pg = std::path::PathBuf::from(
        std::env::var("KMS_BENCH_POSTGRES")
            .map_err(|_| "--nodes needs KMS_BENCH_POSTGRES (scripts/bench sets it)")?,
    );
    let url = std::fs::read_to_string(pg.join("url"))?.trim().to_owned();
    let password = pg.join("password");
    let o = std::process::Command::new(kms_bin)
        .env("KMS_AS", "bench")
        .env("KMS_CONFIG", config_path)
        .args(["inventory", "migrate", "--to", &url])
        .arg("--password")
        .arg(format!("file:{}", password.display()))
        .output()?;
    if !o.status.success() {
        return Err(format!(
            "kms inventory migrate: {}",
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    let base = std::fs::read_to_string(config_path)?;
    let dir = config_path.parent().ok_or("config has no directory")?;
    let mut nodes = Vec::new();
    for name in ["bench-n1", "bench-n2"] {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, node_config(&base, &url, &password, name))?;
        nodes.push(super::start_service_with(kms_bin, Some(&path))?);
    }
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|(_, a)| *a).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!();
    println!("two nodes on one PostgreSQL inventory (connections spread over both), vs one node on SQLite:");
    let result: Res<()> = rt.block_on(async {
        for (c, sign1, unwrap1) in single {
            let s = run_http_many(
                &addrs,
                Arc::clone(&tls),
                *c,
                secs,
                "/v1/keys/bench-ec/sign".into(),
                sign_body.clone(),
            )
            .await?;
            row("2 nodes, PostgreSQL: sign", *c, s, Some(sign1.ops_per_sec));
            let u = run_http_many(
                &addrs,
                Arc::clone(&tls),
                *c,
                secs,
                "/v1/keys/bench-kek/unwrap".into(),
                unwrap_body.clone(),
            )
            .await?;
            row(
                "2 nodes, PostgreSQL: unwrap",
                *c,
                u,
                Some(unwrap1.ops_per_sec),
            );
        }
        Ok(())
    });
    for (mut child, _) in nodes {
        super::stop_service(&mut child);
    }
    result?;
    println!("  (the svc/raw column here is: 2 nodes on PostgreSQL / 1 node on SQLite at the same concurrency)");
    Ok(())
}
