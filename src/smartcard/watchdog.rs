//! Every card operation runs on a worker thread; the caller waits for it step by step, each step
//! with a time budget, and on expiry answers with what is true (removed, reader gone, not
//! answering) instead of waiting on a frozen card. A worker still waiting on its card is
//! remembered (per reader, and per serial once known) so that later calls to the same card in
//! this process fail fast instead of piling up threads, while calls to other cards go on.
//!
//! After any failure the reader's state is read again (no connection) to say what happened: a
//! card pulled mid-operation is reported as removed — never as "the card refused the management
//! key" or a bare PC/SC code.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use yubikey::YubiKey;

use super::error::CardError;
use super::readers::{self, ReaderNow};
use super::stuck::{finished, mark_stuck, stuck_serial, Stuck};
use super::PROBE_DEADLINE;

/// Budget of an ordinary step (a few APDUs: read an object, verify the PIN, sign a digest).
pub(crate) const STEP: Duration = Duration::from_millis(1500);
/// Budget of on-card key generation: an EC P-384 key takes well under a second on a YubiKey,
/// but cards differ (RSA takes up to ~10 s), and an interrupted generation is the one step
/// whose outcome is uncertain, so it gets a longer budget.
pub(crate) const KEYGEN: Duration = Duration::from_secs(15);
/// Finding the card: the probe has its own deadline; this is only a backstop.
const FIND: Duration = Duration::from_millis(PROBE_DEADLINE.as_millis() as u64 + 1000);

/// What is true of the card when nothing was written to it yet.
pub(crate) const UNCHANGED: &str = "nothing was changed on it";

enum Event {
    Step(&'static str, Duration),
    Opened { reader: String, serial: u32 },
    Changed(&'static str),
    Done,
}

/// The worker's side: it announces each step (and its budget) before taking it.
pub(crate) struct Watch {
    op: &'static str,
    tx: mpsc::Sender<Event>,
}

impl Watch {
    /// The next step, with the ordinary budget.
    pub(crate) fn step(&self, what: &'static str) {
        self.step_for(what, STEP);
    }

    pub(crate) fn step_for(&self, what: &'static str, budget: Duration) {
        tracing::debug!(op = self.op, step = what, "card step");
        let _ = self.tx.send(Event::Step(what, budget));
    }

    /// From now on the card has been changed: what an interruption leaves behind.
    pub(crate) fn changed(&self, consequence: &'static str) {
        let _ = self.tx.send(Event::Changed(consequence));
    }

    /// Find and connect to the card (`serial`, or the only one present).
    pub(crate) fn open(&self, serial: Option<u32>) -> Result<YubiKey, CardError> {
        self.step_for("finding the card", FIND);
        let yk = super::open(serial, self.op)?;
        let _ = self.tx.send(Event::Opened {
            reader: yk.name().to_owned(),
            serial: yk.serial().0,
        });
        Ok(yk)
    }
}

/// Run card operation `op` (e.g. "card status") on a worker thread, waiting step by step.
pub(crate) fn run<T, F>(op: &'static str, serial: Option<u32>, f: F) -> Result<T, CardError>
where
    T: Send + 'static,
    F: FnOnce(&Watch) -> Result<T, CardError> + Send + 'static,
{
    if let Some(s) = serial {
        if let Some((reader, st)) = stuck_serial(s) {
            return Err(CardError::StillStuck {
                serial: Some(s),
                reader,
                op: st.what,
                since: st.since.elapsed(),
            });
        }
    }
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    let out: Arc<Mutex<Option<Result<T, CardError>>>> = Arc::new(Mutex::new(None));
    let flag = Stuck::new(op);
    {
        let (out, flag, tx) = (out.clone(), flag.clone(), tx.clone());
        std::thread::Builder::new()
            .name("kms-card".into())
            .spawn(move || {
                let watch = Watch { op, tx };
                let r = f(&watch);
                // Dropping the card handle here (end of `f`) disconnects it; then the result.
                if let Ok(mut slot) = out.lock() {
                    *slot = Some(r);
                }
                finished(&flag);
                let _ = watch.tx.send(Event::Done);
            })
            .map_err(|e| CardError::Card(format!("could not start a thread: {e}")))?;
    }
    drop(tx);
    let mut step = "starting";
    let mut budget = STEP;
    let mut reader: Option<String> = None;
    let mut card = serial;
    let mut consequence = UNCHANGED;
    loop {
        match rx.recv_timeout(budget) {
            Ok(Event::Step(what, b)) => {
                step = what;
                budget = b;
            }
            Ok(Event::Opened { reader: r, serial }) => {
                reader = Some(r);
                card = Some(serial);
            }
            Ok(Event::Changed(c)) => consequence = c,
            Ok(Event::Done) => {
                let r = out
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_else(|| {
                        Err(CardError::Card("the card worker gave no result".into()))
                    });
                return r.map_err(|e| {
                    let e = diagnose(e, op, step, reader.as_deref(), card, consequence);
                    tracing::debug!(op, step, elapsed = ?started.elapsed(), error = %e, "card operation failed");
                    e
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                let reader = reader.unwrap_or_else(|| "?".into());
                mark_stuck(&reader, card, &flag);
                tracing::debug!(op, step, %reader, elapsed = ?started.elapsed(), "card did not answer in time");
                return Err(match readers::reader_now(&reader) {
                    ReaderNow::Gone if reader != "?" => CardError::ReaderGone {
                        serial: card,
                        reader,
                        op,
                        step,
                        consequence,
                    },
                    ReaderNow::Empty => CardError::Removed {
                        serial: card,
                        op,
                        step,
                        consequence,
                    },
                    _ => CardError::NotAnswering {
                        serial: card,
                        reader,
                        op,
                        step,
                        waited: budget,
                        consequence,
                    },
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(CardError::Card(format!(
                    "the card worker stopped unexpectedly during {op} ({step})"
                )))
            }
        }
    }
}

/// Say what happened after a failed step: the error stands when the card is still in its
/// reader; otherwise the removal (or the reader's loss) is the answer.
fn diagnose(
    e: CardError,
    op: &'static str,
    step: &'static str,
    reader: Option<&str>,
    serial: Option<u32>,
    consequence: &'static str,
) -> CardError {
    if e.is_semantic() {
        return e;
    }
    let Some(reader) = reader else {
        return e;
    };
    match settled_state(reader) {
        ReaderNow::Gone => CardError::ReaderGone {
            serial,
            reader: reader.to_owned(),
            op,
            step,
            consequence,
        },
        ReaderNow::Empty => CardError::Removed {
            serial,
            op,
            step,
            consequence,
        },
        ReaderNow::Card { exclusive: true } => CardError::Busy {
            serial,
            reader: reader.to_owned(),
        },
        ReaderNow::Card { exclusive: false } => match e {
            CardError::Contended {
                sharing_violation: true,
            } => CardError::Busy {
                serial,
                reader: reader.to_owned(),
            },
            CardError::Contended { .. } => CardError::Interrupted {
                serial,
                op,
                step,
                consequence,
            },
            other => other,
        },
    }
}

/// The reader's state, allowing PC/SC a moment to notice a removal (pcscd polls card presence
/// a few times a second; a transmit can fail before the state says so).
fn settled_state(reader: &str) -> ReaderNow {
    let now = readers::reader_now(reader);
    if !matches!(now, ReaderNow::Card { .. }) {
        return now;
    }
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let now = readers::reader_now(reader);
        if !matches!(now, ReaderNow::Card { .. }) {
            return now;
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No card needed: a worker that never reports back stands for a frozen card.
    #[test]
    fn a_stuck_worker_fails_later_calls_to_its_card_fast_and_no_others() {
        let stuck_card = Some(4_000_000_001);
        let (release, released) = mpsc::channel::<()>();
        let started = Instant::now();
        let r = run("test operation", stuck_card, move |w| {
            w.step_for("waiting on the card", Duration::from_millis(200));
            let _ = released.recv();
            Ok(())
        });
        assert!(
            matches!(
                r,
                Err(CardError::NotAnswering {
                    step: "waiting on the card",
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // The same card again: at once, without another waiting thread.
        let again = Instant::now();
        let r = run("test operation", stuck_card, |_| Ok(()));
        assert!(matches!(r, Err(CardError::StillStuck { .. })), "{r:?}");
        assert!(again.elapsed() < Duration::from_millis(100));
        // Another card is not affected.
        assert_eq!(
            run("test operation", Some(4_000_000_002), |_| Ok(7)).ok(),
            Some(7)
        );
        // Once the worker returns, its card is usable again.
        let _ = release.send(());
        let until = Instant::now() + Duration::from_secs(2);
        while run("test operation", stuck_card, |_| Ok(())).is_err() {
            assert!(Instant::now() < until, "the card stayed marked as stuck");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A semantic error is never re-diagnosed (no reader is read for it).
    #[test]
    fn a_wrong_pin_stays_a_wrong_pin() {
        let e = diagnose(
            CardError::WrongPin { tries_left: 2 },
            "test operation",
            "verifying the PIN",
            Some("no such reader"),
            Some(1),
            UNCHANGED,
        );
        assert!(matches!(e, CardError::WrongPin { tries_left: 2 }), "{e:?}");
    }
}
