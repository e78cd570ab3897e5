//! Rewrite benchmark: Strait's walker against the conventional way of editing a message — decode
//! into a `DynamicMessage`, edit by reflection, re-encode (`strait::rewrite::reference`) — on the same
//! bytes with the same edits, in MB/s (10^6 bytes of input message per second).
//!
//! Cases (all responses, translated upstream → client by `namespaces = {orders = orders-prod}`,
//! `search_attributes = {orders = {CustomerId = OrderCustomer}}`):
//! - (a) a ~20 MB `GetWorkflowExecutionHistoryResponse`: one long run of an order workflow —
//!   activities with payloads of 200 B–4 KB, timers, signals, markers, search-attribute upserts,
//!   child workflows in the translated namespace and another — with namespace and search-attribute
//!   edits. Target: walker ≥ 20× the baseline.
//! - (b) a few-MB `StreamWorkflowReplicationMessagesResponse` (AdminService): history replication
//!   tasks whose events travel in `DataBlob`s (`events`, `events_batches`, `new_run_events`) and some
//!   namespace tasks. The stream carries no call namespace, so only namespaces are translated (search
//!   attributes are per namespace). Target: walker ≥ 20× the baseline.
//! - (c) a ~20 MB history of a targeted type whose content has nothing to edit (workflow tasks,
//!   activities, timers, signals, markers). Target: walker ≥ 1/10 the speed of copying the same
//!   bytes (`Vec::extend_from_slice`, `Bytes::copy_from_slice`).
//!
//! The walker runs exactly as the relay runs it per message: `Rewriter::edit` with the response plan,
//! as the pipeline's translation stage calls it. Before anything is timed, each case is checked once: the walker's output,
//! decoded, equals the baseline's output, decoded (history blobs compared as decoded histories).
//!
//! Run: `cargo bench --bench rewrite` — criterion groups `a_history`, `b_replication`,
//! `c_no_targets` (criterion options after `--`), then a summary of its own timings (best of
//! repeated runs, ~2 s per function) printed as Markdown and written to `target/bench-rewrite.md`.
//! `cargo bench --bench rewrite -- --summary` runs the checks and the summary only.
//! `cargo test --benches` runs everything once on small messages. To profile one function, e.g.
//! `perf record -g target/release/deps/rewrite-* --bench --profile-time 10 a_history/walker`
//! (criterion's profile mode; the summary is skipped).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use fixtures::{Builder, Content, Fixture};
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, ReflectMessage, Value};
use strait::config::TranslateConfig;
use strait::rewrite::plan::MsgId;
use strait::rewrite::plan::{Action, Targets, DATA_BLOB, HISTORY, HISTORY_BLOB_FIELDS};
use strait::rewrite::walker::EditStats;
use strait::rewrite::{reference, Direction, PlanCache, Rewriter};
use strait::wire::Chunks;

const HISTORY_PATH: &str =
    "/temporal.api.workflowservice.v1.WorkflowService/GetWorkflowExecutionHistory";
const REPLICATION_PATH: &str =
    "/temporal.server.api.adminservice.v1.AdminService/StreamWorkflowReplicationMessages";

/// What the baseline edits: the same kinds as the walker's plan.
const TARGETS: Targets = Targets {
    namespaces: true,
    search_attributes: true,
    utf8: false,
};

/// Message sizes, full (`cargo bench`) and small (`cargo test --benches`, a debug build).
const SIZES: [(usize, usize); 3] = [
    (20_000_000, 1_000_000),
    (4_000_000, 300_000),
    (20_000_000, 1_000_000),
];

/// The response side of one method, as the pipeline's translation stage edits it.
struct Editor {
    rewriter: Arc<Rewriter>,
    message: MsgId,
    call_namespace: OnceLock<String>,
}

struct Case {
    key: &'static str,
    title: &'static str,
    fixture: Fixture,
    editor: Editor,
    /// The call's client-side namespace, as the relay knows it.
    namespace: Option<&'static str>,
    /// Compared with copying the bytes rather than with the baseline.
    against_copy: bool,
    /// Whether the walker must change the message.
    expect_edits: bool,
}

impl Case {
    fn len(&self) -> usize {
        self.fixture.body.len()
    }

    /// The walker, as the relay runs it per message.
    fn walker(&self, stats: &mut EditStats) -> Bytes {
        self.editor
            .rewriter
            .edit(
                Direction::ToClient,
                self.editor.message,
                &self.editor.call_namespace,
                &Chunks::from(self.fixture.body.clone()),
                stats,
            )
            .expect("walker edit")
            .contiguous()
    }

    /// Decode into a `DynamicMessage`, edit with the same rules, re-encode.
    fn baseline(&self, pool: &DescriptorPool, stats: &mut EditStats) -> Vec<u8> {
        let editor = self
            .editor
            .rewriter
            .editor(Direction::ToClient, self.namespace);
        reference::edit_bytes(
            pool,
            self.fixture.message,
            &self.fixture.body,
            TARGETS,
            &editor,
            stats,
        )
        .expect("baseline edit")
    }
}

fn copy_vec(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(bytes);
    out
}

fn cases(pool: &DescriptorPool, full: bool) -> Vec<Case> {
    let size = |i: usize| {
        if full {
            SIZES[i].0
        } else {
            SIZES[i].1
        }
    };
    let config = TranslateConfig {
        namespaces: [("orders".to_owned(), "orders-prod".to_owned())]
            .into_iter()
            .collect(),
        search_attributes: [(
            "orders".to_owned(),
            [("CustomerId".to_owned(), "OrderCustomer".to_owned())]
                .into_iter()
                .collect(),
        )]
        .into_iter()
        .collect(),
        repair_utf8: false,
        expose_upstream_names: None,
    };
    let rewriter =
        Rewriter::new(&config, pool, &mut PlanCache::default()).expect("translation configured");
    let editor = |path: &str, namespace: Option<&str>| {
        let (_, response) = rewriter.method(path);
        let message = response.unwrap_or_else(|| panic!("no response plan for {path}"));
        let call_namespace = OnceLock::new();
        if let Some(ns) = namespace {
            call_namespace.set(ns.to_owned()).unwrap();
        }
        Editor {
            rewriter: Arc::clone(&rewriter),
            message,
            call_namespace,
        }
    };
    let started = Instant::now();
    let cases = vec![
        Case {
            key: "a_history",
            title: "(a) GetWorkflowExecutionHistoryResponse, namespace and search-attribute edits",
            fixture: Builder::new(pool, 1).history_response(Content::WithTargets, size(0)),
            editor: editor(HISTORY_PATH, Some("orders")),
            namespace: Some("orders"),
            against_copy: false,
            expect_edits: true,
        },
        Case {
            key: "b_replication",
            title: "(b) StreamWorkflowReplicationMessagesResponse, history DataBlobs",
            fixture: Builder::new(pool, 2).replication_response(size(1)),
            editor: editor(REPLICATION_PATH, None),
            namespace: None,
            against_copy: false,
            expect_edits: true,
        },
        Case {
            key: "c_no_targets",
            title: "(c) GetWorkflowExecutionHistoryResponse with nothing to edit",
            fixture: Builder::new(pool, 3).history_response(Content::NoTargets, size(2)),
            editor: editor(HISTORY_PATH, Some("orders")),
            namespace: Some("orders"),
            against_copy: true,
            expect_edits: false,
        },
    ];
    eprintln!(
        "rewrite bench: messages built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    cases
}

/// Takes the histories out of history `DataBlob`s anywhere in `message` (leaving their data empty),
/// so that messages can be compared although blob bytes differ in encoding order.
fn take_history_blobs(message: &mut DynamicMessage, out: &mut Vec<DynamicMessage>) {
    for (field, value) in message.fields_mut() {
        let blob = matches!(field.kind(), Kind::Message(ref m) if m.full_name() == DATA_BLOB)
            && HISTORY_BLOB_FIELDS.contains(&field.name());
        let mut visit = |child: &mut DynamicMessage| {
            if blob {
                take_blob(child, out);
            } else {
                take_history_blobs(child, out);
            }
        };
        match value {
            Value::Message(child) => visit(child),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(child) = item {
                        visit(child);
                    }
                }
            }
            Value::Map(map) => {
                for item in map.values_mut() {
                    if let Value::Message(child) = item {
                        take_history_blobs(child, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn take_blob(blob: &mut DynamicMessage, out: &mut Vec<DynamicMessage>) {
    let proto3 = blob.get_field_by_number(1).and_then(|v| v.as_enum_number()) == Some(1);
    let Some(data) = blob
        .get_field_by_number(2)
        .and_then(|v| v.as_bytes().cloned())
    else {
        return;
    };
    if !proto3 {
        return;
    }
    let history = blob
        .descriptor()
        .parent_pool()
        .get_message_by_name(HISTORY)
        .expect("History in the pool");
    let mut history = DynamicMessage::decode(history, data).expect("blob holds a History");
    take_history_blobs(&mut history, out);
    out.push(history);
    blob.set_field_by_number(2, Value::Bytes(Bytes::new()));
}

/// Edit counts of the check run, for the report.
struct Checked {
    stats: EditStats,
    blobs: usize,
}

/// The walker's output, decoded, must equal the baseline's, decoded. (Never Debug-print these
/// messages: formatting one this large overflows the stack.)
fn check(case: &Case, pool: &DescriptorPool) -> Checked {
    let mut walker_stats = EditStats::default();
    let walked = case.walker(&mut walker_stats);
    let mut baseline_stats = EditStats::default();
    let baseline = case.baseline(pool, &mut baseline_stats);
    let descriptor = pool.get_message_by_name(case.fixture.message).unwrap();
    let mut walked_message =
        DynamicMessage::decode(descriptor.clone(), walked.clone()).expect("walker output decodes");
    let mut baseline_message =
        DynamicMessage::decode(descriptor, baseline.as_slice()).expect("baseline output decodes");
    let (mut walked_blobs, mut baseline_blobs) = (Vec::new(), Vec::new());
    take_history_blobs(&mut walked_message, &mut walked_blobs);
    take_history_blobs(&mut baseline_message, &mut baseline_blobs);
    assert_eq!(
        walked_blobs.len(),
        baseline_blobs.len(),
        "{}: history blob counts differ",
        case.key
    );
    for (i, (w, b)) in walked_blobs.iter().zip(&baseline_blobs).enumerate() {
        use prost::Message as _;
        assert!(
            w == b,
            "{}: history blob {i} differs from the baseline ({} vs {} bytes re-encoded)",
            case.key,
            w.encoded_len(),
            b.encoded_len()
        );
    }
    assert!(
        walked_message == baseline_message,
        "{}: walker output ({} bytes) differs from the baseline's ({} bytes)",
        case.key,
        walked.len(),
        baseline.len()
    );
    assert_eq!(
        walker_stats, baseline_stats,
        "{}: edit counts differ",
        case.key
    );
    if case.expect_edits {
        assert!(
            walker_stats.namespaces > 0 && walked != case.fixture.body,
            "{}: nothing was edited",
            case.key
        );
    } else {
        assert_eq!(walker_stats, EditStats::default(), "{}: edited", case.key);
        assert_eq!(
            walked.as_ptr(),
            case.fixture.body.as_ptr(),
            "{}: copied although nothing changed",
            case.key
        );
    }
    eprintln!(
        "rewrite bench: {}: walker output equals the baseline's ({} bytes in, {} out; {} namespaces, {} search attributes translated)",
        case.key,
        case.len(),
        walked.len(),
        walker_stats.namespaces,
        walker_stats.search_attributes
    );
    Checked {
        stats: walker_stats,
        blobs: walked_blobs.len(),
    }
}

fn run_criterion(cases: &[Case], pool: &DescriptorPool) {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for case in cases {
        let mut group = criterion.benchmark_group(case.key);
        group.throughput(Throughput::BytesDecimal(case.len() as u64));
        group.sampling_mode(SamplingMode::Flat);
        group.bench_function("walker", |b| {
            b.iter(|| black_box(case.walker(&mut EditStats::default())))
        });
        group.bench_function("baseline", |b| {
            b.iter(|| black_box(case.baseline(pool, &mut EditStats::default())))
        });
        if case.against_copy {
            let body = &case.fixture.body;
            group.bench_function("copy_vec", |b| {
                b.iter(|| black_box(copy_vec(black_box(body))))
            });
            group.bench_function("copy_bytes", |b| {
                b.iter(|| black_box(Bytes::copy_from_slice(black_box(body))))
            });
        }
        group.finish();
    }
    criterion.final_summary();
}

#[derive(Clone, Copy)]
struct Timing {
    best: Duration,
    median: Duration,
    runs: usize,
}

/// Runs `f` at least 3 times and until `budget` is spent (at most 5000 times); best and median.
fn time(budget: Duration, mut f: impl FnMut()) -> Timing {
    let started = Instant::now();
    let mut runs = Vec::new();
    while runs.len() < 3 || (started.elapsed() < budget && runs.len() < 5000) {
        let t = Instant::now();
        f();
        runs.push(t.elapsed());
    }
    runs.sort();
    Timing {
        best: runs[0],
        median: runs[runs.len() / 2],
        runs: runs.len(),
    }
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn fmt_rate(bytes: usize, t: &Timing) -> String {
    format!(
        "{:.0} MB/s ({:.0})",
        mb_per_s(bytes, t.best),
        mb_per_s(bytes, t.median)
    )
}

struct Row {
    walker: Timing,
    baseline: Timing,
    copy_vec: Option<Timing>,
    copy_bytes: Option<Timing>,
}

fn measure(case: &Case, pool: &DescriptorPool, budget: Duration) -> Row {
    eprintln!("rewrite bench: timing {} ...", case.key);
    let walker = time(budget, || {
        black_box(case.walker(&mut EditStats::default()));
    });
    let baseline = time(budget, || {
        black_box(case.baseline(pool, &mut EditStats::default()));
    });
    let body = &case.fixture.body;
    let (copy_vec, copy_bytes) = if case.against_copy {
        (
            Some(time(budget, || {
                black_box(copy_vec(black_box(body)));
            })),
            Some(time(budget, || {
                black_box(Bytes::copy_from_slice(black_box(body)));
            })),
        )
    } else {
        (None, None)
    };
    Row {
        walker,
        baseline,
        copy_vec,
        copy_bytes,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target {
        "yes"
    } else {
        "**no**"
    }
}

/// How the response plan treats every `DataBlob` field of the descriptor set.
fn blob_fields(pool: &DescriptorPool, rewriter: &Rewriter) -> String {
    let plan = rewriter.plan(Direction::ToClient);
    let mut out = String::new();
    for message in pool.all_messages() {
        for field in message.fields() {
            if !matches!(field.kind(), Kind::Message(ref m) if m.full_name() == DATA_BLOB) {
                continue;
            }
            let treatment = match plan
                .message_id(message.full_name())
                .and_then(|id| plan.message(id).action(field.number()))
            {
                Some(Action::HistoryBlob(_)) => "walked as a History",
                Some(_) => "descended (not as a History)",
                None if plan.message_id(message.full_name()).is_none() => {
                    "not walked (type has no targets)"
                }
                None => "not walked",
            };
            let _ = writeln!(
                out,
                "| `{}.{}` | {treatment} |",
                message.full_name(),
                field.name()
            );
        }
    }
    out
}

fn report(
    cases: &[Case],
    checked: &[Checked],
    rows: &[Row],
    pool: &DescriptorPool,
    load_before: &str,
) -> String {
    let mut md = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(md, "# Rewrite benchmark\n");
    let _ = writeln!(
        md,
        "`cargo bench --bench rewrite` on {} ({cores} cores); load average (1/5/15 min) before the summary: {load_before}, after: {}.\n",
        cpu_model(),
        loadavg()
    );
    let _ = writeln!(
        md,
        "MB/s = 10^6 bytes of input message per second, best of the runs (median in parentheses). \
         Walker: `Rewriter::edit`, as the translation stage runs it per message. Baseline: \
         `reference::edit_bytes` — decode into a `DynamicMessage`, edit with the same rules, re-encode. \
         Both edit the same bytes with the same translation (`orders-prod` → `orders`, \
         `OrderCustomer` → `CustomerId`), and their outputs were checked equal (decoded) before timing.\n"
    );
    let _ = writeln!(
        md,
        "| case | input | walker | baseline | walker / baseline | target | met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for ((case, checked), row) in cases.iter().zip(checked).zip(rows) {
        if case.against_copy {
            continue;
        }
        let ratio = row.baseline.best.as_secs_f64() / row.walker.best.as_secs_f64();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {ratio:.1}× | ≥ 20× | {} |",
            case.title,
            describe(case, checked),
            fmt_rate(case.len(), &row.walker),
            fmt_rate(case.len(), &row.baseline),
            verdict(ratio, 20.0)
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| case | input | walker | copy (`Vec::extend_from_slice`) | copy (`Bytes::copy_from_slice`) | baseline | walker / copy | target | met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for ((case, checked), row) in cases.iter().zip(checked).zip(rows) {
        let (Some(copy_vec), Some(copy_bytes)) = (row.copy_vec, row.copy_bytes) else {
            continue;
        };
        let slowest_copy = copy_vec.best.max(copy_bytes.best);
        let fastest_copy = copy_vec.best.min(copy_bytes.best);
        let ratio = fastest_copy.as_secs_f64() / row.walker.best.as_secs_f64();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {ratio:.1}× (vs the slower copy: {:.1}×) | ≥ 0.1× | {} |",
            case.title,
            describe(case, checked),
            fmt_rate(case.len(), &row.walker),
            fmt_rate(case.len(), &copy_vec),
            fmt_rate(case.len(), &copy_bytes),
            fmt_rate(case.len(), &row.baseline),
            slowest_copy.as_secs_f64() / row.walker.best.as_secs_f64(),
            verdict(ratio, 0.1)
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "Runs per function:");
    for (case, row) in cases.iter().zip(rows) {
        let _ = write!(
            md,
            "{}: walker {}, baseline {}",
            case.key, row.walker.runs, row.baseline.runs
        );
        if let (Some(v), Some(b)) = (row.copy_vec, row.copy_bytes) {
            let _ = write!(md, ", copies {} and {}", v.runs, b.runs);
        }
        let _ = writeln!(md, ".  ");
    }
    let _ = writeln!(
        md,
        "\n## `DataBlob` fields and the response plan\n\n\
         The history blobs the walker decodes as `temporal.api.history.v1.History` (the baseline follows \
         the same list):\n\n| field | response plan |\n|---|---|"
    );
    md.push_str(&blob_fields(pool, &cases[0].editor.rewriter));
    md
}

fn describe(case: &Case, checked: &Checked) -> String {
    let counts = &case.fixture.counts;
    let mut s = format!("{:.1} MB", case.len() as f64 / 1e6);
    if counts.tasks > 0 {
        let _ = write!(
            s,
            ", {} replication tasks, {} history blobs",
            counts.tasks, checked.blobs
        );
    }
    let _ = write!(s, ", {} events", counts.events);
    if counts.events_with_targets > 0 {
        let _ = write!(
            s,
            " ({:.1}% with names to translate); {} namespaces and {} search attributes edited",
            100.0 * counts.events_with_targets as f64 / counts.events as f64,
            checked.stats.namespaces,
            checked.stats.search_attributes
        );
    } else {
        let _ = write!(s, ", none with names to translate");
    }
    s
}

fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .filter(|d| d.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        return;
    }
    // Like criterion: `cargo bench` passes --bench; `cargo test --benches` does not (test mode).
    let full = has("--bench") && !has("--test");
    let summary_only = has("--summary");

    let pool = strait::descriptor_set::embedded().expect("embedded descriptor set");
    let cases = cases(&pool, full);
    let checked: Vec<Checked> = cases.iter().map(|case| check(case, &pool)).collect();

    if !summary_only {
        run_criterion(&cases, &pool);
    }
    // Profiling one function (`-- --profile-time 10 a_history/walker` under perf): no summary.
    if args.iter().any(|a| a.starts_with("--profile-time")) {
        return;
    }
    let load_before = loadavg();
    let budget = if full {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    let rows: Vec<Row> = cases
        .iter()
        .map(|case| measure(case, &pool, budget))
        .collect();
    let report = report(&cases, &checked, &rows, &pool, &load_before);
    println!("{report}");
    if full {
        let path = target_dir().join("bench-rewrite.md");
        match std::fs::write(&path, &report) {
            Ok(()) => eprintln!("rewrite bench: written to {}", path.display()),
            Err(e) => eprintln!("rewrite bench: writing {}: {e}", path.display()),
        }
    }
}
