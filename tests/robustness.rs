//! Robustness under abuse. Each case runs a real Strait process (the binary under test) in front of
//! the in-process test backend, attacks it, mostly over raw HTTP/2 (tests/support/h2raw.rs), and
//! asserts three things: the offender gets a clear error (GOAWAY or RST_STREAM with a reason, a
//! gRPC status with a message) or is disconnected, within a bound; a well-behaved client's calls
//! succeed during and after the attack; and a metric counts it. Flood cases also check that
//! Strait's memory and live tasks come back down.
//!
//! Strait runs as a process of its own so that its RSS (/proc/<pid>/status), its live tasks
//! (`strait_runtime_alive_tasks`) and its metrics are its alone. Timeouts in the configs are short
//! (hundreds of milliseconds) so the whole file runs in seconds.
//!
//! Cases: rapid reset (batched and paced), CONTINUATION floods, an oversized header list, streams
//! beyond the limit, slowloris (no preface, idle, half-open requests), a zero-window reader,
//! malformed gRPC messages, clients vanishing mid-stream, an upstream sending garbage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use http::{HeaderMap, HeaderValue};
use strait_test_support::backend::{frame, Backend, Reply};
use strait_test_support::client::{connect, grpc_request, read_reply, unary};
use strait_test_support::h2raw;
use strait_test_support::h2raw::{
    RawConn, CANCEL, ENHANCE_YOUR_CALM, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM,
};
use strait_test_support::temporal;
use strait_test_support::temporal::{free_port, http_get, parse_metrics, Strait};
use tokio::io::AsyncWriteExt;

/// How long Strait may take to react to anything (its own timeouts in these configs are shorter).
const BOUND: Duration = Duration::from_secs(10);
/// Live tasks that may differ from the baseline without being a leak (the scrape's own admin
/// connection, a connection task finishing).
const TASK_TOLERANCE: f64 = 4.0;

/// Strait with listener `clients` → upstream `backend` (the in-process test backend).
struct Fixture {
    backend: Backend,
    strait: Strait,
    addr: SocketAddr,
}

fn config(upstream: SocketAddr, listen: SocketAddr, admin: SocketAddr, limits: &str) -> String {
    format!(
        r#"
        [runtime]
        worker_threads = 2
        [log]
        level = "error"
        [admin]
        listen = "{admin}"
        [[upstream]]
        name = "backend"
        address = "{upstream}"
        connect_timeout = "2s"
        backoff_initial = "20ms"
        backoff_max = "200ms"
        [[listener]]
        name = "clients"
        listen = "{listen}"
        upstream = "backend"
        limits = {{ {limits} }}
        "#
    )
}

impl Fixture {
    /// Starts the backend and Strait with `limits` (the body of an inline TOML table).
    async fn start(limits: &str) -> Fixture {
        let backend = Backend::start().await;
        let upstream = backend.addr;
        let limits = limits.to_owned();
        let strait = tokio::task::spawn_blocking(move || {
            Strait::start_config(|listen, admin| config(upstream, listen, admin, &limits))
        })
        .await
        .unwrap();
        let addr = strait.address().parse().unwrap();
        Fixture {
            backend,
            strait,
            addr,
        }
    }

    fn metrics(&self) -> String {
        tokio::task::block_in_place(|| self.strait.metrics())
    }

    /// The sum of the `name` samples whose labels include every pair of `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        parse_metrics(&self.metrics())
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .map(|s| s.value)
            .sum()
    }

    fn listener_metric(&self, name: &str, label: &str, value: &str) -> f64 {
        self.metric(name, &[("listener", "clients"), (label, value)])
    }

    fn violations(&self, kind: &str) -> f64 {
        self.listener_metric("strait_protocol_violations_total", "kind", kind)
    }

    fn closed(&self, reason: &str) -> f64 {
        self.listener_metric("strait_connections_closed_total", "reason", reason)
    }

    fn refused(&self, reason: &str) -> f64 {
        self.listener_metric("strait_connections_refused_total", "reason", reason)
    }

    fn relay_errors(&self, reason: &str) -> f64 {
        self.listener_metric("strait_relay_errors_total", "reason", reason)
    }

    fn calls(&self, code: &str) -> f64 {
        self.listener_metric("strait_calls_total", "code", code)
    }

    fn gauge(&self, name: &str) -> f64 {
        self.metric(name, &[("listener", "clients")])
    }

    fn alive_tasks(&self) -> f64 {
        self.metric("strait_runtime_alive_tasks", &[])
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.strait.pid())
    }

    /// Methods the backend started since the last call, in order.
    fn started(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(method) = self.backend.started.try_recv() {
            out.push(method);
        }
        out
    }

    /// Waits (bounded) for `n` resets the backend observed on `method`; returns their reasons.
    async fn resets(&mut self, method: &str, n: usize) -> Vec<Reason> {
        let mut reasons = Vec::new();
        let deadline = tokio::time::Instant::now() + BOUND;
        while reasons.len() < n {
            match tokio::time::timeout_at(deadline, self.backend.resets.recv()).await {
                Ok(Some((m, reason))) if m == method => reasons.push(reason),
                Ok(Some(_)) => {}
                _ => panic!(
                    "the backend saw {} of {n} resets on {method} within {BOUND:?}",
                    reasons.len()
                ),
            }
        }
        reasons
    }

    /// A well-behaved client's unary call on a fresh connection: it must succeed, promptly.
    async fn good_call(&self, body: &[u8]) {
        good_call(self.addr, body).await;
    }

    /// Live tasks back to `baseline` (bounded wait): nothing an attack started lingers.
    async fn settle_tasks(&self, baseline: f64) {
        let deadline = Instant::now() + BOUND;
        loop {
            let now = self.alive_tasks();
            if now <= baseline + TASK_TOLERANCE {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "live tasks {now}, baseline {baseline}, after {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until a metric reaches `expected`: counters move just after what a client
    /// sees (a call's end, a closed socket), so a scrape right then may be a moment early.
    async fn expect(&self, what: &str, value: impl Fn(&Fixture) -> f64, expected: f64) {
        let deadline = Instant::now() + BOUND;
        loop {
            let now = value(self);
            if now == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {now}, expected {expected}, after {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until `value` holds for this fixture.
    async fn eventually(&self, what: &str, value: impl Fn(&Fixture) -> bool) {
        let deadline = Instant::now() + BOUND;
        while !value(self) {
            assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in\n{status}"))
}

async fn good_call(addr: SocketAddr, body: &[u8]) {
    let client = tokio::time::timeout(Duration::from_secs(5), connect(addr))
        .await
        .expect("good client: connect timed out");
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        unary(&client, grpc_request("/test.Echo/Unary"), body),
    )
    .await
    .expect("good client: call timed out")
    .expect("good client: call failed");
    assert_eq!(reply.status(), 0, "good client: {}", reply.message());
    assert_eq!(reply.messages, vec![Bytes::copy_from_slice(body)]);
}

/// Header block of a gRPC request to the backend's `method`.
fn request_block(method: &str) -> Vec<u8> {
    h2raw::grpc_request_block(&format!("/test.Echo/{method}"), &[])
}

/// HEADERS immediately followed by RST_STREAM, `pairs` times, in 32 KiB writes, until the
/// connection fails. Returns the pairs written.
async fn rapid_reset_flood(writer: h2raw::RawWriter, pairs: u32) -> u32 {
    let block = request_block("Hang");
    let mut batch = Vec::new();
    let mut sent = 0;
    for i in 0..pairs {
        let id = 2 * i + 1;
        batch.extend_from_slice(&h2raw::headers(id, &block, h2raw::END_HEADERS));
        batch.extend_from_slice(&h2raw::rst_stream(id, CANCEL));
        if batch.len() > 32 * 1024 || i + 1 == pairs {
            if writer.send(&batch).await.is_err() {
                break;
            }
            sent = i + 1;
            batch.clear();
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_enhance_your_calm_and_never_reaches_the_upstream() {
    let mut fx = Fixture::start("").await;
    fx.good_call(b"warm up").await;
    let (rss_before, tasks_before) = (fx.rss_kib(), fx.alive_tasks());
    fx.started();

    let mut attacker = RawConn::open(fx.addr, &[]).await;
    attacker.await_settings().await;
    let flood = tokio::spawn(rapid_reset_flood(attacker.writer(), 5000));
    let (summary, ()) = tokio::join!(attacker.read_until_closed(BOUND), fx.good_call(b"during"));
    let sent = flood.await.unwrap();
    let goaway = summary.goaway.clone().expect("a GOAWAY");
    assert_eq!(goaway.error_code(), Some(ENHANCE_YOUR_CALM), "{summary:?}");
    assert_eq!(goaway.debug_data(), "too_many_resets");
    assert!(
        summary.closed_after.is_some(),
        "connection still open after {BOUND:?}"
    );
    fx.good_call(b"after").await;

    // h2 refuses the connection at the 51st stream reset before Strait accepted it; Strait accepts
    // a stream only to relay it, so at most that many could reach the upstream.
    let hangs = fx.started().iter().filter(|m| *m == "Hang").count();
    eprintln!(
        "rapid reset: {sent} pairs written, GOAWAY after {:?}, {hangs} calls reached the upstream",
        summary.closed_after
    );
    assert!(hangs <= 50, "{hangs} reset streams reached the upstream");
    fx.expect(
        "violations rapid_reset",
        |fx| fx.violations("rapid_reset"),
        1.0,
    )
    .await;
    fx.expect(
        "closed protocol_error",
        |fx| fx.closed("protocol_error"),
        1.0,
    )
    .await;
    fx.settle_tasks(tasks_before).await;
    let rss_after = fx.rss_kib();
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS {rss_before} KiB → {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_resets_each_cancel_one_upstream_call_and_leave_nothing_behind() {
    // Resetting a call after Strait relayed it is what a client cancelling does: each one costs
    // an upstream call that Strait cancels at once, and nothing stays behind.
    let mut fx = Fixture::start("").await;
    fx.good_call(b"warm up").await;
    let tasks_before = fx.alive_tasks();
    fx.started();
    let attacker = RawConn::open(fx.addr, &[]).await;
    let block = request_block("Hang");
    let rounds = 100u32;
    for i in 0..rounds {
        let id = 2 * i + 1;
        attacker
            .send(&h2raw::headers(id, &block, h2raw::END_HEADERS))
            .await
            .unwrap();
        assert_eq!(fx.backend.next_started().await, "Hang");
        attacker.send(&h2raw::rst_stream(id, CANCEL)).await.unwrap();
    }
    let reasons = fx.resets("Hang", rounds as usize).await;
    assert!(reasons.iter().all(|r| *r == Reason::CANCEL), "{reasons:?}");
    fx.eventually("calls in flight back to 0", |fx| {
        fx.gauge("strait_calls_in_flight") == 0.0
    })
    .await;
    fx.expect(
        "calls CANCELLED",
        |fx| fx.calls("CANCELLED"),
        f64::from(rounds),
    )
    .await;
    fx.good_call(b"after").await;
    fx.settle_tasks(tasks_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_floods_get_goaway_with_memory_bounded() {
    let fx = Fixture::start("").await;
    fx.good_call(b"warm up").await;
    let (rss_before, tasks_before) = (fx.rss_kib(), fx.alive_tasks());

    // CVE-2024-27316's pattern: HEADERS without END_HEADERS, then CONTINUATION frames without end,
    // first tiny ones (each a whole header field), then 16 KiB ones (one endless header value).
    let mut tiny = Vec::new();
    h2raw::hpack_literal(&mut tiny, "x-a", b"b");
    let mut endless_value = request_block("Unary");
    endless_value.extend_from_slice(&[0x00, 3]);
    endless_value.extend_from_slice(b"x-b");
    endless_value.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0x0f]); // a 256 MiB value follows
    for (first, piece) in [
        (request_block("Unary"), tiny),
        (endless_value, vec![b'a'; 16 * 1024]),
    ] {
        let mut attacker = RawConn::open(fx.addr, &[]).await;
        attacker.await_settings().await;
        attacker.send(&h2raw::headers(1, &first, 0)).await.unwrap();
        let writer = attacker.writer();
        let flood = tokio::spawn(async move {
            let frame = h2raw::continuation(1, &piece, false);
            let mut sent = 0u32;
            // 160 MiB at most; the connection is closed long before.
            while sent < 10_000 && writer.send(&frame).await.is_ok() {
                sent += 1;
            }
            sent
        });
        let (summary, ()) =
            tokio::join!(attacker.read_until_closed(BOUND), fx.good_call(b"during"));
        let sent = flood.await.unwrap();
        let goaway = summary.goaway.clone().expect("a GOAWAY");
        assert_eq!(goaway.error_code(), Some(ENHANCE_YOUR_CALM), "{summary:?}");
        assert_eq!(goaway.debug_data(), "too_many_continuations");
        assert!(summary.closed_after.is_some(), "still open after {BOUND:?}");
        assert!(sent < 10_000, "the flood was never refused");
    }
    fx.good_call(b"after").await;
    fx.expect(
        "violations header_flood",
        |fx| fx.violations("header_flood"),
        2.0,
    )
    .await;
    fx.expect(
        "closed protocol_error",
        |fx| fx.closed("protocol_error"),
        2.0,
    )
    .await;
    fx.settle_tasks(tasks_before).await;
    let rss_after = fx.rss_kib();
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS {rss_before} KiB → {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_gets_431_and_the_connection_lives_on() {
    let mut fx = Fixture::start("max_header_list_bytes = 4096").await;
    let client = connect(fx.addr).await;
    let big = |size: usize| {
        let mut request = grpc_request("/test.Echo/Unary");
        request
            .headers_mut()
            .insert("x-big", HeaderValue::from_str(&"v".repeat(size)).unwrap());
        request
    };

    // Under the limit: relayed as usual.
    let reply = unary(&client, big(3000), b"fits").await.unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(reply.headers["x-echo-x-big"].len(), 3000);
    fx.started();

    // Over it: HTTP 431 and the stream reset, before anything reaches the upstream.
    let mut send = client.clone().ready().await.unwrap();
    let (response, _body) = send.send_request(big(5000), false).unwrap();
    let response = tokio::time::timeout(BOUND, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 431);
    // Only that stream failed: the same connection serves the next call.
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"next")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0);
    fx.good_call(b"other client").await;
    assert_eq!(fx.started(), vec!["Unary", "Unary"]);
    fx.expect(
        "violations header_list_too_large",
        |fx| fx.violations("header_list_too_large"),
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused_and_the_allowed_ones_complete() {
    let fx = Fixture::start("max_concurrent_streams = 4").await;
    let mut attacker = RawConn::open(fx.addr, &[]).await;
    attacker.await_settings().await;
    // Six calls open at once (request bodies held back): the fifth and sixth are over the limit.
    let block = request_block("Unary");
    let ids = [1u32, 3, 5, 7, 9, 11];
    let mut bytes = Vec::new();
    for id in ids {
        bytes.extend_from_slice(&h2raw::headers(id, &block, h2raw::END_HEADERS));
    }
    attacker.send(&bytes).await.unwrap();
    let summary = attacker.read_until(BOUND, |s| s.resets.len() >= 2).await;
    assert_eq!(summary.reset_of(9), Some(REFUSED_STREAM), "{summary:?}");
    assert_eq!(summary.reset_of(11), Some(REFUSED_STREAM), "{summary:?}");
    assert!(summary.goaway.is_none());

    // The four admitted calls complete, each with its own message echoed.
    let mut bytes = Vec::new();
    for id in &ids[..4] {
        let body = h2raw::grpc_message(format!("call {id}").as_bytes());
        bytes.extend_from_slice(&h2raw::data(*id, &body, true));
    }
    attacker.send(&bytes).await.unwrap();
    let summary = attacker.read_until(BOUND, |s| s.ended.len() >= 4).await;
    for id in &ids[..4] {
        assert!(summary.ended.contains(id), "stream {id}: {summary:?}");
        assert_eq!(
            h2raw::grpc_messages(summary.data_of(*id)),
            vec![format!("call {id}").into_bytes()]
        );
    }
    fx.good_call(b"other client").await;
    fx.expect(
        "violations refused_stream",
        |fx| fx.violations("refused_stream"),
        2.0,
    )
    .await;
    fx.expect("calls OK", |fx| fx.calls("OK"), 5.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_without_a_preface_are_closed_after_the_handshake_timeout() {
    let fx = Fixture::start("handshake_timeout = \"300ms\"").await;
    fx.good_call(b"warm up").await;
    let tasks_before = fx.alive_tasks();
    // Twenty connections that say nothing, and one that stops halfway through the preface.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(RawConn::connect(fx.addr).await);
    }
    let half = RawConn::connect(fx.addr).await;
    half.send(&h2raw::PREFACE[..10]).await.unwrap();
    silent.push(half);
    fx.good_call(b"during").await;
    let started = Instant::now();
    for conn in &mut silent {
        let summary = conn.read_until_closed(BOUND).await;
        assert!(summary.closed_after.is_some(), "still open after {BOUND:?}");
        assert!(summary.goaway.is_none());
    }
    let elapsed = started.elapsed();
    // Closed by the timeout, not at once (the good call above took a few milliseconds).
    assert!(
        elapsed >= Duration::from_millis(200),
        "closed after {elapsed:?}"
    );
    fx.expect("refused", |fx| fx.refused("http2"), 21.0).await;
    fx.good_call(b"after").await;
    fx.settle_tasks(tasks_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gets_goaway_after_the_idle_timeout() {
    let fx = Fixture::start("idle_timeout = \"300ms\", keepalive_interval = \"10s\"").await;
    let mut idle = RawConn::open(fx.addr, &[]).await;
    let started = Instant::now();
    let summary = idle.read_until_closed(BOUND).await;
    let elapsed = started.elapsed();
    assert_eq!(summary.goaway_code(), Some(NO_ERROR), "{summary:?}");
    assert!(summary.closed_after.is_some(), "still open after {BOUND:?}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    fx.good_call(b"after").await;
    fx.expect("closed idle", |fx| fx.closed("idle"), 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_requests_are_bounded_by_the_stream_and_connection_limits_and_dead_peers_by_keepalive(
) {
    // A request whose body never comes is indistinguishable from a quiet bidi stream or a long
    // poll, so no timer cuts it. What bounds it: max_concurrent_streams per connection,
    // max_connections per listener, and keepalive once the peer stops answering.
    let mut fx = Fixture::start(
        "max_connections = 3, max_concurrent_streams = 4, keepalive_interval = \"200ms\", \
         keepalive_timeout = \"1s\"",
    )
    .await;
    let block = request_block("Hang");
    let mut attackers = Vec::new();
    for _ in 0..2 {
        let mut conn = RawConn::open(fx.addr, &[]).await;
        conn.await_settings().await;
        let mut bytes = Vec::new();
        for id in [1u32, 3, 5, 7, 9] {
            bytes.extend_from_slice(&h2raw::headers(id, &block, h2raw::END_HEADERS));
        }
        conn.send(&bytes).await.unwrap();
        let summary = conn.read_until(BOUND, |s| !s.resets.is_empty()).await;
        assert_eq!(summary.resets, vec![(9, REFUSED_STREAM)]);
        attackers.push(conn);
    }
    for _ in 0..8 {
        assert_eq!(fx.backend.next_started().await, "Hang");
    }
    // The third and last connection slot is a well-behaved client's; a fourth connection is
    // closed at once.
    let good = connect(fx.addr).await;
    let extra = RawConn::open(fx.addr, &[]).await;
    fx.expect("refused", |fx| fx.refused("limit"), 1.0).await;
    drop(extra);

    // The attackers answer PINGs: several keepalive rounds pass and their calls stay open.
    let mut readers = Vec::new();
    for conn in attackers {
        let switch = conn.ping_switch();
        readers.push((
            switch,
            tokio::spawn(async move {
                let mut conn = conn;
                conn.read_until_closed(Duration::from_secs(20)).await
            }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(readers.iter().all(|(_, reader)| !reader.is_finished()));
    assert_eq!(fx.gauge("strait_calls_in_flight"), 8.0);
    let reply = unary(&good, grpc_request("/test.Echo/Unary"), b"served")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0);

    // They stop answering: keepalive closes both and every upstream call is cancelled.
    let started = Instant::now();
    for (switch, _) in &readers {
        switch.store(false, Ordering::SeqCst);
    }
    for (_, reader) in readers {
        let summary = reader.await.unwrap();
        assert!(summary.closed_after.is_some(), "{summary:?}");
        assert!(summary.pings >= 3, "{summary:?}");
    }
    // Within a keepalive interval and timeout (1.2 s), with slack.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let reasons = fx.resets("Hang", 8).await;
    assert!(reasons.iter().all(|r| *r == Reason::CANCEL), "{reasons:?}");
    fx.expect("closed keepalive", |fx| fx.closed("keepalive"), 2.0)
        .await;
    fx.eventually("no call in flight", |fx| {
        fx.gauge("strait_calls_in_flight") == 0.0
    })
    .await;
    // Their slots are free again.
    fx.good_call(b"after").await;
}

/// Opens `streams` calls to the backend's Flood method (64 KiB messages, 128 MiB in all) on a
/// connection that grants no window, and leaves them.
async fn zero_window_attack(addr: SocketAddr, streams: u32) -> RawConn {
    let attacker = RawConn::open(addr, &[(h2raw::SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    let block = request_block("Flood");
    let mut bytes = Vec::new();
    for i in 0..streams {
        let id = 2 * i + 1;
        bytes.extend_from_slice(&h2raw::headers(id, &block, h2raw::END_HEADERS));
        bytes.extend_from_slice(&h2raw::data(id, &h2raw::grpc_message(b"go"), true));
    }
    attacker.send(&bytes).await.unwrap();
    attacker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_readers_stall_only_themselves_and_are_ended_by_send_stall_timeout() {
    // Rounds of the attack, for the memory check: what one round holds must be given back.
    const ROUNDS: u32 = 6;
    let fx = Fixture::start("send_stall_timeout = \"500ms\"").await;
    fx.good_call(b"warm up").await;
    let (rss_before, tasks_before) = (fx.rss_kib(), fx.alive_tasks());
    let flooded = || fx.backend.observed.flood_sent.load(Ordering::Relaxed);
    let streams = 16u32;
    let mut rss_rounds = Vec::new();
    for round in 1..=ROUNDS {
        let sent_before = flooded();
        let started = Instant::now();
        let mut attacker = zero_window_attack(fx.addr, streams).await;
        // While they stall, other clients are served: the stalled calls each hold at most one
        // stream window of unread response, never the upstream connection's window.
        let deadline = Instant::now() + BOUND;
        while flooded() - sent_before < u64::from(streams) * 512 * 1024 {
            assert!(Instant::now() < deadline, "the flood did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fx.good_call(b"during").await;
        let summary = attacker
            .read_until(BOUND, |s| s.ended.len() >= streams as usize)
            .await;
        let elapsed = started.elapsed();
        assert_eq!(summary.ended.len(), streams as usize, "{summary:?}");
        assert!(
            summary.streams.iter().all(|s| s.2.is_empty()),
            "no DATA was granted"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        // Per stalled call: the upstream stream window (1 MiB), plus one message in flight.
        let held = flooded() - sent_before;
        assert!(
            held <= u64::from(streams) * (1024 + 65) * 1024,
            "the backend sent {held} bytes into {streams} stalled calls"
        );
        fx.expect(
            "stalled calls",
            |fx| fx.relay_errors("send_stalled"),
            f64::from(round * streams),
        )
        .await;
        rss_rounds.push(fx.rss_kib());
    }
    fx.expect(
        "calls RESOURCE_EXHAUSTED",
        |fx| fx.calls("RESOURCE_EXHAUSTED"),
        f64::from(ROUNDS * streams),
    )
    .await;
    eprintln!("zero window: RSS {rss_before} KiB before, {rss_rounds:?} KiB after each round");
    // What the stalled calls hold is bounded (16 × 1 MiB of unread response) and given back. The
    // allocator keeps some of it, so RSS moves between rounds (within about 20 MiB here), but it
    // does not climb: keeping what a round held would pass the ceiling within the six rounds.
    let ceiling = rss_before + 64 * 1024;
    assert!(
        rss_rounds.iter().all(|rss| *rss <= ceiling),
        "RSS {rss_before} KiB before, {rss_rounds:?} KiB after each round (ceiling {ceiling})"
    );
    fx.settle_tasks(tasks_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_gets_a_status_and_quiet_calls_outlive_the_stall_timeout() {
    let mut fx = Fixture::start("send_stall_timeout = \"500ms\"").await;
    // A real HTTP/2 client that grants no window: it gets the status in trailers (which flow
    // control does not hold back).
    let tcp = tokio::net::TcpStream::connect(fx.addr).await.unwrap();
    let (stalled, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut send = stalled.ready().await.unwrap();
    let (response, mut body) = send
        .send_request(grpc_request("/test.Echo/Flood"), false)
        .unwrap();
    body.send_data(frame(b"go"), true).unwrap();
    let response = tokio::time::timeout(BOUND, response)
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let trailers: HeaderMap = tokio::time::timeout(BOUND, poll_fn(|cx| body.poll_trailers(cx)))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "8");
    let message = trailers["grpc-message"].to_str().unwrap();
    assert!(message.contains("send_stall_timeout"), "{message}");
    assert_eq!(fx.resets("Flood", 1).await, vec![Reason::CANCEL]);

    // A long poll sends nothing while it waits: however long past the stall timeout, it is fine.
    // The flood's start is drained first: draining after the long poll is sent could swallow the
    // long poll's own start too (it did, once in CI).
    fx.started();
    let client = connect(fx.addr).await;
    let poll = tokio::spawn({
        let client = client.clone();
        async move { unary(&client, grpc_request("/test.Echo/Gate"), b"long poll").await }
    });
    assert_eq!(fx.backend.next_started().await, "Gate");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!poll.is_finished());
    fx.backend.observed.gate.notify_one();
    let reply = poll.await.unwrap().unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages[0], Bytes::from_static(b"long poll"));
    fx.expect(
        "relay_errors send_stalled",
        |fx| fx.relay_errors("send_stalled"),
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_messages_get_a_status_and_nothing_half_forwarded() {
    // (tests/relay.rs and tests/translate_relay.rs cover more shapes of each; this is the list in
    // one place, with the metrics.)
    let backend = Backend::start().await;
    let upstream = backend.addr;
    let strait = tokio::task::spawn_blocking(move || {
        Strait::start_config(|listen, admin| {
            format!(
                "{}\n[listener.translate]\nnamespaces = {{ \"orders\" = \"orders-prod\" }}\n",
                config(upstream, listen, admin, "max_message_bytes = 1024")
            )
        })
    })
    .await
    .unwrap();
    let addr = strait.address().parse().unwrap();
    let mut fx = Fixture {
        backend,
        strait,
        addr,
    };
    fx.backend.reply(
        "Record",
        Reply {
            trailers: HeaderMap::from_iter([(
                http::header::HeaderName::from_static("grpc-status"),
                HeaderValue::from_static("0"),
            )]),
            ..Reply::default()
        },
    );
    let client = connect(fx.addr).await;
    let call = |path: &str, bytes: Vec<Bytes>| {
        let client = client.clone();
        let path = path.to_owned();
        async move {
            let mut send = client.ready().await.unwrap();
            let (response, mut body) = send.send_request(grpc_request(&path), false).unwrap();
            let last = bytes.len() - 1;
            for (i, chunk) in bytes.into_iter().enumerate() {
                body.send_data(chunk, i == last).unwrap();
            }
            tokio::time::timeout(BOUND, read_reply(response))
                .await
                .unwrap()
                .unwrap()
        }
    };

    // A length prefix over max_message_bytes: refused on the prefix alone, without waiting for
    // (or buffering) the 2 GiB it announces.
    let started = Instant::now();
    let reply = call(
        "/test.Echo/Hang",
        vec![Bytes::from_static(&[0, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3])],
    )
    .await;
    assert_eq!(reply.status(), 8, "{}", reply.message());
    assert!(reply.message().contains("exceeds the limit of 1024"));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(fx.resets("Hang", 1).await, vec![Reason::CANCEL]);

    // A bad compressed-flag byte after a good message.
    let reply = call(
        "/test.Echo/Record",
        vec![frame(b"good"), Bytes::from_static(&[7, 0, 0, 0, 1, 0])],
    )
    .await;
    assert_eq!(reply.status(), 13, "{}", reply.message());
    assert!(reply.message().contains("compressed flag"));
    let deadline = Instant::now() + BOUND;
    let bodies = loop {
        if let Some(bodies) = fx.backend.observed.bodies.lock().unwrap().get("Record") {
            break bodies.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the backend never finished Record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The good message may or may not have left before the reset (h2 drops what it has not
    // written yet); the bad one never did.
    assert!(
        bodies.is_empty() || bodies == vec![Bytes::from_static(b"good")],
        "{bodies:?}"
    );

    // A request that ends inside a message: the upstream call is cancelled, not ended.
    let reply = call(
        "/test.Echo/Hang",
        vec![Bytes::from_static(&[0, 0, 0, 0, 9, 1, 2])],
    )
    .await;
    assert_eq!(reply.status(), 13, "{}", reply.message());
    assert!(reply.message().contains("ended inside"));
    assert_eq!(fx.resets("Hang", 1).await, vec![Reason::CANCEL]);

    // Invalid protobuf in a message Strait must edit (namespace translation): field 1 claims 50
    // bytes and the message ends after 3. The upstream gets the headers, never the message.
    let path = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";
    fx.backend.reply("StartWorkflowExecution", Reply::default());
    let reply = call(path, vec![frame(&[0x0a, 50, b'o', b'r', b'd'])]).await;
    assert_eq!(reply.status(), 13, "{}", reply.message());
    assert!(reply.message().contains("malformed"), "{}", reply.message());
    let deadline = Instant::now() + BOUND;
    loop {
        let bodies = fx
            .backend
            .observed
            .bodies
            .lock()
            .unwrap()
            .get("StartWorkflowExecution")
            .cloned();
        if let Some(bodies) = bodies {
            assert!(bodies.is_empty(), "{bodies:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backend never saw the call end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fx.good_call(b"after").await;
    fx.expect(
        "relay_errors message_too_large",
        |fx| fx.relay_errors("message_too_large"),
        1.0,
    )
    .await;
    fx.expect(
        "relay_errors malformed_frame",
        |fx| fx.relay_errors("malformed_frame"),
        2.0,
    )
    .await;
    fx.expect(
        "relay_errors rewrite_failed",
        |fx| fx.relay_errors("rewrite_failed"),
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_stream_cancel_upstream_and_leave_nothing_behind() {
    let mut fx = Fixture::start("").await;
    fx.good_call(b"warm up").await;
    let (rss_before, tasks_before) = (fx.rss_kib(), fx.alive_tasks());
    let clients = 20;
    let block = request_block("Bidi");
    for round in 0..clients {
        let mut conn = RawConn::open(fx.addr, &[]).await;
        let mut bytes = h2raw::headers(1, &block, h2raw::END_HEADERS);
        let message = format!("message {round}");
        bytes.extend_from_slice(&h2raw::data(
            1,
            &h2raw::grpc_message(message.as_bytes()),
            false,
        ));
        conn.send(&bytes).await.unwrap();
        // The stream is live: the message comes back.
        let summary = conn
            .read_until(BOUND, |s| !h2raw::grpc_messages(s.data_of(1)).is_empty())
            .await;
        assert_eq!(
            h2raw::grpc_messages(summary.data_of(1)),
            vec![message.into_bytes()]
        );
        // Then the client's socket is gone, without RST_STREAM or GOAWAY.
        drop(conn);
    }
    let reasons = fx.resets("Bidi", clients).await;
    assert!(reasons.iter().all(|r| *r == Reason::CANCEL), "{reasons:?}");
    fx.eventually("calls and connections back to 0", |fx| {
        fx.gauge("strait_calls_in_flight") == 0.0 && fx.gauge("strait_connections_open") == 0.0
    })
    .await;
    fx.expect(
        "closed client",
        |fx| fx.closed("client"),
        clients as f64 + 1.0,
    )
    .await;
    fx.expect(
        "calls CANCELLED",
        |fx| fx.calls("CANCELLED"),
        clients as f64,
    )
    .await;
    fx.good_call(b"after").await;
    fx.settle_tasks(tasks_before).await;
    let rss_after = fx.rss_kib();
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS {rss_before} KiB → {rss_after} KiB"
    );
}

/// A fake upstream on `listener` that is not an HTTP/2 server: every connection gets an HTTP/1.1
/// error; or, with `after_preface`, an HTTP/2 server preface (so the handshake succeeds) and then,
/// once a call arrives, random bytes. These start with a frame header declaring more than the
/// maximum frame size, so the client fails at once: random bytes that happened to declare a
/// plausible frame would leave it waiting for the rest (bounded only by upstream keepalive).
fn serve_garbage(
    listener: tokio::net::TcpListener,
    after_preface: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 16 * 1024];
                let garbage = if after_preface {
                    let _ = stream.write_all(&h2raw::settings(&[])).await;
                    // Read until the first call's HEADERS frame has arrived.
                    let mut seen = Vec::new();
                    while !has_headers_frame(&seen) {
                        match stream.read(&mut buf).await {
                            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let mut bytes = vec![0xff, 0xff, 0xff];
                    bytes.extend((0..4096).map(|_| fastrand::u8(..)));
                    bytes
                } else {
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_vec()
                };
                let _ = stream.write_all(&garbage).await;
                // Keep the connection until the proxy gives up on it.
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    })
}

/// Whether a client's bytes (preface, then frames) hold a complete HEADERS frame.
fn has_headers_frame(bytes: &[u8]) -> bool {
    let mut at = h2raw::PREFACE.len();
    while bytes.len() >= at + 9 {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        if bytes[at + 3] == h2raw::HEADERS {
            return true;
        }
        at += 9 + len;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_sending_garbage_gives_unavailable_and_calls_recover_when_it_is_good_again() {
    let port = free_port();
    let upstream = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(upstream).await.unwrap();
    let garbage = serve_garbage(listener, false);
    // A second listener to a healthy backend: its clients must not notice.
    let healthy = Backend::start().await;
    let healthy_addr = healthy.addr;
    let other = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut strait = tokio::task::spawn_blocking(move || {
        Strait::start_config_live(|listen, admin| {
            format!(
                "{}\n[[upstream]]\nname = \"healthy\"\naddress = \"{healthy_addr}\"\n\
                 [[listener]]\nname = \"other\"\nlisten = \"{other}\"\nupstream = \"healthy\"\n",
                config(upstream, listen, admin, "")
            )
        })
    })
    .await
    .unwrap();
    let addr: SocketAddr = strait.address().parse().unwrap();
    let metric = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let text = tokio::task::block_in_place(|| strait.metrics());
        parse_metrics(&text)
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .map(|s| s.value)
            .sum()
    };
    let client = connect(addr).await;
    let mut failed = 0.0;

    // Garbage instead of an HTTP/2 server: UNAVAILABLE, naming the upstream.
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"x")
        .await
        .unwrap();
    assert_eq!(reply.status(), 14, "{}", reply.message());
    assert!(
        reply.message().contains("\"backend\""),
        "{}",
        reply.message()
    );
    failed += 1.0;
    good_call(other, b"other listener").await;

    // A handshake, then garbage once a call is sent: the call fails with UNAVAILABLE too.
    garbage.abort();
    let _ = garbage.await;
    let listener = tokio::net::TcpListener::bind(upstream).await.unwrap();
    let garbage = serve_garbage(listener, true);
    let deadline = Instant::now() + BOUND;
    loop {
        let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"x")
            .await
            .unwrap();
        assert_eq!(reply.status(), 14, "{}", reply.message());
        failed += 1.0;
        if reply.message().contains("failed during the call") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never met the garbage mid-call: {}",
            reply.message()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    good_call(other, b"other listener").await;
    // Every failed call is counted, as upstream_failed (mid-call) or upstream_unavailable (no
    // connection came up in time).
    let counted = ["upstream_failed", "upstream_unavailable"]
        .map(|reason| {
            metric(
                "strait_relay_errors_total",
                &[("listener", "clients"), ("reason", reason)],
            )
        })
        .iter()
        .sum::<f64>();
    assert_eq!(counted, failed);

    // A good upstream again on the same address: calls recover (the redial backoff is 200 ms at
    // most in this config).
    garbage.abort();
    let _ = garbage.await;
    let _backend = Backend::start_on(upstream).await;
    let deadline = Instant::now() + BOUND;
    loop {
        let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"back")
            .await
            .unwrap();
        if reply.status() == 0 {
            assert_eq!(reply.messages[0], Bytes::from_static(b"back"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {}",
            reply.message()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = strait.admin_address();
    let ready = tokio::task::block_in_place(|| http_get(admin, "/readyz"));
    assert!(
        matches!(&ready, Ok((200, body)) if temporal::readyz_all_ok(body)),
        "{ready:?}"
    );
    assert!(strait.is_running());
}

#[test]
fn raw_frame_writer_encodes_frame_headers_and_hpack_integers() {
    // The attacks above rely on these bytes being what an HTTP/2 peer expects.
    let f = h2raw::headers(3, &[1, 2, 3], h2raw::END_HEADERS);
    assert_eq!(f[..9], [0, 0, 3, 1, 4, 0, 0, 0, 3]);
    assert_eq!(h2raw::rst_stream(5, PROTOCOL_ERROR)[9..], [0, 0, 0, 1]);
    let mut block = Vec::new();
    h2raw::hpack_literal(&mut block, "x", &[b'v'; 200]);
    // 200 does not fit a 7-bit prefix: 127 then 73.
    assert_eq!(block[..5], [0, 1, b'x', 127, 73]);
}
