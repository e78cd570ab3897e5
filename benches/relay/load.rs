//! The h2 load generator: `concurrency` workers over `connections` HTTP/2
//! connections, each worker running one call at a time (unary) or owning one
//! long-lived bidi stream with one message in flight (ping-pong). Every
//! response is validated: `:status 200`, the echoed bytes equal the bytes
//! sent, and `grpc-status: 0` in the trailers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::RecvStream;
use http::{HeaderValue, Method, Request, Uri};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::h2cfg;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// After the window ends, how long workers get to finish their last call
/// (and bidi streams to half-close and receive trailers).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off after a failed call, so a dead connection does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Unary,
    Bidi,
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub target: SocketAddr,
    pub kind: Kind,
    pub msg_size: usize,
    pub concurrency: usize,
    pub connections: usize,
    pub warmup: Duration,
    pub window: Duration,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Calls (unary) or message round trips (bidi) completed in the window.
    pub calls: u64,
    /// Actual length of the measured window.
    pub elapsed: Duration,
    /// Sorted per-call round-trip latencies of the window, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Failed calls / streams over warmup + window + drain.
    pub failures: u64,
    pub first_error: Option<String>,
    /// Workers that did not finish within [`DRAIN_TIMEOUT`] after the window.
    pub stuck: usize,
}

impl Outcome {
    pub fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ns(&self, p: f64) -> Option<u64> {
        let n = self.latencies_ns.len();
        if n == 0 {
            return None;
        }
        let idx = ((n - 1) as f64 * p).round() as usize;
        Some(self.latencies_ns[idx.min(n - 1)])
    }
}

#[derive(Default)]
struct WorkerOut {
    calls: u64,
    latencies_ns: Vec<u64>,
    failures: u64,
    first_error: Option<String>,
}

impl WorkerOut {
    fn fail(&mut self, err: String) {
        self.failures += 1;
        if self.first_error.is_none() {
            self.first_error = Some(err);
        }
    }

    fn record(&mut self, phase: &AtomicU8, started: Instant) {
        if phase.load(Ordering::Relaxed) == MEASURE {
            self.calls += 1;
            self.latencies_ns.push(started.elapsed().as_nanos() as u64);
        }
    }
}

/// Runs one measurement. `sample` is called right before the measured window
/// starts and right after it ends (used for `/proc` CPU sampling).
pub fn run<S>(
    rt: &Runtime,
    spec: &Spec,
    mut sample: impl FnMut() -> S,
) -> Result<(Outcome, S, S), String> {
    rt.block_on(async {
        let uri: Uri = format!(
            "http://{}/strait.bench.v1.EchoService/{}",
            spec.target,
            match spec.kind {
                Kind::Unary => "Unary",
                Kind::Bidi => "BidiStream",
            }
        )
        .parse()
        .map_err(|e| format!("uri: {e}"))?;

        let mut senders = Vec::new();
        let mut drivers = Vec::new();
        for _ in 0..spec.connections.max(1) {
            let (sender, driver) = connect(spec.target).await?;
            senders.push(sender);
            drivers.push(driver);
        }

        let phase = Arc::new(AtomicU8::new(WARMUP));
        let mut workers = Vec::with_capacity(spec.concurrency);
        for i in 0..spec.concurrency {
            let sender = senders[i % senders.len()].clone();
            let uri = uri.clone();
            let phase = phase.clone();
            let msgs = [
                grpc_message(spec.msg_size, i, 0),
                grpc_message(spec.msg_size, i, 1),
            ];
            let kind = spec.kind;
            workers.push(tokio::spawn(async move {
                match kind {
                    Kind::Unary => unary_worker(sender, uri, msgs, phase).await,
                    Kind::Bidi => bidi_worker(sender, uri, msgs, phase).await,
                }
            }));
        }
        drop(senders);

        tokio::time::sleep(spec.warmup).await;
        let before = sample();
        let t0 = Instant::now();
        phase.store(MEASURE, Ordering::Relaxed);
        tokio::time::sleep(spec.window).await;
        phase.store(STOP, Ordering::Relaxed);
        let elapsed = t0.elapsed();
        let after = sample();

        let mut outcome = Outcome {
            elapsed,
            ..Outcome::default()
        };
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        for mut handle in workers {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(out)) => {
                    outcome.calls += out.calls;
                    outcome.failures += out.failures;
                    outcome.latencies_ns.extend_from_slice(&out.latencies_ns);
                    if outcome.first_error.is_none() {
                        outcome.first_error = out.first_error;
                    }
                }
                Ok(Err(join_err)) => {
                    outcome.failures += 1;
                    outcome
                        .first_error
                        .get_or_insert(format!("worker panicked: {join_err}"));
                }
                Err(_) => {
                    handle.abort();
                    outcome.stuck += 1;
                }
            }
        }
        for driver in drivers {
            driver.abort();
        }
        outcome.latencies_ns.sort_unstable();
        Ok((outcome, before, after))
    })
}

async fn connect(
    target: SocketAddr,
) -> Result<(SendRequest<Bytes>, tokio::task::JoinHandle<()>), String> {
    let sock = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(h2cfg::STREAM_WINDOW)
        .initial_connection_window_size(h2cfg::CONNECTION_WINDOW)
        .max_frame_size(h2cfg::MAX_FRAME_SIZE);
    let (sender, conn) = builder
        .handshake::<_, Bytes>(sock)
        .await
        .map_err(|e| format!("h2 handshake with {target}: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, driver))
}

/// A gRPC length-prefixed message (uncompressed) with a `size`-byte payload
/// that is distinct per worker and per variant, so cross-talk between streams
/// or a stale/duplicated message on a bidi stream fails validation.
fn grpc_message(size: usize, worker: usize, variant: u8) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + size);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(size).expect("message size fits u32"));
    let mut x = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(variant);
    for _ in 0..size {
        // xorshift64: cheap, non-repeating-looking payload.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.put_u8(x as u8);
    }
    buf.freeze()
}

fn grpc_request(uri: &Uri) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.clone();
    let headers = req.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    req
}

async fn ready(sender: &mut SendRequest<Bytes>) -> Result<(), String> {
    std::future::poll_fn(|cx| sender.poll_ready(cx))
        .await
        .map_err(|e| format!("poll_ready: {e}"))
}

async fn open_stream(
    sender: &mut SendRequest<Bytes>,
    uri: &Uri,
) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), String> {
    ready(sender).await?;
    sender
        .send_request(grpc_request(uri), false)
        .map_err(|e| format!("send_request: {e}"))
}

fn check_head(resp: &http::Response<RecvStream>) -> Result<(), String> {
    if resp.status() != http::StatusCode::OK {
        return Err(format!("response :status {}", resp.status()));
    }
    if let Some(status) = resp.headers().get("grpc-status") {
        // Trailers-only response: always an error for an echo.
        return Err(format!("trailers-only response, grpc-status {status:?}"));
    }
    Ok(())
}

/// Reads exactly `expected.len()` echoed bytes and compares them as they
/// arrive (no copy), releasing flow-control capacity.
async fn recv_echo(body: &mut RecvStream, expected: &[u8]) -> Result<(), String> {
    let mut matched = 0;
    while matched < expected.len() {
        let chunk = match body.data().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(format!("response body: {e}")),
            None => {
                let trailers = body.trailers().await.ok().flatten();
                return Err(format!(
                    "response ended after {matched} of {} bytes (trailers {trailers:?})",
                    expected.len()
                ));
            }
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        let end = matched + chunk.len();
        if end > expected.len() {
            return Err(format!("echo longer than sent: {end} > {}", expected.len()));
        }
        if chunk[..] != expected[matched..end] {
            return Err(format!("echoed bytes differ in range {matched}..{end}"));
        }
        matched = end;
    }
    Ok(())
}

/// After the last message: the body must end without more data and carry
/// `grpc-status: 0` in its trailers.
async fn recv_end(body: &mut RecvStream) -> Result<(), String> {
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("response body: {e}"))?;
        if !chunk.is_empty() {
            return Err(format!("{} unexpected bytes after the echo", chunk.len()));
        }
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| format!("response trailers: {e}"))?
        .ok_or_else(|| "response without trailers".to_string())?;
    match trailers.get("grpc-status") {
        Some(v) if v == "0" => Ok(()),
        other => Err(format!("grpc-status {other:?}")),
    }
}

async fn unary_call(sender: &mut SendRequest<Bytes>, uri: &Uri, msg: &Bytes) -> Result<(), String> {
    let (response, mut tx) = open_stream(sender, uri).await?;
    tx.send_data(msg.clone(), true)
        .map_err(|e| format!("send_data: {e}"))?;
    let resp = response.await.map_err(|e| format!("response: {e}"))?;
    check_head(&resp)?;
    let mut body = resp.into_body();
    recv_echo(&mut body, msg).await?;
    recv_end(&mut body).await
}

async fn unary_worker(
    mut sender: SendRequest<Bytes>,
    uri: Uri,
    msgs: [Bytes; 2],
    phase: Arc<AtomicU8>,
) -> WorkerOut {
    let mut out = WorkerOut::default();
    let mut i = 0usize;
    while phase.load(Ordering::Relaxed) != STOP {
        let started = Instant::now();
        match unary_call(&mut sender, &uri, &msgs[i & 1]).await {
            Ok(()) => out.record(&phase, started),
            Err(e) => {
                out.fail(e);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
        i += 1;
    }
    out
}

/// One long-lived bidi stream, ping-pong: send a message, wait for its echo,
/// repeat until the window ends; then half-close and check the trailers.
async fn bidi_stream(
    sender: &mut SendRequest<Bytes>,
    uri: &Uri,
    msgs: &[Bytes; 2],
    phase: &AtomicU8,
    out: &mut WorkerOut,
) -> Result<(), String> {
    let (response, mut tx) = open_stream(sender, uri).await?;
    // Send the first message before awaiting the response head: a server (or
    // proxy) is allowed to hold the head back until the first message.
    let mut started = Instant::now();
    tx.send_data(msgs[0].clone(), false)
        .map_err(|e| format!("send_data: {e}"))?;
    let resp = response.await.map_err(|e| format!("response: {e}"))?;
    check_head(&resp)?;
    let mut body = resp.into_body();
    let mut i = 0usize;
    loop {
        recv_echo(&mut body, &msgs[i & 1]).await?;
        out.record(phase, started);
        i += 1;
        if phase.load(Ordering::Relaxed) == STOP {
            break;
        }
        started = Instant::now();
        tx.send_data(msgs[i & 1].clone(), false)
            .map_err(|e| format!("send_data: {e}"))?;
    }
    tx.send_data(Bytes::new(), true)
        .map_err(|e| format!("half-close: {e}"))?;
    recv_end(&mut body).await
}

async fn bidi_worker(
    mut sender: SendRequest<Bytes>,
    uri: Uri,
    msgs: [Bytes; 2],
    phase: Arc<AtomicU8>,
) -> WorkerOut {
    let mut out = WorkerOut::default();
    while phase.load(Ordering::Relaxed) != STOP {
        match bidi_stream(&mut sender, &uri, &msgs, &phase, &mut out).await {
            Ok(()) => break,
            Err(e) => {
                out.fail(e);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    out
}
