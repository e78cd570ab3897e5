//! Relay benchmark: unary and bidi-stream throughput, latency, and Strait's
//! CPU seconds per 100k calls and peak RSS, for 100 B and 64 KiB messages,
//! direct (client → echo) vs through Strait (client → strait → echo) on
//! loopback.
//!
//! Run: `cargo bench --bench relay` (options after `--`, e.g.
//! `cargo bench --bench relay -- --seconds 3 unary`; `--help` lists them).
//! Results are printed as Markdown and written to `target/bench-relay.md`.
//!
//! Processes (each scheduled and CPU-accounted separately):
//! - this process: orchestration + the h2 load generator (its own tokio
//!   runtime, `--client-threads` workers);
//! - the echo backend: this same binary re-executed as a child process (see
//!   `relay/echo.rs`), `--echo-threads` workers, shared by all scenarios;
//! - Strait: a fresh `strait run` per scenario, `worker_threads = 1`, started
//!   after the direct run so the direct figures never share the CPU with it.
//!
//! Per measurement: connect, warm up (`--warmup`, default 1 s), then a fixed
//! window (`--seconds`, default 5 s). Calls completing inside the window
//! count; CPU times (utime + stime from `/proc/<pid>/stat`) are sampled at the
//! window's edges. For bidi, one long-lived stream per concurrency slot
//! ping-pongs one message at a time and every message round trip counts as a
//! call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/common.rs"]
mod common;
#[path = "relay/echo.rs"]
mod echo;
#[path = "relay/load.rs"]
mod load;
#[path = "relay/procstat.rs"]
mod procstat;
#[path = "relay/strait.rs"]
mod strait;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use load::{Kind, Outcome, Spec};

#[path = "relay/h2cfg.rs"]
mod h2cfg;

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

const USAGE: &str = "\
relay bench: cargo bench --bench relay -- [OPTIONS] [FILTER...]

  FILTER                 run only scenarios whose name contains a filter
                         (spaces ignored, e.g. `unary100`, `bidi`, `64kib`)
  --seconds S            measured window per run (default 5, env STRAIT_BENCH_SECONDS)
  --warmup S             warmup before each window (default 1, env STRAIT_BENCH_WARMUP)
  --connections K        client HTTP/2 connections (default 2)
  --concurrency C        concurrent calls/streams, all scenarios (default 128 for
                         100 B, 64 for 64 KiB)
  --client-threads N     load generator tokio workers (default 1)
  --echo-threads N       echo backend tokio workers (default 1)
  --strait-threads N     Strait [runtime] worker_threads (default 1)
  --upstream-connections N  Strait connections to the echo backend (default 1)
  --strait PATH          Strait binary (default: the one cargo built)
  --out PATH             Markdown output (default target/bench-relay.md)
  --direct-only          skip the Strait runs
Unknown --flags (such as cargo's --bench) are ignored.
";

struct Opts {
    seconds: f64,
    warmup: f64,
    connections: usize,
    concurrency: Option<usize>,
    client_threads: usize,
    echo_threads: usize,
    strait_threads: usize,
    upstream_connections: usize,
    strait: PathBuf,
    out: PathBuf,
    direct_only: bool,
    filters: Vec<String>,
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl Opts {
    fn parse() -> Self {
        let mut opts = Opts {
            seconds: env_f64("STRAIT_BENCH_SECONDS").unwrap_or(5.0),
            warmup: env_f64("STRAIT_BENCH_WARMUP").unwrap_or(1.0),
            connections: 2,
            concurrency: None,
            client_threads: 1,
            echo_threads: 1,
            strait_threads: 1,
            upstream_connections: 1,
            strait: PathBuf::from(env!("CARGO_BIN_EXE_strait")),
            out: common::target_dir().join("bench-relay.md"),
            direct_only: false,
            filters: Vec::new(),
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
            fn num<T: std::str::FromStr>(flag: &str, v: String) -> T {
                v.parse()
                    .unwrap_or_else(|_| panic!("{flag}: invalid value {v:?}\n{USAGE}"))
            }
            match flag.as_str() {
                "--seconds" => opts.seconds = num(&flag, value(&flag)),
                "--warmup" => opts.warmup = num(&flag, value(&flag)),
                "--connections" => opts.connections = num::<usize>(&flag, value(&flag)).max(1),
                "--concurrency" => {
                    opts.concurrency = Some(num::<usize>(&flag, value(&flag)).max(1))
                }
                "--client-threads" => {
                    opts.client_threads = num::<usize>(&flag, value(&flag)).max(1)
                }
                "--echo-threads" => opts.echo_threads = num::<usize>(&flag, value(&flag)).max(1),
                "--strait-threads" => {
                    opts.strait_threads = num::<usize>(&flag, value(&flag)).max(1)
                }
                "--upstream-connections" => {
                    opts.upstream_connections = num::<usize>(&flag, value(&flag)).max(1)
                }
                "--strait" => opts.strait = PathBuf::from(value(&flag)),
                "--out" => opts.out = PathBuf::from(value(&flag)),
                "--direct-only" => opts.direct_only = true,
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                f if f.starts_with('-') => {} // e.g. cargo's `--bench`
                f => opts.filters.push(normalize(f)),
            }
        }
        assert!(opts.seconds > 0.0, "--seconds must be > 0");
        assert!(opts.warmup >= 0.0, "--warmup must be >= 0");
        opts
    }

    fn selected(&self, s: &Scenario) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| normalize(s.name).contains(f))
    }
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// CPU ticks of the load generator (this process), the echo backend, Strait,
/// and the whole machine (busy time).
#[derive(Clone, Copy)]
struct Sample {
    loadgen: Option<u64>,
    echo: Option<u64>,
    strait: Option<u64>,
    system: Option<u64>,
}

struct Measurement {
    outcome: Outcome,
    loadgen_cpu_s: Option<f64>,
    echo_cpu_s: Option<f64>,
    strait_cpu_s: Option<f64>,
    /// CPU used by everything else on the machine during the window (e.g.
    /// concurrent builds): a noise indicator.
    other_cpu_s: Option<f64>,
    strait_hwm_kib: Option<u64>,
    strait_log_lines: usize,
}

impl Measurement {
    fn new(outcome: Outcome, before: Sample, after: Sample, tck: u64) -> Self {
        let loadgen_cpu_s = common::cpu_delta(before.loadgen, after.loadgen, tck);
        let echo_cpu_s = common::cpu_delta(before.echo, after.echo, tck);
        let strait_cpu_s = common::cpu_delta(before.strait, after.strait, tck);
        let other_cpu_s = common::cpu_delta(before.system, after.system, tck).map(|total| {
            (total
                - loadgen_cpu_s.unwrap_or(0.0)
                - echo_cpu_s.unwrap_or(0.0)
                - strait_cpu_s.unwrap_or(0.0))
            .max(0.0)
        });
        Self {
            outcome,
            loadgen_cpu_s,
            echo_cpu_s,
            strait_cpu_s,
            other_cpu_s,
            strait_hwm_kib: None,
            strait_log_lines: 0,
        }
    }
}

struct Bench {
    opts: Opts,
    rt: tokio::runtime::Runtime,
    echo: echo::EchoProcess,
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

    fn measure(
        &self,
        spec: &Spec,
        strait_pid: Option<u32>,
    ) -> Result<(Outcome, Sample, Sample), String> {
        let me = std::process::id();
        let echo_pid = self.echo.pid();
        load::run(&self.rt, spec, || Sample {
            loadgen: procstat::cpu_ticks(me),
            echo: procstat::cpu_ticks(echo_pid),
            strait: strait_pid.and_then(procstat::cpu_ticks),
            system: procstat::system_busy_ticks(),
        })
    }

    fn direct(&self, scenario: &Scenario) -> Result<Measurement, String> {
        let spec = self.spec(scenario, self.echo.addr);
        let (outcome, before, after) = self.measure(&spec, None)?;
        Ok(Measurement::new(outcome, before, after, self.tck))
    }

    fn via_strait(&self, scenario: &Scenario) -> Result<Measurement, String> {
        let tag = normalize(scenario.name);
        let mut proc = strait::StraitProcess::start(
            &self.opts.strait,
            &self.work_dir,
            &tag,
            self.echo.addr,
            self.opts.strait_threads,
            self.opts.upstream_connections,
        )?;
        let spec = self.spec(scenario, proc.listen);
        let (outcome, before, after) = self.measure(&spec, Some(proc.pid()))?;
        let strait_hwm_kib = procstat::status_kib(proc.pid(), "VmHWM");
        if !proc.alive() {
            return Err(format!(
                "strait died during the run; log tail:\n{}",
                proc.log_tail(20)
            ));
        }
        Ok(Measurement {
            strait_hwm_kib,
            strait_log_lines: proc.log_lines(),
            ..Measurement::new(outcome, before, after, self.tck)
        })
    }
}

fn main() {
    if std::env::var(echo::ROLE_ENV).as_deref() == Ok("echo") {
        echo::child_main();
        return;
    }
    let opts = Opts::parse();
    let work_dir = common::target_dir().join("bench-relay");
    std::fs::create_dir_all(&work_dir).expect("creating target/bench-relay");
    if !opts.direct_only && !opts.strait.exists() {
        panic!("strait binary {:?} not found", opts.strait);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("load generator runtime");
    let echo = echo::EchoProcess::spawn(opts.echo_threads).expect("echo backend");
    let bench = Bench {
        opts,
        rt,
        echo,
        tck: procstat::clk_tck(),
        work_dir,
    };

    let mut rows = Vec::new();
    for scenario in SCENARIOS.iter().filter(|s| bench.opts.selected(s)) {
        eprintln!("relay bench: {} direct ...", scenario.name);
        let direct = bench.direct(scenario);
        eprintln!("  {}", brief(&direct));
        let via = if bench.opts.direct_only {
            Err("skipped (--direct-only)".to_string())
        } else {
            eprintln!("relay bench: {} via strait ...", scenario.name);
            let via = bench.via_strait(scenario);
            eprintln!("  {}", brief(&via));
            via
        };
        rows.push((scenario, direct, via));
    }

    let report = render(&bench, &rows);
    println!("{report}");
    match std::fs::write(&bench.opts.out, &report) {
        Ok(()) => eprintln!("relay bench: written to {}", bench.opts.out.display()),
        Err(e) => eprintln!("relay bench: writing {}: {e}", bench.opts.out.display()),
    }
}

fn brief(m: &Result<Measurement, String>) -> String {
    match m {
        Ok(m) => format!(
            "{} calls/s, p50/p99 {}, failures {}{}",
            fmt_rate(m.outcome.calls_per_sec()),
            fmt_p50_p99(&m.outcome),
            m.outcome.failures,
            m.outcome
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ),
        Err(e) => format!("FAILED: {e}"),
    }
}

fn fmt_rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_latency(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn fmt_p50_p99(o: &Outcome) -> String {
    match (o.percentile_ns(0.50), o.percentile_ns(0.99)) {
        (Some(p50), Some(p99)) => format!("{} / {}", fmt_latency(p50), fmt_latency(p99)),
        _ => "–".to_string(),
    }
}

fn pct_of_core(cpu_s: Option<f64>, o: &Outcome) -> String {
    cpu_s
        .map(|c| format!("{:.0}%", 100.0 * c / o.elapsed.as_secs_f64()))
        .unwrap_or_else(|| "?".to_string())
}

type Row<'a> = (
    &'a Scenario,
    Result<Measurement, String>,
    Result<Measurement, String>,
);

fn render(bench: &Bench, rows: &[Row<'_>]) -> String {
    let o = &bench.opts;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut r = String::new();
    let _ = writeln!(r, "## Strait relay benchmark\n");
    let _ = writeln!(
        r,
        "Loopback, {cpus} CPUs; strait `{}` with worker_threads = {}, {} upstream connection(s); \
         {} client connection(s); load generator {} thread(s), echo backend {} thread(s) \
         (separate processes); {} s window after {} s warmup per run; a bidi \"call\" is one \
         message round trip on a long-lived ping-pong stream.\n",
        common::git_describe().unwrap_or_else(|| "?".into()),
        o.strait_threads,
        o.upstream_connections,
        o.connections,
        o.client_threads,
        o.echo_threads,
        o.seconds,
        o.warmup,
    );
    let _ = writeln!(
        r,
        "| scenario | direct calls/s | strait calls/s | ratio | p50/p99 direct | p50/p99 strait | strait CPU-s per 100k calls | strait peak RSS |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (s, direct, via) in rows {
        let d_rate = direct.as_ref().ok().map(|m| m.outcome.calls_per_sec());
        let v_rate = via.as_ref().ok().map(|m| m.outcome.calls_per_sec());
        let cell_rate = |m: &Result<Measurement, String>| match m {
            Ok(m) => {
                let bad = m.outcome.failures + m.outcome.stuck as u64;
                let rate = fmt_rate(m.outcome.calls_per_sec());
                if bad > 0 {
                    format!("{rate} ({bad} failed)")
                } else {
                    rate
                }
            }
            Err(_) => "failed".into(),
        };
        let ratio = match (d_rate, v_rate) {
            (Some(d), Some(v)) if d > 0.0 => format!("{:.2}", v / d),
            _ => "–".into(),
        };
        let lat = |m: &Result<Measurement, String>| {
            m.as_ref()
                .map(|m| fmt_p50_p99(&m.outcome))
                .unwrap_or_else(|_| "–".into())
        };
        let cpu100k = via
            .as_ref()
            .ok()
            .and_then(|m| Some((m.strait_cpu_s?, m.outcome.calls)))
            .filter(|(_, calls)| *calls > 0)
            .map(|(cpu, calls)| format!("{:.2}", cpu / calls as f64 * 100_000.0))
            .unwrap_or_else(|| "–".into());
        let rss = via
            .as_ref()
            .ok()
            .and_then(|m| m.strait_hwm_kib)
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            cell_rate(direct),
            if o.direct_only {
                "–".into()
            } else {
                cell_rate(via)
            },
            ratio,
            lat(direct),
            lat(via),
            cpu100k,
            rss
        );
    }

    let _ = writeln!(
        r,
        "\nDetails (CPU as % of one core over the window; \"other load\" is every other \
         process on the machine, e.g. concurrent builds; when it is high the run is noisy):\n"
    );
    let _ = writeln!(
        r,
        "| scenario | streams × conns | calls direct / strait | failures direct / strait | strait CPU | loadgen CPU direct / strait | echo CPU direct / strait | other load direct / strait |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for (s, direct, via) in rows {
        let conc = o.concurrency.unwrap_or(s.concurrency);
        let calls = |m: &Result<Measurement, String>| {
            m.as_ref()
                .map(|m| m.outcome.calls.to_string())
                .unwrap_or_else(|_| "–".into())
        };
        let fails = |m: &Result<Measurement, String>| match m {
            Ok(m) if m.outcome.stuck > 0 => {
                format!("{} (+{} stuck)", m.outcome.failures, m.outcome.stuck)
            }
            Ok(m) => m.outcome.failures.to_string(),
            Err(e) if e.starts_with("skipped") => "–".into(),
            Err(_) => "run failed".into(),
        };
        let pct = |m: &Result<Measurement, String>, f: fn(&Measurement) -> Option<f64>| {
            m.as_ref()
                .map(|m| pct_of_core(f(m), &m.outcome))
                .unwrap_or_else(|_| "–".into())
        };
        let _ = writeln!(
            r,
            "| {} | {} × {} | {} / {} | {} / {} | {} | {} / {} | {} / {} | {} / {} |",
            s.name,
            conc,
            o.connections,
            calls(direct),
            calls(via),
            fails(direct),
            fails(via),
            pct(via, |m| m.strait_cpu_s),
            pct(direct, |m| m.loadgen_cpu_s),
            pct(via, |m| m.loadgen_cpu_s),
            pct(direct, |m| m.echo_cpu_s),
            pct(via, |m| m.echo_cpu_s),
            pct(direct, |m| m.other_cpu_s),
            pct(via, |m| m.other_cpu_s),
        );
        for (which, m) in [("direct", direct), ("strait", via)] {
            match m {
                Ok(m) => {
                    if let Some(e) = &m.outcome.first_error {
                        notes.push(format!("{} {which}: first error: {e}", s.name));
                    }
                    if m.strait_log_lines > 0 {
                        notes.push(format!(
                            "{} {which}: strait logged {} line(s) at warn+, see {}",
                            s.name,
                            m.strait_log_lines,
                            bench.work_dir.display()
                        ));
                    }
                }
                Err(e) if e.starts_with("skipped") => {}
                Err(e) => notes.push(format!("{} {which}: {e}", s.name)),
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
