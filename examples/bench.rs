//! `scripts/bench`: the raw speed of the token, and the same operations through the real service
//! (`kms serve`, mutual TLS, keep-alive connections) driven by a Rust load client.
//!
//! Environment (set by scripts/bench): KMS_CONFIG (throwaway tokens), KMS_BIN (the kms binary),
//! KMS_BENCH_PKI (dev PKI with a `bench-app` client certificate).
//! Arguments: [--seconds S] [--concurrency 1,2,4,8,16]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kms::client::{tls_config, Connection};
use kms::config::Config;
use kms::engine::{Caller, CreateKey, Engine, NewGrantRequest, NewPrincipal};
use kms::model::{Classification, KeyType, Role};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, Copy)]
struct Stats {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    n: usize,
    errors: usize,
}

fn stats(mut lat: Vec<Duration>, elapsed: Duration, errors: usize) -> Stats {
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len().max(1) as f64 - 1.0) * p).round() as usize;
        lat.get(i).copied().unwrap_or_default().as_secs_f64() * 1e3
    };
    Stats {
        ops_per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        n: lat.len(),
        errors,
    }
}

fn row(name: &str, conc: usize, s: Stats, raw: Option<f64>) {
    let ratio = raw
        .map(|r| format!("{:>6.2}", s.ops_per_sec / r))
        .unwrap_or_else(|| "     -".into());
    println!(
        "| {name:<34} | {conc:>4} | {:>9.1} | {:>8.3} | {:>8.3} | {ratio} | {:>6} | {:>3} |",
        s.ops_per_sec, s.p50_ms, s.p99_ms, s.n, s.errors
    );
}

/// `op` from `threads` OS threads for `secs`.
fn run_threads(threads: usize, secs: f64, op: &(dyn Fn() -> Res<()> + Sync)) -> Res<Stats> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let results: Vec<Res<Vec<Duration>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut l = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        op()?;
                        l.push(t.elapsed());
                    }
                    Ok(l)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut lat = Vec::new();
    for r in results {
        lat.extend(r?);
    }
    Ok(stats(lat, start.elapsed(), 0))
}

/// `conc` keep-alive connections, each sending `body` to `path` in a loop for `secs`.
async fn run_http(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    conc: usize,
    secs: f64,
    path: String,
    body: serde_json::Value,
) -> Res<Stats> {
    let mut conns = Vec::new();
    for _ in 0..conc {
        conns.push(Connection::connect(addr, Arc::clone(&tls)).await?);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for mut c in conns {
        let (path, body) = (path.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                match c.request("POST", &path, Some(&body), None).await {
                    Ok(r) if r.status == 200 => lat.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    Ok(stats(lat, start.elapsed(), errors))
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = arg(&args, "--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let concurrency: Vec<usize> = arg(&args, "--concurrency")
        .unwrap_or_else(|| "1,2,4,8,16".into())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let config = Config::load(&Config::locate(None)?)?;
    let pki = PathBuf::from(std::env::var("KMS_BENCH_PKI")?);
    let kms_bin = PathBuf::from(std::env::var("KMS_BIN")?);

    // --- setup through the engine, as an officer would ---
    let engine = Engine::open(config.clone())?;
    let officer = Caller::local(Some("bench".into()), Some("scripts/bench".into()));
    let mut ec = CreateKey::new(
        "bench-ec",
        KeyType::EcP384,
        "bench",
        Classification::Public,
        "sign,verify".parse()?,
    );
    ec.purpose = "benchmark".into();
    let mut dek = CreateKey::new(
        "bench-kek",
        KeyType::Aes256,
        "bench",
        Classification::Public,
        "wrap,unwrap".parse()?,
    );
    dek.purpose = "benchmark".into();
    engine.add_principal(
        &officer,
        NewPrincipal {
            name: "bench".into(),
            role: Role::SecurityOfficer,
            cert_pem: None,
            approval_key: None,
            allowed_networks: Vec::new(),
        },
    )?;
    let ec = engine.create_key(&officer, ec)?;
    let kek = engine.create_key(&officer, dek)?;
    let app_pem = std::fs::read(pki.join("client-bench-app.pem"))?;
    engine.add_principal(
        &officer,
        NewPrincipal {
            name: "bench-app".into(),
            role: Role::Application,
            cert_pem: Some(app_pem.clone()),
            approval_key: None,
            allowed_networks: Vec::new(),
        },
    )?;
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).date();
    for (key, ops) in [("bench-ec", "sign"), ("bench-kek", "wrap,unwrap")] {
        engine.add_grant(
            &officer,
            NewGrantRequest {
                principal: "bench-app".into(),
                key: key.into(),
                ops: ops.parse()?,
                until,
                ticket: "BENCH".into(),
                justification: "benchmark".into(),
            },
        )?;
    }
    let app = engine.identify(
        &kms::identity::CertIdentity::from_pem(&app_pem)?,
        "bench",
        None,
    )?;
    let issued = engine.data_key(&app, "bench-kek")?;
    let wrapped_envelope = issued.wrapped.clone();
    let wrapped_raw = wrapped_envelope[26..].to_vec();

    // --- raw token, in process ---
    let hsm = kms::hsm::open_for_benchmark(&config);
    let token = hsm.token(&config.key_token)?;
    let ec_id = ec.versions[0].object_id.clone();
    let kek_id = kek.versions[0].object_id.clone();
    let digest = [7u8; 48];
    println!("| operation                          | conc |     ops/s |  p50 ms  |  p99 ms  | svc/raw |      n | err |");
    println!("|------------------------------------|------|-----------|----------|----------|--------|--------|-----|");
    let mut raw_sign = Vec::new();
    let mut raw_unwrap = Vec::new();
    for t in [1, 2] {
        let s = run_threads(t, secs, &|| {
            Ok(token.sign_ecdsa_p384(&ec_id, &digest).map(drop)?)
        })?;
        row("raw PKCS#11 ECDSA P-384 sign", t, s, None);
        raw_sign.push(s);
    }
    for t in [1, 2] {
        let s = run_threads(t, secs, &|| {
            Ok(token.unwrap_data_key(&kek_id, &wrapped_raw).map(drop)?)
        })?;
        row("raw PKCS#11 AES-KWP unwrap", t, s, None);
        raw_unwrap.push(s);
    }
    // --- the engine in process: authorize, token, inventory, audit (no TLS, no HTTP) ---
    for t in [1, 2] {
        let s = run_threads(t, secs, &|| {
            Ok(engine.sign(&app, "bench-ec", &[0x5a; 256]).map(drop)?)
        })?;
        row(
            "engine sign (in process)",
            t,
            s,
            Some(raw_sign[1].ops_per_sec),
        );
    }
    for t in [1, 2] {
        let s = run_threads(t, secs, &|| {
            Ok(engine
                .unwrap(&app, "bench-kek", &wrapped_envelope)
                .map(drop)?)
        })?;
        let best = raw_unwrap.iter().map(|s| s.ops_per_sec).fold(0.0, f64::max);
        row("engine unwrap (in process)", t, s, Some(best));
    }
    drop(token);
    drop(hsm);
    drop(engine);

    // --- the real service in its own process ---
    let mut child = std::process::Command::new(&kms_bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("https://")
        .next()
        .ok_or("no address")?
        .parse()?;
    let tls = tls_config(
        &pki.join("ca.pem"),
        Some((
            &pki.join("client-bench-app.pem"),
            &pki.join("client-bench-app-key.pem"),
        )),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let msg = base64::engine::general_purpose::STANDARD.encode([0x5a; 256]);
    let wrapped_b64 = base64::engine::general_purpose::STANDARD.encode(&wrapped_envelope);
    let raw_sign_2 = raw_sign[1].ops_per_sec;
    let raw_unwrap_best = raw_unwrap.iter().map(|s| s.ops_per_sec).fold(0.0, f64::max);
    let mut best_sign: Option<Stats> = None;
    let mut sign_p99: Vec<(usize, f64)> = Vec::new();
    let mut best_unwrap: Option<Stats> = None;
    let result: Res<()> = rt.block_on(async {
        for &c in &concurrency {
            let s = run_http(
                addr,
                Arc::clone(&tls),
                c,
                secs,
                "/v1/keys/bench-ec/sign".into(),
                serde_json::json!({ "message": msg }),
            )
            .await?;
            row("service sign (mTLS, keep-alive)", c, s, Some(raw_sign_2));
            sign_p99.push((c, s.p99_ms));
            if best_sign.is_none_or(|b| s.ops_per_sec > b.ops_per_sec) {
                best_sign = Some(s);
            }
        }
        for &c in &concurrency {
            let s = run_http(
                addr,
                Arc::clone(&tls),
                c,
                secs,
                "/v1/keys/bench-kek/unwrap".into(),
                serde_json::json!({ "wrapped": wrapped_b64 }),
            )
            .await?;
            row(
                "service unwrap (mTLS, keep-alive)",
                c,
                s,
                Some(raw_unwrap_best),
            );
            if best_unwrap.is_none_or(|b| s.ops_per_sec > b.ops_per_sec) {
                best_unwrap = Some(s);
            }
        }
        Ok(())
    });
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    result?;

    let (bs, bu) = (
        best_sign.ok_or("no sign run")?,
        best_unwrap.ok_or("no unwrap run")?,
    );
    println!();
    println!("targets (2 cores):");
    println!(
        "  service sign  >= 0.8 x raw 2-thread sign : {:.1} / {:.1} = {:.2}  {}",
        bs.ops_per_sec,
        raw_sign_2,
        bs.ops_per_sec / raw_sign_2,
        verdict(bs.ops_per_sec / raw_sign_2 >= 0.8)
    );
    println!(
        "  service unwrap >= 0.5 x raw unwrap       : {:.1} / {:.1} = {:.2}  {}",
        bu.ops_per_sec,
        raw_unwrap_best,
        bu.ops_per_sec / raw_unwrap_best,
        verdict(bu.ops_per_sec / raw_unwrap_best >= 0.5)
    );
    println!(
        "  service p99 sign < 4 x raw single op     : {:.3} ms vs 4 x {:.3} ms = {:.3} ms  {}",
        bs.p99_ms,
        raw_sign[0].p50_ms,
        4.0 * raw_sign[0].p50_ms,
        verdict(bs.p99_ms < 4.0 * raw_sign[0].p50_ms)
    );
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
