//! Focused relay tests against an in-process HTTP/2 gRPC backend: every call shape, metadata and
//! trailers, cancellation both ways, trailers-only errors, upstream failure, size limits, malformed
//! frames, deadlines, flow-control backpressure both ways, graceful shutdown and TLS listeners.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use http::HeaderValue;
use strait::config::Config;
use strait::Running;
use strait_test_support::backend;
use strait_test_support::backend::{frame, Backend};
use strait_test_support::client;
use strait_test_support::client::{connect, grpc_request, read_reply, unary};
use strait_test_support::fault_relay;
use strait_test_support::h2raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn certs(name: &str) -> String {
    format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn start_proxy(upstream: SocketAddr, listener_extra: &str, top_extra: &str) -> Running {
    let text = format!(
        r#"
        [log]
        level = "warn"
        [admin]
        listen = "127.0.0.1:0"
        {top_extra}
        [[upstream]]
        name = "backend"
        address = "{upstream}"
        connect_timeout = "1s"
        backoff_initial = "50ms"
        backoff_max = "200ms"
        [[listener]]
        name = "test"
        listen = "127.0.0.1:0"
        upstream = "backend"
        {listener_extra}
        "#
    );
    let config = Config::parse(&text).unwrap();
    let running = strait::start(&config).await.unwrap();
    running
}

async fn wait_ready(running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running.all_checks_ok() {
        assert!(Instant::now() < deadline, "proxy not ready in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ready_proxy(backend: &Backend, listener_extra: &str) -> (Running, SocketAddr) {
    let running = start_proxy(backend.addr, listener_extra, "").await;
    wait_ready(&running).await;
    let addr = running.listener_addr("test").unwrap();
    (running, addr)
}

/// A backend, a ready proxy in front of it (with extra listener settings) and a client connection.
async fn setup(listener_extra: &str) -> (Backend, Running, h2::client::SendRequest<Bytes>) {
    let backend = Backend::start().await;
    let (proxy, addr) = ready_proxy(&backend, listener_extra).await;
    let client = connect(addr).await;
    (backend, proxy, client)
}

/// Opens a call; the request body is the caller's to send.
async fn start_call(
    client: &h2::client::SendRequest<Bytes>,
    path: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut send = client.clone().ready().await.unwrap();
    send.send_request(grpc_request(path), false).unwrap()
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn unary_relays_messages_metadata_and_trailers_for_any_method() {
    let (backend, proxy, client) = setup("").await;
    let mut request = grpc_request("/some.unknown.v9.Service/NeverHeardOf");
    request
        .headers_mut()
        .insert("x-custom", HeaderValue::from_static("custom-value"));
    request
        .headers_mut()
        .insert("temporal-namespace", HeaderValue::from_static("orders"));
    request
        .headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("10S"));
    let reply = unary(&client, request, b"hello through strait")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(
        reply.messages,
        vec![Bytes::from_static(b"hello through strait")]
    );
    assert_eq!(reply.headers["x-echo-x-custom"], "custom-value");
    assert_eq!(reply.headers["x-echo-temporal-namespace"], "orders");
    assert_eq!(reply.trailers["x-trailer"], "yes");
    // :authority is the upstream's, and te: trailers is present for the upstream.
    let authority = backend
        .observed
        .authorities
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(authority, backend.addr.to_string());
    let seen = backend.observed.headers.lock().unwrap()["NeverHeardOf"].clone();
    assert_eq!(seen["te"], "trailers");
    assert_eq!(seen["grpc-timeout"], "10S");

    let (status, metrics) = http_get(proxy.admin_addr(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("strait_calls_total"), "{metrics}");
    assert!(metrics.contains("strait_message_bytes_total"));
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn messages_split_across_frames_and_joined_in_one_frame_are_relayed() {
    let (_backend, proxy, client) = setup("").await;
    let (response, mut stream) = start_call(&client, "/test.Echo/Unary").await;
    let first = frame(&[3u8; 1000]);
    for byte in first.iter() {
        stream
            .send_data(Bytes::copy_from_slice(&[*byte]), false)
            .unwrap();
    }
    let mut joined = frame(b"two").to_vec();
    joined.extend_from_slice(&frame(b""));
    joined.extend_from_slice(&frame(b"four"));
    stream.send_data(Bytes::from(joined), true).unwrap();
    let reply = read_reply(response).await.unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let lens: Vec<usize> = reply.messages.iter().map(|m| m.len()).collect();
    assert_eq!(lens, vec![1000, 3, 0, 4]);
    assert_eq!(reply.messages[3], Bytes::from_static(b"four"));
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn client_streaming_server_streaming_and_bidi_calls_relay() {
    let (_backend, proxy, client) = setup("").await;

    // Client streaming: many request messages, echoed after the request ends.
    let (response, mut stream) = start_call(&client, "/test.Echo/Collect").await;
    for i in 0..20u8 {
        stream.send_data(frame(&[i; 10]), false).unwrap();
    }
    stream.send_data(Bytes::new(), true).unwrap();
    let reply = read_reply(response).await.unwrap();
    assert_eq!(reply.messages.len(), 20);
    assert_eq!(reply.messages[19], Bytes::from(vec![19u8; 10]));

    // Bidi: strict ping-pong proves each message is forwarded as soon as it is complete.
    let (response, mut stream) = start_call(&client, "/test.Echo/Stream").await;
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let mut pending = bytes::BytesMut::new();
    for i in 0..50u32 {
        let payload = format!("ping {i}");
        stream.send_data(frame(payload.as_bytes()), false).unwrap();
        let echoed = loop {
            let mut got = backend::take_messages(&mut pending);
            if let Some(message) = got.pop() {
                break message;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.data())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            pending.extend_from_slice(&chunk);
        };
        assert_eq!(echoed, Bytes::from(payload));
    }
    stream.send_data(Bytes::new(), true).unwrap();
    let trailers = tokio::time::timeout(Duration::from_secs(5), body.trailers())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn trailers_only_error_passes_as_trailers_only() {
    let (_backend, proxy, client) = setup("").await;
    let reply = unary(&client, grpc_request("/test.Echo/TrailersOnly"), b"x")
        .await
        .unwrap();
    assert!(reply.trailers_only);
    assert_eq!(reply.status(), 5);
    assert_eq!(reply.message(), "thing%20not%20found");
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn complete_response_before_the_request_ends_is_relayed() {
    let (backend, proxy, client) = setup("").await;
    let (response, mut stream) = start_call(&client, "/test.Echo/EarlyReply").await;
    // The request stays open while the upstream answers in full.
    stream.send_data(frame(b"early"), false).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), read_reply(response))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages, vec![Bytes::from_static(b"early")]);
    backend.observed.gate.notify_one();
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn client_cancellation_resets_the_upstream_stream() {
    let (mut backend, proxy, client) = setup("").await;
    let (_response, mut stream) = start_call(&client, "/test.Echo/Hang").await;
    stream.send_data(frame(b"wait forever"), true).unwrap();
    assert_eq!(backend.next_started().await, "Hang");
    stream.send_reset(Reason::CANCEL);
    assert_eq!(
        backend.next_reset().await,
        ("Hang".to_owned(), Reason::CANCEL)
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn an_upstream_cancel_reaches_the_client_as_cancelled() {
    let (_backend, proxy, client) = setup("").await;
    let reply = unary(&client, grpc_request("/test.Echo/Reset"), b"x")
        .await
        .unwrap();
    assert_eq!(reply.status(), 1, "{}", reply.message());
    assert!(
        reply.message().contains("\"backend\" cancelled"),
        "{}",
        reply.message()
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn upstream_down_gives_unavailable_promptly() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(unused, "", "").await;
    let addr = proxy.listener_addr("test").unwrap();
    // Ready all the same: the upstream does not gate readiness, it is reported as a warning.
    let (status, body) = http_get(proxy.admin_addr(), "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.lines()
            .any(|l| l.starts_with("warn upstream ") && l.contains("not connected")),
        "{body}"
    );
    let client = connect(addr).await;
    let started = Instant::now();
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"x")
        .await
        .unwrap();
    assert!(reply.trailers_only);
    assert_eq!(reply.status(), 14);
    assert!(
        reply.message().contains("unavailable"),
        "{}",
        reply.message()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn oversized_messages_fail_with_resource_exhausted_both_ways() {
    let (mut backend, proxy, client) = setup("limits = { max_message_bytes = 1024 }").await;

    let reply = unary(&client, grpc_request("/test.Echo/Hang"), &[0u8; 2000])
        .await
        .unwrap();
    assert_eq!(reply.status(), 8);
    assert!(
        reply.message().contains("exceeds the limit of 1024"),
        "{}",
        reply.message()
    );
    // The upstream call was cancelled, not left hanging.
    assert_eq!(backend.next_started().await, "Hang");
    assert_eq!(backend.next_reset().await.1, Reason::CANCEL);

    let reply = unary(
        &client,
        grpc_request("/test.Echo/Big"),
        &5000u32.to_be_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 8);
    assert!(reply.messages.is_empty());

    let reply = unary(
        &client,
        grpc_request("/test.Echo/Big"),
        &1024u32.to_be_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages[0].len(), 1024);
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn malformed_frame_fails_with_internal() {
    let (_backend, proxy, client) = setup("").await;
    let (response, mut stream) = start_call(&client, "/test.Echo/Hang").await;
    stream
        .send_data(Bytes::from_static(&[9, 0, 0, 0, 1, 0]), true)
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), read_reply(response))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 13);
    assert!(
        reply.message().contains("compressed flag"),
        "{}",
        reply.message()
    );

    // A request that ends inside a message is refused the same way.
    let (response, mut stream) = start_call(&client, "/test.Echo/Hang").await;
    stream
        .send_data(Bytes::from_static(&[0, 0, 0, 0, 9, 1, 2]), true)
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), read_reply(response))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 13);
    assert!(
        reply.message().contains("ended inside"),
        "{}",
        reply.message()
    );
    assert!(proxy.shutdown().await);
}

/// Sends a request with `method` and `content_type` (and a body unless GET or HEAD); returns the
/// response head and body text.
async fn plain_request(
    client: &h2::client::SendRequest<Bytes>,
    method: &str,
    content_type: Option<&'static str>,
) -> (http::response::Parts, String) {
    let mut request = grpc_request("/test.Echo/Unary");
    *request.method_mut() = method.parse().unwrap();
    match content_type {
        Some(value) => request
            .headers_mut()
            .insert("content-type", HeaderValue::from_static(value)),
        None => request.headers_mut().remove("content-type"),
    };
    let bodyless = method == "GET" || method == "HEAD";
    let mut send = client.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, bodyless).unwrap();
    if !bodyless {
        // Refused at once, the stream may be closed already: the answer is the outcome.
        let _ = stream.send_data(frame(b"x"), true);
    }
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    let (parts, mut body) = response.into_parts();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.data())
        .await
        .unwrap()
    {
        text.extend_from_slice(&chunk.unwrap());
    }
    (parts, String::from_utf8(text).unwrap())
}

#[tokio::test]
async fn non_grpc_requests_get_415_or_405_with_a_status_and_never_reach_the_upstream() {
    let (mut backend, proxy, client) = setup("").await;
    // Another content type (or none): 415 Unsupported Media Type, whatever the method.
    for (method, content_type) in [
        ("POST", Some("text/plain")),
        ("POST", Some("application/json")),
        ("GET", None),
    ] {
        let (parts, text) = plain_request(&client, method, content_type).await;
        assert_eq!(parts.status, 415, "{method} {content_type:?}");
        assert_eq!(parts.headers["grpc-status"], "12");
        assert!(parts.headers.contains_key("grpc-message"));
        assert_eq!(parts.headers["content-type"], "text/plain; charset=utf-8");
        assert!(text.contains("application/grpc"), "{text}");
    }
    // The gRPC content type with another method: 405 Method Not Allowed, naming POST.
    for method in ["GET", "PUT"] {
        let (parts, text) = plain_request(&client, method, Some("application/grpc")).await;
        assert_eq!(parts.status, 405, "{method}");
        assert_eq!(parts.headers["allow"], "POST");
        assert_eq!(parts.headers["grpc-status"], "12");
        assert!(text.contains("POST"), "{text}");
    }
    // HEAD: the same answer without a body.
    let (parts, text) = plain_request(&client, "HEAD", Some("application/grpc")).await;
    assert_eq!(parts.status, 405);
    assert_eq!(text, "");
    // None of them reached the upstream: the next call there is the first.
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"grpc")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(backend.next_started().await, "Unary");
    assert!(backend.started.try_recv().is_err());
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn own_deadline_is_enforced_when_the_upstream_hangs() {
    let (mut backend, proxy, client) = setup("").await;
    let mut request = grpc_request("/test.Echo/Hang");
    request
        .headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("100m"));
    let started = Instant::now();
    let reply = unary(&client, request, b"x").await.unwrap();
    assert_eq!(reply.status(), 4);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(backend.next_started().await, "Hang");
    assert_eq!(backend.next_reset().await.1, Reason::CANCEL);
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn proxy_cap_never_cuts_a_call_with_a_longer_own_timeout() {
    let (mut backend, proxy, client) = setup("limits = { max_call_duration = \"200ms\" }").await;
    let mut request = grpc_request("/test.Echo/Gate");
    request
        .headers_mut()
        .insert("grpc-timeout", HeaderValue::from_static("30S"));
    let call = tokio::spawn({
        let client = client.clone();
        async move { unary(&client, request, b"long poll").await }
    });
    assert_eq!(backend.next_started().await, "Gate");
    // Well past the proxy's cap, the call must still be open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!call.is_finished());
    backend.observed.gate.notify_one();
    let reply = call.await.unwrap().unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages[0], Bytes::from_static(b"long poll"));

    // Without an own timeout, the cap applies.
    let reply = unary(&client, grpc_request("/test.Echo/Hang"), b"x")
        .await
        .unwrap();
    assert_eq!(reply.status(), 4);
    assert!(proxy.shutdown().await);
}

/// Waits until `value` stops growing for `quiet`, bounded by 20 s.
async fn settle(value: impl Fn() -> u64, quiet: Duration) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = value();
    loop {
        tokio::time::sleep(quiet).await;
        let now = value();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test]
async fn slow_upstream_reader_stalls_the_client_with_bounded_buffering() {
    let (mut backend, proxy, client) = setup("").await;
    let (_response, mut stream) = start_call(&client, "/test.Echo/NoRead").await;
    // Offer 64 MiB; count what flow control lets through before it stalls.
    let message = frame(&vec![5u8; 1024 * 1024 - 5]);
    let mut accepted = 0usize;
    'offer: for _ in 0..64 {
        let mut data = message.clone();
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let capacity = tokio::time::timeout(
                Duration::from_millis(1500),
                poll_fn(|cx| stream.poll_capacity(cx)),
            )
            .await;
            let Ok(Some(Ok(n))) = capacity else {
                break 'offer;
            };
            if n == 0 {
                continue;
            }
            let n = n.min(data.len());
            stream.send_data(data.split_to(n), false).unwrap();
            accepted += n;
        }
    }
    // Client → proxy stream window (1 MiB) + proxy → backend window (64 KiB) + frame slack.
    assert!(
        accepted < 2 * 1024 * 1024,
        "accepted {accepted} bytes from a stalled stream"
    );
    assert!(accepted >= 1024 * 1024, "window was not used: {accepted}");
    assert_eq!(backend.next_started().await, "NoRead");
    stream.send_reset(Reason::CANCEL);
    assert_eq!(
        backend.next_reset().await,
        ("NoRead".to_owned(), Reason::CANCEL)
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn slow_client_reader_stalls_the_upstream_with_bounded_buffering() {
    let (backend, proxy, client) = setup("").await;
    let (response, mut stream) = start_call(&client, "/test.Echo/Flood").await;
    stream.send_data(frame(b"go"), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    let observed = Arc::clone(&backend.observed);
    let stalled = settle(
        || observed.flood_sent.load(Ordering::Relaxed),
        Duration::from_millis(300),
    )
    .await;
    // Client window (64 KiB) + proxy send buffer (256 KiB) + proxy ← backend window (1 MiB) + slack.
    assert!(
        stalled < 3 * 1024 * 1024,
        "upstream pushed {stalled} bytes to a reader that reads nothing"
    );
    // Reading resumes the flow: everything arrives intact.
    let mut body = response.into_body();
    let messages = tokio::time::timeout(Duration::from_secs(60), client::read_messages(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(messages.len(), 2048);
    assert!(messages
        .iter()
        .all(|m| m.len() == 64 * 1024 && m.iter().all(|b| *b == 1)));
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn graceful_shutdown_drains_an_in_flight_call() {
    let (mut backend, proxy, client) = setup("").await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { unary(&client, grpc_request("/test.Echo/Gate"), b"drain me").await }
    });
    assert_eq!(backend.next_started().await, "Gate");
    let proxy_addr = proxy.listener_addr("test").unwrap();
    let shutdown = tokio::spawn(proxy.shutdown());
    // New connections are refused once the listener stops accepting.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = match tokio::net::TcpStream::connect(proxy_addr).await {
            Err(_) => true,
            Ok(tcp) => h2::client::handshake(tcp).await.is_err(),
        };
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listener still accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!call.is_finished());
    backend.observed.gate.notify_one();
    let reply = call.await.unwrap().unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages[0], Bytes::from_static(b"drain me"));
    assert!(tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap());
}

/// At the end of the grace period every call left ends properly: UNAVAILABLE "proxy shutting down"
/// (trailers-only before the response began, trailers after), its upstream call cancelled, and
/// the client connection closed after a GOAWAY, never a bare TCP close under the calls.
#[tokio::test]
async fn shutdown_ends_calls_still_running_after_the_grace_period_with_unavailable() {
    let mut backend = Backend::start().await;
    let proxy = start_proxy(backend.addr, "", "[shutdown]\ngrace = \"300ms\"").await;
    wait_ready(&proxy).await;
    let tcp = tokio::net::TcpStream::connect(proxy.listener_addr("test").unwrap())
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    // Not answered yet: the backend holds it without response headers.
    let unanswered = tokio::spawn({
        let client = client.clone();
        async move { unary(&client, grpc_request("/test.Echo/Hang"), b"x").await }
    });
    assert_eq!(backend.next_started().await, "Hang");
    // Answering: response headers and one echoed message are through, the stream stays open.
    let mut sender = client.clone().ready().await.unwrap();
    let (response, mut request_body) = sender
        .send_request(grpc_request("/test.Echo/Bidi"), false)
        .unwrap();
    request_body.send_data(frame(b"ping"), false).unwrap();
    assert_eq!(backend.next_started().await, "Bidi");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    let mut response_body = response.into_body();
    let echoed = tokio::time::timeout(Duration::from_secs(10), response_body.data())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, frame(b"ping"));

    let started = Instant::now();
    assert!(!proxy.shutdown().await, "held calls cannot drain");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let reply = tokio::time::timeout(Duration::from_secs(5), unanswered)
        .await
        .unwrap()
        .unwrap()
        .expect("a status, not a broken connection");
    assert!(reply.trailers_only);
    assert_eq!(
        (reply.status(), reply.message().as_str()),
        (14, "proxy shutting down")
    );
    let trailers = tokio::time::timeout(Duration::from_secs(5), response_body.trailers())
        .await
        .unwrap()
        .expect("trailers, not a broken connection")
        .unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "14");
    assert_eq!(trailers.get("grpc-message").unwrap(), "proxy shutting down");
    // Both upstream calls were cancelled.
    let mut reset = vec![backend.next_reset().await, backend.next_reset().await];
    reset.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reset,
        [
            ("Bidi".to_owned(), Reason::CANCEL),
            ("Hang".to_owned(), Reason::CANCEL)
        ]
    );
    // The connection ends cleanly (GOAWAY, then close), not with an I/O error.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}

async fn tls_connect(
    addr: SocketAddr,
    client_cert: Option<(&str, &str)>,
) -> Result<h2::client::SendRequest<Bytes>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(certs(cert))
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_file(certs(key)).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

#[tokio::test]
async fn tls_listener_requires_a_client_certificate_from_the_configured_ca() {
    let backend = Backend::start().await;
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}",
        certs("server.pem"),
        certs("server-key.pem"),
        certs("ca.pem")
    );
    let (proxy, addr) = ready_proxy(&backend, &tls).await;

    let client = tls_connect(addr, Some(("client.pem", "client-key.pem")))
        .await
        .unwrap();
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"over mTLS")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages[0], Bytes::from_static(b"over mTLS"));

    // A certificate from another CA, or none, never gets a call through.
    for cert in [Some(("rogue-client.pem", "rogue-client-key.pem")), None] {
        let outcome = match tls_connect(addr, cert).await {
            Err(err) => Err(err),
            Ok(client) => unary(&client, grpc_request("/test.Echo/Unary"), b"x")
                .await
                .map_err(|e| e.to_string()),
        };
        assert!(outcome.is_err(), "call succeeded with client cert {cert:?}");
    }
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn upstream_over_mutual_tls_with_sni_and_failure_mid_call_gives_unavailable() {
    let mut backend = Backend::start().await;
    // Strait A: a TLS listener requiring client certificates, in front of the backend.
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}",
        certs("server.pem"),
        certs("server-key.pem"),
        certs("ca.pem")
    );
    let inner = start_proxy(backend.addr, &tls, "").await;
    wait_ready(&inner).await;
    // B reaches A through a TCP relay that can be cut, as when A crashes (A's own shutdown
    // would end the call with a status of its own).
    let link = fault_relay::FaultRelay::start(inner.listener_addr("test").unwrap());
    let inner_addr = link.address();
    // Strait B dials A over TLS with a client certificate; the certificate names localhost, not the IP
    // dialled, so the server name is set explicitly.
    let text = format!(
        r#"
        [log]
        level = "warn"
        [admin]
        listen = "127.0.0.1:0"
        [[upstream]]
        name = "inner"
        address = "{inner_addr}"
        tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}", server_name = "localhost" }}
        [[listener]]
        name = "test"
        listen = "127.0.0.1:0"
        upstream = "inner"
        "#,
        ca = certs("ca.pem"),
        cert = certs("client.pem"),
        key = certs("client-key.pem"),
    );
    let outer = strait::start(&Config::parse(&text).unwrap()).await.unwrap();
    wait_ready(&outer).await;
    let client = connect(outer.listener_addr("test").unwrap()).await;
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"two hops")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages[0], Bytes::from_static(b"two hops"));
    let authority = backend
        .observed
        .authorities
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(authority, backend.addr.to_string());

    // A call in flight when the upstream goes away ends with UNAVAILABLE, not a hang.
    let call = tokio::spawn({
        let client = client.clone();
        async move { unary(&client, grpc_request("/test.Echo/Hang"), b"x").await }
    });
    assert_eq!(backend.next_started().await, "Unary");
    assert_eq!(backend.next_started().await, "Hang");
    // A vanishes without a drain: its connections close under the call.
    link.cut();
    let reply = tokio::time::timeout(Duration::from_secs(40), call)
        .await
        .unwrap()
        .unwrap();
    match reply {
        Ok(reply) => {
            assert_eq!(reply.status(), 14, "{}", reply.message());
            assert!(reply.message().contains("upstream"), "{}", reply.message());
        }
        Err(err) => panic!("expected UNAVAILABLE status, got {err:?}"),
    }
    assert!(outer.shutdown().await);
    inner.shutdown().await;
}

#[tokio::test]
async fn reconnects_when_the_upstream_comes_back() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(addr, "", "").await;
    let client = connect(proxy.listener_addr("test").unwrap()).await;
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"x")
        .await
        .unwrap();
    assert_eq!(reply.status(), 14);
    let _backend = Backend::start_on(addr).await;
    // Backoff is capped at 200 ms in this config: readiness returns quickly.
    wait_ready(&proxy).await;
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"back")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages[0], Bytes::from_static(b"back"));
    assert!(proxy.shutdown().await);
}

/// A TCP forwarder that can freeze: bytes stop flowing both ways, as when a peer's host vanishes.
async fn freezable_forwarder(
    target: SocketAddr,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&frozen);
    tokio::spawn(async move {
        let (inbound, _) = listener.accept().await.unwrap();
        let outbound = tokio::net::TcpStream::connect(target).await.unwrap();
        let (mut in_read, mut in_write) = inbound.into_split();
        let (mut out_read, mut out_write) = outbound.into_split();
        async fn copy(
            from: &mut tokio::net::tcp::OwnedReadHalf,
            to: &mut tokio::net::tcp::OwnedWriteHalf,
            frozen: &std::sync::atomic::AtomicBool,
        ) {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let Ok(n) = from.read(&mut buf).await else {
                    return;
                };
                if n == 0 || frozen.load(Ordering::SeqCst) {
                    // Frozen: swallow everything, answer nothing, keep the sockets open.
                    if n == 0 {
                        return;
                    }
                    continue;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
        let f1 = Arc::clone(&flag);
        let a = tokio::spawn(async move { copy(&mut in_read, &mut out_write, &f1).await });
        copy(&mut out_read, &mut in_write, &flag).await;
        let _ = a.await;
    });
    (addr, frozen)
}

#[tokio::test]
async fn vanished_client_is_detected_by_keepalive_and_its_call_cancelled() {
    let mut backend = Backend::start().await;
    let (proxy, addr) = ready_proxy(
        &backend,
        "limits = { keepalive_interval = \"200ms\", keepalive_timeout = \"300ms\" }",
    )
    .await;
    let (via, frozen) = freezable_forwarder(addr).await;
    let client = connect(via).await;
    let (_response, mut stream) = start_call(&client, "/test.Echo/Hang").await;
    stream.send_data(frame(b"long poll"), true).unwrap();
    assert_eq!(backend.next_started().await, "Hang");
    frozen.store(true, Ordering::SeqCst);
    // No pong arrives: the proxy closes the connection and cancels the upstream call.
    assert_eq!(
        backend.next_reset().await,
        ("Hang".to_owned(), Reason::CANCEL)
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn several_listeners_each_relay_to_their_own_upstream() {
    let (first, second) = (Backend::start().await, Backend::start().await);
    let text = format!(
        r#"
        [admin]
        listen = "127.0.0.1:0"
        [[upstream]]
        name = "one"
        address = "{}"
        [[upstream]]
        name = "two"
        address = "{}"
        connections = 3
        [[listener]]
        name = "a"
        listen = "127.0.0.1:0"
        upstream = "one"
        [[listener]]
        name = "b"
        listen = "127.0.0.1:0"
        upstream = "two"
        "#,
        first.addr, second.addr
    );
    let proxy = strait::start(&Config::parse(&text).unwrap()).await.unwrap();
    wait_ready(&proxy).await;
    for (listener, backend, calls) in [("a", &first, 2), ("b", &second, 6)] {
        let client = connect(proxy.listener_addr(listener).unwrap()).await;
        for i in 0..calls {
            let body = format!("{listener}{i}");
            let reply = unary(&client, grpc_request("/test.Echo/Unary"), body.as_bytes())
                .await
                .unwrap();
            assert_eq!(reply.messages[0], Bytes::from(body));
        }
        assert_eq!(backend.observed.authorities.lock().unwrap().len(), calls);
    }
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn an_upstream_goaway_moves_new_calls_to_a_new_connection_while_old_calls_finish() {
    // Servers that limit connection age (Temporal's frontend, after 5 minutes) send a graceful
    // GOAWAY: calls in flight finish on the old connection, new ones must not fail meanwhile.
    let (mut backend, proxy, client) = setup("").await;
    let long = tokio::spawn({
        let client = client.clone();
        async move { unary(&client, grpc_request("/test.Echo/Gate"), b"long poll").await }
    });
    assert_eq!(backend.next_started().await, "Gate");
    backend.observed.goaway.notify_waiters();
    for i in 0..20 {
        let started = Instant::now();
        let body = format!("after goaway {i}");
        let reply = unary(&client, grpc_request("/test.Echo/Unary"), body.as_bytes())
            .await
            .unwrap();
        assert_eq!(reply.status(), 0, "call {i}: {}", reply.message());
        assert_eq!(reply.messages[0], Bytes::from(body));
        assert!(started.elapsed() < Duration::from_secs(2), "call {i}");
    }
    assert_eq!(backend.observed.connections.load(Ordering::Relaxed), 2);
    // The call that was in flight finishes on the old connection.
    backend.observed.gate.notify_one();
    let reply = long.await.unwrap().unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(reply.messages[0], Bytes::from_static(b"long poll"));
    assert!(proxy.shutdown().await);
}

/// `/metrics` lines (series) that carry one of `listeners`' labels.
fn series_of(metrics: &str, listeners: &[&str]) -> Vec<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            listeners
                .iter()
                .any(|l| line.contains(&format!("listener=\"{l}\"")))
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn methods_the_descriptor_set_does_not_know_are_labelled_other_and_add_no_series() {
    // Label values come from what clients send: a flood of invented method names on one listener
    // must neither grow /metrics nor push real methods, on any listener, into `other`.
    const WORKFLOW: &str = "/temporal.api.workflowservice.v1.WorkflowService";
    let backend = Backend::start().await;
    let text = format!(
        r#"
        [admin]
        listen = "127.0.0.1:0"
        [[upstream]]
        name = "backend"
        address = "{}"
        [[listener]]
        name = "labels-flood"
        listen = "127.0.0.1:0"
        upstream = "backend"
        [[listener]]
        name = "labels-quiet"
        listen = "127.0.0.1:0"
        upstream = "backend"
        "#,
        backend.addr
    );
    let proxy = strait::start(&Config::parse(&text).unwrap()).await.unwrap();
    wait_ready(&proxy).await;
    let listeners = ["labels-flood", "labels-quiet"];
    let flood = connect(proxy.listener_addr("labels-flood").unwrap()).await;
    let quiet = connect(proxy.listener_addr("labels-quiet").unwrap()).await;
    let call = |client: &h2::client::SendRequest<Bytes>, path: String| {
        let client = client.clone();
        async move {
            let reply = unary(&client, grpc_request(&path), b"x").await.unwrap();
            assert_eq!(reply.status(), 0, "{path}: {}", reply.message());
        }
    };
    // One call of each shape first, so every series the flood could add a code to exists.
    call(&flood, format!("{WORKFLOW}/GetSystemInfo")).await;
    call(&flood, format!("{WORKFLOW}/Bogus")).await;
    call(&flood, "/evil.Service/Bogus".to_owned()).await;
    let (_, before) = http_get(proxy.admin_addr(), "/metrics").await;
    let before = series_of(&before, &listeners);

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let flood = flood.clone();
        workers.spawn(async move {
            for i in (worker..2100).step_by(8) {
                let reply = unary(&flood, grpc_request(&format!("{WORKFLOW}/Bogus{i}")), b"x")
                    .await
                    .unwrap();
                assert_eq!(reply.status(), 0, "Bogus{i}: {}", reply.message());
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    // Real methods called after the flood, on both listeners, keep their names.
    call(&flood, format!("{WORKFLOW}/DescribeNamespace")).await;
    call(&quiet, format!("{WORKFLOW}/StartWorkflowExecution")).await;

    let (_, after) = http_get(proxy.admin_addr(), "/metrics").await;
    let after = series_of(&after, &listeners);
    let names = |series: &[String]| {
        series
            .iter()
            .map(|line| {
                line.rsplit_once(' ')
                    .map_or(line.as_str(), |(name, _)| name)
            })
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let added: Vec<_> = names(&after).difference(&names(&before)).cloned().collect();
    println!(
        "series of the two listeners: {} before the flood, {} after ({} added)",
        before.len(),
        after.len(),
        added.len()
    );
    let method = |name: &str| format!("method=\"{name}\"");
    for line in &added {
        assert!(
            line.contains(&method("DescribeNamespace"))
                || line.contains(&method("StartWorkflowExecution")),
            "the flood added a series: {line}"
        );
    }
    assert!(!after.iter().any(|l| l.contains("Bogus")), "a Bogus label");
    let calls = |listener: &str, method: &str| {
        after.iter().any(|l| {
            l.starts_with("strait_calls_total{")
                && l.contains(&format!("listener=\"{listener}\""))
                && l.contains("service=\"temporal.api.workflowservice.v1.WorkflowService\"")
                && l.contains(&format!("method=\"{method}\""))
                && l.ends_with(" 1")
        })
    };
    assert!(calls("labels-flood", "DescribeNamespace"), "{after:#?}");
    assert!(
        calls("labels-quiet", "StartWorkflowExecution"),
        "{after:#?}"
    );
    // The 2,101 bogus calls of the known service are counted under `other`.
    assert!(
        after.iter().any(|l| l.starts_with("strait_calls_total{")
            && l.contains("listener=\"labels-flood\"")
            && l.contains("service=\"temporal.api.workflowservice.v1.WorkflowService\"")
            && l.contains("method=\"other\"")
            && l.ends_with(" 2101")),
        "{after:#?}"
    );
    assert!(
        after.iter().any(|l| l.starts_with("strait_calls_total{")
            && l.contains("listener=\"labels-flood\"")
            && l.contains("service=\"other\"")
            && l.contains("method=\"other\"")
            && l.ends_with(" 1")),
        "{after:#?}"
    );
    assert!(proxy.shutdown().await);
}

/// What a scripted upstream (raw frames, tests/support/h2raw.rs) does to a call.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Bytes that are no HTTP/2 frame (a frame header declaring 16 MiB): Strait's HTTP/2 client
    /// ends the connection with GOAWAY(FRAME_SIZE_ERROR).
    Garbage,
    /// A well-formed frame the protocol forbids (DATA on stream 0): GOAWAY(PROTOCOL_ERROR).
    ProtocolError,
    /// The TCP connection closed.
    Close,
    /// Response headers with a connection-specific field: h2 resets that stream itself
    /// (PROTOCOL_ERROR), the connection lives on.
    MalformedResponse,
    /// The upstream resets the stream with this error code.
    Reset(u32),
}

impl Fault {
    fn ends_connection(self) -> bool {
        matches!(self, Fault::Garbage | Fault::ProtocolError | Fault::Close)
    }
}

/// How a call must end for the client.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// A gRPC status whose message names the upstream.
    Status(i32),
    /// RST_STREAM with this reason.
    Reset(Reason),
}

/// A proxy whose one upstream connection goes to a listener the test scripts frame by frame.
async fn proxy_to_raw_upstream() -> (tokio::net::TcpListener, Running) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let text = format!(
        r#"
        [log]
        level = "error"
        [admin]
        listen = "127.0.0.1:0"
        [[upstream]]
        name = "backend"
        address = "{}"
        connections = 1
        connect_timeout = "10s"
        backoff_initial = "20ms"
        backoff_max = "100ms"
        [[listener]]
        name = "test"
        listen = "127.0.0.1:0"
        upstream = "backend"
        "#,
        listener.local_addr().unwrap()
    );
    let proxy = strait::start(&Config::parse(&text).unwrap()).await.unwrap();
    (listener, proxy)
}

/// A client whose streams grant no flow-control window: it takes headers and trailers, never data.
async fn connect_zero_window(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// `rounds` calls through a proxy to a scripted upstream. Each call sends one message and keeps
/// its request open, so both directions are live when the fault strikes: before any response, or
/// (`mid_response`) after response headers and one message. Every call must end as `expected`.
/// Repeated because which direction of the call notices first is a matter of scheduling.
async fn upstream_fault(fault: Fault, mid_response: bool, zero_window: bool, expected: Outcome) {
    let (listener, proxy) = proxy_to_raw_upstream().await;
    let addr = proxy.listener_addr("test").unwrap();
    let client = if zero_window {
        connect_zero_window(addr).await
    } else {
        connect(addr).await
    };
    let mut upstream: Option<h2raw::RawConn> = None;
    for round in 0..6 {
        let (response, mut request) = start_call(&client, "/test.Echo/Unary").await;
        request.send_data(frame(b"request"), false).unwrap();
        let conn = match &mut upstream {
            Some(conn) => conn,
            None => upstream.insert(h2raw::RawConn::accept(&listener).await),
        };
        let id = conn.next_request(Duration::from_secs(10)).await;
        if mid_response {
            let mut response =
                h2raw::headers(id, &h2raw::response_block(200, &[]), h2raw::END_HEADERS);
            response.extend(h2raw::data(id, &h2raw::grpc_message(b"partial"), false));
            conn.send(&response).await.unwrap();
        }
        let fault_bytes = match fault {
            Fault::Garbage => {
                let mut bytes = vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
                bytes.extend((0..64).map(|_| fastrand::u8(..)));
                bytes
            }
            Fault::ProtocolError => h2raw::data(0, b"x", false),
            Fault::Close => Vec::new(),
            Fault::MalformedResponse => h2raw::headers(
                id,
                &h2raw::response_block(200, &[("connection", b"close")]),
                h2raw::END_HEADERS,
            ),
            Fault::Reset(code) => h2raw::rst_stream(id, code),
        };
        let _ = conn.send(&fault_bytes).await;
        if fault.ends_connection() {
            upstream = None;
        }
        let outcome = tokio::time::timeout(Duration::from_secs(10), read_reply(response))
            .await
            .unwrap_or_else(|_| panic!("{fault:?} round {round}: no end within 10 s"));
        let what = format!(
            "{fault:?} (mid_response {mid_response}, zero_window {zero_window}) round {round}"
        );
        match (outcome, expected) {
            (Ok(reply), Outcome::Status(code)) => {
                assert_eq!(reply.status(), code, "{what}: {}", reply.message());
                assert!(
                    reply.message().contains("upstream \"backend\""),
                    "{what}: {}",
                    reply.message()
                );
                assert_eq!(reply.trailers_only, !mid_response, "{what}");
            }
            (Err(err), Outcome::Reset(reason)) => {
                assert!(err.is_reset() && err.is_remote(), "{what}: {err:?}");
                assert_eq!(err.reason(), Some(reason), "{what}: {err:?}");
            }
            (outcome, expected) => panic!("{what}: expected {expected:?}, got {outcome:?}"),
        }
    }
    assert!(proxy.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connection_failures_mid_request_give_unavailable_naming_the_upstream() {
    for fault in [Fault::Garbage, Fault::ProtocolError, Fault::Close] {
        upstream_fault(fault, false, false, Outcome::Status(14)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_mid_response_give_unavailable_also_to_a_client_reading_nothing() {
    for fault in [Fault::Garbage, Fault::ProtocolError, Fault::Close] {
        for zero_window in [false, true] {
            upstream_fault(fault, true, zero_window, Outcome::Status(14)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_upstream_response_gives_unavailable_not_a_relayed_reset() {
    upstream_fault(Fault::MalformedResponse, false, false, Outcome::Status(14)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_rst_stream_cancel_gives_cancelled_before_and_during_the_response() {
    for (mid_response, zero_window) in [(false, false), (true, false), (true, true)] {
        upstream_fault(
            Fault::Reset(h2raw::CANCEL),
            mid_response,
            zero_window,
            Outcome::Status(1),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_upstream_resets_are_relayed_as_resets_with_their_reason() {
    for (code, reason) in [
        (0x2, Reason::INTERNAL_ERROR),
        (h2raw::REFUSED_STREAM, Reason::REFUSED_STREAM),
    ] {
        for (mid_response, zero_window) in [(false, false), (true, false), (true, true)] {
            upstream_fault(
                Fault::Reset(code),
                mid_response,
                zero_window,
                Outcome::Reset(reason),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_upstream_is_known_down_calls_fail_at_once_and_succeed_when_it_is_back() {
    // An address that refuses connections, and a connect timeout far beyond this test's bounds: a
    // call that waited for the next dial would outlive them.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        r#"
        [log]
        level = "error"
        [admin]
        listen = "127.0.0.1:0"
        [[upstream]]
        name = "backend"
        address = "{addr}"
        connections = 2
        connect_timeout = "30s"
        backoff_initial = "50ms"
        backoff_max = "200ms"
        [[listener]]
        name = "test"
        listen = "127.0.0.1:0"
        upstream = "backend"
        "#
    );
    let proxy = strait::start(&Config::parse(&text).unwrap()).await.unwrap();
    // Known down once a dial has failed, as readiness reports (another connection still dialling
    // fails as fast).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(proxy.admin_addr(), "/readyz").await;
        assert_eq!(status, 200, "ready does not wait for the upstream: {body}");
        if body.contains("connect to") {
            break;
        }
        assert!(Instant::now() < deadline, "no failed dial reported: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = connect(proxy.listener_addr("test").unwrap()).await;
    for _ in 0..5 {
        let mut request = grpc_request("/test.Echo/Unary");
        request
            .headers_mut()
            .insert("grpc-timeout", HeaderValue::from_static("60S"));
        let reply = tokio::time::timeout(Duration::from_secs(10), unary(&client, request, b"x"))
            .await
            .expect("a call waited for a dial to an upstream known to be down")
            .unwrap();
        assert!(reply.trailers_only);
        assert_eq!(reply.status(), 14, "{}", reply.message());
        for part in ["\"backend\"", "last dial failed", "connect to"] {
            assert!(reply.message().contains(part), "{}", reply.message());
        }
    }
    // Back: the next dial (within the 200 ms backoff) succeeds, and so do calls.
    let _backend = Backend::start_on(addr).await;
    wait_ready(&proxy).await;
    let reply = unary(&client, grpc_request("/test.Echo/Unary"), b"back")
        .await
        .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(reply.messages, vec![Bytes::from_static(b"back")]);
    assert!(proxy.shutdown().await);
}
