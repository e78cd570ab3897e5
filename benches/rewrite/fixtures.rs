//! Synthetic but realistic Temporal messages for the rewrite benchmark, built as `DynamicMessage`s
//! from the embedded descriptor set and encoded once, outside any measurement.
//!
//! Everything is seeded, so every run measures the same bytes. Names are the upstream-side ones
//! (`orders-prod`, `OrderCustomer`): the benchmark edits responses, which the proxy translates to the
//! client-side names (`orders`, `CustomerId`).

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, Value};

pub const HISTORY_RESPONSE: &str =
    "temporal.api.workflowservice.v1.GetWorkflowExecutionHistoryResponse";
pub const REPLICATION_RESPONSE: &str =
    "temporal.server.api.adminservice.v1.StreamWorkflowReplicationMessagesResponse";

/// Upstream-side names, translated in responses.
pub const UPSTREAM_NAMESPACE: &str = "orders-prod";
pub const UPSTREAM_ATTRIBUTE: &str = "OrderCustomer";
/// A namespace the translation does not map (child workflows in another team's namespace).
const OTHER_NAMESPACE: &str = "billing-prod";

/// Whether the generated events may carry namespace and search-attribute names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Started event with a parent namespace and search attributes, upserts, child workflows.
    WithTargets,
    /// Workflow tasks, activities, timers, signals, markers: payloads and IDs only.
    NoTargets,
}

/// What a generated message holds, for the report.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub events: usize,
    /// Events with at least one namespace or search-attribute name in them.
    pub events_with_targets: usize,
    pub tasks: usize,
    pub blobs: usize,
}

/// An encoded message and what is in it.
pub struct Fixture {
    pub message: &'static str,
    pub body: Bytes,
    pub counts: Counts,
}

pub struct Builder<'a> {
    pool: &'a DescriptorPool,
    rng: fastrand::Rng,
    event_id: i64,
    task_id: i64,
    seconds: i64,
    pub counts: Counts,
}

const ACTIVITY_TYPES: &[&str] = &[
    "ReserveInventory",
    "ChargeCard",
    "CreateShipment",
    "SendConfirmationEmail",
    "UpdateLedger",
];
const SIGNALS: &[&str] = &["AddItem", "CancelOrder", "UpdateAddress"];

impl<'a> Builder<'a> {
    pub fn new(pool: &'a DescriptorPool, seed: u64) -> Self {
        Self {
            pool,
            rng: fastrand::Rng::with_seed(seed),
            event_id: 0,
            task_id: 1 << 20,
            seconds: 1_760_000_000,
            counts: Counts::default(),
        }
    }

    fn new_message(&self, name: &str) -> DynamicMessage {
        let descriptor = self
            .pool
            .get_message_by_name(name)
            .unwrap_or_else(|| panic!("{name} not in the descriptor set"));
        DynamicMessage::new(descriptor)
    }

    fn enum_number(&self, enum_name: &str, value: &str) -> Value {
        let number = self
            .pool
            .get_enum_by_name(enum_name)
            .and_then(|e| e.get_value_by_name(value))
            .unwrap_or_else(|| panic!("{enum_name}.{value} not in the descriptor set"))
            .number();
        Value::EnumNumber(number)
    }

    fn text(&mut self, len: usize) -> String {
        std::iter::repeat_with(|| self.rng.alphanumeric())
            .take(len)
            .collect()
    }

    fn uuid(&mut self) -> String {
        let hex = |rng: &mut fastrand::Rng, n: usize| -> String {
            (0..n)
                .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
                .collect()
        };
        let r = &mut self.rng;
        format!(
            "{}-{}-{}-{}-{}",
            hex(r, 8),
            hex(r, 4),
            hex(r, 4),
            hex(r, 4),
            hex(r, 12)
        )
    }

    /// A JSON payload of about `len` bytes.
    fn payload(&mut self, len: usize) -> Value {
        let order = self.rng.u32(100_000..999_999);
        let head = format!("{{\"orderId\":\"ord-{order}\",\"region\":\"eu-west\",\"blob\":\"");
        let body = self.text(len.saturating_sub(head.len() + 2));
        self.payload_bytes(format!("{head}{body}\"}}").into_bytes(), "json/plain")
    }

    fn payload_bytes(&mut self, data: Vec<u8>, encoding: &str) -> Value {
        let mut payload = self.new_message("temporal.api.common.v1.Payload");
        let metadata: HashMap<MapKey, Value> = [(
            MapKey::String("encoding".into()),
            Value::Bytes(Bytes::copy_from_slice(encoding.as_bytes())),
        )]
        .into_iter()
        .collect();
        payload.set_field_by_name("metadata", Value::Map(metadata));
        payload.set_field_by_name("data", Value::Bytes(Bytes::from(data)));
        Value::Message(payload)
    }

    fn payloads(&mut self, len: usize) -> Value {
        let mut payloads = self.new_message("temporal.api.common.v1.Payloads");
        let payload = self.payload(len);
        payloads.set_field_by_name("payloads", Value::List(vec![payload]));
        Value::Message(payloads)
    }

    /// Search attributes: the mapped one plus some the translation leaves alone.
    fn search_attributes(&mut self, extra: &[&str]) -> Value {
        let mut attributes = self.new_message("temporal.api.common.v1.SearchAttributes");
        let mut map = HashMap::new();
        let customer = format!("\"cust-{}\"", self.rng.u32(1000..99_999));
        map.insert(
            MapKey::String(UPSTREAM_ATTRIBUTE.into()),
            self.payload_bytes(customer.into_bytes(), "json/plain"),
        );
        for name in extra {
            let value = format!("\"{}\"", self.text(8));
            map.insert(
                MapKey::String((*name).into()),
                self.payload_bytes(value.into_bytes(), "json/plain"),
            );
        }
        attributes.set_field_by_name("indexed_fields", Value::Map(map));
        Value::Message(attributes)
    }

    fn named(&self, message: &str, field: &str, name: &str) -> Value {
        let mut m = self.new_message(message);
        m.set_field_by_name(field, Value::String(name.into()));
        Value::Message(m)
    }

    fn task_queue(&self) -> Value {
        let mut queue = self.new_message("temporal.api.taskqueue.v1.TaskQueue");
        queue.set_field_by_name("name", Value::String("orders-task-queue".into()));
        queue.set_field_by_name(
            "kind",
            self.enum_number(
                "temporal.api.enums.v1.TaskQueueKind",
                "TASK_QUEUE_KIND_NORMAL",
            ),
        );
        Value::Message(queue)
    }

    fn duration(&self, seconds: i64) -> Value {
        let mut d = self.new_message("google.protobuf.Duration");
        d.set_field_by_name("seconds", Value::I64(seconds));
        Value::Message(d)
    }

    fn execution(&mut self, workflow_id: String) -> Value {
        let mut e = self.new_message("temporal.api.common.v1.WorkflowExecution");
        e.set_field_by_name("workflow_id", Value::String(workflow_id));
        e.set_field_by_name("run_id", Value::String(self.uuid()));
        Value::Message(e)
    }

    fn identity(&mut self) -> Value {
        Value::String(format!(
            "{}@orders-worker-{}",
            self.rng.u32(1..40_000),
            self.rng.u8(1..9)
        ))
    }

    /// A `HistoryEvent` with the common fields and `attributes` in the oneof member `field`.
    fn event(&mut self, field: &str, attributes: DynamicMessage, targets: bool) -> Value {
        self.event_id += 1;
        self.task_id += i64::from(self.rng.u8(1..4));
        self.seconds += i64::from(self.rng.u8(0..3));
        let event_type = format!(
            "EVENT_TYPE_{}",
            field
                .strip_suffix("_event_attributes")
                .unwrap_or(field)
                .to_ascii_uppercase()
        );
        let mut time = self.new_message("google.protobuf.Timestamp");
        time.set_field_by_name("seconds", Value::I64(self.seconds));
        time.set_field_by_name("nanos", Value::I32(self.rng.i32(0..1_000_000_000)));
        let mut event = self.new_message("temporal.api.history.v1.HistoryEvent");
        event.set_field_by_name("event_id", Value::I64(self.event_id));
        event.set_field_by_name("event_time", Value::Message(time));
        event.set_field_by_name(
            "event_type",
            self.enum_number("temporal.api.enums.v1.EventType", &event_type),
        );
        event.set_field_by_name("version", Value::I64(1));
        event.set_field_by_name("task_id", Value::I64(self.task_id));
        event.set_field_by_name(field, Value::Message(attributes));
        self.counts.events += 1;
        if targets {
            self.counts.events_with_targets += 1;
        }
        Value::Message(event)
    }

    fn attributes(&self, kind: &str) -> DynamicMessage {
        self.new_message(&format!("temporal.api.history.v1.{kind}EventAttributes"))
    }

    /// The first event of a run.
    fn started(&mut self, content: Content) -> Value {
        let mut a = self.attributes("WorkflowExecutionStarted");
        a.set_field_by_name(
            "workflow_type",
            self.named(
                "temporal.api.common.v1.WorkflowType",
                "name",
                "OrderWorkflow",
            ),
        );
        a.set_field_by_name("task_queue", self.task_queue());
        let input = self.rng.usize(500..3000);
        a.set_field_by_name("input", self.payloads(input));
        a.set_field_by_name("workflow_run_timeout", self.duration(86_400));
        a.set_field_by_name("workflow_task_timeout", self.duration(10));
        a.set_field_by_name("original_execution_run_id", Value::String(self.uuid()));
        a.set_field_by_name("first_execution_run_id", Value::String(self.uuid()));
        a.set_field_by_name("identity", self.identity());
        a.set_field_by_name("attempt", Value::I32(1));
        let id = format!("order-{}", self.rng.u32(100_000..999_999));
        a.set_field_by_name("workflow_id", Value::String(id));
        let targets = content == Content::WithTargets;
        if targets {
            a.set_field_by_name(
                "parent_workflow_namespace",
                Value::String(UPSTREAM_NAMESPACE.into()),
            );
            a.set_field_by_name("parent_workflow_namespace_id", Value::String(self.uuid()));
            let parent = format!("checkout-{}", self.rng.u32(100_000..999_999));
            a.set_field_by_name("parent_workflow_execution", self.execution(parent));
            a.set_field_by_name("parent_initiated_event_id", Value::I64(12));
            a.set_field_by_name(
                "search_attributes",
                self.search_attributes(&["OrderStatus", "OrderTotal", "Region"]),
            );
        }
        self.event("workflow_execution_started_event_attributes", a, targets)
    }

    fn workflow_task_scheduled(&mut self) -> Value {
        let mut a = self.attributes("WorkflowTaskScheduled");
        a.set_field_by_name("task_queue", self.task_queue());
        a.set_field_by_name("start_to_close_timeout", self.duration(10));
        a.set_field_by_name("attempt", Value::I32(1));
        self.event("workflow_task_scheduled_event_attributes", a, false)
    }

    fn workflow_task(&mut self, out: &mut Vec<Value>) {
        let scheduled_id = self.event_id + 1;
        let scheduled = self.workflow_task_scheduled();
        out.push(scheduled);
        let mut a = self.attributes("WorkflowTaskStarted");
        a.set_field_by_name("scheduled_event_id", Value::I64(scheduled_id));
        a.set_field_by_name("identity", self.identity());
        a.set_field_by_name("request_id", Value::String(self.uuid()));
        a.set_field_by_name("history_size_bytes", Value::I64(self.event_id * 900));
        out.push(self.event("workflow_task_started_event_attributes", a, false));
        let mut a = self.attributes("WorkflowTaskCompleted");
        a.set_field_by_name("scheduled_event_id", Value::I64(scheduled_id));
        a.set_field_by_name("started_event_id", Value::I64(scheduled_id + 1));
        a.set_field_by_name("identity", self.identity());
        out.push(self.event("workflow_task_completed_event_attributes", a, false));
    }

    fn activity(&mut self, out: &mut Vec<Value>) {
        let completed_id = self.event_id;
        let scheduled_id = self.event_id + 1;
        let activity = ACTIVITY_TYPES[self.rng.usize(..ACTIVITY_TYPES.len())];
        let mut a = self.attributes("ActivityTaskScheduled");
        a.set_field_by_name("activity_id", Value::String(scheduled_id.to_string()));
        a.set_field_by_name(
            "activity_type",
            self.named("temporal.api.common.v1.ActivityType", "name", activity),
        );
        a.set_field_by_name("task_queue", self.task_queue());
        let input = self.rng.usize(200..4096);
        a.set_field_by_name("input", self.payloads(input));
        a.set_field_by_name("schedule_to_close_timeout", self.duration(300));
        a.set_field_by_name("start_to_close_timeout", self.duration(60));
        a.set_field_by_name("workflow_task_completed_event_id", Value::I64(completed_id));
        out.push(self.event("activity_task_scheduled_event_attributes", a, false));
        let mut a = self.attributes("ActivityTaskStarted");
        a.set_field_by_name("scheduled_event_id", Value::I64(scheduled_id));
        a.set_field_by_name("identity", self.identity());
        a.set_field_by_name("request_id", Value::String(self.uuid()));
        a.set_field_by_name("attempt", Value::I32(1));
        out.push(self.event("activity_task_started_event_attributes", a, false));
        let mut a = self.attributes("ActivityTaskCompleted");
        let result = self.rng.usize(200..4096);
        a.set_field_by_name("result", self.payloads(result));
        a.set_field_by_name("scheduled_event_id", Value::I64(scheduled_id));
        a.set_field_by_name("started_event_id", Value::I64(scheduled_id + 1));
        a.set_field_by_name("identity", self.identity());
        out.push(self.event("activity_task_completed_event_attributes", a, false));
    }

    fn timer(&mut self, out: &mut Vec<Value>) {
        let started_id = self.event_id + 1;
        let timer_id = started_id.to_string();
        let mut a = self.attributes("TimerStarted");
        a.set_field_by_name("timer_id", Value::String(timer_id.clone()));
        a.set_field_by_name("start_to_fire_timeout", self.duration(30));
        a.set_field_by_name(
            "workflow_task_completed_event_id",
            Value::I64(self.event_id),
        );
        out.push(self.event("timer_started_event_attributes", a, false));
        let mut a = self.attributes("TimerFired");
        a.set_field_by_name("timer_id", Value::String(timer_id));
        a.set_field_by_name("started_event_id", Value::I64(started_id));
        out.push(self.event("timer_fired_event_attributes", a, false));
    }

    fn signal(&mut self, out: &mut Vec<Value>) {
        let mut a = self.attributes("WorkflowExecutionSignaled");
        let name = SIGNALS[self.rng.usize(..SIGNALS.len())];
        a.set_field_by_name("signal_name", Value::String(name.into()));
        let input = self.rng.usize(100..1024);
        a.set_field_by_name("input", self.payloads(input));
        a.set_field_by_name("identity", self.identity());
        a.set_field_by_name("request_id", Value::String(self.uuid()));
        out.push(self.event("workflow_execution_signaled_event_attributes", a, false));
    }

    fn marker(&mut self, out: &mut Vec<Value>) {
        let mut a = self.attributes("MarkerRecorded");
        a.set_field_by_name("marker_name", Value::String("SideEffect".into()));
        let len = self.rng.usize(50..400);
        let details: HashMap<MapKey, Value> = [(MapKey::String("data".into()), self.payloads(len))]
            .into_iter()
            .collect();
        a.set_field_by_name("details", Value::Map(details));
        a.set_field_by_name(
            "workflow_task_completed_event_id",
            Value::I64(self.event_id),
        );
        out.push(self.event("marker_recorded_event_attributes", a, false));
    }

    fn upsert(&mut self, out: &mut Vec<Value>) {
        let mut a = self.attributes("UpsertWorkflowSearchAttributes");
        a.set_field_by_name(
            "workflow_task_completed_event_id",
            Value::I64(self.event_id),
        );
        a.set_field_by_name(
            "search_attributes",
            self.search_attributes(&["OrderStatus"]),
        );
        out.push(self.event(
            "upsert_workflow_search_attributes_event_attributes",
            a,
            true,
        ));
    }

    /// Child workflow initiated, started, completed; in the translated namespace or another one.
    fn child(&mut self, out: &mut Vec<Value>) {
        let namespace = if self.rng.bool() {
            UPSTREAM_NAMESPACE
        } else {
            OTHER_NAMESPACE
        };
        let namespace_id = self.uuid();
        let workflow_id = format!("payment-{}", self.rng.u32(100_000..999_999));
        let workflow_type = self.named(
            "temporal.api.common.v1.WorkflowType",
            "name",
            "PaymentWorkflow",
        );
        let initiated_id = self.event_id + 1;
        let mut a = self.attributes("StartChildWorkflowExecutionInitiated");
        a.set_field_by_name("namespace", Value::String(namespace.into()));
        a.set_field_by_name("namespace_id", Value::String(namespace_id.clone()));
        a.set_field_by_name("workflow_id", Value::String(workflow_id.clone()));
        a.set_field_by_name("workflow_type", workflow_type.clone());
        a.set_field_by_name("task_queue", self.task_queue());
        let input = self.rng.usize(200..2048);
        a.set_field_by_name("input", self.payloads(input));
        a.set_field_by_name("workflow_run_timeout", self.duration(3600));
        a.set_field_by_name(
            "workflow_task_completed_event_id",
            Value::I64(self.event_id),
        );
        a.set_field_by_name("search_attributes", self.search_attributes(&["Region"]));
        out.push(self.event(
            "start_child_workflow_execution_initiated_event_attributes",
            a,
            true,
        ));
        let execution = self.execution(workflow_id);
        let mut a = self.attributes("ChildWorkflowExecutionStarted");
        a.set_field_by_name("namespace", Value::String(namespace.into()));
        a.set_field_by_name("namespace_id", Value::String(namespace_id.clone()));
        a.set_field_by_name("initiated_event_id", Value::I64(initiated_id));
        a.set_field_by_name("workflow_execution", execution.clone());
        a.set_field_by_name("workflow_type", workflow_type.clone());
        out.push(self.event("child_workflow_execution_started_event_attributes", a, true));
        let mut a = self.attributes("ChildWorkflowExecutionCompleted");
        let result = self.rng.usize(200..2048);
        a.set_field_by_name("result", self.payloads(result));
        a.set_field_by_name("namespace", Value::String(namespace.into()));
        a.set_field_by_name("namespace_id", Value::String(namespace_id));
        a.set_field_by_name("workflow_execution", execution);
        a.set_field_by_name("workflow_type", workflow_type);
        a.set_field_by_name("initiated_event_id", Value::I64(initiated_id));
        a.set_field_by_name("started_event_id", Value::I64(initiated_id + 1));
        out.push(self.event(
            "child_workflow_execution_completed_event_attributes",
            a,
            true,
        ));
    }

    /// One workflow task and what the workflow did after it.
    fn step(&mut self, content: Content, out: &mut Vec<Value>) {
        self.workflow_task(out);
        let roll = self.rng.u32(0..100);
        match (content, roll) {
            (_, 0..60) => self.activity(out),
            (_, 60..70) => self.timer(out),
            (_, 70..80) => self.signal(out),
            (_, 80..85) => self.marker(out),
            (Content::WithTargets, 85..92) => self.upsert(out),
            (Content::WithTargets, _) => self.child(out),
            (Content::NoTargets, _) => self.activity(out),
        }
    }

    fn history(&self, events: Vec<Value>) -> DynamicMessage {
        let mut history = self.new_message("temporal.api.history.v1.History");
        history.set_field_by_name("events", Value::List(events));
        history
    }

    /// A `GetWorkflowExecutionHistoryResponse` of at least `size` bytes: one long run.
    pub fn history_response(mut self, content: Content, size: usize) -> Fixture {
        let mut events = vec![self.started(content)];
        let mut encoded = 0;
        while encoded < size {
            let from = events.len();
            self.step(content, &mut events);
            encoded += events[from..]
                .iter()
                .map(|e| e.as_message().map_or(0, |m| m.encoded_len() + 4))
                .sum::<usize>();
        }
        let history = self.history(events);
        let mut response = self.new_message(HISTORY_RESPONSE);
        response.set_field_by_name("history", Value::Message(history));
        response.set_field_by_name(
            "next_page_token",
            Value::Bytes(Bytes::from(self.text(40).into_bytes())),
        );
        Fixture {
            message: HISTORY_RESPONSE,
            body: Bytes::from(response.encode_to_vec()),
            counts: self.counts,
        }
    }

    /// A history `DataBlob` (proto3-encoded `History`) holding `events`.
    fn blob(&mut self, events: Vec<Value>) -> Value {
        let mut blob = self.new_message("temporal.api.common.v1.DataBlob");
        blob.set_field_by_name(
            "encoding_type",
            self.enum_number("temporal.api.enums.v1.EncodingType", "ENCODING_TYPE_PROTO3"),
        );
        let data = self.history(events).encode_to_vec();
        blob.set_field_by_name("data", Value::Bytes(Bytes::from(data)));
        self.counts.blobs += 1;
        Value::Message(blob)
    }

    /// The events one history replication task carries: a step of a running workflow, now and then
    /// the start of a new one.
    fn batch(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        if self.rng.u32(0..10) == 0 {
            self.event_id = 0;
            events.push(self.started(Content::WithTargets));
        }
        self.step(Content::WithTargets, &mut events);
        events
    }

    fn history_task(&mut self) -> DynamicMessage {
        let mut a = self.new_message("temporal.server.api.replication.v1.HistoryTaskAttributes");
        a.set_field_by_name("namespace_id", Value::String(self.uuid()));
        let id = format!("order-{}", self.rng.u32(100_000..999_999));
        a.set_field_by_name("workflow_id", Value::String(id));
        a.set_field_by_name("run_id", Value::String(self.uuid()));
        let mut item = self.new_message("temporal.server.api.history.v1.VersionHistoryItem");
        item.set_field_by_name("event_id", Value::I64(self.event_id + 8));
        item.set_field_by_name("version", Value::I64(1));
        a.set_field_by_name(
            "version_history_items",
            Value::List(vec![Value::Message(item)]),
        );
        match self.rng.u32(0..100) {
            // Several batches in one task.
            0..25 => {
                let n = self.rng.usize(2..4);
                let blobs = (0..n)
                    .map(|_| {
                        let events = self.batch();
                        self.blob(events)
                    })
                    .collect();
                a.set_field_by_name("events_batches", Value::List(blobs));
            }
            // Continue-as-new: the new run's first events too.
            25..30 => {
                let events = self.batch();
                let blob = self.blob(events);
                a.set_field_by_name("events", blob);
                self.event_id = 0;
                let mut first = vec![self.started(Content::WithTargets)];
                first.push(self.workflow_task_scheduled());
                let blob = self.blob(first);
                a.set_field_by_name("new_run_events", blob);
                a.set_field_by_name("new_run_id", Value::String(self.uuid()));
            }
            _ => {
                let events = self.batch();
                let blob = self.blob(events);
                a.set_field_by_name("events", blob);
            }
        }
        let mut task = self.new_message("temporal.server.api.replication.v1.ReplicationTask");
        task.set_field_by_name(
            "task_type",
            self.enum_number(
                "temporal.server.api.enums.v1.ReplicationTaskType",
                "REPLICATION_TASK_TYPE_HISTORY_V2_TASK",
            ),
        );
        task.set_field_by_name("source_task_id", Value::I64(self.task_id));
        task.set_field_by_name("history_task_attributes", Value::Message(a));
        task
    }

    fn namespace_task(&mut self) -> DynamicMessage {
        let mut info = self.new_message("temporal.api.namespace.v1.NamespaceInfo");
        info.set_field_by_name("name", Value::String(UPSTREAM_NAMESPACE.into()));
        info.set_field_by_name(
            "state",
            self.enum_number(
                "temporal.api.enums.v1.NamespaceState",
                "NAMESPACE_STATE_REGISTERED",
            ),
        );
        info.set_field_by_name("description", Value::String("Order processing".into()));
        info.set_field_by_name("owner_email", Value::String("orders@example.com".into()));
        let id = self.uuid();
        info.set_field_by_name("id", Value::String(id.clone()));
        let mut a = self.new_message("temporal.server.api.replication.v1.NamespaceTaskAttributes");
        a.set_field_by_name(
            "namespace_operation",
            self.enum_number(
                "temporal.server.api.enums.v1.NamespaceOperation",
                "NAMESPACE_OPERATION_UPDATE",
            ),
        );
        a.set_field_by_name("id", Value::String(id));
        a.set_field_by_name("info", Value::Message(info));
        a.set_field_by_name("config_version", Value::I64(7));
        a.set_field_by_name("failover_version", Value::I64(1));
        let mut task = self.new_message("temporal.server.api.replication.v1.ReplicationTask");
        task.set_field_by_name(
            "task_type",
            self.enum_number(
                "temporal.server.api.enums.v1.ReplicationTaskType",
                "REPLICATION_TASK_TYPE_NAMESPACE_TASK",
            ),
        );
        task.set_field_by_name("source_task_id", Value::I64(self.task_id));
        task.set_field_by_name("namespace_task_attributes", Value::Message(a));
        task
    }

    /// A `StreamWorkflowReplicationMessagesResponse` of at least `size` bytes: history replication
    /// tasks with their events in `DataBlob`s, and a namespace task now and then.
    pub fn replication_response(mut self, size: usize) -> Fixture {
        let mut tasks = Vec::new();
        let mut encoded = 0;
        while encoded < size {
            let task = if tasks.len() % 250 == 17 {
                self.namespace_task()
            } else {
                self.history_task()
            };
            encoded += task.encoded_len() + 4;
            tasks.push(Value::Message(task));
        }
        self.counts.tasks = tasks.len();
        let mut messages =
            self.new_message("temporal.server.api.replication.v1.WorkflowReplicationMessages");
        messages.set_field_by_name("replication_tasks", Value::List(tasks));
        messages.set_field_by_name("exclusive_high_watermark", Value::I64(self.task_id + 1));
        let mut response = self.new_message(REPLICATION_RESPONSE);
        response.set_field_by_name("messages", Value::Message(messages));
        Fixture {
            message: REPLICATION_RESPONSE,
            body: Bytes::from(response.encode_to_vec()),
            counts: self.counts,
        }
    }
}
