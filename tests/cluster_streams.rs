//! Replication's long-lived calls are never cut by the proxy's own timeouts: a bidi stream that
//! stays quiet for longer than the link's idle timeout (as StreamWorkflowReplicationMessages does
//! between tasks) keeps flowing afterwards, through both ends of a tcp link, and the cluster and
//! shard id headers of the replication stream (`client-cluster-id`, `server-shard-id`, …) reach the
//! other cluster unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::HeaderValue;
use strait::config::Config;
use strait_test_support::backend::{frame, take_messages, Backend};
use strait_test_support::client::{connect, grpc_request};

#[tokio::test]
async fn a_quiet_stream_outlives_the_idle_timeout_and_keeps_its_headers() {
    let (local, remote) = (Backend::start().await, Backend::start().await);
    let text = format!(
        r#"
        [log]
        level = "warn"
        [admin]
        listen = "127.0.0.1:0"
        [[cluster_connection]]
        name = "quiet-stream"
        local = {{ listen = "127.0.0.1:0", upstream = "{}" }}
        remote = {{ mode = "tcp", listen = "127.0.0.1:0", address = "{}" }}
        limits = {{ idle_timeout = "1s", keepalive_interval = "500ms", keepalive_timeout = "2s" }}
        "#,
        local.addr, remote.addr
    );
    let proxy = strait::start(&Config::parse(&text).unwrap()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.all_checks_ok() {
        assert!(Instant::now() < deadline, "proxy not ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let client = connect(proxy.listener_addr("quiet-stream.local").unwrap()).await;
    let mut send = client.ready().await.unwrap();
    // The backend's "Stream" method echoes each message as soon as it is complete.
    let mut request = grpc_request("/temporal.server.api.adminservice.v1.AdminService/Stream");
    for (name, value) in [
        ("client-cluster-id", "2"),
        ("client-shard-id", "1"),
        ("server-cluster-id", "1"),
        ("server-shard-id", "1"),
    ] {
        request
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    let (response, mut body) = send.send_request(request, false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    let mut recv = response.into_body();
    let mut buf = BytesMut::new();
    let next = async |recv: &mut h2::RecvStream, buf: &mut BytesMut| loop {
        if let Some(m) = take_messages(buf).into_iter().next() {
            return m;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), recv.data())
            .await
            .expect("message in time")
            .expect("stream open")
            .expect("no error");
        let _ = recv.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    };
    body.send_data(frame(b"task batch 1"), false).unwrap();
    assert_eq!(&next(&mut recv, &mut buf).await[..], b"task batch 1");

    // Quiet for three idle timeouts: what is under test is that nothing cuts the stream meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    body.send_data(frame(b"task batch 2"), true).unwrap();
    assert_eq!(&next(&mut recv, &mut buf).await[..], b"task batch 2");
    let trailers = tokio::time::timeout(Duration::from_secs(10), recv.trailers())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");

    let headers = remote.observed.headers.lock().unwrap()["Stream"].clone();
    for (name, value) in [
        ("client-cluster-id", "2"),
        ("client-shard-id", "1"),
        ("server-cluster-id", "1"),
        ("server-shard-id", "1"),
    ] {
        assert_eq!(headers.get(name).unwrap(), value, "{name}");
    }
    assert!(proxy.shutdown().await);
}
