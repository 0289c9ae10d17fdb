//! Workers and reader probes whose caller gave up on them while they still wait on their card:
//! remembered for the whole process, so a later call to that card fails at once instead of
//! piling up threads, and calls to other cards are unaffected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A worker (or a reader probe) that may outlive its caller's patience.
pub(crate) struct Stuck {
    pub what: &'static str,
    pub since: Instant,
    finished: AtomicBool,
}

impl Stuck {
    pub(crate) fn new(what: &'static str) -> Arc<Stuck> {
        Arc::new(Stuck {
            what,
            since: Instant::now(),
            finished: AtomicBool::new(false),
        })
    }
}

struct Entry {
    reader: String,
    serial: Option<u32>,
    flag: Arc<Stuck>,
}

/// Workers and probes whose caller gave up on them while they still wait on their card.
/// Process-wide on purpose: the threads and the readers they block are the process's, whichever
/// engine started them.
static STUCK: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    STUCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remember `flag`'s worker as stuck on `reader` (unless it finished meanwhile).
pub(crate) fn mark_stuck(reader: &str, serial: Option<u32>, flag: &Arc<Stuck>) {
    let mut r = registry();
    if !flag.finished.load(Ordering::SeqCst) {
        r.push(Entry {
            reader: reader.to_owned(),
            serial,
            flag: flag.clone(),
        });
    }
}

/// The worker behind `flag` returned: its card answers again (or is gone).
pub(crate) fn finished(flag: &Arc<Stuck>) {
    let mut r = registry();
    flag.finished.store(true, Ordering::SeqCst);
    r.retain(|e| !Arc::ptr_eq(&e.flag, flag));
}

pub(crate) fn stuck_reader(reader: &str) -> Option<Arc<Stuck>> {
    registry()
        .iter()
        .find(|e| e.reader == reader)
        .map(|e| e.flag.clone())
}

pub(crate) fn stuck_serial(serial: u32) -> Option<(String, Arc<Stuck>)> {
    registry()
        .iter()
        .find(|e| e.serial == Some(serial))
        .map(|e| (e.reader.clone(), e.flag.clone()))
}
