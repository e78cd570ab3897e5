//! Cluster connections between two Strait instances, in-process, each in front of its own backend
//! (standing in for a cluster's frontend): calls flow both ways over one mux link that only one side
//! accepts, mutual TLS is enforced on the mux port, a lost link fails in-flight calls promptly with
//! UNAVAILABLE, and tcp mode relays both ways too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use strait::config::Config;
use strait::Running;
use strait_test_support::backend::Backend;
use strait_test_support::client::{connect, grpc_request, unary};
use strait_test_support::fault_relay;

fn certs(name: &str) -> String {
    format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn start(text: &str) -> Running {
    strait::start(&Config::parse(text).unwrap()).await.unwrap()
}

async fn wait_ready(running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !running.all_checks_ok() {
        assert!(Instant::now() < deadline, "proxy not ready in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mux_server(backend: &Backend, grace: &str) -> String {
    mux_server_with(backend, grace, "")
}

fn mux_server_with(backend: &Backend, grace: &str, extra_tls: &str) -> String {
    format!(
        r#"
        [log]
        level = "warn"
        [admin]
        listen = "127.0.0.1:0"
        [shutdown]
        grace = "{grace}"
        [[cluster_connection]]
        name = "b-a"
        local = {{ listen = "127.0.0.1:0", upstream = "{}" }}
        remote = {{ mode = "mux-server", listen = "127.0.0.1:0", tls = {{ cert = "{}", key = "{}", client_ca = "{}"{extra_tls} }} }}
        "#,
        backend.addr,
        certs("server.pem"),
        certs("server-key.pem"),
        certs("ca.pem")
    )
}

fn mux_client(backend: &Backend, mux: std::net::SocketAddr, cert: &str, key: &str) -> String {
    format!(
        r#"
        [log]
        level = "warn"
        [admin]
        listen = "127.0.0.1:0"
        [[cluster_connection]]
        name = "a-b"
        local = {{ listen = "127.0.0.1:0", upstream = "{}" }}
        remote = {{ mode = "mux-client", address = "{mux}", sessions = 2, tls = {{ ca = "{}", cert = "{}", key = "{}", server_name = "localhost" }} }}
        "#,
        backend.addr,
        certs("ca.pem"),
        certs(cert),
        certs(key)
    )
}

#[tokio::test]
async fn calls_flow_both_ways_over_one_mux_link_with_mutual_tls() {
    let (backend_a, backend_b) = (Backend::start().await, Backend::start().await);
    let b = start(&mux_server(&backend_b, "5s")).await;
    let mux = b.listener_addr("b-a.mux").unwrap();
    // A link name of its own: metrics are process-wide and other tests run links named a-b.
    let config = mux_client(&backend_a, mux, "client.pem", "client-key.pem")
        .replace("\"a-b\"", "\"a-b-both-ways\"");
    let a = start(&config).await;
    wait_ready(&a).await;
    wait_ready(&b).await;

    // A's cluster calls B's cluster: in at A's local listener, out at B's backend.
    let from_a = connect(a.listener_addr("a-b-both-ways.local").unwrap()).await;
    for i in 0..5 {
        let body = format!("a to b {i}");
        let reply = unary(
            &from_a,
            grpc_request("/temporal.server.api.adminservice.v1.AdminService/DescribeCluster"),
            body.as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(reply.status(), 0, "{}", reply.message());
        assert_eq!(reply.messages[0], Bytes::from(body));
    }
    assert_eq!(backend_b.observed.authorities.lock().unwrap().len(), 5);
    assert!(backend_a.observed.authorities.lock().unwrap().is_empty());

    // B's cluster calls A's cluster over the same link, which B only accepted.
    let from_b = connect(b.listener_addr("b-a.local").unwrap()).await;
    let reply = unary(
        &from_b,
        grpc_request("/temporal.server.api.adminservice.v1.AdminService/DescribeCluster"),
        b"b to a",
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(reply.messages[0], Bytes::from_static(b"b to a"));
    assert_eq!(backend_a.observed.authorities.lock().unwrap().len(), 1);

    // Both configured sessions are up and counted.
    let metrics = metrics_text(a.admin_addr()).await;
    let sessions = metrics
        .lines()
        .find(|l| l.starts_with("strait_mux_sessions{") && l.contains("link=\"a-b-both-ways\""))
        .unwrap_or_else(|| panic!("no session gauge in {metrics}"));
    assert!(sessions.ends_with(" 2"), "{sessions}");

    assert!(a.shutdown().await);
    assert!(b.shutdown().await);
}

/// (status, body) of an admin endpoint.
async fn admin_get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Polls /readyz until it answers `status` with a body holding every one of `lines`, for at most
/// 10 s; returns the body. Every line must be `ready`/`not ready` or `ok|warn|fail <check>: <detail>`,
/// and the verdict must be `not ready` exactly when a line is `fail`.
async fn wait_readyz(running: &Running, status: u16, lines: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = admin_get(running.admin_addr(), "/readyz").await;
        let mut body_lines = body.lines();
        let verdict = body_lines.next().unwrap_or_default();
        assert_eq!(verdict == "ready", code == 200, "{code}: {body}");
        assert!(verdict == "ready" || verdict == "not ready", "{body}");
        let mut failing = false;
        for line in body_lines {
            let (check, detail) = line.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
            assert!(
                ["ok ", "warn ", "fail "]
                    .iter()
                    .any(|s| check.starts_with(s))
                    && !detail.is_empty(),
                "{line:?}"
            );
            failing |= check.starts_with("fail ");
        }
        assert_eq!(failing, verdict == "not ready", "{body}");
        if code == status && lines.iter().all(|l| body.lines().any(|b| b.starts_with(l))) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz: wanted {status} with {lines:#?}, last answered {code}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics_text(admin: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_on_the_mux_port() {
    let (backend_a, backend_b) = (Backend::start().await, Backend::start().await);
    let b = start(&mux_server(&backend_b, "5s")).await;
    let mux = b.listener_addr("b-a.mux").unwrap();
    let rogue = start(&mux_client(
        &backend_a,
        mux,
        "rogue-client.pem",
        "rogue-client-key.pem",
    ))
    .await;
    let client = connect(rogue.listener_addr("a-b.local").unwrap()).await;
    let reply = unary(
        &client,
        grpc_request("/temporal.server.api.adminservice.v1.AdminService/DescribeCluster"),
        b"x",
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 14, "{}", reply.message());
    // The link is down, but it does not gate readiness: the process itself is ready.
    assert!(!rogue.all_checks_ok());
    assert!(rogue.is_ready());
    assert!(backend_b.observed.authorities.lock().unwrap().is_empty());
    rogue.shutdown().await;
    assert!(b.shutdown().await);
}

#[tokio::test]
async fn the_allowed_san_list_is_enforced_on_top_of_the_ca() {
    for (allowed, admitted) in [("strait-client.test", true), ("someone-else.test", false)] {
        let (backend_a, backend_b) = (Backend::start().await, Backend::start().await);
        let extra = format!(", allowed_sans = [\"{allowed}\"]");
        let b = start(&mux_server_with(&backend_b, "5s", &extra)).await;
        let mux = b.listener_addr("b-a.mux").unwrap();
        let a = start(&mux_client(&backend_a, mux, "client.pem", "client-key.pem")).await;
        let client = connect(a.listener_addr("a-b.local").unwrap()).await;
        let reply = unary(&client, grpc_request("/x.Y/Unary"), b"san")
            .await
            .unwrap();
        assert_eq!(
            reply.status() == 0,
            admitted,
            "allowed {allowed}: {}",
            reply.message()
        );
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn a_lost_link_fails_in_flight_calls_promptly_and_new_calls_get_unavailable() {
    let (backend_a, mut backend_b) = (Backend::start().await, Backend::start().await);
    let b = start(&mux_server(&backend_b, "5s")).await;
    // The link runs through a TCP relay that can be cut (B's own shutdown would end the call with
    // a status of its own rather than lose the link under it).
    let link = fault_relay::FaultRelay::start(b.listener_addr("b-a.mux").unwrap());
    let a = start(&mux_client(
        &backend_a,
        link.address(),
        "client.pem",
        "client-key.pem",
    ))
    .await;
    wait_ready(&a).await;
    let client = connect(a.listener_addr("a-b.local").unwrap()).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { unary(&client, grpc_request("/x.Y/Hang"), b"long").await }
    });
    assert_eq!(backend_b.next_started().await, "Hang");
    let cut = Instant::now();
    link.cut();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap();
    match outcome {
        Ok(reply) => assert_eq!(reply.status(), 14, "{}", reply.message()),
        Err(err) => panic!("expected UNAVAILABLE, got {err}"),
    }
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "in-flight call outlived the link by {:?}",
        cut.elapsed()
    );
    let reply = unary(&client, grpc_request("/x.Y/Unary"), b"x")
        .await
        .unwrap();
    assert_eq!(reply.status(), 14);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn tcp_mode_relays_both_ways_between_two_proxies() {
    let (backend_a, backend_b) = (Backend::start().await, Backend::start().await);
    // Fixed ports are avoided: B's remote listener is bound first, then A points at it, then B is
    // pointed at A's remote listener through a second start (addresses are only known after binding).
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (a_remote, b_remote) = (free(), free());
    let config = |name: &str,
                  backend: &Backend,
                  listen: std::net::SocketAddr,
                  peer: std::net::SocketAddr| {
        format!(
            r#"
            [log]
            level = "warn"
            [admin]
            listen = "127.0.0.1:0"
            [[cluster_connection]]
            name = "{name}"
            local = {{ listen = "127.0.0.1:0", upstream = "{}" }}
            remote = {{ mode = "tcp", listen = "{listen}", address = "{peer}" }}
            "#,
            backend.addr
        )
    };
    let a = start(&config("a-b", &backend_a, a_remote, b_remote)).await;
    let b = start(&config("b-a", &backend_b, b_remote, a_remote)).await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    let from_a = connect(a.listener_addr("a-b.local").unwrap()).await;
    let reply = unary(&from_a, grpc_request("/x.Y/Unary"), b"via tcp")
        .await
        .unwrap();
    assert_eq!(reply.messages[0], Bytes::from_static(b"via tcp"));
    assert_eq!(backend_b.observed.authorities.lock().unwrap().len(), 1);
    let from_b = connect(b.listener_addr("b-a.local").unwrap()).await;
    let reply = unary(&from_b, grpc_request("/x.Y/Unary"), b"and back")
        .await
        .unwrap();
    assert_eq!(reply.messages[0], Bytes::from_static(b"and back"));
    assert_eq!(backend_a.observed.authorities.lock().unwrap().len(), 1);
    assert!(a.shutdown().await);
    assert!(b.shutdown().await);
}

#[tokio::test]
async fn calls_from_the_remote_side_are_limited_to_the_allowed_methods() {
    let (backend_a, backend_b) = (Backend::start().await, Backend::start().await);
    // B only lets AdminService calls and DescribeNamespace in from A.
    let acl =
        "acl = { allowed_methods = [\"AdminService.*\", \"WorkflowService.DescribeNamespace\"] }";
    let b = start(&format!(
        "{}\n        {acl}\n",
        mux_server(&backend_b, "5s")
    ))
    .await;
    let mux = b.listener_addr("b-a.mux").unwrap();
    let a = start(&mux_client(&backend_a, mux, "client.pem", "client-key.pem")).await;
    wait_ready(&a).await;
    let from_a = connect(a.listener_addr("a-b.local").unwrap()).await;
    let allowed = [
        "/temporal.server.api.adminservice.v1.AdminService/StreamWorkflowReplicationMessages",
        "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace",
    ];
    for path in allowed {
        let reply = unary(&from_a, grpc_request(path), b"ok").await.unwrap();
        assert_eq!(reply.status(), 0, "{path}: {}", reply.message());
    }
    let denied = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";
    let reply = unary(&from_a, grpc_request(denied), b"no").await.unwrap();
    assert_eq!(reply.status(), 7);
    assert!(
        reply.message().contains("StartWorkflowExecution"),
        "{}",
        reply.message()
    );
    assert_eq!(
        backend_b.observed.authorities.lock().unwrap().len(),
        2,
        "the denied call reached B"
    );
    // B's own calls towards A are not limited (apply_to_local is off).
    let from_b = connect(b.listener_addr("b-a.local").unwrap()).await;
    let reply = unary(&from_b, grpc_request(denied), b"local")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0);
    assert!(a.shutdown().await);
    assert!(b.shutdown().await);
}

/// A pool over a mux link redials as soon as a session is back rather than when its backoff runs
/// out: after a long outage the backoff is at its maximum (10 s by default), and calls would fail
/// that long on a link that is up again.
#[tokio::test]
async fn a_pool_over_a_mux_link_redials_as_soon_as_a_session_is_back() {
    use std::sync::Arc;
    use strait::config::UpstreamConfig;
    use strait::relay::upstream::{Dialer, UpstreamPool};
    use strait::transport::mux::{spawn_session, Role, SessionSet};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    let sessions = SessionSet::new();
    let config = UpstreamConfig {
        backoff_initial: Duration::from_secs(60),
        backoff_max: Duration::from_secs(60),
        ..UpstreamConfig::with_defaults("mux-pool".into(), "peer:1".into())
    };
    let dialer = Dialer::Mux {
        sessions: Arc::clone(&sessions),
        label: "peer".into(),
        timeout: Duration::from_millis(50),
    };
    let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
    let pool = UpstreamPool::start_with(&config, dialer, stop.clone(), &tracker).unwrap();

    // No session yet: the first dial fails, and the slot backs off for 30-60 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let err = pool
            .acquire(Instant::now() + Duration::from_millis(20))
            .await
            .expect_err("no session, yet a connection");
        if err.to_string().contains("no mux session is up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first dial never failed: {err}"
        );
    }

    // The link comes back: a session whose far end answers every call with HTTP 200.
    let (near, far) = tokio::io::duplex(64 * 1024);
    let (near_in, _near_streams) = tokio::sync::mpsc::channel(8);
    let (far_in, mut far_streams) = tokio::sync::mpsc::channel(8);
    sessions.add(spawn_session(near, Role::Client, near_in, stop.clone()));
    let _far = spawn_session(far, Role::Server, far_in, stop.clone());
    tokio::spawn(async move {
        while let Some(io) = far_streams.recv().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(io).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = connection.accept().await {
                    let _ = respond.send_response(http::Response::new(()), true);
                }
            });
        }
    });
    let back = Instant::now();
    let send = pool
        .acquire(back + Duration::from_secs(2))
        .await
        .expect("the pool redials once the session is back");
    let request = http::Request::post("http://peer/x.Y/Z").body(()).unwrap();
    let (response, _) = send.clone().send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "reconnected after {:?}",
        back.elapsed()
    );
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

/// /readyz reports each cluster connection line by line: its mux sessions (of how many configured),
/// its local and remote connections. A link that is down is `warn` and leaves the process ready
/// (B, the mux-server, is ready before any peer dials it), unless its side opts in with
/// `gate_readiness` (A's remote): then it is `fail` and /readyz 503. The restored link is `ok` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_each_link_and_gates_only_where_configured() {
    let (backend_a, backend_b) = (Backend::start().await, Backend::start().await);
    let b = start(&mux_server(&backend_b, "5s").replace("\"b-a\"", "\"b-a-ready\"")).await;
    let mux = b.listener_addr("b-a-ready.mux").unwrap();
    // No peer has dialled yet: B's link has no session, so nothing to call the other side over,
    // and B is ready all the same (a Service would otherwise never route A's sessions to it).
    wait_readyz(
        &b,
        200,
        &[
            "ready",
            "ok listeners: bound",
            &format!("warn link b-a-ready sessions: 0 mux sessions up (mux-server on {mux})"),
            &format!(
                "ok link b-a-ready local: connected, 1 of 1 connections up ({})",
                backend_b.addr
            ),
            "warn link b-a-ready remote: not connected, 0 of 1 connections up (streams of the mux link): ",
        ],
    )
    .await;

    let relay = fault_relay::FaultRelay::start(mux);
    let a = start(
        &mux_client(&backend_a, relay.address(), "client.pem", "client-key.pem")
            .replace("\"a-b\"", "\"a-b-ready\"")
            .replace(
                "mode = \"mux-client\"",
                "mode = \"mux-client\", gate_readiness = true",
            ),
    )
    .await;
    let via = relay.address();
    let a_up = [
        "ready".to_owned(),
        format!("ok link a-b-ready sessions: 2 of 2 mux sessions up (mux-client dialling {via})"),
        format!(
            "ok link a-b-ready local: connected, 1 of 1 connections up ({})",
            backend_a.addr
        ),
        "ok link a-b-ready remote: connected, 2 of 2 connections up (streams of the mux link)"
            .to_owned(),
    ];
    let a_up: Vec<&str> = a_up.iter().map(String::as_str).collect();
    wait_readyz(&a, 200, &a_up).await;
    wait_readyz(
        &b,
        200,
        &[
            "ready",
            &format!("ok link b-a-ready sessions: 2 mux sessions up (mux-server on {mux})"),
            "ok link b-a-ready remote: connected, 1 of 1 connections up (streams of the mux link)",
        ],
    )
    .await;

    // The link is cut: both ends say which link is down and why; the local sides stay up. A gates
    // on its remote side, so it is not ready; B does not, so it is.
    relay.cut();
    let body = wait_readyz(
        &a,
        503,
        &[
            "not ready",
            &format!(
                "fail link a-b-ready sessions: 0 of 2 mux sessions up (mux-client dialling {via})"
            ),
            "ok link a-b-ready local: connected",
            "fail link a-b-ready remote: not connected, 0 of 2 connections up (streams of the mux link): ",
        ],
    )
    .await;
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("fail") && !l.contains("a-b-ready")),
        "a failing line that does not name the link:\n{body}"
    );
    wait_readyz(
        &b,
        200,
        &[
            "ready",
            &format!("warn link b-a-ready sessions: 0 mux sessions up (mux-server on {mux})"),
            "warn link b-a-ready remote: not connected",
        ],
    )
    .await;

    // The same per check in metrics, with whether it gates (names are unique to this test).
    let gauge = |text: &str, check: &str, gates: &str| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with("strait_ready_check{"))
            .find(|l| {
                l.contains(&format!("check=\"{check}\""))
                    && l.contains(&format!("gates=\"{gates}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let text = metrics_text(a.admin_addr()).await;
    assert_eq!(
        gauge(&text, "link a-b-ready remote", "true"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        gauge(&text, "link a-b-ready local", "false"),
        Some(1.0),
        "{text}"
    );
    let text = metrics_text(b.admin_addr()).await;
    assert_eq!(
        gauge(&text, "link b-a-ready sessions", "false"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(gauge(&text, "listeners", "true"), Some(1.0), "{text}");

    // Restored: every line ok again on both ends.
    relay.restore();
    wait_readyz(&a, 200, &a_up).await;
    wait_readyz(
        &b,
        200,
        &[
            "ready",
            "ok link b-a-ready sessions",
            "ok link b-a-ready remote",
        ],
    )
    .await;
    assert!(a.shutdown().await);
    assert!(b.shutdown().await);
}

/// A tcp link whose local frontend and remote peer are both unreachable: a line for each, naming
/// the link, the side and the last error; the local side gates readiness (`fail`, 503), the remote
/// side does not (`warn`).
#[tokio::test]
async fn readyz_names_the_side_of_a_link_whose_upstream_is_down() {
    let unused = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (frontend, peer) = (unused(), unused());
    let running = start(&format!(
        r#"
        [log]
        level = "error"
        [admin]
        listen = "127.0.0.1:0"
        [[cluster_connection]]
        name = "down-link"
        local = {{ listen = "127.0.0.1:0", upstream = "{frontend}", gate_readiness = true }}
        remote = {{ mode = "tcp", listen = "127.0.0.1:0", address = "{peer}" }}
        "#
    ))
    .await;
    let body = wait_readyz(
        &running,
        503,
        &[
            &format!(
                "fail link down-link local: not connected, 0 of 1 connections up ({frontend}): connect to {frontend}"
            ),
            &format!(
                "warn link down-link remote: not connected, 0 of 1 connections up ({peer}): connect to {peer}"
            ),
        ],
    )
    .await;
    assert!(
        !body.contains("sessions"),
        "a tcp link has no sessions:\n{body}"
    );
    running.shutdown().await;
}
