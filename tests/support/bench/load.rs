//! The h2 load generator: `concurrency` workers over `connections` HTTP/2
//! connections, each worker running one call at a time (unary) or owning one
//! long-lived bidi stream with one message in flight (ping-pong). Every
//! response is validated: `:status 200`, the echoed bytes equal the bytes
//! sent, and `grpc-status: 0` in the trailers.
//!
//! Two phases exist: [`run`] is closed-loop (each worker issues its next call
//! as soon as the previous one is done: throughput), [`run_fixed_rate`] is
//! open-loop (calls are due on a fixed schedule and latency is measured from
//! the time a call was due, so a slow proxy cannot hide its queueing delay by
//! slowing the client down: no coordinated omission).
//!
//! Every message is a `strait.bench.v1.EchoMessage { string namespace = 1;
//! bytes payload = 2; }` with namespace [`CLIENT_NAMESPACE`] and a payload
//! padding it to the message size, so a translating proxy has a namespace to
//! rename in every message, each way.

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

use super::echo::CLIENT_NAMESPACE;
use super::h2cfg;

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

    /// A call that was due at `due` completed now.
    fn record_since(&mut self, due: tokio::time::Instant) {
        self.calls += 1;
        self.latencies_ns.push(due.elapsed().as_nanos() as u64);
    }
}

impl Outcome {
    /// Waits for every worker until `deadline`; a worker still running then counts as stuck.
    async fn collect(
        &mut self,
        workers: Vec<tokio::task::JoinHandle<WorkerOut>>,
        deadline: tokio::time::Instant,
    ) {
        let outcome = self;
        for mut handle in workers {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(out)) => outcome.absorb(out),
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
    }

    fn absorb(&mut self, out: WorkerOut) {
        self.calls += out.calls;
        self.failures += out.failures;
        self.latencies_ns.extend_from_slice(&out.latencies_ns);
        if self.first_error.is_none() {
            self.first_error = out.first_error;
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
        let uri = method_uri(spec.target, spec.kind)?;

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
        outcome.collect(workers, deadline).await;
        for driver in drivers {
            driver.abort();
        }
        outcome.latencies_ns.sort_unstable();
        Ok((outcome, before, after))
    })
}

/// `http://<target>/strait.bench.v1.EchoService/{Unary,BidiStream}`.
pub fn method_uri(target: SocketAddr, kind: Kind) -> Result<Uri, String> {
    format!(
        "http://{target}/strait.bench.v1.EchoService/{}",
        match kind {
            Kind::Unary => "Unary",
            Kind::Bidi => "BidiStream",
        }
    )
    .parse()
    .map_err(|e| format!("uri: {e}"))
}

pub async fn connect(
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

/// A gRPC length-prefixed message (uncompressed) of exactly `size` bytes:
/// an `EchoMessage` with namespace [`CLIENT_NAMESPACE`] and a payload that is
/// distinct per worker and per variant, so cross-talk between streams or a
/// stale/duplicated message on a bidi stream fails validation.
pub fn grpc_message(size: usize, worker: usize, variant: u8) -> Bytes {
    let ns = CLIENT_NAMESPACE.as_bytes();
    let head = 2 + ns.len() + 1; // namespace tag + length + bytes, payload tag
                                 // The payload length varint takes 1..=5 bytes; pick the payload length
                                 // whose varint makes the message exactly `size` bytes.
    let payload_len = (1..=5)
        .filter_map(|w| size.checked_sub(head + w))
        .find(|&p| varint_len(p as u64) + head + p == size)
        .expect("message size reachable (>= 9 bytes)");
    let mut buf = BytesMut::with_capacity(5 + size);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(size).expect("message size fits u32"));
    buf.put_u8(0x0a); // field 1, length-delimited
    buf.put_u8(u8::try_from(ns.len()).expect("short namespace"));
    buf.put_slice(ns);
    buf.put_u8(0x12); // field 2, length-delimited
    put_varint(&mut buf, payload_len as u64);
    let mut x = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(variant);
    for _ in 0..payload_len {
        // xorshift64: cheap, non-repeating-looking payload.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.put_u8(x as u8);
    }
    debug_assert_eq!(buf.len(), 5 + size);
    buf.freeze()
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
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

pub async fn open_stream(
    sender: &mut SendRequest<Bytes>,
    uri: &Uri,
) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), String> {
    ready(sender).await?;
    sender
        .send_request(grpc_request(uri), false)
        .map_err(|e| format!("send_request: {e}"))
}

pub fn check_head(resp: &http::Response<RecvStream>) -> Result<(), String> {
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
pub async fn recv_echo(body: &mut RecvStream, expected: &[u8]) -> Result<(), String> {
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
pub async fn recv_end(body: &mut RecvStream) -> Result<(), String> {
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

/// The open-loop phase: `rate` calls per second for `duration`, call `k` due
/// at `t0 + k / rate`. The calls are spread over `spec.concurrency` slots
/// (slot `j` makes calls `j, j + S, j + 2S, …`); a slot whose previous call
/// is late starts the next one at once, and every latency is measured from
/// the time the call was due. For bidi each slot owns one long-lived stream
/// and a call is one message round trip on it. `spec.warmup` and
/// `spec.window` are not used.
pub fn run_fixed_rate(
    rt: &Runtime,
    spec: &Spec,
    rate: f64,
    duration: Duration,
) -> Result<Outcome, String> {
    rt.block_on(async {
        let uri = method_uri(spec.target, spec.kind)?;
        let mut senders = Vec::new();
        let mut drivers = Vec::new();
        for _ in 0..spec.connections.max(1) {
            let (sender, driver) = connect(spec.target).await?;
            senders.push(sender);
            drivers.push(driver);
        }
        let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
        let slots = spec.concurrency.max(1).min(total as usize);
        let interval = Duration::from_secs_f64(1.0 / rate);
        // Let every slot set up before the first call is due.
        let t0 = tokio::time::Instant::now() + Duration::from_millis(100);
        let mut workers = Vec::with_capacity(slots);
        for j in 0..slots {
            let mut sender = senders[j % senders.len()].clone();
            let uri = uri.clone();
            let msgs = [
                grpc_message(spec.msg_size, j, 0),
                grpc_message(spec.msg_size, j, 1),
            ];
            let kind = spec.kind;
            let due = move |k: u64| t0 + interval.mul_f64(k as f64);
            let calls = (j as u64..total).step_by(slots);
            workers.push(tokio::spawn(async move {
                let mut out = WorkerOut::default();
                match kind {
                    Kind::Unary => {
                        for (i, k) in calls.enumerate() {
                            tokio::time::sleep_until(due(k)).await;
                            match unary_call(&mut sender, &uri, &msgs[i & 1]).await {
                                Ok(()) => out.record_since(due(k)),
                                Err(e) => out.fail(e),
                            }
                        }
                    }
                    Kind::Bidi => {
                        if let Err(e) =
                            paced_bidi(&mut sender, &uri, &msgs, calls, due, &mut out).await
                        {
                            out.fail(e);
                        }
                    }
                }
                out
            }));
        }
        drop(senders);
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + duration + DRAIN_TIMEOUT;
        let mut outcome = Outcome::default();
        outcome.collect(workers, deadline).await;
        outcome.elapsed = started.elapsed();
        for driver in drivers {
            driver.abort();
        }
        outcome.latencies_ns.sort_unstable();
        Ok(outcome)
    })
}

/// One bidi stream carrying the calls `calls`, each message sent when due.
async fn paced_bidi(
    sender: &mut SendRequest<Bytes>,
    uri: &Uri,
    msgs: &[Bytes; 2],
    calls: impl Iterator<Item = u64>,
    due: impl Fn(u64) -> tokio::time::Instant,
    out: &mut WorkerOut,
) -> Result<(), String> {
    let calls: Vec<u64> = calls.collect();
    let Some(&first) = calls.first() else {
        return Ok(());
    };
    tokio::time::sleep_until(due(first)).await;
    let (response, mut tx) = open_stream(sender, uri).await?;
    // The head may be held back until the first message: await it only
    // after sending one.
    tx.send_data(msgs[0].clone(), false)
        .map_err(|e| format!("send_data: {e}"))?;
    let resp = response.await.map_err(|e| format!("response: {e}"))?;
    check_head(&resp)?;
    let mut body = resp.into_body();
    recv_echo(&mut body, &msgs[0]).await?;
    out.record_since(due(first));
    for (i, &k) in calls.iter().enumerate().skip(1) {
        tokio::time::sleep_until(due(k)).await;
        tx.send_data(msgs[i & 1].clone(), false)
            .map_err(|e| format!("send_data: {e}"))?;
        recv_echo(&mut body, &msgs[i & 1]).await?;
        out.record_since(due(k));
    }
    tx.send_data(Bytes::new(), true)
        .map_err(|e| format!("half-close: {e}"))?;
    recv_end(&mut body).await
}

/// One unary call to `target`, bounded by `timeout`: a readiness probe that
/// only passes when the whole path (proxy and backend) echoes correctly.
pub fn probe(rt: &Runtime, target: SocketAddr, timeout: Duration) -> Result<(), String> {
    rt.block_on(async {
        let call = async {
            let uri = method_uri(target, Kind::Unary)?;
            let (mut sender, driver) = connect(target).await?;
            let result = unary_call(&mut sender, &uri, &grpc_message(100, 0, 0)).await;
            driver.abort();
            result
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    })
}

/// The echo backend's count of messages that carried the upstream-side
/// namespace (see `echo::STATS_PATH`), asked directly.
pub fn echo_translated_count(rt: &Runtime, echo: SocketAddr) -> Result<u64, String> {
    rt.block_on(async {
        let call = async {
            let uri: Uri = format!("http://{echo}{}", super::echo::STATS_PATH)
                .parse()
                .map_err(|e| format!("uri: {e}"))?;
            let (mut sender, driver) = connect(echo).await?;
            let result = async {
                // No request body: the backend answers at once, without
                // reading one.
                ready(&mut sender).await?;
                let (response, _) = sender
                    .send_request(grpc_request(&uri), true)
                    .map_err(|e| format!("send_request: {e}"))?;
                let resp = response.await.map_err(|e| format!("response: {e}"))?;
                let mut body = resp.into_body();
                let mut text = Vec::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.map_err(|e| format!("stats body: {e}"))?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    text.extend_from_slice(&chunk);
                }
                String::from_utf8_lossy(&text)
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| format!("stats answer {text:?}: {e}"))
            }
            .await;
            driver.abort();
            result
        };
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .map_err(|_| "echo stats: no answer within 5 s".to_string())?
    })
}
