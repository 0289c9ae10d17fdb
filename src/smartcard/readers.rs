//! Readers and cards as PC/SC sees them, read WITHOUT connecting: an empty reader is skipped
//! silently (never connected to, so never an error), and a card is opened by probing only the
//! readers that hold one — each probe on its own thread with its own PC/SC context and a
//! deadline, so one frozen or busy card never delays finding another.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use yubikey::YubiKey;

use super::error::{CardError, Unreachable};
use super::stuck::{self, Stuck};
use super::CardInfo;
use super::PROBE_DEADLINE;

/// A reader's state now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReaderNow {
    /// PC/SC no longer lists the reader (unplugged).
    Gone,
    /// The reader is there and empty.
    Empty,
    /// A card is in the reader; `exclusive` when another program holds it exclusively.
    Card { exclusive: bool },
}

/// Every reader PC/SC lists, with its state, read with a zero timeout (no connection, no
/// waiting on any card).
pub(crate) fn readers() -> Result<Vec<(String, ReaderNow)>, CardError> {
    // A reader unplugged between the listing and the state read fails the read: once more.
    match readers_once() {
        Err(CardError::Card(_)) => readers_once(),
        other => other,
    }
}

fn readers_once() -> Result<Vec<(String, ReaderNow)>, CardError> {
    let ctx = pcsc::Context::establish(pcsc::Scope::System).map_err(pcsc_error)?;
    let names = match ctx.list_readers_owned() {
        Ok(n) => n,
        Err(pcsc::Error::NoReadersAvailable) => return Ok(Vec::new()),
        Err(e) => return Err(pcsc_error(e)),
    };
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut states: Vec<pcsc::ReaderState> = names
        .iter()
        .map(|n| pcsc::ReaderState::new(n.clone(), pcsc::State::UNAWARE))
        .collect();
    match ctx.get_status_change(Duration::ZERO, &mut states) {
        Ok(()) | Err(pcsc::Error::Timeout) => {}
        Err(e) => return Err(pcsc_error(e)),
    }
    Ok(states
        .iter()
        .map(|s| {
            let name = s.name().to_string_lossy().into_owned();
            let st = s.event_state();
            let now = if st.intersects(pcsc::State::UNKNOWN | pcsc::State::UNAVAILABLE) {
                ReaderNow::Gone
            } else if st.contains(pcsc::State::PRESENT) {
                ReaderNow::Card {
                    exclusive: st.contains(pcsc::State::EXCLUSIVE),
                }
            } else {
                ReaderNow::Empty
            };
            (name, now)
        })
        .collect())
}

/// The state of one reader now.
pub(crate) fn reader_now(reader: &str) -> ReaderNow {
    match readers() {
        Ok(all) => all
            .into_iter()
            .find(|(n, _)| n == reader)
            .map(|(_, s)| s)
            .unwrap_or(ReaderNow::Gone),
        // PC/SC itself is gone: so is the reader, as far as kms can tell.
        Err(_) => ReaderNow::Gone,
    }
}

fn pcsc_error(e: pcsc::Error) -> CardError {
    match e {
        pcsc::Error::NoService | pcsc::Error::ServiceStopped | pcsc::Error::NoReadersAvailable => {
            CardError::NoReader
        }
        other => CardError::Card(format!("PC/SC: {other}")),
    }
}

/// What probing the readers found.
pub(crate) struct Probed {
    pub cards: Vec<CardInfo>,
    pub unreachable: Vec<Unreachable>,
    /// The card asked for, connected (only when one was asked for and answered).
    pub opened: Option<YubiKey>,
    /// Every card that answered, connected (only with `connect_all`).
    pub connected: Vec<YubiKey>,
}

enum ProbeResult {
    Card(CardInfo, Option<YubiKey>),
    Busy(String),
    /// Not a PIV card, or it failed to answer SELECT: not ours, skipped.
    Other(String, yubikey::Error),
}

/// Probe every reader holding a card, in parallel, for up to [`PROBE_DEADLINE`]. With
/// `want = Some(serial)` it returns as soon as that card answers (connected, in `opened`); with
/// `want = None` it waits for every reader (or the deadline), keeping the connections only with
/// `connect_all`.
pub(crate) fn probe(want: Option<u32>, connect_all: bool) -> Result<Probed, CardError> {
    let started = Instant::now();
    let all = readers()?;
    if all.is_empty() {
        return Err(CardError::NoReader);
    }
    let (tx, rx) = mpsc::channel::<(String, ProbeResult)>();
    let mut pending: Vec<(String, std::sync::Arc<Stuck>)> = Vec::new();
    let mut unreachable = Vec::new();
    for (name, state) in all {
        match state {
            ReaderNow::Gone | ReaderNow::Empty => continue,
            ReaderNow::Card { exclusive: true } => {
                tracing::debug!(reader = %name, "reader held exclusively by another program");
                unreachable.push(Unreachable {
                    reader: name,
                    busy: true,
                });
                continue;
            }
            ReaderNow::Card { exclusive: false } => {}
        }
        // A reader whose last probe or operation (in this process) is still waiting is not
        // probed again: that would only add another waiting thread.
        if let Some(s) = stuck::stuck_reader(&name) {
            tracing::debug!(reader = %name, since = ?s.since.elapsed(), "reader still stuck; not probed");
            unreachable.push(Unreachable {
                reader: name,
                busy: false,
            });
            continue;
        }
        let flag = Stuck::new("finding the card");
        pending.push((name.clone(), flag.clone()));
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("kms-card-probe".into())
            .spawn(move || {
                let result = probe_one(&name, want, connect_all);
                stuck::finished(&flag);
                // The caller may have stopped waiting; a card nobody wants is dropped here
                // (disconnected, left as it was).
                let _ = tx.send((name, result));
            });
        if let Err(e) = spawned {
            return Err(CardError::Card(format!("could not start a thread: {e}")));
        }
    }
    drop(tx);
    let mut cards = Vec::new();
    let mut connected = Vec::new();
    let deadline = started + PROBE_DEADLINE;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((name, result)) => {
                pending.retain(|(n, _)| *n != name);
                match result {
                    ProbeResult::Card(info, yk) => {
                        tracing::debug!(reader = %info.reader, serial = info.serial, elapsed = ?started.elapsed(), "card answered");
                        let wanted = want == Some(info.serial);
                        cards.push(info);
                        match yk {
                            Some(yk) if wanted => {
                                mark_later(pending, deadline);
                                return Ok(Probed {
                                    cards,
                                    unreachable,
                                    opened: Some(yk),
                                    connected,
                                });
                            }
                            Some(yk) => connected.push(yk),
                            None => {}
                        }
                    }
                    ProbeResult::Busy(reader) => {
                        tracing::debug!(%reader, "reader held exclusively by another program");
                        unreachable.push(Unreachable { reader, busy: true });
                    }
                    ProbeResult::Other(reader, e) => {
                        tracing::debug!(%reader, error = %e, "not a usable PIV card; skipped");
                    }
                }
            }
            Err(_) => break,
        }
    }
    // Whatever did not answer by the deadline is reported, and remembered as stuck until its
    // probe returns, so that later calls in this process do not wait on it again.
    for (reader, flag) in pending {
        tracing::debug!(%reader, "card did not answer within the probe deadline");
        stuck::mark_stuck(&reader, None, &flag);
        unreachable.push(Unreachable {
            reader,
            busy: false,
        });
    }
    cards.sort_by(|a, b| a.reader.cmp(&b.reader));
    Ok(Probed {
        cards,
        unreachable,
        opened: None,
        connected,
    })
}

/// Probes still running when the card asked for answered: any still running at the deadline is
/// remembered as stuck (as if waited for), so that a long-lived process (`kms serve`) does not
/// start another probe on a frozen reader at every call.
fn mark_later(pending: Vec<(String, std::sync::Arc<Stuck>)>, deadline: Instant) {
    if pending.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("kms-card-probe-reaper".into())
        .spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            for (reader, flag) in pending {
                stuck::mark_stuck(&reader, None, &flag);
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "could not start the probe reaper");
    }
}

fn probe_one(reader: &str, want: Option<u32>, connect_all: bool) -> ProbeResult {
    let open = || {
        let mut ctx = yubikey::reader::Context::open()?;
        for r in ctx.iter()? {
            if r.name() == reader {
                return r.open();
            }
        }
        Err(yubikey::Error::NotFound)
    };
    // Another program's disconnect resets the card (the PC/SC default), which fails a read in
    // progress: a failed probe is tried again while the card is still in the reader (the
    // caller's deadline bounds it all).
    let mut opened = open();
    for _ in 0..3 {
        let retry = matches!(
            &opened,
            Err(e) if !matches!(e, yubikey::Error::PcscError { inner: Some(pcsc::Error::SharingViolation) })
        ) && matches!(reader_now(reader), ReaderNow::Card { .. });
        if !retry {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        opened = open();
    }
    match opened {
        Ok(yk) => {
            let info = CardInfo {
                serial: yk.serial().0,
                version: yk.version().to_string(),
                reader: reader.to_owned(),
            };
            if want == Some(info.serial) || connect_all {
                ProbeResult::Card(info, Some(yk))
            } else {
                // Not the card asked for: leave it as it was (no reset).
                let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
                ProbeResult::Card(info, None)
            }
        }
        Err(yubikey::Error::PcscError {
            inner: Some(pcsc::Error::SharingViolation),
        }) => ProbeResult::Busy(reader.to_owned()),
        Err(e) => ProbeResult::Other(reader.to_owned(), e),
    }
}
