//! Replication benchmark: how fast workflows started on cluster A show up on cluster B, linked
//! directly vs through two Strait processes (tcp, and mux with mutual TLS), and what Strait costs
//! per replicated workflow (CPU seconds from `/proc/<pid>/stat`, and peak RSS).
//!
//! Run: `cargo bench --bench replication` (options after `--`; `--help` lists them), or
//! `STRAIT_BENCH_QUICK=1 cargo bench --bench replication` for a short run. Needs the test venv
//! (`scripts/setup-test-env.sh`). The table is printed and written to `target/bench-replication.md`.
//!
//! The modes run in rounds (direct, tcp, mux; direct, tcp, mux; ...), so that load from elsewhere
//! on the machine spreads over all of them. Each run:
//! - fresh clusters: the two patched dev servers of the test bed (`tests/support/testbed.rs`),
//!   A = `active`, B = `standby`;
//! - for tcp and mux, Strait A and Strait B as separate processes from the shipped
//!   `config/s2s-{tcp,mux}-{a,b}.toml` on free ports (`tests/support/s2s.rs`); each cluster is
//!   told the other lives at its own Strait's local listener, so all cross-cluster traffic
//!   (replication streams, namespace replication, DescribeCluster) crosses both;
//! - a global namespace created on A, replicated to B, replication streams up;
//! - `tests/python/replication_load.py` (Python SDK, connected straight to both clusters) starts a
//!   warm-up batch, then N workflows on A with C starts in flight, and polls B's visibility count
//!   until all N are there. Time: first start to all N counted on B. CPU of both Strait processes,
//!   both servers and the whole machine is sampled at the batch's edges.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use strait_test_support::bench::procstat;
use strait_test_support::bench::report;
use strait_test_support::json::{self, JsonExt, Value};
use strait_test_support::s2s;
use strait_test_support::temporal::{unique, Interactive};
use strait_test_support::testbed::{TwoClusters, TwoClustersOpts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Direct,
    Strait(s2s::Mode),
}

impl Link {
    const ALL: [Link; 3] = [
        Link::Direct,
        Link::Strait(s2s::Mode::Tcp),
        Link::Strait(s2s::Mode::Mux),
    ];

    fn key(self) -> &'static str {
        match self {
            Link::Direct => "direct",
            Link::Strait(mode) => mode.name(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Link::Direct => "direct",
            Link::Strait(s2s::Mode::Tcp) => "Strait tcp",
            Link::Strait(s2s::Mode::Mux) => "Strait mux (mTLS)",
        }
    }
}

/// Replication benchmark: workflows replicated from cluster A to B, direct and through a Strait
/// pair (the file's doc says what is measured and how).
#[derive(clap::Parser)]
#[command(
    name = "replication bench",
    override_usage = "cargo bench --bench replication -- [OPTIONS] [MODE]..."
)]
struct Args {
    /// direct, tcp, mux [default: all three, in that order]
    #[arg(value_name = "MODE", value_parser = parse_link)]
    links: Vec<Link>,
    /// Workflows measured per run [default: 1000, quick 200; env STRAIT_BENCH_WORKFLOWS]
    #[arg(long, value_name = "N")]
    workflows: Option<usize>,
    /// Rounds: runs per mode, each on fresh clusters [default: 3, quick 2; env STRAIT_BENCH_REPS]
    #[arg(long, value_name = "R")]
    reps: Option<usize>,
    /// Workflow starts in flight
    #[arg(long, value_name = "C", default_value_t = 64)]
    concurrency: usize,
    /// Warm-up workflows per run, not measured [default: 50, quick 20]
    #[arg(long, value_name = "N")]
    warmup: Option<usize>,
    /// Limit per batch of workflows, seconds
    #[arg(long, value_name = "S", default_value_t = 180.0)]
    timeout: f64,
    /// The quick defaults (also env STRAIT_BENCH_QUICK=1)
    #[arg(long)]
    quick: bool,
    /// Strait binary [default: the one cargo built]
    #[arg(long, value_name = "PATH")]
    strait: Option<PathBuf>,
    /// Markdown output [default: target/bench-replication.md]
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Passed by `cargo bench` to every harness = false bench; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_link(s: &str) -> Result<Link, String> {
    Link::ALL
        .iter()
        .find(|l| l.key() == s.to_lowercase())
        .copied()
        .ok_or_else(|| format!("unknown mode {s:?}"))
}

struct Opts {
    workflows: usize,
    reps: usize,
    concurrency: usize,
    warmup: usize,
    timeout: f64,
    quick: bool,
    strait: PathBuf,
    out: PathBuf,
    links: Vec<Link>,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl Opts {
    fn parse() -> Opts {
        let args = <Args as clap::Parser>::parse();
        let quick = args.quick
            || std::env::var("STRAIT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut opts = Opts {
            workflows: args
                .workflows
                .or_else(|| env_usize("STRAIT_BENCH_WORKFLOWS"))
                .unwrap_or(if quick { 200 } else { 1000 })
                .max(1),
            reps: args
                .reps
                .or_else(|| env_usize("STRAIT_BENCH_REPS"))
                .unwrap_or(if quick { 2 } else { 3 })
                .max(1),
            concurrency: args.concurrency.max(1),
            warmup: args.warmup.unwrap_or(if quick { 20 } else { 50 }),
            timeout: args.timeout,
            quick,
            strait: args
                .strait
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strait"))),
            out: args
                .out
                .unwrap_or_else(|| report::target_dir().join("bench-replication.md")),
            links: args.links,
        };
        if opts.links.is_empty() {
            opts.links = Link::ALL.to_vec();
        }
        assert!(opts.timeout > 0.0, "--timeout must be > 0");
        opts
    }
}

/// CPU ticks of the processes of one run, and the machine's busy ticks.
#[derive(Clone, Copy, Default)]
struct Ticks {
    strait: [Option<u64>; 2],
    temporal: [Option<u64>; 2],
    system: Option<u64>,
}

/// One run: fresh clusters (and Strait pair), one measured batch.
struct Rep {
    workflows: usize,
    /// First start → last start acknowledged by A.
    start_s: f64,
    /// First start → all workflows counted on B.
    replicated_s: f64,
    /// CPU seconds of Strait A and B over the batch.
    strait_cpu: [Option<f64>; 2],
    /// CPU seconds of cluster A and B.
    temporal_cpu: [Option<f64>; 2],
    /// CPU seconds of the whole machine.
    system_cpu: Option<f64>,
    /// Peak RSS (VmHWM) of Strait A and B at the end, KiB.
    strait_hwm_kib: [Option<u64>; 2],
    server_version: String,
    /// Clusters, Strait, link, namespace, streams, load generator connected.
    setup_s: f64,
}

impl Rep {
    fn rate(&self) -> f64 {
        self.workflows as f64 / self.replicated_s
    }

    fn sum(cpu: [Option<f64>; 2]) -> Option<f64> {
        Some(cpu[0]? + cpu[1]?)
    }

    /// Strait A + B CPU milliseconds per replicated workflow.
    fn strait_ms_per_workflow(&self) -> Option<f64> {
        Some(Self::sum(self.strait_cpu)? * 1000.0 / self.workflows as f64)
    }

    fn temporal_ms_per_workflow(&self) -> Option<f64> {
        Some(Self::sum(self.temporal_cpu)? * 1000.0 / self.workflows as f64)
    }

    /// CPU of everything else on the machine (the load generator, other users' work) over the
    /// batch, in cores.
    fn other_cores(&self) -> Option<f64> {
        let known = Self::sum(self.temporal_cpu)? + Self::sum(self.strait_cpu).unwrap_or(0.0);
        Some((self.system_cpu? - known).max(0.0) / self.replicated_s)
    }
}

fn run_once(opts: &Opts, link: Link, tck: u64) -> Result<Rep, String> {
    let begin = Instant::now();
    let clusters = TwoClusters::start_unlinked(&TwoClustersOpts {
        budget: Duration::from_secs(300),
        ..TwoClustersOpts::default()
    });
    let (a, b) = (clusters.a.address(), clusters.b.address());
    let pair = match link {
        Link::Direct => {
            clusters.link_direct();
            None
        }
        Link::Strait(mode) => {
            let pair = s2s::StraitPair::start(
                &opts.strait,
                mode,
                &a,
                &b,
                false,
                clusters.dir(),
                Duration::from_secs(60),
            )?;
            let (b_for_a, a_for_b) = pair.link_addresses();
            clusters.link(&b_for_a, &a_for_b);
            Some(pair)
        }
    };
    let ns = unique("bench");
    clusters.create_global_namespace(&ns);
    clusters.wait_streams();
    let mut load = Interactive::python(
        "replication_load.py",
        &["--a", &a, "--b", &b, "--namespace", &ns],
    );
    expect_event(&load.next_line(Duration::from_secs(60)), "ready")?;
    let setup_s = begin.elapsed().as_secs_f64();
    let line_timeout = Duration::from_secs_f64(opts.timeout + 30.0);
    let mut batch = |prefix: &str, count: usize| -> Result<Value, String> {
        load.send_line(&format!(
            r#"{{"prefix": "{prefix}", "count": {count}, "concurrency": {}, "timeout": {}}}"#,
            opts.concurrency, opts.timeout
        ));
        expect_event(&load.next_line(line_timeout), "done")
    };
    if opts.warmup > 0 {
        batch("warmup", opts.warmup)?;
    }
    let strait_pids = match &pair {
        Some(p) => [Some(p.a.pid()), Some(p.b.pid())],
        None => [None, None],
    };
    let temporal_pids = [clusters.a.pid(), clusters.b.pid()];
    let sample = || Ticks {
        strait: strait_pids.map(|p| p.and_then(procstat::cpu_ticks)),
        temporal: temporal_pids.map(procstat::cpu_ticks),
        system: procstat::system_busy_ticks(),
    };
    let before = sample();
    let done = batch("bench", opts.workflows)?;
    let after = sample();
    let both = |f: fn(&Ticks) -> [Option<u64>; 2]| {
        let (x, y) = (f(&before), f(&after));
        [
            procstat::cpu_delta(x[0], y[0], tck),
            procstat::cpu_delta(x[1], y[1], tck),
        ]
    };
    let rep = Rep {
        workflows: opts.workflows,
        start_s: num(&done, "/start_s").ok_or("no start_s")?,
        replicated_s: num(&done, "/replicated_s").ok_or("no replicated_s")?,
        strait_cpu: both(|t| t.strait),
        temporal_cpu: both(|t| t.temporal),
        system_cpu: procstat::cpu_delta(before.system, after.system, tck),
        strait_hwm_kib: strait_pids.map(|p| p.and_then(|pid| procstat::status_kib(pid, "VmHWM"))),
        server_version: clusters.a.server_version.clone(),
        setup_s,
    };
    if let Some(mut p) = pair {
        for s in [&mut p.a, &mut p.b] {
            if !s.alive() {
                return Err(format!(
                    "{} died during the run; log tail:\n{}",
                    s.name,
                    s.log_tail(20)
                ));
            }
        }
    }
    drop(load);
    Ok(rep)
}

fn expect_event(line: &str, event: &str) -> Result<Value, String> {
    let json = json::parse(line).map_err(|e| format!("load script printed {line:?}: {e}"))?;
    if json.str_at("/event") == Some(event) {
        Ok(json)
    } else {
        Err(format!("load script: expected {event:?}, got {line}"))
    }
}

fn num(json: &Value, key: &str) -> Option<f64> {
    json.pointer(key).and_then(json::number)
}

fn fmt_s(s: Option<f64>) -> String {
    s.map_or("?".into(), |s| format!("{s:.2} s"))
}

/// Median, min and max.
fn stats(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

fn fmt_stats(values: &[f64], digits: usize) -> String {
    match stats(values) {
        Some((med, min, max)) if values.len() > 1 => {
            format!("{med:.digits$} ({min:.digits$}–{max:.digits$})")
        }
        Some((med, _, _)) => format!("{med:.digits$}"),
        None => "–".into(),
    }
}

fn main() {
    s2s::reap_children_on_signal();
    let opts = Opts::parse();
    if opts.links.iter().any(|l| *l != Link::Direct) && !opts.strait.exists() {
        panic!("strait binary {:?} not found", opts.strait);
    }
    let tck = procstat::clk_tck();
    let began = Instant::now();
    let mut results: Vec<(Link, Vec<Result<Rep, String>>)> =
        opts.links.iter().map(|l| (*l, Vec::new())).collect();
    for round in 1..=opts.reps {
        for (link, runs) in &mut results {
            eprintln!(
                "replication bench: round {round}/{}, {} ...",
                opts.reps,
                link.label()
            );
            let outcome = catch_unwind(AssertUnwindSafe(|| run_once(&opts, *link, tck)))
                .unwrap_or_else(|panic| {
                    Err(panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "panicked".into()))
                });
            match &outcome {
                Ok(rep) => eprintln!(
                    "  set-up {:.0} s; {} workflows started in {}, all on B after {} = {:.1}/s; \
                     Strait CPU {} ms/workflow",
                    rep.setup_s,
                    rep.workflows,
                    fmt_s(Some(rep.start_s)),
                    fmt_s(Some(rep.replicated_s)),
                    rep.rate(),
                    rep.strait_ms_per_workflow()
                        .map_or("–".into(), |ms| format!("{ms:.3}"))
                ),
                Err(e) => eprintln!("  FAILED: {e}"),
            }
            runs.push(outcome);
        }
    }
    let report = render(&opts, &results, began.elapsed());
    println!("{report}");
    match std::fs::write(&opts.out, &report) {
        Ok(()) => eprintln!("replication bench: written to {}", opts.out.display()),
        Err(e) => eprintln!("replication bench: writing {}: {e}", opts.out.display()),
    }
    if results
        .iter()
        .flat_map(|(_, runs)| runs)
        .any(Result::is_err)
    {
        std::process::exit(1);
    }
}

type Results = [(Link, Vec<Result<Rep, String>>)];

/// `f` of each of a link's successful runs.
fn column(runs: &[Result<Rep, String>], f: impl Fn(&Rep) -> Option<f64>) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.as_ref().ok())
        .filter_map(f)
        .collect()
}

fn render(opts: &Opts, results: &Results, took: Duration) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let server = results
        .iter()
        .flat_map(|(_, runs)| runs)
        .find_map(|r| r.as_ref().ok().map(|r| r.server_version.clone()))
        .unwrap_or_else(|| "?".into());
    let mut r = String::new();
    let _ = writeln!(r, "## Strait replication benchmark\n");
    let _ = writeln!(
        r,
        "Two patched Temporal dev servers (Server {server}, clusters `active` → `standby`) on \
         127.0.0.1, {cpus} CPUs shared by everything; strait `{}`. {} round(s) of the modes in \
         turn; each run: fresh clusters, a global namespace, {} warm-up workflows, then {} \
         workflows started on A by the Python SDK ({} starts in flight, connected straight to the \
         clusters), timed from the first start until B's visibility counts all of them. Strait A \
         and B are separate processes with the shipped `config/s2s-{{tcp,mux}}-{{a,b}}.toml` \
         (ports moved); their CPU (utime + stime, both processes) is per replicated workflow. \
         \"On B after last start\" is how long B took to count the last workflows after A had \
         acknowledged every start. Median (min–max) over the rounds{}. Whole run: {:.0} s.\n",
        report::git_describe().unwrap_or_else(|| "?".into()),
        opts.reps,
        opts.warmup,
        opts.workflows,
        opts.concurrency,
        if opts.quick { "; quick mode" } else { "" },
        took.as_secs_f64(),
    );
    let median = |v: &[f64]| stats(v).map(|(m, _, _)| m);
    let direct = results.iter().find(|(l, _)| *l == Link::Direct);
    let direct_rate = direct.and_then(|(_, runs)| median(&column(runs, |r| Some(r.rate()))));
    let direct_temporal =
        direct.and_then(|(_, runs)| median(&column(runs, Rep::temporal_ms_per_workflow)));
    let ratio = |value: Option<f64>, base: Option<f64>| match (value, base) {
        (Some(v), Some(d)) if d > 0.0 => format!("{:.2}", v / d),
        _ => "–".into(),
    };
    let _ = writeln!(
        r,
        "| link | workflows/s | vs direct | on B after last start | Strait CPU ms / workflow (A+B) | Strait peak RSS A / B | Temporal CPU ms / workflow (A+B) | vs direct |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (link, runs) in results {
        let rates = column(runs, |r| Some(r.rate()));
        if rates.is_empty() {
            let _ = writeln!(r, "| {} | failed | | | | | | |", link.label());
            continue;
        }
        let strait = column(runs, Rep::strait_ms_per_workflow);
        let temporal = column(runs, Rep::temporal_ms_per_workflow);
        let lag = column(runs, |r| Some(r.replicated_s - r.start_s));
        let hwm = |side: usize| {
            runs.iter()
                .filter_map(|r| r.as_ref().ok()?.strait_hwm_kib[side])
                .max()
        };
        let rss = match (hwm(0), hwm(1)) {
            (Some(a), Some(b)) => {
                format!("{:.1} / {:.1} MiB", a as f64 / 1024.0, b as f64 / 1024.0)
            }
            _ => "–".into(),
        };
        let failed = runs.iter().filter(|r| r.is_err()).count();
        let _ = writeln!(
            r,
            "| {}{} | {} | {} | {} s | {} | {} | {} | {} |",
            link.label(),
            if failed > 0 {
                format!(" ({failed} run(s) failed)")
            } else {
                String::new()
            },
            fmt_stats(&rates, 1),
            ratio(median(&rates), direct_rate),
            fmt_stats(&lag, 2),
            if *link == Link::Direct {
                "–".into()
            } else {
                fmt_stats(&strait, 3)
            },
            rss,
            fmt_stats(&temporal, 2),
            ratio(median(&temporal), direct_temporal),
        );
    }

    let _ = writeln!(
        r,
        "\nPer run (\"other\" is every other process on the machine, the load generator included, \
         in cores; when it is high the run is noisy):\n"
    );
    let _ = writeln!(
        r,
        "| link | round | set-up | all started after | all on B after | workflows/s | Strait CPU-s A / B | Temporal CPU-s A / B | other |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for (link, runs) in results {
        for (i, run) in runs.iter().enumerate() {
            let rep = match run {
                Ok(rep) => rep,
                Err(e) => {
                    notes.push(format!("{} round {}: {e}", link.label(), i + 1));
                    continue;
                }
            };
            let pair = |cpu: [Option<f64>; 2]| match cpu {
                [Some(a), Some(b)] => format!("{a:.2} / {b:.2}"),
                _ => "–".into(),
            };
            let _ = writeln!(
                r,
                "| {} | {} | {:.0} s | {} | {} | {:.1} | {} | {} | {} |",
                link.label(),
                i + 1,
                rep.setup_s,
                fmt_s(Some(rep.start_s)),
                fmt_s(Some(rep.replicated_s)),
                rep.rate(),
                pair(rep.strait_cpu),
                pair(rep.temporal_cpu),
                rep.other_cores().map_or("?".into(), |c| format!("{c:.2}")),
            );
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(r, "\nFailures:\n");
        for n in notes {
            let first: String = n.lines().take(12).collect::<Vec<_>>().join("\n  ");
            let _ = writeln!(r, "- {first}");
        }
    }
    r
}
