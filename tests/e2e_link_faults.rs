//! Faults on a cluster link between two real Temporal clusters (the test bed of
//! tests/support/testbed.rs). Scenario (e): the mux link is cut mid-replication and nothing is lost.
//!
//! One Strait process hosts both link ends, as in tests/e2e_replication.rs, but the mux-client end
//! dials a fault-injecting relay (tests/support/fault_relay.rs) that forwards to the mux-server end,
//! so cutting the relay cuts every session, and with them calls both ways.
//!
//! What makes "nothing lost" hold: a Temporal sender keeps a position for its receiver only once it
//! has recorded one acknowledgement from it (receivers acknowledge once a second). A stream that
//! reconnects without that position starts from the newest task, and whatever was created while the
//! link was down is never sent. So the test cuts the link only after A has recorded B's
//! acknowledgement, as any link that has been up for more than a moment has.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use strait_test_support::fault_relay::FaultRelay;
use strait_test_support::temporal::{free_port, parse_metrics, unique, Strait};
use strait_test_support::testbed::{TwoClusters, TwoClustersOpts};

/// Four servers at once are too much for a 2-core machine: one scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long the link stays down: longer than the mux dialer's and the pools' first backoff steps,
/// so recovery goes through several failed redials.
const OUTAGE: Duration = Duration::from_secs(20);
/// Workflows started on A while the link is down.
const DURING: usize = 5;
/// Mux sessions the mux-client end keeps.
const SESSIONS: usize = 2;
/// How long the link ends may take to notice a cut.
const NOTICE: Duration = Duration::from_secs(10);

fn certs(name: &str) -> String {
    format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `name{link="..."}` from Strait's /metrics (0 when absent).
fn link_metric(strait: &Strait, name: &str, link: &str) -> f64 {
    parse_metrics(&strait.metrics())
        .iter()
        .filter(|s| s.name == name && s.label("link") == Some(link))
        .map(|s| s.value)
        .sum()
}

/// Polls until both link ends report `sessions` mux sessions up, for at most `timeout`.
fn wait_sessions(strait: &Strait, sessions: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let up = ["a-b", "b-a"].map(|link| link_metric(strait, "strait_mux_sessions", link));
        if up == [sessions; 2] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mux sessions up (a-b, b-a) = {up:?}, expected {sessions} each within {timeout:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nothing_is_lost_when_the_mux_link_is_cut_mid_replication() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let clusters = TwoClusters::start_unlinked(&TwoClustersOpts::default());
    let (a, b) = (clusters.a.address(), clusters.b.address());
    let (mux, listen_b) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let relay = FaultRelay::start(format!("127.0.0.1:{mux}").parse().unwrap());
    let relay_port = relay.port();
    let strait = Strait::start_config(|listen_a, admin| {
        format!(
            r#"
            [log]
            level = "info"
            [admin]
            listen = "{admin}"
            [[cluster_connection]]
            name = "a-b"
            local = {{ listen = "{listen_a}", upstream = "{a}" }}
            remote = {{ mode = "mux-client", address = "127.0.0.1:{relay_port}", sessions = {SESSIONS}, tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}", server_name = "localhost" }} }}
            [[cluster_connection]]
            name = "b-a"
            local = {{ listen = "{listen_b}", upstream = "{b}" }}
            remote = {{ mode = "mux-server", listen = "127.0.0.1:{mux}", tls = {{ cert = "{server}", key = "{server_key}", client_ca = "{ca}" }} }}
            "#,
            ca = certs("ca.pem"),
            cert = certs("client.pem"),
            key = certs("client-key.pem"),
            server = certs("server.pem"),
            server_key = certs("server-key.pem"),
        )
    });
    clusters.link(&strait.address(), &listen_b);
    let ns = unique("outage");
    clusters.create_global_namespace(&ns);
    clusters.wait_streams();
    // Replication is live: a workflow crosses, and B's stream has acknowledged it to A.
    let before = unique("before");
    clusters.start_workflow(&clusters.a, &ns, &before);
    clusters.wait_workflow_visible(&clusters.b, &ns, &before);
    clusters.wait_replication_acknowledged(&clusters.a, &clusters.b);
    wait_sessions(&strait, SESSIONS as f64, NOTICE);
    let established =
        ["a-b", "b-a"].map(|link| link_metric(&strait, "strait_mux_sessions_total", link));

    let cut_at = Instant::now();
    relay.cut();
    // Both link ends lose their sessions: the link is really down.
    wait_sessions(&strait, 0.0, NOTICE);
    let during: Vec<String> = (0..DURING)
        .map(|i| unique(&format!("during-{i}")))
        .collect();
    for id in &during {
        clusters.start_workflow(&clusters.a, &ns, id);
    }
    assert!(
        !clusters
            .b
            .cli(&["workflow", "describe", "-n", &ns, "-w", &during[0]])
            .success(),
        "{} reached B while the link was down",
        during[0]
    );
    // Keep the link down for the whole outage, checking that no session sneaks through.
    while cut_at.elapsed() < OUTAGE {
        wait_sessions(&strait, 0.0, Duration::ZERO);
        thread::sleep(Duration::from_millis(250));
    }
    relay.restore();
    let outage = cut_at.elapsed();
    let restored = Instant::now();

    for id in &during {
        clusters.wait_workflow_visible(&clusters.b, &ns, id);
    }
    let caught_up = restored.elapsed();
    // The sessions were re-established (counted again on both ends), not merely left alone.
    wait_sessions(&strait, SESSIONS as f64, NOTICE);
    let now = ["a-b", "b-a"].map(|link| link_metric(&strait, "strait_mux_sessions_total", link));
    for ((link, before), after) in ["a-b", "b-a"].iter().zip(established).zip(now) {
        assert!(
            after >= before + SESSIONS as f64,
            "{link}: {before} sessions established before the cut, {after} after the restore"
        );
    }
    eprintln!(
        "mux link cut for {:.1}s; {DURING} workflows started on A meanwhile were all on B \
         {:.1}s after the restore (sessions established a-b {:?} -> {:?}, b-a {:?} -> {:?})",
        outage.as_secs_f64(),
        caught_up.as_secs_f64(),
        established[0],
        now[0],
        established[1],
        now[1],
    );
}
