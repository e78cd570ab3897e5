//! The server side: the accept loop of one listener (connection limit, TLS handshake on the
//! connection's own task) and each client connection's HTTP/2 driver, which spawns one task per call,
//! closes idle connections and, on shutdown, sends GOAWAY and keeps serving until its calls drain;
//! when the grace period is over, its calls end themselves with UNAVAILABLE before it closes.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, Instrument};

use super::call::relay_call;
use super::pump::SEND_STALL_TIMEOUT;
use super::watch::{ConnWatch, Watched};
use super::ListenerContext;
use crate::metrics::{CloseReason, RefusalKind};
use crate::telemetry::warn_limited;
use crate::transport::coalesce::Coalescing;
use crate::transport::listen::Listener;
use crate::transport::BoxIo;

/// Streams reset by the client but not yet accepted by us, and resets we send, are bounded: the
/// HTTP/2 rapid-reset attack (CVE-2023-44487) makes a server do work for streams it never serves.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 50;
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// h2's send buffer per stream: bounds memory when a client is slow to read.
const MAX_SEND_BUFFER: usize = 256 * 1024;
/// After the grace period, how long a connection may take to send its calls' final statuses and
/// its GOAWAY before it is closed regardless (a client that reads nothing holds them up).
pub(crate) const ABORT_FLUSH: Duration = Duration::from_secs(2);

/// Signals that drive a connection's lifecycle.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    /// Stop accepting; GOAWAY every connection; let calls drain.
    pub(crate) drain: CancellationToken,
    /// Drain time is over: every call left ends with UNAVAILABLE, then the connection closes.
    pub(crate) abort: CancellationToken,
}

/// Accepts connections until `lifecycle.drain` fires.
pub(crate) async fn serve_listener(
    listener: Listener,
    ctx: Arc<ListenerContext>,
    lifecycle: Lifecycle,
    connections: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let handshaker = listener.handshaker();
    loop {
        let accepted = tokio::select! {
            _ = lifecycle.drain.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn_limited!(listener = %ctx.name, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            ctx.metrics.refused(RefusalKind::Limit);
            debug!(listener = %ctx.name, %peer, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let span = info_span!("conn", listener = %ctx.name, %peer);
        let (ctx, lifecycle, handshaker) =
            (Arc::clone(&ctx), lifecycle.clone(), handshaker.clone());
        connections.spawn(
            async move {
                let io = match handshaker
                    .handshake(stream, ctx.limits.handshake_timeout)
                    .await
                {
                    Ok(io) => io,
                    Err(err) => {
                        ctx.metrics.refused(RefusalKind::Handshake);
                        debug!(error = %err, "TLS handshake failed");
                        return;
                    }
                };
                serve_connection(io, ctx, lifecycle, Some(permit)).await;
            }
            .instrument(span),
        );
    }
}

/// Calls open on a connection and when the last one ended, for the idle timeout.
struct Activity {
    open: AtomicUsize,
    last_end_ms: AtomicU64,
    since: Instant,
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        Some(self.since.elapsed().saturating_sub(last))
    }
}

/// Serves every byte stream arriving on `inbound` (e.g. streams a peer opens on a mux session) as a
/// client connection of `ctx`, until `lifecycle.drain` fires or the channel closes.
pub(crate) async fn serve_streams(
    mut inbound: tokio::sync::mpsc::Receiver<BoxIo>,
    ctx: Arc<ListenerContext>,
    lifecycle: Lifecycle,
    connections: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(ctx.limits.max_connections));
    loop {
        let io = tokio::select! {
            _ = lifecycle.drain.cancelled() => return,
            io = inbound.recv() => match io {
                Some(io) => io,
                None => return,
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            ctx.metrics.refused(RefusalKind::Limit);
            continue;
        };
        let span = info_span!("conn", listener = %ctx.name, peer = "mux");
        connections.spawn(
            serve_connection(io, Arc::clone(&ctx), lifecycle.clone(), Some(permit))
                .instrument(span),
        );
    }
}

/// Serves one established client connection (TCP, TLS or a mux stream) over HTTP/2.
pub(crate) async fn serve_connection(
    io: BoxIo,
    ctx: Arc<ListenerContext>,
    lifecycle: Lifecycle,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let limits = &ctx.limits;
    let watch = ConnWatch::new(ctx.metrics.violations.clone());
    // The watch reads what h2 writes; coalescing batches it before it reaches the socket.
    let io = Coalescing::new(Watched::new(io, Arc::clone(&watch)));
    let handshake = h2::server::Builder::new()
        .initial_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .handshake::<_, bytes::Bytes>(io);
    let mut connection = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => {
            ctx.metrics.refused(RefusalKind::Http2);
            debug!(error = %err, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.refused(RefusalKind::Http2);
            debug!("HTTP/2 preface not received in time");
            return;
        }
    };
    ctx.metrics.connections_total.increment(1);
    ctx.metrics.connections_open.increment(1.0);
    debug!("connection open");

    // Shared by the calls of this connection: what one client may make the proxy hold whole.
    let gather_budget = Arc::new(super::gather::Budget::new(
        limits.connection_gather_bytes,
        format!("{}.connection_gather_bytes", ctx.limits_key),
    ));
    let activity = Arc::new(Activity {
        open: AtomicUsize::new(0),
        last_end_ms: AtomicU64::new(0),
        since: Instant::now(),
    });
    let idle_timeout = limits.idle_timeout;
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut ping_pong = connection.ping_pong();
    let keepalive = tokio::time::sleep(limits.keepalive_interval);
    tokio::pin!(keepalive);
    let mut awaiting_pong = false;
    let mut draining = false;
    // After the grace period: first the calls end themselves (they watch `lifecycle.abort`) while
    // the connection keeps running to send their statuses; then, at `abort_flush`, GOAWAY now.
    let mut aborting = false;
    let mut forced = false;
    let abort_flush = tokio::time::sleep(ABORT_FLUSH);
    tokio::pin!(abort_flush);
    // Why the connection is closing, once Strait has started closing it.
    let mut closing = None;
    let reason = loop {
        tokio::select! {
            () = &mut keepalive => {
                if awaiting_pong {
                    debug!(timeout = ?limits.keepalive_timeout, "no keepalive pong; closing connection");
                    connection.abrupt_shutdown(h2::Reason::NO_ERROR);
                    break CloseReason::Keepalive;
                }
                if let Some(pinger) = ping_pong.as_mut() {
                    awaiting_pong = pinger.send_ping(h2::Ping::opaque()).is_ok();
                }
                let next = if awaiting_pong { limits.keepalive_timeout } else { limits.keepalive_interval };
                keepalive.as_mut().reset((Instant::now() + next).into());
            }
            pong = poll_fn(|cx| match ping_pong.as_mut() {
                Some(pinger) => pinger.poll_pong(cx),
                None => Poll::Pending,
            }), if awaiting_pong => {
                awaiting_pong = false;
                if pong.is_err() {
                    break closing.unwrap_or(CloseReason::Client);
                }
                keepalive.as_mut().reset((Instant::now() + limits.keepalive_interval).into());
            }
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    watch.accepted(respond.stream_id());
                    activity.open.fetch_add(1, Ordering::AcqRel);
                    let ctx = Arc::clone(&ctx);
                    let activity = Arc::clone(&activity);
                    let gather_budget = Arc::clone(&gather_budget);
                    let span = tracing::debug_span!("rpc", method = %request.uri().path());
                    let stall = ctx.limits.send_stall_timeout;
                    let abort = lifecycle.abort.clone();
                    // Boxed: the call's future is several KiB, and tokio moves an unboxed one
                    // into its task cell and back out on completion (memcpy was 18% of the
                    // proxy's instructions on small unary calls).
                    tokio::spawn(Box::pin(SEND_STALL_TIMEOUT.scope(
                        stall,
                        async move {
                            relay_call(ctx, request, respond, abort, gather_budget).await;
                            let now = activity.since.elapsed().as_millis() as u64;
                            activity.last_end_ms.store(now, Ordering::Release);
                            activity.open.fetch_sub(1, Ordering::AcqRel);
                        }
                        .instrument(span),
                    )));
                }
                Some(Err(err)) => {
                    // h2 found the client at fault and sent GOAWAY with an error (counted by kind in
                    // `watch`); anything else is the client going away.
                    if err.is_go_away() && err.is_library() {
                        debug!(error = %err, "HTTP/2 protocol error from client");
                        break CloseReason::ProtocolError;
                    }
                    debug!(error = %err, "connection ended");
                    break closing.unwrap_or(CloseReason::Client);
                }
                None => break closing.unwrap_or(CloseReason::Client),
            },
            _ = lifecycle.drain.cancelled(), if !draining => {
                draining = true;
                closing = Some(CloseReason::Shutdown);
                connection.graceful_shutdown();
            }
            _ = lifecycle.abort.cancelled(), if !aborting => {
                aborting = true;
                closing = Some(CloseReason::Shutdown);
                if !draining {
                    draining = true;
                    connection.graceful_shutdown();
                }
                abort_flush.as_mut().reset((Instant::now() + ABORT_FLUSH).into());
            }
            () = &mut abort_flush, if aborting => {
                if forced {
                    debug!("connection did not close after its final GOAWAY; dropping it");
                    break CloseReason::Shutdown;
                }
                // h2 sends this GOAWAY and closes; accept() then ends the loop.
                debug!("calls still open after the grace period; closing the connection");
                forced = true;
                connection.abrupt_shutdown(h2::Reason::NO_ERROR);
                abort_flush.as_mut().reset((Instant::now() + Duration::from_secs(1)).into());
            }
            () = &mut idle, if !draining => {
                match activity.idle_for() {
                    Some(idle_for) if idle_for >= idle_timeout => {
                        debug!(?idle_for, "idle connection; sending GOAWAY");
                        draining = true;
                        closing = Some(CloseReason::Idle);
                        connection.graceful_shutdown();
                    }
                    Some(idle_for) => idle.as_mut().reset((Instant::now() + idle_timeout - idle_for).into()),
                    None => idle.as_mut().reset((Instant::now() + idle_timeout).into()),
                }
            }
        }
    };
    ctx.metrics.closed(reason);
    ctx.metrics.connections_open.decrement(1.0);
}
