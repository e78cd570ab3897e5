//! End-to-end tests of name translation (`[listener.translate]`) against a real Temporal server, with
//! the real Python SDK and `temporal` CLI as clients.
//!
//! Strait runs with the shipped `config/translate.toml`, only its addresses replaced by free ports:
//! clients use namespace `orders` and search attribute `CustomerId`, the server knows them as
//! `orders-prod` and `OrderCustomer`. Clients see only client-side names (in answers, histories,
//! visibility and errors), while the server, asked directly, shows only server-side names.
//!
//! Needs the test venv: run `scripts/setup-test-env.sh` first. Each test starts its own dev server
//! and Strait on free 127.0.0.1 ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use strait_test_support::json::{self, payload_text, JsonExt, Value};
use strait_test_support::temporal::{
    parse_metrics, python, repo_root, temporal_cli, unique, DevServer, DevServerOpts, Run, Strait,
};

/// The names of `config/translate.toml`: (client side, server side).
const NAMESPACE: (&str, &str) = ("orders", "orders-prod");
const ATTRIBUTE: (&str, &str) = ("CustomerId", "OrderCustomer");

/// How long visibility may lag behind a change.
const VISIBILITY: Duration = Duration::from_secs(30);

/// `config/translate.toml` with its three addresses (admin, upstream, listener) replaced, the rest
/// (above all `[listener.translate]`) exactly as shipped.
fn translate_toml(upstream: &str, listen: SocketAddr, admin: SocketAddr) -> String {
    let path = repo_root().join("config").join("translate.toml");
    let mut text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (shipped, ours) in [
        ("127.0.0.1:9464", admin.to_string()),
        ("127.0.0.1:7233", upstream.to_owned()),
        ("127.0.0.1:7235", listen.to_string()),
    ] {
        let quoted = format!("\"{shipped}\"");
        assert_eq!(
            text.matches(&quoted).count(),
            1,
            "{} should name {quoted} exactly once:\n{text}",
            path.display()
        );
        text = text.replace(&quoted, &format!("\"{ours}\""));
    }
    text
}

fn start_strait(server: &DevServer) -> Strait {
    let upstream = server.address();
    Strait::start_config(|listen, admin| translate_toml(&upstream, listen, admin))
}

/// The server with `orders-prod` and `OrderCustomer=Keyword`.
fn start_server() -> DevServer {
    DevServer::start(&DevServerOpts {
        namespaces: vec![NAMESPACE.1.to_owned()],
        search_attributes: vec![(ATTRIBUTE.1.to_owned(), "Keyword".to_owned())],
        ..Default::default()
    })
}

/// What a client of Strait should see for what the server says: every string and object key that
/// is a server-side name replaced by its client-side name.
fn to_client_names(json: &Value) -> Value {
    let name = |s: &str| -> String {
        if s == NAMESPACE.1 {
            NAMESPACE.0.to_owned()
        } else if s == ATTRIBUTE.1 {
            ATTRIBUTE.0.to_owned()
        } else {
            s.to_owned()
        }
    };
    match json {
        Value::String(s) => Value::String(name(s)),
        Value::Array(a) => Value::Array(a.iter().map(to_client_names).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (name(k), to_client_names(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Fails the test if `text` (client-side output) names a server-side name.
fn assert_no_server_names(what: &str, text: &str) {
    for server_name in [NAMESPACE.1, ATTRIBUTE.1] {
        assert!(
            !text.contains(server_name),
            "{what} shows the server-side name {server_name:?} to a client:\n{text}"
        );
    }
}

/// Fails the test if `text` (the server's own output) names a client-side search attribute. (The
/// client-side namespace `orders` is a prefix of `orders-prod`, so it cannot be checked this way.)
fn assert_no_client_attribute(what: &str, text: &str) {
    assert!(
        !text.contains(ATTRIBUTE.0),
        "{what}: the server shows the client-side name {:?}:\n{text}",
        ATTRIBUTE.0
    );
}

fn cli_json(address: &str, args: &[&str]) -> (Run, Value) {
    let run = temporal_cli(address, args).ok();
    let json = run.json();
    (run, json)
}

fn find_event<'a>(show: &'a Value, event_type: &str) -> &'a Value {
    show.pointer("/events")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no events in {show}"))
        .iter()
        .find(|e| e.str_at("/eventType") == Some(event_type))
        .unwrap_or_else(|| panic!("no {event_type} in {show}"))
}

/// Polls (bounded) `workflow list --query` at `address` until it lists exactly `want` (ids) with
/// every run closed; returns the listing.
fn wait_listed_closed(address: &str, ns: &str, query: &str, want: &str) -> Value {
    let deadline = Instant::now() + VISIBILITY;
    loop {
        let (_, list) = cli_json(
            address,
            &["workflow", "list", "-n", ns, "--query", query, "-o", "json"],
        );
        let rows = list.as_array().map(Vec::as_slice).unwrap_or_default();
        let ids: Vec<&str> = rows
            .iter()
            .filter_map(|w| w.str_at("/execution/workflowId"))
            .collect();
        let closed = rows
            .iter()
            .all(|w| w.str_at("/status") == Some("WORKFLOW_EXECUTION_STATUS_COMPLETED"));
        if ids == [want] && closed {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{address}: visibility for {query:?} in {ns} never showed {want} closed; last: {list}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The strings of the array at `path`.
fn strings<'a>(json: &'a Value, path: &str) -> Vec<&'a str> {
    json.pointer(path)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no array at {path} in {json}"))
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

/// `strait_rewrite_fields_total` and `strait_relay_errors_total` of the `clients` listener.
fn rewrite_metrics(strait: &Strait) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let (mut fields, mut errors) = (BTreeMap::new(), BTreeMap::new());
    for s in parse_metrics(&strait.metrics()) {
        if s.label("listener") != Some("clients") {
            continue;
        }
        let into = match s.name.as_str() {
            "strait_rewrite_fields_total" => (&mut fields, "kind"),
            "strait_relay_errors_total" => (&mut errors, "reason"),
            _ => continue,
        };
        *into
            .0
            .entry(s.label(into.1).unwrap_or_default().to_owned())
            .or_default() += s.value;
    }
    (fields, errors)
}

/// Asserts the rewriter edited each of `kinds` and Strait failed no call itself.
fn assert_rewrites(strait: &Strait, kinds: &[&str]) {
    let (fields, errors) = rewrite_metrics(strait);
    for kind in kinds {
        assert!(
            fields.get(*kind).copied().unwrap_or(0.0) > 0.0,
            "no strait_rewrite_fields_total{{kind={kind:?}}} > 0: {fields:?}"
        );
    }
    let failed: Vec<_> = errors.iter().filter(|(_, n)| **n > 0.0).collect();
    assert!(
        failed.is_empty(),
        "Strait failed calls itself (strait_relay_errors_total): {failed:?}\n--- strait log\n{}",
        strait.log()
    );
}

/// Non-OK calls in Strait's metrics, as "Method CODE".
fn failed_calls(strait: &Strait) -> Vec<String> {
    strait
        .calls()
        .into_iter()
        .flat_map(|(method, codes)| {
            codes
                .into_iter()
                .filter(|(code, n)| code != "OK" && *n > 0.0)
                .map(move |(code, _)| format!("{method} {code}"))
        })
        .collect()
}

#[test]
fn sdk_and_cli_use_client_side_names_through_translate_toml() {
    let server = start_server();
    let strait = start_strait(&server);
    let (direct, via) = (server.address(), strait.address());
    let (ns, server_ns) = NAMESPACE;
    let (attr, server_attr) = ATTRIBUTE;
    let workflow_id = unique("order");
    let customer = unique("customer-start");
    let upserted = unique("customer-upserted");

    // --- The SDK, in client-side names only, through Strait.
    let run = python(
        "translate_sdk.py",
        &[
            "--address",
            &via,
            "--namespace",
            ns,
            "--task-queue",
            &unique("translate-tq"),
            "--workflow-id",
            &workflow_id,
            "--customer",
            &customer,
            "--upserted",
            &upserted,
            "--timeout",
            "90",
        ],
        Duration::from_secs(120),
    );
    let run = if run.success() {
        run
    } else {
        panic!(
            "translate_sdk.py failed ({})\n--- stdout\n{}\n--- stderr\n{}\n--- strait log\n{}",
            run.status,
            run.stdout,
            run.stderr,
            strait.log()
        )
    };
    let out = json::parse(run.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("translate_sdk.py printed no JSON ({e}): {}", run.stdout));
    assert_no_server_names("the SDK's observations", &run.stdout);
    let at = |path: &str| -> &str {
        out.str_at(path)
            .unwrap_or_else(|| panic!("no string at {path} in {out}"))
    };
    let run_id = at("/run_id").to_owned();

    // Visibility: the query on CustomerId finds the workflow, by its upserted value only.
    let visibility = out.pointer("/visibility").unwrap();
    assert!(
        visibility.pointer("/timed_out").is_none(),
        "list_workflows with {:?} never found {workflow_id}: {visibility}",
        visibility.str_at("/query")
    );
    assert_eq!(visibility.str_at("/typed_value"), Some(upserted.as_str()));
    assert!(
        strings(visibility, "/raw_keys").contains(&attr),
        "{visibility}"
    );
    assert_eq!(
        visibility.pointer("/count").and_then(json::number),
        Some(1.0),
        "{visibility}"
    );
    assert_eq!(
        out.pointer("/visibility_old_value_count")
            .and_then(json::number),
        Some(0.0),
        "{out}"
    );

    // Describe: the attribute under its client-side name, with the upserted value.
    assert_eq!(at("/describe/typed_value"), upserted);
    assert_eq!(at("/describe/status"), "RUNNING");
    for list in ["/describe/typed_names", "/describe/raw_keys"] {
        assert!(strings(&out, list).contains(&attr), "{list} in {out}");
    }

    // Values that come from the server: the activity task's workflow namespace, the child's parent
    // namespace (from the child's history), the namespace description and its alias map.
    assert_eq!(at("/result/activity/workflow_namespace"), ns);
    assert_eq!(at("/result/child/parent_namespace"), ns);
    assert_eq!(at("/result/attribute_at_start"), customer);
    assert_eq!(at("/result/attribute_at_end"), upserted);
    assert_eq!(at("/describe_namespace/name"), ns);
    let aliases = out.pointer("/describe_namespace/aliases").unwrap();
    assert!(
        matches!(aliases, Value::Object(m) if m.values().any(|v| *v == Value::String(attr.into()))),
        "the namespace's alias map does not name {attr}: {aliases}"
    );

    // History: the started and upsert events carry CustomerId; the child events name `orders`.
    assert_eq!(
        out.pointer("/history/started_keys")
            .map(ToString::to_string),
        Some(format!("[\"{attr}\"]"))
    );
    assert_eq!(at("/history/started_value"), customer);
    assert_eq!(
        out.pointer("/history/upsert_keys").map(ToString::to_string),
        Some(format!("[\"{attr}\"]"))
    );
    assert_eq!(at("/history/upsert_value"), upserted);
    assert_eq!(at("/history/child_initiated_namespace"), ns);
    assert_eq!(at("/history/child_completed_namespace"), ns);

    // Errors: starting the running workflow again; registering the namespace again.
    assert_eq!(
        at("/already_started/raised"),
        "WorkflowAlreadyStartedError",
        "{out}"
    );
    assert_eq!(at("/already_started/workflow_id"), workflow_id);
    assert_eq!(at("/already_started/run_id"), run_id);
    assert_eq!(at("/already_started/rpc_status"), "ALREADY_EXISTS");
    assert_eq!(at("/register_existing/status"), "ALREADY_EXISTS", "{out}");
    assert_eq!(
        at("/register_existing/message"),
        format!("Namespace \"{ns}\" already exists")
    );

    // --- The server, asked directly, has only server-side names.
    let describe_args = |n: &'static str| {
        [
            "workflow",
            "describe",
            "-n",
            n,
            "-w",
            workflow_id.as_str(),
            "-o",
            "json",
        ]
    };
    let (d_run, d_describe) = cli_json(&direct, &describe_args(server_ns));
    assert_no_client_attribute("direct describe", &d_run.stdout);
    assert_eq!(
        d_describe.str_at("/workflowExecutionInfo/execution/runId"),
        Some(run_id.as_str())
    );
    assert_eq!(
        d_describe.str_at("/workflowExecutionInfo/status"),
        Some("WORKFLOW_EXECUTION_STATUS_COMPLETED")
    );
    let indexed = d_describe
        .pointer(&format!(
            "/workflowExecutionInfo/searchAttributes/indexedFields/{server_attr}"
        ))
        .unwrap_or_else(|| panic!("no {server_attr} in the server's describe: {d_describe}"));
    assert_eq!(payload_text(indexed), format!("\"{upserted}\""));

    let show_args = |n: &'static str| {
        [
            "workflow",
            "show",
            "-n",
            n,
            "-w",
            workflow_id.as_str(),
            "-o",
            "json",
        ]
    };
    let (d_run, d_show) = cli_json(&direct, &show_args(server_ns));
    assert_no_client_attribute("direct show", &d_run.stdout);
    let upsert = find_event(&d_show, "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES");
    let value = upsert
        .pointer(&format!(
            "/upsertWorkflowSearchAttributesEventAttributes/searchAttributes/indexedFields/{server_attr}"
        ))
        .unwrap_or_else(|| panic!("no {server_attr} in the server's upsert event: {upsert}"));
    assert_eq!(payload_text(value), format!("\"{upserted}\""));
    let initiated = find_event(
        &d_show,
        "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED",
    );
    assert_eq!(
        initiated.str_at("/startChildWorkflowExecutionInitiatedEventAttributes/namespace"),
        Some(server_ns),
        "{initiated}"
    );

    let d_list = wait_listed_closed(
        &direct,
        server_ns,
        &format!("{server_attr} = '{upserted}'"),
        &workflow_id,
    );
    let (d_run, d_namespace) = cli_json(
        &direct,
        &[
            "operator",
            "namespace",
            "describe",
            "-n",
            server_ns,
            "-o",
            "json",
        ],
    );
    assert_no_client_attribute("direct namespace describe", &d_run.stdout);
    assert_eq!(d_namespace.str_at("/namespaceInfo/name"), Some(server_ns));
    let search_attribute_args = |n: &'static str| {
        [
            "operator",
            "search-attribute",
            "list",
            "-n",
            n,
            "-o",
            "json",
        ]
    };
    let (_, d_attributes) = cli_json(&direct, &search_attribute_args(server_ns));
    assert_eq!(
        d_attributes.str_at(&format!("/customAttributes/{server_attr}")),
        Some("INDEXED_VALUE_TYPE_KEYWORD")
    );

    // --- The CLI through Strait sees exactly what the server says, in client-side names.
    let via_same = |what: &str, args: &[&str], direct_json: &Value| -> Value {
        let (run, json) = cli_json(&via, args);
        assert_no_server_names(what, &run.stdout);
        assert_eq!(
            json,
            to_client_names(direct_json),
            "{what} through Strait is not the server's answer in client-side names\n--- direct\n{direct_json}\n--- strait\n{json}"
        );
        json
    };
    let describe = via_same("describe", &describe_args(ns), &d_describe);
    assert!(
        describe
            .pointer(&format!(
                "/workflowExecutionInfo/searchAttributes/indexedFields/{attr}"
            ))
            .is_some(),
        "{describe}"
    );
    let show = via_same("show", &show_args(ns), &d_show);
    find_event(&show, "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES")
        .pointer(&format!(
            "/upsertWorkflowSearchAttributesEventAttributes/searchAttributes/indexedFields/{attr}"
        ))
        .unwrap_or_else(|| panic!("no {attr} in the upsert event through Strait: {show}"));
    let client_query = format!("{attr} = '{upserted}'");
    let list = via_same(
        "list --query",
        &[
            "workflow",
            "list",
            "-n",
            ns,
            "--query",
            &client_query,
            "-o",
            "json",
        ],
        &d_list,
    );
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let count = via_same(
        "count --query",
        &[
            "workflow",
            "count",
            "-n",
            ns,
            "--query",
            &client_query,
            "-o",
            "json",
        ],
        &cli_json(
            &direct,
            &[
                "workflow",
                "count",
                "-n",
                server_ns,
                "--query",
                &format!("{server_attr} = '{upserted}'"),
                "-o",
                "json",
            ],
        )
        .1,
    );
    assert_eq!(count.pointer("/count").and_then(json::number), Some(1.0));
    let namespace = via_same(
        "namespace describe",
        &["operator", "namespace", "describe", "-n", ns, "-o", "json"],
        &d_namespace,
    );
    assert_eq!(namespace.str_at("/namespaceInfo/name"), Some(ns));
    let attributes = via_same(
        "search-attribute list",
        &search_attribute_args(ns),
        &d_attributes,
    );
    assert_eq!(
        attributes.str_at(&format!("/customAttributes/{attr}")),
        Some("INDEXED_VALUE_TYPE_KEYWORD")
    );

    // --- Errors through the CLI: a missing workflow, and a namespace that already exists.
    let missing = temporal_cli(
        &via,
        &["workflow", "describe", "-n", ns, "-w", &unique("missing")],
    );
    assert!(!missing.success(), "{}", missing.stdout);
    assert!(
        missing.stderr.contains("workflow not found"),
        "{}",
        missing.stderr
    );
    assert_no_server_names("a NotFound error", &missing.stderr);
    let exists_direct = temporal_cli(
        &direct,
        &["operator", "namespace", "create", "-n", server_ns],
    );
    assert!(
        exists_direct
            .stderr
            .contains(&format!("Namespace \"{server_ns}\" already exists")),
        "the server should name {server_ns}: {}",
        exists_direct.stderr
    );
    let exists = temporal_cli(&via, &["operator", "namespace", "create", "-n", ns]);
    assert!(
        exists
            .stderr
            .contains(&format!("Namespace \"{ns}\" already exists")),
        "an AlreadyExists error through Strait should name {ns}: {}",
        exists.stderr
    );
    assert_no_server_names("an AlreadyExists error", &exists.stderr);

    // --- Strait translated every kind of name and failed nothing itself.
    assert_rewrites(&strait, &["namespace", "search_attribute", "query"]);
    let mut failed = failed_calls(&strait);
    failed.retain(|f| {
        !matches!(
            f.as_str(),
            // Expected: the worker cancels its own long polls at shutdown; the errors above.
            "PollWorkflowTaskQueue CANCELLED"
                | "PollActivityTaskQueue CANCELLED"
                | "StartWorkflowExecution ALREADY_EXISTS"
                | "RegisterNamespace ALREADY_EXISTS"
                | "DescribeWorkflowExecution NOT_FOUND"
        )
    });
    assert!(
        failed.is_empty(),
        "unexpected failed calls through Strait: {failed:?}\n--- strait log\n{}",
        strait.log()
    );
}

#[test]
fn namespace_not_found_names_the_client_side_namespace() {
    // This server lacks `orders-prod`, so every call in `orders` fails with NamespaceNotFound.
    let server = DevServer::start(&DevServerOpts::default());
    let strait = start_strait(&server);
    let (direct, via) = (server.address(), strait.address());
    let (ns, server_ns) = NAMESPACE;

    let run = python(
        "translate_errors.py",
        &["--address", &via, "--namespace", ns, "--timeout", "30"],
        Duration::from_secs(60),
    )
    .ok();
    let out = json::parse(run.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("translate_errors.py printed no JSON ({e}): {}", run.stdout));
    assert_no_server_names("the SDK's errors", &run.stdout);
    let Some(Value::Object(calls)) = out.pointer("/calls") else {
        panic!("no calls in {out}");
    };
    assert_eq!(calls.len(), 4, "{out}");
    for (call, error) in calls {
        assert_eq!(
            error.str_at("/status"),
            Some("NOT_FOUND"),
            "{call}: {error}"
        );
        assert_eq!(
            error.str_at("/message"),
            Some(format!("Namespace {ns} is not found.").as_str()),
            "{call}: {error}"
        );
        // grpc-status-details-bin: NamespaceNotFoundFailure.namespace
        assert_eq!(
            error.str_at("/details/0/namespace"),
            Some(ns),
            "{call}: {error}"
        );
    }

    // The CLI: the server names `orders-prod`, Strait's clients see `orders`.
    let d = temporal_cli(
        &direct,
        &["workflow", "describe", "-n", server_ns, "-w", "any"],
    );
    assert!(
        d.stderr
            .contains(&format!("Namespace {server_ns} is not found")),
        "{}",
        d.stderr
    );
    for args in [
        &["workflow", "describe", "-n", ns, "-w", "any"][..],
        &["operator", "namespace", "describe", "-n", ns],
        &["workflow", "list", "-n", ns, "--query", "CustomerId = 'c1'"],
    ] {
        let s = temporal_cli(&via, args);
        assert!(!s.success(), "{}", s.stdout);
        assert!(
            s.stderr.contains(&format!("Namespace {ns} is not found")),
            "`temporal {}` through Strait: {}",
            args.join(" "),
            s.stderr
        );
        assert_no_server_names("a NamespaceNotFound error", &s.stderr);
    }
    assert_rewrites(&strait, &["namespace"]);
}

/// Search-attribute names inside error *texts* (`grpc-message`): the server's validation errors
/// name `OrderCustomer`, which a client of Strait should see as `CustomerId`.
#[test]
fn search_attribute_errors_name_the_client_side_attribute() {
    let server = start_server();
    let strait = start_strait(&server);
    let (direct, via) = (server.address(), strait.address());
    let (ns, server_ns) = NAMESPACE;
    let (attr, server_attr) = ATTRIBUTE;
    let cases = |a: &str, n: &str| -> Vec<Vec<String>> {
        let s = |v: &str| v.to_owned();
        vec![
            // A wrongly typed value in a start request.
            vec![
                s("workflow"),
                s("start"),
                s("-n"),
                s(n),
                s("--type"),
                s("T"),
                s("-t"),
                s("q"),
                s("-w"),
                unique("bad-value"),
                s("--search-attribute"),
                format!("{a}=123"),
            ],
            // A wrongly typed value and an unsupported operator in visibility queries.
            vec![
                s("workflow"),
                s("list"),
                s("-n"),
                s(n),
                s("--query"),
                format!("{a} = 123"),
            ],
            vec![
                s("workflow"),
                s("list"),
                s("-n"),
                s(n),
                s("--query"),
                format!("{a} LIKE 'x%'"),
            ],
        ]
    };
    let mut problems = Vec::new();
    for (d_args, s_args) in cases(server_attr, server_ns)
        .into_iter()
        .zip(cases(attr, ns))
    {
        let d_args: Vec<&str> = d_args.iter().map(String::as_str).collect();
        let s_args: Vec<&str> = s_args.iter().map(String::as_str).collect();
        let d = temporal_cli(&direct, &d_args);
        let s = temporal_cli(&via, &s_args);
        assert!(!d.success() && !s.success(), "{d:?}\n{s:?}");
        assert!(d.stderr.contains(server_attr), "{}", d.stderr);
        if s.stderr.contains(server_attr) || !s.stderr.contains(attr) {
            problems.push(format!(
                "`temporal {}` through Strait: {}",
                s_args.join(" "),
                s.stderr.trim()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "errors name the server-side search attribute:\n{}",
        problems.join("\n")
    );
}

/// The namespaces `temporal operator namespace list` prints at `address`: (name, id) pairs.
fn namespace_list(address: &str) -> Vec<(String, String)> {
    let (_, list) = cli_json(address, &["operator", "namespace", "list", "-o", "json"]);
    list.as_array()
        .unwrap_or_else(|| panic!("namespace list is no array: {list}"))
        .iter()
        .map(|n| {
            let at = |p: &str| n.str_at(p).unwrap_or_default().to_owned();
            (at("/namespaceInfo/name"), at("/namespaceInfo/id"))
        })
        .collect()
}

/// Fails unless `temporal <args>` at `address` fails naming `expected` in its error.
fn assert_refused(address: &str, args: &[&str], expected: &str) {
    let run = temporal_cli(address, args);
    assert!(
        !run.success(),
        "`temporal {}` should fail: {}",
        args.join(" "),
        run.stdout
    );
    assert!(
        run.stderr.contains(expected),
        "`temporal {}` should fail with {expected:?}: {}",
        args.join(" "),
        run.stderr
    );
}

/// Clients of a translating listener see one world: the server also has a namespace `orders` and
/// a search attribute `CustomerId` of its own, which no client of Strait can reach; and the
/// server-side names of the mapping (`orders-prod`, `OrderCustomer`) are unknown to them. With
/// `expose_upstream_names = true`, both names work, as before.
#[test]
fn clients_see_only_client_side_names_unless_upstream_names_are_exposed() {
    let (ns, server_ns) = NAMESPACE;
    let (attr, server_attr) = ATTRIBUTE;
    let server = DevServer::start(&DevServerOpts {
        namespaces: vec![server_ns.to_owned(), ns.to_owned()],
        search_attributes: vec![
            (server_attr.to_owned(), "Keyword".to_owned()),
            // Colliding with the client-side name, as a different type to tell them apart.
            (attr.to_owned(), "Int".to_owned()),
        ],
        ..Default::default()
    });
    let strait = start_strait(&server);
    let upstream = server.address();
    let exposed = Strait::start_config(|listen, admin| {
        // The shipped config ends with its `[listener.translate]`.
        translate_toml(&upstream, listen, admin) + "\nexpose_upstream_names = true\n"
    });
    let (direct, via, via_exposed) = (server.address(), strait.address(), exposed.address());

    let direct_list = namespace_list(&direct);
    let id_of = |name: &str| {
        direct_list
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("the server lists no {name}: {direct_list:?}"))
    };
    let (prod_id, other_id) = (id_of(server_ns), id_of(ns));

    // --- The server-side names are unknown through Strait, with Temporal's own errors.
    let not_found = format!("Namespace {server_ns} is not found");
    assert_refused(
        &via,
        &["operator", "namespace", "describe", "-n", server_ns],
        &not_found,
    );
    assert_refused(
        &via,
        &["workflow", "describe", "-n", server_ns, "-w", "any"],
        &not_found,
    );
    assert_refused(
        &via,
        &[
            "workflow",
            "list",
            "-n",
            ns,
            "--query",
            &format!("{server_attr} = 'c-1'"),
        ],
        &format!("invalid search attribute: {server_attr}"),
    );
    assert_refused(
        &via,
        &[
            "workflow",
            "start",
            "-n",
            ns,
            "--type",
            "T",
            "-t",
            "q",
            "-w",
            &unique("refused"),
            "--search-attribute",
            &format!("{server_attr}=\"c-1\""),
        ],
        &format!("no mapping defined for search attribute {server_attr}"),
    );
    // The client-side names work.
    temporal_cli(
        &via,
        &[
            "workflow",
            "list",
            "-n",
            ns,
            "--query",
            &format!("{attr} = 'c-1'"),
        ],
    )
    .ok();

    // --- ListNamespaces: `orders` once, and it is the mapped namespace.
    let listed = namespace_list(&via);
    let orders: Vec<&(String, String)> = listed.iter().filter(|(n, _)| n == ns).collect();
    assert_eq!(orders, [&(ns.to_owned(), prod_id.clone())], "{listed:?}");
    assert!(
        !listed
            .iter()
            .any(|(n, id)| n == server_ns || *id == other_id),
        "{listed:?}"
    );
    assert!(listed.iter().any(|(n, _)| n == "default"), "{listed:?}");

    // --- Search attributes: `CustomerId` once, the mapped Keyword; the alias map likewise.
    let (_, attributes) = cli_json(
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
    let Some(Value::Object(custom)) = attributes.pointer("/customAttributes") else {
        panic!("no customAttributes in {attributes}");
    };
    assert_eq!(
        custom.get(attr),
        Some(&Value::String("INDEXED_VALUE_TYPE_KEYWORD".into())),
        "{attributes}"
    );
    assert!(!custom.contains_key(server_attr), "{attributes}");
    let (_, described) = cli_json(
        &via,
        &["operator", "namespace", "describe", "-n", ns, "-o", "json"],
    );
    assert_eq!(
        described.str_at("/namespaceInfo/id"),
        Some(prod_id.as_str())
    );
    let Some(Value::Object(aliases)) = described.pointer("/config/customSearchAttributeAliases")
    else {
        panic!("no alias map in {described}");
    };
    let aliases: Vec<&Value> = aliases.values().collect();
    assert_eq!(aliases, [&Value::String(attr.into())], "{described}");

    // Refusals are Strait's answers, not failures of Strait.
    let (_, errors) = rewrite_metrics(&strait);
    assert!(
        errors.values().all(|n| *n == 0.0),
        "strait_relay_errors_total: {errors:?}\n--- strait log\n{}",
        strait.log()
    );

    // --- Exposed: the server-side names reach the server-side namespace, as before.
    let (_, described) = cli_json(
        &via_exposed,
        &[
            "operator",
            "namespace",
            "describe",
            "-n",
            server_ns,
            "-o",
            "json",
        ],
    );
    assert_eq!(
        described.str_at("/namespaceInfo/id"),
        Some(prod_id.as_str())
    );
    assert_eq!(described.str_at("/namespaceInfo/name"), Some(ns));
    temporal_cli(
        &via_exposed,
        &[
            "workflow",
            "list",
            "-n",
            ns,
            "--query",
            &format!("{server_attr} = 'c-1'"),
        ],
    )
    .ok();
    let listed = namespace_list(&via_exposed);
    let mut orders: Vec<&str> = listed
        .iter()
        .filter(|(n, _)| n == ns)
        .map(|(_, id)| id.as_str())
        .collect();
    orders.sort();
    let mut expected = [prod_id.as_str(), other_id.as_str()];
    expected.sort();
    assert_eq!(orders, expected, "{listed:?}");
}
