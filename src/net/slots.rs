//! Admission to a door's connection slots: every connection takes a slot at accept and holds it
//! until it closes. A new connection starts *unproven*; it becomes *proven* when the door says so
//! (the JSON API and KMIP: a registered client certificate and a first request or message; XKS: a
//! request whose SigV4 signature verified).
//!
//! Unproven connections may hold at most `max - reserved` slots, so `reserved` slots stay for
//! proven ones whatever a flood does. When a newcomer finds no slot, the oldest unproven
//! connection that has been waiting longer than the first-request budget gives its slot up (it is
//! told through [`Ticket::evicted`] and closes); a newcomer that finds neither waits (before its
//! TLS handshake, at most `max` newcomers at once) until a slot frees or an unproven connection
//! passes its budget, or its own deadline passes. A proven connection is never evicted: it keeps
//! its slot until it closes or idles out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One door's slots.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    reserved: usize,
    budget: Duration,
    state: Mutex<State>,
    /// Signalled when the last connection closes (drain).
    empty: Notify,
    /// Signalled when a slot frees or an unproven connection is proven (waiting newcomers).
    freed: Notify,
    /// Newcomers waiting for a slot.
    waiting: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    open: usize,
    proven: usize,
    /// Unproven connections by arrival order (the first is the oldest).
    unproven: BTreeMap<u64, (Instant, Arc<Shared>)>,
}

/// What a connection and the slots share.
#[derive(Debug, Default)]
struct Shared {
    /// Its slot was given to a newcomer: it must close (and not give the slot back again).
    evicted: AtomicBool,
    proven: AtomicBool,
    wake: Notify,
}

/// Why a newcomer got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// All slots are held by proven connections or by unproven ones still within their budget;
    /// `retry_at`: when the oldest unproven one passes its budget.
    Busy { retry_at: Option<Instant> },
    /// Too many newcomers are waiting already.
    Queue,
}

impl Slots {
    pub fn new(max: usize, reserved: usize, budget: Duration) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            reserved: reserved.min(max.saturating_sub(1)),
            budget,
            state: Mutex::new(State::default()),
            empty: Notify::new(),
            freed: Notify::new(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A place among the newcomers waiting for a slot; `None` when `max` wait already.
    pub fn enter(self: &Arc<Self>) -> Option<Waiter> {
        let n = self.waiting.fetch_add(1, Ordering::SeqCst);
        if n >= self.max {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Waiter {
            slots: Arc::clone(self),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a newly accepted connection, evicting the oldest unproven connection past its
    /// budget when there is no free one. `Ok((ticket, evicted_one))`.
    pub fn take(self: &Arc<Self>) -> Result<(Ticket, bool), Full> {
        self.take_at(Instant::now())
    }

    fn take_at(self: &Arc<Self>, now: Instant) -> Result<(Ticket, bool), Full> {
        let mut s = self.lock();
        let unproven_cap = self.max - self.reserved;
        let mut evicted = false;
        if s.open >= self.max || s.unproven.len() >= unproven_cap {
            let Some((&id, (since, _))) = s.unproven.iter().next() else {
                return Err(Full::Busy { retry_at: None });
            };
            if now.saturating_duration_since(*since) < self.budget {
                return Err(Full::Busy {
                    retry_at: Some(*since + self.budget),
                });
            }
            if let Some((_, shared)) = s.unproven.remove(&id) {
                shared.evicted.store(true, Ordering::SeqCst);
                shared.wake.notify_one();
            }
            // The evicted connection's slot passes to the newcomer.
            s.open -= 1;
            evicted = true;
        }
        let id = s.next;
        s.next += 1;
        s.open += 1;
        let shared = Arc::new(Shared::default());
        s.unproven.insert(id, (now, Arc::clone(&shared)));
        Ok((
            Ticket {
                slots: Arc::clone(self),
                id,
                shared,
            },
            evicted,
        ))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One connection's slot; given back on drop.
#[derive(Debug)]
pub struct Ticket {
    slots: Arc<Slots>,
    id: u64,
    shared: Arc<Shared>,
}

impl Ticket {
    /// The handle the door uses to prove the connection.
    pub fn standing(&self) -> Standing {
        Standing {
            slots: Arc::clone(&self.slots),
            id: self.id,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Resolves when this connection's slot was given to a newcomer.
    pub async fn evicted(&self) {
        self.shared.evicted().await;
    }
}

impl Shared {
    async fn evicted(&self) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.evicted.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        if self.shared.evicted.load(Ordering::SeqCst) {
            // Its slot already went to the newcomer that evicted it.
            return;
        }
        if self.shared.proven.load(Ordering::SeqCst) {
            s.proven = s.proven.saturating_sub(1);
        } else {
            s.unproven.remove(&self.id);
        }
        s.open = s.open.saturating_sub(1);
        if s.open == 0 {
            self.slots.empty.notify_waiters();
        }
        self.slots.freed.notify_waiters();
    }
}

/// A newcomer waiting for a slot (see [`Slots::enter`]).
#[derive(Debug)]
pub struct Waiter {
    slots: Arc<Slots>,
}

impl Waiter {
    /// A slot (and whether an unproven connection was evicted for it), waiting until `deadline`
    /// at most.
    pub async fn acquire(self, deadline: Instant) -> Result<(Ticket, bool), Full> {
        loop {
            let freed = self.slots.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let now = Instant::now();
            let retry_at = match self.slots.take_at(now) {
                Ok(t) => return Ok(t),
                Err(Full::Busy { retry_at }) => retry_at,
                Err(Full::Queue) => return Err(Full::Queue),
            };
            if now >= deadline {
                return Err(Full::Busy { retry_at });
            }
            let until = retry_at.map_or(deadline, |r| r.min(deadline));
            tokio::select! {
                () = &mut freed => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.slots.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's standing with its door's slots: [`Standing::prove`] moves it out of the
/// evictable, unproven pool. Cheap to clone (HTTP requests carry one as an extension).
#[derive(Debug, Clone)]
pub struct Standing {
    slots: Arc<Slots>,
    id: u64,
    shared: Arc<Shared>,
}

impl Standing {
    /// The client proved itself (registered and served, or authenticated). Idempotent.
    pub fn prove(&self) {
        if self.shared.proven.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.slots.lock();
        if self.shared.evicted.load(Ordering::SeqCst) {
            return;
        }
        if s.unproven.remove(&self.id).is_some() {
            s.proven += 1;
            self.shared.proven.store(true, Ordering::SeqCst);
            drop(s);
            self.slots.freed.notify_waiters();
        }
    }

    pub fn is_proven(&self) -> bool {
        self.shared.proven.load(Ordering::SeqCst)
    }

    /// Resolves when the connection, still unproven, gave its slot to a newcomer: close it now
    /// (a door with a half-read message records it first).
    pub async fn evicted(&self) {
        self.shared.evicted().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unproven_connections_leave_the_reserve_and_the_oldest_past_budget_gives_way() {
        let slots = Slots::new(4, 1, Duration::from_millis(100));
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(150);
        // Three unproven fill the unproven pool (4 - 1 reserved).
        let Ok((a, _)) = slots.take_at(t0) else {
            panic!("a")
        };
        let Ok((b, _)) = slots.take_at(t0) else {
            panic!("b")
        };
        let Ok((c, _)) = slots.take_at(t0) else {
            panic!("c")
        };
        // A fourth within their budget: refused.
        assert_eq!(
            slots.take_at(t0).err(),
            Some(Full::Busy {
                retry_at: Some(t0 + Duration::from_millis(100))
            })
        );
        // After the budget, the oldest (a) is evicted for the newcomer.
        let Ok((d, true)) = slots.take_at(later) else {
            panic!("d did not evict")
        };
        assert!(a.shared.evicted.load(Ordering::SeqCst));
        drop(a);
        assert_eq!(slots.open(), 3);
        // A proven connection is never evicted and may use the reserve.
        d.standing().prove();
        let Ok((e, false)) = slots.take_at(later) else {
            panic!("no room after d was proven")
        };
        assert_eq!(slots.open(), 4);
        let Ok((f, true)) = slots.take_at(later + Duration::from_millis(200)) else {
            panic!("f")
        };
        assert!(b.shared.evicted.load(Ordering::SeqCst));
        assert!(!d.shared.evicted.load(Ordering::SeqCst));
        for t in [b, c, d, e, f] {
            drop(t);
        }
        assert_eq!(slots.open(), 0);
    }

    #[tokio::test]
    async fn a_newcomer_waits_for_a_freed_slot_and_the_queue_is_bounded() {
        let slots = Slots::new(2, 1, Duration::from_secs(60));
        let Ok((a, _)) = slots.take() else {
            panic!("a")
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let Some(w) = slots.enter() else { panic!("w") };
        let _w2 = slots.enter();
        assert!(slots.enter().is_none(), "at most max newcomers wait");
        let waiting = tokio::spawn(async move { w.acquire(deadline).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no slot yet: the newcomer waits");
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        assert!(
            matches!(got, Ok(Ok(true))),
            "the freed slot went to the waiter"
        );
    }
}
