//! DRAFT, not yet included by any test crate: a TCP relay that cuts and restores a link, and
//! scenario (e) of the server-to-server issue (link cut mid-replication, nothing lost). In its first
//! run the workflows started during the outage did not reach B within 60 s after the restore; the
//! cause (Strait pool reconnect, Temporal stream retry backoff, or this relay) is still to be found.
//! To use: include it from tests/e2e_replication.rs and move the test function there.
#![allow(dead_code)]
use super::temporal::{free_port, unique, Strait};
use super::testbed::{TwoClusters, TwoClustersOpts};

/// A TCP relay that can cut every connection and refuse new ones, then come back on the same port.
struct FaultyRelay {
    port: u16,
    target: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FaultyRelay {
    fn start(target: std::net::SocketAddr) -> FaultyRelay {
        let relay = FaultyRelay {
            port: free_port(),
            target,
            up: Default::default(),
            generation: Default::default(),
        };
        relay.restore();
        relay
    }

    /// Cuts every relayed connection and stops listening.
    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it drops the listener.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }

    /// Listens again on the same port.
    fn restore(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = (0..200)
            .find_map(|_| {
                std::net::TcpListener::bind(("127.0.0.1", self.port))
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(25)))
                    .ok()
            })
            .expect("rebind the relay port");
        self.up.store(true, SeqCst);
        let (up, generation, target) = (self.up.clone(), self.generation.clone(), self.target);
        let mine = generation.load(SeqCst);
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if !up.load(SeqCst) || generation.load(SeqCst) != mine {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = std::net::TcpStream::connect(target) else { continue };
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    let generation = generation.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        use std::io::{Read, Write};
                        from.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
                        loop {
                            if generation.load(SeqCst) != mine {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
    }
}

/// Scenario (e): the link is cut mid-replication; every workflow started on A during the outage is
/// on B once the link is back — nothing lost.
// #[test] (draft)
fn nothing_is_lost_when_the_link_is_cut_mid_replication() {
    
    let clusters = TwoClusters::start_unlinked(&TwoClustersOpts::default());
    let (a, b) = (clusters.a.address(), clusters.b.address());
    let (remote_a, remote_b, listen_b) = (free_port(), free_port(), format!("127.0.0.1:{}", free_port()));
    // B's calls towards A (its replication stream included) cross the faulty relay.
    let relay = FaultyRelay::start(format!("127.0.0.1:{remote_a}").parse().unwrap());
    let relay_port = relay.port;
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
            [[cluster_connection]]
            name = "b-a"
            local = {{ listen = "{listen_b}", upstream = "{b}" }}
            remote = {{ mode = "tcp", listen = "127.0.0.1:{remote_b}", address = "127.0.0.1:{relay_port}" }}
            "#
        )
    });
    clusters.link(&strait.address(), &listen_b);
    let ns = unique("outage");
    clusters.create_global_namespace(&ns);
    clusters.wait_streams();
    let before = unique("before");
    clusters.start_workflow(&clusters.a, &ns, &before);
    clusters.wait_workflow_visible(&clusters.b, &ns, &before);

    relay.cut();
    let during: Vec<String> = (0..3).map(|i| unique(&format!("during-{i}"))).collect();
    for id in &during {
        clusters.start_workflow(&clusters.a, &ns, id);
    }
    relay.restore();
    for id in &during {
        clusters.wait_workflow_visible(&clusters.b, &ns, id);
    }
}
