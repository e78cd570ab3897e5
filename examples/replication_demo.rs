//! Demo 2: two real Temporal clusters replicating through two Strait processes over a mux link with
//! mutual TLS. Run it with `scripts/demo-replication.sh`, which installs what it needs and builds
//! this example and Strait first.
//!
//! - Clusters: the two-cluster test bed of `tests/support/testbed.rs` (patched copies of the dev
//!   server: A = `active`, B = `standby`, global namespaces on).
//! - Strait A (`mux-client`) and Strait B (`mux-server`), each its own process, from the shipped
//!   `config/s2s-mux-a.toml` and `config/s2s-mux-b.toml`; their upstreams point at the clusters,
//!   and any shipped port that is busy moves to a free one (`tests/support/s2s.rs`).
//! - A global namespace is created on A; workflows started on A arrive on B; the namespace fails
//!   over to B; a signal sent on B replicates back to A; Strait's /metrics are summarised.
//!
//! Everything it starts is stopped when it ends, fails, or is interrupted. Options:
//! `--workflows N` (default 3), `--free-ports` (never use the shipped ports).
//!
//! This is harness code built on the test fixtures, which panic with the reason when a step fails
//! (their `Drop` stops every process), hence the lint allowance, as in the test and bench crates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strait_test_support::json::{JsonExt, Value};
use strait_test_support::s2s;
use strait_test_support::s2s::{metric_sum, Mode, StraitPair, StraitProc};
use strait_test_support::temporal;
use strait_test_support::testbed::{TwoClusters, TwoClustersOpts};

/// The whole demo's waits end by then (each wait is bounded more tightly, too).
const BUDGET: Duration = Duration::from_secs(300);
const NAMESPACE: &str = "orders";
const SIGNAL: &str = "approve";

fn step(what: &str) {
    println!("\n==> {what}");
}

/// Demo 2: two Temporal clusters replicating through two Strait processes (mux link, mutual TLS).
#[derive(clap::Parser)]
#[command(name = "replication_demo")]
struct Args {
    /// Workflows started on A
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    workflows: u64,
    /// Never use the shipped ports
    #[arg(long)]
    free_ports: bool,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    s2s::reap_children_on_signal();
    let workflows = args.workflows as usize;
    let prefer_shipped = !args.free_ports;
    let started = Instant::now();

    step("Starting two Temporal clusters (patched dev servers, in memory)");
    let clusters = TwoClusters::start_unlinked(&TwoClustersOpts {
        budget: BUDGET,
        ..TwoClustersOpts::default()
    });
    for (label, c) in [("A", &clusters.a), ("B", &clusters.b)] {
        println!(
            "cluster {label}: {:<8} failover version {}  Server {}  frontend {}",
            c.name(),
            c.identity.failover_version,
            c.server_version,
            c.address()
        );
    }

    step("Starting Strait B (mux-server) and Strait A (mux-client), mutual TLS");
    let pair = StraitPair::start(
        &s2s::strait_bin(),
        Mode::Mux,
        &clusters.a.address(),
        &clusters.b.address(),
        prefer_shipped,
        clusters.dir(),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let root = temporal::repo_root();
    for (label, p) in [("A", &pair.a), ("B", &pair.b)] {
        println!(
            "Strait {label}: pid {}, config {} (from {}), admin http://{}/metrics",
            p.pid(),
            p.config_path.display(),
            p.config
                .shipped
                .strip_prefix(&root)
                .unwrap_or(&p.config.shipped)
                .display(),
            p.config.admin
        );
    }
    if pair.config.changes.is_empty() {
        println!("configs as shipped");
    }
    for (from, to, why) in &pair.config.changes {
        println!("  {from} -> {to}  ({why})");
    }
    let sessions = metric_sum(
        &pair.a.metrics().unwrap_or_default(),
        "strait_mux_sessions",
        &[("link", &pair.config.a.link)],
    );
    println!("mux sessions up: {sessions} (A dials B at the mux port; B opens no connection to A)");

    step("Linking the clusters through Strait");
    let (b_for_a, a_for_b) = pair.link_addresses();
    clusters.link(&b_for_a, &a_for_b);
    println!(
        "cluster A knows cluster B at {b_for_a} (Strait A); B knows A at {a_for_b} (Strait B)"
    );

    step(&format!(
        "Creating global namespace {NAMESPACE:?} on A (active in A, replicated to B)"
    ));
    clusters.create_global_namespace(NAMESPACE);
    clusters.wait_streams();
    println!(
        "namespace on B: active cluster {:?}; replication streams up on both clusters",
        clusters.b.active_cluster_of(NAMESPACE).unwrap_or_default()
    );

    let ids: Vec<String> = (1..=workflows).map(|i| format!("order-{i}")).collect();
    step(&format!("Starting {workflows} workflows on A"));
    for id in &ids {
        let run_id = clusters.start_workflow(&clusters.a, NAMESPACE, id);
        println!("started {id} on A (run {run_id})");
    }

    step("They arrive on B (replicated through Strait)");
    let arrived = Instant::now();
    for id in &ids {
        clusters.wait_workflow_visible(&clusters.b, NAMESPACE, id);
    }
    println!(
        "all {workflows} describable on B after {:.1}s; B's workflow list:",
        arrived.elapsed().as_secs_f64()
    );
    let listing = clusters.wait("B lists every workflow", Duration::from_secs(30), || {
        let run = clusters.b.cli(&["workflow", "list", "-n", NAMESPACE]);
        match ids.iter().find(|id| !run.stdout.contains(id.as_str())) {
            None if run.success() => Ok(run.stdout),
            _ => Err(format!("not all listed yet: {}{}", run.stdout, run.stderr)),
        }
    });
    print!("{listing}");

    step(&format!("Failing {NAMESPACE:?} over to B"));
    clusters.failover(NAMESPACE, &clusters.b);
    for (label, c) in [("A", &clusters.a), ("B", &clusters.b)] {
        println!(
            "cluster {label} says {NAMESPACE:?} is active in {:?}",
            c.active_cluster_of(NAMESPACE).unwrap_or_default()
        );
    }

    let signalled = &ids[0];
    step(&format!(
        "Signalling {signalled} on B ({SIGNAL:?}); the signal replicates back to A"
    ));
    clusters.signal(&clusters.b, NAMESPACE, signalled, SIGNAL);
    clusters.wait_signal_in_history(&clusters.a, NAMESPACE, signalled, SIGNAL);
    let history = clusters.a.history(NAMESPACE, signalled).unwrap_or_default();
    for event in &history {
        if let Some(name) = event.str_at("/workflowExecutionSignaledEventAttributes/signalName") {
            println!(
                "A's history of {signalled}: event {} {} signal {name:?} at {}",
                field(event, "/eventId"),
                field(event, "/eventType"),
                field(event, "/eventTime"),
            );
        }
    }

    step("What Strait relayed (from each process's /metrics)");
    summarize(&pair.a, "A", "mux-client");
    summarize(&pair.b, "B", "mux-server");

    step(&format!(
        "Done in {:.0}s: stopping both Strait processes and both clusters",
        started.elapsed().as_secs_f64()
    ));
    drop(pair);
    drop(clusters);
}

/// Mux sessions and the calls per listener of one Strait process.
fn summarize(strait: &StraitProc, label: &str, role: &str) {
    let samples = match strait.metrics() {
        Ok(samples) => samples,
        Err(e) => {
            println!("Strait {label}: {e}");
            return;
        }
    };
    let link = strait.config.link.as_str();
    let up = metric_sum(&samples, "strait_mux_sessions", &[("link", link)]);
    let total = metric_sum(&samples, "strait_mux_sessions_total", &[("link", link)]);
    println!("Strait {label} ({role}, link {link:?}): mux sessions up {up}, established {total}");
    let direction = |listener: &str| {
        if listener.ends_with("-local") {
            format!("cluster {label} -> other cluster")
        } else {
            format!("other cluster -> cluster {label}")
        }
    };
    // listener -> (finished calls, in flight, method -> calls)
    let mut listeners: BTreeMap<String, (f64, f64, BTreeMap<String, f64>)> = BTreeMap::new();
    for s in &samples {
        let Some(listener) = s.label("listener") else {
            continue;
        };
        let entry = listeners.entry(listener.to_owned()).or_default();
        match s.name.as_str() {
            "strait_calls_total" => {
                entry.0 += s.value;
                // `temporal.server.api.adminservice.v1.AdminService` → `AdminService`.
                let service = s.label("service").unwrap_or("?");
                let service = service.rsplit('.').next().unwrap_or(service);
                let method = format!("{service}.{}", s.label("method").unwrap_or("?"));
                *entry.2.entry(method).or_default() += s.value;
            }
            "strait_calls_in_flight" => entry.1 += s.value,
            _ => {}
        }
    }
    for (listener, (calls, in_flight, methods)) in listeners {
        let mut top: Vec<(String, f64)> = methods.into_iter().collect();
        top.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        let top: Vec<String> = top
            .iter()
            .take(4)
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        println!(
            "  {listener:<12} ({}): {calls} calls finished, {in_flight} in flight (replication \
             streams stay open); most: {}",
            direction(&listener),
            top.join(", ")
        );
    }
}

/// A field of a JSON object as text, `?` if it is missing.
fn field(json: &Value, path: &str) -> String {
    match json.str_at(path) {
        Some(s) => s.to_owned(),
        None => json.pointer(path).map_or("?".into(), Value::to_string),
    }
}
