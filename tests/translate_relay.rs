//! Translation through the running proxy, against an in-process backend with canned replies: request
//! bodies and the `temporal-namespace` header in upstream names, responses and error details
//! (`grpc-message`, `grpc-status-details-bin`) in client names, gzip messages, refusals with a clear
//! status (malformed message, unsupported encoding), the rewrite metrics, and the consistent view:
//! upstream-side names refused as unknown, colliding upstream names left out of lists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, Value};
use strait::config::Config;
use strait::grpc::compression;
use strait::rewrite::status_details::{base64_decode, base64_encode};
use strait::Running;
use strait_test_support::backend::{frame, Backend, Reply};
use strait_test_support::client;
use strait_test_support::client::{connect, grpc_request, unary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WS: &str = "temporal.api.workflowservice.v1";
const SERVICE: &str = "/temporal.api.workflowservice.v1.WorkflowService";

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| strait::descriptor_set::embedded().unwrap())
}

fn desc(name: &str) -> MessageDescriptor {
    pool().get_message_by_name(name).unwrap()
}

async fn proxy(backend: &Backend) -> Running {
    proxy_with(backend, "").await
}

/// The translating proxy with `extra` added to its `[listener.translate]`.
async fn proxy_with(backend: &Backend, extra: &str) -> Running {
    let text = format!(
        r#"
        [log]
        level = "warn"
        [admin]
        listen = "127.0.0.1:0"
        [[upstream]]
        name = "backend"
        address = "{}"
        [[listener]]
        name = "translating"
        listen = "127.0.0.1:0"
        upstream = "backend"
        [listener.translate]
        namespaces = {{ "orders" = "orders-prod" }}
        search_attributes = {{ "orders" = {{ "CustomerId" = "OrderCustomer" }} }}
        repair_utf8 = true
        {extra}
        "#,
        backend.addr
    );
    let running = strait::start(&Config::parse(&text).unwrap()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running.all_checks_ok() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running
}

fn start_request(namespace: &str) -> Vec<u8> {
    let mut request = DynamicMessage::new(desc(&format!("{WS}.StartWorkflowExecutionRequest")));
    request.set_field_by_name("namespace", Value::String(namespace.into()));
    request.set_field_by_name("workflow_id", Value::String("wf-1".into()));
    let mut attributes = DynamicMessage::new(desc("temporal.api.common.v1.SearchAttributes"));
    let mut payload = DynamicMessage::new(desc("temporal.api.common.v1.Payload"));
    payload.set_field_by_name("data", Value::Bytes(Bytes::from_static(b"\"c-42\"")));
    attributes.set_field_by_name(
        "indexed_fields",
        Value::Map(
            [(MapKey::String("CustomerId".into()), Value::Message(payload))]
                .into_iter()
                .collect(),
        ),
    );
    request.set_field_by_name("search_attributes", Value::Message(attributes));
    request.encode_to_vec()
}

fn decode(name: &str, bytes: &[u8]) -> DynamicMessage {
    DynamicMessage::decode(desc(name), bytes).unwrap()
}

fn ok() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

async fn metrics(proxy: &Running) -> String {
    let mut stream = tokio::net::TcpStream::connect(proxy.admin_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name) && l.contains(label) && l.contains("listener=\"translating\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn requests_reach_the_upstream_in_upstream_names_with_the_header() {
    let backend = Backend::start().await;
    let mut response = DynamicMessage::new(desc(&format!("{WS}.StartWorkflowExecutionResponse")));
    response.set_field_by_name("run_id", Value::String("run-1".into()));
    let reply = Reply {
        messages: vec![frame(&response.encode_to_vec())],
        trailers: ok(),
        ..Reply::default()
    };
    backend.reply("StartWorkflowExecution", reply);
    let proxy = proxy(&backend).await;
    let client = connect(proxy.listener_addr("translating").unwrap()).await;

    let mut request = grpc_request(&format!("{SERVICE}/StartWorkflowExecution"));
    request
        .headers_mut()
        .insert("temporal-namespace", HeaderValue::from_static("orders"));
    let reply = unary(&client, request, &start_request("orders"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(
        decode(
            &format!("{WS}.StartWorkflowExecutionResponse"),
            &reply.messages[0]
        ),
        response
    );

    let seen = backend.observed.bodies.lock().unwrap()["StartWorkflowExecution"][0].clone();
    let seen = decode(&format!("{WS}.StartWorkflowExecutionRequest"), &seen);
    assert_eq!(
        seen.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders-prod")
    );
    let attributes = seen.get_field_by_name("search_attributes").unwrap();
    let keys = attributes
        .as_message()
        .unwrap()
        .get_field_by_name("indexed_fields")
        .unwrap();
    assert!(keys
        .as_map()
        .unwrap()
        .contains_key(&MapKey::String("OrderCustomer".into())));
    let headers = backend.observed.headers.lock().unwrap()["StartWorkflowExecution"].clone();
    assert_eq!(headers["temporal-namespace"], "orders-prod");

    let text = metrics(&proxy).await;
    assert!(
        metric(&text, "strait_rewrite_fields_total", "kind=\"namespace\"") >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "strait_rewrite_fields_total",
            "kind=\"search_attribute\""
        ) >= 1.0
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn responses_and_error_details_come_back_in_client_names() {
    let backend = Backend::start().await;
    // DescribeNamespace answers with the upstream name.
    let mut info = DynamicMessage::new(desc("temporal.api.namespace.v1.NamespaceInfo"));
    info.set_field_by_name("name", Value::String("orders-prod".into()));
    info.set_field_by_name("id", Value::String("orders-prod-id".into()));
    let mut described = DynamicMessage::new(desc(&format!("{WS}.DescribeNamespaceResponse")));
    described.set_field_by_name("namespace_info", Value::Message(info));
    let reply = Reply {
        messages: vec![frame(&described.encode_to_vec())],
        trailers: ok(),
        ..Reply::default()
    };
    backend.reply("DescribeNamespace", reply);

    // DescribeWorkflowExecution fails with NotFound naming the namespace, with error details.
    let mut failure = DynamicMessage::new(desc(
        "temporal.api.errordetails.v1.NamespaceNotFoundFailure",
    ));
    failure.set_field_by_name("namespace", Value::String("orders-prod".into()));
    let mut any = DynamicMessage::new(desc("google.protobuf.Any"));
    any.set_field_by_name(
        "type_url",
        Value::String(
            "type.googleapis.com/temporal.api.errordetails.v1.NamespaceNotFoundFailure".into(),
        ),
    );
    any.set_field_by_name("value", Value::Bytes(failure.encode_to_vec().into()));
    let mut status = DynamicMessage::new(desc("google.rpc.Status"));
    status.set_field_by_name("code", Value::I32(5));
    status.set_field_by_name(
        "message",
        Value::String("Namespace orders-prod is not found.".into()),
    );
    status.set_field_by_name("details", Value::List(vec![Value::Message(any)]));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("5"));
    trailers.insert(
        "grpc-message",
        HeaderValue::from_static("Namespace%20orders-prod%20is%20not%20found."),
    );
    trailers.insert(
        "grpc-status-details-bin",
        HeaderValue::from_str(&base64_encode(&status.encode_to_vec())).unwrap(),
    );
    let reply = Reply {
        trailers,
        trailers_only: true,
        ..Reply::default()
    };
    backend.reply("DescribeWorkflowExecution", reply);

    let proxy = proxy(&backend).await;
    let client = connect(proxy.listener_addr("translating").unwrap()).await;

    let mut request = DynamicMessage::new(desc(&format!("{WS}.DescribeNamespaceRequest")));
    request.set_field_by_name("namespace", Value::String("orders".into()));
    let reply = unary(
        &client,
        grpc_request(&format!("{SERVICE}/DescribeNamespace")),
        &request.encode_to_vec(),
    )
    .await
    .unwrap();
    let described = decode(
        &format!("{WS}.DescribeNamespaceResponse"),
        &reply.messages[0],
    );
    let info = described.get_field_by_name("namespace_info").unwrap();
    let info = info.as_message().unwrap();
    assert_eq!(
        info.get_field_by_name("name").unwrap().as_str(),
        Some("orders")
    );
    assert_eq!(
        info.get_field_by_name("id").unwrap().as_str(),
        Some("orders-prod-id"),
        "IDs are never touched"
    );

    let mut request = DynamicMessage::new(desc(&format!("{WS}.DescribeWorkflowExecutionRequest")));
    request.set_field_by_name("namespace", Value::String("orders".into()));
    let reply = unary(
        &client,
        grpc_request(&format!("{SERVICE}/DescribeWorkflowExecution")),
        &request.encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 5);
    assert_eq!(reply.message(), "Namespace orders is not found.");
    let details = base64_decode(reply.trailers["grpc-status-details-bin"].as_bytes()).unwrap();
    let status = decode("google.rpc.Status", &details);
    assert_eq!(
        status.get_field_by_name("message").unwrap().as_str(),
        Some("Namespace orders is not found.")
    );
    let details = status.get_field_by_name("details").unwrap();
    let any = details.as_list().unwrap()[0].as_message().unwrap().clone();
    let value = any
        .get_field_by_name("value")
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone();
    let failure = decode(
        "temporal.api.errordetails.v1.NamespaceNotFoundFailure",
        &value,
    );
    assert_eq!(
        failure.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders")
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn gzip_requests_are_edited_and_recompressed() {
    let backend = Backend::start().await;
    let reply = Reply {
        messages: vec![frame(b"")],
        trailers: ok(),
        ..Reply::default()
    };
    backend.reply("StartWorkflowExecution", reply);
    let proxy = proxy(&backend).await;
    let client = connect(proxy.listener_addr("translating").unwrap()).await;
    let packed = compression::gzip(&start_request("orders")).unwrap();
    let mut framed = vec![1u8];
    framed.extend_from_slice(&(packed.len() as u32).to_be_bytes());
    framed.extend_from_slice(&packed);
    let mut request = grpc_request(&format!("{SERVICE}/StartWorkflowExecution"));
    request
        .headers_mut()
        .insert("grpc-encoding", HeaderValue::from_static("gzip"));
    let mut send = client.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    stream.send_data(Bytes::from(framed), true).unwrap();
    let reply = client::read_reply(response).await.unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let seen = backend.observed.bodies.lock().unwrap()["StartWorkflowExecution"][0].clone();
    let plain = compression::gunzip(&seen, 1 << 20).unwrap();
    let seen = decode(&format!("{WS}.StartWorkflowExecutionRequest"), &plain);
    assert_eq!(
        seen.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders-prod")
    );

    // An encoding Strait cannot inflate, on a message it must edit: UNIMPLEMENTED, nothing forwarded.
    let mut request = grpc_request(&format!("{SERVICE}/StartWorkflowExecution"));
    request
        .headers_mut()
        .insert("grpc-encoding", HeaderValue::from_static("snappy"));
    let mut send = client.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    stream
        .send_data(Bytes::from_static(&[1, 0, 0, 0, 2, 9, 9]), true)
        .unwrap();
    let reply = client::read_reply(response).await.unwrap();
    assert_eq!(reply.status(), 12);
    assert!(reply.message().contains("snappy"), "{}", reply.message());
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_malformed_message_that_must_be_edited_fails_the_call_with_internal() {
    let mut backend = Backend::start().await;
    let proxy = proxy(&backend).await;
    let client = connect(proxy.listener_addr("translating").unwrap()).await;
    // Field 1 (namespace) claims 50 bytes but the message ends after 3.
    let reply = unary(
        &client,
        grpc_request(&format!("{SERVICE}/StartWorkflowExecution")),
        &[0x0a, 50, b'o', b'r', b'd'],
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 13);
    assert!(reply.message().contains("malformed"), "{}", reply.message());
    // The upstream call was opened (headers go first) and then cancelled, never given the message.
    assert_eq!(backend.next_started().await, "StartWorkflowExecution");
    assert!(backend
        .observed
        .bodies
        .lock()
        .unwrap()
        .get("StartWorkflowExecution")
        .is_none());
    let text = metrics(&proxy).await;
    assert!(
        metric(
            &text,
            "strait_relay_errors_total",
            "reason=\"rewrite_failed\""
        ) >= 1.0,
        "{text}"
    );

    // A method this descriptor set does not know (a newer release's) passes untouched, even with
    // bytes that are not protobuf.
    let reply = unary(
        &client,
        grpc_request(&format!("{SERVICE}/SomeFutureMethod")),
        &[0xff, 0xff, 0x01],
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0);
    assert_eq!(reply.messages[0], Bytes::from_static(&[0xff, 0xff, 0x01]));
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn a_message_split_into_one_byte_frames_is_gathered_and_edited() {
    let backend = Backend::start().await;
    let reply = Reply {
        messages: vec![frame(b"")],
        trailers: ok(),
        ..Reply::default()
    };
    backend.reply("StartWorkflowExecution", reply);
    let proxy = proxy(&backend).await;
    let client = connect(proxy.listener_addr("translating").unwrap()).await;
    let mut send = client.clone().ready().await.unwrap();
    let (response, mut stream) = send
        .send_request(
            grpc_request(&format!("{SERVICE}/StartWorkflowExecution")),
            false,
        )
        .unwrap();
    // Two messages (a client stream in effect), every byte in its own DATA frame.
    let mut wire = frame(&start_request("orders")).to_vec();
    wire.extend_from_slice(&frame(&start_request("elsewhere")));
    for byte in wire {
        stream
            .send_data(Bytes::copy_from_slice(&[byte]), false)
            .unwrap();
    }
    stream.send_data(Bytes::new(), true).unwrap();
    let reply = client::read_reply(response).await.unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let seen = backend.observed.bodies.lock().unwrap()["StartWorkflowExecution"].clone();
    let namespaces: Vec<String> = seen
        .iter()
        .map(|m| {
            let m = decode(&format!("{WS}.StartWorkflowExecutionRequest"), m);
            m.get_field_by_name("namespace")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(namespaces, vec!["orders-prod", "elsewhere"]);
    assert!(proxy.shutdown().await);
}

/// A port that was free a moment ago (for a `strait run` process, whose config needs fixed ports).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_status(port: u16, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    Some(text)
}

#[tokio::test]
async fn invalid_queries_in_bulk_write_a_bounded_number_of_plain_log_lines() {
    // One WARN line per bad request would let any client fill the disk: each site writes at most
    // 10 lines per 10 s (the README's figure) and then reports how many it suppressed. Logs to a
    // file carry no colour codes.
    const CALLS: usize = 300;
    const BURST: usize = 10;
    let backend = Backend::start().await;
    let (admin, listen) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("strait-log-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("strait.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [admin]
            listen = "127.0.0.1:{admin}"
            [[upstream]]
            name = "backend"
            address = "{}"
            [[listener]]
            name = "translating"
            listen = "127.0.0.1:{listen}"
            upstream = "backend"
            [listener.translate]
            search_attributes = {{ "orders" = {{ "CustomerId" = "OrderCustomer" }} }}
            "#,
            backend.addr
        ),
    )
    .unwrap();
    let log_path = dir.join("strait.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http_status(admin, "/readyz").await;
        if ready.is_some_and(|text| text.starts_with("HTTP/1.1 200")) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("strait not ready in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let client = connect(format!("127.0.0.1:{listen}").parse().unwrap()).await;
    let mut request = DynamicMessage::new(desc(&format!("{WS}.ListWorkflowExecutionsRequest")));
    request.set_field_by_name("namespace", Value::String("orders".into()));
    request.set_field_by_name("query", Value::String("CustomerId = 'unterminated".into()));
    let body = request.encode_to_vec();
    for i in 0..CALLS {
        let path = format!("{SERVICE}/ListWorkflowExecutions");
        let reply = unary(&client, grpc_request(&path), &body).await.unwrap();
        assert_eq!(reply.status(), 3, "call {i}: {}", reply.message());
        assert!(
            reply.message().contains("unterminated"),
            "{}",
            reply.message()
        );
    }
    let elapsed = started.elapsed();

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("strait did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
    let log = std::fs::read(&log_path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!log.contains(&0x1b), "colour codes in a log file");
    let log = String::from_utf8(log).unwrap();
    let logged = log
        .lines()
        .filter(|l| l.contains("message could not be edited"))
        .count();
    let suppressed: usize = log
        .lines()
        .filter(|l| l.contains("call.rs"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("suppressed ")?;
            rest.strip_suffix(" similar messages")
                .or_else(|| rest.split_once(" similar messages").map(|(n, _)| n))?
                .parse::<usize>()
                .ok()
        })
        .sum();
    // Windows of 10 s the flood can have touched.
    let windows = 1 + elapsed.as_secs() as usize / 10 + 1;
    println!("{CALLS} bad queries in {elapsed:?}: {logged} lines, {suppressed} suppressed");
    assert!(
        logged >= 1 && logged <= BURST * windows,
        "{logged} lines:\n{log}"
    );
    assert_eq!(
        logged + suppressed,
        CALLS,
        "every line written or counted:\n{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
}

fn namespace_entry(name: &str, id: &str) -> Value {
    let mut info = DynamicMessage::new(desc("temporal.api.namespace.v1.NamespaceInfo"));
    info.set_field_by_name("name", Value::String(name.into()));
    info.set_field_by_name("id", Value::String(id.into()));
    let mut entry = DynamicMessage::new(desc(&format!("{WS}.DescribeNamespaceResponse")));
    entry.set_field_by_name("namespace_info", Value::Message(info));
    Value::Message(entry)
}

/// The backend's ListNamespaces: the mapped `orders-prod` and an unrelated upstream `orders`.
fn reply_list_namespaces(backend: &Backend) {
    let mut list = DynamicMessage::new(desc(&format!("{WS}.ListNamespacesResponse")));
    list.set_field_by_name(
        "namespaces",
        Value::List(vec![
            namespace_entry("orders", "id-orders"),
            namespace_entry("orders-prod", "id-orders-prod"),
        ]),
    );
    let reply = Reply {
        messages: vec![frame(&list.encode_to_vec())],
        trailers: ok(),
        ..Reply::default()
    };
    backend.reply("ListNamespaces", reply);
}

/// (name, id) of every namespace a ListNamespaces reply lists.
fn listed(reply: &client::Reply) -> Vec<(String, String)> {
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let list = decode(&format!("{WS}.ListNamespacesResponse"), &reply.messages[0]);
    list.get_field_by_name("namespaces")
        .unwrap()
        .as_list()
        .unwrap()
        .iter()
        .map(|entry| {
            let info = entry
                .as_message()
                .unwrap()
                .get_field_by_name("namespace_info")
                .unwrap();
            let info = info.as_message().unwrap();
            let text = |f: &str| {
                info.get_field_by_name(f)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            (text("name"), text("id"))
        })
        .collect()
}

async fn list_namespaces(client: &h2::client::SendRequest<Bytes>) -> client::Reply {
    let request = DynamicMessage::new(desc(&format!("{WS}.ListNamespacesRequest")));
    unary(
        client,
        grpc_request(&format!("{SERVICE}/ListNamespaces")),
        &request.encode_to_vec(),
    )
    .await
    .unwrap()
}

fn describe_namespace(namespace: &str, header: bool) -> (http::Request<()>, Vec<u8>) {
    let mut request = grpc_request(&format!("{SERVICE}/DescribeNamespace"));
    if header {
        request.headers_mut().insert(
            "temporal-namespace",
            HeaderValue::from_str(namespace).unwrap(),
        );
    }
    let mut body = DynamicMessage::new(desc(&format!("{WS}.DescribeNamespaceRequest")));
    body.set_field_by_name("namespace", Value::String(namespace.into()));
    (request, body.encode_to_vec())
}

#[tokio::test]
async fn a_request_naming_the_upstream_side_namespace_is_answered_not_found() {
    let mut backend = Backend::start().await;
    let proxy = proxy(&backend).await;
    let client = connect(proxy.listener_addr("translating").unwrap()).await;

    // In the header (as SDKs and the CLI send it): refused before the upstream is involved.
    let (request, body) = describe_namespace("orders-prod", true);
    let reply = unary(&client, request, &body).await.unwrap();
    assert_eq!(reply.status(), 5, "{}", reply.message());
    assert_eq!(reply.message(), "Namespace orders-prod is not found.");
    assert!(reply.trailers_only);

    // In the body only: the message is refused, never forwarded.
    let (request, body) = describe_namespace("orders-prod", false);
    let reply = unary(&client, request, &body).await.unwrap();
    assert_eq!(reply.status(), 5, "{}", reply.message());
    assert_eq!(reply.message(), "Namespace orders-prod is not found.");
    assert_eq!(backend.next_started().await, "DescribeNamespace");
    assert!(backend
        .observed
        .bodies
        .lock()
        .unwrap()
        .get("DescribeNamespace")
        .is_none());
    // Only the body-only call reached the backend at all (its headers go first).
    assert!(backend.started.try_recv().is_err());

    // The upstream-side search attribute, in the query of a client-side namespace.
    let mut request = grpc_request(&format!("{SERVICE}/ListWorkflowExecutions"));
    request
        .headers_mut()
        .insert("temporal-namespace", HeaderValue::from_static("orders"));
    let mut body = DynamicMessage::new(desc(&format!("{WS}.ListWorkflowExecutionsRequest")));
    body.set_field_by_name("namespace", Value::String("orders".into()));
    body.set_field_by_name("query", Value::String("OrderCustomer = 'c-1'".into()));
    let reply = unary(&client, request, &body.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(reply.status(), 3, "{}", reply.message());
    assert_eq!(
        reply.message(),
        "invalid query: invalid search attribute: OrderCustomer"
    );
    assert!(backend
        .observed
        .bodies
        .lock()
        .unwrap()
        .get("ListWorkflowExecutions")
        .is_none());

    // And in a request's attribute map.
    let mut request = DynamicMessage::new(desc(&format!("{WS}.StartWorkflowExecutionRequest")));
    request.set_field_by_name("namespace", Value::String("orders".into()));
    let mut attributes = DynamicMessage::new(desc("temporal.api.common.v1.SearchAttributes"));
    attributes.set_field_by_name(
        "indexed_fields",
        Value::Map(
            [(
                MapKey::String("OrderCustomer".into()),
                Value::Message(DynamicMessage::new(desc("temporal.api.common.v1.Payload"))),
            )]
            .into_iter()
            .collect(),
        ),
    );
    request.set_field_by_name("search_attributes", Value::Message(attributes));
    let reply = unary(
        &client,
        grpc_request(&format!("{SERVICE}/StartWorkflowExecution")),
        &request.encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 3, "{}", reply.message());
    assert_eq!(
        reply.message(),
        "Namespace orders has no mapping defined for search attribute OrderCustomer"
    );

    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn list_namespaces_shows_the_mapped_namespace_once_under_its_client_side_name() {
    let backend = Backend::start().await;
    reply_list_namespaces(&backend);
    let proxy = proxy(&backend).await;
    let client = connect(proxy.listener_addr("translating").unwrap()).await;
    let reply = list_namespaces(&client).await;
    assert_eq!(
        listed(&reply),
        [("orders".to_owned(), "id-orders-prod".to_owned())]
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn with_upstream_names_exposed_both_names_reach_the_upstream_namespace() {
    let backend = Backend::start().await;
    reply_list_namespaces(&backend);
    let mut described = DynamicMessage::new(desc(&format!("{WS}.DescribeNamespaceResponse")));
    let mut info = DynamicMessage::new(desc("temporal.api.namespace.v1.NamespaceInfo"));
    info.set_field_by_name("name", Value::String("orders-prod".into()));
    described.set_field_by_name("namespace_info", Value::Message(info));
    let reply = Reply {
        messages: vec![frame(&described.encode_to_vec())],
        trailers: ok(),
        ..Reply::default()
    };
    backend.reply("DescribeNamespace", reply);
    let proxy = proxy_with(&backend, "expose_upstream_names = true").await;
    let client = connect(proxy.listener_addr("translating").unwrap()).await;

    let (request, body) = describe_namespace("orders-prod", true);
    let reply = unary(&client, request, &body).await.unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let headers = backend.observed.headers.lock().unwrap()["DescribeNamespace"].clone();
    assert_eq!(headers["temporal-namespace"], "orders-prod");
    let seen = backend.observed.bodies.lock().unwrap()["DescribeNamespace"][0].clone();
    let seen = decode(&format!("{WS}.DescribeNamespaceRequest"), &seen);
    assert_eq!(
        seen.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders-prod")
    );

    // The old view: the upstream's own `orders` shows under the same name as the mapped one.
    let reply = list_namespaces(&client).await;
    assert_eq!(
        listed(&reply),
        [
            ("orders".to_owned(), "id-orders".to_owned()),
            ("orders".to_owned(), "id-orders-prod".to_owned())
        ]
    );
    assert!(proxy.shutdown().await);
}
