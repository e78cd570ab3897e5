//! Relay benchmark: Strait against its peers. Unary and bidi-stream
//! throughput, latency at a fixed rate, the proxy's CPU seconds per 100k calls
//! and its peak RSS, for 100 B and 64 KiB messages, on loopback. Rows:
//!
//! - `direct`: client → echo backend;
//! - `strait`: client → Strait (pass-through) → echo;
//! - `strait-translate`: Strait renaming the namespace in every message, each
//!   way (`bench` ↔ `bench-upstream`);
//! - `nginx` (`grpc_pass`), `haproxy` (h2 on both sides), `envoy`.
//!
//! Run: `cargo bench --bench relay` (options after `--`, e.g.
//! `cargo bench --bench relay -- --seconds 3 --rows direct,strait unary`;
//! `--help` lists them); `scripts/bench-peers.sh` installs the peers and runs
//! everything. Results are printed as Markdown and written to
//! `target/bench-relay.md`.
//!
//! Processes (each scheduled and CPU-accounted separately):
//! - this process: orchestration + the h2 load generator (its own tokio
//!   runtime, `--client-threads` workers);
//! - the echo backend: this same binary re-executed as a child process (see
//!   `tests/support/bench/echo.rs`), `--echo-threads` workers, shared by all runs;
//! - the proxy: a fresh process per measurement (see `tests/support/bench/peers.rs`), one
//!   worker thread each (Strait `worker_threads = 1`, nginx
//!   `worker_processes 1` without a master, HAProxy `nbthread 1`, Envoy
//!   `--concurrency 1`).
//!
//! Per scenario, `--reps` repetitions; each repetition measures every row
//! once, in an order rotated by one each repetition (so no row is always
//! first or last). A measurement: start the proxy, connect, warm up
//! (`--warmup`), then a fixed window (`--seconds`) of closed-loop load:
//! calls completing inside the window count; CPU times (utime + stime from
//! `/proc/<pid>/stat`) are sampled at the window's edges; peak RSS is the
//! proxy's `VmHWM` after the window. Then, on the same proxy process, an
//! open-loop phase at a fixed rate (`--rate-100b`, `--rate-64k`) gives the
//! p50/p99 latency, measured from each call's scheduled time. For bidi, one
//! long-lived stream per concurrency slot ping-pongs one message at a time
//! and every message round trip counts as a call.
//!
//! Every call is checked (`:status`, echoed bytes, `grpc-status: 0`). A run
//! with any failed or stuck call, a proxy that died, or a translating row
//! whose upstream did not see the renamed namespace counts as failed: it is
//! listed in the table's "failed runs" column with its first error in the
//! notes, and left out of the medians.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use strait_test_support::bench::echo;
use strait_test_support::bench::load;
use strait_test_support::bench::load::{Kind, Outcome, Spec};
use strait_test_support::bench::peers;
use strait_test_support::bench::peers::{Binaries, Peer, ProxyProcess};
use strait_test_support::bench::procstat;
use strait_test_support::bench::report;

struct Scenario {
    name: &'static str,
    kind: Kind,
    msg_size: usize,
    concurrency: usize,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "unary 100 B",
        kind: Kind::Unary,
        msg_size: 100,
        concurrency: 128,
    },
    Scenario {
        name: "unary 64 KiB",
        kind: Kind::Unary,
        msg_size: 64 * 1024,
        concurrency: 64,
    },
    Scenario {
        name: "bidi 100 B",
        kind: Kind::Bidi,
        msg_size: 100,
        concurrency: 128,
    },
    Scenario {
        name: "bidi 64 KiB",
        kind: Kind::Bidi,
        msg_size: 64 * 1024,
        concurrency: 64,
    },
];

/// A row of the table: the direct baseline or one proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    Direct,
    Proxy(Peer),
}

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::Direct => "direct",
            Row::Proxy(p) => p.name(),
        }
    }

    fn parse(s: &str) -> Option<Row> {
        if s == "direct" {
            Some(Row::Direct)
        } else {
            Peer::parse(s).map(Row::Proxy)
        }
    }
}

const ALL_ROWS: [Row; 6] = [
    Row::Direct,
    Row::Proxy(Peer::Strait),
    Row::Proxy(Peer::StraitTranslate),
    Row::Proxy(Peer::Nginx),
    Row::Proxy(Peer::Haproxy),
    Row::Proxy(Peer::Envoy),
];

/// Relay benchmark: Strait against its peers (the file's doc says what is measured and how).
#[derive(clap::Parser)]
#[command(
    name = "relay bench",
    override_usage = "cargo bench --bench relay -- [OPTIONS] [FILTER]..."
)]
struct Args {
    /// Run only scenarios whose name contains a filter (spaces ignored, e.g. `unary100`, `bidi`,
    /// `64kib`)
    #[arg(value_name = "FILTER")]
    filters: Vec<String>,
    /// Rows to measure, in this order (default all: direct,strait,strait-translate,nginx,haproxy,
    /// envoy); the direct row always runs (ratios need it)
    #[arg(long, value_name = "A,B,...", value_delimiter = ',', value_parser = parse_row)]
    rows: Vec<Row>,
    /// Repetitions per scenario
    #[arg(long, value_name = "N", default_value_t = 3)]
    reps: usize,
    /// Measured window per run, seconds [default: 5, env STRAIT_BENCH_SECONDS]
    #[arg(long, value_name = "S")]
    seconds: Option<f64>,
    /// Warmup before each window, seconds [default: 1, env STRAIT_BENCH_WARMUP]
    #[arg(long, value_name = "S")]
    warmup: Option<f64>,
    /// Fixed-rate latency phase, calls/s, 100 B scenarios
    #[arg(long = "rate-100b", value_name = "R", default_value_t = 2000.0)]
    rate_small: f64,
    /// The same for the 64 KiB scenarios
    #[arg(long = "rate-64k", value_name = "R", default_value_t = 500.0)]
    rate_large: f64,
    /// Length of the fixed-rate phase, seconds (0 skips it)
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    latency_seconds: f64,
    /// Concurrent call slots in the fixed-rate phase
    #[arg(long, value_name = "N", default_value_t = 64)]
    latency_slots: usize,
    /// Client HTTP/2 connections
    #[arg(long, value_name = "K", default_value_t = 2)]
    connections: usize,
    /// Concurrent calls/streams, all scenarios [default: 128 for 100 B, 64 for 64 KiB]
    #[arg(long, value_name = "C")]
    concurrency: Option<usize>,
    /// Load generator tokio workers
    #[arg(long, value_name = "N", default_value_t = 1)]
    client_threads: usize,
    /// Echo backend tokio workers
    #[arg(long, value_name = "N", default_value_t = 1)]
    echo_threads: usize,
    /// Strait [runtime] worker_threads
    #[arg(long, value_name = "N", default_value_t = 1)]
    strait_threads: usize,
    /// Strait connections to the echo backend
    #[arg(long, value_name = "N", default_value_t = 1)]
    upstream_connections: usize,
    /// Strait binary [default: the one cargo built]
    #[arg(long, value_name = "PATH")]
    strait: Option<PathBuf>,
    /// nginx binary [default: PATH and /usr/sbin]; a missing peer is reported as "not installed"
    #[arg(long, value_name = "PATH")]
    nginx: Option<PathBuf>,
    /// HAProxy binary [default: PATH and /usr/sbin]
    #[arg(long, value_name = "PATH")]
    haproxy: Option<PathBuf>,
    /// Envoy binary [default: PATH, /usr/sbin, target/venv-bench from scripts/bench-peers.sh, or
    /// env STRAIT_BENCH_ENVOY]
    #[arg(long, value_name = "PATH")]
    envoy: Option<PathBuf>,
    /// Markdown output [default: target/bench-relay.md]
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Same as --rows direct
    #[arg(long)]
    direct_only: bool,
    /// Run Strait under `valgrind --tool=callgrind`, count its instructions over the closed-loop
    /// window only (zeroed and dumped with callgrind_control at the window's edges) and report
    /// instructions per call (Ir/call); use with --rows strait[,strait-translate], a long
    /// --seconds, --latency-seconds 0 and --reps 1
    #[arg(long)]
    callgrind: bool,
    /// Passed by `cargo bench` to every harness = false bench; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_row(s: &str) -> Result<Row, String> {
    Row::parse(s.trim()).ok_or_else(|| format!("unknown row {s:?}"))
}

struct Opts {
    seconds: f64,
    warmup: f64,
    reps: usize,
    rows: Vec<Row>,
    rate_small: f64,
    rate_large: f64,
    latency_seconds: f64,
    latency_slots: usize,
    connections: usize,
    concurrency: Option<usize>,
    client_threads: usize,
    echo_threads: usize,
    strait_threads: usize,
    upstream_connections: usize,
    strait: PathBuf,
    nginx: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    envoy: Option<PathBuf>,
    out: PathBuf,
    filters: Vec<String>,
    callgrind: bool,
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl Opts {
    fn parse() -> Self {
        let args = <Args as clap::Parser>::parse();
        let mut rows = if args.direct_only {
            vec![Row::Direct]
        } else if args.rows.is_empty() {
            ALL_ROWS.to_vec()
        } else {
            args.rows
        };
        if !rows.contains(&Row::Direct) {
            rows.insert(0, Row::Direct);
        }
        let mut seen = Vec::new();
        rows.retain(|r| {
            let new = !seen.contains(r);
            seen.push(*r);
            new
        });
        let opts = Opts {
            seconds: args
                .seconds
                .or_else(|| env_f64("STRAIT_BENCH_SECONDS"))
                .unwrap_or(5.0),
            warmup: args
                .warmup
                .or_else(|| env_f64("STRAIT_BENCH_WARMUP"))
                .unwrap_or(1.0),
            reps: args.reps.max(1),
            rows,
            rate_small: args.rate_small,
            rate_large: args.rate_large,
            latency_seconds: args.latency_seconds,
            latency_slots: args.latency_slots.max(1),
            connections: args.connections.max(1),
            concurrency: args.concurrency.map(|c| c.max(1)),
            client_threads: args.client_threads.max(1),
            echo_threads: args.echo_threads.max(1),
            strait_threads: args.strait_threads.max(1),
            upstream_connections: args.upstream_connections.max(1),
            strait: args
                .strait
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strait"))),
            nginx: args.nginx,
            haproxy: args.haproxy,
            envoy: args.envoy,
            out: args
                .out
                .unwrap_or_else(|| report::target_dir().join("bench-relay.md")),
            filters: args.filters.iter().map(|f| normalize(f)).collect(),
            callgrind: args.callgrind,
        };
        assert!(opts.seconds > 0.0, "--seconds must be > 0");
        assert!(opts.warmup >= 0.0, "--warmup must be >= 0");
        assert!(
            opts.rate_small > 0.0 && opts.rate_large > 0.0,
            "rates must be > 0"
        );
        assert!(
            opts.latency_seconds >= 0.0,
            "--latency-seconds must be >= 0"
        );
        opts
    }

    fn selected(&self, s: &Scenario) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| normalize(s.name).contains(f))
    }

    fn rate(&self, s: &Scenario) -> f64 {
        if s.msg_size > 1024 {
            self.rate_large
        } else {
            self.rate_small
        }
    }
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// CPU ticks of the load generator (this process), the echo backend, the
/// proxy, and the whole machine (busy time).
#[derive(Clone, Copy)]
struct Sample {
    loadgen: Option<u64>,
    echo: Option<u64>,
    proxy: Option<u64>,
    system: Option<u64>,
}

/// One measurement of one row: the closed-loop window and the fixed-rate
/// phase, on one fresh proxy process.
struct Measurement {
    outcome: Outcome,
    loadgen_cpu_s: Option<f64>,
    echo_cpu_s: Option<f64>,
    proxy_cpu_s: Option<f64>,
    /// CPU used by everything else on the machine during the window (e.g.
    /// concurrent builds): a noise indicator.
    other_cpu_s: Option<f64>,
    proxy_hwm_kib: Option<u64>,
    proxy_log_lines: usize,
    /// The fixed-rate phase (None when skipped).
    paced: Option<Outcome>,
    /// Calls the fixed-rate phase scheduled.
    paced_due: u64,
    /// Why this run counts as failed (first reason), if it does.
    failure: Option<String>,
    /// The proxy's instructions over the window (`--callgrind`).
    instructions: Option<u64>,
}

impl Measurement {
    fn new(outcome: Outcome, before: Sample, after: Sample, tck: u64) -> Self {
        let loadgen_cpu_s = procstat::cpu_delta(before.loadgen, after.loadgen, tck);
        let echo_cpu_s = procstat::cpu_delta(before.echo, after.echo, tck);
        let proxy_cpu_s = procstat::cpu_delta(before.proxy, after.proxy, tck);
        let other_cpu_s = procstat::cpu_delta(before.system, after.system, tck).map(|total| {
            (total
                - loadgen_cpu_s.unwrap_or(0.0)
                - echo_cpu_s.unwrap_or(0.0)
                - proxy_cpu_s.unwrap_or(0.0))
            .max(0.0)
        });
        let failure = failure_of(&outcome, "");
        Self {
            outcome,
            loadgen_cpu_s,
            echo_cpu_s,
            proxy_cpu_s,
            other_cpu_s,
            proxy_hwm_kib: None,
            proxy_log_lines: 0,
            paced: None,
            paced_due: 0,
            failure,
            instructions: None,
        }
    }

    fn fail(&mut self, why: String) {
        self.failure.get_or_insert(why);
    }

    fn cpu_per_100k(&self) -> Option<f64> {
        let cpu = self.proxy_cpu_s?;
        (self.outcome.calls > 0).then(|| cpu / self.outcome.calls as f64 * 100_000.0)
    }
}

/// The first reason an outcome counts as failed.
fn failure_of(o: &Outcome, phase: &str) -> Option<String> {
    if o.failures == 0 && o.stuck == 0 {
        return None;
    }
    Some(format!(
        "{phase}{} failed call(s), {} stuck worker(s); first error: {}",
        o.failures,
        o.stuck,
        o.first_error.as_deref().unwrap_or("–")
    ))
}

/// Runs `callgrind_control FLAG PID` (`-z` zeroes the counters, `-d` dumps them).
fn callgrind_control(flag: &str, pid: u32) -> Result<(), String> {
    let out = std::process::Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("running callgrind_control: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "callgrind_control {flag} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The instruction total of the newest dump of process `pid` (its `summary:`
/// or `totals:` line; the first event is `Ir`).
fn callgrind_total(dir: &std::path::Path, pid: u32) -> Result<u64, String> {
    let prefix = format!("callgrind.out.{pid}.");
    let newest = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {dir:?}: {e}"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(|| format!("no {prefix}* dump in {dir:?}"))?;
    let text = std::fs::read_to_string(newest.path()).map_err(|e| format!("reading dump: {e}"))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no summary line in {:?}", newest.path()))
}

struct Bench {
    opts: Opts,
    rt: tokio::runtime::Runtime,
    echo: echo::EchoProcess,
    bins: Binaries,
    settings: peers::Settings,
    tck: u64,
    work_dir: PathBuf,
}

impl Bench {
    fn spec(&self, scenario: &Scenario, target: std::net::SocketAddr) -> Spec {
        Spec {
            target,
            kind: scenario.kind,
            msg_size: scenario.msg_size,
            concurrency: self.opts.concurrency.unwrap_or(scenario.concurrency),
            connections: self.opts.connections,
            warmup: Duration::from_secs_f64(self.opts.warmup),
            window: Duration::from_secs_f64(self.opts.seconds),
        }
    }

    /// The closed-loop window, then the fixed-rate phase.
    fn measure(
        &self,
        scenario: &Scenario,
        target: std::net::SocketAddr,
        proxy_pid: Option<u32>,
    ) -> Result<Measurement, String> {
        let me = std::process::id();
        let echo_pid = self.echo.pid();
        let spec = self.spec(scenario, target);
        // Under callgrind, the counters are zeroed as the window opens and
        // dumped as it closes, so startup, warmup and shutdown are left out.
        let callgrind_pid = proxy_pid.filter(|_| self.opts.callgrind);
        let mut edge = 0;
        let mut callgrind_error = None;
        let (outcome, before, after) = load::run(&self.rt, &spec, || {
            if let Some(pid) = callgrind_pid {
                let flag = if edge == 0 { "-z" } else { "-d" };
                edge += 1;
                if let Err(e) = callgrind_control(flag, pid) {
                    callgrind_error.get_or_insert(e);
                }
            }
            Sample {
                loadgen: procstat::cpu_ticks(me),
                echo: procstat::cpu_ticks(echo_pid),
                proxy: proxy_pid.and_then(procstat::cpu_ticks),
                system: procstat::system_busy_ticks(),
            }
        })?;
        let mut m = Measurement::new(outcome, before, after, self.tck);
        if let Some(pid) = callgrind_pid {
            match callgrind_error.map_or_else(|| callgrind_total(&self.work_dir, pid), Err) {
                Ok(ir) => m.instructions = Some(ir),
                Err(e) => m.fail(format!("callgrind: {e}")),
            }
        }
        m.proxy_hwm_kib = proxy_pid.and_then(|pid| procstat::status_kib(pid, "VmHWM"));
        if self.opts.latency_seconds > 0.0 {
            let rate = self.opts.rate(scenario);
            let duration = Duration::from_secs_f64(self.opts.latency_seconds);
            let paced_spec = Spec {
                concurrency: self.opts.latency_slots,
                ..spec
            };
            let paced = load::run_fixed_rate(&self.rt, &paced_spec, rate, duration)?;
            m.paced_due = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
            if let Some(why) = failure_of(&paced, "fixed-rate phase: ") {
                m.fail(why);
            }
            m.paced = Some(paced);
        }
        Ok(m)
    }

    fn run(&self, row: Row, scenario: &Scenario, rep: usize) -> Result<Measurement, String> {
        let peer = match row {
            Row::Direct => return self.measure(scenario, self.echo.addr, None),
            Row::Proxy(peer) => peer,
        };
        let bin = self
            .bins
            .get(peer)
            .ok_or_else(|| NOT_INSTALLED.to_string())?;
        let tag = format!("{}-{rep}", normalize(scenario.name));
        let mut proxy = ProxyProcess::start(
            &self.rt,
            peer,
            bin,
            &self.work_dir,
            &tag,
            self.echo.addr,
            &self.settings,
        )?;
        let translated_before = if peer == Peer::StraitTranslate {
            Some(load::echo_translated_count(&self.rt, self.echo.addr)?)
        } else {
            None
        };
        let mut m = self.measure(scenario, proxy.listen, Some(proxy.pid()))?;
        if let Some(before) = translated_before {
            // Every request message of the window (and of the warmup before
            // it) must have reached the backend renamed.
            let after = load::echo_translated_count(&self.rt, self.echo.addr)?;
            let seen = after.saturating_sub(before);
            if seen < m.outcome.calls || m.outcome.calls == 0 {
                m.fail(format!(
                    "translation not observed: the backend saw {seen} message(s) with namespace \
                     {:?} for {} call(s)",
                    echo::UPSTREAM_NAMESPACE,
                    m.outcome.calls
                ));
            }
            // And Strait's own count: one rename per request and one per
            // response.
            let rewrites = proxy
                .admin
                .and_then(|a| peers::metric_sum(a, "strait_rewrite_fields_total"))
                .unwrap_or(0.0);
            if rewrites < 2.0 * m.outcome.calls as f64 {
                m.fail(format!(
                    "strait_rewrite_fields_total is {rewrites} for {} call(s): not every \
                     message was translated each way",
                    m.outcome.calls
                ));
            }
        }
        m.proxy_log_lines = proxy.log_lines();
        if !proxy.alive() {
            m.fail(format!(
                "{} died during the run; log tail:\n{}",
                peer.name(),
                proxy.log_tail(20)
            ));
        }
        Ok(m)
    }
}

const NOT_INSTALLED: &str = "not installed";

/// Results of one row of one scenario, one entry per repetition.
struct RowResults {
    row: Row,
    runs: Vec<Result<Measurement, String>>,
}

struct ScenarioResults<'a> {
    scenario: &'a Scenario,
    rows: Vec<RowResults>,
}

fn main() {
    if std::env::var(echo::ROLE_ENV).as_deref() == Ok("echo") {
        echo::child_main();
        return;
    }
    let opts = Opts::parse();
    let target = report::target_dir();
    let work_dir = target.join("bench-relay");
    std::fs::create_dir_all(&work_dir).expect("creating target/bench-relay");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("load generator runtime");
    let echo = echo::EchoProcess::spawn(opts.echo_threads).expect("echo backend");
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
    let mut settings =
        peers::Settings::new(opts.strait_threads, opts.upstream_connections, descriptors);
    settings.callgrind = opts.callgrind;
    for v in bins.versions() {
        eprintln!("relay bench: {v}");
    }
    let bench = Bench {
        opts,
        rt,
        echo,
        bins,
        settings,
        tck: procstat::clk_tck(),
        work_dir,
    };

    let mut results = Vec::new();
    for scenario in SCENARIOS.iter().filter(|s| bench.opts.selected(s)) {
        let rows = &bench.opts.rows;
        let mut per_row: Vec<RowResults> = rows
            .iter()
            .map(|&row| RowResults {
                row,
                runs: Vec::new(),
            })
            .collect();
        for rep in 0..bench.opts.reps {
            for i in 0..rows.len() {
                let idx = (i + rep) % rows.len();
                let row = rows[idx];
                eprintln!(
                    "relay bench: {} rep {}/{} {} ...",
                    scenario.name,
                    rep + 1,
                    bench.opts.reps,
                    row.name()
                );
                let m = bench.run(row, scenario, rep);
                eprintln!("  {}", brief(&m));
                per_row[idx].runs.push(m);
            }
        }
        results.push(ScenarioResults {
            scenario,
            rows: per_row,
        });
    }

    let report = render(&bench, &results);
    println!("{report}");
    match std::fs::write(&bench.opts.out, &report) {
        Ok(()) => eprintln!("relay bench: written to {}", bench.opts.out.display()),
        Err(e) => eprintln!("relay bench: writing {}: {e}", bench.opts.out.display()),
    }
}

fn brief(m: &Result<Measurement, String>) -> String {
    match m {
        Ok(m) => {
            let mut s = format!(
                "{} calls/s, proxy CPU-s/100k {}",
                fmt_rate(m.outcome.calls_per_sec()),
                m.cpu_per_100k()
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_else(|| "–".into()),
            );
            if let Some(p) = &m.paced {
                let _ = write!(
                    s,
                    ", fixed rate p50/p99 {} ({} of {} calls)",
                    fmt_p50_p99(p),
                    p.calls,
                    m.paced_due
                );
            }
            if let Some(ir) = m.instructions {
                let per_call = ir as f64 / m.outcome.calls.max(1) as f64;
                let _ = write!(
                    s,
                    ", Ir/call {per_call:.0} ({ir} instructions / {} calls)",
                    m.outcome.calls
                );
            }
            if let Some(f) = &m.failure {
                let _ = write!(s, "; FAILED: {f}");
            }
            s
        }
        Err(e) => format!("FAILED: {e}"),
    }
}

fn fmt_rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_latency(ns: f64) -> String {
    let us = ns / 1000.0;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn fmt_p50_p99(o: &Outcome) -> String {
    match (o.percentile_ns(0.50), o.percentile_ns(0.99)) {
        (Some(p50), Some(p99)) => {
            format!("{} / {}", fmt_latency(p50 as f64), fmt_latency(p99 as f64))
        }
        _ => "–".to_string(),
    }
}

/// Median with min–max of the values, formatted by `f`; "–" when empty.
fn stat(values: &[f64], f: impl Fn(f64) -> String) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "–".into();
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    if n == 1 {
        f(median)
    } else {
        format!("{} ({}–{})", f(median), f(v[0]), f(v[n - 1]))
    }
}

fn render(bench: &Bench, results: &[ScenarioResults<'_>]) -> String {
    let o = &bench.opts;
    let mut r = String::new();
    let _ = writeln!(r, "## Relay benchmark: Strait and peers\n");
    let _ = writeln!(
        r,
        "Machine: {}. Loopback; every proxy a fresh process per run with one worker thread \
         (Strait `worker_threads = {}`, {} upstream connection(s)); {} client connection(s); \
         load generator {} thread(s), echo backend {} thread(s) (separate processes); \
         {} s window after {} s warmup per run, {} repetition(s) in rotated row order; \
         latency from an open-loop phase of {} s at {} calls/s (100 B) and {} calls/s \
         (64 KiB) over {} slots, measured from each call's scheduled time. A bidi \
         \"call\" is one message round trip on a long-lived ping-pong stream. Cells: median \
         (min–max) over the runs that did not fail.\n",
        report::machine(),
        o.strait_threads,
        o.upstream_connections,
        o.connections,
        o.client_threads,
        o.echo_threads,
        o.seconds,
        o.warmup,
        o.reps,
        o.latency_seconds,
        o.rate_small,
        o.rate_large,
        o.latency_slots,
    );
    let _ = writeln!(r, "Versions:\n");
    for v in bench.bins.versions() {
        let _ = writeln!(r, "- {v}");
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "| scenario | row | calls/s | × direct | proxy CPU-s per 100k calls | p50 at fixed rate | p99 at fixed rate | proxy peak RSS | failed runs | other load |"
    );
    let _ = writeln!(r, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for sr in results {
        let s = sr.scenario;
        let direct_rates: Vec<Option<f64>> = sr
            .rows
            .iter()
            .find(|rr| rr.row == Row::Direct)
            .map(|rr| {
                rr.runs
                    .iter()
                    .map(|m| match m {
                        Ok(m) if m.failure.is_none() => Some(m.outcome.calls_per_sec()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for rr in &sr.rows {
            if rr
                .runs
                .iter()
                .all(|m| matches!(m, Err(e) if e == NOT_INSTALLED))
            {
                let _ = writeln!(
                    r,
                    "| {} | {} | not installed | | | | | | | |",
                    s.name,
                    rr.row.name()
                );
                continue;
            }
            let ok: Vec<(usize, &Measurement)> = rr
                .runs
                .iter()
                .enumerate()
                .filter_map(|(rep, m)| match m {
                    Ok(m) if m.failure.is_none() => Some((rep, m)),
                    _ => None,
                })
                .collect();
            let failed = rr.runs.len() - ok.len();
            for (rep, m) in rr.runs.iter().enumerate() {
                let why = match m {
                    Ok(m) => m.failure.clone(),
                    Err(e) => Some(e.clone()),
                };
                if let Some(why) = why {
                    notes.push(format!(
                        "{} {} rep {}: {why}",
                        s.name,
                        rr.row.name(),
                        rep + 1
                    ));
                }
                if let Ok(m) = m {
                    if m.proxy_log_lines > 0 {
                        notes.push(format!(
                            "{} {} rep {}: the proxy logged {} line(s) at warning level or \
                             above (see {})",
                            s.name,
                            rr.row.name(),
                            rep + 1,
                            m.proxy_log_lines,
                            bench.work_dir.display()
                        ));
                    }
                    if let Some(p) = &m.paced {
                        let late = p.elapsed.as_secs_f64() > o.latency_seconds * 1.2 + 0.5;
                        if p.calls < m.paced_due || late {
                            notes.push(format!(
                                "{} {} rep {}: fixed rate not sustained: {} of {} calls in \
                                 {:.1} s (scheduled over {} s)",
                                s.name,
                                rr.row.name(),
                                rep + 1,
                                p.calls,
                                m.paced_due,
                                p.elapsed.as_secs_f64(),
                                o.latency_seconds
                            ));
                        }
                    }
                }
            }
            let vals = |f: &dyn Fn(usize, &Measurement) -> Option<f64>| -> Vec<f64> {
                ok.iter().filter_map(|&(rep, m)| f(rep, m)).collect()
            };
            let rate = vals(&|_, m| Some(m.outcome.calls_per_sec()));
            let ratio = vals(&|rep, m| {
                let d = direct_rates.get(rep).copied().flatten()?;
                (d > 0.0).then(|| m.outcome.calls_per_sec() / d)
            });
            let cpu = vals(&|_, m| m.cpu_per_100k());
            let p50 = vals(&|_, m| m.paced.as_ref()?.percentile_ns(0.50).map(|n| n as f64));
            let p99 = vals(&|_, m| m.paced.as_ref()?.percentile_ns(0.99).map(|n| n as f64));
            let rss = vals(&|_, m| m.proxy_hwm_kib.map(|k| k as f64 / 1024.0));
            let other =
                vals(&|_, m| Some(100.0 * m.other_cpu_s? / m.outcome.elapsed.as_secs_f64()));
            let is_direct = rr.row == Row::Direct;
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} |",
                s.name,
                rr.row.name(),
                stat(&rate, fmt_rate),
                if is_direct {
                    "1.00".into()
                } else {
                    stat(&ratio, |x| format!("{x:.2}"))
                },
                if is_direct {
                    "–".into()
                } else {
                    stat(&cpu, |x| format!("{x:.2}"))
                },
                stat(&p50, fmt_latency),
                stat(&p99, fmt_latency),
                if is_direct {
                    "–".into()
                } else {
                    stat(&rss, |x| format!("{x:.1} MiB"))
                },
                failed,
                rr.runs.len(),
                stat(&other, |x| format!("{x:.0}%")),
            );
        }
    }
    let _ = writeln!(
        r,
        "\n\"× direct\" compares each run with the direct run of the same repetition. \
         \"other load\" is the CPU used by every other process on the machine during the \
         window (e.g. concurrent builds), in % of one core: when it is high the run is noisy.\n"
    );
    let _ = writeln!(
        r,
        "Where the CPU went (median % of one core over the window: load generator / echo \
         backend / proxy):\n"
    );
    let _ = writeln!(r, "| scenario | row | loadgen | echo | proxy |");
    let _ = writeln!(r, "|---|---|---:|---:|---:|");
    for sr in results {
        for rr in &sr.rows {
            let pct = |f: fn(&Measurement) -> Option<f64>| {
                let v: Vec<f64> = rr
                    .runs
                    .iter()
                    .filter_map(|m| m.as_ref().ok())
                    .filter(|m| m.failure.is_none())
                    .filter_map(|m| Some(100.0 * f(m)? / m.outcome.elapsed.as_secs_f64()))
                    .collect();
                stat(&v, |x| format!("{x:.0}%"))
            };
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} |",
                sr.scenario.name,
                rr.row.name(),
                pct(|m| m.loadgen_cpu_s),
                pct(|m| m.echo_cpu_s),
                if rr.row == Row::Direct {
                    "–".into()
                } else {
                    pct(|m| m.proxy_cpu_s)
                },
            );
        }
    }
    notes.retain(|n| !n.ends_with(NOT_INSTALLED));
    if !notes.is_empty() {
        let _ = writeln!(r, "\nNotes:\n");
        for n in notes {
            let _ = writeln!(r, "- {}", n.replace('\n', "\n  "));
        }
    }
    r
}
