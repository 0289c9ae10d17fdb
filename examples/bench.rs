//! `scripts/bench`: throughput and latency of the engine (authorize -> token -> audit) and, for
//! comparison, of the raw token calls underneath it, on whatever tokens `KMS_CONFIG` names.
//!
//! Usage: bench [--seconds S] [--threads N]   (KMS_CONFIG must point at a throwaway config)

use std::time::{Duration, Instant};

use kms::config::Config;
use kms::engine::{Caller, CreateKey, Engine};
use kms::model::{Classification, KeyType};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Stats {
    ops: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
}

impl Stats {
    fn report(&mut self, name: &str, threads: usize) {
        self.lat.sort();
        let pct = |p: f64| {
            let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
            self.lat.get(i).copied().unwrap_or_default()
        };
        println!(
            "{name:<38} {threads:>3} thr {:>9.1} ops/s   p50 {:>8.3} ms   p99 {:>8.3} ms   (n={})",
            self.ops as f64 / self.elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            self.ops
        );
    }
}

/// Run `op` from `threads` threads for `secs` seconds.
fn run(threads: usize, secs: f64, op: &(dyn Fn() -> Res<()> + Sync)) -> Res<Stats> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let lats: Vec<Res<Vec<Duration>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Res<Vec<Duration>> {
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
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("bench thread panicked".into()))
            })
            .collect()
    });
    let mut lat = Vec::new();
    for l in lats {
        lat.extend(l?);
    }
    Ok(Stats {
        ops: lat.len(),
        elapsed: start.elapsed(),
        lat,
    })
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str, default: f64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = arg("--seconds", 3.0);
    let threads = arg("--threads", 4.0) as usize;
    let path = Config::locate(None)?;
    let config = Config::load(&path)?;
    let key_token = config.key_token.clone();
    let engine = Engine::open(config.clone())?;
    let officer = Caller::local(Some("bench".into()), Some("scripts/bench".into()));

    let suffix = std::process::id();
    let create = |name: &str, key_type: KeyType, usage: &str| -> Res<()> {
        let mut req = CreateKey::new(
            name,
            key_type,
            "bench",
            Classification::Public,
            usage.parse()?,
        );
        req.purpose = "benchmark".into();
        engine.create_key(&officer, req)?;
        Ok(())
    };
    let ec = format!("bench-ec-{suffix}");
    let rsa = format!("bench-rsa-{suffix}");
    let aes = format!("bench-aes-{suffix}");

    println!("# kms bench: {secs} s per row, config {}", path.display());
    create(&ec, KeyType::EcP384, "sign,verify")?;
    create(&rsa, KeyType::Rsa3072, "sign,verify")?;
    create(&aes, KeyType::Aes256, "encrypt,decrypt")?;
    let app = Caller::local(Some("bench-app".into()), None);
    let msg = vec![0x5au8; 1024];

    let ec_key = engine.show_key(&officer, &ec)?;
    let rsa_key = engine.show_key(&officer, &rsa)?;
    let ec_id = ec_key.versions[0].object_id.clone();
    let rsa_id = rsa_key.versions[0].object_id.clone();
    let hsm = kms::hsm::open_for_benchmark(&config);
    let token = hsm.token(&key_token)?;
    let digest48 = [7u8; 48];
    let digest32 = [7u8; 32];

    for thr in [1, threads] {
        run(thr, secs, &|| {
            Ok(token.sign_ecdsa_p384(&ec_id, &digest48).map(drop)?)
        })?
        .report("raw token  ECDSA P-384 sign", thr);
        run(thr, secs, &|| Ok(engine.sign(&app, &ec, &msg).map(drop)?))?
            .report("engine     ECDSA P-384 sign 1 KiB", thr);
    }
    for thr in [1, threads] {
        run(thr, secs, &|| {
            Ok(token.sign_rsa_pss_sha256(&rsa_id, &digest32).map(drop)?)
        })?
        .report("raw token  RSA-3072 PSS sign", thr);
        run(thr, secs, &|| {
            Ok(engine.sign(&app, &rsa, &msg).map(drop)?)
        })?
        .report("engine     RSA-3072 PSS sign 1 KiB", thr);
    }
    let sig = engine.sign(&app, &ec, &msg)?.signature;
    run(1, secs, &|| {
        Ok(engine.verify(&app, &ec, &msg, &sig).map(drop)?)
    })?
    .report("engine     ECDSA P-384 verify (software)", 1);
    for thr in [1, threads] {
        run(thr, secs, &|| {
            Ok(engine.encrypt(&app, &aes, &msg, b"aad").map(drop)?)
        })?
        .report("engine     AES-256-GCM encrypt 1 KiB", thr);
    }
    // Key creation: sequential, one thread (each creates a new key on the token).
    let t = Instant::now();
    let mut lat = Vec::new();
    let mut i = 0u32;
    while t.elapsed().as_secs_f64() < secs {
        i += 1;
        let s0 = Instant::now();
        create(
            &format!("bench-create-{suffix}-{i}"),
            KeyType::EcP384,
            "sign,verify",
        )?;
        lat.push(s0.elapsed());
    }
    Stats {
        ops: lat.len(),
        elapsed: t.elapsed(),
        lat,
    }
    .report("engine key create ec-p384", 1);

    Ok(())
}
