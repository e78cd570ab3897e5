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
use strait::rewrite::compression::{self, Encoding};
use strait::rewrite::plan::Targets;
use strait::rewrite::walker::EditStats;
use strait::rewrite::{reference, Direction, MessageEditor, PlanCache, RewriteError, Rewriter};

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
) -> Result<Bytes, RewriteError> {
    let (request, response) = rewriter.method(path);
    let message = match direction {
        Direction::ToUpstream => request,
        Direction::ToClient => response,
    };
    let Some(message) = message else {
        return Ok(body.clone());
    };
    let call_namespace = Arc::new(OnceLock::new());
    if let Some(ns) = namespace {
        call_namespace.set(ns.to_owned()).unwrap();
    }
    let editor = MessageEditor {
        rewriter: Arc::clone(rewriter),
        direction,
        message,
        encoding: Encoding::Gzip,
        limit: 64 * 1024 * 1024,
        call_namespace,
    };
    editor
        .edit(false, body.clone(), &mut EditStats::default())
        .map(|(_, b)| b)
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
    let (message, _) = rewriter.method(START);
    let editor = MessageEditor {
        rewriter: Arc::clone(&rewriter),
        direction: Direction::ToUpstream,
        message: message.unwrap(),
        encoding: Encoding::Gzip,
        limit: 1 << 20,
        call_namespace: Arc::new(OnceLock::new()),
    };
    let (compressed, out) = editor
        .edit(true, packed, &mut EditStats::default())
        .unwrap();
    assert!(compressed);
    let plain = compression::gunzip(&out, 1 << 20).unwrap();
    let decoded = DynamicMessage::decode(
        desc(&format!("{WS}.StartWorkflowExecutionRequest")),
        plain.as_slice(),
    )
    .unwrap();
    assert_eq!(
        decoded.get_field_by_name("namespace").unwrap().as_str(),
        Some("orders-prod")
    );

    let other = MessageEditor {
        encoding: Encoding::Other("snappy".into()),
        ..editor
    };
    let err = other
        .edit(true, Bytes::from_static(b"x"), &mut EditStats::default())
        .unwrap_err();
    assert!(err.to_string().contains("snappy"), "{err}");
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
