//! Multiplexed links ("mux mode"): yamux sessions over TCP+TLS, so that two Strait instances talk over
//! connections that only one side accepts. Each yamux stream carries one HTTP/2 connection, opened by
//! either side: calls flow both ways over the same link.
//!
//! yamux 0.14 is futures-io based and needs one task to drive each connection: [`spawn_session`] runs
//! that task, which accepts inbound streams (handed to the listener side through a bounded channel)
//! and opens outbound streams on request. A [`SessionSet`] holds the live sessions of one link and
//! opens streams on them round-robin.
//!
//! A link's two ends: `accept` (the `mux-server` side's accept loop) and `dial` (the
//! `mux-client` side's session slots, redialled with backoff).

pub(crate) mod accept;
pub(crate) mod dial;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::BoxIo;
use crate::telemetry::warn_limited;

/// ALPN of mux links, so that a mux port never mistakes an HTTP/2 client for a peer (or vice versa).
pub(crate) const ALPN: &[u8] = b"strait-mux/1";
/// Outbound-open requests waiting for a session's driver.
const OPEN_BACKLOG: usize = 64;
/// The most streams one session carries at once (each is one HTTP/2 connection, not one call).
const MAX_STREAMS: usize = 512;

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum MuxError {
    #[error("no mux session is up")]
    NoSession,
    #[error("mux session closed: {0}")]
    Closed(String),
    #[error("opening a mux stream timed out after {0:?}")]
    Timeout(Duration),
}

/// Which side of the yamux protocol this end plays (stream ids differ, nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

type OpenReply = oneshot::Sender<Result<BoxIo, MuxError>>;

/// A handle on one live session.
#[derive(Clone)]
pub struct Session {
    id: u64,
    open: mpsc::Sender<OpenReply>,
    closed: CancellationToken,
}

impl Session {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the session has ended.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Opens an outbound stream.
    pub(crate) async fn open(&self, timeout: Duration) -> Result<BoxIo, MuxError> {
        let (reply, answer) = oneshot::channel();
        self.open
            .try_send(reply)
            .map_err(|_| MuxError::Closed("session busy or gone".to_owned()))?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MuxError::Closed("session ended".to_owned())),
            Err(_) => Err(MuxError::Timeout(timeout)),
        }
    }
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// Starts the driver task of a yamux session over `io`; inbound streams go to `inbound` (dropped, and
/// so refused, when its backlog is full). The session ends when the link fails or `stop` fires.
pub fn spawn_session<T>(
    io: T,
    role: Role,
    inbound: mpsc::Sender<BoxIo>,
    stop: CancellationToken,
) -> Session
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut config = yamux::Config::default();
    config.set_max_num_streams(MAX_STREAMS);
    let mode = match role {
        Role::Client => yamux::Mode::Client,
        Role::Server => yamux::Mode::Server,
    };
    let mut connection = yamux::Connection::new(io.compat(), config, mode);
    let (open, mut open_requests) = mpsc::channel::<OpenReply>(OPEN_BACKLOG);
    let closed = CancellationToken::new();
    let session = Session {
        id: SESSION_IDS.fetch_add(1, Ordering::Relaxed),
        open,
        closed: closed.clone(),
    };
    let id = session.id;
    tokio::spawn(async move {
        let mut waiting: VecDeque<OpenReply> = VecDeque::new();
        let ended = poll_fn(|cx| loop {
            if stop.is_cancelled() {
                return Poll::Ready("stopped".to_owned());
            }
            // Driving inbound also reads and writes the socket and registers the wake-ups of every
            // stream: it must be polled on every wake-up, and again after opening a stream (a new
            // stream's sender is only watched once the connection has been polled since).
            loop {
                match connection.poll_next_inbound(cx) {
                    Poll::Ready(Some(Ok(stream))) => {
                        let stream: BoxIo = Box::new(stream.compat());
                        if inbound.try_send(stream).is_err() {
                            debug!(
                                session = id,
                                "inbound stream backlog full; refusing a stream"
                            );
                        }
                    }
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(err.to_string()),
                    Poll::Ready(None) => return Poll::Ready("closed by peer".to_owned()),
                    Poll::Pending => break,
                }
            }
            while let Poll::Ready(Some(reply)) = open_requests.poll_recv(cx) {
                waiting.push_back(reply);
            }
            let mut opened = false;
            while let Some(reply) = waiting.pop_front() {
                match connection.poll_new_outbound(cx) {
                    Poll::Ready(Ok(stream)) => {
                        opened = true;
                        let _ = reply.send(Ok(Box::new(stream.compat())));
                    }
                    Poll::Ready(Err(err)) => {
                        let _ = reply.send(Err(MuxError::Closed(err.to_string())));
                        return Poll::Ready(err.to_string());
                    }
                    Poll::Pending => {
                        waiting.push_front(reply);
                        break;
                    }
                }
            }
            if !opened {
                return Poll::Pending;
            }
        });
        let reason = tokio::select! {
            reason = ended => reason,
            _ = stop.cancelled() => "stopped".to_owned(),
        };
        closed.cancel();
        for reply in waiting {
            let _ = reply.send(Err(MuxError::Closed(reason.clone())));
        }
        // Close politely (bounded): the peer learns at once rather than by timeout.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            poll_fn(|cx| connection.poll_close(cx)),
        )
        .await;
        debug!(session = id, %reason, "mux session ended");
    });
    session
}

/// The live sessions of one link.
#[derive(Default)]
pub struct SessionSet {
    sessions: Mutex<Vec<Session>>,
    next: AtomicUsize,
    changed: Notify,
    /// Sessions ever added: lets a waiter tell whether one came up since it last looked.
    added: AtomicU64,
    metrics: Option<(metrics::Gauge, metrics::Counter)>,
}

impl SessionSet {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A set whose sessions are counted in the mux metrics of `link`.
    pub(crate) fn for_link(link: &str) -> Arc<Self> {
        Arc::new(Self {
            metrics: Some(crate::metrics::mux_sessions(link)),
            ..Self::default()
        })
    }

    /// Adds a session and forgets it when it ends.
    pub fn add(self: &Arc<Self>, session: Session) {
        self.lock().push(session.clone());
        self.added.fetch_add(1, Ordering::AcqRel);
        if let Some((up, total)) = &self.metrics {
            up.increment(1.0);
            total.increment(1);
        }
        self.changed.notify_waiters();
        let set = Arc::clone(self);
        tokio::spawn(async move {
            session.closed().await;
            set.lock().retain(|s| s.id != session.id);
            if let Some((up, _)) = &set.metrics {
                up.decrement(1.0);
            }
            set.changed.notify_waiters();
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        match self.sessions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Live sessions now.
    pub(crate) fn live(&self) -> usize {
        self.lock().iter().filter(|s| !s.is_closed()).count()
    }

    /// How many sessions have been added so far (for [`added_since`](Self::added_since)).
    pub(crate) fn added(&self) -> u64 {
        self.added.load(Ordering::Acquire)
    }

    /// Resolves once a session has been added after `seen` sessions were (at once if one has).
    pub(crate) async fn added_since(&self, seen: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.added() > seen {
                return;
            }
            notified.await;
        }
    }

    /// Opens a stream on a live session, round-robin, waiting up to `timeout` for one to exist.
    pub(crate) async fn open(&self, timeout: Duration) -> Result<BoxIo, MuxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let candidates: Vec<Session> = self
                .lock()
                .iter()
                .filter(|s| !s.is_closed())
                .cloned()
                .collect();
            if !candidates.is_empty() {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let mut last = MuxError::NoSession;
                for i in 0..candidates.len() {
                    let session = &candidates[(start + i) % candidates.len()];
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match session.open(left.max(Duration::from_millis(1))).await {
                        Ok(stream) => return Ok(stream),
                        Err(err) => {
                            warn_limited!(session = session.id(), error = %err, "could not open a mux stream");
                            last = err;
                        }
                    }
                }
                return Err(last);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(MuxError::NoSession);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn streams_flow_both_ways_over_one_link_and_end_with_it() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let stop = CancellationToken::new();
        let (a_in_tx, mut a_in) = mpsc::channel(8);
        let (b_in_tx, mut b_in) = mpsc::channel(8);
        let a = spawn_session(a, Role::Client, a_in_tx, stop.clone());
        let b = spawn_session(b, Role::Server, b_in_tx, stop.clone());
        let set = SessionSet::new();
        set.add(a.clone());

        // A opens, B accepts; then B opens, A accepts.
        let mut out = set.open(Duration::from_secs(5)).await.unwrap();
        out.write_all(b"ping").await.unwrap();
        let mut accepted = b_in.recv().await.unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        let mut back = b.open(Duration::from_secs(5)).await.unwrap();
        back.write_all(b"pong").await.unwrap();
        let mut accepted = a_in.recv().await.unwrap();
        accepted.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");

        // When the link goes, the set forgets the session and opening fails promptly.
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), a.closed())
            .await
            .unwrap();
        let err = set.open(Duration::from_millis(200)).await;
        assert!(err.is_err());
        assert_eq!(set.live(), 0);
    }

    /// Sessions come and go (each with streams opened both ways) without leaving tasks behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_sessions_leave_no_tasks_behind() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let set = SessionSet::new();
        let baseline = metrics.num_alive_tasks();
        for _ in 0..1000 {
            let (a, b) = tokio::io::duplex(16 * 1024);
            let stop = CancellationToken::new();
            let (a_in_tx, _a_in) = mpsc::channel(8);
            let (b_in_tx, mut b_in) = mpsc::channel(8);
            let a = spawn_session(a, Role::Client, a_in_tx, stop.clone());
            let _b = spawn_session(b, Role::Server, b_in_tx, stop.clone());
            set.add(a.clone());
            let mut out = set.open(Duration::from_secs(5)).await.unwrap();
            out.write_all(b"x").await.unwrap();
            let mut accepted = b_in.recv().await.unwrap();
            let mut byte = [0u8; 1];
            accepted.read_exact(&mut byte).await.unwrap();
            stop.cancel();
            a.closed().await;
        }
        // Drivers and watchers finish shortly after their sessions; wait for that, bounded.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.num_alive_tasks() > baseline && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            metrics.num_alive_tasks() <= baseline,
            "{} tasks left",
            metrics.num_alive_tasks() - baseline
        );
        assert_eq!(set.live(), 0);
        assert!(set.lock().is_empty(), "closed sessions are forgotten");
    }
}
