//! A pool of HTTP/2 connections to one upstream. Each slot has a task that dials, performs the HTTP/2
//! handshake, drives the connection (with keepalive PINGs) and redials with jittered exponential
//! backoff when it ends. Calls take a ready connection round-robin, or wait a bounded time for one;
//! while every slot's last dial failed, they fail at once instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::transport::coalesce::Coalescing;
use bytes::Bytes;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::config::UpstreamConfig;
use crate::metrics;
use crate::transport::backoff::Backoff;
use crate::transport::connect::{ConnectError, Connector};
use crate::transport::mux::SessionSet;

/// How a pool makes its connections: TCP (+TLS) to an address, or streams on a mux link.
#[derive(Clone)]
pub enum Dialer {
    Tcp(Connector),
    Mux {
        sessions: Arc<SessionSet>,
        label: String,
        timeout: Duration,
    },
}

impl Dialer {
    fn address(&self) -> &str {
        match self {
            Dialer::Tcp(connector) => connector.address(),
            Dialer::Mux { label, .. } => label,
        }
    }

    fn is_tls(&self) -> bool {
        // A mux link is TLS underneath; HTTP/2 inside it runs without TLS of its own.
        matches!(self, Dialer::Tcp(connector) if connector.is_tls())
    }

    /// Where the link stands now, for [`link_back`](Self::link_back).
    fn link_epoch(&self) -> u64 {
        match self {
            Dialer::Tcp(_) => 0,
            Dialer::Mux { sessions, .. } => sessions.added(),
        }
    }

    /// Resolves when a redial is worth trying before the backoff is over: a mux session came up
    /// after `epoch` (a lost link is back). Never for TCP, whose backoff is the only clock.
    async fn link_back(&self, epoch: u64) {
        match self {
            Dialer::Tcp(_) => std::future::pending().await,
            Dialer::Mux { sessions, .. } => sessions.added_since(epoch).await,
        }
    }

    async fn connect(&self) -> Result<crate::transport::BoxIo, String> {
        match self {
            Dialer::Tcp(connector) => connector.connect().await.map_err(|e| e.to_string()),
            Dialer::Mux {
                sessions,
                label,
                timeout,
            } => sessions
                .open(*timeout)
                .await
                .map_err(|e| format!("mux link {label}: {e}")),
        }
    }
}

/// Flow-control windows for responses coming from the upstream: the stream window is large enough
/// that one stream can carry 64 KiB messages at full speed, and bounds what a stalled client makes
/// us hold. The connection window is the protocol maximum so that it never binds first: calls share
/// the connection, and with a smaller one a few clients that stop reading (each holding a stream
/// window of unread response) would stall every call on it.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 0x7fff_ffff;
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// A connection that stayed up this long is redialled at once when it ends (an upstream restart or
/// GOAWAY should not cost a backoff delay); shorter-lived ones back off like failed dials.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {name:?} ({address}) unavailable: {reason}")]
    Unavailable {
        name: String,
        address: String,
        reason: String,
    },
}

#[derive(Clone)]
enum SlotState {
    /// Dialling: at start, or after its connection ended (`last_error` says how).
    Connecting { last_error: Option<Arc<str>> },
    /// Its last dial failed: it backs off, then dials again, and stays down until a dial succeeds.
    /// Calls do not wait for it: the upstream is known to be unreachable, and a call waiting
    /// `connect_timeout` for the next dial would only see its own deadline pass. Unless the link
    /// has come back since (`link_epoch`, see [`Dialer::link_back`]): then it redials at once.
    DialFailed { error: Arc<str>, link_epoch: u64 },
    /// A connection taking new streams, and which of the slot's connections it is.
    Ready(SendRequest<Bytes>, u64),
}

struct Slot {
    state: Mutex<SlotState>,
    /// Wakes the slot's driver when a call found its connection refusing new streams: after a
    /// GOAWAY (servers that limit connection age send one, e.g. Temporal's frontend after 5
    /// minutes) h2 keeps the connection for the calls in flight but opens no stream on it.
    retired: Notify,
}

impl Slot {
    /// Takes connection `generation` out of use, if it is still the slot's, and wakes the driver.
    fn retire(&self, generation: u64, reason: String) {
        {
            let mut state = match self.state.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !matches!(*state, SlotState::Ready(_, g) if g == generation) {
                return;
            }
            *state = SlotState::Connecting {
                last_error: Some(Arc::from(reason)),
            };
        }
        self.retired.notify_one();
    }

    fn is_ready(&self, generation: u64) -> bool {
        matches!(self.get(), SlotState::Ready(_, g) if g == generation)
    }

    fn set(&self, state: SlotState) {
        match self.state.lock() {
            Ok(mut guard) => *guard = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }

    fn get(&self) -> SlotState {
        match self.state.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

pub struct UpstreamPool {
    name: Arc<str>,
    address: String,
    scheme: Scheme,
    authority: Authority,
    connect_timeout: Duration,
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
    changed: Arc<Notify>,
    /// The slots' dialer, for whether a lost link has come back.
    dialer: Dialer,
}

impl UpstreamPool {
    /// Creates the pool and starts one dialing task per connection slot on `tracker`; they stop when
    /// `stop` is cancelled.
    pub(crate) fn start(
        config: &UpstreamConfig,
        stop: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Self>, ConnectError> {
        Self::start_with(
            config,
            Dialer::Tcp(Connector::new(&config.into())?),
            stop,
            tracker,
        )
    }

    /// Like [`start`](Self::start), with connections made by `dialer` (e.g. streams of a mux link).
    pub fn start_with(
        config: &UpstreamConfig,
        connector: Dialer,
        stop: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Self>, ConnectError> {
        let scheme = if connector.is_tls() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let authority_text = match (&config.authority, &config.tls) {
            (Some(authority), _) => authority.clone(),
            (None, Some(tls)) if tls.server_name.is_some() => {
                let port = config
                    .address
                    .rsplit_once(':')
                    .map(|(_, p)| p)
                    .unwrap_or("443");
                format!("{}:{port}", tls.server_name.as_deref().unwrap_or_default())
            }
            _ => config.address.clone(),
        };
        let authority: Authority = authority_text.parse().map_err(|_| ConnectError::Tcp {
            address: config.address.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{authority_text:?} is not a valid authority"),
            ),
        })?;
        let slots: Vec<Arc<Slot>> = (0..config.connections)
            .map(|_| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState::Connecting { last_error: None }),
                    retired: Notify::new(),
                })
            })
            .collect();
        let pool = Arc::new(Self {
            name: Arc::from(config.name.as_str()),
            address: config.address.clone(),
            scheme,
            authority,
            connect_timeout: config.connect_timeout,
            slots,
            next: AtomicUsize::new(0),
            changed: Arc::new(Notify::new()),
            dialer: connector.clone(),
        });
        for (index, slot) in pool.slots.iter().enumerate() {
            let driver = SlotDriver {
                upstream: Arc::clone(&pool.name),
                slot: Arc::clone(slot),
                changed: Arc::clone(&pool.changed),
                connector: connector.clone(),
                config: config.clone(),
                stop: stop.clone(),
                tracker: tracker.clone(),
            };
            let span = tracing::info_span!("upstream", name = %config.name, slot = index);
            tracker.spawn(driver.run().instrument(span));
        }
        Ok(pool)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Connections up now.
    pub(crate) fn connected(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.get(), SlotState::Ready(..)))
            .count()
    }

    pub(crate) fn size(&self) -> usize {
        self.slots.len()
    }

    fn try_ready(&self) -> Option<(&Slot, u64, SendRequest<Bytes>)> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| {
            let slot = &self.slots[(start + i) % n];
            match slot.get() {
                SlotState::Ready(send, generation) => Some((&**slot, generation, send)),
                SlotState::Connecting { .. } | SlotState::DialFailed { .. } => None,
            }
        })
    }

    /// Why no connection is up: the most recent dial or connection error of a slot.
    pub(crate) fn last_error(&self) -> String {
        self.slots
            .iter()
            .find_map(|s| match s.get() {
                SlotState::Connecting {
                    last_error: Some(e),
                } => Some(e.to_string()),
                SlotState::DialFailed { error, .. } => Some(error.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| "no connection established yet".to_owned())
    }

    /// The last dial error, if every slot's last dial failed (none is up or about to dial afresh).
    fn known_down(&self) -> Option<Arc<str>> {
        let epoch = self.dialer.link_epoch();
        let mut error = None;
        for slot in &self.slots {
            match slot.get() {
                SlotState::DialFailed {
                    error: e,
                    link_epoch,
                } if link_epoch == epoch => error = Some(e),
                _ => return None,
            }
        }
        error
    }

    /// A connection ready for a new stream, waiting at most until `deadline` for one to come up;
    /// at once an error while the upstream is known to be down (every slot's last dial failed).
    pub async fn acquire(&self, deadline: Instant) -> Result<SendRequest<Bytes>, UpstreamError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some((slot, generation, send)) = self.try_ready() {
                // `ready` waits while the connection is at its concurrent-stream limit.
                let ready = tokio::time::timeout_at(deadline.into(), send.ready()).await;
                match ready {
                    Ok(Ok(send)) => return Ok(send),
                    Ok(Err(err)) => {
                        debug!(error = %err, "upstream connection takes no new calls; redialling");
                        // The slot's driver dials a replacement at once; wait for it.
                        slot.retire(generation, format!("connection closing: {err}"));
                    }
                    Err(_) => {
                        return Err(
                            self.unavailable("no stream capacity before the deadline".into())
                        )
                    }
                }
            }
            if let Some(error) = self.known_down() {
                return Err(self.unavailable(format!("last dial failed: {error}")));
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(self.unavailable(self.last_error()));
            }
        }
    }

    fn unavailable(&self, reason: String) -> UpstreamError {
        UpstreamError::Unavailable {
            name: self.name.to_string(),
            address: self.address.clone(),
            reason,
        }
    }
}

/// How long a stopping proxy keeps driving an upstream connection so that queued frames (resets of
/// aborted calls, the GOAWAY) reach the upstream. It ends sooner once the connection has no streams.
const STOP_FLUSH: Duration = Duration::from_millis(500);

struct SlotDriver {
    upstream: Arc<str>,
    slot: Arc<Slot>,
    changed: Arc<Notify>,
    connector: Dialer,
    config: UpstreamConfig,
    stop: CancellationToken,
    /// Where retired connections finish their calls.
    tracker: TaskTracker,
}

impl SlotDriver {
    async fn run(self) {
        let open = metrics::upstream_connections_open(&self.upstream);
        let connect_errors = metrics::upstream_connect_errors(&self.upstream);
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut generation = 0u64;
        loop {
            let epoch = self.connector.link_epoch();
            let attempt = tokio::select! {
                _ = self.stop.cancelled() => return,
                attempt = self.dial() => attempt,
            };
            match attempt {
                Ok((send, connection)) => {
                    info!(address = %self.connector.address(), "upstream connected");
                    generation += 1;
                    self.slot.set(SlotState::Ready(send, generation));
                    self.changed.notify_waiters();
                    open.increment(1.0);
                    let since = Instant::now();
                    let ended = self.drive(connection, generation).await;
                    open.decrement(1.0);
                    let reason: Arc<str> = Arc::from(format!("connection lost: {ended}"));
                    self.slot.set(SlotState::Connecting {
                        last_error: Some(reason),
                    });
                    self.changed.notify_waiters();
                    if self.stop.is_cancelled() {
                        return;
                    }
                    warn!(address = %self.connector.address(), reason = %ended, "upstream connection ended");
                    if since.elapsed() >= HEALTHY_AFTER {
                        backoff.reset();
                        continue;
                    }
                }
                Err(err) => {
                    connect_errors.increment(1);
                    warn!(error = %err, retry_in = ?backoff.current(), "upstream connect failed");
                    self.slot.set(SlotState::DialFailed {
                        error: Arc::from(err.to_string()),
                        link_epoch: epoch,
                    });
                    self.changed.notify_waiters();
                }
            }
            // Over a mux link, a new session ends the wait: the link is back, so redial at once.
            let delay = backoff.next_delay();
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
                _ = self.connector.link_back(epoch) => backoff.reset(),
            }
        }
    }

    async fn dial(
        &self,
    ) -> Result<
        (
            SendRequest<Bytes>,
            h2::client::Connection<crate::transport::BoxIo, Bytes>,
        ),
        String,
    > {
        let io = self.connector.connect().await?;
        let io: crate::transport::BoxIo = Box::new(Coalescing::new(io));
        let handshake = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake(io);
        match tokio::time::timeout(self.config.connect_timeout, handshake).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(err)) => Err(format!(
                "HTTP/2 handshake with {}: {err}",
                self.connector.address()
            )),
            Err(_) => Err(format!(
                "HTTP/2 handshake with {} timed out",
                self.connector.address()
            )),
        }
    }

    /// Drives the connection until it ends or is retired, pinging when idle; returns why.
    async fn drive(
        &self,
        mut connection: h2::client::Connection<crate::transport::BoxIo, Bytes>,
        generation: u64,
    ) -> String {
        let mut ping_pong = connection.ping_pong();
        let mut connection = Box::pin(connection);
        loop {
            tokio::select! {
                result = &mut connection => {
                    return match result {
                        Ok(()) => "closed by upstream".to_owned(),
                        Err(err) => err.to_string(),
                    };
                }
                _ = self.stop.cancelled() => {
                    // Drop the pool's handle so that h2 can end the connection once its streams are
                    // gone, and let it write what is queued (the CANCELs of aborted calls, then a
                    // GOAWAY) rather than cutting the socket with frames unsent.
                    self.slot.set(SlotState::Connecting {
                        last_error: Some(Arc::from("proxy stopping")),
                    });
                    let _ = tokio::time::timeout(STOP_FLUSH, &mut connection).await;
                    return "proxy stopping".to_owned();
                }
                () = self.slot.retired.notified() => {
                    if self.slot.is_ready(generation) {
                        continue; // meant for an earlier connection of this slot
                    }
                    // Calls in flight finish on the old connection; new ones get a new one.
                    let stop = self.stop.clone();
                    self.tracker.spawn(async move {
                        tokio::select! {
                            _ = &mut connection => return,
                            _ = stop.cancelled() => {}
                        }
                        let _ = tokio::time::timeout(STOP_FLUSH, connection).await;
                    });
                    return "it takes no new calls (GOAWAY); its calls finish in the background"
                        .to_owned();
                }
                _ = tokio::time::sleep(self.config.keepalive_interval) => {
                    let Some(pinger) = ping_pong.as_mut() else { continue };
                    let ping = tokio::time::timeout(self.config.keepalive_timeout, pinger.ping(h2::Ping::opaque()));
                    tokio::select! {
                        result = &mut connection => {
                            return match result {
                                Ok(()) => "closed by upstream".to_owned(),
                                Err(err) => err.to_string(),
                            };
                        }
                        pong = ping => match pong {
                            Ok(Ok(_)) => {}
                            Ok(Err(err)) => return format!("keepalive ping failed: {err}"),
                            Err(_) => return format!(
                                "no keepalive pong within {:?}", self.config.keepalive_timeout
                            ),
                        }
                    }
                }
            }
        }
    }
}
