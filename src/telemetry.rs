//! Logs: tracing with a pretty or JSON formatter on stderr; `RUST_LOG` overrides the configured filter.
//! Colour codes only when stderr is a terminal, so files and pipes get plain text. Records of the
//! `log` crate (rustls, yamux) are forwarded to the same subscriber, under the same filter, with
//! their own target (`RUST_LOG=yamux=debug` works).
//!
//! Lines a client (or a misbehaving peer) can cause once per call or connection go through
//! `warn_limited!`: at most `LOG_BURST` lines per `LOG_INTERVAL` from each call site, then one
//! line `suppressed K similar messages` when the interval is over (or at shutdown), so a flood of bad
//! requests cannot flood the log.

use std::io::IsTerminal;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How log lines are written (the config's `log.format` converts into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pretty,
    Json,
}

/// Installs the global subscriber with `level` as the filter (unless `RUST_LOG` is set); a second
/// call (tests) is a no-op.
pub fn init(level: &str, format: Format) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|env| EnvFilter::try_new(env).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    install(
        format,
        filter,
        std::io::stderr,
        std::io::stderr().is_terminal(),
    );
}

/// The global subscriber of [`init`], writing to `writer`. `try_init` (tracing-subscriber's
/// `tracing-log` feature) also installs the `log` bridge, with `log`'s max level set from the
/// filter, so the `log` calls the filter would drop (yamux traces every frame) cost a compare.
fn install<W>(format: Format, filter: EnvFilter, writer: W, ansi: bool)
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        Format::Pretty => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Lines each rate-limited call site may write per [`LOG_INTERVAL`].
pub(crate) const LOG_BURST: u32 = 10;
/// The window of [`LOG_BURST`].
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Limiters that have been used, so their suppressed counts can be reported when nothing else
/// would (the flood stopped). One per call site: bounded by the code, not by traffic.
static REGISTRY: Mutex<Vec<&'static LogLimiter>> = Mutex::new(Vec::new());

/// Whether a rate-limited line is written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write it; `suppressed` lines of the previous window were dropped and not yet reported.
    Log {
        suppressed: u64,
    },
    Suppress,
}

/// The rate limit of one call site.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    site: &'static str,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
    registered: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while logging must not silence the log.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogLimiter {
    pub(crate) const fn new(site: &'static str) -> Self {
        Self::with_registration(site, false)
    }

    /// `registered: true` keeps the limiter out of the registry (tests: no other test's report
    /// takes its counts).
    const fn with_registration(site: &'static str, registered: bool) -> Self {
        Self {
            site,
            window: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
                registered,
            }),
        }
    }

    /// Decides about one line at `now`.
    pub(crate) fn admit(&'static self, now: Instant) -> Admit {
        let mut window = lock(&self.window);
        if !window.registered {
            window.registered = true;
            lock(&REGISTRY).push(self);
        }
        let mut suppressed = 0;
        if window
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= LOG_INTERVAL)
        {
            suppressed = std::mem::take(&mut window.suppressed);
            window.start = Some(now);
            window.logged = 0;
        }
        if window.logged < LOG_BURST {
            window.logged += 1;
            Admit::Log { suppressed }
        } else {
            window.suppressed += 1;
            Admit::Suppress
        }
    }

    /// Takes the count of suppressed lines to report: once their window is over, or at once with
    /// `force`.
    fn take_suppressed(&self, now: Instant, force: bool) -> u64 {
        let mut window = lock(&self.window);
        let over = window
            .start
            .is_some_and(|start| now.saturating_duration_since(start) >= LOG_INTERVAL);
        if force || over {
            std::mem::take(&mut window.suppressed)
        } else {
            0
        }
    }

    pub(crate) fn site(&self) -> &'static str {
        self.site
    }
}

/// Writes `suppressed K similar messages` for every site whose window is over (or, with `force`,
/// every site: at shutdown) and that dropped lines not reported yet.
pub(crate) fn report_suppressed(force: bool) {
    let now = Instant::now();
    let limiters: Vec<&'static LogLimiter> = lock(&REGISTRY).clone();
    for limiter in limiters {
        let suppressed = limiter.take_suppressed(now, force);
        if suppressed > 0 {
            tracing::warn!(
                site = limiter.site(),
                suppressed,
                "suppressed {suppressed} similar messages"
            );
        }
    }
}

/// Reports suppressed counts each [`LOG_INTERVAL`], so they appear when a flood stops too.
pub(crate) async fn report_suppressed_periodically() {
    let mut tick = tokio::time::interval(LOG_INTERVAL);
    loop {
        tick.tick().await;
        report_suppressed(false);
    }
}

/// `tracing::warn!` for a line a client or peer can cause in bulk (one per call or connection):
/// rate-limited per call site, see the module documentation. Same arguments as `warn!`; they are
/// evaluated only when the line is written.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMITER: $crate::telemetry::LogLimiter =
            $crate::telemetry::LogLimiter::new(concat!(file!(), ":", line!()));
        if let $crate::telemetry::Admit::Log { suppressed } =
            LIMITER.admit(::std::time::Instant::now())
        {
            if suppressed > 0 {
                ::tracing::warn!(
                    site = LIMITER.site(),
                    suppressed,
                    "suppressed {suppressed} similar messages"
                );
            }
            ::tracing::warn!($($arg)+);
        }
    }};
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_a_burst_per_interval_then_the_suppressed_count() {
        static LIMITER: LogLimiter = LogLimiter::with_registration("test:1", true);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        for i in 0..LOG_BURST {
            assert_eq!(
                LIMITER.admit(at(u64::from(i))),
                Admit::Log { suppressed: 0 }
            );
        }
        for i in 0..1000 {
            assert_eq!(LIMITER.admit(at(100 + i)), Admit::Suppress);
        }
        // Not over yet: nothing to report unless forced.
        assert_eq!(LIMITER.take_suppressed(at(9_999), false), 0);
        // The next window's first line carries the count.
        assert_eq!(LIMITER.admit(at(10_000)), Admit::Log { suppressed: 1000 });
        for i in 1..LOG_BURST {
            assert_eq!(
                LIMITER.admit(at(10_000 + u64::from(i))),
                Admit::Log { suppressed: 0 }
            );
        }
        for _ in 0..7 {
            assert_eq!(LIMITER.admit(at(10_500)), Admit::Suppress);
        }
        // A flood that stops is reported once its window is over, and only once.
        assert_eq!(LIMITER.take_suppressed(at(15_000), false), 0);
        assert_eq!(LIMITER.take_suppressed(at(20_000), false), 7);
        assert_eq!(LIMITER.take_suppressed(at(30_000), false), 0);
        assert_eq!(LIMITER.admit(at(40_000)), Admit::Log { suppressed: 0 });
        // Forced (shutdown): reported at once.
        for _ in 1..LOG_BURST + 3 {
            LIMITER.admit(at(40_001));
        }
        assert_eq!(LIMITER.take_suppressed(at(40_002), true), 3);
    }

    /// Captures what the fmt layer writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The only test in this binary that installs the global subscriber (and the `log` bridge, which
    /// is process-wide): other tests' events may land in its buffer too, hence the targets.
    #[test]
    fn log_records_reach_the_subscriber_under_the_same_filter() {
        let captured = Captured::default();
        let writer = captured.clone();
        let filter = EnvFilter::new("warn,bridge_test_debug=debug");
        install(Format::Pretty, filter, move || writer.clone(), false);
        log::warn!(target: "bridge_test_warn", "a rustls-like warning");
        log::info!(target: "bridge_test_warn", "an info line the filter drops");
        log::debug!(target: "bridge_test_debug", "a debug line its directive keeps");
        log::trace!(target: "bridge_test_debug", "a trace line below that directive");
        let text = String::from_utf8(lock(&captured.0).clone()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("bridge_test")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("WARN"), "{text}");
        assert!(
            lines[0].contains("bridge_test_warn: a rustls-like warning"),
            "the record's own target, not `log`: {text}"
        );
        assert!(lines[1].contains("DEBUG"), "{text}");
        assert!(
            lines[1].contains("a debug line its directive keeps"),
            "{text}"
        );
    }

    #[test]
    fn each_call_site_has_its_own_limit_and_reports_what_it_dropped() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                warn_limited!(call = i, "site zero");
                warn_limited!(call = i, "site one");
            }
            report_suppressed(true);
        });
        let text = String::from_utf8(lock(&captured.0).clone()).unwrap_or_default();
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count("site zero"), LOG_BURST as usize, "{text}");
        assert_eq!(count("site one"), LOG_BURST as usize, "{text}");
        assert_eq!(count("suppressed 90 similar messages"), 2, "{text}");
        assert_eq!(count("src/telemetry.rs:"), 2, "the site is named: {text}");
    }
}
