//! The wire rewriter on real Temporal descriptors: every edit checked by decoding the output with
//! prost-reflect and comparing with the same edit done on a `DynamicMessage`; identity mappings give
//! the very same bytes; a mapping then its inverse gives the original bytes; unknown fields survive;
//! malformed input where an edit is needed is refused, never forwarded half-edited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, Value};
use strait::config::TranslateConfig;
use strait::grpc::compression::{self, Encoding};
use strait::grpc::method::MethodLabeler;
use strait::pipeline::{CallState, Flow, FlowError, MethodTable, Pipeline};
use strait::rewrite::plan::Targets;
use strait::rewrite::walker::{EditError, EditStats, Unknown};
use strait::rewrite::{reference, Direction, PlanCache, Rewriter};
use strait::wire::Chunks;

const WS: &str = "temporal.api.workflowservice.v1";

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| strait::descriptor_set::embedded().unwrap())
}

fn desc(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} not in the descriptor set"))
}

fn config(
    namespaces: &[(&str, &str)],
    attributes: &[(&str, &[(&str, &str)])],
    repair_utf8: bool,
) -> TranslateConfig {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    TranslateConfig {
        namespaces: map(namespaces),
        search_attributes: attributes
            .iter()
            .map(|(ns, pairs)| (ns.to_string(), map(pairs)))
            .collect(),
        repair_utf8,
        expose_upstream_names: None,
    }
}

fn rewriter(config: &TranslateConfig) -> Arc<Rewriter> {
    Rewriter::new(config, pool(), &mut PlanCache::default()).expect("translation configured")
}

/// Edits a message as the relay would for `path`'s request or response.
fn edit(
    rewriter: &Arc<Rewriter>,
    path: &str,
    direction: Direction,
    body: &Bytes,
    namespace: Option<&str>,
) -> Result<Bytes, EditError> {
    let (request, response) = rewriter.method(path);
    let message = match direction {
        Direction::ToUpstream => request,
        Direction::ToClient => response,
    };
    let Some(message) = message else {
        return Ok(body.clone());
    };
    let call_namespace = OnceLock::new();
    if let Some(ns) = namespace {
        call_namespace.set(ns.to_owned()).unwrap();
    }
    rewriter
        .edit(
            direction,
            message,
            &call_namespace,
            &Chunks::from(body.clone()),
            &mut EditStats::default(),
        )
        .map(|edited| edited.contiguous())
}

/// The oracle: the same edit on a decoded `DynamicMessage`.
fn reference_edit(
    rewriter: &Arc<Rewriter>,
    message: &str,
    direction: Direction,
    body: &[u8],
    namespace: Option<&str>,
) -> DynamicMessage {
    let editor = rewriter.editor(direction, namespace);
    let targets = Targets {
        namespaces: true,
        search_attributes: true,
        utf8: false,
    };
    let out = reference::edit_bytes(
        pool(),
        message,
        body,
        targets,
        &editor,
        &mut EditStats::default(),
    )
    .unwrap();
    DynamicMessage::decode(desc(message), out.as_slice()).unwrap()
}

fn payload(data: &str) -> Value {
    let mut payload = DynamicMessage::new(desc("temporal.api.common.v1.Payload"));
    payload.set_field_by_name(
        "data",
        Value::Bytes(Bytes::copy_from_slice(data.as_bytes())),
    );
    Value::Message(payload)
}

fn search_attributes(names: &[&str]) -> Value {
    let mut attributes = DynamicMessage::new(desc("temporal.api.common.v1.SearchAttributes"));
    let map = names
        .iter()
        .map(|n| {
            (
                MapKey::String(n.to_string()),
                payload(&format!("\"{n}-value\"")),
            )
        })
        .collect();
    attributes.set_field_by_name("indexed_fields", Value::Map(map));
    Value::Message(attributes)
}

fn start_request(namespace: &str, attributes: &[&str]) -> DynamicMessage {
    let mut request = DynamicMessage::new(desc(&format!("{WS}.StartWorkflowExecutionRequest")));
    request.set_field_by_name("namespace", Value::String(namespace.into()));
    request.set_field_by_name("workflow_id", Value::String("orders-prod".into()));
    request.set_field_by_name("search_attributes", search_attributes(attributes));
    request
}

fn event(id: i64, attributes_field: &str, attributes: DynamicMessage) -> DynamicMessage {
    let mut event = DynamicMessage::new(desc("temporal.api.history.v1.HistoryEvent"));
    event.set_field_by_name("event_id", Value::I64(id));
    event.set_field_by_name(attributes_field, Value::Message(attributes));
    event
}

/// A history touching every kind of target: namespaces in several event types, search attributes in
/// start and upsert events, and plenty of fields with nothing to edit.
fn history(
    namespace: &str,
    other_namespace: &str,
    attributes: &[&str],
    events: usize,
) -> DynamicMessage {
    let mut list = Vec::new();
    for i in 0..events {
        let id = i as i64 + 1;
        let event = match i % 4 {
            0 => {
                let mut a = DynamicMessage::new(desc(
                    "temporal.api.history.v1.WorkflowExecutionStartedEventAttributes",
                ));
                a.set_field_by_name(
                    "parent_workflow_namespace",
                    Value::String(other_namespace.into()),
                );
                a.set_field_by_name("identity", Value::String(format!("worker {namespace} {i}")));
                a.set_field_by_name("search_attributes", search_attributes(attributes));
                event(id, "workflow_execution_started_event_attributes", a)
            }
            1 => {
                let mut a = DynamicMessage::new(desc(
                    "temporal.api.history.v1.UpsertWorkflowSearchAttributesEventAttributes",
                ));
                a.set_field_by_name("search_attributes", search_attributes(attributes));
                event(id, "upsert_workflow_search_attributes_event_attributes", a)
            }
            2 => {
                let mut a = DynamicMessage::new(desc(
                    "temporal.api.history.v1.StartChildWorkflowExecutionInitiatedEventAttributes",
                ));
                a.set_field_by_name("namespace", Value::String(namespace.into()));
                a.set_field_by_name("workflow_id", Value::String(format!("child-{i}")));
                event(
                    id,
                    "start_child_workflow_execution_initiated_event_attributes",
                    a,
                )
            }
            _ => {
                let mut a = DynamicMessage::new(desc(
                    "temporal.api.history.v1.ActivityTaskScheduledEventAttributes",
                ));
                a.set_field_by_name("activity_id", Value::String(format!("{i}")));
                event(id, "activity_task_scheduled_event_attributes", a)
            }
        };
        list.push(Value::Message(event));
    }
    let mut history = DynamicMessage::new(desc("temporal.api.history.v1.History"));
    history.set_field_by_name("events", Value::List(list));
    history
}

fn history_response(namespace: &str, attributes: &[&str], events: usize) -> DynamicMessage {
    let mut response =
        DynamicMessage::new(desc(&format!("{WS}.GetWorkflowExecutionHistoryResponse")));
    response.set_field_by_name(
        "history",
        Value::Message(history(namespace, namespace, attributes, events)),
    );
    let mut blob = DynamicMessage::new(desc("temporal.api.common.v1.DataBlob"));
    blob.set_field_by_name("encoding_type", Value::EnumNumber(1));
    blob.set_field_by_name(
        "data",
        Value::Bytes(
            history(namespace, "elsewhere", attributes, 3)
                .encode_to_vec()
                .into(),
        ),
    );
    response.set_field_by_name("raw_history", Value::List(vec![Value::Message(blob)]));
    response
}

const START: &str = "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";
const HISTORY: &str =
    "/temporal.api.workflowservice.v1.WorkflowService/GetWorkflowExecutionHistory";
const LIST: &str = "/temporal.api.workflowservice.v1.WorkflowService/ListWorkflowExecutions";

fn orders() -> Arc<Rewriter> {
    rewriter(&config(
        &[("orders", "orders-prod")],
        &[("orders", &[("CustomerId", "OrderCustomer")])],
        false,
    ))
}

#[test]
fn request_names_are_translated_and_everything_else_is_kept() {
    let rewriter = orders();
    let mut request = start_request("orders", &["CustomerId", "Untouched"]);
    request.set_field_by_name("identity", Value::String("orders worker".into()));
    // An unknown field (number 9999) must survive the edit byte for byte.
    let mut body = request.encode_to_vec();
    body.extend_from_slice(&[0xfa, 0xf0, 0x04, 0x03, b'u', b'n', b'k']);
    let body = Bytes::from(body);
    let out = edit(&rewriter, START, Direction::ToUpstream, &body, None).unwrap();

    let decoded = DynamicMessage::decode(
        desc(&format!("{WS}.StartWorkflowExecutionRequest")),
        out.clone(),
    )
    .unwrap();
    assert_eq!(
        decoded.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders-prod")
    );
    assert_eq!(
        decoded.get_field_by_name("workflow_id").unwrap().as_str(),
        Some("orders-prod")
    );
    assert_eq!(
        decoded.get_field_by_name("identity").unwrap().as_str(),
        Some("orders worker")
    );
    let attributes = decoded.get_field_by_name("search_attributes").unwrap();
    let map = attributes
        .as_message()
        .unwrap()
        .get_field_by_name("indexed_fields")
        .unwrap();
    let keys: Vec<String> = map
        .as_map()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert!(
        keys.contains(&"OrderCustomer".to_owned()) && keys.contains(&"Untouched".to_owned()),
        "{keys:?}"
    );
    assert!(out.windows(3).any(|w| w == b"unk"), "unknown field lost");
    // The oracle agrees.
    let expected = reference_edit(
        &rewriter,
        &format!("{WS}.StartWorkflowExecutionRequest"),
        Direction::ToUpstream,
        &body,
        Some("orders"),
    );
    assert!(decoded == expected, "walker output differs from the oracle");
}

#[test]
fn history_edits_match_the_dynamic_message_oracle_including_blobs() {
    let rewriter = orders();
    let response = history_response("orders-prod", &["OrderCustomer", "Other"], 40);
    let body = Bytes::from(response.encode_to_vec());
    let out = edit(
        &rewriter,
        HISTORY,
        Direction::ToClient,
        &body,
        Some("orders"),
    )
    .unwrap();
    assert_ne!(out, body);
    let name = format!("{WS}.GetWorkflowExecutionHistoryResponse");
    let mut decoded = DynamicMessage::decode(desc(&name), out.clone()).unwrap();
    let mut expected = reference_edit(&rewriter, &name, Direction::ToClient, &body, Some("orders"));
    // Blob data is bytes: compare the histories inside, not their encodings (the oracle re-encodes
    // map entries in its own order).
    let (blobs, expected_blobs) = (take_blobs(&mut decoded), take_blobs(&mut expected));
    assert_eq!(blobs.len(), 1);
    assert!(
        blobs == expected_blobs,
        "blob histories differ from the oracle"
    );
    assert!(decoded == expected, "walker output differs from the oracle");
    let decoded = DynamicMessage::decode(desc(&name), out.clone()).unwrap();
    // The blob inside was edited too (the oracle decodes it the same way).
    let raw = decoded.get_field_by_name("raw_history").unwrap();
    let blob = raw.as_list().unwrap()[0]
        .as_message()
        .unwrap()
        .get_field_by_name("data")
        .unwrap();
    let blob = blob.as_bytes().unwrap();
    assert!(blob.windows(10).any(|w| w == b"CustomerId"));
    // And back: the inverse edit restores the original bytes exactly.
    let back = edit(
        &rewriter,
        "/x/y",
        Direction::ToUpstream,
        &out,
        Some("orders"),
    );
    assert_eq!(
        back.unwrap(),
        out,
        "a method without a plan passes untouched"
    );
}

#[test]
fn a_message_with_nothing_to_edit_is_the_same_bytes() {
    let rewriter = orders();
    let body = Bytes::from(history_response("unrelated", &["Other"], 20).encode_to_vec());
    let out = edit(
        &rewriter,
        HISTORY,
        Direction::ToClient,
        &body,
        Some("orders"),
    )
    .unwrap();
    assert_eq!(
        out.as_ptr(),
        body.as_ptr(),
        "copied although nothing changed"
    );
    let identity = rewriter_identity();
    let body = Bytes::from(history_response("orders", &["CustomerId"], 20).encode_to_vec());
    let out = edit(
        &identity,
        HISTORY,
        Direction::ToClient,
        &body,
        Some("orders"),
    )
    .unwrap();
    assert_eq!(out, body);
}

fn rewriter_identity() -> Arc<Rewriter> {
    rewriter(&config(
        &[("orders", "orders")],
        &[("orders", &[("CustomerId", "CustomerId")])],
        false,
    ))
}

#[test]
fn visibility_queries_are_translated_leaving_quoted_values() {
    let rewriter = orders();
    let mut request = DynamicMessage::new(desc(&format!("{WS}.ListWorkflowExecutionsRequest")));
    request.set_field_by_name("namespace", Value::String("orders".into()));
    request.set_field_by_name(
        "query",
        Value::String("CustomerId = 'CustomerId' AND `CustomerId` != \"x\"".into()),
    );
    let body = Bytes::from(request.encode_to_vec());
    let out = edit(&rewriter, LIST, Direction::ToUpstream, &body, None).unwrap();
    let decoded =
        DynamicMessage::decode(desc(&format!("{WS}.ListWorkflowExecutionsRequest")), out).unwrap();
    assert_eq!(
        decoded.get_field_by_name("query").unwrap().as_str(),
        Some("OrderCustomer = 'CustomerId' AND `OrderCustomer` != \"x\"")
    );
    assert_eq!(
        decoded.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders-prod")
    );

    // An unterminated string cannot be translated safely: refused, not forwarded half-edited.
    request.set_field_by_name("query", Value::String("CustomerId = 'oops".into()));
    let body = Bytes::from(request.encode_to_vec());
    let err = edit(&rewriter, LIST, Direction::ToUpstream, &body, None).unwrap_err();
    assert!(err.to_string().contains("query"), "{err}");
}

#[test]
fn search_attribute_maps_are_per_namespace() {
    let rewriter = rewriter(&config(
        &[("orders", "orders-prod")],
        &[
            ("orders", &[("CustomerId", "OrderCustomer")]),
            ("billing", &[("CustomerId", "BillingCustomer")]),
        ],
        false,
    ));
    for (namespace, expected) in [
        ("orders", "OrderCustomer"),
        ("billing", "BillingCustomer"),
        ("other", "CustomerId"),
    ] {
        let body = Bytes::from(start_request(namespace, &["CustomerId"]).encode_to_vec());
        let out = edit(&rewriter, START, Direction::ToUpstream, &body, None).unwrap();
        let decoded =
            DynamicMessage::decode(desc(&format!("{WS}.StartWorkflowExecutionRequest")), out)
                .unwrap();
        let attributes = decoded.get_field_by_name("search_attributes").unwrap();
        let map = attributes
            .as_message()
            .unwrap()
            .get_field_by_name("indexed_fields")
            .unwrap();
        let key = map
            .as_map()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(key, expected, "namespace {namespace}");
    }
}

#[test]
fn invalid_utf8_in_responses_is_repaired() {
    let rewriter = rewriter(&config(&[], &[], true));
    let mut response = DynamicMessage::new(desc(&format!("{WS}.DescribeNamespaceResponse")));
    let mut info = DynamicMessage::new(desc("temporal.api.namespace.v1.NamespaceInfo"));
    info.set_field_by_name("description", Value::String("PLACEHOLDER".into()));
    response.set_field_by_name("namespace_info", Value::Message(info));
    // Swap the placeholder for invalid UTF-8 on the wire (prost-reflect would refuse to encode it).
    let mut body = response.encode_to_vec();
    let at = body.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
    body.splice(at..at + 11, b"bad \xff\xfe!!!!!".iter().copied());
    let body = Bytes::from(body);
    assert!(DynamicMessage::decode(
        desc(&format!("{WS}.DescribeNamespaceResponse")),
        body.clone()
    )
    .is_err());
    let path = "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace";
    let out = edit(&rewriter, path, Direction::ToClient, &body, None).unwrap();
    let decoded =
        DynamicMessage::decode(desc(&format!("{WS}.DescribeNamespaceResponse")), out).unwrap();
    let info = decoded.get_field_by_name("namespace_info").unwrap();
    let description = info
        .as_message()
        .unwrap()
        .get_field_by_name("description")
        .unwrap();
    assert_eq!(description.as_str(), Some("bad \u{fffd}\u{fffd}!!!!!"));
}

#[test]
fn malformed_messages_are_refused_where_an_edit_is_needed() {
    let rewriter = orders();
    let body = start_request("orders", &["CustomerId"]).encode_to_vec();
    for cut in [1, body.len() / 2, body.len() - 1] {
        let truncated = Bytes::copy_from_slice(&body[..cut]);
        assert!(
            edit(&rewriter, START, Direction::ToUpstream, &truncated, None).is_err(),
            "cut at {cut}"
        );
    }
    // The namespace field with the wrong wire type.
    let wrong = Bytes::from_static(&[0x08, 0x01]);
    let err = edit(&rewriter, START, Direction::ToUpstream, &wrong, None).unwrap_err();
    assert!(err.to_string().contains("wire type"), "{err}");
}

#[test]
fn nesting_beyond_the_depth_limit_is_refused() {
    // Failure.cause nests Failure: build 150 levels with a namespace at the bottom.
    let mut failure = DynamicMessage::new(desc("temporal.api.failure.v1.Failure"));
    let mut info = DynamicMessage::new(desc(
        "temporal.api.failure.v1.ChildWorkflowExecutionFailureInfo",
    ));
    info.set_field_by_name("namespace", Value::String("orders-prod".into()));
    failure.set_field_by_name(
        "child_workflow_execution_failure_info",
        Value::Message(info),
    );
    let mut body = failure.encode_to_vec();
    for _ in 0..150 {
        let mut wrapped = vec![0x22]; // field 4 (cause), length-delimited
        let mut len = Vec::new();
        prost::encoding::encode_varint(body.len() as u64, &mut len);
        wrapped.extend_from_slice(&len);
        wrapped.extend_from_slice(&body);
        body = wrapped;
    }
    let plan = rewriter_plan();
    let id = plan.message_id("temporal.api.failure.v1.Failure").unwrap();
    let rewriter = orders();
    let editor = rewriter.editor(Direction::ToClient, None);
    let err = strait::rewrite::walker::edit_message(
        &plan,
        id,
        &Bytes::from(body),
        &editor,
        &mut EditStats::default(),
    );
    assert!(err.unwrap_err().to_string().contains("deeper"));
}

fn rewriter_plan() -> strait::rewrite::plan::Plan {
    strait::rewrite::plan::Plan::compile(
        pool(),
        Targets {
            namespaces: true,
            search_attributes: true,
            utf8: false,
        },
    )
}

#[test]
fn gzip_messages_are_inflated_edited_and_deflated() {
    let rewriter = orders();
    let body = start_request("orders", &["CustomerId"]).encode_to_vec();
    let packed = Bytes::from(compression::gzip(&body).unwrap());
    // Through the message pipeline, as the relay runs it: inflated once, edited, deflated once.
    let services = pool().services().map(|service| {
        let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
        (service.full_name().to_owned(), methods)
    });
    let table = MethodTable::new(
        Arc::new(MethodLabeler::new(services)),
        &Pipeline::new(None, Some(Arc::clone(&rewriter)), None),
        None,
    );
    let method = table.get(START);
    let call = Arc::new(CallState::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut flow = Flow::new(
        &method,
        Direction::ToUpstream,
        &call,
        Encoding::Gzip,
        1 << 20,
    )
    .unwrap();
    let (compressed, out) = runtime.block_on(flow.process(true, packed.into())).unwrap();
    assert!(compressed);
    let plain = compression::gunzip(&out.contiguous(), 1 << 20).unwrap();
    let decoded = DynamicMessage::decode(
        desc(&format!("{WS}.StartWorkflowExecutionRequest")),
        plain.as_slice(),
    )
    .unwrap();
    assert_eq!(
        decoded.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders-prod")
    );
    assert_eq!(flow.stats.namespaces, 1);

    // Nothing to change: the compressed message itself goes on, not a recompressed copy.
    let unchanged =
        Bytes::from(compression::gzip(&start_request("billing", &[]).encode_to_vec()).unwrap());
    let (_, out) = runtime
        .block_on(flow.process(true, unchanged.clone().into()))
        .unwrap();
    assert_eq!(out.contiguous().as_ptr(), unchanged.as_ptr());

    let mut other = Flow::new(
        &method,
        Direction::ToUpstream,
        &call,
        Encoding::Other("snappy".into()),
        1 << 20,
    )
    .unwrap();
    let err = runtime
        .block_on(other.process(true, Bytes::from_static(b"x").into()))
        .unwrap_err();
    assert!(matches!(err, FlowError::Compression(_)), "{err}");
    assert!(err.to_string().contains("snappy"), "{err}");
    // A method no stage reads has no flow: its messages are streamed.
    let health = table.get("/grpc.health.v1.Health/Check");
    assert!(Flow::new(
        &health,
        Direction::ToUpstream,
        &call,
        Encoding::Gzip,
        1 << 20
    )
    .is_none());
}

/// Takes the histories out of `raw_history` blobs (leaving the data empty) for comparison.
fn take_blobs(response: &mut DynamicMessage) -> Vec<DynamicMessage> {
    let Some(Value::List(blobs)) = response.get_field_by_name_mut("raw_history") else {
        return vec![];
    };
    let mut histories = Vec::new();
    for blob in blobs.iter_mut() {
        let Value::Message(blob) = blob else { continue };
        let data = blob
            .get_field_by_name("data")
            .unwrap()
            .as_bytes()
            .unwrap()
            .clone();
        histories
            .push(DynamicMessage::decode(desc("temporal.api.history.v1.History"), data).unwrap());
        blob.set_field_by_name("data", Value::Bytes(Bytes::new()));
    }
    histories
}

/// Edits `body` as a message of type `name` in `direction`, whatever method carries it.
fn edit_as(
    rewriter: &Arc<Rewriter>,
    name: &str,
    direction: Direction,
    body: &Bytes,
    namespace: Option<&str>,
) -> Bytes {
    let plan = rewriter.plan(direction);
    let Some(id) = plan.message_id(name) else {
        return body.clone();
    };
    let editor = rewriter.editor(direction, namespace);
    strait::rewrite::walker::edit_message(plan, id, body, &editor, &mut EditStats::default())
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random histories: the walker agrees with the oracle, identity mappings change no byte, and a
    /// mapping followed by its inverse restores the original bytes.
    #[test]
    fn walker_properties(
        // Upstream-side or unmapped names only, so that the inverse mapping is exact.
        namespace in prop::sample::select(vec!["orders-prod", "billing-eu", "x"]),
        other in prop::sample::select(vec!["orders-prod", "elsewhere", "billing-eu"]),
        attributes in prop::collection::vec(prop::sample::select(vec!["OrderCustomer", "Other", "Z"]), 0..4),
        events in 0usize..24,
    ) {
        let mut attributes = attributes;
        attributes.sort();
        attributes.dedup();
        let forward = rewriter(&config(
            &[("orders", "orders-prod"), ("billing", "billing-eu")],
            &[("orders", &[("CustomerId", "OrderCustomer")])],
            false,
        ));
        let name = format!("{WS}.GetWorkflowExecutionHistoryResponse");
        let mut response = DynamicMessage::new(desc(&name));
        response.set_field_by_name("history", Value::Message(history(namespace, other, &attributes, events)));
        let body = Bytes::from(response.encode_to_vec());

        let to_client = edit_as(&forward, &name, Direction::ToClient, &body, Some("orders"));
        let oracle = reference_edit(&forward, &name, Direction::ToClient, &body, Some("orders"));
        prop_assert!(DynamicMessage::decode(desc(&name), to_client.clone()).unwrap() == oracle, "differs from the oracle");
        let back = edit_as(&forward, &name, Direction::ToUpstream, &to_client, Some("orders"));
        prop_assert_eq!(&back, &body);

        let identity = rewriter_identity();
        let same = edit_as(&identity, &name, Direction::ToClient, &body, Some("orders"));
        prop_assert_eq!(same.as_ptr(), body.as_ptr());
    }
}

#[test]
fn search_attributes_alone_still_find_the_namespace_in_the_body() {
    // No namespace renamed, and no temporal-namespace header: the body's namespace picks the map.
    let rewriter = rewriter(&config(
        &[],
        &[("orders", &[("CustomerId", "OrderCustomer")])],
        false,
    ));
    let body = Bytes::from(start_request("orders", &["CustomerId"]).encode_to_vec());
    let out = edit(&rewriter, START, Direction::ToUpstream, &body, None).unwrap();
    let decoded =
        DynamicMessage::decode(desc(&format!("{WS}.StartWorkflowExecutionRequest")), out).unwrap();
    assert_eq!(
        decoded.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders")
    );
    let attributes = decoded.get_field_by_name("search_attributes").unwrap();
    let map = attributes
        .as_message()
        .unwrap()
        .get_field_by_name("indexed_fields")
        .unwrap();
    assert!(map
        .as_map()
        .unwrap()
        .contains_key(&MapKey::String("OrderCustomer".into())));
}

// ---- A consistent view: upstream-side names refused in requests, colliding names hidden ----

const LIST_NAMESPACES: &str = "/temporal.api.workflowservice.v1.WorkflowService/ListNamespaces";
const LIST_ATTRIBUTES: &str =
    "/temporal.api.operatorservice.v1.OperatorService/ListSearchAttributes";
const REMOVE_ATTRIBUTES: &str =
    "/temporal.api.operatorservice.v1.OperatorService/RemoveSearchAttributes";
const DESCRIBE_NAMESPACE: &str =
    "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace";
const DESCRIBE_WORKFLOW: &str =
    "/temporal.api.workflowservice.v1.WorkflowService/DescribeWorkflowExecution";

/// `orders()` with upstream-side names exposed (the opt-in for migrations).
fn orders_exposed() -> Arc<Rewriter> {
    let mut config = config(
        &[("orders", "orders-prod")],
        &[("orders", &[("CustomerId", "OrderCustomer")])],
        false,
    );
    config.expose_upstream_names = Some(true);
    rewriter(&config)
}

fn unknown(result: Result<Bytes, EditError>) -> Unknown {
    match result {
        Err(EditError::Unknown(unknown)) => unknown,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn list_request(namespace: &str, query: &str) -> Bytes {
    let mut request = DynamicMessage::new(desc(&format!("{WS}.ListWorkflowExecutionsRequest")));
    request.set_field_by_name("namespace", Value::String(namespace.into()));
    request.set_field_by_name("query", Value::String(query.into()));
    Bytes::from(request.encode_to_vec())
}

fn remove_attributes_request(namespace: &str, names: &[&str]) -> Bytes {
    let mut request = DynamicMessage::new(desc(
        "temporal.api.operatorservice.v1.RemoveSearchAttributesRequest",
    ));
    request.set_field_by_name("namespace", Value::String(namespace.into()));
    request.set_field_by_name(
        "search_attributes",
        Value::List(names.iter().map(|n| Value::String(n.to_string())).collect()),
    );
    Bytes::from(request.encode_to_vec())
}

#[test]
fn a_request_naming_a_mapped_upstream_name_is_refused_as_unknown() {
    let rewriter = orders();
    // The upstream-side namespace, in the body: NOT_FOUND in Temporal's words.
    let body = Bytes::from(start_request("orders-prod", &[]).encode_to_vec());
    let refused = unknown(edit(&rewriter, START, Direction::ToUpstream, &body, None));
    assert_eq!(refused, Unknown::Namespace("orders-prod".into()));
    assert_eq!(refused.to_string(), "Namespace orders-prod is not found.");
    assert_eq!(
        rewriter.refused_namespace("orders-prod"),
        Some(Unknown::Namespace("orders-prod".into()))
    );
    for reachable in ["orders", "elsewhere", ""] {
        assert_eq!(rewriter.refused_namespace(reachable), None, "{reachable}");
    }

    // The upstream-side search attribute: in an attribute map, a list of names and a query.
    let body = Bytes::from(start_request("orders", &["OrderCustomer"]).encode_to_vec());
    let refused = unknown(edit(&rewriter, START, Direction::ToUpstream, &body, None));
    assert_eq!(
        refused.to_string(),
        "Namespace orders has no mapping defined for search attribute OrderCustomer"
    );
    let body = remove_attributes_request("orders", &["Other", "OrderCustomer"]);
    let refused = unknown(edit(
        &rewriter,
        REMOVE_ATTRIBUTES,
        Direction::ToUpstream,
        &body,
        None,
    ));
    assert!(
        matches!(refused, Unknown::SearchAttribute { ref name, .. } if name == "OrderCustomer")
    );
    let body = list_request("orders", "CustomerId = 'a' OR `OrderCustomer` = 'b'");
    let refused = unknown(edit(&rewriter, LIST, Direction::ToUpstream, &body, None));
    assert_eq!(
        refused.to_string(),
        "invalid query: invalid search attribute: OrderCustomer"
    );

    // Client-side and unmapped names pass; a quoted value is no name.
    let body = list_request("orders", "CustomerId = 'OrderCustomer' AND Other = 1");
    let out = edit(&rewriter, LIST, Direction::ToUpstream, &body, None).unwrap();
    let decoded =
        DynamicMessage::decode(desc(&format!("{WS}.ListWorkflowExecutionsRequest")), out).unwrap();
    assert_eq!(
        decoded.get_field_by_name("query").unwrap().as_str(),
        Some("OrderCustomer = 'OrderCustomer' AND Other = 1")
    );
    // Another namespace has no search-attribute map: nothing of it is refused.
    let body = list_request("elsewhere", "OrderCustomer = 'b'");
    let out = edit(&rewriter, LIST, Direction::ToUpstream, &body, None).unwrap();
    assert_eq!(out, body);
}

#[test]
fn with_upstream_names_exposed_requests_pass_as_before() {
    let rewriter = orders_exposed();
    assert_eq!(rewriter.refused_namespace("orders-prod"), None);
    let body = Bytes::from(start_request("orders-prod", &["OrderCustomer"]).encode_to_vec());
    let out = edit(&rewriter, START, Direction::ToUpstream, &body, None).unwrap();
    assert_eq!(
        out, body,
        "upstream-side names reach the upstream untouched"
    );
    let body = list_request("orders", "OrderCustomer = 'b'");
    let out = edit(&rewriter, LIST, Direction::ToUpstream, &body, None).unwrap();
    let decoded =
        DynamicMessage::decode(desc(&format!("{WS}.ListWorkflowExecutionsRequest")), out).unwrap();
    assert_eq!(
        decoded.get_field_by_name("query").unwrap().as_str(),
        Some("OrderCustomer = 'b'")
    );
}

#[test]
fn a_mapping_that_swaps_names_refuses_and_hides_nothing() {
    let rewriter = rewriter(&config(
        &[("a", "b"), ("b", "a")],
        &[("a", &[("X", "Y"), ("Y", "X")])],
        false,
    ));
    assert_eq!(rewriter.refused_namespace("a"), None);
    assert_eq!(rewriter.refused_namespace("b"), None);
    let body = Bytes::from(start_request("a", &["X", "Y"]).encode_to_vec());
    assert!(edit(&rewriter, START, Direction::ToUpstream, &body, None).is_ok());
    let body = Bytes::from(list_namespaces(&[("a", "id-a"), ("b", "id-b")]).encode_to_vec());
    let out = edit(&rewriter, LIST_NAMESPACES, Direction::ToClient, &body, None).unwrap();
    assert_eq!(
        namespace_entries(&out),
        [
            ("b".to_owned(), "id-a".to_owned()),
            ("a".to_owned(), "id-b".to_owned())
        ]
    );
}

fn namespace_entry(name: &str, id: &str) -> Value {
    let mut info = DynamicMessage::new(desc("temporal.api.namespace.v1.NamespaceInfo"));
    info.set_field_by_name("name", Value::String(name.into()));
    info.set_field_by_name("id", Value::String(id.into()));
    info.set_field_by_name("description", Value::String(format!("{name} namespace")));
    let mut entry = DynamicMessage::new(desc(&format!("{WS}.DescribeNamespaceResponse")));
    entry.set_field_by_name("namespace_info", Value::Message(info));
    entry.set_field_by_name("is_global_namespace", Value::Bool(true));
    Value::Message(entry)
}

fn list_namespaces(entries: &[(&str, &str)]) -> DynamicMessage {
    let mut response = DynamicMessage::new(desc(&format!("{WS}.ListNamespacesResponse")));
    response.set_field_by_name(
        "namespaces",
        Value::List(
            entries
                .iter()
                .map(|(name, id)| namespace_entry(name, id))
                .collect(),
        ),
    );
    response.set_field_by_name(
        "next_page_token",
        Value::Bytes(Bytes::from_static(b"page-2")),
    );
    response
}

/// (name, id) of each entry of a `ListNamespacesResponse`.
fn namespace_entries(body: &[u8]) -> Vec<(String, String)> {
    let decoded =
        DynamicMessage::decode(desc(&format!("{WS}.ListNamespacesResponse")), body).unwrap();
    decoded
        .get_field_by_name("namespaces")
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

#[test]
fn list_namespaces_shows_each_client_side_name_once() {
    let rewriter = orders();
    let name = format!("{WS}.ListNamespacesResponse");
    // The upstream has `orders` too, which no client of the listener can reach.
    let body = Bytes::from(
        list_namespaces(&[
            ("orders", "id-orders"),
            ("default", "id-default"),
            ("orders-prod", "id-orders-prod"),
        ])
        .encode_to_vec(),
    );
    let out = edit(&rewriter, LIST_NAMESPACES, Direction::ToClient, &body, None).unwrap();
    assert_eq!(
        namespace_entries(&out),
        [
            ("default".to_owned(), "id-default".to_owned()),
            ("orders".to_owned(), "id-orders-prod".to_owned()),
        ]
    );
    let decoded = DynamicMessage::decode(desc(&name), out.clone()).unwrap();
    assert!(decoded == reference_edit(&rewriter, &name, Direction::ToClient, &body, None));
    assert_eq!(
        decoded
            .get_field_by_name("next_page_token")
            .unwrap()
            .as_bytes()
            .unwrap()
            .as_ref(),
        b"page-2",
        "the rest of the message is kept"
    );
    // Kept entries are copied verbatim: the kept `default` entry's bytes are in the output.
    let default = namespace_entry("default", "id-default");
    let default = default.as_message().unwrap().encode_to_vec();
    assert!(out.windows(default.len()).any(|w| w == default.as_slice()));

    // Nothing to hide: the very same bytes.
    let body = Bytes::from(list_namespaces(&[("default", "id-default")]).encode_to_vec());
    let out = edit(&rewriter, LIST_NAMESPACES, Direction::ToClient, &body, None).unwrap();
    assert_eq!(out.as_ptr(), body.as_ptr());

    // Exposed: both entries come back named `orders`, as before.
    let body = Bytes::from(
        list_namespaces(&[("orders", "id-orders"), ("orders-prod", "id-orders-prod")])
            .encode_to_vec(),
    );
    let out = edit(
        &orders_exposed(),
        LIST_NAMESPACES,
        Direction::ToClient,
        &body,
        None,
    )
    .unwrap();
    assert_eq!(
        namespace_entries(&out),
        [
            ("orders".to_owned(), "id-orders".to_owned()),
            ("orders".to_owned(), "id-orders-prod".to_owned()),
        ]
    );
}

#[test]
fn a_hidden_namespace_outside_a_list_is_kept() {
    // Only list elements can be left out; elsewhere (a describe by ID, a history event naming the
    // colliding namespace) the upstream's answer stays as it is.
    let rewriter = orders();
    let entry = namespace_entry("orders", "id-orders");
    let body = Bytes::from(entry.as_message().unwrap().encode_to_vec());
    let out = edit(
        &rewriter,
        DESCRIBE_NAMESPACE,
        Direction::ToClient,
        &body,
        None,
    )
    .unwrap();
    assert_eq!(out.as_ptr(), body.as_ptr());
}

fn attribute_types(pairs: &[(&str, i32)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(name, ty)| (MapKey::String(name.to_string()), Value::EnumNumber(*ty)))
            .collect(),
    )
}

/// The keys of the map `field` of `message`, sorted.
fn map_keys(message: &DynamicMessage, field: &str) -> Vec<String> {
    let mut keys: Vec<String> = message
        .get_field_by_name(field)
        .unwrap()
        .as_map()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

#[test]
fn search_attribute_lists_show_each_client_side_name_once() {
    let rewriter = orders();
    // ListSearchAttributes: the upstream also has a `CustomerId` (an Int, say) besides the mapped
    // `OrderCustomer` (a Keyword); the client sees one CustomerId, the mapped one.
    let name = "temporal.api.operatorservice.v1.ListSearchAttributesResponse";
    let mut response = DynamicMessage::new(desc(name));
    response.set_field_by_name(
        "custom_attributes",
        attribute_types(&[("OrderCustomer", 2), ("CustomerId", 3), ("Other", 1)]),
    );
    response.set_field_by_name("system_attributes", attribute_types(&[("WorkflowId", 2)]));
    let body = Bytes::from(response.encode_to_vec());
    let out = edit(
        &rewriter,
        LIST_ATTRIBUTES,
        Direction::ToClient,
        &body,
        Some("orders"),
    )
    .unwrap();
    let decoded = DynamicMessage::decode(desc(name), out).unwrap();
    assert_eq!(
        map_keys(&decoded, "custom_attributes"),
        ["CustomerId", "Other"]
    );
    let customer = decoded.get_field_by_name("custom_attributes").unwrap();
    assert_eq!(
        customer.as_map().unwrap()[&MapKey::String("CustomerId".into())],
        Value::EnumNumber(2),
        "the mapped attribute's type"
    );
    assert_eq!(map_keys(&decoded, "system_attributes"), ["WorkflowId"]);
    assert!(decoded == reference_edit(&rewriter, name, Direction::ToClient, &body, Some("orders")));

    // A workflow's attributes: a colliding upstream `CustomerId` would otherwise be a second key
    // of the same name (and decoders keep whichever comes last).
    let name = format!("{WS}.DescribeWorkflowExecutionResponse");
    let mut info = DynamicMessage::new(desc("temporal.api.workflow.v1.WorkflowExecutionInfo"));
    info.set_field_by_name(
        "search_attributes",
        search_attributes(&["OrderCustomer", "CustomerId", "Other"]),
    );
    let mut response = DynamicMessage::new(desc(&name));
    response.set_field_by_name("workflow_execution_info", Value::Message(info));
    let body = Bytes::from(response.encode_to_vec());
    let out = edit(
        &rewriter,
        DESCRIBE_WORKFLOW,
        Direction::ToClient,
        &body,
        Some("orders"),
    )
    .unwrap();
    let decoded = DynamicMessage::decode(desc(&name), out).unwrap();
    assert!(
        decoded == reference_edit(&rewriter, &name, Direction::ToClient, &body, Some("orders"))
    );
    let info = decoded
        .get_field_by_name("workflow_execution_info")
        .unwrap();
    let attributes = info
        .as_message()
        .unwrap()
        .get_field_by_name("search_attributes")
        .unwrap();
    let attributes = attributes.as_message().unwrap();
    assert_eq!(
        map_keys(attributes, "indexed_fields"),
        ["CustomerId", "Other"]
    );
    assert_eq!(
        attributes
            .get_field_by_name("indexed_fields")
            .unwrap()
            .as_map()
            .unwrap()[&MapKey::String("CustomerId".into())],
        payload("\"OrderCustomer-value\""),
        "the value of the mapped attribute"
    );

    // DescribeNamespace's alias map: field → alias; the colliding alias is left out.
    let name = format!("{WS}.DescribeNamespaceResponse");
    let mut config = DynamicMessage::new(desc("temporal.api.namespace.v1.NamespaceConfig"));
    config.set_field_by_name(
        "custom_search_attribute_aliases",
        Value::Map(
            [
                ("Keyword01", "OrderCustomer"),
                ("Int01", "CustomerId"),
                ("Text01", "Other"),
            ]
            .iter()
            .map(|(k, v)| (MapKey::String(k.to_string()), Value::String(v.to_string())))
            .collect(),
        ),
    );
    let mut response = DynamicMessage::new(desc(&name));
    response.set_field_by_name("config", Value::Message(config));
    let body = Bytes::from(response.encode_to_vec());
    let out = edit(
        &rewriter,
        DESCRIBE_NAMESPACE,
        Direction::ToClient,
        &body,
        Some("orders"),
    )
    .unwrap();
    let decoded = DynamicMessage::decode(desc(&name), out).unwrap();
    assert!(
        decoded == reference_edit(&rewriter, &name, Direction::ToClient, &body, Some("orders"))
    );
    let config = decoded.get_field_by_name("config").unwrap();
    let aliases = config
        .as_message()
        .unwrap()
        .get_field_by_name("custom_search_attribute_aliases")
        .unwrap();
    let mut aliases: Vec<(String, String)> = aliases
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    aliases.sort();
    assert_eq!(
        aliases,
        [
            ("Keyword01".to_owned(), "CustomerId".to_owned()),
            ("Text01".to_owned(), "Other".to_owned())
        ]
    );

    // Exposed: the colliding attribute stays.
    let out = edit(
        &orders_exposed(),
        DESCRIBE_NAMESPACE,
        Direction::ToClient,
        &body,
        Some("orders"),
    )
    .unwrap();
    let decoded = DynamicMessage::decode(desc(&name), out).unwrap();
    let config = decoded.get_field_by_name("config").unwrap();
    let aliases = config
        .as_message()
        .unwrap()
        .get_field_by_name("custom_search_attribute_aliases")
        .unwrap();
    assert_eq!(aliases.as_map().unwrap().len(), 3);
}

#[test]
fn get_search_attributes_keys_are_translated() {
    let rewriter = orders();
    let name = format!("{WS}.GetSearchAttributesResponse");
    let mut response = DynamicMessage::new(desc(&name));
    response.set_field_by_name(
        "keys",
        attribute_types(&[("OrderCustomer", 2), ("CustomerId", 3), ("WorkflowId", 2)]),
    );
    let body = Bytes::from(response.encode_to_vec());
    let out = edit(
        &rewriter,
        "/temporal.api.workflowservice.v1.WorkflowService/GetSearchAttributes",
        Direction::ToClient,
        &body,
        Some("orders"),
    )
    .unwrap();
    let decoded = DynamicMessage::decode(desc(&name), out).unwrap();
    assert_eq!(map_keys(&decoded, "keys"), ["CustomerId", "WorkflowId"]);
    assert_eq!(
        decoded.get_field_by_name("keys").unwrap().as_map().unwrap()
            [&MapKey::String("CustomerId".into())],
        Value::EnumNumber(2)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random lists of namespaces and search attributes: the walker drops exactly what the oracle
    /// drops, and a client never sees a name twice or an upstream-side name that is mapped.
    #[test]
    fn hidden_names_never_reach_clients(
        namespaces in prop::collection::vec(
            prop::sample::select(vec!["orders", "orders-prod", "billing", "billing-eu", "default"]), 0..8),
        attributes in prop::collection::btree_set(
            prop::sample::select(vec!["CustomerId", "OrderCustomer", "Other", "Z"]), 0..4),
    ) {
        let rewriter = rewriter(&config(
            &[("orders", "orders-prod"), ("billing", "billing-eu")],
            &[("orders", &[("CustomerId", "OrderCustomer")])],
            false,
        ));
        let mut unique = namespaces.clone();
        unique.sort();
        unique.dedup();
        let entries: Vec<(&str, String)> = unique.iter().map(|n| (*n, format!("id-{n}"))).collect();
        let entries: Vec<(&str, &str)> = entries.iter().map(|(n, id)| (*n, id.as_str())).collect();
        let name = format!("{WS}.ListNamespacesResponse");
        let body = Bytes::from(list_namespaces(&entries).encode_to_vec());
        let out = edit(&rewriter, LIST_NAMESPACES, Direction::ToClient, &body, None).unwrap();
        let decoded = DynamicMessage::decode(desc(&name), out.clone()).unwrap();
        prop_assert!(decoded == reference_edit(&rewriter, &name, Direction::ToClient, &body, None));
        let seen = namespace_entries(&out);
        let mut names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        prop_assert_eq!(before, names.len(), "a namespace twice: {:?}", seen);
        prop_assert!(!names.iter().any(|n| *n == "orders-prod" || *n == "billing-eu"));
        for (client, upstream) in [("orders", "orders-prod"), ("billing", "billing-eu")] {
            // A client-side name shows the mapped namespace, if the upstream has it.
            let shown = seen.iter().find(|(n, _)| n == client).map(|(_, id)| id.clone());
            let expected = unique.contains(&upstream).then(|| format!("id-{upstream}"));
            prop_assert_eq!(shown, expected);
        }

        let attributes: Vec<&str> = attributes.into_iter().collect();
        let name = format!("{WS}.DescribeWorkflowExecutionResponse");
        let mut info = DynamicMessage::new(desc("temporal.api.workflow.v1.WorkflowExecutionInfo"));
        info.set_field_by_name("search_attributes", search_attributes(&attributes));
        let mut response = DynamicMessage::new(desc(&name));
        response.set_field_by_name("workflow_execution_info", Value::Message(info));
        let body = Bytes::from(response.encode_to_vec());
        let out = edit(&rewriter, DESCRIBE_WORKFLOW, Direction::ToClient, &body, Some("orders")).unwrap();
        let decoded = DynamicMessage::decode(desc(&name), out.clone()).unwrap();
        prop_assert!(decoded == reference_edit(&rewriter, &name, Direction::ToClient, &body, Some("orders")));
        // On the wire (where duplicates would survive): each key at most once, none upstream-side.
        // A map entry's key is its field 1: tag 0x0a, then the length.
        let key = |name: &str| [&[0x0a, name.len() as u8][..], name.as_bytes()].concat();
        let count = |name: &str| out.windows(name.len() + 2).filter(|w| *w == key(name).as_slice()).count();
        let mapped = attributes.contains(&"OrderCustomer");
        prop_assert_eq!(count("CustomerId"), usize::from(mapped));
        prop_assert_eq!(count("OrderCustomer"), 0);
        prop_assert_eq!(count("Other"), usize::from(attributes.contains(&"Other")));
    }
}

#[test]
fn an_entry_with_a_repeated_key_is_judged_by_its_last_key() {
    // A decoder keeps the last occurrence of a field, so the last key decides whether an entry
    // is hidden (found by the rewrite_walker fuzz target).
    let rewriter = orders();
    let name = "temporal.api.operatorservice.v1.ListSearchAttributesResponse";
    let field = desc(name).get_field_by_name("custom_attributes").unwrap();
    let entry = |keys: &[&str]| {
        let mut entry = Vec::new();
        for key in keys {
            entry.push(0x0a);
            entry.push(key.len() as u8);
            entry.extend_from_slice(key.as_bytes());
        }
        entry.extend_from_slice(&[0x10, 2]);
        let mut body = vec![(field.number() << 3 | 2) as u8, entry.len() as u8];
        body.extend_from_slice(&entry);
        Bytes::from(body)
    };
    for (keys, expected) in [
        (&["CustomerId", "Other"][..], vec!["Other"]),
        (&["Other", "CustomerId"][..], vec![]),
        (&["OrderCustomer", "CustomerId"][..], vec![]),
        (&["CustomerId", "OrderCustomer"][..], vec!["CustomerId"]),
    ] {
        let body = entry(keys);
        let out = edit(
            &rewriter,
            LIST_ATTRIBUTES,
            Direction::ToClient,
            &body,
            Some("orders"),
        )
        .unwrap();
        let decoded = DynamicMessage::decode(desc(name), out).unwrap();
        assert_eq!(
            map_keys(&decoded, "custom_attributes"),
            expected,
            "{keys:?}"
        );
        assert!(
            decoded == reference_edit(&rewriter, name, Direction::ToClient, &body, Some("orders")),
            "{keys:?}"
        );
    }
}

#[test]
fn a_message_held_in_pieces_is_edited_to_the_same_bytes_wherever_it_was_cut() {
    let rewriter = orders();
    let body = Bytes::from(start_request("orders", &["CustomerId", "Other"]).encode_to_vec());
    let whole = edit(&rewriter, START, Direction::ToUpstream, &body, None).unwrap();
    assert_ne!(whole, body, "the request has names to translate");
    let (request, _) = rewriter.method(START);
    let message = request.unwrap();
    for a in 1..body.len() {
        for b in [a + 1, a + 7, body.len()] {
            let b = b.min(body.len());
            let pieces = Chunks::from_pieces([body.slice(..a), body.slice(a..b), body.slice(b..)]);
            let mut stats = EditStats::default();
            let edited = rewriter
                .edit(
                    Direction::ToUpstream,
                    message,
                    &OnceLock::new(),
                    &pieces,
                    &mut stats,
                )
                .unwrap();
            assert_eq!(edited.contiguous(), whole, "cut at {a} and {b}");
            assert_eq!((stats.namespaces, stats.search_attributes), (1, 1));
        }
    }
}
