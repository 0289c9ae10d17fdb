//! A virtual card of a test's own, in an empty reader slot of the private pcscd
//! (`VPIV_SPARE_PORTS`, emulator `VPIV_BIN`), with its state in a temporary directory: for tests
//! that ruin a card (a blocked PUK) or need one nobody else touches. Stopped (killed, by pid)
//! when dropped.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// Spare ports handed out so far by this test binary (each own card gets its own).
static NEXT_SPARE: AtomicUsize = AtomicUsize::new(0);

pub struct OwnCard {
    child: Child,
    pub serial: String,
    _dir: tempfile::TempDir,
}

impl OwnCard {
    /// Starts a new card (factory PIN, PUK and management key) and waits until `env`'s kms
    /// lists it.
    pub fn start(env: &Env) -> Res<OwnCard> {
        let ports = std::env::var("VPIV_SPARE_PORTS").unwrap_or_default();
        let i = NEXT_SPARE.fetch_add(1, Ordering::SeqCst);
        let port = ports.split_whitespace().nth(i).ok_or_else(|| {
            format!("no spare reader slot {i} (VPIV_SPARE_PORTS='{ports}'): start the cards with VPIV_SPARE_SLOTS=4")
        })?;
        let bin =
            std::env::var("VPIV_BIN").map_err(|_| "VPIV_BIN is not set (vpiv_start sets it)")?;
        let dir = tempfile::tempdir()?;
        let serial = (70_000_000 + std::process::id() % 1_000_000 * 10 + i as u32).to_string();
        let child = Command::new(bin)
            .arg(dir.path())
            .args(["--port", port, "--serial", &serial])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let card = OwnCard {
            child,
            serial,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            let o = env.ok(&["card", "list", "--json"])?;
            let cards: Value = serde_json::from_slice(&o.stdout)?;
            if cards.as_array().is_some_and(|a| {
                a.iter().any(|c| {
                    c["serial"].as_u64().map(|s| s.to_string()) == Some(card.serial.clone())
                })
            }) {
                return Ok(card);
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!("own card {} never showed up: {cards}", card.serial).into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for OwnCard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
