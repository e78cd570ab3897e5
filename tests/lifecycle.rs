//! The process lifecycle of a real `strait run`: what readiness means, and what each signal does.
//!
//! * Readiness does not depend on the other side: the shipped `config/s2s-mux-b.toml` (the
//!   mux-server), started alone, is ready and shows its link as `warn`; with `gate_readiness` on its
//!   remote side it is not ready (`fail`, 503).
//! * SIGHUP, SIGUSR1 and SIGUSR2 are logged and leave the process serving.
//! * SIGTERM drains (`/readyz` 503 `listeners: draining`) and exits 0 once the calls are done; at the
//!   end of the grace period every call left gets UNAVAILABLE "proxy shutting down" and the
//!   connection a GOAWAY (exit 3); a second SIGTERM or SIGINT during the drain exits at once (4).
//!
//! Strait runs in front of the in-process test backend, whose `Hang`, `Bidi` and `Gate` methods
//! hold calls open as long as a test needs. Every wait polls a condition under a bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use strait_test_support::backend::{frame, Backend};
use strait_test_support::client::{grpc_request, read_reply, unary};
use strait_test_support::s2s;
use strait_test_support::temporal::{free_port, http_get, Strait, TempDir};

/// How long Strait may take to react to anything here (it normally takes milliseconds; the
/// machine may be loaded).
const BOUND: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `strait run` with listener `clients` → the backend, JSON logs at info, the given grace.
fn strait(backend: SocketAddr, grace: &str) -> Strait {
    Strait::start_config(|listen, admin| {
        format!(
            r#"
            [log]
            format = "json"
            [admin]
            listen = "{admin}"
            [shutdown]
            grace = "{grace}"
            [[upstream]]
            name = "backend"
            address = "{backend}"
            [[listener]]
            name = "clients"
            listen = "{listen}"
            upstream = "backend"
            "#
        )
    })
}

/// An HTTP/2 client connection and the task driving it (its result says how the connection
/// ended).
async fn connect(
    addr: &str,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(connection))
}

/// Polls /readyz until `accept(code, body)`, for at most [`BOUND`]; returns the last answer.
fn wait_readyz(admin: SocketAddr, accept: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + BOUND;
    loop {
        let answer = http_get(admin, "/readyz");
        if let Ok((code, body)) = &answer {
            if accept(*code, body) {
                return (*code, body.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "/readyz not as expected within {BOUND:?}; last: {answer:?}"
        );
        thread::sleep(POLL);
    }
}

/// The shipped mux-server config on free ports (its cluster port too: no cluster runs), with
/// `edit` applied, started as a real process with no peer; retried if it loses a port race.
fn lonely_mux_server(dir: &TempDir, name: &str, edit: impl Fn(&str) -> String) -> s2s::StraitProc {
    let bin = s2s::strait_bin();
    let mut last = String::new();
    for attempt in 1..=3 {
        let cluster_a = format!("127.0.0.1:{}", free_port());
        let cluster_b = format!("127.0.0.1:{}", free_port());
        let mut pair = s2s::derive_pair(s2s::Mode::Mux, &cluster_a, &cluster_b, false).unwrap();
        pair.b.toml = edit(&pair.b.toml);
        let mut b = s2s::StraitProc::spawn(&bin, &format!("{name}-{attempt}"), &pair.b, dir.path())
            .unwrap();
        match b.wait_admin("/livez", Instant::now() + BOUND) {
            Ok(()) => return b,
            Err(e) if !b.alive() => last = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the mux-server did not start: {last}");
}

/// Mux-server B alone: ready within seconds, although no peer session exists (in Kubernetes, the
/// Service in front of B routes A's sessions to B only once B is ready). The link shows as `warn`.
#[test]
fn the_shipped_mux_server_alone_is_ready_and_warns_of_its_link() {
    let dir = TempDir::new("lifecycle");
    let mut b = lonely_mux_server(&dir, "alone", str::to_owned);
    let (_, body) = wait_readyz(b.config.admin, |code, _| code == 200);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "ready", "{body}");
    assert_eq!(lines[1], "ok listeners: bound", "{body}");
    let link = &b.config.link;
    for (prefix, detail) in [
        (format!("warn link {link} sessions: "), "0 mux sessions up"),
        (format!("warn link {link} local: "), "not connected"),
        (format!("warn link {link} remote: "), "not connected"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(detail)),
            "no {prefix:?}…{detail:?} in\n{body}"
        );
    }
    assert!(!body.contains("\nfail "), "{body}");
    // The same in metrics: ready, the link's checks down and not gating.
    let samples = b.metrics().unwrap();
    assert_eq!(s2s::metric_sum(&samples, "strait_ready", &[]), 1.0);
    let check = format!("link {link} sessions");
    let gauge = samples
        .iter()
        .find(|s| s.name == "strait_ready_check" && s.label("check") == Some(check.as_str()))
        .unwrap_or_else(|| panic!("no strait_ready_check for {check:?}"));
    assert_eq!((gauge.label("gates"), gauge.value), (Some("false"), 0.0));
    assert!(b.alive());
}

/// The same B with `gate_readiness = true` on its remote side: not ready while no peer is there.
#[test]
fn with_gate_readiness_the_lonely_mux_server_is_not_ready() {
    let dir = TempDir::new("lifecycle");
    let mut b = lonely_mux_server(&dir, "gated", |toml| {
        let gated = toml.replacen(
            "mode = \"mux-server\"",
            "mode = \"mux-server\"\ngate_readiness = true",
            1,
        );
        assert_ne!(
            gated, toml,
            "the shipped file changed: no `mode = \"mux-server\"`"
        );
        gated
    });
    // Once the listeners are bound, the only thing missing is the peer.
    let (code, body) = wait_readyz(b.config.admin, |_, body| {
        body.contains("ok listeners: bound")
    });
    let link = &b.config.link;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready\n"), "{body}");
    for line in [
        format!("fail link {link} sessions: 0 mux sessions up"),
        format!("fail link {link} remote: not connected"),
        // The local side does not gate: a warning only.
        format!("warn link {link} local: not connected"),
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(&line)),
            "no {line:?} in\n{body}"
        );
    }
    let samples = b.metrics().unwrap();
    assert_eq!(s2s::metric_sum(&samples, "strait_ready", &[]), 0.0);
    assert!(b.alive());
}

/// SIGHUP (no reload exists), SIGUSR1 and SIGUSR2 are logged and change nothing: the process keeps
/// running and serving.
#[test]
fn sighup_sigusr1_and_sigusr2_leave_it_running_and_serving() {
    let rt = runtime();
    let backend = rt.block_on(Backend::start());
    let mut strait = strait(backend.addr, "5s");
    let address = strait.address();
    let call = |payload: &'static [u8]| {
        rt.block_on(async {
            let (client, _connection) = connect(&address).await;
            unary(&client, grpc_request("/test.Echo/Unary"), payload).await
        })
    };
    assert_eq!(call(b"before").unwrap().status(), 0);
    for (signal, logged) in [
        (
            "HUP",
            "SIGHUP received: configuration reload is not supported; nothing changed",
        ),
        ("USR1", "SIGUSR1 received: ignored"),
        ("USR2", "SIGUSR2 received: ignored"),
    ] {
        strait.signal(signal);
        assert!(
            strait.wait_log(logged, BOUND),
            "SIG{signal}: no {logged:?} in the log:\n{}",
            strait.log()
        );
        assert!(strait.is_running(), "SIG{signal} ended the process");
    }
    let reply = call(b"after").unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(reply.messages[0], Bytes::from_static(b"after"));
    assert!(strait.is_running());
}

/// During the drain /readyz says `listeners: draining` (503); a call in flight finishes, and then
/// the process exits 0.
#[test]
fn readyz_says_draining_during_the_drain_and_a_finished_drain_exits_0() {
    let rt = runtime();
    let mut backend = rt.block_on(Backend::start());
    let mut strait = strait(backend.addr, "60s");
    let (client, _connection) = rt.block_on(connect(&strait.address()));
    let call = rt.spawn({
        let client = client.clone();
        async move { unary(&client, grpc_request("/test.Echo/Gate"), b"drain me").await }
    });
    assert_eq!(rt.block_on(backend.next_started()), "Gate");
    strait.signal("TERM");
    let (code, body) = wait_readyz(strait.admin_address(), |code, _| code != 200);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("not ready\nfail listeners: draining\n"),
        "{body}"
    );
    assert!(strait.is_running());
    backend.observed.gate.notify_one();
    let reply = rt
        .block_on(async { tokio::time::timeout(BOUND, call).await })
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(reply.messages[0], Bytes::from_static(b"drain me"));
    let exit = strait.wait_exit(BOUND).expect("no exit after the drain");
    assert_eq!(exit.code(), Some(0), "{}", strait.log());
}

/// At the end of the grace period every call left ends properly, not by a bare TCP close: a call
/// not yet answered gets a trailers-only UNAVAILABLE "proxy shutting down", a call whose response
/// has begun gets it as trailers, both upstream calls are cancelled, the connection ends with a
/// GOAWAY (the client sees a clean end, not an I/O error), and the process exits 3.
#[test]
fn calls_in_flight_at_grace_expiry_get_unavailable_and_a_goaway() {
    let rt = runtime();
    let mut backend = rt.block_on(Backend::start());
    let mut strait = strait(backend.addr, "1s");
    let (client, connection) = rt.block_on(connect(&strait.address()));
    let unanswered = rt.spawn({
        let client = client.clone();
        async move {
            let mut send = client.ready().await?;
            let (response, mut body) = send.send_request(grpc_request("/test.Echo/Hang"), false)?;
            body.send_data(frame(b"x"), true)?;
            read_reply(response).await
        }
    });
    assert_eq!(rt.block_on(backend.next_started()), "Hang");
    // Answering: headers and one echoed message are through; the stream stays open.
    let mut answering = rt.block_on(async {
        let mut send = client.clone().ready().await.unwrap();
        let (response, mut body) = send
            .send_request(grpc_request("/test.Echo/Bidi"), false)
            .unwrap();
        body.send_data(frame(b"ping"), false).unwrap();
        let response = tokio::time::timeout(BOUND, response)
            .await
            .unwrap()
            .unwrap();
        let mut response = response.into_body();
        let echoed = tokio::time::timeout(BOUND, response.data())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, frame(b"ping"));
        (response, body)
    });
    assert_eq!(rt.block_on(backend.next_started()), "Bidi");

    strait.signal("TERM");
    let reply = rt
        .block_on(async { tokio::time::timeout(BOUND, unanswered).await })
        .expect("the unanswered call outlived the grace period")
        .unwrap()
        .expect("a status, not a broken connection");
    assert!(reply.trailers_only, "{reply:?}");
    assert_eq!(
        (reply.status(), reply.message().as_str()),
        (14, "proxy shutting down")
    );
    let trailers = rt
        .block_on(async { tokio::time::timeout(BOUND, answering.0.trailers()).await })
        .expect("the answering call outlived the grace period")
        .expect("trailers, not a broken connection")
        .expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "14");
    assert_eq!(trailers.get("grpc-message").unwrap(), "proxy shutting down");
    let mut resets =
        rt.block_on(async { vec![backend.next_reset().await, backend.next_reset().await] });
    resets.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        resets,
        [
            ("Bidi".to_owned(), Reason::CANCEL),
            ("Hang".to_owned(), Reason::CANCEL)
        ]
    );
    let ended = rt
        .block_on(async { tokio::time::timeout(BOUND, connection).await })
        .expect("the client connection was not closed")
        .unwrap();
    assert!(ended.is_ok(), "the connection ended with {ended:?}");
    drop(answering);
    let exit = strait
        .wait_exit(BOUND)
        .expect("no exit after the grace period");
    assert_eq!(exit.code(), Some(3), "{}", strait.log());
}

/// A second signal during the drain ends the process at once (exit 4), saying so, although a call
/// holds the drain open for a minute.
#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let rt = runtime();
    let mut backend = rt.block_on(Backend::start());
    let mut strait = strait(backend.addr, "60s");
    let (client, _connection) = rt.block_on(connect(&strait.address()));
    let _call = rt.spawn({
        let client = client.clone();
        async move { unary(&client, grpc_request("/test.Echo/Hang"), b"x").await }
    });
    assert_eq!(rt.block_on(backend.next_started()), "Hang");
    strait.signal("TERM");
    assert!(
        strait.wait_log("SIGTERM received; draining", BOUND),
        "{}",
        strait.log()
    );
    assert!(strait.is_running());
    let second = Instant::now();
    strait.signal("INT");
    let exit = strait
        .wait_exit(BOUND)
        .expect("still running after the second signal");
    assert_eq!(exit.code(), Some(4), "{}", strait.log());
    // Far sooner than the 60 s grace (the bound only absorbs a loaded machine).
    assert!(second.elapsed() < BOUND, "{:?}", second.elapsed());
    assert!(
        strait
            .log()
            .contains("second signal (SIGINT) during the drain; exiting at once"),
        "{}",
        strait.log()
    );
}
