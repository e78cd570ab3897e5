//! End-to-end tests against a real Temporal server (the `temporal` CLI's dev
//! server) with the real Python SDK and CLI as clients, all through Strait.
//!
//! Needs the test venv: run `scripts/setup-test-env.sh` first. Each test
//! starts its own dev server and Strait on free 127.0.0.1 ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use strait_test_support::json::{self, payload_text, JsonExt, Value};
use strait_test_support::temporal::{
    python, temporal_cli, unique, DevServer, DevServerOpts, Interactive, Run, Strait,
};

const WORKFLOW_SERVICE: &str = "temporal.api.workflowservice.v1.WorkflowService";

/// Calls per method, keeping only those with a code other than OK.
fn failed_calls(calls: &BTreeMap<String, BTreeMap<String, f64>>) -> Vec<String> {
    calls
        .iter()
        .flat_map(|(method, codes)| {
            codes
                .iter()
                .filter(|(code, n)| code.as_str() != "OK" && **n > 0.0)
                .map(move |(code, n)| format!("{method} {code} x{n}"))
        })
        .collect()
}

fn ok_calls(calls: &BTreeMap<String, BTreeMap<String, f64>>, method: &str) -> f64 {
    calls
        .get(method)
        .and_then(|codes| codes.get("OK"))
        .copied()
        .unwrap_or(0.0)
}

/// The events of a `workflow show -o json` answer.
fn events(show: &Value) -> &[Value] {
    show.pointer("/events")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no events in {show}"))
}

fn find_event<'a>(show: &'a Value, event_type: &str) -> &'a Value {
    events(show)
        .iter()
        .find(|e| e.str_at("/eventType") == Some(event_type))
        .unwrap_or_else(|| panic!("no {event_type} in {show}"))
}

/// Runs the same read-only CLI command direct and through Strait; asserts
/// both succeed with equal JSON and returns it.
fn same_json(direct: &str, strait: &str, args: &[&str]) -> Value {
    let d = temporal_cli(direct, args).ok();
    let s = temporal_cli(strait, args).ok();
    let (dj, sj) = (d.json(), s.json());
    assert_eq!(
        sj,
        dj,
        "`temporal {}` differs through Strait\n--- direct\n{}\n--- strait\n{}",
        args.join(" "),
        d.stdout,
        s.stdout
    );
    dj
}

/// Runs the same CLI command direct and through Strait; asserts both fail the
/// same way (exit status and message), i.e. the gRPC error crossed Strait intact.
fn same_failure(direct: &str, strait: &str, args: &[&str]) -> Run {
    let d = temporal_cli(direct, args);
    let s = temporal_cli(strait, args);
    assert!(
        !d.success(),
        "`temporal {}` should fail direct: {}",
        args.join(" "),
        d.stdout
    );
    assert_eq!(
        (s.status.code(), s.stderr.trim()),
        (d.status.code(), d.stderr.trim()),
        "`temporal {}` fails differently through Strait",
        args.join(" ")
    );
    d
}

/// Waits (bounded) until the direct visibility listing for `query` shows exactly
/// `want` workflow ids: visibility is updated asynchronously after each change.
fn wait_listed(direct: &str, ns: &str, query: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut want: Vec<&str> = want.to_vec();
    want.sort_unstable();
    loop {
        let list = temporal_cli(
            direct,
            &["workflow", "list", "-n", ns, "--query", query, "-o", "json"],
        )
        .ok();
        let json = list.json();
        let mut ids: Vec<&str> = json
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|w| w.str_at("/execution/workflowId"))
            .collect();
        ids.sort_unstable();
        if ids == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "visibility for {query:?} never showed {want:?}; last: {ids:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn python_sdk_workflow_with_activity_through_strait() {
    let ns = "strait-sdk";
    let server = DevServer::start(&DevServerOpts {
        namespaces: vec![ns.to_owned()],
        ..Default::default()
    });
    let strait = Strait::start(&server.address());
    let task_queue = unique("sdk-tq");
    let name = unique("Strait");

    let run = python(
        "greeting.py",
        &[
            "--address",
            &strait.address(),
            "--namespace",
            ns,
            "--task-queue",
            &task_queue,
            "--name",
            &name,
            "--timeout",
            "60",
        ],
        Duration::from_secs(120),
    )
    .ok();
    let out = json::parse(run.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("greeting.py printed no JSON result ({e}): {}", run.stdout));
    // The activity builds the greeting from the name passed by the client.
    assert_eq!(
        out.str_at("/result"),
        Some(format!("Hello, {name}!").as_str()),
        "{out}"
    );
    let workflow_id = out.str_at("/workflow_id").unwrap();
    let run_id = out.str_at("/run_id").unwrap();

    // The server, asked directly, agrees that this run completed through the activity.
    let direct = server.address();
    let describe = temporal_cli(
        &direct,
        &[
            "workflow",
            "describe",
            "-n",
            ns,
            "-w",
            workflow_id,
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        describe.str_at("/workflowExecutionInfo/execution/runId"),
        Some(run_id)
    );
    assert_eq!(
        describe.str_at("/workflowExecutionInfo/status"),
        Some("WORKFLOW_EXECUTION_STATUS_COMPLETED")
    );
    let show = temporal_cli(
        &direct,
        &[
            "workflow",
            "show",
            "-n",
            ns,
            "-w",
            workflow_id,
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    let scheduled = find_event(&show, "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED");
    assert_eq!(
        scheduled.str_at("/activityTaskScheduledEventAttributes/activityType/name"),
        Some("compose_greeting")
    );
    find_event(&show, "EVENT_TYPE_ACTIVITY_TASK_COMPLETED");
    let completed = find_event(&show, "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED");
    let result = completed
        .pointer("/workflowExecutionCompletedEventAttributes/result/payloads/0")
        .unwrap_or_else(|| panic!("no result payload in {completed}"));
    assert_eq!(payload_text(result), format!("\"Hello, {name}!\""));

    // Strait relayed the SDK's calls, and saw them succeed.
    let calls = strait.calls();
    for method in [
        "StartWorkflowExecution",
        "PollWorkflowTaskQueue",
        "RespondWorkflowTaskCompleted",
        "RespondActivityTaskCompleted",
        "GetWorkflowExecutionHistory",
    ] {
        assert!(
            ok_calls(&calls, method) >= 1.0,
            "no OK {method} in Strait's metrics: {calls:?}"
        );
    }
    let metrics = strait.metrics();
    assert!(
        metrics.contains(&format!("service=\"{WORKFLOW_SERVICE}\"")),
        "no WorkflowService calls in /metrics:\n{metrics}"
    );
    // The one expected non-OK: at shutdown the worker cancels its own
    // in-flight long polls, which Strait counts as CANCELLED.
    let failed: Vec<String> = failed_calls(&calls)
        .into_iter()
        .filter(|f| !(f.starts_with("Poll") && f.contains(" CANCELLED ")))
        .collect();
    assert!(failed.is_empty(), "calls failed through Strait: {failed:?}");
}

#[test]
fn temporal_cli_through_strait_matches_direct() {
    let ns = "strait-cli";
    let server = DevServer::start(&DevServerOpts {
        namespaces: vec![ns.to_owned()],
        search_attributes: vec![("StraitTag".to_owned(), "Keyword".to_owned())],
        ..Default::default()
    });
    let strait = Strait::start(&server.address());
    let (direct, via) = (server.address(), strait.address());

    // Cluster, namespace and search-attribute metadata read the same both ways.
    let cluster = same_json(
        &direct,
        &via,
        &["operator", "cluster", "describe", "-o", "json"],
    );
    assert!(cluster.str_at("/serverVersion").is_some(), "{cluster}");
    let namespace = same_json(
        &direct,
        &via,
        &["operator", "namespace", "describe", "-n", ns, "-o", "json"],
    );
    assert_eq!(namespace.str_at("/namespaceInfo/name"), Some(ns));
    let attrs = same_json(
        &direct,
        &via,
        &[
            "operator",
            "search-attribute",
            "list",
            "-n",
            ns,
            "-o",
            "json",
        ],
    );
    assert_eq!(
        attrs.str_at("/customAttributes/StraitTag"),
        Some("INDEXED_VALUE_TYPE_KEYWORD")
    );

    // Start one workflow through Strait and one direct; no worker runs, so
    // both stay put while they are compared.
    let task_queue = unique("cli-tq");
    let start = |address: &str, id: &str, tag: &str| {
        temporal_cli(
            address,
            &[
                "workflow",
                "start",
                "-n",
                ns,
                "--task-queue",
                &task_queue,
                "--type",
                "StraitCliWorkflow",
                "--workflow-id",
                id,
                "--input",
                &format!("{{\"tag\":\"{tag}\"}}"),
                "--search-attribute",
                &format!("StraitTag=\"{tag}\""),
                "-o",
                "json",
            ],
        )
        .ok()
        .json()
    };
    let (id_a, id_b) = (unique("via-strait"), unique("direct"));
    let started_a = start(&via, &id_a, "via-strait");
    let started_b = start(&direct, &id_b, "direct");
    assert_eq!(started_a.str_at("/workflowId"), Some(id_a.as_str()));
    let run_a = started_a.str_at("/runId").unwrap();
    assert!(started_b.str_at("/runId").is_some(), "{started_b}");

    // Started through Strait, visible direct, with its input and search attribute.
    let describe_a = same_json(
        &direct,
        &via,
        &["workflow", "describe", "-n", ns, "-w", &id_a, "-o", "json"],
    );
    assert_eq!(
        describe_a.str_at("/workflowExecutionInfo/execution/runId"),
        Some(run_a)
    );
    assert_eq!(
        describe_a.str_at("/workflowExecutionInfo/status"),
        Some("WORKFLOW_EXECUTION_STATUS_RUNNING")
    );
    let tag = describe_a
        .pointer("/workflowExecutionInfo/searchAttributes/indexedFields/StraitTag")
        .unwrap_or_else(|| panic!("no StraitTag in {describe_a}"));
    assert_eq!(payload_text(tag), "\"via-strait\"");
    same_json(
        &direct,
        &via,
        &["workflow", "describe", "-n", ns, "-w", &id_b, "-o", "json"],
    );

    wait_listed(
        &direct,
        ns,
        "WorkflowType='StraitCliWorkflow'",
        &[&id_a, &id_b],
    );
    same_json(&direct, &via, &["workflow", "list", "-n", ns, "-o", "json"]);
    wait_listed(&direct, ns, "StraitTag='via-strait'", &[&id_a]);
    let filtered = same_json(
        &direct,
        &via,
        &[
            "workflow",
            "list",
            "-n",
            ns,
            "--query",
            "StraitTag='via-strait'",
            "-o",
            "json",
        ],
    );
    assert_eq!(filtered.as_array().map(Vec::len), Some(1), "{filtered}");
    same_json(
        &direct,
        &via,
        &["workflow", "count", "-n", ns, "-o", "json"],
    );

    // Signal through Strait; the history, read direct, records it with its input.
    temporal_cli(
        &via,
        &[
            "workflow",
            "signal",
            "-n",
            ns,
            "-w",
            &id_a,
            "--name",
            "strait-signal",
            "--input",
            "\"ping via strait\"",
        ],
    )
    .ok();
    let show_a = same_json(
        &direct,
        &via,
        &["workflow", "show", "-n", ns, "-w", &id_a, "-o", "json"],
    );
    let signaled = find_event(&show_a, "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED");
    assert_eq!(
        signaled.str_at("/workflowExecutionSignaledEventAttributes/signalName"),
        Some("strait-signal")
    );
    let input = signaled
        .pointer("/workflowExecutionSignaledEventAttributes/input/payloads/0")
        .unwrap_or_else(|| panic!("signal without input: {signaled}"));
    assert_eq!(payload_text(input), "\"ping via strait\"");
    let start_input = find_event(&show_a, "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED")
        .pointer("/workflowExecutionStartedEventAttributes/input/payloads/0")
        .unwrap();
    assert_eq!(payload_text(start_input), "{\"tag\":\"via-strait\"}");

    // Terminate through Strait; direct, the run is terminated with our reason.
    temporal_cli(
        &via,
        &[
            "workflow",
            "terminate",
            "-n",
            ns,
            "-w",
            &id_a,
            "--reason",
            "strait e2e terminate",
        ],
    )
    .ok();
    let describe_a = temporal_cli(
        &direct,
        &["workflow", "describe", "-n", ns, "-w", &id_a, "-o", "json"],
    )
    .ok()
    .json();
    assert_eq!(
        describe_a.str_at("/workflowExecutionInfo/status"),
        Some("WORKFLOW_EXECUTION_STATUS_TERMINATED")
    );
    let show_a = same_json(
        &direct,
        &via,
        &["workflow", "show", "-n", ns, "-w", &id_a, "-o", "json"],
    );
    let terminated = find_event(&show_a, "EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED");
    assert_eq!(
        terminated.str_at("/workflowExecutionTerminatedEventAttributes/reason"),
        Some("strait e2e terminate")
    );
    same_json(
        &direct,
        &via,
        &["workflow", "describe", "-n", ns, "-w", &id_a, "-o", "json"],
    );
    wait_listed(&direct, ns, "ExecutionStatus='Running'", &[&id_b]);
    same_json(&direct, &via, &["workflow", "list", "-n", ns, "-o", "json"]);

    // Errors cross Strait intact too: status, message and exit code.
    same_failure(
        &direct,
        &via,
        &[
            "workflow",
            "describe",
            "-n",
            ns,
            "-w",
            "no-such-workflow",
            "-o",
            "json",
        ],
    );
    same_failure(
        &direct,
        &via,
        &[
            "operator",
            "namespace",
            "describe",
            "-n",
            "no-such-namespace",
            "-o",
            "json",
        ],
    );

    // Every call Strait saw went to the WorkflowService / OperatorService and
    // succeeded, except the two deliberate failures (NotFound).
    let calls = strait.calls();
    assert!(
        ok_calls(&calls, "StartWorkflowExecution") >= 1.0,
        "{calls:?}"
    );
    assert!(
        ok_calls(&calls, "SignalWorkflowExecution") >= 1.0,
        "{calls:?}"
    );
    assert!(
        ok_calls(&calls, "TerminateWorkflowExecution") >= 1.0,
        "{calls:?}"
    );
    let failed = failed_calls(&calls);
    assert!(
        failed.iter().all(|f| f.contains(" NOT_FOUND ")),
        "unexpected failed calls through Strait: {failed:?}"
    );
}

#[test]
fn idle_worker_long_poll_outlives_70s_through_strait() {
    // By default the server answers an idle poll after ~55 s. Raising the
    // matching service's hold time to 90 s makes every worker poll last until
    // just before the SDK's 70 s deadline, and the bare poll below (100 s
    // deadline) well past 70 s: a call that stays silent that long inside
    // Strait, across several HTTP/2 keepalive pings from the SDK.
    let server = DevServer::start(&DevServerOpts {
        dynamic_config: vec![(
            "matching.longPollExpirationInterval".to_owned(),
            "\"90s\"".to_owned(),
        )],
        ..Default::default()
    });
    let mut strait = Strait::start(&server.address());
    let task_queue = unique("idle-tq");

    let mut script = Interactive::python(
        "long_poll.py",
        &[
            "--address",
            &strait.address(),
            "--task-queue",
            &task_queue,
            "--duration",
            "80",
            "--raw-poll-timeout",
            "100",
            "--hold-before-shutdown",
        ],
    );
    // The script says when its polling time is over, then holds the worker
    // until told to stop: Strait's counts are read before shutdown cancels the
    // polls still in flight.
    let polled = script.next_line(Duration::from_secs(150));
    let polled = json::parse(&polled)
        .unwrap_or_else(|e| panic!("long_poll.py printed no JSON event ({e}): {polled}"));
    assert_eq!(polled.str_at("/event"), Some("polled"), "{polled}");
    let raw = polled
        .pointer("/raw_poll_s")
        .and_then(json::number)
        .unwrap();
    assert!(
        raw > 70.0,
        "the bare poll came back after {raw} s, not held past 70 s: {polled}"
    );
    assert!(strait.is_running(), "strait exited:\n{}", strait.log());

    let calls = strait.calls();
    let (workflow_polls, activity_polls) = (
        ok_calls(&calls, "PollWorkflowTaskQueue"),
        ok_calls(&calls, "PollActivityTaskQueue"),
    );
    // The worker's first polls of each kind came back (empty, OK) after ~69 s,
    // and so did the bare workflow-task poll.
    assert!(
        workflow_polls >= 2.0 && activity_polls >= 1.0,
        "too few completed OK polls in Strait's metrics: {calls:?}"
    );
    let failed = failed_calls(&calls);
    assert!(
        failed.is_empty(),
        "calls failed through Strait while idle: {failed:?}\n{calls:?}"
    );
    eprintln!("bare poll held {raw} s; calls while idle: {calls:?}");

    script.send_line("shutdown");
    let run = script.finish(Duration::from_secs(60)).ok();
    let out = json::parse(run.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("long_poll.py printed no JSON summary ({e}): {}", run.stdout));
    let total = out.pointer("/polled_s").and_then(json::number).unwrap();
    assert!(total >= 80.0, "worker polled for only {total} s: {out}");

    // Shutdown cancels the in-flight polls from the client side; nothing else failed.
    let failed: Vec<String> = failed_calls(&strait.calls())
        .into_iter()
        .filter(|f| !(f.starts_with("Poll") && f.contains(" CANCELLED ")))
        .collect();
    assert!(failed.is_empty(), "calls failed through Strait: {failed:?}");
}
