//! The two-cluster test bed itself (`tests/support/testbed.rs`): two patched Temporal dev servers,
//! `active` and `standby`, linked directly on 127.0.0.1, replicate a global namespace and a
//! workflow, fail over, and replicate a signal back. Once with both on Server 1.32.0, once mixed
//! (1.32.0 and 1.29.1). The unit tests of the binary patch run here too (they live in the module).
//!
//! Needs the test venvs: run `scripts/setup-test-env.sh` first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use strait_test_support::temporal::unique;
use strait_test_support::testbed::{Release, TwoClusters, TwoClustersOpts};

/// Upper bound for one whole scenario; the waits inside are bounded more tightly.
const SCENARIO_BUDGET: Duration = Duration::from_secs(180);

/// One scenario at a time: four servers at once are too much for a 2-core machine, and the
/// timings reported would mean nothing.
static SERIAL: Mutex<()> = Mutex::new(());

/// Start, link, replicate a namespace and a workflow, fail over, replicate a signal back.
/// Prints the time each step took.
fn round_trip(opts: TwoClustersOpts) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut step_start = Instant::now();
    let mut steps: Vec<(&str, Duration)> = Vec::new();
    let mut step = |name: &'static str| {
        steps.push((name, step_start.elapsed()));
        step_start = Instant::now();
    };

    let mut clusters = TwoClusters::start_unlinked(&opts);
    step("start both servers");
    assert_eq!(clusters.a.name(), "active");
    assert_eq!(clusters.b.name(), "standby");
    eprintln!(
        "A: {} (Server {}) at {}; B: {} (Server {}) at {}",
        clusters.a.name(),
        clusters.a.server_version,
        clusters.a.address(),
        clusters.b.name(),
        clusters.b.server_version,
        clusters.b.address()
    );
    clusters.link_direct();
    step("link both ways");

    let ns = unique("testbed");
    clusters.create_global_namespace(&ns);
    step("global namespace on A, replicated to B");
    clusters.wait_streams();
    step("replication streams up");

    let workflow_id = unique("wf");
    let run_id = clusters.start_workflow(&clusters.a, &ns, &workflow_id);
    assert!(!run_id.is_empty());
    clusters.wait_workflow_visible(&clusters.b, &ns, &workflow_id);
    step("workflow started on A, visible on B");

    clusters.failover(&ns, &clusters.b);
    step("failover to standby");

    let signal = "testbed-signal";
    clusters.signal(&clusters.b, &ns, &workflow_id, signal);
    clusters.wait_signal_in_history(&clusters.a, &ns, &workflow_id, signal);
    step("signal on B, in A's history");

    assert!(clusters.a.is_running(), "A exited during the test");
    assert!(clusters.b.is_running(), "B exited during the test");
    let total = started.elapsed();
    let report: Vec<String> = steps
        .iter()
        .map(|(name, d)| format!("  {name}: {:.1}s", d.as_secs_f64()))
        .collect();
    eprintln!(
        "two clusters, A on Server {}, B on Server {}: {:.1}s in all\n{}",
        clusters.a.server_version,
        clusters.b.server_version,
        total.as_secs_f64(),
        report.join("\n")
    );
    assert!(
        total < SCENARIO_BUDGET,
        "the scenario took {total:?}, over its budget of {SCENARIO_BUDGET:?}"
    );
}

#[test]
fn two_clusters_on_the_same_release_replicate_and_fail_over() {
    round_trip(TwoClustersOpts::default());
}

#[test]
fn mixed_releases_replicate_and_fail_over() {
    round_trip(TwoClustersOpts {
        active_release: Release::DEFAULT,
        standby_release: Release::OLD,
        ..TwoClustersOpts::default()
    });
}
