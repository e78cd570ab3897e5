//! The Temporal requests of the soak, built and checked with the descriptor set embedded in Strait
//! (no generated stubs here either).

use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};

pub const SERVICE: &str = "/temporal.api.workflowservice.v1.WorkflowService";
const WS: &str = "temporal.api.workflowservice.v1";
pub const NAMESPACE: &str = "default";

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| strait::descriptor_set::embedded().expect("embedded descriptor set"))
}

fn desc(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is not in the descriptor set"))
}

fn message(name: &str, fields: &[(&str, Value)]) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc(name));
    for (field, value) in fields {
        message.set_field_by_name(field, value.clone());
    }
    message
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn task_queue(name: &str) -> Value {
    Value::Message(message(
        "temporal.api.taskqueue.v1.TaskQueue",
        // TASK_QUEUE_KIND_NORMAL
        &[("name", string(name)), ("kind", Value::EnumNumber(1))],
    ))
}

pub fn get_system_info() -> Bytes {
    Bytes::from(message(&format!("{WS}.GetSystemInfoRequest"), &[]).encode_to_vec())
}

pub fn describe_namespace() -> Bytes {
    Bytes::from(
        message(
            &format!("{WS}.DescribeNamespaceRequest"),
            &[("namespace", string(NAMESPACE))],
        )
        .encode_to_vec(),
    )
}

/// A long poll of a task queue no worker or workflow uses: it ends empty when the server's poll
/// interval (a minute by default) is over.
pub fn poll(activity: bool, queue: &str) -> Bytes {
    let name = if activity {
        "PollActivityTaskQueueRequest"
    } else {
        "PollWorkflowTaskQueueRequest"
    };
    Bytes::from(
        message(
            &format!("{WS}.{name}"),
            &[
                ("namespace", string(NAMESPACE)),
                ("task_queue", task_queue(queue)),
                ("identity", string("strait-soak")),
            ],
        )
        .encode_to_vec(),
    )
}

pub fn start_workflow(workflow_id: &str, request_id: &str) -> Bytes {
    let workflow_type = message(
        "temporal.api.common.v1.WorkflowType",
        &[("name", string("SoakWorkflow"))],
    );
    Bytes::from(
        message(
            &format!("{WS}.StartWorkflowExecutionRequest"),
            &[
                ("namespace", string(NAMESPACE)),
                ("workflow_id", string(workflow_id)),
                ("workflow_type", Value::Message(workflow_type)),
                ("task_queue", task_queue("strait-soak-nobody")),
                ("identity", string("strait-soak")),
                ("request_id", string(request_id)),
            ],
        )
        .encode_to_vec(),
    )
}

pub fn terminate_workflow(workflow_id: &str) -> Bytes {
    let execution = message(
        "temporal.api.common.v1.WorkflowExecution",
        &[("workflow_id", string(workflow_id))],
    );
    Bytes::from(
        message(
            &format!("{WS}.TerminateWorkflowExecutionRequest"),
            &[
                ("namespace", string(NAMESPACE)),
                ("workflow_execution", Value::Message(execution)),
                ("reason", string("soak")),
                ("identity", string("strait-soak")),
            ],
        )
        .encode_to_vec(),
    )
}

/// Decodes a response of `WorkflowService.<method>` (e.g. "GetSystemInfo").
fn response(method: &str, bytes: &[u8]) -> Result<DynamicMessage, String> {
    DynamicMessage::decode(desc(&format!("{WS}.{method}Response")), bytes)
        .map_err(|e| format!("{method} response does not decode: {e}"))
}

/// The string at a dotted field path of a decoded message ("" when unset).
fn text(message: &DynamicMessage, path: &str) -> String {
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = current.get_field_by_name(part).map(|v| v.into_owned());
        match (value, parts.peek()) {
            (Some(Value::Message(inner)), Some(_)) => current = inner,
            (Some(Value::String(s)), None) => return s,
            (Some(Value::Bytes(b)), None) => return String::from_utf8_lossy(&b).into_owned(),
            _ => return String::new(),
        }
    }
    String::new()
}

/// Checks a response for what the soak expects of it.
pub fn check(method: &str, bytes: &[u8]) -> Result<(), String> {
    let decoded = response(method, bytes)?;
    let (path, expected): (&str, Option<&str>) = match method {
        "GetSystemInfo" => ("server_version", None),
        "DescribeNamespace" => ("namespace_info.name", Some(NAMESPACE)),
        "StartWorkflowExecution" => ("run_id", None),
        // An empty poll: no task token (nothing ever runs on the polled queues).
        "PollWorkflowTaskQueue" | "PollActivityTaskQueue" => {
            let token = text(&decoded, "task_token");
            return if token.is_empty() {
                Ok(())
            } else {
                Err(format!("{method} returned a task on an unused queue"))
            };
        }
        _ => return Ok(()),
    };
    let value = text(&decoded, path);
    match expected {
        Some(expected) if value != expected => {
            Err(format!("{method}: {path} is {value:?}, not {expected:?}"))
        }
        None if value.is_empty() => Err(format!("{method}: {path} is empty")),
        _ => Ok(()),
    }
}
