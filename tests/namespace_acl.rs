//! The namespace ACL of a cluster connection, through the running proxy, against in-process
//! backends standing in for the two clusters' frontends. Calls arrive on the link's remote listener
//! (as the remote cluster's calls would), with the link translating `billing` (local) ↔
//! `billing-eu` (remote) and allowing only `billing`:
//!
//! - requests naming another namespace (body, `temporal-namespace` header, or only an ID that the
//!   local cluster resolves) are PERMISSION_DENIED naming it, message by message;
//! - replication tasks and `ListNamespaces` entries of other namespaces are dropped from responses,
//!   everything else (watermarks, allowed tasks) arrives intact and translated;
//! - `AddOrUpdateRemoteCluster` gets the advertised address;
//! - every denial is counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use strait::config::Config;
use strait::Running;
use strait_test_support::backend::{frame, Backend, Reply};
use strait_test_support::client::{connect, grpc_request, read_reply, unary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WS: &str = "/temporal.api.workflowservice.v1.WorkflowService";
const ADMIN: &str = "/temporal.server.api.adminservice.v1.AdminService";
const REPLICATION: &str = "temporal.server.api.replication.v1";

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| strait::descriptor_set::embedded().unwrap())
}

fn desc(name: &str) -> MessageDescriptor {
    pool().get_message_by_name(name).unwrap()
}

/// A message from (field, value) pairs.
fn msg(name: &str, fields: Vec<(&str, Value)>) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc(name));
    for (field, value) in fields {
        assert!(
            message.descriptor().get_field_by_name(field).is_some(),
            "{name} has no field {field}"
        );
        message.set_field_by_name(field, value);
    }
    message
}

fn s(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn m(message: DynamicMessage) -> Value {
    Value::Message(message)
}

fn ok() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

fn canned(messages: Vec<DynamicMessage>) -> Reply {
    Reply {
        messages: messages.iter().map(|m| frame(&m.encode_to_vec())).collect(),
        trailers: ok(),
        ..Reply::default()
    }
}

/// The local cluster's namespaces by ID, answered as its frontend's DescribeNamespace does.
fn serve_namespaces(backend: &Backend, namespaces: &[(&str, &str)]) {
    let by_id: HashMap<String, String> = namespaces
        .iter()
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect();
    backend.reply_with("DescribeNamespace", move |requests| {
        let request = DynamicMessage::decode(
            desc("temporal.api.workflowservice.v1.DescribeNamespaceRequest"),
            requests[0].clone(),
        )
        .unwrap();
        let id = request
            .get_field_by_name("id")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        match by_id.get(&id) {
            Some(name) => canned(vec![msg(
                "temporal.api.workflowservice.v1.DescribeNamespaceResponse",
                vec![(
                    "namespace_info",
                    m(msg(
                        "temporal.api.namespace.v1.NamespaceInfo",
                        vec![("name", s(name)), ("id", s(&id))],
                    )),
                )],
            )]),
            None => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("5"));
                trailers.insert(
                    "grpc-message",
                    HeaderValue::from_str(&format!("namespace {id} not found")).unwrap(),
                );
                Reply {
                    trailers,
                    trailers_only: true,
                    ..Reply::default()
                }
            }
        }
    });
}

/// One Strait with a tcp-mode link `name`: the local cluster is `local`, the remote `remote`.
async fn link(name: &str, local: &Backend, remote: &Backend, extra: &str) -> Running {
    let text = format!(
        r#"
        [log]
        level = "warn"
        [admin]
        listen = "127.0.0.1:0"
        [[cluster_connection]]
        name = "{name}"
        local = {{ listen = "127.0.0.1:0", upstream = "{}", advertised_address = "strait-a.example:7301" }}
        remote = {{ mode = "tcp", listen = "127.0.0.1:0", address = "{}" }}
        translate = {{ namespaces = {{ "billing" = "billing-eu" }} }}
        acl = {{ allowed_namespaces = ["billing"]{extra} }}
        "#,
        local.addr, remote.addr
    );
    let running = strait::start(&Config::parse(&text).unwrap()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running.all_checks_ok() {
        assert!(Instant::now() < deadline, "proxy not ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running
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

fn denials(text: &str, listener: &str, kind: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("strait_acl_denials_total")
                && l.contains(&format!("listener=\"{listener}\""))
                && l.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A request naming `name` in its body (ListWorkflowExecutionsRequest.namespace).
fn list_in(name: &str) -> Vec<u8> {
    msg(
        "temporal.api.workflowservice.v1.ListWorkflowExecutionsRequest",
        vec![("namespace", s(name))],
    )
    .encode_to_vec()
}

/// The namespace the backend saw in the last `method` call's first message.
fn seen_namespace(backend: &Backend, method: &str) -> String {
    let bodies = backend.observed.bodies.lock().unwrap();
    let request = DynamicMessage::decode(
        desc("temporal.api.workflowservice.v1.ListWorkflowExecutionsRequest"),
        bodies[method][0].clone(),
    )
    .unwrap();
    request
        .get_field_by_name("namespace")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// Empty OK replies for `methods`, so the backend records request bodies.
fn answer_ok(backend: &Backend, methods: &[&str]) {
    for method in methods {
        backend.reply(method, canned(vec![]));
    }
}

fn raw_history_by_id(id: &str) -> Vec<u8> {
    msg(
        "temporal.server.api.adminservice.v1.GetWorkflowExecutionRawHistoryV2Request",
        vec![("namespace_id", s(id))],
    )
    .encode_to_vec()
}

#[tokio::test]
async fn requests_naming_a_namespace_that_is_not_allowed_are_denied() {
    let (local, remote) = (Backend::start().await, Backend::start().await);
    serve_namespaces(
        &local,
        &[("id-billing", "billing"), ("id-secret", "secret")],
    );
    answer_ok(
        &local,
        &[
            "ListWorkflowExecutions",
            "GetSystemInfo",
            "GetWorkflowExecutionRawHistoryV2",
        ],
    );
    let proxy = link("acl-requests", &local, &remote, "").await;
    let from_remote = connect(proxy.listener_addr("acl-requests.remote").unwrap()).await;

    // Allowed, in the remote's name: reaches the local cluster in the local name.
    let reply = unary(
        &from_remote,
        grpc_request(&format!("{WS}/ListWorkflowExecutions")),
        &list_in("billing-eu"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(seen_namespace(&local, "ListWorkflowExecutions"), "billing");

    // Another namespace, by name: denied, named, never sent on.
    let reply = unary(
        &from_remote,
        grpc_request(&format!("{WS}/ListWorkflowExecutions")),
        &list_in("secret"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 7, "{}", reply.message());
    assert!(reply.message().contains("secret"), "{}", reply.message());
    assert!(
        reply.message().contains("acl-requests-remote"),
        "{}",
        reply.message()
    );

    // By header only.
    let mut request = grpc_request(&format!("{WS}/GetSystemInfo"));
    request
        .headers_mut()
        .insert("temporal-namespace", HeaderValue::from_static("secret"));
    let reply = unary(&from_remote, request, b"").await.unwrap();
    assert_eq!(reply.status(), 7, "{}", reply.message());
    assert!(reply.message().contains("secret"), "{}", reply.message());

    // By ID: the local cluster says whose it is.
    let path = format!("{ADMIN}/GetWorkflowExecutionRawHistoryV2");
    let reply = unary(
        &from_remote,
        grpc_request(&path),
        &raw_history_by_id("id-billing"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let reply = unary(
        &from_remote,
        grpc_request(&path),
        &raw_history_by_id("id-secret"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 7, "{}", reply.message());
    assert!(
        reply.message().contains("\"secret\" (id id-secret)"),
        "{}",
        reply.message()
    );
    let reply = unary(
        &from_remote,
        grpc_request(&path),
        &raw_history_by_id("id-nobody"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 7, "{}", reply.message());
    assert!(
        reply.message().contains("unknown to the local cluster"),
        "{}",
        reply.message()
    );

    // No message of a denied call reached the local cluster (its stream was cancelled before the
    // message was forwarded).
    for (method, bodies) in local.observed.bodies.lock().unwrap().iter() {
        for body in bodies {
            for needle in [&b"secret"[..], b"id-nobody"] {
                let leaked = body.windows(needle.len()).any(|w| w == needle);
                assert!(
                    !leaked || method == "DescribeNamespace",
                    "{method} got {body:?}"
                );
            }
        }
    }

    let text = metrics(&proxy).await;
    assert_eq!(
        denials(&text, "acl-requests-remote", "namespace"),
        4.0,
        "{text}"
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn each_message_of_a_stream_is_checked() {
    let (local, remote) = (Backend::start().await, Backend::start().await);
    answer_ok(&local, &["ListWorkflowExecutions"]);
    let proxy = link("acl-stream", &local, &remote, "").await;
    let from_remote = connect(proxy.listener_addr("acl-stream.remote").unwrap()).await;

    // A method the descriptor set does not know names no namespace Strait can see: it passes
    // (the backend's "Stream" method echoes each message).
    let mut send = from_remote.clone().ready().await.unwrap();
    let (response, mut body) = send
        .send_request(grpc_request("/test.Service/Stream"), false)
        .unwrap();
    body.send_data(frame(&list_in("billing-eu")), false)
        .unwrap();
    body.send_data(frame(&list_in("secret")), true).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), read_reply(response))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(reply.messages.len(), 2);

    // A known method carrying several messages: each is checked, the second one is refused.
    let mut send = from_remote.clone().ready().await.unwrap();
    let (response, mut body) = send
        .send_request(grpc_request(&format!("{WS}/ListWorkflowExecutions")), false)
        .unwrap();
    body.send_data(frame(&list_in("billing-eu")), false)
        .unwrap();
    body.send_data(frame(&list_in("secret")), true).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), read_reply(response))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status(), 7, "{}", reply.message());
    assert!(reply.message().contains("secret"), "{}", reply.message());
    let text = metrics(&proxy).await;
    assert_eq!(
        denials(&text, "acl-stream-remote", "namespace"),
        1.0,
        "{text}"
    );
    assert!(proxy.shutdown().await);
}

fn history_task(namespace_id: &str, workflow: &str) -> DynamicMessage {
    msg(
        &format!("{REPLICATION}.ReplicationTask"),
        vec![
            ("source_task_id", Value::I64(1)),
            (
                "history_task_attributes",
                m(msg(
                    &format!("{REPLICATION}.HistoryTaskAttributes"),
                    vec![
                        ("namespace_id", s(namespace_id)),
                        ("workflow_id", s(workflow)),
                    ],
                )),
            ),
        ],
    )
}

fn namespace_task(id: &str, name: &str) -> DynamicMessage {
    msg(
        &format!("{REPLICATION}.ReplicationTask"),
        vec![(
            "namespace_task_attributes",
            m(msg(
                &format!("{REPLICATION}.NamespaceTaskAttributes"),
                vec![
                    ("id", s(id)),
                    (
                        "info",
                        m(msg(
                            "temporal.api.namespace.v1.NamespaceInfo",
                            vec![("name", s(name)), ("id", s(id))],
                        )),
                    ),
                ],
            )),
        )],
    )
}

fn shard_status_task() -> DynamicMessage {
    msg(
        &format!("{REPLICATION}.ReplicationTask"),
        vec![(
            "sync_shard_status_task_attributes",
            m(msg(
                &format!("{REPLICATION}.SyncShardStatusTaskAttributes"),
                vec![("source_cluster", s("active"))],
            )),
        )],
    )
}

fn tasks_of(message: &DynamicMessage, path: &[&str]) -> Vec<DynamicMessage> {
    let mut current = message.clone();
    for field in &path[..path.len() - 1] {
        current = current
            .get_field_by_name(field)
            .unwrap()
            .as_message()
            .unwrap()
            .clone();
    }
    current
        .get_field_by_name(path[path.len() - 1])
        .unwrap()
        .as_list()
        .unwrap()
        .iter()
        .map(|v| v.as_message().unwrap().clone())
        .collect()
}

fn workflow_of(task: &DynamicMessage) -> String {
    let attributes = task.get_field_by_name("history_task_attributes").unwrap();
    let attributes = attributes.as_message().unwrap();
    attributes
        .get_field_by_name("workflow_id")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn replication_tasks_of_other_namespaces_are_dropped_and_the_stream_goes_on() {
    let (local, remote) = (Backend::start().await, Backend::start().await);
    serve_namespaces(
        &local,
        &[("id-billing", "billing"), ("id-secret", "secret")],
    );
    let stream_response = |tasks: Vec<DynamicMessage>, watermark: i64| {
        msg(
            &format!(
                "{}.StreamWorkflowReplicationMessagesResponse",
                "temporal.server.api.adminservice.v1"
            ),
            vec![(
                "messages",
                m(msg(
                    &format!("{REPLICATION}.WorkflowReplicationMessages"),
                    vec![
                        (
                            "replication_tasks",
                            Value::List(tasks.into_iter().map(Value::Message).collect()),
                        ),
                        ("exclusive_high_watermark", Value::I64(watermark)),
                    ],
                )),
            )],
        )
    };
    let sent = vec![
        stream_response(
            vec![
                history_task("id-billing", "wf-1"),
                history_task("id-secret", "wf-2"),
                shard_status_task(),
                history_task("id-billing", "wf-3"),
            ],
            10,
        ),
        stream_response(vec![history_task("id-secret", "wf-4")], 11),
        stream_response(vec![history_task("id-billing", "wf-5")], 12),
    ];
    local.reply("StreamWorkflowReplicationMessages", canned(sent.clone()));
    let proxy = link("acl-replication", &local, &remote, "").await;
    let from_remote = connect(proxy.listener_addr("acl-replication.remote").unwrap()).await;

    let request = msg(
        "temporal.server.api.adminservice.v1.StreamWorkflowReplicationMessagesRequest",
        vec![],
    );
    let reply = unary(
        &from_remote,
        grpc_request(&format!("{ADMIN}/StreamWorkflowReplicationMessages")),
        &request.encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(reply.messages.len(), 3, "every stream message arrives");
    let name = "temporal.server.api.adminservice.v1.StreamWorkflowReplicationMessagesResponse";
    let received: Vec<DynamicMessage> = reply
        .messages
        .iter()
        .map(|b| DynamicMessage::decode(desc(name), b.clone()).unwrap())
        .collect();
    let path = ["messages", "replication_tasks"];
    let first = tasks_of(&received[0], &path);
    assert_eq!(first.len(), 3, "wf-2 dropped");
    assert_eq!(workflow_of(&first[0]), "wf-1");
    assert!(first[1]
        .get_field_by_name("sync_shard_status_task_attributes")
        .is_some());
    assert_eq!(workflow_of(&first[2]), "wf-3");
    // Allowed tasks arrive byte for byte.
    assert!(first[0] == tasks_of(&sent[0], &path)[0]);
    assert!(first[2] == tasks_of(&sent[0], &path)[3]);
    // Watermarks move on past the dropped tasks.
    for (message, watermark) in received.iter().zip([10i64, 11, 12]) {
        let inner = message.get_field_by_name("messages").unwrap();
        let inner = inner.as_message().unwrap();
        assert_eq!(
            inner
                .get_field_by_name("exclusive_high_watermark")
                .unwrap()
                .as_i64(),
            Some(watermark)
        );
    }
    assert!(tasks_of(&received[1], &path).is_empty());
    assert_eq!(workflow_of(&tasks_of(&received[2], &path)[0]), "wf-5");
    // A message with nothing denied goes out as it came.
    assert_eq!(reply.messages[2], Bytes::from(sent[2].encode_to_vec()));

    let text = metrics(&proxy).await;
    assert_eq!(
        denials(&text, "acl-replication-remote", "replication_task"),
        2.0,
        "{text}"
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn namespace_replication_and_namespace_lists_show_only_allowed_namespaces() {
    let (local, remote) = (Backend::start().await, Backend::start().await);
    let namespace_messages = msg(
        "temporal.server.api.adminservice.v1.GetNamespaceReplicationMessagesResponse",
        vec![(
            "messages",
            m(msg(
                &format!("{REPLICATION}.ReplicationMessages"),
                vec![
                    (
                        "replication_tasks",
                        Value::List(vec![
                            Value::Message(namespace_task("id-billing", "billing")),
                            Value::Message(namespace_task("id-secret", "secret")),
                        ]),
                    ),
                    ("last_retrieved_message_id", Value::I64(7)),
                ],
            )),
        )],
    );
    local.reply(
        "GetNamespaceReplicationMessages",
        canned(vec![namespace_messages]),
    );
    let entry = |name: &str| {
        Value::Message(msg(
            "temporal.api.workflowservice.v1.DescribeNamespaceResponse",
            vec![(
                "namespace_info",
                m(msg(
                    "temporal.api.namespace.v1.NamespaceInfo",
                    vec![("name", s(name)), ("id", s(&format!("id-{name}")))],
                )),
            )],
        ))
    };
    let list = msg(
        "temporal.api.workflowservice.v1.ListNamespacesResponse",
        vec![(
            "namespaces",
            Value::List(vec![entry("secret"), entry("billing")]),
        )],
    );
    local.reply("ListNamespaces", canned(vec![list]));
    let proxy = link("acl-lists", &local, &remote, "").await;
    let from_remote = connect(proxy.listener_addr("acl-lists.remote").unwrap()).await;

    let reply = unary(
        &from_remote,
        grpc_request(&format!("{ADMIN}/GetNamespaceReplicationMessages")),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let received = DynamicMessage::decode(
        desc("temporal.server.api.adminservice.v1.GetNamespaceReplicationMessagesResponse"),
        reply.messages[0].clone(),
    )
    .unwrap();
    let tasks = tasks_of(&received, &["messages", "replication_tasks"]);
    assert_eq!(tasks.len(), 1);
    let attributes = tasks[0]
        .get_field_by_name("namespace_task_attributes")
        .unwrap();
    let info = attributes
        .as_message()
        .unwrap()
        .get_field_by_name("info")
        .unwrap();
    // Allowed, and translated to the remote's name.
    assert_eq!(
        info.as_message()
            .unwrap()
            .get_field_by_name("name")
            .unwrap()
            .as_str(),
        Some("billing-eu")
    );
    let inner = received.get_field_by_name("messages").unwrap();
    assert_eq!(
        inner
            .as_message()
            .unwrap()
            .get_field_by_name("last_retrieved_message_id")
            .unwrap()
            .as_i64(),
        Some(7)
    );

    let reply = unary(
        &from_remote,
        grpc_request(&format!("{WS}/ListNamespaces")),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let received = DynamicMessage::decode(
        desc("temporal.api.workflowservice.v1.ListNamespacesResponse"),
        reply.messages[0].clone(),
    )
    .unwrap();
    let entries = tasks_of(&received, &["namespaces"]);
    assert_eq!(entries.len(), 1);
    let info = entries[0].get_field_by_name("namespace_info").unwrap();
    assert_eq!(
        info.as_message()
            .unwrap()
            .get_field_by_name("name")
            .unwrap()
            .as_str(),
        Some("billing-eu")
    );

    let text = metrics(&proxy).await;
    assert_eq!(
        denials(&text, "acl-lists-remote", "replication_task"),
        1.0,
        "{text}"
    );
    assert_eq!(
        denials(&text, "acl-lists-remote", "namespace_entry"),
        1.0,
        "{text}"
    );
    // No ID lookups were needed: names decide.
    assert!(local
        .observed
        .headers
        .lock()
        .unwrap()
        .get("DescribeNamespace")
        .is_none());
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn methods_not_allowed_are_denied_and_counted_and_local_calls_pass_by_default() {
    let (local, remote) = (Backend::start().await, Backend::start().await);
    answer_ok(&remote, &["StartWorkflowExecution"]);
    let proxy = link(
        "acl-methods",
        &local,
        &remote,
        r#", allowed_methods = ["AdminService.*"]"#,
    )
    .await;
    let from_remote = connect(proxy.listener_addr("acl-methods.remote").unwrap()).await;
    let reply = unary(
        &from_remote,
        grpc_request(&format!("{WS}/StartWorkflowExecution")),
        &list_in("billing-eu"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 7, "{}", reply.message());
    assert!(
        reply.message().contains("StartWorkflowExecution"),
        "{}",
        reply.message()
    );

    // The local cluster's own calls are not subject to the ACL unless apply_to_local is set.
    let from_local = connect(proxy.listener_addr("acl-methods.local").unwrap()).await;
    let reply = unary(
        &from_local,
        grpc_request(&format!("{WS}/StartWorkflowExecution")),
        &list_in("secret"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    assert_eq!(remote.observed.authorities.lock().unwrap().len(), 1);

    let text = metrics(&proxy).await;
    assert_eq!(
        denials(&text, "acl-methods-remote", "method"),
        1.0,
        "{text}"
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn apply_to_local_checks_the_local_clusters_calls_in_local_names() {
    let (local, remote) = (Backend::start().await, Backend::start().await);
    answer_ok(&remote, &["ListWorkflowExecutions"]);
    let proxy = link("acl-outbound", &local, &remote, ", apply_to_local = true").await;
    let from_local = connect(proxy.listener_addr("acl-outbound.local").unwrap()).await;
    let reply = unary(
        &from_local,
        grpc_request(&format!("{WS}/ListWorkflowExecutions")),
        &list_in("billing"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    // Checked in local names, sent in remote names.
    assert_eq!(
        seen_namespace(&remote, "ListWorkflowExecutions"),
        "billing-eu"
    );
    let reply = unary(
        &from_local,
        grpc_request(&format!("{WS}/ListWorkflowExecutions")),
        &list_in("secret"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 7, "{}", reply.message());
    let text = metrics(&proxy).await;
    assert_eq!(
        denials(&text, "acl-outbound-local", "namespace"),
        1.0,
        "{text}"
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn add_or_update_remote_cluster_gets_the_advertised_address() {
    let (local, remote) = (Backend::start().await, Backend::start().await);
    answer_ok(&local, &["AddOrUpdateRemoteCluster"]);
    answer_ok(&remote, &["AddOrUpdateRemoteCluster"]);
    let proxy = link("acl-advertise", &local, &remote, "").await;
    let name = "temporal.server.api.adminservice.v1.AddOrUpdateRemoteClusterRequest";
    let request = msg(
        name,
        vec![
            ("frontend_address", s("10.1.2.3:7233")),
            ("enable_remote_cluster_connection", Value::Bool(true)),
        ],
    );
    let path = format!("{ADMIN}/AddOrUpdateRemoteCluster");
    let from_remote = connect(proxy.listener_addr("acl-advertise.remote").unwrap()).await;
    let reply = unary(&from_remote, grpc_request(&path), &request.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let body = local.observed.bodies.lock().unwrap()["AddOrUpdateRemoteCluster"][0].clone();
    let seen = DynamicMessage::decode(desc(name), body).unwrap();
    assert_eq!(
        seen.get_field_by_name("frontend_address").unwrap().as_str(),
        Some("strait-a.example:7301")
    );
    assert_eq!(
        seen.get_field_by_name("enable_remote_cluster_connection")
            .unwrap()
            .as_bool(),
        Some(true)
    );
    // The local cluster's own calls towards the remote keep their address.
    let from_local = connect(proxy.listener_addr("acl-advertise.local").unwrap()).await;
    let reply = unary(&from_local, grpc_request(&path), &request.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(reply.status(), 0, "{}", reply.message());
    let body = remote.observed.bodies.lock().unwrap()["AddOrUpdateRemoteCluster"][0].clone();
    assert_eq!(body, Bytes::from(request.encode_to_vec()));
    assert!(proxy.shutdown().await);
}
