//! Two Strait processes joining the clusters of the test bed (`testbed.rs`) the way a deployment
//! would: Strait A next to cluster A, Strait B next to cluster B, each its own process, configured
//! from the shipped example pairs `config/s2s-tcp-{a,b}.toml` and `config/s2s-mux-{a,b}.toml`.
//!
//! The shipped files name fixed ports and expect the clusters at 127.0.0.1:7233 (A) and :7243 (B).
//! [`derive_pair`] rewrites every `127.0.0.1:PORT` in them (comments included, so they stay true):
//! the upstream ports become the test bed's frontends, and every other port stays as shipped if it
//! is free right now (with `prefer_shipped`), else moves to a free one, the same way in both files.
//! Strait runs with the repository root as its working directory, so the relative certificate
//! paths of the mux pair (the test PKI of `scripts/gen-test-certs.sh`) resolve as shipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::temporal::strait_bin;
use crate::temporal::{free_port, http_get, parse_metrics, readyz_all_ok, repo_root, Sample};

/// Poll interval of the waits.
const POLL: Duration = Duration::from_millis(100);
/// A Strait that loses a port race (exits during start-up) is retried on fresh ports this often.
const START_ATTEMPTS: u32 = 3;

/// How the two Strait processes talk to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP/2, each side listening for the other (`config/s2s-tcp-{a,b}.toml`).
    Tcp,
    /// yamux sessions over mutual TLS that only A dials (`config/s2s-mux-{a,b}.toml`).
    Mux,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Mux => "mux",
        }
    }

    /// The shipped example config of side `a` or `b`.
    pub fn shipped(self, side: char) -> PathBuf {
        repo_root()
            .join("config")
            .join(format!("s2s-{}-{side}.toml", self.name()))
    }

    /// The remote modes the shipped pair must have, A's then B's.
    fn remote_modes(self) -> [&'static str; 2] {
        match self {
            Mode::Tcp => ["tcp", "tcp"],
            Mode::Mux => ["mux-client", "mux-server"],
        }
    }
}

/// One side's config, derived from a shipped file.
#[derive(Clone, Debug)]
pub struct SideConfig {
    /// The shipped file it comes from.
    pub shipped: PathBuf,
    /// The derived TOML (the shipped text with ports replaced).
    pub toml: String,
    /// `[admin] listen`.
    pub admin: SocketAddr,
    /// The link's name (`[[cluster_connection]] name`).
    pub link: String,
    /// Where the local cluster dials the other cluster (`local.listen`).
    pub local_listen: String,
    /// `local.upstream`: the local cluster's frontend.
    pub upstream: String,
    /// `remote.sessions` (mux-client only).
    pub sessions: Option<i64>,
}

/// Both sides' configs and what changed relative to the shipped files.
#[derive(Clone, Debug)]
pub struct PairConfig {
    pub mode: Mode,
    pub a: SideConfig,
    pub b: SideConfig,
    /// `(shipped address, used address, why)` for every address that differs from the shipped one.
    pub changes: Vec<(String, String, String)>,
}

const LOOPBACK: &str = "127.0.0.1:";

/// Every `127.0.0.1:PORT` in `text`: the byte range of PORT and its value.
fn loopback_ports(text: &str) -> Vec<(Range<usize>, u16)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(LOOPBACK) {
        let start = from + i + LOOPBACK.len();
        let end = start + text[start..].bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(port) = text[start..end].parse() {
            out.push((start..end, port));
        }
        from = end;
    }
    out
}

/// `text` with every `127.0.0.1:PORT` whose port is in `map` rewritten.
fn replace_ports(text: &str, map: &BTreeMap<u16, u16>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (range, port) in loopback_ports(text) {
        out.push_str(&text[at..range.start]);
        out.push_str(&map.get(&port).copied().unwrap_or(port).to_string());
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

fn port_of(address: &str) -> Result<u16, String> {
    address
        .strip_prefix(LOOPBACK)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{address:?} is not 127.0.0.1:PORT"))
}

/// Reads the fields this module needs from one side's TOML.
fn side_config(shipped: &Path, toml_text: String, remote_mode: &str) -> Result<SideConfig, String> {
    let what = shipped.display();
    let doc: toml::Table = toml_text
        .parse()
        .map_err(|e| format!("{what}: not TOML: {e}"))?;
    let str_at = |path: &[&str]| -> Result<String, String> {
        let mut value: Option<&toml::Value> = None;
        for (i, key) in path.iter().enumerate() {
            let next = match (i, value) {
                (0, _) => doc.get(*key),
                (_, Some(toml::Value::Table(t))) => t.get(*key),
                (_, Some(toml::Value::Array(items))) => {
                    key.parse::<usize>().ok().and_then(|k| items.get(k))
                }
                _ => None,
            };
            value = Some(next.ok_or_else(|| format!("{what}: no {}", path.join(".")))?);
        }
        match value {
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(toml::Value::Integer(n)) => Ok(n.to_string()),
            _ => Err(format!("{what}: {} is not a string", path.join("."))),
        }
    };
    let connections = doc
        .get("cluster_connection")
        .and_then(toml::Value::as_array)
        .map_or(0, Vec::len);
    if connections != 1 {
        return Err(format!(
            "{what}: expected exactly one [[cluster_connection]], found {connections}"
        ));
    }
    let mode = str_at(&["cluster_connection", "0", "remote", "mode"])?;
    if mode != remote_mode {
        return Err(format!(
            "{what}: remote mode is {mode:?}, expected {remote_mode:?}"
        ));
    }
    let admin = str_at(&["admin", "listen"])?;
    Ok(SideConfig {
        shipped: shipped.to_path_buf(),
        admin: admin
            .parse()
            .map_err(|e| format!("{what}: admin.listen {admin:?}: {e}"))?,
        link: str_at(&["cluster_connection", "0", "name"])?,
        local_listen: str_at(&["cluster_connection", "0", "local", "listen"])?,
        upstream: str_at(&["cluster_connection", "0", "local", "upstream"])?,
        sessions: str_at(&["cluster_connection", "0", "remote", "sessions"])
            .ok()
            .and_then(|s| s.parse().ok()),
        toml: toml_text,
    })
}

/// Whether `port` can be bound on 127.0.0.1 right now.
fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Derives the configs of a Strait pair in `mode` from the shipped files: their upstreams become
/// `cluster_a` and `cluster_b` (`127.0.0.1:PORT`), and every other port stays as shipped if
/// `prefer_shipped` and it is free, else moves to a free port.
pub fn derive_pair(
    mode: Mode,
    cluster_a: &str,
    cluster_b: &str,
    prefer_shipped: bool,
) -> Result<PairConfig, String> {
    let [mode_a, mode_b] = mode.remote_modes();
    let read = |side: char| {
        let path = mode.shipped(side);
        fs::read_to_string(&path)
            .map(|text| (path.clone(), text))
            .map_err(|e| format!("read {}: {e}", path.display()))
    };
    let (path_a, text_a) = read('a')?;
    let (path_b, text_b) = read('b')?;
    let shipped_a = side_config(&path_a, text_a.clone(), mode_a)?;
    let shipped_b = side_config(&path_b, text_b.clone(), mode_b)?;

    let mut map = BTreeMap::new();
    let mut changes = Vec::new();
    for (shipped, cluster, who) in [
        (&shipped_a, cluster_a, "cluster A's frontend"),
        (&shipped_b, cluster_b, "cluster B's frontend"),
    ] {
        let from = port_of(&shipped.upstream)?;
        let to = port_of(cluster)?;
        if map.insert(from, to).is_some_and(|old| old != to) {
            return Err(format!(
                "both shipped configs use upstream port {from} for different clusters"
            ));
        }
        if from != to {
            changes.push((shipped.upstream.clone(), cluster.to_owned(), who.to_owned()));
        }
    }
    let ports: BTreeSet<u16> = loopback_ports(&text_a)
        .into_iter()
        .chain(loopback_ports(&text_b))
        .map(|(_, port)| port)
        .collect();
    for port in ports {
        if map.contains_key(&port) {
            continue;
        }
        if prefer_shipped && is_free(port) {
            map.insert(port, port);
        } else {
            let to = free_port();
            let why = if prefer_shipped { "busy" } else { "free port" };
            changes.push((
                format!("{LOOPBACK}{port}"),
                format!("{LOOPBACK}{to}"),
                why.to_owned(),
            ));
            map.insert(port, to);
        }
    }
    Ok(PairConfig {
        mode,
        a: side_config(&path_a, replace_ports(&text_a, &map), mode_a)?,
        b: side_config(&path_b, replace_ports(&text_b, &map), mode_b)?,
        changes,
    })
}

/// One `strait run` process. Killed on drop.
pub struct StraitProc {
    pub name: String,
    pub config: SideConfig,
    pub config_path: PathBuf,
    child: Child,
    log: PathBuf,
}

impl StraitProc {
    /// Writes `config` to `dir/<name>.toml` and starts `strait run` on it (working directory: the
    /// repository root), logging to `dir/<name>.log`. Does not wait for anything.
    pub fn spawn(
        bin: &Path,
        name: &str,
        config: &SideConfig,
        dir: &Path,
    ) -> Result<StraitProc, String> {
        let config_path = dir.join(format!("{name}.toml"));
        fs::write(&config_path, &config.toml)
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
        let log = dir.join(format!("{name}.log"));
        let log_file =
            fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            // Own process group, like the test bed's servers: a Ctrl-C reaches only the harness,
            // which stops everything (see `reap_children_on_signal`).
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        Ok(StraitProc {
            name: name.to_owned(),
            config: config.clone(),
            config_path,
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls the admin endpoint `path` until it answers 200, the process exits, or `deadline`.
    pub fn wait_admin(&mut self, path: &str, deadline: Instant) -> Result<(), String> {
        self.wait_admin_until(path, deadline, |_| true)
    }

    /// Polls `/readyz` until it answers 200 with every check `ok`: the local cluster connected
    /// and the link up (a ready Strait may still be waiting for its peer).
    pub fn wait_all_ok(&mut self, deadline: Instant) -> Result<(), String> {
        self.wait_admin_until("/readyz", deadline, readyz_all_ok)
    }

    /// Polls the admin endpoint `path` until it answers 200 with a body `accept` takes, the
    /// process exits, or `deadline`.
    pub fn wait_admin_until(
        &mut self,
        path: &str,
        deadline: Instant,
        accept: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}); log tail:\n{}",
                    self.name,
                    self.log_tail(20)
                ));
            }
            let last = match http_get(self.config.admin, path) {
                Ok((200, body)) if accept(&body) => return Ok(()),
                Ok((code, body)) => format!("{code}: {}", body.trim()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} {path} not 200 in time; last: {last}; log tail:\n{}",
                    self.name,
                    self.log_tail(20)
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// The parsed `/metrics`.
    pub fn metrics(&self) -> Result<Vec<Sample>, String> {
        match http_get(self.config.admin, "/metrics") {
            Ok((200, body)) => Ok(parse_metrics(&body)),
            Ok((code, body)) => Err(format!("{} /metrics answered {code}: {body}", self.name)),
            Err(e) => Err(format!("{} /metrics: {e}", self.name)),
        }
    }
}

impl Drop for StraitProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of the samples called `name` whose labels include all of `labels`.
pub fn metric_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// Strait A and Strait B, running.
pub struct StraitPair {
    pub config: PairConfig,
    pub a: StraitProc,
    pub b: StraitProc,
}

impl StraitPair {
    /// Derives the pair's configs (see [`derive_pair`]), starts B, then A, and waits until both
    /// are whole (`/readyz` all `ok`: local cluster connected, the link up) and, in mux
    /// mode, until A has all its sessions. A pair that exits during start-up (a lost port race)
    /// is retried on free ports.
    pub fn start(
        bin: &Path,
        mode: Mode,
        cluster_a: &str,
        cluster_b: &str,
        prefer_shipped: bool,
        dir: &Path,
        timeout: Duration,
    ) -> Result<StraitPair, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let config = derive_pair(mode, cluster_a, cluster_b, prefer_shipped && attempt == 1)?;
            let tag = |side: &str| format!("strait-{}-{side}-{attempt}", mode.name());
            // B first: in mux mode it is the side that listens.
            let mut b = StraitProc::spawn(bin, &tag("b"), &config.b, dir)?;
            let started = b.wait_admin("/livez", deadline).and_then(|()| {
                let mut a = StraitProc::spawn(bin, &tag("a"), &config.a, dir)?;
                a.wait_all_ok(deadline)?;
                b.wait_all_ok(deadline)?;
                Ok(a)
            });
            match started {
                Ok(a) => {
                    let pair = StraitPair { config, a, b };
                    pair.wait_sessions(deadline)?;
                    return Ok(pair);
                }
                Err(e) if Instant::now() < deadline => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!(
            "the Strait pair did not start in {START_ATTEMPTS} attempts: {last}"
        ))
    }

    /// In mux mode, waits until Strait A reports all its configured sessions up.
    fn wait_sessions(&self, deadline: Instant) -> Result<(), String> {
        let Some(want) = self.config.a.sessions else {
            return Ok(());
        };
        let link = self.config.a.link.as_str();
        loop {
            let up = metric_sum(&self.a.metrics()?, "strait_mux_sessions", &[("link", link)]);
            if up >= want as f64 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{up} of {want} mux sessions up on link {link}"));
            }
            thread::sleep(POLL);
        }
    }

    /// Where cluster A should find cluster B (Strait A's local listener), and cluster B cluster A.
    pub fn link_addresses(&self) -> (String, String) {
        (
            self.config.a.local_listen.clone(),
            self.config.b.local_listen.clone(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Stopping everything on Ctrl-C

/// The direct children of this process (from `/proc/*/stat`, field 4).
pub fn child_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .collect()
}

/// Removes this process's `TempDir`s (`<tmp>/strait-e2e-<what>-<pid>-<n>-<nanos>`), which their
/// `Drop` would have removed.
fn remove_own_temp_dirs() {
    let me = std::process::id().to_string();
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("strait-e2e-") else {
            continue;
        };
        // <what>-<pid>-<n>-<nanos>: the pid is the third field from the end.
        if rest.rsplit('-').nth(2) == Some(me.as_str()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP stop this harness cleanly: the Temporal servers and Strait
/// processes run in their own process groups (so a Ctrl-C does not reach them) and are normally
/// killed by their fixtures' `Drop`, which a signal would skip. On a signal, a background thread
/// kills every direct child of this process (by pid), removes this process's temp dirs, and exits
/// with 128 + the signal number.
pub fn reap_children_on_signal() {
    let spawned = thread::Builder::new()
        .name("signal-reaper".into())
        .spawn(|| {
            use tokio::signal::unix::{signal, SignalKind};
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("signal reaper: no runtime: {e}");
                    return;
                }
            };
            let code = runtime.block_on(async {
                let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                ) else {
                    eprintln!("signal reaper: cannot listen for signals");
                    return None;
                };
                tokio::select! {
                    _ = int.recv() => Some(130),
                    _ = term.recv() => Some(143),
                    _ = hup.recv() => Some(129),
                }
            });
            if let Some(code) = code {
                eprintln!("\ninterrupted: stopping every process this run started");
                // Twice: a thread may have been starting a child during the first pass.
                for _ in 0..2 {
                    let pids: Vec<String> = child_pids().iter().map(u32::to_string).collect();
                    if !pids.is_empty() {
                        let _ = Command::new("kill")
                            .arg("-KILL")
                            .args(&pids)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
                remove_own_temp_dirs();
                std::process::exit(code);
            }
        });
    if let Err(e) = spawned {
        eprintln!("signal reaper: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_loopback_ports_only() {
        let text = "a = \"127.0.0.1:7233\" # 127.0.0.1:7301 and 10.0.0.1:7233, 127.0.0.1:x";
        let ports: Vec<u16> = loopback_ports(text).into_iter().map(|(_, p)| p).collect();
        assert_eq!(ports, [7233, 7301]);
        let map = BTreeMap::from([(7233, 20001), (7301, 7301)]);
        assert_eq!(
            replace_ports(text, &map),
            "a = \"127.0.0.1:20001\" # 127.0.0.1:7301 and 10.0.0.1:7233, 127.0.0.1:x"
        );
    }

    #[test]
    fn derives_both_shipped_pairs() {
        for mode in [Mode::Tcp, Mode::Mux] {
            let pair = derive_pair(mode, "127.0.0.1:21001", "127.0.0.1:21002", false).unwrap();
            assert_eq!(pair.a.upstream, "127.0.0.1:21001");
            assert_eq!(pair.b.upstream, "127.0.0.1:21002");
            assert!(!pair.a.toml.contains(":7233") && !pair.b.toml.contains(":7243"));
            assert_ne!(pair.a.local_listen, pair.b.local_listen);
        }
    }
}
