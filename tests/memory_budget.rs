//! Memory held for messages Strait must edit. Such a message is gathered whole before it is
//! walked, so a client that declares large messages and sends them slowly could make a translating
//! listener hold hundreds of MiB. Strait charges each one its declared length, at its prefix, to a
//! per-connection budget (`connection_gather_bytes`) and a process-wide one (`[limits]
//! gather_bytes`), and edited requests have a limit of their own (`max_edited_request_bytes`).
//!
//! The attack is the one reported: streams to `StartWorkflowExecution` on one h2c connection, each
//! declaring a large message, sending `0a 06 "orders"` and zeros, and never ending it. Strait runs
//! as a process of its own (the binary under test) in front of the in-process test backend, so its
//! RSS (`VmRSS`, peak `VmHWM` from /proc/<pid>/status) is its alone. Each case checks that the
//! calls over a limit get RESOURCE_EXHAUSTED naming the key, that a normal call on the same
//! connection still succeeds, that the peak RSS stays under the budget plus a small constant, the
//! metrics, and that the budget is given back when the held calls are cancelled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{PingPong, SendStream};
use strait_test_support::backend::Backend;
use strait_test_support::client::{grpc_request, unary};
use strait_test_support::temporal::{parse_metrics, Strait};
use tokio::net::TcpStream;

const START: &str = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";
const MIB: u32 = 1024 * 1024;
/// How long Strait may take to react to anything.
const BOUND: Duration = Duration::from_secs(20);
/// RSS beyond the budget that is not a leak: h2's receive buffers (up to a 1 MiB stream window per
/// stream, 8 MiB per connection), the allocator's slack, the stacks of the calls' tasks.
const SLACK_KIB: u64 = 24 * 1024;

struct Fixture {
    _backend: Backend,
    strait: Strait,
    addr: SocketAddr,
}

impl Fixture {
    /// Strait with a translating listener `clients` (orders = orders-prod) in front of the test
    /// backend; `limits` is the body of its `[listener.limits]` table, `process` that of `[limits]`.
    async fn start(limits: &str, process: &str) -> Fixture {
        let backend = Backend::start().await;
        let upstream = backend.addr;
        let limits = limits.to_owned();
        // Only when set: the table is new, and an empty one keeps the config readable by older
        // builds (the reported attack's defaults case runs against those too).
        let process = match process {
            "" => String::new(),
            process => format!("[limits]\n{process}"),
        };
        let strait = tokio::task::spawn_blocking(move || {
            Strait::start_config(|listen, admin| {
                format!(
                    r#"
                    [runtime]
                    worker_threads = 2
                    [log]
                    level = "error"
                    [admin]
                    listen = "{admin}"
                    {process}
                    [[upstream]]
                    name = "backend"
                    address = "{upstream}"
                    [[listener]]
                    name = "clients"
                    listen = "{listen}"
                    upstream = "backend"
                    [listener.limits]
                    {limits}
                    [listener.translate]
                    namespaces = {{ "orders" = "orders-prod" }}
                    "#
                )
            })
        })
        .await
        .unwrap();
        let addr = strait.address().parse().unwrap();
        Fixture {
            _backend: backend,
            strait,
            addr,
        }
    }

    /// The sum of the `name` samples of listener `clients` whose labels include `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = tokio::task::block_in_place(|| self.strait.metrics());
        parse_metrics(&text)
            .iter()
            .filter(|s| {
                s.name == name
                    && s.label("listener") == Some("clients")
                    && labels.iter().all(|(k, v)| s.label(k) == Some(v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Waits (bounded) until a metric reaches `expected`.
    async fn expect(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let deadline = Instant::now() + BOUND;
        loop {
            let now = self.metric(name, labels);
            if now == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?}: {now}, expected {expected}, after {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (VmRSS, VmHWM) of the Strait process, in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.strait.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{status}"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// An h2c connection, and its PING handle.
async fn connect(addr: SocketAddr) -> (SendRequest<Bytes>, PingPong) {
    let tcp = tokio::time::timeout(BOUND, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let (send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let ping = conn.ping_pong().unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, ping)
}

/// A PING round trip: Strait's HTTP/2 layer has read everything sent before it (so those bytes
/// are in Strait's memory, in h2's buffers or a call's).
async fn ping(ping: &mut PingPong) {
    tokio::time::timeout(BOUND, ping.ping(h2::Ping::opaque()))
        .await
        .expect("PING timed out")
        .unwrap();
}

/// A `StartWorkflowExecution` request for namespace `orders`: the message Strait must translate.
fn start_request() -> Vec<u8> {
    let mut body = vec![0x0a, 6];
    body.extend_from_slice(b"orders");
    body
}

/// A normal call on `client`: it must succeed, with the namespace translated on the way.
async fn normal_call(client: &SendRequest<Bytes>) {
    let reply = tokio::time::timeout(BOUND, unary(client, grpc_request(START), &start_request()))
        .await
        .expect("normal call timed out")
        .expect("normal call failed");
    assert_eq!(reply.status(), 0, "normal call: {}", reply.message());
    // The backend echoes what it received: the upstream-side name.
    let mut upstream = vec![0x0a, 11];
    upstream.extend_from_slice(b"orders-prod");
    assert_eq!(reply.messages, vec![Bytes::from(upstream)]);
}

/// How one attacking stream ended.
enum Hog {
    /// Strait answered (the status and message).
    Refused(i32, String),
    /// Everything was sent and Strait is holding it; the handles keep the stream open.
    Holding {
        _stream: SendStream<Bytes>,
        _response: ResponseFuture,
    },
}

/// One attacking stream: a prefix declaring `declared` bytes, `0a 06 "orders"`, then zeros up to
/// `sent` bytes of body, never ending the message. Sends only as Strait grants window, and stops
/// when Strait answers.
async fn hog(client: SendRequest<Bytes>, declared: u32, sent: usize) -> Hog {
    let mut client = client.ready().await.unwrap();
    let (mut response, mut stream) = client.send_request(grpc_request(START), false).unwrap();
    let mut head = vec![0];
    head.extend_from_slice(&declared.to_be_bytes());
    head.extend_from_slice(&start_request());
    let zeros = Bytes::from(vec![0u8; 64 * 1024]);
    let mut left = sent - start_request().len();
    let mut pending = Bytes::from(head);
    loop {
        if pending.is_empty() {
            if left == 0 {
                return Hog::Holding {
                    _stream: stream,
                    _response: response,
                };
            }
            let n = left.min(zeros.len());
            pending = zeros.slice(..n);
            left -= n;
        }
        stream.reserve_capacity(pending.len());
        tokio::select! {
            biased;
            answer = &mut response => return refused(answer),
            capacity = poll_fn(|cx| stream.poll_capacity(cx)) => match capacity {
                Some(Ok(0)) => {}
                Some(Ok(n)) => {
                    let part = pending.split_to(n.min(pending.len()));
                    if stream.send_data(part, false).is_err() {
                        return refused(response.await);
                    }
                }
                // The stream is closed: the answer is on its way, or came with the reset.
                _ => return refused(response.await),
            },
        }
    }
}

fn refused(answer: Result<http::Response<h2::RecvStream>, h2::Error>) -> Hog {
    let response = answer.expect("Strait reset the stream instead of answering");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    Hog::Refused(
        header("grpc-status").parse().unwrap(),
        header("grpc-message"),
    )
}

/// `streams` hogs at once on `client`; returns (the held ones, the refusal messages).
async fn attack(
    client: &SendRequest<Bytes>,
    streams: usize,
    declared: u32,
    sent: usize,
) -> (Vec<Hog>, Vec<String>) {
    let hogs: Vec<_> = (0..streams)
        .map(|_| tokio::spawn(hog(client.clone(), declared, sent)))
        .collect();
    let mut held = Vec::new();
    let mut refusals = Vec::new();
    for hog in hogs {
        match tokio::time::timeout(BOUND, hog)
            .await
            .expect("a hog stream hung")
            .unwrap()
        {
            Hog::Refused(status, message) => {
                assert_eq!(status, 8, "expected RESOURCE_EXHAUSTED: {message}");
                refusals.push(message);
            }
            holding => held.push(holding),
        }
    }
    (held, refusals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_messages_beyond_the_budgets_are_refused_and_memory_stays_under_them() {
    // Budgets small enough that the attack fills them: 48 MiB per connection, 64 MiB in all.
    let fx = Fixture::start(
        &format!(
            "max_edited_request_bytes = {}\nconnection_gather_bytes = {}",
            32 * MIB,
            48 * MIB
        ),
        &format!("gather_bytes = {}", 64 * MIB),
    )
    .await;
    let (a, mut ping_a) = connect(fx.addr).await;
    normal_call(&a).await;
    let (rss_before, _) = fx.rss_kib();

    // Eight streams declaring 20 MiB and sending 19 MiB: two fit the connection's 48 MiB.
    let started = Instant::now();
    let (held_a, refusals) = attack(&a, 8, 20 * MIB, 19 * MIB as usize).await;
    assert_eq!((held_a.len(), refusals.len()), (2, 6), "{refusals:?}");
    for message in &refusals {
        assert!(
            message.contains(
                "per-connection budget for such messages \
                 (listener.limits.connection_gather_bytes = 50331648 bytes)"
            ),
            "{message}"
        );
    }
    ping(&mut ping_a).await;

    // A second connection: its first stream fits, its second would pass the process's 64 MiB.
    let (b, mut ping_b) = connect(fx.addr).await;
    let (held_b, refusals) = attack(&b, 8, 20 * MIB, 19 * MIB as usize).await;
    assert_eq!((held_b.len(), refusals.len()), (1, 7), "{refusals:?}");
    for message in &refusals {
        assert!(
            message.contains(
                "process-wide budget for such messages (limits.gather_bytes = 67108864 bytes)"
            ),
            "{message}"
        );
    }
    ping(&mut ping_b).await;
    let attack_took = started.elapsed();

    fx.expect("strait_gather_bytes", &[], f64::from(60 * MIB))
        .await;
    let (rss, peak) = fx.rss_kib();
    eprintln!(
        "budgets: RSS {} MiB before, {} MiB holding 57 of 60 MiB charged, peak {} MiB \
         (process budget 64 MiB); attack {attack_took:?}",
        rss_before / 1024,
        rss / 1024,
        peak / 1024
    );
    assert!(
        peak <= rss_before + 64 * 1024 + SLACK_KIB,
        "peak RSS {peak} KiB, {rss_before} KiB before: more than the 64 MiB budget + {SLACK_KIB} KiB"
    );

    // The other calls go on: a normal call on the attacker's own connection succeeds.
    normal_call(&a).await;
    fx.expect(
        "strait_gather_refusals_total",
        &[("reason", "connection")],
        6.0,
    )
    .await;
    fx.expect(
        "strait_gather_refusals_total",
        &[("reason", "process")],
        7.0,
    )
    .await;
    fx.expect(
        "strait_relay_errors_total",
        &[("reason", "gather_budget")],
        13.0,
    )
    .await;
    fx.expect(
        "strait_calls_total",
        &[("code", "RESOURCE_EXHAUSTED")],
        13.0,
    )
    .await;

    // Cancelled (A's streams reset) or cut off (B's connection closed): the budget comes back.
    drop(held_a);
    drop((held_b, b, ping_b));
    fx.expect("strait_gather_bytes", &[], 0.0).await;
    fx.expect("strait_calls_in_flight", &[], 0.0).await;
    // All of it: a stream may again take the connection's whole budget less one normal call.
    let (held, refusals) = attack(&a, 2, 20 * MIB, 19 * MIB as usize).await;
    assert_eq!((held.len(), refusals.len()), (2, 0), "{refusals:?}");
    normal_call(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_attack_is_refused_at_each_prefix_with_default_limits() {
    // As reported: defaults, eight streams declaring 101 MiB and sending 100 MiB. A request Strait
    // edits may be at most 4 MiB (what Temporal's frontend accepts), so each is refused at once.
    let fx = Fixture::start("", "").await;
    let (client, mut ping_client) = connect(fx.addr).await;
    normal_call(&client).await;
    let (rss_before, _) = fx.rss_kib();
    let started = Instant::now();
    let (held, refusals) = attack(&client, 8, 101 * MIB, 100 * MIB as usize).await;
    let took = started.elapsed();
    assert!(held.is_empty());
    assert_eq!(refusals.len(), 8);
    for message in &refusals {
        assert!(
            message.contains(
                "a 105906176-byte message must be held whole to be edited, and that is over the \
                 limit of 4194304 bytes for such messages (listener.limits.max_edited_request_bytes)"
            ),
            "{message}"
        );
    }
    ping(&mut ping_client).await;
    normal_call(&client).await;
    let (_, peak) = fx.rss_kib();
    eprintln!(
        "reported attack, defaults: RSS {} MiB before, peak {} MiB; refused in {took:?}",
        rss_before / 1024,
        peak / 1024
    );
    assert!(
        peak <= rss_before + SLACK_KIB,
        "peak RSS {peak} KiB, {rss_before} KiB before"
    );
    fx.expect(
        "strait_relay_errors_total",
        &[("reason", "message_too_large")],
        8.0,
    )
    .await;
    fx.expect("strait_gather_bytes", &[], 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_attack_meets_the_default_connection_budget_when_large_requests_are_allowed() {
    // With edited requests allowed up to max_message_bytes, the default per-connection budget
    // (64 MiB) is what refuses a 101 MiB message: at its prefix, before any of it is stored.
    let fx = Fixture::start(&format!("max_edited_request_bytes = {}", 128 * MIB), "").await;
    let (client, mut ping_client) = connect(fx.addr).await;
    normal_call(&client).await;
    let (rss_before, _) = fx.rss_kib();
    let (held, refusals) = attack(&client, 8, 101 * MIB, 100 * MIB as usize).await;
    assert!(held.is_empty());
    assert_eq!(refusals.len(), 8);
    for message in &refusals {
        assert!(
            message.contains("(listener.limits.connection_gather_bytes = 67108864 bytes)"),
            "{message}"
        );
    }
    ping(&mut ping_client).await;
    normal_call(&client).await;
    let (_, peak) = fx.rss_kib();
    assert!(
        peak <= rss_before + SLACK_KIB,
        "peak RSS {peak} KiB, {rss_before} KiB before"
    );
    fx.expect(
        "strait_gather_refusals_total",
        &[("reason", "connection")],
        8.0,
    )
    .await;
}
