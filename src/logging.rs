//! The process's one log subscriber (`kms` binary): `KMS_LOG` (EnvFilter directives, default
//! `warn`) on stderr — with the smartcard stack's own logging forced off, whatever the directives.
//!
//! The `yubikey` crate logs every APDU it sends (through the `log` crate) at trace level — a
//! VERIFY carries the PIN, CHANGE REFERENCE DATA and RESET RETRY COUNTER the PUK and the new
//! PIN, the management-key handshake its challenge/response — and an ERROR line for every empty
//! reader it looks at. None of that may reach an operator's log, so:
//! - its `log` records never become tracing events (the log bridge ignores the crates'
//!   targets), and
//! - the fmt layer carries a per-layer filter that drops every event or span whose target is
//!   one of [`SILENCED`] or below it — no EnvFilter directive (`yubikey::apdu=trace`,
//!   `[apdu]=trace`, `trace`) can re-enable it, as a per-layer filter is checked after, and
//!   independently of, the directives.
//!
//! kms's own smartcard layer (`kms::smartcard`) logs what an operator needs, without secrets.

use tracing::Metadata;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::{EnvFilter, Layer as _};

/// Targets (crates) whose logs never reach a subscriber: they can carry PINs, PUKs and
/// management keys.
pub const SILENCED: &[&str] = &["yubikey", "pcsc"];

/// Whether `target` is one of [`SILENCED`] or a sub-target of one (`yubikey::apdu`).
pub fn silenced(target: &str) -> bool {
    SILENCED.iter().any(|s| {
        target
            .strip_prefix(s)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The per-layer filter dropping [`silenced`] targets (also log-bridge events, whose real
/// target is in their fields).
struct Secrets;

impl<S> Filter<S> for Secrets {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !silenced(meta.target())
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _: &Context<'_, S>) -> bool {
        use tracing_log::NormalizeEvent as _;
        match event.normalized_metadata() {
            Some(meta) => !silenced(meta.target()),
            None => !silenced(event.metadata().target()),
        }
    }
}

/// `KMS_LOG`'s filter, `warn` when unset or unparsable.
fn directives() -> EnvFilter {
    EnvFilter::try_from_env("KMS_LOG").unwrap_or_else(|_| EnvFilter::new("warn"))
}

/// The fmt layer writing to `writer`: `directives`, then the [`Secrets`] filter.
fn layer<S, W>(directives: EnvFilter, writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        // A log line that cannot be written (stderr's reader is gone) is dropped; the default
        // reports it with eprintln!, which panics on that same closed stderr.
        .log_internal_errors(false)
        .with_filter(directives)
        .with_filter(Secrets)
}

/// Installs the subscriber and the log bridge. Call once, first thing in `main`.
pub fn init() {
    let subscriber = tracing_subscriber::registry().with(layer(directives(), std::io::stderr));
    // A second install (a test harness that set one already) keeps the first; nothing to do.
    let _ = tracing::subscriber::set_global_default(subscriber);
    let _ = tracing_log::LogTracer::builder()
        .ignore_all(SILENCED.iter().copied())
        .init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::EnvFilter;

    use super::{layer, silenced};

    /// A log sink for the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    #[test]
    fn no_directive_re_enables_the_smartcard_crates_not_even_through_the_log_bridge() {
        let sink = Sink::default();
        let directives = EnvFilter::new("trace,yubikey=trace,yubikey::apdu=trace,[apdu]=trace");
        let subscriber = tracing_subscriber::registry().with(layer(directives, sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "yubikey::apdu", "SECRET-event");
            tracing::trace!(target: "pcsc", "SECRET-pcsc");
            tracing::trace!(target: "kms::smartcard", "visible-event");
            // The log bridge without its ignore list: the per-layer filter alone stops it.
            let bridge = tracing_log::LogTracer::new();
            for (target, text) in [
                ("yubikey::apdu", "SECRET-record"),
                ("kms", "visible-record"),
            ] {
                log::Log::log(
                    &bridge,
                    &log::Record::builder()
                        .target(target)
                        .level(log::Level::Trace)
                        .args(format_args!("{text}"))
                        .build(),
                );
            }
        });
        let out =
            String::from_utf8_lossy(&sink.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        assert!(
            out.contains("visible-event") && out.contains("visible-record"),
            "{out}"
        );
        assert!(!out.contains("SECRET"), "{out}");
    }

    #[test]
    fn the_smartcard_crates_and_their_modules_are_silenced_and_nothing_else() {
        for t in [
            "yubikey",
            "yubikey::apdu",
            "yubikey::transaction",
            "pcsc",
            "pcsc::x",
        ] {
            assert!(silenced(t), "{t}");
        }
        for t in ["kms", "kms::smartcard", "yubikeys", "pcsc_lite", "log"] {
            assert!(!silenced(t), "{t}");
        }
    }
}
