//! Memory benchmark: what idle client connections and open streams cost each
//! proxy, and whether the memory comes back.
//!
//! Run: `cargo bench --bench memory` (options after `--`; `--help` lists
//! them); `scripts/bench-peers.sh` installs the peers and runs it. Results
//! are printed as Markdown and written to `target/bench-memory.md`.
//!
//! The proxies are those of the relay bench (`relay/peers.rs`: same
//! generated configurations, one worker thread each) in front of the same
//! echo backend (`relay/echo.rs`). For each proxy, a fresh process:
//!
//! 1. **baseline**: `VmRSS` once it relays (one probe call) and is idle;
//! 2. **idle connections**: `--connections` (10,000) client HTTP/2
//!    connections, each with its handshake done and a PING answered (so the
//!    proxy has read the client's preface and SETTINGS and sent its own);
//!    `VmRSS` once the proxy is idle again; every connection is PINGed again
//!    afterwards and must answer. Cost per connection = (RSS − baseline) / N;
//! 3. the connections are closed; `VmRSS` once the proxy has closed its ends
//!    (its fd count is back near the baseline);
//! 4. **open streams**: `--streams` (1,000) bidi streams over
//!    `--stream-connections` (10) connections, each having sent one 100 B
//!    message and received its echo, then left open. Cost per stream = (RSS
//!    with the streams − RSS with only those connections) / streams. Then
//!    every stream is half-closed and must end with `grpc-status: 0`, and the
//!    connections are closed;
//! 5. **round 2**: the idle connections again, then closed: RSS must not
//!    grow much beyond round 1 (it would if something per connection were
//!    never freed).
//!
//! "Idle" is a real condition: the proxy's CPU time did not move for 200 ms
//! (bounded by a few seconds). The load generator needs one fd per
//! connection and the proxy one or two: the open-files limit must exceed
//! `--connections` (the bench checks; `scripts/bench-peers.sh` raises it as
//! far as the hard limit allows).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "support/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "relay/echo.rs"]
mod echo;
#[allow(dead_code)]
#[path = "relay/h2cfg.rs"]
mod h2cfg;
#[allow(dead_code)]
#[path = "relay/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "relay/peers.rs"]
mod peers;
#[allow(dead_code)]
#[path = "relay/procstat.rs"]
mod procstat;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::{Ping, PingPong};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch, Semaphore};

use peers::{Binaries, Peer, ProxyProcess};

const USAGE: &str = "\
memory bench: cargo bench --bench memory -- [OPTIONS]

  --rows A,B,...         proxies to measure (default strait,nginx,haproxy,envoy;
                         strait-translate is also known)
  --connections N        idle client connections per round (default 10000)
  --streams N            concurrently open bidi streams (default 1000)
  --stream-connections K connections carrying the streams (default 10)
  --open-parallelism P   connections being opened at once (default 64)
  --client-threads N     load generator tokio workers (default 2)
  --strait-threads N     Strait [runtime] worker_threads (default 1)
  --strait PATH, --nginx PATH, --haproxy PATH, --envoy PATH
                         proxy binaries (as in the relay bench)
  --out PATH             Markdown output (default target/bench-memory.md)
Unknown --flags (such as cargo's --bench) are ignored.
";

/// How long to wait for connections to open, answer, or close.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bounds of the wait for a quiet (idle) proxy.
const QUIET_FOR: Duration = Duration::from_millis(200);
const QUIET_TIMEOUT: Duration = Duration::from_secs(10);
/// Message size on the open streams.
const STREAM_MSG: usize = 100;

struct Opts {
    rows: Vec<Peer>,
    connections: usize,
    streams: usize,
    stream_connections: usize,
    open_parallelism: usize,
    client_threads: usize,
    strait_threads: usize,
    strait: PathBuf,
    nginx: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    envoy: Option<PathBuf>,
    out: PathBuf,
}

impl Opts {
    fn parse() -> Self {
        let mut opts = Opts {
            rows: vec![Peer::Strait, Peer::Nginx, Peer::Haproxy, Peer::Envoy],
            connections: 10_000,
            streams: 1_000,
            stream_connections: 10,
            open_parallelism: 64,
            client_threads: 2,
            strait_threads: 1,
            strait: PathBuf::from(env!("CARGO_BIN_EXE_strait")),
            nginx: None,
            haproxy: None,
            envoy: None,
            out: common::target_dir().join("bench-memory.md"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |what: &str| -> String {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .unwrap_or_else(|| panic!("{what} needs a value\n{USAGE}"))
            };
            fn num(flag: &str, v: String) -> usize {
                v.parse::<usize>()
                    .unwrap_or_else(|_| panic!("{flag}: invalid value {v:?}\n{USAGE}"))
                    .max(1)
            }
            match flag.as_str() {
                "--rows" => {
                    opts.rows = value(&flag)
                        .split(',')
                        .filter(|r| !r.trim().is_empty())
                        .map(|r| {
                            Peer::parse(r.trim())
                                .unwrap_or_else(|| panic!("--rows: unknown row {r:?}\n{USAGE}"))
                        })
                        .collect()
                }
                "--connections" => opts.connections = num(&flag, value(&flag)),
                "--streams" => opts.streams = num(&flag, value(&flag)),
                "--stream-connections" => opts.stream_connections = num(&flag, value(&flag)),
                "--open-parallelism" => opts.open_parallelism = num(&flag, value(&flag)),
                "--client-threads" => opts.client_threads = num(&flag, value(&flag)),
                "--strait-threads" => opts.strait_threads = num(&flag, value(&flag)),
                "--strait" => opts.strait = PathBuf::from(value(&flag)),
                "--nginx" => opts.nginx = Some(PathBuf::from(value(&flag))),
                "--haproxy" => opts.haproxy = Some(PathBuf::from(value(&flag))),
                "--envoy" => opts.envoy = Some(PathBuf::from(value(&flag))),
                "--out" => opts.out = PathBuf::from(value(&flag)),
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                _ => {} // e.g. cargo's `--bench`
            }
        }
        opts
    }
}

/// What the connection tasks are told to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    Hold,
    /// PING again (the number makes each check a new value).
    Check(u32),
    Close,
}

/// N idle client connections, each owned by a task that answers [`Cmd`]s.
struct IdleConnections {
    cmd: watch::Sender<Cmd>,
    reports: mpsc::UnboundedReceiver<Result<(), String>>,
    tasks: tokio::task::JoinSet<()>,
    n: usize,
}

impl IdleConnections {
    /// Opens `n` connections, at most `parallel` handshakes at once; waits
    /// until each has reported (handshake + PING answered) or failed.
    async fn open(target: SocketAddr, n: usize, parallel: usize) -> (Self, Tally) {
        let (cmd, cmd_rx) = watch::channel(Cmd::Hold);
        let (report_tx, reports) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(parallel));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let cmd_rx = cmd_rx.clone();
            let report = report_tx.clone();
            let permits = permits.clone();
            tasks.spawn(idle_connection(target, cmd_rx, report, permits));
        }
        let mut conns = Self {
            cmd,
            reports,
            tasks,
            n,
        };
        let tally = conns.collect().await;
        (conns, tally)
    }

    /// Waits for one report per connection (bounded by [`PHASE_TIMEOUT`]).
    async fn collect(&mut self) -> Tally {
        let mut tally = Tally::default();
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        while tally.ok + tally.failed < self.n {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(Ok(()))) => tally.ok += 1,
                Ok(Some(Err(e))) => tally.fail(e),
                Ok(None) => break,
                Err(_) => {
                    tally.failed += self.n - tally.ok - tally.failed;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("no answer within {PHASE_TIMEOUT:?}"));
                    break;
                }
            }
        }
        tally
    }

    /// PINGs every connection again.
    async fn check(&mut self, round: u32) -> Tally {
        let _ = self.cmd.send(Cmd::Check(round));
        self.collect().await
    }

    /// Closes every connection and waits for the tasks to end.
    async fn close(mut self) {
        let _ = self.cmd.send(Cmd::Close);
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await {}
        self.tasks.abort_all();
    }
}

#[derive(Default, Clone, Debug)]
struct Tally {
    ok: usize,
    failed: usize,
    first_error: Option<String>,
}

impl Tally {
    fn fail(&mut self, e: String) {
        self.failed += 1;
        self.first_error.get_or_insert(e);
    }
}

async fn ping(pp: &mut PingPong) -> Result<(), String> {
    pp.ping(Ping::opaque())
        .await
        .map(|_pong| ())
        .map_err(|e| format!("ping: {e}"))
}

async fn idle_connection(
    target: SocketAddr,
    mut cmd: watch::Receiver<Cmd>,
    report: mpsc::UnboundedSender<Result<(), String>>,
    permits: Arc<Semaphore>,
) {
    let opened = async {
        let _permit = permits.acquire().await.map_err(|e| e.to_string())?;
        let sock = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(h2cfg::STREAM_WINDOW)
            .initial_connection_window_size(h2cfg::CONNECTION_WINDOW)
            .max_frame_size(h2cfg::MAX_FRAME_SIZE);
        let (sender, mut conn) = builder
            .handshake::<_, Bytes>(sock)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        let mut pp = conn.ping_pong().ok_or("no ping_pong")?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let answered = tokio::time::timeout(Duration::from_secs(30), ping(&mut pp))
            .await
            .map_err(|_| "no PING answer within 30 s".to_string())
            .and_then(|r| r);
        match answered {
            Ok(()) => Ok((sender, pp, driver)),
            Err(e) => {
                driver.abort();
                Err(e)
            }
        }
    }
    .await;
    let (sender, mut pp, driver) = match opened {
        Ok(parts) => {
            let _ = report.send(Ok(()));
            parts
        }
        Err(e) => {
            let _ = report.send(Err(e));
            return;
        }
    };
    while cmd.changed().await.is_ok() {
        let current = *cmd.borrow_and_update();
        match current {
            Cmd::Hold => {}
            Cmd::Check(_) => {
                let r = tokio::time::timeout(Duration::from_secs(30), ping(&mut pp))
                    .await
                    .map_err(|_| "no PING answer within 30 s".to_string())
                    .and_then(|r| r);
                let _ = report.send(r);
            }
            Cmd::Close => break,
        }
    }
    drop(sender);
    drop(pp);
    driver.abort();
}

/// `streams` open bidi streams over `conns` connections.
struct OpenStreams {
    target: SocketAddr,
    conns: Vec<(h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>)>,
    streams: Vec<(h2::SendStream<Bytes>, h2::RecvStream)>,
}

impl OpenStreams {
    async fn connect(target: SocketAddr, conns: usize) -> Result<Self, String> {
        let mut out = Self {
            target,
            conns: Vec::new(),
            streams: Vec::new(),
        };
        for _ in 0..conns {
            out.conns.push(load::connect(target).await?);
        }
        Ok(out)
    }

    /// Opens `n` streams round-robin over the connections; each sends one
    /// message and receives its echo. Returns the failures.
    async fn open(&mut self, n: usize) -> Tally {
        let uri = match load::method_uri(self.target, load::Kind::Bidi) {
            Ok(u) => u,
            Err(e) => {
                let mut t = Tally::default();
                t.fail(e);
                return t;
            }
        };
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let mut sender = self.conns[i % self.conns.len()].0.clone();
            let uri = uri.clone();
            set.spawn(async move {
                let msg = load::grpc_message(STREAM_MSG, i, 0);
                let (response, mut tx) = load::open_stream(&mut sender, &uri).await?;
                tx.send_data(msg.clone(), false)
                    .map_err(|e| format!("send_data: {e}"))?;
                let resp = response.await.map_err(|e| format!("response: {e}"))?;
                load::check_head(&resp)?;
                let mut body = resp.into_body();
                load::recv_echo(&mut body, &msg).await?;
                Ok::<_, String>((tx, body))
            });
        }
        let mut tally = Tally::default();
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(Ok(Ok(stream)))) => {
                    tally.ok += 1;
                    self.streams.push(stream);
                }
                Ok(Some(Ok(Err(e)))) => tally.fail(e),
                Ok(Some(Err(e))) => tally.fail(format!("stream task: {e}")),
                Ok(None) => break,
                Err(_) => {
                    let left = n - tally.ok - tally.failed;
                    tally.failed += left;
                    tally.first_error.get_or_insert_with(|| {
                        format!("{left} stream(s) not echoed within {PHASE_TIMEOUT:?}")
                    });
                    set.abort_all();
                    break;
                }
            }
        }
        tally
    }

    /// Half-closes every stream; each must end with `grpc-status: 0`.
    async fn finish(mut self) -> Tally {
        let mut set = tokio::task::JoinSet::new();
        for (mut tx, mut body) in self.streams.drain(..) {
            set.spawn(async move {
                tx.send_data(Bytes::new(), true)
                    .map_err(|e| format!("half-close: {e}"))?;
                load::recv_end(&mut body).await
            });
        }
        let mut tally = Tally::default();
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(Ok(Ok(())))) => tally.ok += 1,
                Ok(Some(Ok(Err(e)))) => tally.fail(e),
                Ok(Some(Err(e))) => tally.fail(format!("stream task: {e}")),
                Ok(None) => break,
                Err(_) => {
                    tally.fail(format!("streams not ended within {PHASE_TIMEOUT:?}"));
                    set.abort_all();
                    break;
                }
            }
        }
        for (sender, driver) in self.conns.drain(..) {
            drop(sender);
            driver.abort();
        }
        tally
    }
}

/// One proxy's results. RSS values in KiB.
#[derive(Default)]
struct RowResult {
    baseline: Option<u64>,
    conns1: Option<u64>,
    conns1_closed: Option<u64>,
    stream_conns: Option<u64>,
    streams: Option<u64>,
    streams_closed: Option<u64>,
    conns2: Option<u64>,
    conns2_closed: Option<u64>,
    hwm: Option<u64>,
    /// Proxy fds with the idle connections open / after closing them.
    fds_open: Option<usize>,
    fds_closed: Option<usize>,
    failures: Vec<String>,
}

struct Bench {
    opts: Opts,
    rt: Runtime,
    echo: echo::EchoProcess,
    bins: Binaries,
    settings: peers::Settings,
    work_dir: PathBuf,
}

impl Bench {
    fn rss(&self, pid: u32) -> Option<u64> {
        procstat::status_kib(pid, "VmRSS")
    }

    /// Waits until the proxy's CPU time stays put for [`QUIET_FOR`] (at most
    /// [`QUIET_TIMEOUT`]), then reads its RSS.
    fn quiet_rss(&self, pid: u32) -> Option<u64> {
        let deadline = Instant::now() + QUIET_TIMEOUT;
        let mut last = procstat::cpu_ticks(pid);
        while Instant::now() < deadline {
            std::thread::sleep(QUIET_FOR);
            let now = procstat::cpu_ticks(pid);
            if now == last {
                break;
            }
            last = now;
        }
        self.rss(pid)
    }

    /// Waits (bounded) until the proxy holds at most `fds` descriptors.
    fn wait_fds_at_most(&self, pid: u32, fds: usize) -> Option<usize> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            let n = procstat::fd_count(pid);
            if n.is_none_or(|n| n <= fds) || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run(&self, peer: Peer) -> Result<RowResult, String> {
        let bin = self.bins.get(peer).ok_or("not installed")?;
        let proxy = ProxyProcess::start(
            &self.rt,
            peer,
            bin,
            &self.work_dir,
            "memory",
            self.echo.addr,
            &self.settings,
        )?;
        let pid = proxy.pid();
        let target = proxy.listen;
        let n = self.opts.connections;
        let mut r = RowResult {
            baseline: self.quiet_rss(pid),
            ..RowResult::default()
        };
        let base_fds = procstat::fd_count(pid).unwrap_or(0);
        // Slack for upstream connections a proxy keeps (nginx's keepalive
        // cache, Envoy's pool) and listeners it opens lazily.
        let closed_fds = base_fds + 64;

        for round in 1..=2 {
            eprintln!("memory bench: {} round {round}: {n} idle connections ...", peer.name());
            let started = Instant::now();
            let (mut conns, opened) =
                self.rt
                    .block_on(IdleConnections::open(target, n, self.opts.open_parallelism));
            eprintln!(
                "  opened {} ({} failed) in {:.1} s",
                opened.ok,
                opened.failed,
                started.elapsed().as_secs_f64()
            );
            if opened.failed > 0 {
                r.failures.push(format!(
                    "round {round}: {} of {n} connections failed to open: {}",
                    opened.failed,
                    opened.first_error.clone().unwrap_or_default()
                ));
            }
            let rss = self.quiet_rss(pid);
            if round == 1 {
                r.conns1 = rss;
                r.fds_open = procstat::fd_count(pid);
            } else {
                r.conns2 = rss;
            }
            let checked = self.rt.block_on(conns.check(round));
            if checked.failed > 0 {
                r.failures.push(format!(
                    "round {round}: {} of {} open connections did not answer a PING after the \
                     RSS reading: {}",
                    checked.failed,
                    opened.ok,
                    checked.first_error.unwrap_or_default()
                ));
            }
            self.rt.block_on(conns.close());
            let fds = self.wait_fds_at_most(pid, closed_fds);
            let rss = self.quiet_rss(pid);
            if round == 1 {
                r.conns1_closed = rss;
                r.fds_closed = fds;
            } else {
                r.conns2_closed = rss;
            }
            if round == 2 {
                break;
            }

            eprintln!(
                "memory bench: {}: {} streams over {} connections ...",
                peer.name(),
                self.opts.streams,
                self.opts.stream_connections
            );
            let mut streams = self
                .rt
                .block_on(OpenStreams::connect(target, self.opts.stream_connections))?;
            r.stream_conns = self.quiet_rss(pid);
            let opened = self.rt.block_on(streams.open(self.opts.streams));
            if opened.failed > 0 {
                r.failures.push(format!(
                    "{} of {} streams failed: {}",
                    opened.failed,
                    self.opts.streams,
                    opened.first_error.clone().unwrap_or_default()
                ));
            }
            r.streams = self.quiet_rss(pid);
            let ended = self.rt.block_on(streams.finish());
            if ended.failed > 0 {
                r.failures.push(format!(
                    "{} of {} streams did not end cleanly: {}",
                    ended.failed,
                    opened.ok,
                    ended.first_error.unwrap_or_default()
                ));
            }
            self.wait_fds_at_most(pid, closed_fds);
            r.streams_closed = self.quiet_rss(pid);
        }
        r.hwm = procstat::status_kib(pid, "VmHWM");
        drop(proxy);
        Ok(r)
    }
}

fn main() {
    if std::env::var(echo::ROLE_ENV).as_deref() == Ok("echo") {
        echo::child_main();
        return;
    }
    let opts = Opts::parse();
    let target = common::target_dir();
    let work_dir = target.join("bench-memory");
    std::fs::create_dir_all(&work_dir).expect("creating target/bench-memory");
    let limit = procstat::open_files_limit().unwrap_or(0);
    let need = opts.connections as u64 + 512;
    if limit < need {
        eprintln!(
            "memory bench: the open-files limit is {limit}, {need} are needed for {} \
             connections: raise it (`ulimit -n {need}`, as scripts/bench-peers.sh does) or \
             pass a smaller --connections",
            opts.connections
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads)
        .thread_name("memclient")
        .enable_all()
        .build()
        .expect("client runtime");
    // Enough echo threads that 1,000 streams' first messages are answered
    // promptly; the backend's memory is not measured.
    let echo = echo::EchoProcess::spawn(1).expect("echo backend");
    let bins = Binaries::find(
        opts.strait.clone(),
        opts.nginx.clone(),
        opts.haproxy.clone(),
        opts.envoy.clone(),
        &target,
    );
    let descriptors = work_dir.join("bench-descriptors.binpb");
    peers::write_descriptor_set(&descriptors).expect("writing the bench descriptor set");
    let mut settings = peers::Settings::new(opts.strait_threads, 1, descriptors);
    settings.haproxy_min_maxconn = opts.connections as u64 + 1000;
    let bench = Bench {
        opts,
        rt,
        echo,
        bins,
        settings,
        work_dir,
    };
    let mut results = Vec::new();
    for &peer in &bench.opts.rows {
        let r = bench.run(peer);
        if let Err(e) = &r {
            eprintln!("memory bench: {}: FAILED: {e}", peer.name());
        }
        results.push((peer, r));
    }
    let report = render(&bench, &results);
    println!("{report}");
    match std::fs::write(&bench.opts.out, &report) {
        Ok(()) => eprintln!("memory bench: written to {}", bench.opts.out.display()),
        Err(e) => eprintln!("memory bench: writing {}: {e}", bench.opts.out.display()),
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "–".into())
}

/// (a − b) / n in KiB, as "x.y KiB".
fn per(a: Option<u64>, b: Option<u64>, n: usize) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.1} KiB", (a as f64 - b as f64) / n as f64),
        _ => "–".into(),
    }
}

fn render(bench: &Bench, results: &[(Peer, Result<RowResult, String>)]) -> String {
    let o = &bench.opts;
    let mut r = String::new();
    let _ = writeln!(r, "## Memory benchmark: idle connections and open streams\n");
    let _ = writeln!(
        r,
        "Machine: {}. Each proxy a fresh process with one worker thread (configurations as in \
         the relay bench). RSS is `VmRSS` once the proxy is idle. Per connection: (RSS with \
         {} idle HTTP/2 client connections − baseline) / {}; per stream: (RSS with {} open bidi \
         streams, each having echoed one {STREAM_MSG} B message, − RSS with only their {} \
         connections) / {}. Round 2 opens the {} connections again after everything was \
         closed.\n",
        common::machine(),
        o.connections,
        o.connections,
        o.streams,
        o.stream_connections,
        o.streams,
        o.connections,
    );
    let _ = writeln!(r, "Versions:\n");
    for v in bench.bins.versions() {
        let _ = writeln!(r, "- {v}");
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "| proxy | baseline | {}k idle conns | per conn | after close | {} streams | per stream | after close | round 2: conns / after close | peak (VmHWM) | failures |",
        o.connections as f64 / 1000.0,
        o.streams
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for (peer, res) in results {
        match res {
            Err(e) if e == "not installed" => {
                let _ = writeln!(r, "| {} | not installed | | | | | | | | | |", peer.name());
            }
            Err(e) => {
                let _ = writeln!(r, "| {} | failed | | | | | | | | | 1 |", peer.name());
                notes.push(format!("{}: {e}", peer.name()));
            }
            Ok(m) => {
                let _ = writeln!(
                    r,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
                    peer.name(),
                    mib(m.baseline),
                    mib(m.conns1),
                    per(m.conns1, m.baseline, o.connections),
                    mib(m.conns1_closed),
                    mib(m.streams),
                    per(m.streams, m.stream_conns, o.streams),
                    mib(m.streams_closed),
                    mib(m.conns2),
                    mib(m.conns2_closed),
                    mib(m.hwm),
                    m.failures.len(),
                );
                for f in &m.failures {
                    notes.push(format!("{}: {f}", peer.name()));
                }
                if let (Some(a), Some(b)) = (m.conns2, m.conns1) {
                    // Growth beyond 10 % (+ 4 MiB) of round 1 means memory
                    // per connection is not given back for reuse.
                    if a as f64 > b as f64 * 1.1 + 4096.0 {
                        notes.push(format!(
                            "{}: round 2 with {} connections used {} vs {} in round 1: memory \
                             grows across rounds",
                            peer.name(),
                            o.connections,
                            mib(Some(a)),
                            mib(Some(b))
                        ));
                    }
                }
                if let (Some(open), Some(closed)) = (m.fds_open, m.fds_closed) {
                    notes.push(format!(
                        "{}: {open} fds with the idle connections open, {closed} after closing \
                         them",
                        peer.name()
                    ));
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(r, "\nNotes:\n");
        for n in notes {
            let _ = writeln!(r, "- {}", n.replace('\n', "\n  "));
        }
    }
    r
}
