//! Soak: mixed load through ONE Strait process for a configurable time, against a real Temporal
//! dev server and the echo backend, reporting errors (there must be none) and Strait's RSS and live
//! tasks over time (they must plateau).
//!
//! Run: `scripts/soak.sh --minutes 30` (or `--seconds 90`; `--help` lists the options), which runs
//! `cargo bench --bench soak -- ...`. Needs the test venv (`scripts/setup-test-env.sh`) for the
//! `temporal` CLI. The report is printed and written to `target/soak.md`; the exit code is non-zero
//! when any call failed, memory or tasks kept growing, or Strait died.
//!
//! Why a bench target and not a test binary, though it passes or fails: it is a long-running
//! program with its own options (duration, sampling, scale) that is meant to run for minutes to
//! hours on an optimized build, like the load generators it shares with the relay bench. `cargo
//! bench` gives it the release profile by default (`scripts/soak.sh --dev` for CI's dev build) and
//! passes its options through untouched, while plain `cargo test` never starts it: as a test binary
//! every `cargo test` would run (or have to skip) a 90 s load against a Temporal server, and
//! libtest's arguments would be mixed with its own.
//!
//! Processes: the Temporal dev server (`tests/support/temporal.rs`), the echo backend (this binary
//! re-executed, `tests/support/bench/echo.rs`), and Strait (`strait run`) with two listeners: `clients`
//! → the Temporal frontend and `echo` → the echo backend. This process runs the load, paced (a
//! soak is about time, not throughput), each worker on its own HTTP/2 connection:
//! - unary echo calls of 100 B and of 64 KiB, every echo compared byte for byte;
//! - bidi echo streams, one message in flight, each stream 250 round trips then closed (trailers
//!   checked) and replaced;
//! - Temporal unary calls, `GetSystemInfo` and `DescribeNamespace`, responses decoded and checked;
//! - Temporal long polls, `PollWorkflowTaskQueue` and `PollActivityTaskQueue` on a queue nothing
//!   uses, with `grpc-timeout: 90S`: each must end OK and empty when the server's poll interval (a
//!   minute) is over. Polls still open when the time is up are cancelled and counted apart;
//! - workflows started (`StartWorkflowExecution`) and terminated, one every two seconds.
//!
//! Every few seconds Strait's VmRSS (`/proc/<pid>/status`) and `strait_runtime_alive_tasks` (its
//! /metrics) are sampled. Plateau rule, for RSS and for tasks: the largest sample of the last third
//! of the run may exceed the largest of the first third by at most 20% plus a fixed slack (8 MiB;
//! 16 tasks). The first third covers warm-up (allocator pools, connection buffers, metric series,
//! histograms' first samples); after it, the load is steady, so what a leak adds grows with time
//! and shows in the last third, while allocator noise stays within the slack.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod grpc;
mod temporal_api;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use strait_test_support::bench::echo;
use strait_test_support::bench::procstat;
use strait_test_support::bench::report;
use strait_test_support::temporal;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Plateau slack: see the module documentation.
const RSS_SLACK_KIB: f64 = 8.0 * 1024.0;
const TASK_SLACK: f64 = 16.0;
const GROWTH: f64 = 1.2;
/// A run this long lets every long poll started at the beginning end by itself.
const LONG_POLLS_EXPECTED_AFTER: Duration = Duration::from_secs(80);
/// Bound on each call, beyond its own purpose.
const CALL_BOUND: Duration = Duration::from_secs(15);
const POLL_BOUND: Duration = Duration::from_secs(100);
/// How long the workers get to wind down when the time is up.
const DRAIN: Duration = Duration::from_secs(20);
const ECHO_PATH: &str = "/strait.soak.v1.EchoService";

/// Soak: mixed load through one Strait process against a real Temporal dev server and the echo
/// backend (the file's doc says what runs and the plateau rule).
#[derive(clap::Parser)]
#[command(
    name = "soak",
    override_usage = "scripts/soak.sh [OPTIONS]   (or cargo bench --bench soak -- [OPTIONS])"
)]
struct Args {
    /// How long the load runs, seconds [default: 60]
    #[arg(long, value_name = "N", value_parser = positive, conflicts_with = "minutes")]
    seconds: Option<f64>,
    /// The same in minutes (e.g. --minutes 30)
    #[arg(long, value_name = "M", value_parser = positive)]
    minutes: Option<f64>,
    /// Seconds between RSS / task samples (at most a tenth of the run)
    #[arg(long, value_name = "S", value_parser = positive, default_value_t = 5.0)]
    sample: f64,
    /// Multiplies every call rate (0.5 halves the load)
    #[arg(long, value_name = "F", value_parser = positive, default_value_t = 1.0)]
    scale: f64,
    /// Markdown report [default: target/soak.md]
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Passed by `cargo bench` to every harness = false bench; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn positive(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0 && v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a positive number"))
}

struct Opts {
    duration: Duration,
    sample: Duration,
    scale: f64,
    out: PathBuf,
}

impl Opts {
    fn parse() -> Opts {
        let args = <Args as clap::Parser>::parse();
        let seconds = args
            .seconds
            .or(args.minutes.map(|m| 60.0 * m))
            .unwrap_or(60.0);
        let duration = Duration::from_secs_f64(seconds);
        Opts {
            duration,
            sample: Duration::from_secs_f64(args.sample)
                .min(duration / 10)
                .max(Duration::from_secs(1)),
            scale: args.scale,
            out: args
                .out
                .unwrap_or_else(|| report::target_dir().join("soak.md")),
        }
    }

    /// A worker's period between calls for `per_second` calls per second at scale 1.
    fn period(&self, per_second: f64) -> Duration {
        Duration::from_secs_f64(1.0 / (per_second * self.scale))
    }
}

/// The kinds of load, in report order.
#[derive(Clone, Copy)]
enum Kind {
    Unary100B,
    Unary64KiB,
    BidiMessages,
    BidiStreams,
    GetSystemInfo,
    DescribeNamespace,
    PollWorkflow,
    PollActivity,
    Workflows,
}

const KINDS: [(Kind, &str); 9] = [
    (Kind::Unary100B, "echo unary 100 B"),
    (Kind::Unary64KiB, "echo unary 64 KiB"),
    (Kind::BidiMessages, "echo bidi 100 B (round trips)"),
    (Kind::BidiStreams, "echo bidi streams (completed)"),
    (Kind::GetSystemInfo, "Temporal GetSystemInfo"),
    (Kind::DescribeNamespace, "Temporal DescribeNamespace"),
    (
        Kind::PollWorkflow,
        "Temporal PollWorkflowTaskQueue (long poll)",
    ),
    (
        Kind::PollActivity,
        "Temporal PollActivityTaskQueue (long poll)",
    ),
    (Kind::Workflows, "Temporal start + terminate workflow"),
];

#[derive(Default)]
struct KindStats {
    ok: AtomicU64,
    errors: AtomicU64,
    max_us: AtomicU64,
    min_us: AtomicU64,
    total_us: AtomicU64,
    /// Long polls cut when the time was up (not errors).
    cut: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Stats {
    kinds: [KindStats; 9],
}

impl Stats {
    fn of(&self, kind: Kind) -> &KindStats {
        &self.kinds[kind as usize]
    }

    fn ok(&self, kind: Kind, took: Duration) {
        let stats = self.of(kind);
        let us = took.as_micros() as u64;
        if stats.ok.fetch_add(1, Ordering::Relaxed) == 0 {
            stats.min_us.store(us, Ordering::Relaxed);
        }
        stats.min_us.fetch_min(us, Ordering::Relaxed);
        stats.max_us.fetch_max(us, Ordering::Relaxed);
        stats.total_us.fetch_add(us, Ordering::Relaxed);
    }

    fn error(&self, kind: Kind, error: String) {
        let stats = self.of(kind);
        stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = stats.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 5 {
            eprintln!("soak: {} failed: {error}", KINDS[kind as usize].1);
            first.push(error);
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.kinds.iter().fold((0, 0), |(ok, errors), k| {
            (
                ok + k.ok.load(Ordering::Relaxed),
                errors + k.errors.load(Ordering::Relaxed),
            )
        })
    }
}

/// What every worker shares.
#[derive(Clone)]
struct Ctx {
    stats: Arc<Stats>,
    stop: CancellationToken,
    temporal: SocketAddr,
    echo: SocketAddr,
}

impl Ctx {
    /// The worker's connection, (re)made when it has none; a failure is counted against `kind`.
    async fn connection(
        &self,
        conn: &mut Option<SendRequest<Bytes>>,
        addr: SocketAddr,
        kind: Kind,
    ) -> Option<SendRequest<Bytes>> {
        if conn.is_none() {
            match grpc::connect(addr).await {
                Ok(send) => *conn = Some(send),
                Err(e) => {
                    self.stats.error(kind, e);
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        conn.clone()
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

async fn echo_unary(ctx: Ctx, kind: Kind, size: usize, period: Duration, seed: u8) {
    let mut conn = None;
    let mut tick = ticker(period);
    let mut payload: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let mut n = 0u32;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(send) = ctx.connection(&mut conn, ctx.echo, kind).await else {
            continue;
        };
        n = n.wrapping_add(1);
        payload[..4].copy_from_slice(&n.to_be_bytes());
        let body = Bytes::copy_from_slice(&payload);
        let started = Instant::now();
        let request = grpc::request(&format!("{ECHO_PATH}/Unary"), None, false);
        match grpc::unary(&send, request, body.clone(), CALL_BOUND).await {
            Ok(echoed) if echoed == body => ctx.stats.ok(kind, started.elapsed()),
            Ok(echoed) => ctx.stats.error(
                kind,
                format!(
                    "echo of {} bytes differs ({} bytes)",
                    body.len(),
                    echoed.len()
                ),
            ),
            Err(e) => {
                ctx.stats.error(kind, e);
                conn = None;
            }
        }
    }
}

async fn echo_bidi(ctx: Ctx, period: Duration, seed: u8) {
    const ROUND_TRIPS: u32 = 250;
    let mut conn = None;
    let mut tick = ticker(period);
    let mut stream: Option<(grpc::Bidi, u32, Instant)> = None;
    let mut n = 0u32;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if stream.is_none() {
            let Some(send) = ctx.connection(&mut conn, ctx.echo, Kind::BidiStreams).await else {
                continue;
            };
            let request = grpc::request(&format!("{ECHO_PATH}/Bidi"), None, false);
            match grpc::Bidi::open(&send, request).await {
                Ok(bidi) => stream = Some((bidi, 0, Instant::now())),
                Err(e) => {
                    ctx.stats.error(Kind::BidiStreams, e);
                    conn = None;
                    continue;
                }
            }
        }
        let Some((bidi, sent, _)) = stream.as_mut() else {
            continue;
        };
        n = n.wrapping_add(1);
        let mut message = vec![seed; 100];
        message[..4].copy_from_slice(&n.to_be_bytes());
        let started = Instant::now();
        match bidi.ping(Bytes::from(message), CALL_BOUND).await {
            Ok(()) => ctx.stats.ok(Kind::BidiMessages, started.elapsed()),
            Err(e) => {
                ctx.stats.error(Kind::BidiMessages, e);
                stream = None;
                conn = None;
                continue;
            }
        }
        *sent += 1;
        if *sent == ROUND_TRIPS {
            finish_bidi(&ctx, stream.take()).await;
        }
    }
    finish_bidi(&ctx, stream).await;
}

async fn finish_bidi(ctx: &Ctx, stream: Option<(grpc::Bidi, u32, Instant)>) {
    if let Some((bidi, _, opened)) = stream {
        match bidi.finish(CALL_BOUND).await {
            Ok(()) => ctx.stats.ok(Kind::BidiStreams, opened.elapsed()),
            Err(e) => ctx.stats.error(Kind::BidiStreams, e),
        }
    }
}

/// One Temporal unary call of `method`, checked; true when it succeeded.
async fn temporal_call(
    ctx: &Ctx,
    send: &SendRequest<Bytes>,
    kind: Kind,
    method: &str,
    body: Bytes,
) -> bool {
    let started = Instant::now();
    let request = grpc::request(
        &format!("{}/{method}", temporal_api::SERVICE),
        Some("10S"),
        method != "GetSystemInfo",
    );
    let result = grpc::unary(send, request, body, CALL_BOUND)
        .await
        .and_then(|response| temporal_api::check(method, &response));
    match result {
        Ok(()) => {
            ctx.stats.ok(kind, started.elapsed());
            true
        }
        Err(e) => {
            ctx.stats.error(kind, format!("{method}: {e}"));
            false
        }
    }
}

async fn temporal_unary(ctx: Ctx, period: Duration) {
    let mut conn = None;
    let mut tick = ticker(period);
    let mut describe = false;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        describe = !describe;
        let (kind, method, body) = if describe {
            (
                Kind::DescribeNamespace,
                "DescribeNamespace",
                temporal_api::describe_namespace(),
            )
        } else {
            (
                Kind::GetSystemInfo,
                "GetSystemInfo",
                temporal_api::get_system_info(),
            )
        };
        let Some(send) = ctx.connection(&mut conn, ctx.temporal, kind).await else {
            continue;
        };
        if !temporal_call(&ctx, &send, kind, method, body).await {
            conn = None;
        }
    }
}

async fn workflows(ctx: Ctx, period: Duration) {
    let mut conn = None;
    let mut tick = ticker(period);
    let mut n = 0u32;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(send) = ctx
            .connection(&mut conn, ctx.temporal, Kind::Workflows)
            .await
        else {
            continue;
        };
        n += 1;
        let id = format!("strait-soak-{}-{n}", std::process::id());
        let started = Instant::now();
        let request = grpc::request(
            &format!("{}/StartWorkflowExecution", temporal_api::SERVICE),
            Some("10S"),
            true,
        );
        let start = grpc::unary(
            &send,
            request,
            temporal_api::start_workflow(&id, &format!("{id}-request")),
            CALL_BOUND,
        )
        .await
        .and_then(|r| temporal_api::check("StartWorkflowExecution", &r));
        let result = match start {
            Ok(()) => {
                let request = grpc::request(
                    &format!("{}/TerminateWorkflowExecution", temporal_api::SERVICE),
                    Some("10S"),
                    true,
                );
                grpc::unary(
                    &send,
                    request,
                    temporal_api::terminate_workflow(&id),
                    CALL_BOUND,
                )
                .await
                .map(|_| ())
                .map_err(|e| format!("TerminateWorkflowExecution: {e}"))
            }
            Err(e) => Err(format!("StartWorkflowExecution: {e}")),
        };
        match result {
            Ok(()) => ctx.stats.ok(Kind::Workflows, started.elapsed()),
            Err(e) => {
                ctx.stats.error(Kind::Workflows, e);
                conn = None;
            }
        }
    }
}

async fn long_poll(ctx: Ctx, activity: bool, queue: String) {
    let (kind, method) = if activity {
        (Kind::PollActivity, "PollActivityTaskQueue")
    } else {
        (Kind::PollWorkflow, "PollWorkflowTaskQueue")
    };
    let mut conn = None;
    loop {
        if ctx.stop.is_cancelled() {
            return;
        }
        let Some(send) = ctx.connection(&mut conn, ctx.temporal, kind).await else {
            continue;
        };
        let started = Instant::now();
        // Longer than the server's poll interval: the server ends the poll, empty, not the client.
        let request = grpc::request(
            &format!("{}/{method}", temporal_api::SERVICE),
            Some("90S"),
            true,
        );
        let call = grpc::unary(
            &send,
            request,
            temporal_api::poll(activity, &queue),
            POLL_BOUND,
        );
        let result = tokio::select! {
            _ = ctx.stop.cancelled() => {
                // Dropping the call cancels it (RST_STREAM through Strait to the server).
                ctx.stats.of(kind).cut.fetch_add(1, Ordering::Relaxed);
                return;
            }
            result = call => result.and_then(|r| temporal_api::check(method, &r)),
        };
        match result {
            Ok(()) => ctx.stats.ok(kind, started.elapsed()),
            Err(e) => {
                ctx.stats.error(kind, format!("{method}: {e}"));
                conn = None;
            }
        }
    }
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    tasks: f64,
    calls: u64,
    errors: u64,
}

/// `strait_runtime_alive_tasks` from Strait's /metrics.
fn alive_tasks(strait: &temporal::Strait) -> f64 {
    match temporal::http_get(strait.admin_address(), "/metrics") {
        Ok((200, text)) => temporal::parse_metrics(&text)
            .iter()
            .find(|s| s.name == "strait_runtime_alive_tasks")
            .map(|s| s.value)
            .unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

/// (largest of the first third, largest of the last third, within the rule) over `samples`
/// taken under load.
fn plateau(values: &[(Duration, f64)], duration: Duration, slack: f64) -> (f64, f64, bool) {
    let third = duration / 3;
    let max = |keep: &dyn Fn(Duration) -> bool| {
        values
            .iter()
            .filter(|(at, _)| keep(*at))
            .map(|(_, v)| *v)
            .fold(f64::NAN, f64::max)
    };
    let first = max(&|at| at <= third);
    let last = max(&|at| at >= duration - third);
    (first, last, last <= first * GROWTH + slack)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

fn strait_config(
    listen: SocketAddr,
    admin: SocketAddr,
    echo_listen: SocketAddr,
    temporal: &str,
    echo: SocketAddr,
) -> String {
    format!(
        r#"# Generated by benches/soak.rs
[runtime]
worker_threads = 2

[log]
level = "warn"

[admin]
listen = "{admin}"

[[upstream]]
name = "temporal"
address = "{temporal}"

[[upstream]]
name = "echo"
address = "{echo}"

[[listener]]
name = "clients"
listen = "{listen}"
upstream = "temporal"

[[listener]]
name = "echo"
listen = "{echo_listen}"
upstream = "echo"
"#
    )
}

fn main() {
    if std::env::var(echo::ROLE_ENV).as_deref() == Ok("echo") {
        echo::child_main();
        return;
    }
    let opts = Opts::parse();
    eprintln!(
        "soak: {:?} of mixed load (scale {}), sampling every {:?}",
        opts.duration, opts.scale, opts.sample
    );

    eprintln!("soak: starting the Temporal dev server ...");
    let dev = temporal::DevServer::start(&temporal::DevServerOpts::default());
    let echo = echo::EchoProcess::spawn(1).expect("echo backend");
    let echo_listen = SocketAddr::from(([127, 0, 0, 1], temporal::free_port()));
    let (temporal_addr, echo_addr) = (dev.address(), echo.addr);
    let mut strait = temporal::Strait::start_config(|listen, admin| {
        strait_config(listen, admin, echo_listen, &temporal_addr, echo_addr)
    });
    let pid = strait.pid();
    eprintln!(
        "soak: Strait {pid} on {} (Temporal) and {echo_listen} (echo)",
        strait.address()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("soak")
        .enable_all()
        .build()
        .expect("load runtime");
    let ctx = Ctx {
        stats: Arc::default(),
        stop: CancellationToken::new(),
        temporal: strait.address().parse().expect("listener address"),
        echo: echo_listen,
    };
    let mut workers = Vec::new();
    for seed in 0..4u8 {
        let period = opts.period(50.0);
        workers.push(rt.spawn(echo_unary(ctx.clone(), Kind::Unary100B, 100, period, seed)));
    }
    for seed in 0..2u8 {
        let period = opts.period(10.0);
        workers.push(rt.spawn(echo_unary(
            ctx.clone(),
            Kind::Unary64KiB,
            64 * 1024,
            period,
            seed,
        )));
    }
    for seed in 0..4u8 {
        workers.push(rt.spawn(echo_bidi(ctx.clone(), opts.period(25.0), seed)));
    }
    for _ in 0..2 {
        workers.push(rt.spawn(temporal_unary(ctx.clone(), opts.period(10.0))));
    }
    workers.push(rt.spawn(workflows(ctx.clone(), opts.period(0.5))));
    for i in 0..2 {
        for activity in [false, true] {
            let queue = format!("strait-soak-idle-{}-{i}", std::process::id());
            workers.push(rt.spawn(long_poll(ctx.clone(), activity, queue)));
        }
    }

    // Sample on this thread while the runtime's threads run the load.
    let started = Instant::now();
    let mut samples = vec![Sample {
        at: Duration::ZERO,
        rss_kib: procstat::status_kib(pid, "VmRSS").unwrap_or(0),
        tasks: alive_tasks(&strait),
        calls: 0,
        errors: 0,
    }];
    let mut next = opts.sample;
    let mut died = false;
    while next <= opts.duration {
        std::thread::sleep((started + next).saturating_duration_since(Instant::now()));
        if !strait.is_running() {
            died = true;
            break;
        }
        let (calls, errors) = ctx.stats.totals();
        let sample = Sample {
            at: started.elapsed(),
            rss_kib: procstat::status_kib(pid, "VmRSS").unwrap_or(0),
            tasks: alive_tasks(&strait),
            calls,
            errors,
        };
        eprintln!(
            "soak: {:>6.0} s  RSS {:>6} MiB  tasks {:>4}  calls {:>8}  errors {}",
            sample.at.as_secs_f64(),
            mib(sample.rss_kib as f64),
            sample.tasks,
            sample.calls,
            sample.errors
        );
        samples.push(sample);
        next += opts.sample;
    }
    ctx.stop.cancel();
    let stuck = rt.block_on(async {
        let mut stuck = 0;
        let deadline = tokio::time::Instant::now() + DRAIN;
        for worker in workers {
            if tokio::time::timeout_at(deadline, worker).await.is_err() {
                stuck += 1;
            }
        }
        stuck
    });
    let elapsed = started.elapsed();
    died |= !strait.is_running();
    let ready = matches!(
        temporal::http_get(strait.admin_address(), "/readyz"),
        Ok((200, body)) if temporal::readyz_all_ok(&body)
    );
    // Strait's own log (warn and above) next to the report: what it said about any failure.
    let strait_log = strait.log();
    let log_lines = strait_log.lines().count();
    let log_path = opts.out.with_extension("strait.log");
    if let Some(dir) = log_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&log_path, &strait_log) {
        eprintln!("soak: could not write {}: {e}", log_path.display());
    }

    let report = report(
        &opts, &ctx.stats, &samples, elapsed, stuck, died, ready, log_lines,
    );
    println!("{}", report.text);
    if let Some(dir) = opts.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&opts.out, &report.text) {
        Ok(()) => eprintln!("soak: report written to {}", opts.out.display()),
        Err(e) => eprintln!("soak: could not write {}: {e}", opts.out.display()),
    }
    drop(rt);
    drop(strait);
    drop(echo);
    drop(dev);
    if !report.passed {
        eprintln!("soak: FAILED");
        std::process::exit(1);
    }
    eprintln!("soak: passed");
}

struct Report {
    text: String,
    passed: bool,
}

#[allow(clippy::too_many_arguments)]
fn report(
    opts: &Opts,
    stats: &Stats,
    samples: &[Sample],
    elapsed: Duration,
    stuck: usize,
    died: bool,
    ready: bool,
    log_lines: usize,
) -> Report {
    let mut out = String::new();
    let mut failures: Vec<String> = Vec::new();
    let _ = writeln!(out, "# Strait soak\n");
    let _ = writeln!(
        out,
        "{:.0} s of mixed load (scale {}) through one Strait process (commit {}), against a \
         Temporal dev server and the echo backend; Strait's RSS and live tasks sampled every {:?}.\n",
        opts.duration.as_secs_f64(),
        opts.scale,
        report::git_describe().unwrap_or_else(|| "unknown".into()),
        opts.sample
    );

    let _ = writeln!(out, "## Calls\n");
    let _ = writeln!(
        out,
        "| kind | ok | errors | mean | min | max |\n|---|---:|---:|---:|---:|---:|"
    );
    let ms = |us: u64| format!("{:.1} ms", us as f64 / 1000.0);
    for (kind, name) in KINDS {
        let k = stats.of(kind);
        let ok = k.ok.load(Ordering::Relaxed);
        let errors = k.errors.load(Ordering::Relaxed);
        let cut = k.cut.load(Ordering::Relaxed);
        let mean = k
            .total_us
            .load(Ordering::Relaxed)
            .checked_div(ok)
            .unwrap_or(0);
        let name = if cut > 0 {
            format!("{name}; {cut} open at the end, cancelled")
        } else {
            name.to_owned()
        };
        let _ = writeln!(
            out,
            "| {name} | {ok} | {errors} | {} | {} | {} |",
            ms(mean),
            ms(k.min_us.load(Ordering::Relaxed)),
            ms(k.max_us.load(Ordering::Relaxed))
        );
        if errors > 0 {
            let first = k.first_errors.lock().unwrap_or_else(|p| p.into_inner());
            failures.push(format!(
                "{name}: {errors} errors, first: {}",
                first.join("; ")
            ));
        }
        let is_poll = matches!(kind, Kind::PollWorkflow | Kind::PollActivity);
        if ok == 0 && (!is_poll || opts.duration >= LONG_POLLS_EXPECTED_AFTER) {
            failures.push(format!("{name}: no call completed"));
        }
    }
    let (calls, errors) = stats.totals();
    let _ = writeln!(out, "\n{calls} calls OK, {errors} errors.\n");

    let loaded: Vec<&Sample> = samples.iter().filter(|s| !s.at.is_zero()).collect();
    let _ = writeln!(out, "## Strait over time\n");
    let _ = writeln!(
        out,
        "| t (s) | RSS (MiB) | live tasks | calls | errors |\n|---:|---:|---:|---:|---:|"
    );
    for s in samples {
        let _ = writeln!(
            out,
            "| {:.0} | {} | {} | {} | {} |",
            s.at.as_secs_f64(),
            mib(s.rss_kib as f64),
            s.tasks,
            s.calls,
            s.errors
        );
    }
    let rss: Vec<(Duration, f64)> = loaded.iter().map(|s| (s.at, s.rss_kib as f64)).collect();
    let tasks: Vec<(Duration, f64)> = loaded.iter().map(|s| (s.at, s.tasks)).collect();
    let values = |v: &[(Duration, f64)]| v.iter().map(|(_, x)| *x).collect::<Vec<_>>();
    let first_last = |v: &[(Duration, f64)]| {
        (
            v.first().map(|x| x.1).unwrap_or(f64::NAN),
            v.last().map(|x| x.1).unwrap_or(f64::NAN),
        )
    };
    let (rss_first, rss_last) = first_last(&rss);
    let (tasks_first, tasks_last) = first_last(&tasks);
    let (rss_a, rss_b, rss_ok) = plateau(&rss, opts.duration, RSS_SLACK_KIB);
    let (tasks_a, tasks_b, tasks_ok) = plateau(&tasks, opts.duration, TASK_SLACK);
    let _ = writeln!(out, "\n## Plateau\n");
    let _ = writeln!(
        out,
        "| | first | median | last | max, first third | max, last third | rule | |\n\
         |---|---:|---:|---:|---:|---:|---|---|"
    );
    let _ = writeln!(
        out,
        "| RSS (MiB) | {} | {} | {} | {} | {} | ≤ first third × {GROWTH} + {} MiB | {} |",
        mib(rss_first),
        mib(median(values(&rss))),
        mib(rss_last),
        mib(rss_a),
        mib(rss_b),
        RSS_SLACK_KIB / 1024.0,
        if rss_ok { "ok" } else { "GROWING" }
    );
    let _ = writeln!(
        out,
        "| live tasks | {tasks_first} | {} | {tasks_last} | {tasks_a} | {tasks_b} | ≤ first third × {GROWTH} + {TASK_SLACK} | {} |",
        median(values(&tasks)),
        if tasks_ok { "ok" } else { "GROWING" }
    );
    if rss.len() < 3 {
        failures.push("too few samples for a plateau check".into());
    }
    if !rss_ok {
        failures.push(format!(
            "RSS kept growing: {} MiB in the first third, {} MiB in the last",
            mib(rss_a),
            mib(rss_b)
        ));
    }
    if !tasks_ok {
        failures.push(format!(
            "live tasks kept growing: {tasks_a} in the first third, {tasks_b} in the last"
        ));
    }
    if died {
        failures.push("Strait died".into());
    }
    if !ready {
        failures.push("Strait's /readyz did not answer 200 with every check ok at the end".into());
    }
    if stuck > 0 {
        failures.push(format!("{stuck} workers did not stop within {DRAIN:?}"));
    }
    let _ = writeln!(
        out,
        "\nRun: {:.0} s (load and drain). Strait log lines at warn and above: {log_lines} (in {}).\n",
        elapsed.as_secs_f64(),
        opts.out.with_extension("strait.log").display()
    );
    let passed = failures.is_empty();
    if passed {
        let _ = writeln!(
            out,
            "**Result: passed** (no errors; RSS and live tasks plateau)."
        );
    } else {
        let _ = writeln!(out, "**Result: FAILED**\n");
        for failure in &failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    Report { text: out, passed }
}
