//! Every metric name in one place, the Prometheus recorder, and cached handles so the hot path does no
//! registry lookups. Names follow `strait_<noun>_<unit>[_total]`; label values come from small fixed
//! sets (listener and upstream names from the config, service and method names the descriptor set
//! defines, gRPC code names). It imports no other module of Strait: callers bring their values into
//! its label types ([`MethodLabels`], [`CodeLabel`], [`DenialLabel`], [`RewriteCounts`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Calls finished, by listener, service, method and gRPC code.
pub(crate) const CALLS_TOTAL: &str = "strait_calls_total";
/// Calls being relayed now, by listener.
pub(crate) const CALLS_IN_FLIGHT: &str = "strait_calls_in_flight";
/// Call duration from request headers to end of response, by listener, service, method.
pub(crate) const CALL_DURATION_SECONDS: &str = "strait_call_duration_seconds";
/// gRPC message bytes relayed (prefixes included), by listener and direction (request|response).
pub(crate) const MESSAGE_BYTES_TOTAL: &str = "strait_message_bytes_total";
/// gRPC messages relayed, by listener and direction.
pub(crate) const MESSAGES_TOTAL: &str = "strait_messages_total";
/// Client connections accepted, by listener.
pub(crate) const CONNECTIONS_TOTAL: &str = "strait_connections_total";
/// Client connections open now, by listener.
pub(crate) const CONNECTIONS_OPEN: &str = "strait_connections_open";
/// Client connections refused, by listener and reason (limit|handshake|http2).
pub(crate) const CONNECTIONS_REFUSED_TOTAL: &str = "strait_connections_refused_total";
/// Client connections closed, by listener and reason (see `CloseReason`).
pub(crate) const CONNECTIONS_CLOSED_TOTAL: &str = "strait_connections_closed_total";
/// Client misbehaviour the HTTP/2 layer answered with GOAWAY, RST_STREAM or a 431, by listener and
/// kind (see `Violation`).
pub(crate) const PROTOCOL_VIOLATIONS_TOTAL: &str = "strait_protocol_violations_total";
/// Calls failed by the proxy itself, by listener and reason (see `RelayErrorKind`).
pub(crate) const RELAY_ERRORS_TOTAL: &str = "strait_relay_errors_total";
/// Fields edited by the rewriter, by listener and kind (namespace|search_attribute|query|utf8_repair).
pub(crate) const REWRITE_FIELDS_TOTAL: &str = "strait_rewrite_fields_total";
/// Access-control denials on cluster connections, by listener and kind (method|namespace for
/// refused calls, replication_task|namespace_entry for list elements dropped from responses).
pub(crate) const ACL_DENIALS_TOTAL: &str = "strait_acl_denials_total";
/// Mux sessions up now, by cluster connection.
pub(crate) const MUX_SESSIONS: &str = "strait_mux_sessions";
/// Mux sessions established, by cluster connection (reconnects show here).
pub(crate) const MUX_SESSIONS_TOTAL: &str = "strait_mux_sessions_total";
/// Upstream HTTP/2 connections up now, by upstream.
pub(crate) const UPSTREAM_CONNECTIONS_OPEN: &str = "strait_upstream_connections_open";
/// Failed upstream connection attempts, by upstream.
pub(crate) const UPSTREAM_CONNECT_ERRORS_TOTAL: &str = "strait_upstream_connect_errors_total";
/// Bytes charged now to messages held whole to be edited (their declared lengths), by listener.
pub(crate) const GATHER_BYTES: &str = "strait_gather_bytes";
/// Messages not gathered because a budget was full, by listener and reason (connection|process).
pub(crate) const GATHER_REFUSALS_TOTAL: &str = "strait_gather_refusals_total";
/// Tokio tasks alive in the proxy's runtime, read when /metrics is scraped (a leak shows here).
pub(crate) const RUNTIME_ALIVE_TASKS: &str = "strait_runtime_alive_tasks";
/// 1 when /readyz answers 200, else 0; read when /metrics is scraped.
pub(crate) const READY: &str = "strait_ready";
/// One per /readyz check, by check (its name in /readyz) and gates (whether it can make /readyz
/// 503): 1 when it passes, 0 when not (`warn` or `fail` in /readyz); read when /metrics is scraped.
pub(crate) const READY_CHECK: &str = "strait_ready_check";

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 90.0, 180.0, 600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the global Prometheus recorder once per process and returns its handle (shared by every
/// proxy started in this process, e.g. in tests). `None` if another recorder was installed first.
pub(crate) fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(CALL_DURATION_SECONDS.to_owned()),
                    DURATION_BUCKETS,
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// Histogram samples wait in the recorder until rendered; drain them periodically so memory stays
/// bounded even when nobody scrapes /metrics.
pub(crate) async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CALLS_TOTAL, "Calls finished, by gRPC status code");
    describe_gauge!(CALLS_IN_FLIGHT, "Calls being relayed");
    describe_histogram!(CALL_DURATION_SECONDS, Unit::Seconds, "Call duration");
    describe_counter!(
        MESSAGE_BYTES_TOTAL,
        Unit::Bytes,
        "gRPC message bytes relayed"
    );
    describe_counter!(MESSAGES_TOTAL, "gRPC messages relayed");
    describe_counter!(CONNECTIONS_TOTAL, "Client connections accepted");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open");
    describe_counter!(CONNECTIONS_REFUSED_TOTAL, "Client connections refused");
    describe_counter!(CONNECTIONS_CLOSED_TOTAL, "Client connections closed");
    describe_counter!(
        PROTOCOL_VIOLATIONS_TOTAL,
        "Client HTTP/2 misbehaviour answered with GOAWAY, RST_STREAM or 431"
    );
    describe_counter!(RELAY_ERRORS_TOTAL, "Calls failed by the proxy");
    describe_counter!(REWRITE_FIELDS_TOTAL, "Fields edited by the rewriter");
    describe_counter!(
        ACL_DENIALS_TOTAL,
        "Access-control denials on cluster connections"
    );
    describe_gauge!(MUX_SESSIONS, "Mux sessions up");
    describe_counter!(MUX_SESSIONS_TOTAL, "Mux sessions established");
    describe_gauge!(UPSTREAM_CONNECTIONS_OPEN, "Upstream HTTP/2 connections up");
    describe_counter!(
        UPSTREAM_CONNECT_ERRORS_TOTAL,
        "Failed upstream connection attempts"
    );
    describe_gauge!(
        GATHER_BYTES,
        Unit::Bytes,
        "Bytes charged to messages held whole to be edited"
    );
    describe_counter!(
        GATHER_REFUSALS_TOTAL,
        "Edited messages refused because a gather budget was full"
    );
    describe_gauge!(RUNTIME_ALIVE_TASKS, "Tokio tasks alive in the runtime");
    describe_gauge!(READY, "1 when /readyz answers 200");
    describe_gauge!(
        READY_CHECK,
        "1 when this /readyz check passes; gates=true checks decide readiness"
    );
}

/// Publishes the /readyz verdict and each check's state; called just before /metrics is rendered.
/// Check names come from the configuration (upstream and link names), so the set is bounded.
pub(crate) fn readiness(ready: bool, checks: &[(&str, bool, bool)]) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    for &(check, gates, ok) in checks {
        let gates = if gates { "true" } else { "false" };
        gauge!(READY_CHECK, "check" => check.to_owned(), "gates" => gates).set(if ok {
            1.0
        } else {
            0.0
        });
    }
}

/// Sets the gauges that are read from the runtime rather than counted as things happen; called
/// just before /metrics is rendered.
pub(crate) fn refresh_runtime() {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        gauge!(RUNTIME_ALIVE_TASKS).set(runtime.metrics().num_alive_tasks() as f64);
    }
}

/// Why the proxy itself failed a call: the `reason` label of `strait_relay_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayErrorKind {
    UpstreamUnavailable,
    UpstreamFailed,
    MessageTooLarge,
    MalformedFrame,
    DeadlineExceeded,
    NotGrpc,
    RewriteFailed,
    PermissionDenied,
    SendStalled,
    GatherBudget,
}

impl RelayErrorKind {
    const ALL: [RelayErrorKind; 10] = [
        RelayErrorKind::UpstreamUnavailable,
        RelayErrorKind::UpstreamFailed,
        RelayErrorKind::MessageTooLarge,
        RelayErrorKind::MalformedFrame,
        RelayErrorKind::DeadlineExceeded,
        RelayErrorKind::NotGrpc,
        RelayErrorKind::RewriteFailed,
        RelayErrorKind::PermissionDenied,
        RelayErrorKind::SendStalled,
        RelayErrorKind::GatherBudget,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RelayErrorKind::UpstreamUnavailable => "upstream_unavailable",
            RelayErrorKind::UpstreamFailed => "upstream_failed",
            RelayErrorKind::MessageTooLarge => "message_too_large",
            RelayErrorKind::MalformedFrame => "malformed_frame",
            RelayErrorKind::DeadlineExceeded => "deadline_exceeded",
            RelayErrorKind::NotGrpc => "not_grpc",
            RelayErrorKind::RewriteFailed => "rewrite_failed",
            RelayErrorKind::PermissionDenied => "permission_denied",
            RelayErrorKind::SendStalled => "send_stalled",
            RelayErrorKind::GatherBudget => "gather_budget",
        }
    }
}

/// What was denied: the `kind` label of `strait_acl_denials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenialLabel {
    /// A call refused by method.
    Method,
    /// A call refused because of a namespace it names.
    Namespace,
    /// A replication task dropped from a response.
    ReplicationTask,
    /// A `ListNamespaces` entry dropped from a response.
    NamespaceEntry,
}

impl DenialLabel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DenialLabel::Method => "method",
            DenialLabel::Namespace => "namespace",
            DenialLabel::ReplicationTask => "replication_task",
            DenialLabel::NamespaceEntry => "namespace_entry",
        }
    }
}

/// Counts one access-control denial (rare: the registry lookup is not worth caching).
pub(crate) fn acl_denied(listener: &str, kind: impl Into<DenialLabel>) {
    let kind = kind.into().as_str();
    counter!(ACL_DENIALS_TOTAL, "listener" => listener.to_owned(), "kind" => kind).increment(1);
}

/// Counts of the fields a call's edits changed, by kind (the `kind` label of
/// `strait_rewrite_fields_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RewriteCounts {
    pub(crate) namespaces: u64,
    pub(crate) search_attributes: u64,
    pub(crate) queries: u64,
    pub(crate) utf8_repairs: u64,
}

/// The `code` label of `strait_calls_total`: a gRPC status code's number and canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodeLabel {
    /// 0 to 16 for the codes gRPC defines; a larger one is counted without a cached handle.
    pub(crate) number: usize,
    pub(crate) name: &'static str,
}

/// gRPC's status codes are 0 to 16.
const GRPC_CODES: usize = 17;

/// The (service, method) metric labels of a call's path, from a fixed set (see
/// `grpc::method::MethodLabeler`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MethodLabels {
    pub(crate) service: Arc<str>,
    pub(crate) method: Arc<str>,
}

/// Refusal reasons for `strait_connections_refused_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RefusalKind {
    Limit,
    Handshake,
    Http2,
}

impl RefusalKind {
    fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Limit => "limit",
            RefusalKind::Handshake => "handshake",
            RefusalKind::Http2 => "http2",
        }
    }
}

/// Why a client connection closed: the `reason` label of `strait_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed it, went away, or sent GOAWAY.
    Client,
    /// No call for `idle_timeout`: Strait sent GOAWAY.
    Idle,
    /// No keepalive pong within `keepalive_timeout`.
    Keepalive,
    /// Strait's HTTP/2 layer sent GOAWAY with an error (see `strait_protocol_violations_total`).
    ProtocolError,
    /// Strait is shutting down.
    Shutdown,
}

impl CloseReason {
    const ALL: [CloseReason; 5] = [
        CloseReason::Client,
        CloseReason::Idle,
        CloseReason::Keepalive,
        CloseReason::ProtocolError,
        CloseReason::Shutdown,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Idle => "idle",
            CloseReason::Keepalive => "keepalive",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// Client HTTP/2 misbehaviour, as answered by the HTTP/2 layer: the `kind` label of
/// `strait_protocol_violations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Streams reset before they were accepted, beyond the limit (CVE-2023-44487): GOAWAY.
    RapidReset,
    /// A header block in too many CONTINUATION frames or far over the limit (CVE-2024-27316): GOAWAY.
    HeaderFlood,
    /// Too many streams that had to be reset for errors on one connection: GOAWAY.
    ResetFlood,
    /// A header list over `max_header_list_bytes`: 431 and RST_STREAM.
    HeaderListTooLarge,
    /// A stream beyond `max_concurrent_streams`: RST_STREAM REFUSED_STREAM.
    RefusedStream,
    /// Any other HTTP/2 protocol error: GOAWAY or RST_STREAM with its code.
    ProtocolError,
}

impl Violation {
    const ALL: [Violation; 6] = [
        Violation::RapidReset,
        Violation::HeaderFlood,
        Violation::ResetFlood,
        Violation::HeaderListTooLarge,
        Violation::RefusedStream,
        Violation::ProtocolError,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Violation::RapidReset => "rapid_reset",
            Violation::HeaderFlood => "header_flood",
            Violation::ResetFlood => "reset_flood",
            Violation::HeaderListTooLarge => "header_list_too_large",
            Violation::RefusedStream => "refused_stream",
            Violation::ProtocolError => "protocol_error",
        }
    }
}

/// One listener's violation counters, shared with each of its connections' frame watchers.
#[derive(Clone)]
pub(crate) struct ViolationCounters([Counter; 6]);

impl ViolationCounters {
    fn new(listener: &str) -> Self {
        Self(Violation::ALL.map(|kind| {
            counter!(PROTOCOL_VIOLATIONS_TOTAL, "listener" => listener.to_owned(), "kind" => kind.as_str())
        }))
    }

    pub(crate) fn count(&self, violation: Violation) {
        if let Some(i) = Violation::ALL.iter().position(|v| *v == violation) {
            self.0[i].increment(1);
        }
    }
}

/// One listener's handles for messages held whole to be edited.
#[derive(Clone)]
pub(crate) struct GatherMetrics {
    pub(crate) held: Gauge,
    pub(crate) refused_connection: Counter,
    pub(crate) refused_process: Counter,
}

/// (service, method) labels of a cached `MethodMetrics`.
type MethodKey = (Arc<str>, Arc<str>);

/// Handles for one listener, created once.
pub(crate) struct ListenerMetrics {
    name: Arc<str>,
    pub(crate) in_flight: Gauge,
    pub(crate) request_bytes: Counter,
    pub(crate) response_bytes: Counter,
    pub(crate) request_messages: Counter,
    pub(crate) response_messages: Counter,
    pub(crate) connections_total: Counter,
    pub(crate) connections_open: Gauge,
    pub(crate) violations: ViolationCounters,
    pub(crate) gather: GatherMetrics,
    closed: [Counter; 5],
    errors: [Counter; 10],
    rewrites: [Counter; 4],
    methods: Mutex<HashMap<MethodKey, Arc<MethodMetrics>>>,
}

impl ListenerMetrics {
    pub(crate) fn new(listener: &str) -> Self {
        let name: Arc<str> = Arc::from(listener);
        let l = name.to_string();
        let direction = |d: &'static str| [("listener", l.clone()), ("direction", d.to_owned())];
        Self {
            in_flight: gauge!(CALLS_IN_FLIGHT, "listener" => l.clone()),
            request_bytes: counter!(MESSAGE_BYTES_TOTAL, &direction("request")),
            response_bytes: counter!(MESSAGE_BYTES_TOTAL, &direction("response")),
            request_messages: counter!(MESSAGES_TOTAL, &direction("request")),
            response_messages: counter!(MESSAGES_TOTAL, &direction("response")),
            connections_total: counter!(CONNECTIONS_TOTAL, "listener" => l.clone()),
            connections_open: gauge!(CONNECTIONS_OPEN, "listener" => l.clone()),
            violations: ViolationCounters::new(&l),
            gather: GatherMetrics {
                held: gauge!(GATHER_BYTES, "listener" => l.clone()),
                refused_connection: counter!(GATHER_REFUSALS_TOTAL, "listener" => l.clone(), "reason" => "connection"),
                refused_process: counter!(GATHER_REFUSALS_TOTAL, "listener" => l.clone(), "reason" => "process"),
            },
            closed: CloseReason::ALL
                .map(|reason| counter!(CONNECTIONS_CLOSED_TOTAL, "listener" => l.clone(), "reason" => reason.as_str())),
            errors: RelayErrorKind::ALL
                .map(|kind| counter!(RELAY_ERRORS_TOTAL, "listener" => l.clone(), "reason" => kind.as_str())),
            rewrites: ["namespace", "search_attribute", "query", "utf8_repair"]
                .map(|kind| counter!(REWRITE_FIELDS_TOTAL, "listener" => l.clone(), "kind" => kind)),
            methods: Mutex::new(HashMap::new()),
            name,
        }
    }

    pub(crate) fn relay_error(&self, kind: RelayErrorKind) {
        if let Some(i) = RelayErrorKind::ALL.iter().position(|k| *k == kind) {
            self.errors[i].increment(1);
        }
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        if let Some(i) = CloseReason::ALL.iter().position(|r| *r == reason) {
            self.closed[i].increment(1);
        }
    }

    /// Counts what a call's edits changed.
    pub(crate) fn rewrote(&self, counts: impl Into<RewriteCounts>) {
        let stats = counts.into();
        for (counter, n) in self.rewrites.iter().zip([
            stats.namespaces,
            stats.search_attributes,
            stats.queries,
            stats.utf8_repairs,
        ]) {
            if n > 0 {
                counter.increment(n);
            }
        }
    }

    pub(crate) fn refused(&self, kind: RefusalKind) {
        counter!(CONNECTIONS_REFUSED_TOTAL, "listener" => self.name.to_string(), "reason" => kind.as_str())
            .increment(1);
    }

    /// Handles for one method on this listener (cached; the labeler's set of labels is fixed).
    pub(crate) fn method(&self, labels: &MethodLabels) -> Arc<MethodMetrics> {
        let key = (Arc::clone(&labels.service), Arc::clone(&labels.method));
        let mut methods = match self.methods.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(methods.entry(key).or_insert_with(|| {
            Arc::new(MethodMetrics::new(
                &self.name,
                &labels.service,
                &labels.method,
            ))
        }))
    }
}

/// Handles for one (listener, service, method); per-code counters created on first use.
pub(crate) struct MethodMetrics {
    labels: [(&'static str, String); 3],
    pub(crate) duration: Histogram,
    codes: [OnceLock<Counter>; GRPC_CODES],
}

impl MethodMetrics {
    fn new(listener: &str, service: &str, method: &str) -> Self {
        let labels = [
            ("listener", listener.to_owned()),
            ("service", service.to_owned()),
            ("method", method.to_owned()),
        ];
        Self {
            duration: histogram!(CALL_DURATION_SECONDS, &labels),
            labels,
            codes: Default::default(),
        }
    }

    pub(crate) fn finished(&self, code: impl Into<CodeLabel>, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
        let code = code.into();
        let register = || {
            let [l, s, m] = self.labels.clone();
            counter!(CALLS_TOTAL, &[l, s, m, ("code", code.name.to_owned())])
        };
        match self.codes.get(code.number) {
            Some(cached) => cached.get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }
}

/// (sessions up, sessions established) for one cluster connection's mux link.
pub(crate) fn mux_sessions(link: &str) -> (Gauge, Counter) {
    (
        gauge!(MUX_SESSIONS, "link" => link.to_owned()),
        counter!(MUX_SESSIONS_TOTAL, "link" => link.to_owned()),
    )
}

pub(crate) fn upstream_connections_open(upstream: &str) -> Gauge {
    gauge!(UPSTREAM_CONNECTIONS_OPEN, "upstream" => upstream.to_owned())
}

pub(crate) fn upstream_connect_errors(upstream: &str) -> Counter {
    counter!(UPSTREAM_CONNECT_ERRORS_TOTAL, "upstream" => upstream.to_owned())
}
