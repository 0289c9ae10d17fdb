//! Bounds on one connection's life, so idle or slow clients cannot hold the service's slots:
//!
//! - [`AddressLimits`]: open connections per source IP address, counted from accept (a connection
//!   still in its TLS handshake counts).
//! - [`Activity`] + [`Watched`] + [`Tracked`]: what the connection is doing — the last byte read
//!   or written, whether a request is in flight, since when a request head has been awaited —
//!   and [`Activity::check`], which says when the header-read or idle timeout expires.
//! - [`TimedBody`]: while a request is in flight no timeout applies (a token operation may take
//!   a while), but its body must keep coming: a gap longer than the idle timeout fails it.
//! - [`LogThrottle`]: at most one warning per key (address) per minute, with a count of the rest.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::slots::Standing;

/// Open connections per source address.
#[derive(Debug)]
pub struct AddressLimits {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`AddressLimits`]; released on drop.
#[derive(Debug)]
pub struct AddressSlot {
    limits: Arc<AddressLimits>,
    ip: IpAddr,
}

impl AddressLimits {
    pub fn new(max: usize) -> Arc<AddressLimits> {
        Arc::new(AddressLimits {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, unless it already has `max` open.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            limits: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// No head is being awaited.
const NONE: u64 = u64::MAX;

/// What one connection is doing, in milliseconds since it was admitted. Touched only from the
/// connection's own task (the atomics make it `Sync` for hyper's service bounds).
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_io: AtomicU64,
    head_since: AtomicU64,
    in_flight: AtomicUsize,
    /// Signalled when a request head starts, so the watchdog applies the header timeout from
    /// then rather than at its next idle check.
    head_started: tokio::sync::Notify,
}

/// Why a connection was closed by [`Activity::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A request head was awaited for longer than the header-read timeout.
    Header,
    /// No request in flight and no bytes for longer than the idle timeout.
    Idle,
}

impl Expired {
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::Header => "header-timeout",
            Expired::Idle => "idle-timeout",
        }
    }
}

impl Activity {
    /// A freshly admitted connection: its first request head is awaited from now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started: tokio::sync::Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn read(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes while no request is in flight start the next request's head.
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let started = self
                .head_since
                .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
            if started {
                self.head_started.notify_one();
            }
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request head was parsed: the request is in flight until the guard drops.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Resolves when a request head starts (the deadline from [`Activity::check`] may then be
    /// earlier than the one being waited for).
    pub async fn head_started(&self) {
        self.head_started.notified().await;
    }

    /// `Err` when a timeout has expired; else when to check again.
    pub fn check(&self, header: Duration, idle: Duration) -> Result<Instant, Expired> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE / 4);
        let now = self.now_ms();
        let next = if self.in_flight.load(Ordering::Relaxed) > 0 {
            // A request is being served (perhaps a slow token operation): no timeout applies.
            now.saturating_add(ms(idle))
        } else {
            let idle_at = self
                .last_io
                .load(Ordering::Relaxed)
                .saturating_add(ms(idle));
            let head = self.head_since.load(Ordering::Relaxed);
            let header_at = if head == NONE {
                NONE
            } else {
                head.saturating_add(ms(header))
            };
            if now >= header_at {
                return Err(Expired::Header);
            }
            if now >= idle_at {
                return Err(Expired::Idle);
            }
            idle_at.min(header_at)
        };
        Ok(self.start + Duration::from_millis(next))
    }
}

/// Marks a request in flight; dropped when its response future finishes (or is dropped).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's byte stream, reporting reads and writes to its [`Activity`].
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Watched<T> {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A hyper service that marks each request in flight (no timeout applies to it) until its
/// response is ready, and gives its body a [`TimedBody`] so a stalled upload cannot hold the
/// connection while it counts as in flight. Each request carries the connection's [`Standing`]
/// as an extension (a door that proves clients itself, like XKS after SigV4, uses it); with
/// `prove_on_request` the first request proves the connection (the JSON API: its certificate
/// was admitted already).
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    body_gap: Duration,
    standing: Standing,
    prove_on_request: bool,
}

impl<S> Tracked<S> {
    /// `body_gap`: the longest wait for the next piece of a request body.
    pub fn new(
        inner: S,
        activity: Arc<Activity>,
        body_gap: Duration,
        standing: Standing,
        prove_on_request: bool,
    ) -> Tracked<S> {
        Tracked {
            inner,
            activity,
            body_gap,
            standing,
            prove_on_request,
        }
    }
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for Tracked<S>
where
    S: hyper::service::Service<hyper::Request<TimedBody<B>>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        let guard = self.activity.begin();
        if self.prove_on_request {
            self.standing.prove();
        }
        req.extensions_mut().insert(self.standing.clone());
        let gap = self.body_gap;
        let fut = self.inner.call(req.map(|b| TimedBody::new(b, gap)));
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

/// A request body that fails (the handler answers 400 and the connection closes) when its next
/// frame takes longer than `gap` to arrive.
pub struct TimedBody<B> {
    inner: B,
    gap: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimedBody<B> {
    fn new(inner: B, gap: Duration) -> TimedBody<B> {
        TimedBody {
            inner,
            gap,
            waiting: None,
        }
    }
}

impl<B> hyper::body::Body for TimedBody<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let gap = this.gap;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
                if waiting.as_mut().poll(cx).is_ready() {
                    this.waiting = None;
                    return Poll::Ready(Some(Err(format!(
                        "request body stalled: nothing for {} s",
                        gap.as_secs()
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// At most one log line per key per [`LogThrottle::EVERY`].
#[derive(Debug)]
pub struct LogThrottle<K> {
    seen: Mutex<HashMap<K, (Instant, u64)>>,
}

impl<K> Default for LogThrottle<K> {
    fn default() -> Self {
        LogThrottle {
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> LogThrottle<K> {
    pub const EVERY: Duration = Duration::from_secs(60);
    const MAX_KEYS: usize = 4096;

    /// `Some(n)`: log now, mentioning the `n` lines suppressed since the last one; `None`: stay
    /// quiet (counted).
    pub fn allow(&self, key: &K) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, suppressed)) = seen.get_mut(key) {
            if now.saturating_duration_since(*at) < Self::EVERY {
                *suppressed += 1;
                return None;
            }
            let n = *suppressed;
            *at = now;
            *suppressed = 0;
            return Some(n);
        }
        if seen.len() >= Self::MAX_KEYS {
            seen.retain(|_, (at, _)| now.saturating_duration_since(*at) < Self::EVERY);
            if seen.len() >= Self::MAX_KEYS {
                seen.clear();
            }
        }
        seen.insert(key.clone(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_slots_are_counted_per_address_and_released() {
        let limits = AddressLimits::new(2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let s1 = limits.try_open(a);
        let s2 = limits.try_open(a);
        assert!(s1.is_some() && s2.is_some());
        assert!(limits.try_open(a).is_none(), "third from the same address");
        assert!(
            limits.try_open(b).is_some(),
            "another address is not affected"
        );
        drop(s1);
        assert!(
            limits.try_open(a).is_some(),
            "a closed connection frees its slot"
        );
        // An IPv4-mapped IPv6 address is the same source.
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap_or(a);
        let _s3 = limits.try_open(a);
        assert!(limits.try_open(mapped).is_none());
    }

    #[test]
    fn header_timeout_runs_from_the_first_byte_and_idle_from_the_last() {
        let a = Activity::new();
        let (h, i) = (Duration::from_secs(10), Duration::from_secs(60));
        // Fresh connection: a head is awaited from the start.
        assert!(a.check(h, i).is_ok());
        // Pretend 11 s have passed with no request: header timeout.
        let past = Activity {
            start: Instant::now() - Duration::from_secs(11),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started: tokio::sync::Notify::new(),
        };
        assert_eq!(past.check(h, i), Err(Expired::Header));
        // Between requests (no head awaited) only the idle timeout applies.
        past.head_since.store(NONE, Ordering::Relaxed);
        assert!(past.check(h, i).is_ok());
        let idle = Activity {
            start: Instant::now() - Duration::from_secs(61),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            in_flight: AtomicUsize::new(0),
            head_started: tokio::sync::Notify::new(),
        };
        assert_eq!(idle.check(h, i), Err(Expired::Idle));
        // A request in flight is never timed out.
        idle.in_flight.store(1, Ordering::Relaxed);
        assert!(idle.check(h, i).is_ok());
    }

    #[tokio::test]
    async fn the_first_byte_of_a_next_request_wakes_the_watchdog() {
        let a = Activity::new();
        // Between requests: no head awaited.
        let guard = a.begin();
        drop(guard);
        a.read();
        let woke = tokio::time::timeout(Duration::from_secs(1), a.head_started()).await;
        assert!(woke.is_ok(), "no wake-up for a starting head");
        assert_ne!(a.head_since.load(Ordering::Relaxed), NONE);
        // More bytes of the same head do not restart its clock.
        let since = a.head_since.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        a.read();
        assert_eq!(a.head_since.load(Ordering::Relaxed), since);
        // Bytes while a request is in flight (its body) start no head.
        let _g = a.begin();
        a.read();
        assert_eq!(a.head_since.load(Ordering::Relaxed), NONE);
    }

    #[test]
    fn log_lines_are_throttled_per_key() {
        let t = LogThrottle::<u8>::default();
        assert_eq!(t.allow(&1), Some(0));
        assert_eq!(t.allow(&1), None);
        assert_eq!(t.allow(&1), None);
        assert_eq!(t.allow(&2), Some(0));
    }
}
