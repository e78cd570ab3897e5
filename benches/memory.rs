//! Memory benchmark: what idle client connections and open streams cost each
//! proxy, and whether the memory comes back.
//!
//! Run: `cargo bench --bench memory` (options after `--`; `--help` lists
//! them); `scripts/bench-peers.sh` installs the peers and runs it. Results
//! are printed as Markdown and written to `target/bench-memory.md`.
//!
//! The proxies are those of the relay bench (`tests/support/bench/peers.rs`: same
//! generated configurations, one worker thread each) in front of the same
//! echo backend (`tests/support/bench/echo.rs`). For each proxy, a fresh process:
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
//! 6. **gather attack** (the `strait-translate` row only, which must hold a
//!    message whole to edit it): in a fresh process per variant, 8 streams on
//!    one connection to `StartWorkflowExecution`, each declaring a large
//!    message, sending most of it and never ending it
//!    (`tests/support/bench/gather_attack.rs`). Peak RSS (`VmHWM`) against the budget
//!    that binds, how many streams were refused (RESOURCE_EXHAUSTED) or held,
//!    and whether the proxy still relays afterwards.
//!
//! "Idle" is a real condition: the proxy's CPU time did not move for 200 ms
//! (bounded by a few seconds). The load generator needs one fd per
//! connection and the proxy one or two: the open-files limit must exceed
//! `--connections` (the bench checks; `scripts/bench-peers.sh` raises it as
//! far as the hard limit allows).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::{Ping, PingPong};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch, Semaphore};

use strait_test_support::bench::echo;
use strait_test_support::bench::gather_attack;
use strait_test_support::bench::h2cfg;
use strait_test_support::bench::load;
use strait_test_support::bench::peers;
use strait_test_support::bench::peers::{Binaries, Peer, ProxyProcess};
use strait_test_support::bench::procstat;
use strait_test_support::bench::report;

/// How long to wait for connections to open, answer, or close.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bounds of the wait for a quiet (idle) proxy.
const QUIET_FOR: Duration = Duration::from_millis(200);
const QUIET_TIMEOUT: Duration = Duration::from_secs(10);
/// Message size on the open streams.
const STREAM_MSG: usize = 100;
const MIB: u32 = 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    Streams,
    Gather,
}

/// One run of the gather attack: Strait's extra limits and the attack's shape.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GatherVariant {
    /// As reported: defaults, 8 streams declaring 101 MiB and sending 100 MiB.
    Reported,
    /// The same with edited requests allowed up to 128 MiB: the connection budget refuses.
    Large,
    /// Messages small enough to be admitted until the connection budget is full.
    Filled,
}

impl GatherVariant {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "reported" => Some(Self::Reported),
            "large" => Some(Self::Large),
            "filled" => Some(Self::Filled),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Large => "large",
            Self::Filled => "filled",
        }
    }

    fn limits(self) -> &'static str {
        match self {
            Self::Reported => "",
            Self::Large | Self::Filled => "max_edited_request_bytes = 134217728",
        }
    }

    /// (streams, declared, sent) per stream.
    fn shape(self) -> (usize, u32, usize) {
        match self {
            Self::Reported | Self::Large => (8, 101 * MIB, 100 * MIB as usize),
            Self::Filled => (8, 20 * MIB, 19 * MIB as usize),
        }
    }

    /// The limit or budget that binds, as a description and in KiB of memory it allows.
    fn bound(self) -> (&'static str, u64) {
        match self {
            Self::Reported => ("max_edited_request_bytes 4 MiB (refused at the prefix)", 0),
            Self::Large | Self::Filled => ("connection_gather_bytes 64 MiB", 64 * 1024),
        }
    }
}

/// Memory benchmark: idle connections, open streams and the gather attack against each proxy (the
/// file's doc says what is measured and how).
#[derive(clap::Parser)]
#[command(
    name = "memory bench",
    override_usage = "cargo bench --bench memory -- [OPTIONS]"
)]
struct Args {
    /// Proxies to measure [default: strait,nginx,haproxy,envoy; strait-translate is also known]
    #[arg(long, value_name = "A,B,...", value_delimiter = ',', value_parser = parse_peer)]
    rows: Vec<Peer>,
    /// Idle client connections per round
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    connections: usize,
    /// Concurrently open bidi streams
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    streams: usize,
    /// Connections carrying the streams
    #[arg(long, value_name = "K", default_value_t = 10)]
    stream_connections: usize,
    /// Rounds of opening and closing the idle connections
    #[arg(long, value_name = "R", default_value_t = 5)]
    rounds: usize,
    /// Connections being opened at once
    #[arg(long, value_name = "P", default_value_t = 64)]
    open_parallelism: usize,
    /// Load generator tokio workers
    #[arg(long, value_name = "N", default_value_t = 2)]
    client_threads: usize,
    /// Strait [runtime] worker_threads
    #[arg(long, value_name = "N", default_value_t = 1)]
    strait_threads: usize,
    /// Strait binary [default: the one cargo built]
    #[arg(long, value_name = "PATH")]
    strait: Option<PathBuf>,
    /// nginx binary (as in the relay bench)
    #[arg(long, value_name = "PATH")]
    nginx: Option<PathBuf>,
    /// HAProxy binary (as in the relay bench)
    #[arg(long, value_name = "PATH")]
    haproxy: Option<PathBuf>,
    /// Envoy binary (as in the relay bench)
    #[arg(long, value_name = "PATH")]
    envoy: Option<PathBuf>,
    /// Phases: idle, streams, gather [default: all three; gather runs for the strait-translate row
    /// only]
    #[arg(long, value_name = "A,B,...", value_delimiter = ',', value_parser = parse_phase)]
    phases: Vec<Phase>,
    /// Gather attack variants [default: reported,large,filled]: reported = defaults, 8 x 101 MiB
    /// declared / 100 MiB sent; large = the same with max_edited_request_bytes 128 MiB; filled =
    /// that limit, 8 x 20 MiB declared / 19 MiB sent
    #[arg(long, value_name = "V,...", value_delimiter = ',', value_parser = parse_gather)]
    gather: Vec<GatherVariant>,
    /// Markdown output [default: target/bench-memory.md]
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Passed by `cargo bench` to every harness = false bench; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_peer(s: &str) -> Result<Peer, String> {
    Peer::parse(s.trim()).ok_or_else(|| format!("unknown row {s:?}"))
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    match s.trim() {
        "idle" => Ok(Phase::Idle),
        "streams" => Ok(Phase::Streams),
        "gather" => Ok(Phase::Gather),
        other => Err(format!("unknown phase {other:?}")),
    }
}

fn parse_gather(s: &str) -> Result<GatherVariant, String> {
    GatherVariant::parse(s.trim()).ok_or_else(|| format!("unknown variant {s:?}"))
}

/// `list`, or `default` when the option was not given.
fn or_default<T>(list: Vec<T>, default: impl FnOnce() -> Vec<T>) -> Vec<T> {
    if list.is_empty() {
        default()
    } else {
        list
    }
}

struct Opts {
    rows: Vec<Peer>,
    connections: usize,
    streams: usize,
    stream_connections: usize,
    open_parallelism: usize,
    rounds: usize,
    client_threads: usize,
    strait_threads: usize,
    strait: PathBuf,
    nginx: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    envoy: Option<PathBuf>,
    out: PathBuf,
    phases: Vec<Phase>,
    gather: Vec<GatherVariant>,
}

impl Opts {
    fn parse() -> Self {
        let args = <Args as clap::Parser>::parse();
        Opts {
            rows: or_default(args.rows, || {
                vec![Peer::Strait, Peer::Nginx, Peer::Haproxy, Peer::Envoy]
            }),
            connections: args.connections.max(1),
            streams: args.streams.max(1),
            stream_connections: args.stream_connections.max(1),
            open_parallelism: args.open_parallelism.max(1),
            rounds: args.rounds.max(1),
            client_threads: args.client_threads.max(1),
            strait_threads: args.strait_threads.max(1),
            strait: args
                .strait
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strait"))),
            nginx: args.nginx,
            haproxy: args.haproxy,
            envoy: args.envoy,
            out: args
                .out
                .unwrap_or_else(|| report::target_dir().join("bench-memory.md")),
            phases: or_default(args.phases, || {
                vec![Phase::Idle, Phase::Streams, Phase::Gather]
            }),
            gather: or_default(args.gather, || {
                vec![
                    GatherVariant::Reported,
                    GatherVariant::Large,
                    GatherVariant::Filled,
                ]
            }),
        }
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
    /// Idle-connection process: RSS once ready.
    baseline: Option<u64>,
    /// Per round: RSS with the connections open, RSS after closing them.
    rounds: Vec<(Option<u64>, Option<u64>)>,
    idle_hwm: Option<u64>,
    /// Strait only: `strait_runtime_alive_tasks` at the baseline and after
    /// each round, and `strait_connections_open` after each round.
    tasks: Vec<Option<f64>>,
    conns_open_after: Vec<Option<f64>>,
    /// Proxy fds with the idle connections open / after closing them.
    fds_open: Option<usize>,
    fds_closed: Option<usize>,
    /// Stream process: RSS once ready, with the stream connections, with
    /// the streams open, after closing everything.
    streams_baseline: Option<u64>,
    stream_conns: Option<u64>,
    streams: Option<u64>,
    streams_closed: Option<u64>,
    streams_hwm: Option<u64>,
    stream_fds: Option<usize>,
    failures: Vec<String>,
    gather: Vec<GatherResult>,
}

/// One gather attack variant's results. RSS values in KiB.
struct GatherResult {
    variant: GatherVariant,
    baseline: Option<u64>,
    /// VmRSS once everything sent has reached the proxy (a PING round trip), VmHWM then.
    holding: Option<u64>,
    peak: Option<u64>,
    held: usize,
    refused: usize,
    first_refusal: Option<String>,
    /// Streams that ended some other way, or a failed relay afterwards.
    problems: Vec<String>,
    took: Duration,
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

    fn start(&self, peer: Peer, tag: &str) -> Result<ProxyProcess, String> {
        let bin = self.bins.get(peer).ok_or("not installed")?;
        ProxyProcess::start(
            &self.rt,
            peer,
            bin,
            &self.work_dir,
            tag,
            self.echo.addr,
            &self.settings,
        )
    }

    fn run(&self, peer: Peer) -> Result<RowResult, String> {
        let mut r = RowResult::default();
        if self.opts.phases.contains(&Phase::Idle) {
            self.idle_rounds(peer, &mut r)?;
        }
        if self.opts.phases.contains(&Phase::Streams) {
            self.open_streams(peer, &mut r)?;
        }
        if self.opts.phases.contains(&Phase::Gather) && peer == Peer::StraitTranslate {
            for &variant in &self.opts.gather {
                r.gather.push(self.gather_attack(peer, variant)?);
            }
        }
        Ok(r)
    }

    /// A fresh proxy with the variant's limits: the attack, RSS while it is held, then a
    /// normal call on a new connection.
    fn gather_attack(&self, peer: Peer, variant: GatherVariant) -> Result<GatherResult, String> {
        let mut settings = self.settings.clone();
        settings.strait_limits = variant.limits().to_owned();
        let bin = self.bins.get(peer).ok_or("not installed")?;
        let proxy = ProxyProcess::start(
            &self.rt,
            peer,
            bin,
            &self.work_dir,
            &format!("gather-{}", variant.name()),
            self.echo.addr,
            &settings,
        )?;
        let pid = proxy.pid();
        let (streams, declared, sent) = variant.shape();
        eprintln!(
            "memory bench: {}: gather attack {}: {streams} streams declaring {} MiB, sending {}              MiB ...",
            peer.name(),
            variant.name(),
            declared / MIB,
            sent / MIB as usize
        );
        let baseline = self.quiet_rss(pid);
        let started = Instant::now();
        let attack = self.rt.block_on(gather_attack::run(
            proxy.listen,
            streams,
            declared,
            sent,
            PHASE_TIMEOUT,
        ))?;
        let took = started.elapsed();
        let holding = self.rss(pid);
        let peak = procstat::status_kib(pid, "VmHWM");
        let mut problems = Vec::new();
        if attack.failed > 0 {
            problems.push(format!(
                "{} streams failed: {}",
                attack.failed,
                attack.first_error.clone().unwrap_or_default()
            ));
        }
        let refused = attack.answered.iter().filter(|(s, _)| s == "8").count();
        if let Some((status, message)) = attack.answered.iter().find(|(s, _)| s != "8") {
            problems.push(format!("a stream got grpc-status {status}: {message}"));
        }
        let first_refusal = attack.answered.first().map(|(_, m)| m.clone());
        let held = attack.held;
        drop(attack);
        if let Err(e) = load::probe(&self.rt, proxy.listen, Duration::from_secs(10)) {
            problems.push(format!("no relaying after the attack: {e}"));
        }
        Ok(GatherResult {
            variant,
            baseline,
            holding,
            peak,
            held,
            refused,
            first_refusal,
            problems,
            took,
        })
    }

    /// A fresh proxy: `--rounds` rounds of opening the idle connections,
    /// reading RSS, checking they answer, and closing them.
    fn idle_rounds(&self, peer: Peer, r: &mut RowResult) -> Result<(), String> {
        let proxy = self.start(peer, "idle")?;
        let pid = proxy.pid();
        let n = self.opts.connections;
        r.baseline = self.quiet_rss(pid);
        let metric = |name: &str| proxy.admin.and_then(|a| peers::metric_sum(a, name));
        r.tasks.push(metric("strait_runtime_alive_tasks"));
        let base_fds = procstat::fd_count(pid).unwrap_or(0);
        // Slack for upstream connections a proxy keeps (nginx's keepalive
        // cache, Envoy's pool) and listeners it opens lazily.
        let closed_fds = base_fds + 64;
        for round in 1..=self.opts.rounds {
            eprintln!(
                "memory bench: {} round {round}: {n} idle connections ...",
                peer.name()
            );
            let started = Instant::now();
            let (mut conns, opened) = self.rt.block_on(IdleConnections::open(
                proxy.listen,
                n,
                self.opts.open_parallelism,
            ));
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
            let open_rss = self.quiet_rss(pid);
            if round == 1 {
                r.fds_open = procstat::fd_count(pid);
            }
            let checked = self.rt.block_on(conns.check(round as u32));
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
            if round == 1 {
                r.fds_closed = fds;
            }
            r.rounds.push((open_rss, self.quiet_rss(pid)));
            r.tasks.push(metric("strait_runtime_alive_tasks"));
            r.conns_open_after.push(metric("strait_connections_open"));
        }
        r.idle_hwm = procstat::status_kib(pid, "VmHWM");
        Ok(())
    }

    /// A fresh proxy: the stream connections, then the open streams, then
    /// everything closed.
    fn open_streams(&self, peer: Peer, r: &mut RowResult) -> Result<(), String> {
        let proxy = self.start(peer, "streams")?;
        let pid = proxy.pid();
        let base_fds = procstat::fd_count(pid).unwrap_or(0);
        eprintln!(
            "memory bench: {}: {} streams over {} connections ...",
            peer.name(),
            self.opts.streams,
            self.opts.stream_connections
        );
        r.streams_baseline = self.quiet_rss(pid);
        let mut streams = self.rt.block_on(OpenStreams::connect(
            proxy.listen,
            self.opts.stream_connections,
        ))?;
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
        r.stream_fds = procstat::fd_count(pid);
        let ended = self.rt.block_on(streams.finish());
        if ended.failed > 0 {
            r.failures.push(format!(
                "{} of {} streams did not end cleanly: {}",
                ended.failed,
                opened.ok,
                ended.first_error.unwrap_or_default()
            ));
        }
        // nginx keeps up to `keepalive` idle upstream connections: allow
        // one per stream.
        self.wait_fds_at_most(pid, base_fds + 64 + self.opts.streams);
        r.streams_closed = self.quiet_rss(pid);
        r.streams_hwm = procstat::status_kib(pid, "VmHWM");
        Ok(())
    }
}

fn main() {
    if std::env::var(echo::ROLE_ENV).as_deref() == Ok("echo") {
        echo::child_main();
        return;
    }
    let opts = Opts::parse();
    let target = report::target_dir();
    let work_dir = target.join("bench-memory");
    std::fs::create_dir_all(&work_dir).expect("creating target/bench-memory");
    let limit = procstat::open_files_limit().unwrap_or(0);
    let need = opts.connections as u64 + 512;
    if limit < need && opts.phases.contains(&Phase::Idle) {
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
    peers::write_descriptor_set(&descriptors, strait::descriptor_set::EMBEDDED)
        .expect("writing the bench descriptor set");
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
    let _ = writeln!(
        r,
        "## Memory benchmark: idle connections and open streams\n"
    );
    let _ = writeln!(
        r,
        "Machine: {}. Each proxy with one worker thread (configurations as in the relay \
         bench); RSS is `VmRSS` once the proxy is idle (its CPU time still for 200 ms). Idle \
         connections, in a fresh process: {} rounds of opening {} HTTP/2 client connections \
         (handshake done, a PING answered, and answered again after the reading), then closing \
         them; per connection = (RSS with round 1's connections − baseline) / {}. Open \
         streams, in another fresh process: {} bidi streams over {} connections, each having \
         echoed one {STREAM_MSG} B message and left open; per stream = (RSS with the streams − \
         RSS with only their connections) / {}.\n",
        report::machine(),
        o.rounds,
        o.connections,
        o.connections,
        o.streams,
        o.stream_connections,
        o.streams,
    );
    let _ = writeln!(r, "Versions:\n");
    for v in bench.bins.versions() {
        let _ = writeln!(r, "- {v}");
    }
    let _ = writeln!(r);
    let mut notes = Vec::new();
    if o.phases.iter().any(|p| *p != Phase::Gather) {
        let k = o.connections as f64 / 1000.0;
        let _ = writeln!(
            r,
            "| proxy | baseline | {k}k idle conns | per conn | closed | {}: open / closed | {} streams | per stream | closed | peak | failures |",
            match o.rounds {
                1 => "later rounds".to_string(),
                2 => "round 2".to_string(),
                n => format!("rounds 2–{n}"),
            },
            o.streams
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
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
                    let (open1, closed1) = m.rounds.first().copied().unwrap_or((None, None));
                    let later: Vec<String> = m
                        .rounds
                        .iter()
                        .skip(1)
                        .map(|(open, closed)| {
                            format!("{} / {}", mib_short(*open), mib_short(*closed))
                        })
                        .collect();
                    let peak = m.idle_hwm.max(m.streams_hwm);
                    let _ = writeln!(
                        r,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        peer.name(),
                        mib(m.baseline),
                        mib(open1),
                        per(open1, m.baseline, o.connections),
                        mib(closed1),
                        if later.is_empty() {
                            "–".into()
                        } else {
                            format!("{} MiB", later.join(", "))
                        },
                        mib(m.streams),
                        per(m.streams, m.stream_conns, o.streams),
                        mib(m.streams_closed),
                        mib(peak),
                        m.failures.len(),
                    );
                    for f in &m.failures {
                        notes.push(format!("{}: {f}", peer.name()));
                    }
                    let last = m.rounds.last().and_then(|(open, _)| *open);
                    if let (Some(a), Some(b)) = (last, open1) {
                        // Growth beyond 10 % (+ 4 MiB) of round 1 means memory
                        // per connection is not given back for reuse.
                        if m.rounds.len() > 1 && a as f64 > b as f64 * 1.1 + 4096.0 {
                            notes.push(format!(
                                "{}: with {} connections open, round {} used {} vs {} in round 1: \
                                 memory grows across rounds",
                                peer.name(),
                                o.connections,
                                m.rounds.len(),
                                mib(Some(a)),
                                mib(Some(b))
                            ));
                        }
                    }
                    if m.tasks.iter().any(Option::is_some) {
                        let fmt = |v: &[Option<f64>]| {
                            v.iter()
                                .map(|x| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "?".into()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        notes.push(format!(
                            "{}: tokio tasks alive (strait_runtime_alive_tasks) at the baseline, \
                             then after each round: {}; client connections open after each round \
                             (strait_connections_open): {}",
                            peer.name(),
                            fmt(&m.tasks),
                            fmt(&m.conns_open_after)
                        ));
                    }
                    notes.push(format!(
                        "{}: fds {} with the idle connections open, {} after closing them; {} with \
                         the streams open; stream process before/with connections: {} / {}",
                        peer.name(),
                        opt(m.fds_open),
                        opt(m.fds_closed),
                        opt(m.stream_fds),
                        mib(m.streams_baseline),
                        mib(m.stream_conns),
                    ));
                }
            }
        }
    }
    render_gather(&mut r, results, &mut notes);
    if !notes.is_empty() {
        let _ = writeln!(r, "\nNotes:\n");
        for n in notes {
            let _ = writeln!(r, "- {}", n.replace('\n', "\n  "));
        }
    }
    r
}

/// The gather attack's table (rows that ran it).
fn render_gather(
    r: &mut String,
    results: &[(Peer, Result<RowResult, String>)],
    notes: &mut Vec<String>,
) {
    let runs: Vec<(Peer, &GatherResult)> = results
        .iter()
        .filter_map(|(peer, res)| res.as_ref().ok().map(|m| (*peer, m)))
        .flat_map(|(peer, m)| m.gather.iter().map(move |g| (peer, g)))
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        r,
        "\n### Gather attack\n\nOne connection, streams to `StartWorkflowExecution` each \
         declaring a message, sending most of it and never ending it. Holding = `VmRSS` once \
         everything sent has reached the proxy; peak = `VmHWM`; bound = the limit or budget \
         that applies and the memory it allows beyond the baseline.\n"
    );
    let _ = writeln!(
        r,
        "| proxy | variant | streams × declared / sent | baseline | holding | peak | peak − baseline | bound | refused / held | attack took | relays after |"
    );
    let _ = writeln!(r, "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|");
    for (peer, g) in runs {
        let (streams, declared, sent) = g.variant.shape();
        let (bound, allows) = g.variant.bound();
        let growth = match (g.peak, g.baseline) {
            (Some(p), Some(b)) => format!("{:.1} MiB", (p as f64 - b as f64) / 1024.0),
            _ => "–".into(),
        };
        let _ = writeln!(
            r,
            "| {} | {} | {streams} × {} / {} MiB | {} | {} | {} | {growth} | {bound} (+{} MiB) | {} / {} | {:.2} s | {} |",
            peer.name(),
            g.variant.name(),
            declared / MIB,
            sent / MIB as usize,
            mib(g.baseline),
            mib(g.holding),
            mib(g.peak),
            allows / 1024,
            g.refused,
            g.held,
            g.took.as_secs_f64(),
            if g.problems.iter().any(|p| p.starts_with("no relaying")) {
                "no"
            } else {
                "yes"
            },
        );
        if let Some(m) = &g.first_refusal {
            notes.push(format!(
                "{} gather {}: refusal message: {m}",
                peer.name(),
                g.variant.name()
            ));
        }
        for p in &g.problems {
            notes.push(format!("{} gather {}: {p}", peer.name(), g.variant.name()));
        }
    }
}

fn opt(v: Option<usize>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

fn mib_short(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "–".into())
}
