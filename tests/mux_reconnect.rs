//! No task or memory growth across 1,000 real reconnects of a mux link: each one a TCP dial, a TLS
//! handshake with client certificates, a yamux session with HTTP/2 pools over it, then the link cut
//! under it and the mux-client's backoff before the next dial.
//!
//! Strait runs as a process of its own (the binary under test) with both ends of one link: a-b
//! (mux-client) dials a fault relay (tests/support/fault_relay.rs) in front of b-a (mux-server), and
//! each end's local side relays to an in-process backend. A process of its own because what is
//! measured must be Strait alone: its RSS (/proc/<pid>/status) and its runtime's live tasks
//! (`strait_runtime_alive_tasks`) would otherwise include the relay's threads, the backends and
//! the test's clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strait_test_support::backend::Backend;
use strait_test_support::client::{connect, grpc_request, unary};
use strait_test_support::fault_relay::FaultRelay;
use strait_test_support::temporal::{free_port, http_get, parse_metrics, readyz_all_ok, Strait};

/// Session losses forced on the link.
const RECONNECTS: u64 = 1000;
/// The first measurement, once allocator pools, caches and metric series have warmed up.
const WARM_UP: u64 = 100;
/// How long one reconnect (notice the cut, back off, dial, handshake) may take.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the link may take to settle (sessions and every pool up) before a measurement.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Live tasks that may differ between the two measurements without being a leak (a scrape's own
/// admin connection, a session watcher finishing). A leak of one task per reconnect shows as 900.
const TASK_TOLERANCE: f64 = 8.0;
/// RSS growth allowed from 100 to 1,000 reconnects: allocator slack. One session's yamux and
/// HTTP/2 buffers are hundreds of KiB, so keeping even a tenth of 900 sessions would exceed it.
const RSS_TOLERANCE_KIB: u64 = 4 * 1024;
/// The whole loop must stay well inside a test's time on a shared 2-core machine.
const LOOP_BUDGET: Duration = Duration::from_secs(60);

fn certs(name: &str) -> String {
    format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `name{link="..."}` from Strait's /metrics (0 when absent).
fn link_metric(text: &str, name: &str, link: &str) -> f64 {
    parse_metrics(text)
        .iter()
        .filter(|s| s.name == name && s.label("link") == Some(link))
        .map(|s| s.value)
        .sum()
}

/// Sessions established so far on (a-b, b-a).
fn established(strait: &Strait) -> [f64; 2] {
    let text = strait.metrics();
    ["a-b", "b-a"].map(|link| link_metric(&text, "strait_mux_sessions_total", link))
}

fn alive_tasks(strait: &Strait) -> f64 {
    let text = strait.metrics();
    parse_metrics(&text)
        .iter()
        .find(|s| s.name == "strait_runtime_alive_tasks")
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no strait_runtime_alive_tasks in\n{text}"))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in\n{status}"))
}

struct Measurement {
    tasks: f64,
    rss_kib: u64,
}

struct Link {
    runtime: tokio::runtime::Runtime,
    strait: Strait,
    a_local: SocketAddr,
    b_local: SocketAddr,
    _backends: (Backend, Backend),
}

impl Link {
    /// Waits until the link is whole again (a session on each end, /readyz all `ok`: every pool up),
    /// checks that calls cross it both ways, then measures Strait.
    fn settle_and_measure(&self) -> Measurement {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let text = self.strait.metrics();
            let up = ["a-b", "b-a"].map(|link| link_metric(&text, "strait_mux_sessions", link));
            let ready = http_get(self.strait.admin_address(), "/readyz");
            if up == [1.0; 2] && matches!(&ready, Ok((200, body)) if readyz_all_ok(body)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "link not whole within {SETTLE_TIMEOUT:?}: sessions up {up:?}, /readyz {ready:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        for (from, path) in [(self.a_local, "/x.Y/AtoB"), (self.b_local, "/x.Y/BtoA")] {
            let reply = self.runtime.block_on(async {
                let client = connect(from).await;
                unary(&client, grpc_request(path), path.as_bytes()).await
            });
            let reply = reply.unwrap();
            assert_eq!(reply.status(), 0, "{path}: {}", reply.message());
            assert_eq!(reply.messages[0], Bytes::from(path.as_bytes().to_vec()));
        }
        // Tasks of the last sessions and calls wind down within moments: take the lowest count of
        // a one-second window, the same way at both measurements.
        let mut tasks = f64::MAX;
        for _ in 0..5 {
            tasks = tasks.min(alive_tasks(&self.strait));
            thread::sleep(Duration::from_millis(200));
        }
        Measurement {
            tasks,
            rss_kib: rss_kib(self.strait.pid()),
        }
    }
}

#[test]
fn a_thousand_reconnects_leave_no_tasks_or_memory_behind() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let backends = runtime.block_on(async { (Backend::start().await, Backend::start().await) });
    let (backend_a, backend_b) = (backends.0.addr, backends.1.addr);
    let mux = free_port();
    let relay = FaultRelay::start(SocketAddr::from(([127, 0, 0, 1], mux)));
    let relay_port = relay.port();
    let b_local = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let strait = Strait::start_config(|a_local, admin| {
        format!(
            r#"
            [log]
            level = "error"
            [admin]
            listen = "{admin}"
            [[cluster_connection]]
            name = "a-b"
            local = {{ listen = "{a_local}", upstream = "{backend_a}" }}
            remote = {{ mode = "mux-client", address = "127.0.0.1:{relay_port}", sessions = 1, backoff_initial = "1ms", backoff_max = "4ms", tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}", server_name = "localhost" }} }}
            [[cluster_connection]]
            name = "b-a"
            local = {{ listen = "{b_local}", upstream = "{backend_b}" }}
            remote = {{ mode = "mux-server", listen = "127.0.0.1:{mux}", tls = {{ cert = "{server}", key = "{server_key}", client_ca = "{ca}" }} }}
            "#,
            ca = certs("ca.pem"),
            cert = certs("client.pem"),
            key = certs("client-key.pem"),
            server = certs("server.pem"),
            server_key = certs("server-key.pem"),
        )
    });
    let link = Link {
        runtime,
        a_local: strait.address().parse().unwrap(),
        b_local,
        strait,
        _backends: backends,
    };
    link.settle_and_measure();
    let first = established(&link.strait);
    assert_eq!(first, [1.0; 2], "one session per end at the start");

    let started = Instant::now();
    let mut warm = None;
    for n in 1..=RECONNECTS {
        relay.sever();
        // Recovered: a new session is established on both ends (counted after the TLS handshake).
        let deadline = Instant::now() + RECONNECT_TIMEOUT;
        loop {
            let now = established(&link.strait);
            if now.iter().all(|&count| count >= 1.0 + n as f64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reconnect {n}: sessions established (a-b, b-a) = {now:?} after {RECONNECT_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(1));
        }
        if n == WARM_UP {
            warm = Some((started.elapsed(), link.settle_and_measure()));
        }
    }
    let elapsed = started.elapsed();
    let last = link.settle_and_measure();
    let (warm_elapsed, warm) = warm.unwrap();

    let total = established(&link.strait);
    eprintln!(
        "{RECONNECTS} reconnects in {:.1}s (first {WARM_UP} in {:.1}s); live tasks {} after \
         {WARM_UP}, {} after {RECONNECTS}; RSS {} KiB after {WARM_UP}, {} KiB after {RECONNECTS}; \
         sessions established a-b {}, b-a {}; connections relayed {}",
        elapsed.as_secs_f64(),
        warm_elapsed.as_secs_f64(),
        warm.tasks,
        last.tasks,
        warm.rss_kib,
        last.rss_kib,
        total[0],
        total[1],
        relay.relayed(),
    );
    // Every reconnect was a real session, counted on both ends.
    assert!(
        total.iter().all(|&count| count >= 1.0 + RECONNECTS as f64),
        "{total:?}"
    );
    assert!(relay.relayed() > RECONNECTS, "{}", relay.relayed());
    assert!(
        last.tasks <= warm.tasks + TASK_TOLERANCE,
        "live tasks grew from {} to {} between {WARM_UP} and {RECONNECTS} reconnects",
        warm.tasks,
        last.tasks
    );
    assert!(
        last.rss_kib <= warm.rss_kib + RSS_TOLERANCE_KIB,
        "RSS grew from {} KiB to {} KiB between {WARM_UP} and {RECONNECTS} reconnects",
        warm.rss_kib,
        last.rss_kib
    );
    assert!(
        elapsed < LOOP_BUDGET,
        "{RECONNECTS} reconnects took {elapsed:?}"
    );
}
