//! A fault-injecting TCP relay for link tests. It forwards every connection it accepts to one
//! target, byte for byte, and on request:
//!
//! * [`FaultRelay::cut`]: severs every relayed connection and stops listening, so redials are
//!   refused, as when a network link goes down;
//! * [`FaultRelay::restore`]: listens again on the same port;
//! * [`FaultRelay::sever`]: severs the connections open now and keeps accepting new ones.
//!
//! A severed connection is shut down both ways, so each end sees it end at once. The relay runs on
//! plain threads (two per connection), independent of any async runtime. Its threads never panic:
//! an I/O error ends the connection it concerns, nothing else.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a blocked relay thread looks at the relay's state: a sever takes effect within this.
const TICK: Duration = Duration::from_millis(20);
/// Bound on each of the relay's own waits (rebinding its port, dialing the target, draining).
const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Shared {
    /// Bumped to end the accept loop running now.
    listening: AtomicU64,
    /// Bumped to sever every connection open now.
    links: AtomicU64,
    /// Connections being relayed now.
    open: AtomicUsize,
    /// Connections relayed (target dialled) since the start.
    relayed: AtomicU64,
    /// Both sockets of every connection being relayed, by connection number, so that a sever
    /// shuts them down at once instead of waiting for the pumps to look.
    sockets: Mutex<HashMap<u64, [TcpStream; 2]>>,
}

impl Shared {
    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<u64, [TcpStream; 2]>> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct FaultRelay {
    port: u16,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl FaultRelay {
    /// Starts relaying a free 127.0.0.1 port to `target`.
    pub fn start(target: SocketAddr) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay on 127.0.0.1");
        let port = listener.local_addr().expect("relay address").port();
        let relay = FaultRelay {
            port,
            target,
            shared: Arc::default(),
            acceptor: Mutex::new(None),
        };
        relay.accept_on(listener);
        relay
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Connections being relayed now.
    pub fn open(&self) -> usize {
        self.shared.open.load(SeqCst)
    }

    /// Connections relayed since the start.
    pub fn relayed(&self) -> u64 {
        self.shared.relayed.load(SeqCst)
    }

    /// Cuts the link: stops listening (new connections are refused) and severs every connection.
    /// Returns once the port is closed and every relayed connection has ended.
    pub fn cut(&self) {
        self.stop_accepting();
        self.sever();
        let deadline = Instant::now() + WAIT;
        while self.open() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} relayed connections still open {WAIT:?} after the cut",
                self.open()
            );
            thread::sleep(TICK);
        }
    }

    /// Listens on the same port again (after [`cut`](Self::cut)).
    pub fn restore(&self) {
        let deadline = Instant::now() + WAIT;
        // The port was just released; retry briefly in case the kernel has not let go of it yet.
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(_) if Instant::now() < deadline => thread::sleep(TICK),
                Err(e) => panic!("rebind relay port {}: {e}", self.port),
            }
        };
        self.accept_on(listener);
    }

    /// Severs the connections open now; new ones are still accepted (and relayed).
    pub fn sever(&self) {
        self.shared.links.fetch_add(1, SeqCst);
        for [a, b] in self.shared.sockets().values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    fn accept_on(&self, listener: TcpListener) {
        let mut acceptor = self.acceptor.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(acceptor.is_none(), "the relay is already listening");
        let shared = Arc::clone(&self.shared);
        let epoch = shared.listening.load(SeqCst);
        let target = self.target;
        *acceptor = Some(thread::spawn(move || {
            for inbound in listener.incoming() {
                if shared.listening.load(SeqCst) != epoch {
                    return; // dropping the listener closes the port
                }
                let Ok(inbound) = inbound else {
                    // EMFILE and friends: try again shortly rather than spin.
                    thread::sleep(TICK);
                    continue;
                };
                // Counted (and its sever epoch taken) here, before `cut` can join this thread, so
                // that a cut never misses a connection that was being set up.
                let open = Open::new(&shared);
                let links = shared.links.load(SeqCst);
                thread::spawn(move || relay(inbound, target, open, links));
            }
        }));
    }

    fn stop_accepting(&self) {
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(acceptor) = acceptor else { return };
        self.shared.listening.fetch_add(1, SeqCst);
        // Wake the blocking accept so that the loop sees the new epoch and drops the listener.
        let _ = TcpStream::connect_timeout(&self.address(), WAIT);
        let _ = acceptor.join();
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.stop_accepting();
        self.sever();
    }
}

/// One connection in [`Shared::open`], from its accept to its end.
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: &Arc<Shared>) -> Open {
        shared.open.fetch_add(1, SeqCst);
        Open(Arc::clone(shared))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

/// Relays one accepted connection until either side ends it or the relay severs it (`epoch` is
/// the sever epoch it belongs to).
fn relay(inbound: TcpStream, target: SocketAddr, open: Open, epoch: u64) {
    let shared = &open.0;
    let Ok(outbound) = TcpStream::connect_timeout(&target, WAIT) else {
        return; // dropping `inbound` refuses the connection
    };
    let setup = (|| {
        for socket in [&inbound, &outbound] {
            socket.set_nodelay(true)?;
            socket.set_read_timeout(Some(TICK))?;
            socket.set_write_timeout(Some(TICK))?;
        }
        Ok::<_, std::io::Error>((
            inbound.try_clone()?,
            outbound.try_clone()?,
            [inbound.try_clone()?, outbound.try_clone()?],
        ))
    })();
    let Ok((inbound_writer, outbound_reader, sockets)) = setup else {
        return;
    };
    let id = shared.relayed.fetch_add(1, SeqCst);
    shared.sockets().insert(id, sockets);
    // Registered after a sever that came in the meantime? Then it missed this one.
    if shared.links.load(SeqCst) != epoch {
        let _ = inbound.shutdown(Shutdown::Both);
        let _ = outbound.shutdown(Shutdown::Both);
    }
    let back = {
        let shared = Arc::clone(shared);
        thread::spawn(move || pump(outbound_reader, inbound_writer, &shared, epoch))
    };
    pump(inbound, outbound, shared, epoch);
    let _ = back.join();
    shared.sockets().remove(&id);
}

/// Copies `from` to `to` until EOF (passed on as a half close), an error, or a sever.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, epoch: u64) {
    let severed = || shared.links.load(SeqCst) != epoch;
    let mut buf = [0u8; 16 * 1024];
    loop {
        if severed() {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if !forward(&mut to, &buf[..n], &severed) {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Writes all of `data`, still noticing a sever while the receiver is slow. False if it failed.
fn forward(to: &mut TcpStream, mut data: &[u8], severed: &impl Fn() -> bool) -> bool {
    while !data.is_empty() {
        if severed() {
            return false;
        }
        match to.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) => {}
            Err(_) => return false,
        }
    }
    true
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
