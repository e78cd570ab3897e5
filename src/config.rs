//! Configuration: TOML parsed with serde (unknown keys rejected), then `validate()` which reports every
//! problem at once, each with the key path it concerns.
//!
//! Parsing stops at the first syntax or type error (serde cannot go on past it); semantic checks
//! (addresses, names, references, TLS material, limits) all run and are reported together.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::transport::connect::{split_host_port, ConnectSettings};
use crate::transport::tls::{self, ClientTls, ServerTls};
use crate::transport::validity;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub descriptors: DescriptorsConfig,
    #[serde(default)]
    pub(crate) limits: ProcessLimits,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default, rename = "cluster_connection")]
    pub cluster_connections: Vec<ClusterConnectionConfig>,
}

/// A link between the local Temporal cluster and a remote one, through this proxy (and usually a
/// peer Strait on the other side). Calls flow both ways.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConnectionConfig {
    pub name: String,
    pub local: LocalSideConfig,
    pub remote: RemoteSideConfig,
    /// Local name = remote name, for calls in both directions.
    #[serde(default)]
    pub(crate) translate: TranslateConfig,
    /// Which calls may cross this connection.
    #[serde(default)]
    pub acl: Option<AclConfig>,
    #[serde(default)]
    pub(crate) limits: ListenerLimits,
}

/// Access control for a cluster connection. Applies to calls arriving from the remote side, and with
/// `apply_to_local` also to calls the local cluster makes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    /// `Service.Method` patterns on the service's short name: `AdminService.*`,
    /// `WorkflowService.DescribeNamespace`, or `*` (the default).
    pub allowed_methods: Vec<String>,
    /// Namespaces (local names) that calls may name and whose replication may cross; absent = all.
    /// Requests naming another namespace (by name or ID) are denied; replication tasks and
    /// `ListNamespaces` entries of other namespaces are dropped from responses.
    pub allowed_namespaces: Option<Vec<String>>,
    pub apply_to_local: bool,
}

impl Default for AclConfig {
    fn default() -> Self {
        Self {
            allowed_methods: vec!["*".to_owned()],
            allowed_namespaces: None,
            apply_to_local: false,
        }
    }
}

/// The local side: the listener the local Temporal server dials as "the remote cluster", and the
/// local frontend that calls from the remote side are relayed to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSideConfig {
    pub listen: String,
    pub upstream: String,
    /// The address the local cluster dials to reach this link (normally `listen`, as seen from the
    /// local cluster). When set, `AddOrUpdateRemoteCluster` calls arriving from the remote side get
    /// it as their frontend address, so the local cluster stores the proxy, not an address it
    /// cannot reach (s2s-proxy's `replicationEndpoint`).
    #[serde(default)]
    pub advertised_address: Option<String>,
    /// TLS towards the local frontend.
    #[serde(default)]
    pub(crate) tls: Option<ClientTlsConfig>,
    /// /readyz answers 503 while no connection to the local frontend is up (default: it only
    /// reports it, as `warn`).
    #[serde(default)]
    pub gate_readiness: bool,
}

/// How the remote side is reached.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "mode", deny_unknown_fields)]
pub enum RemoteSideConfig {
    /// Plain HTTP/2: a listener the remote side dials, and an address calls to the remote go to.
    #[serde(rename = "tcp")]
    Tcp {
        listen: String,
        address: String,
        #[serde(default)]
        tls: Option<ClientTlsConfig>,
        #[serde(default)]
        gate_readiness: bool,
    },
    /// Dials the peer Strait's mux port: `sessions` yamux sessions over TCP (+TLS).
    #[serde(rename = "mux-client")]
    MuxClient {
        address: String,
        #[serde(default = "default_sessions")]
        sessions: usize,
        #[serde(default)]
        tls: Option<ClientTlsConfig>,
        /// First delay before redialling a session that failed or ended within a second (one that
        /// lived longer is redialled at once); doubles, with jitter, up to `backoff_max`.
        #[serde(default = "default_mux_backoff_initial", with = "humantime_serde")]
        backoff_initial: Duration,
        #[serde(default = "default_mux_backoff_max", with = "humantime_serde")]
        backoff_max: Duration,
        #[serde(default)]
        gate_readiness: bool,
    },
    /// Accepts peer Strait sessions on one port; with TLS, client certificates are required.
    #[serde(rename = "mux-server")]
    MuxServer {
        listen: String,
        #[serde(default)]
        tls: Option<ServerTlsConfig>,
        #[serde(default)]
        gate_readiness: bool,
    },
}

impl RemoteSideConfig {
    /// Whether /readyz answers 503 while the remote side is down (its mux sessions, or its
    /// connections): off by default, since two Strait deployments gated on each other would never
    /// become ready behind a Service that routes only to ready pods.
    pub fn gates_readiness(&self) -> bool {
        match self {
            RemoteSideConfig::Tcp { gate_readiness, .. }
            | RemoteSideConfig::MuxClient { gate_readiness, .. }
            | RemoteSideConfig::MuxServer { gate_readiness, .. } => *gate_readiness,
        }
    }
}

// `mux-client`'s optional keys. serde has no container default for an enum variant (nor one that
// leaves a key required: `address` must stay a "missing field" error), hence a function per key.
fn default_sessions() -> usize {
    4
}

fn default_mux_backoff_initial() -> Duration {
    Duration::from_millis(100)
}

fn default_mux_backoff_max() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Tokio worker threads; 0 (the default) = one per CPU core.
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl From<LogFormat> for crate::telemetry::Format {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Pretty => crate::telemetry::Format::Pretty,
            LogFormat::Json => crate::telemetry::Format::Json,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `strait=debug,h2=warn`; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP/1.1 listener (/livez, /readyz, /metrics).
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            // Loopback: the metrics and readiness of a proxy are not for the whole network.
            listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

/// The descriptor set that guides rewriting: the embedded one (Temporal Server 1.32.0) unless `file`
/// names another (e.g. dumped from another Temporal release with `strait descriptors dump`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DescriptorsConfig {
    pub file: Option<PathBuf>,
}

/// Bounds on the whole process, over every listener and cluster connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ProcessLimits {
    /// Bytes that messages held whole to be edited may take at once, over all connections; a
    /// message that would exceed it fails its call with RESOURCE_EXHAUSTED.
    pub(crate) gather_bytes: u64,
}

impl Default for ProcessLimits {
    fn default() -> Self {
        Self {
            // 256 MiB: four connections' worth of `connection_gather_bytes`, within a 2-core
            // machine with a few GiB (README, "Messages held whole").
            gather_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight calls may run after SIGTERM/SIGINT before they are cut.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
        }
    }
}

/// TLS for a listener. `client_ca` set means clients must present a certificate it verifies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert: PathBuf,
    pub(crate) key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: the client certificate must also name one of these (DNS names or IP
    /// addresses in its subjectAltName). Empty = any certificate the CA signed.
    #[serde(default)]
    pub(crate) allowed_sans: Vec<String>,
}

/// TLS towards an upstream. Without `ca` the system's trust store is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    #[serde(default)]
    pub(crate) ca: Option<PathBuf>,
    #[serde(default)]
    pub(crate) cert: Option<PathBuf>,
    #[serde(default)]
    pub(crate) key: Option<PathBuf>,
    /// SNI and certificate name to expect; defaults to the host part of `address`.
    #[serde(default)]
    pub(crate) server_name: Option<String>,
}

impl From<&ServerTlsConfig> for ServerTls {
    fn from(config: &ServerTlsConfig) -> Self {
        ServerTls {
            cert: config.cert.clone(),
            key: config.key.clone(),
            client_ca: config.client_ca.clone(),
            allowed_sans: config.allowed_sans.clone(),
        }
    }
}

impl From<&ClientTlsConfig> for ClientTls {
    fn from(config: &ClientTlsConfig) -> Self {
        ClientTls {
            ca: config.ca.clone(),
            cert: config.cert.clone(),
            key: config.key.clone(),
            server_name: config.server_name.clone(),
        }
    }
}

impl From<&UpstreamConfig> for ConnectSettings {
    fn from(upstream: &UpstreamConfig) -> Self {
        ConnectSettings {
            address: upstream.address.clone(),
            connect_timeout: upstream.connect_timeout,
            tls: upstream.tls.as_ref().map(ClientTls::from),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// `host:port` of the upstream gRPC server.
    pub address: String,
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
    /// `:authority` sent upstream; defaults to `address` (or `server_name:port` with TLS).
    #[serde(default)]
    pub authority: Option<String>,
    /// HTTP/2 connections kept open to the upstream; calls are spread over them.
    #[serde(default = "UpstreamConfig::default_connections")]
    pub connections: usize,
    #[serde(
        default = "UpstreamConfig::default_connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// First delay before reconnecting; doubles (with jitter) up to `backoff_max`.
    #[serde(
        default = "UpstreamConfig::default_backoff_initial",
        with = "humantime_serde"
    )]
    pub backoff_initial: Duration,
    #[serde(
        default = "UpstreamConfig::default_backoff_max",
        with = "humantime_serde"
    )]
    pub backoff_max: Duration,
    /// HTTP/2 PING interval on idle-looking connections; a missed pong closes the connection.
    #[serde(
        default = "UpstreamConfig::default_keepalive",
        with = "humantime_serde"
    )]
    pub keepalive_interval: Duration,
    #[serde(
        default = "UpstreamConfig::default_keepalive_timeout",
        with = "humantime_serde"
    )]
    pub keepalive_timeout: Duration,
    /// /readyz answers 503 while no connection to this upstream is up (default: it only reports
    /// it, as `warn`, and calls get UNAVAILABLE meanwhile).
    #[serde(default)]
    pub gate_readiness: bool,
}

impl UpstreamConfig {
    /// An upstream with every default, as an `[[upstream]]` table with only a name and address.
    pub fn with_defaults(name: String, address: String) -> Self {
        Self {
            name,
            address,
            tls: None,
            authority: None,
            connections: Self::default_connections(),
            connect_timeout: Self::default_connect_timeout(),
            backoff_initial: Self::default_backoff_initial(),
            backoff_max: Self::default_backoff_max(),
            keepalive_interval: Self::default_keepalive(),
            keepalive_timeout: Self::default_keepalive_timeout(),
            gate_readiness: false,
        }
    }

    // The optional keys' defaults, one function each: a container `#[serde(default)]` would make
    // `name` and `address` optional too, and turn their "missing field" errors into other messages.
    fn default_connections() -> usize {
        1
    }
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    fn default_backoff_initial() -> Duration {
        Duration::from_millis(100)
    }
    fn default_backoff_max() -> Duration {
        Duration::from_secs(10)
    }
    fn default_keepalive() -> Duration {
        Duration::from_secs(30)
    }
    fn default_keepalive_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// `ip:port` to accept HTTP/2 (h2c with prior knowledge, or TLS with ALPN h2) on.
    pub listen: String,
    /// Name of the `[[upstream]]` calls are relayed to.
    pub upstream: String,
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    #[serde(default)]
    pub(crate) limits: ListenerLimits,
    /// Names translated between this listener's clients and its upstream.
    #[serde(default)]
    pub translate: TranslateConfig,
}

/// Client-side name = upstream-side name. Requests are translated one way, responses the other.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateConfig {
    /// Namespace names: `{ "orders" = "orders-prod" }`.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// Search-attribute names per client-side namespace: `{ "orders" = { "CustomerId" = "OrderCustomer" } }`.
    #[serde(default)]
    pub search_attributes: BTreeMap<String, BTreeMap<String, String>>,
    /// Repair invalid UTF-8 in every string field of upstream responses (to U+FFFD), counting each.
    #[serde(default)]
    pub repair_utf8: bool,
    /// Listeners only (default false): whether clients may also use the upstream-side names that
    /// are mapping targets, and see upstream names that collide with client-side names. By
    /// default such names are refused in requests (as unknown) and left out of responses' lists.
    #[serde(default)]
    pub expose_upstream_names: Option<bool>,
}

impl TranslateConfig {
    pub(crate) fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.search_attributes.values().all(BTreeMap::is_empty)
            && !self.repair_utf8
    }
}

/// Bounds applied to every connection and call of a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ListenerLimits {
    /// Open client connections; further ones are accepted and closed at once.
    pub(crate) max_connections: usize,
    /// Concurrent calls per client connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub(crate) max_concurrent_streams: u32,
    /// Largest gRPC message, each way; larger ones fail the call with RESOURCE_EXHAUSTED.
    pub(crate) max_message_bytes: u32,
    /// Largest request message on a method whose requests are edited (they are held whole, not
    /// streamed); never more than `max_message_bytes`. Responses keep `max_message_bytes`.
    pub(crate) max_edited_request_bytes: u32,
    /// Bytes that messages held whole to be edited (both ways) may take at once on one client
    /// connection; a message that would exceed it fails its call with RESOURCE_EXHAUSTED.
    pub(crate) connection_gather_bytes: u64,
    /// Largest header list (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
    pub(crate) max_header_list_bytes: u32,
    /// HTTP/2 flow-control window per stream: bytes in flight before the sender must wait.
    pub(crate) stream_window_bytes: u32,
    /// HTTP/2 flow-control window per connection.
    pub(crate) connection_window_bytes: u32,
    /// TLS handshake and HTTP/2 preface must complete within this.
    #[serde(with = "humantime_serde")]
    pub(crate) handshake_timeout: Duration,
    /// A connection with no call open for this long is closed with GOAWAY.
    #[serde(with = "humantime_serde")]
    pub(crate) idle_timeout: Duration,
    /// HTTP/2 PING sent to clients this often; a missing pong after `keepalive_timeout` closes the
    /// connection, so calls on a dead peer (e.g. a long poll from a vanished worker) do not linger.
    #[serde(with = "humantime_serde")]
    pub(crate) keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) keepalive_timeout: Duration,
    /// Upper bound on any call's duration. Unset (the default) = only the call's own `grpc-timeout`;
    /// when set, a call's own longer timeout still wins, so Temporal long polls are never cut short.
    #[serde(with = "humantime_serde")]
    pub(crate) max_call_duration: Option<Duration>,
    /// A call that could not send a byte for this long, because the receiving side granted no
    /// HTTP/2 flow-control window (a client that stopped reading), is failed and its upstream call
    /// cancelled. Quiet calls are not affected: long polls and idle streams have nothing to send.
    #[serde(with = "humantime_serde")]
    pub(crate) send_stall_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_concurrent_streams: 1_000,
            max_message_bytes: 128 * 1024 * 1024,
            // Temporal's frontend accepts requests of at most 4 MiB (grpc-go's default receive
            // limit), so holding a larger request whole would only end in the upstream refusing it.
            max_edited_request_bytes: 4 * 1024 * 1024,
            connection_gather_bytes: 64 * 1024 * 1024,
            max_header_list_bytes: 64 * 1024,
            stream_window_bytes: 1024 * 1024,
            connection_window_bytes: 8 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15 * 60),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_call_duration: None,
            send_stall_timeout: Duration::from_secs(60),
        }
    }
}

/// The limits on messages held whole to be edited, of a listener or a cluster connection.
fn check_gather_limits(
    limits: &ListenerLimits,
    key: &dyn Fn(&str) -> String,
    report: &mut impl FnMut(String, String),
) {
    if limits.max_edited_request_bytes == 0 {
        report(
            key("limits.max_edited_request_bytes"),
            "must be at least 1".into(),
        );
    }
    if limits.connection_gather_bytes == 0 {
        report(
            key("limits.connection_gather_bytes"),
            "must be at least 1 (every edited message is charged to it)".into(),
        );
    }
}

/// One problem found in a configuration, with the key it concerns (`listener[0].upstream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    #[cfg(feature = "internals")]
    pub key: String,
    #[cfg(not(feature = "internals"))]
    pub(crate) key: String,
    #[cfg(feature = "internals")]
    pub message: String,
    #[cfg(not(feature = "internals"))]
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration was refused: every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", format_problems(.problems))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    #[cfg(any(test, feature = "internals"))]
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    let mut out = format!("{} problem(s) in the configuration:", problems.len());
    for problem in problems {
        out.push_str("\n  - ");
        out.push_str(&problem.to_string());
    }
    out
}

impl Config {
    /// Every certificate file Strait presents (listeners, mux servers, and client certificates
    /// towards upstreams and remote sides), with the key that names it.
    pub(crate) fn presented_certificates(&self) -> Vec<(String, &Path)> {
        let mut files: Vec<(String, &Path)> = Vec::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(tls) = &listener.tls {
                files.push((format!("listener[{i}].tls.cert"), &tls.cert));
            }
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if let Some(cert) = upstream.tls.as_ref().and_then(|t| t.cert.as_deref()) {
                files.push((format!("upstream[{i}].tls.cert"), cert));
            }
        }
        for (i, connection) in self.cluster_connections.iter().enumerate() {
            let key = |field: &str| format!("cluster_connection[{i}].{field}");
            if let Some(cert) = connection
                .local
                .tls
                .as_ref()
                .and_then(|t| t.cert.as_deref())
            {
                files.push((key("local.tls.cert"), cert));
            }
            match &connection.remote {
                RemoteSideConfig::MuxServer { tls: Some(tls), .. } => {
                    files.push((key("remote.tls.cert"), &tls.cert));
                }
                RemoteSideConfig::Tcp { tls: Some(tls), .. }
                | RemoteSideConfig::MuxClient { tls: Some(tls), .. } => {
                    if let Some(cert) = tls.cert.as_deref() {
                        files.push((key("remote.tls.cert"), cert));
                    }
                }
                _ => {}
            }
        }
        files
    }

    /// Warnings, with their keys, for every certificate Strait presents that is not valid at `now`
    /// (seconds since the Unix epoch) or expires soon (see [`validity::warnings`]).
    pub fn certificate_warnings(&self, now: i64) -> Vec<(String, String)> {
        validity::warnings(&self.presented_certificates(), now)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let key = match key.as_str() {
                "." => "(file)".to_owned(),
                // A key that is itself the empty string (`"" = 1`).
                "" => "\"\"".to_owned(),
                _ => key,
            };
            let inner = err.into_inner();
            // Syntax errors carry their text only in Display; keep the short message when there is one.
            let mut message = inner.message().trim().to_owned();
            if message.is_empty() {
                message = inner
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("invalid TOML")
                    .trim()
                    .to_owned();
            }
            if message.is_empty() {
                let found = inner
                    .span()
                    .and_then(|span| text.get(span.start..))
                    .and_then(|t| t.chars().next());
                message = match found {
                    Some(c) if c.is_control() => {
                        format!("invalid TOML: control character U+{:04X}", c as u32)
                    }
                    _ => "invalid TOML".to_owned(),
                };
            }
            if let Some(span) = inner.span() {
                let (line, column) = line_column(text, span.start);
                message = format!("{message} (line {line}, column {column})");
            }
            ConfigError::Invalid {
                problems: vec![Problem { key, message }],
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything serde cannot: addresses, names, references, limits and TLS material.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut report = |key: String, message: String| problems.push(Problem { key, message });
        let mut bound: Vec<(SocketAddr, String)> = Vec::new();

        if self.runtime.worker_threads > 1024 {
            report(
                "runtime.worker_threads".into(),
                "must be at most 1024 (0 = one per core)".into(),
            );
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            report(
                "log.level".into(),
                format!("invalid filter {:?}: {err}", self.log.level),
            );
        }
        match self.admin.listen.parse::<SocketAddr>() {
            Ok(addr) => bound.push((addr, "admin.listen".into())),
            Err(_) => report(
                "admin.listen".into(),
                format!("{:?} is not an ip:port address", self.admin.listen),
            ),
        }
        if let Some(file) = &self.descriptors.file {
            if let Err(err) = crate::descriptor_set::Descriptors::load(file) {
                report("descriptors.file".into(), err.to_string());
            }
        }
        if self.shutdown.grace > Duration::from_secs(24 * 3600) {
            report("shutdown.grace".into(), "must be at most 24h".into());
        }
        if self.limits.gather_bytes == 0 {
            report(
                "limits.gather_bytes".into(),
                "must be at least 1 (every edited message is charged to it)".into(),
            );
        }

        let mut upstream_names = HashSet::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let key = |field: &str| format!("upstream[{i}].{field}");
            check_name(
                &upstream.name,
                &key("name"),
                &mut upstream_names,
                &mut report,
            );
            if let Err(message) = split_host_port(&upstream.address) {
                report(key("address"), message);
            }
            if !(1..=64).contains(&upstream.connections) {
                report(key("connections"), "must be between 1 and 64".into());
            }
            if upstream.connect_timeout.is_zero() {
                report(key("connect_timeout"), "must be greater than zero".into());
            }
            if upstream.backoff_initial.is_zero() {
                report(key("backoff_initial"), "must be greater than zero".into());
            }
            if upstream.backoff_max < upstream.backoff_initial {
                report(
                    key("backoff_max"),
                    "must not be less than backoff_initial".into(),
                );
            }
            if upstream.keepalive_interval.is_zero() || upstream.keepalive_timeout.is_zero() {
                report(
                    key("keepalive_interval"),
                    "keepalive interval and timeout must be greater than zero".into(),
                );
            }
            if let Some(authority) = &upstream.authority {
                if authority.parse::<http::uri::Authority>().is_err() {
                    report(
                        key("authority"),
                        format!("{authority:?} is not a valid HTTP authority"),
                    );
                }
            }
            if let Some(tls_config) = &upstream.tls {
                if let Err(err) = tls::client_config(&tls_config.into()) {
                    report(key(&format!("tls.{}", err.key())), err.to_string());
                }
                if let Err(message) = ConnectSettings::from(upstream).server_name() {
                    report(key("tls.server_name"), message);
                }
            }
        }

        if self.listeners.is_empty() && self.cluster_connections.is_empty() {
            report(
                "listener".into(),
                "at least one [[listener]] or [[cluster_connection]] is required".into(),
            );
        }
        let mut listener_names = HashSet::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            let key = |field: &str| format!("listener[{i}].{field}");
            check_name(
                &listener.name,
                &key("name"),
                &mut listener_names,
                &mut report,
            );
            match listener.listen.parse::<SocketAddr>() {
                Ok(addr) => bound.push((addr, key("listen"))),
                Err(_) => report(
                    key("listen"),
                    format!("{:?} is not an ip:port address", listener.listen),
                ),
            }
            if !upstream_names.contains(listener.upstream.as_str()) {
                report(
                    key("upstream"),
                    format!("no [[upstream]] is named {:?}", listener.upstream),
                );
            }
            if let Some(tls_config) = &listener.tls {
                if let Err(err) = tls::server_config(&tls_config.into()) {
                    report(key(&format!("tls.{}", err.key())), err.to_string());
                }
            }
            check_mapping(
                &listener.translate.namespaces,
                &key("translate.namespaces"),
                &mut report,
            );
            for (namespace, names) in &listener.translate.search_attributes {
                let map_key = key(&format!("translate.search_attributes.{namespace}"));
                if namespace.is_empty() {
                    report(map_key.clone(), "the namespace name is empty".into());
                }
                check_mapping(names, &map_key, &mut report);
            }
            let limits = &listener.limits;
            if limits.max_connections == 0 {
                report(key("limits.max_connections"), "must be at least 1".into());
            }
            if limits.max_concurrent_streams == 0 {
                report(
                    key("limits.max_concurrent_streams"),
                    "must be at least 1".into(),
                );
            }
            if limits.max_message_bytes == 0 {
                report(key("limits.max_message_bytes"), "must be at least 1".into());
            }
            check_gather_limits(limits, &key, &mut report);
            if limits.max_header_list_bytes < 1024 {
                report(
                    key("limits.max_header_list_bytes"),
                    "must be at least 1024".into(),
                );
            }
            // HTTP/2 windows: at least the protocol default, at most 2^31-1 (RFC 9113 §6.9.1).
            for (field, value) in [
                ("limits.stream_window_bytes", limits.stream_window_bytes),
                (
                    "limits.connection_window_bytes",
                    limits.connection_window_bytes,
                ),
            ] {
                if !(65_535..=0x7fff_ffff).contains(&value) {
                    report(key(field), "must be between 65535 and 2147483647".into());
                }
            }
            if limits.handshake_timeout.is_zero() {
                report(
                    key("limits.handshake_timeout"),
                    "must be greater than zero".into(),
                );
            }
            if limits.idle_timeout.is_zero() {
                report(
                    key("limits.idle_timeout"),
                    "must be greater than zero".into(),
                );
            }
            if limits.keepalive_interval.is_zero() {
                report(
                    key("limits.keepalive_interval"),
                    "must be greater than zero".into(),
                );
            }
            if limits.keepalive_timeout.is_zero() {
                report(
                    key("limits.keepalive_timeout"),
                    "must be greater than zero".into(),
                );
            }
            if limits.max_call_duration.is_some_and(|d| d.is_zero()) {
                report(
                    key("limits.max_call_duration"),
                    "must be greater than zero when set".into(),
                );
            }
            if limits.send_stall_timeout.is_zero() {
                report(
                    key("limits.send_stall_timeout"),
                    "must be greater than zero".into(),
                );
            }
        }

        let mut connection_names = HashSet::new();
        for (i, connection) in self.cluster_connections.iter().enumerate() {
            let key = |field: &str| format!("cluster_connection[{i}].{field}");
            check_name(
                &connection.name,
                &key("name"),
                &mut connection_names,
                &mut report,
            );
            check_gather_limits(&connection.limits, &key, &mut report);
            if connection.limits.send_stall_timeout.is_zero() {
                report(
                    key("limits.send_stall_timeout"),
                    "must be greater than zero".into(),
                );
            }
            match connection.local.listen.parse::<SocketAddr>() {
                Ok(addr) => bound.push((addr, key("local.listen"))),
                Err(_) => report(
                    key("local.listen"),
                    format!("{:?} is not an ip:port address", connection.local.listen),
                ),
            }
            if let Err(message) = split_host_port(&connection.local.upstream) {
                report(key("local.upstream"), message);
            }
            if let Some(tls_config) = &connection.local.tls {
                if let Err(err) = tls::client_config(&tls_config.into()) {
                    report(key(&format!("local.tls.{}", err.key())), err.to_string());
                }
            }
            if let Some(Err(message)) = connection
                .local
                .advertised_address
                .as_deref()
                .map(split_host_port)
            {
                report(key("local.advertised_address"), message);
            }
            if let Some(acl) = &connection.acl {
                for (j, pattern) in acl.allowed_methods.iter().enumerate() {
                    if let Err(err) =
                        crate::access::MethodPolicy::new(std::slice::from_ref(pattern))
                    {
                        report(key(&format!("acl.allowed_methods[{j}]")), err.to_string());
                    }
                }
                let mut seen = HashSet::new();
                for (j, namespace) in acl.allowed_namespaces.iter().flatten().enumerate() {
                    if namespace.is_empty() {
                        report(
                            key(&format!("acl.allowed_namespaces[{j}]")),
                            "names must not be empty".into(),
                        );
                    } else if !seen.insert(namespace.as_str()) {
                        report(
                            key(&format!("acl.allowed_namespaces[{j}]")),
                            format!("{namespace:?} is listed twice"),
                        );
                    }
                }
            }
            match &connection.remote {
                RemoteSideConfig::Tcp {
                    listen,
                    address,
                    tls: tls_config,
                    ..
                } => {
                    match listen.parse::<SocketAddr>() {
                        Ok(addr) => bound.push((addr, key("remote.listen"))),
                        Err(_) => report(
                            key("remote.listen"),
                            format!("{listen:?} is not an ip:port address"),
                        ),
                    }
                    if let Err(message) = split_host_port(address) {
                        report(key("remote.address"), message);
                    }
                    if let Some(Err(err)) =
                        tls_config.as_ref().map(|t| tls::client_config(&t.into()))
                    {
                        report(key(&format!("remote.tls.{}", err.key())), err.to_string());
                    }
                }
                RemoteSideConfig::MuxClient {
                    address,
                    sessions,
                    tls: tls_config,
                    backoff_initial,
                    backoff_max,
                    ..
                } => {
                    if let Err(message) = split_host_port(address) {
                        report(key("remote.address"), message);
                    }
                    if !(1..=64).contains(sessions) {
                        report(key("remote.sessions"), "must be between 1 and 64".into());
                    }
                    if backoff_initial.is_zero() {
                        report(
                            key("remote.backoff_initial"),
                            "must be greater than zero".into(),
                        );
                    }
                    if backoff_max < backoff_initial {
                        report(
                            key("remote.backoff_max"),
                            "must not be less than backoff_initial".into(),
                        );
                    }
                    if let Some(Err(err)) =
                        tls_config.as_ref().map(|t| tls::client_config(&t.into()))
                    {
                        report(key(&format!("remote.tls.{}", err.key())), err.to_string());
                    }
                }
                RemoteSideConfig::MuxServer {
                    listen,
                    tls: tls_config,
                    ..
                } => {
                    match listen.parse::<SocketAddr>() {
                        Ok(addr) => bound.push((addr, key("remote.listen"))),
                        Err(_) => report(
                            key("remote.listen"),
                            format!("{listen:?} is not an ip:port address"),
                        ),
                    }
                    if let Some(tls_config) = tls_config {
                        // A mux port accepts whole clusters' traffic: never from just any certificate.
                        if tls_config.client_ca.is_none() {
                            report(
                                key("remote.tls.client_ca"),
                                "required for mux-server: peers must present a certificate it verifies".into(),
                            );
                        }
                        if let Err(err) = tls::server_config(&tls_config.into()) {
                            report(key(&format!("remote.tls.{}", err.key())), err.to_string());
                        }
                    }
                }
            }
            check_mapping(
                &connection.translate.namespaces,
                &key("translate.namespaces"),
                &mut report,
            );
            if connection.translate.expose_upstream_names.is_some() {
                report(
                    key("translate.expose_upstream_names"),
                    "is a listener setting: a cluster connection relays both clusters' names as they are".into(),
                );
            }
            for (namespace, names) in &connection.translate.search_attributes {
                check_mapping(
                    names,
                    &key(&format!("translate.search_attributes.{namespace}")),
                    &mut report,
                );
            }
        }

        // Two sockets on one address cannot both bind (port 0 excepted: the OS picks).
        for (i, (addr, key)) in bound.iter().enumerate() {
            if addr.port() == 0 {
                continue;
            }
            if let Some((_, first)) = bound[..i].iter().find(|(other, _)| other == addr) {
                report(key.clone(), format!("{addr} is already used by {first}"));
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    #[cfg(feature = "internals")]
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// A translation must be one-to-one with non-empty names, or responses could not be mapped back.
fn check_mapping(
    map: &BTreeMap<String, String>,
    key: &str,
    report: &mut impl FnMut(String, String),
) {
    let mut targets: HashMap<&str, &str> = HashMap::new();
    for (from, to) in map {
        if from.is_empty() || to.is_empty() {
            report(format!("{key}.{from}"), "names must not be empty".into());
        }
        if let Some(first) = targets.insert(to.as_str(), from.as_str()) {
            report(
                format!("{key}.{from}"),
                format!("{from:?} and {first:?} both map to {to:?}: a mapping must be one-to-one"),
            );
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn check_name(
    name: &str,
    key: &str,
    seen: &mut HashSet<String>,
    report: &mut impl FnMut(String, String),
) {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !valid {
        report(
            key.to_owned(),
            format!("{name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"),
        );
    }
    if !seen.insert(name.to_owned()) {
        report(key.to_owned(), format!("the name {name:?} is used twice"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const MINIMAL: &str = r#"
        [admin]
        listen = "127.0.0.1:9464"
        [[upstream]]
        name = "temporal"
        address = "127.0.0.1:7233"
        [[listener]]
        name = "clients"
        listen = "127.0.0.1:7234"
        upstream = "temporal"
    "#;

    #[test]
    fn certificate_warnings_name_the_config_key() {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
        let c = |name: &str| certs.join(name).display().to_string();
        let text = format!(
            r#"
            [admin]
            listen = "127.0.0.1:0"
            [[upstream]]
            name = "t"
            address = "127.0.0.1:7233"
            tls = {{ ca = "{ca}", cert = "{expired}", key = "{expired_key}" }}
            [[listener]]
            name = "good"
            listen = "127.0.0.1:0"
            upstream = "t"
            tls = {{ cert = "{server}", key = "{server_key}" }}
            [[listener]]
            name = "future"
            listen = "127.0.0.1:0"
            upstream = "t"
            tls = {{ cert = "{future}", key = "{future_key}" }}
            "#,
            ca = c("ca.pem"),
            expired = c("expired.pem"),
            expired_key = c("expired-key.pem"),
            server = c("server.pem"),
            server_key = c("server-key.pem"),
            future = c("not-yet-valid.pem"),
            future_key = c("not-yet-valid-key.pem"),
        );
        let config = Config::parse(&text).unwrap();
        let presented = config.presented_certificates();
        let presented: Vec<&str> = presented.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            presented,
            [
                "listener[0].tls.cert",
                "listener[1].tls.cert",
                "upstream[0].tls.cert"
            ]
        );
        let warnings = config.certificate_warnings(validity::now());
        let keys: Vec<&str> = warnings.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["listener[1].tls.cert", "upstream[0].tls.cert"],
            "{warnings:?}"
        );
        assert!(warnings[0].1.contains("not-yet-valid.pem"), "{warnings:?}");
        assert!(warnings[1].1.contains("expired.pem"), "{warnings:?}");
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(
            config.listeners[0].limits.max_message_bytes,
            128 * 1024 * 1024
        );
        assert_eq!(config.upstreams[0].connections, 1);
        assert_eq!(config.shutdown.grace, Duration::from_secs(30));
        assert!(config.listeners[0].limits.max_call_duration.is_none());
        assert_eq!(
            config.listeners[0].limits.send_stall_timeout,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn every_optional_key_has_its_documented_default() {
        // An empty file parses (validation then wants a listener): every section is its default.
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.runtime.worker_threads, 0);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Pretty);
        assert_eq!(config.admin.listen, "127.0.0.1:9464");
        assert_eq!(config.limits.gather_bytes, 256 * 1024 * 1024);
        assert_eq!(config.shutdown.grace, Duration::from_secs(30));
        assert!(config.descriptors.file.is_none());
        // An empty section is its default too.
        let config: Config = toml::from_str("[log]\n[admin]\n[limits]\n[shutdown]\n").unwrap();
        assert_eq!(config.log.level, "info");
        assert_eq!(config.admin.listen, "127.0.0.1:9464");
        assert_eq!(config.limits.gather_bytes, 256 * 1024 * 1024);
        assert_eq!(config.shutdown.grace, Duration::from_secs(30));

        let config = Config::parse(MINIMAL).unwrap();
        let upstream = &config.upstreams[0];
        assert_eq!(upstream.connections, 1);
        assert_eq!(upstream.connect_timeout, Duration::from_secs(5));
        assert_eq!(upstream.backoff_initial, Duration::from_millis(100));
        assert_eq!(upstream.backoff_max, Duration::from_secs(10));
        assert_eq!(upstream.keepalive_interval, Duration::from_secs(30));
        assert_eq!(upstream.keepalive_timeout, Duration::from_secs(10));
        assert!(upstream.tls.is_none() && upstream.authority.is_none());
        assert!(!upstream.gate_readiness);
        assert_eq!(
            format!("{upstream:?}"),
            format!(
                "{:?}",
                UpstreamConfig::with_defaults("temporal".into(), "127.0.0.1:7233".into())
            )
        );
        let limits = &config.listeners[0].limits;
        assert_eq!(limits.max_connections, 10_000);
        assert_eq!(limits.max_concurrent_streams, 1_000);
        assert_eq!(limits.max_message_bytes, 128 * 1024 * 1024);
        assert_eq!(limits.max_edited_request_bytes, 4 * 1024 * 1024);
        assert_eq!(limits.connection_gather_bytes, 64 * 1024 * 1024);
        assert_eq!(limits.max_header_list_bytes, 64 * 1024);
        assert_eq!(limits.stream_window_bytes, 1024 * 1024);
        assert_eq!(limits.connection_window_bytes, 8 * 1024 * 1024);
        assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(15 * 60));
        assert_eq!(limits.keepalive_interval, Duration::from_secs(60));
        assert_eq!(limits.keepalive_timeout, Duration::from_secs(20));
        assert!(limits.max_call_duration.is_none());
        assert_eq!(limits.send_stall_timeout, Duration::from_secs(60));
        assert!(config.listeners[0].translate.is_empty());

        let config = Config::parse(
            r#"
            [[cluster_connection]]
            name = "a-b"
            local = { listen = "127.0.0.1:7301", upstream = "127.0.0.1:7233" }
            remote = { mode = "mux-client", address = "127.0.0.1:7400" }
            acl = {}
            "#,
        )
        .unwrap();
        let connection = &config.cluster_connections[0];
        let RemoteSideConfig::MuxClient {
            sessions,
            backoff_initial,
            backoff_max,
            tls,
            gate_readiness,
            ..
        } = &connection.remote
        else {
            panic!("not mux-client: {:?}", connection.remote);
        };
        assert_eq!(*sessions, 4);
        assert_eq!(*backoff_initial, Duration::from_millis(100));
        assert_eq!(*backoff_max, Duration::from_secs(5));
        assert!(tls.is_none() && !gate_readiness);
        let acl = connection.acl.as_ref().unwrap();
        assert_eq!(acl.allowed_methods, ["*"]);
        assert!(acl.allowed_namespaces.is_none() && !acl.apply_to_local);
        assert_eq!(
            format!("{:?}", connection.limits),
            format!("{:?}", ListenerLimits::default())
        );
    }

    /// The README's configuration reference writes out every optional key with its default.
    #[test]
    fn the_readme_reference_shows_the_defaults() {
        let readme = include_str!("../README.md");
        let block = readme
            .split("## Configuration reference")
            .nth(1)
            .and_then(|section| section.split("```toml\n").nth(1))
            .and_then(|block| block.split("```").next())
            .unwrap();
        let documented = Config::parse(block).unwrap();
        let defaults = Config::default();
        let debug = |value: &dyn fmt::Debug| format!("{value:?}");
        assert_eq!(debug(&documented.runtime), debug(&defaults.runtime));
        assert_eq!(debug(&documented.log), debug(&defaults.log));
        assert_eq!(debug(&documented.admin), debug(&defaults.admin));
        assert_eq!(debug(&documented.limits), debug(&defaults.limits));
        assert_eq!(debug(&documented.shutdown), debug(&defaults.shutdown));
        let upstream = &documented.upstreams[0];
        assert_eq!(
            debug(upstream),
            debug(&UpstreamConfig::with_defaults(
                upstream.name.clone(),
                upstream.address.clone()
            ))
        );
        assert_eq!(
            debug(&documented.listeners[0].limits),
            debug(&ListenerLimits::default())
        );
    }

    #[test]
    fn gather_limits_have_defaults_and_zero_is_refused_with_its_key() {
        let config = Config::parse(MINIMAL).unwrap();
        let limits = &config.listeners[0].limits;
        assert_eq!(limits.max_edited_request_bytes, 4 * 1024 * 1024);
        assert_eq!(limits.connection_gather_bytes, 64 * 1024 * 1024);
        assert_eq!(config.limits.gather_bytes, 256 * 1024 * 1024);

        let text = MINIMAL.replace(
            "upstream = \"temporal\"",
            "upstream = \"temporal\"\nlimits = { max_edited_request_bytes = 0, connection_gather_bytes = 0 }",
        ) + "[limits]\ngather_bytes = 0\n";
        let err = Config::parse(&text).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "limits.gather_bytes",
                "listener[0].limits.max_edited_request_bytes",
                "listener[0].limits.connection_gather_bytes"
            ],
            "{err}"
        );
        let text = MINIMAL.to_owned() + "[limits]\ngather_byte = 1\n";
        let err = Config::parse(&text).unwrap_err();
        assert!(err.to_string().contains("gather_byte"), "{err}");
    }

    #[test]
    fn send_stall_timeout_must_be_positive() {
        let text = MINIMAL.replace(
            "upstream = \"temporal\"",
            "upstream = \"temporal\"\nlimits = { send_stall_timeout = \"0s\" }",
        );
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(
            err.problems()[0].key,
            "listener[0].limits.send_stall_timeout",
            "{err}"
        );
        let text = MINIMAL.replace(
            "upstream = \"temporal\"",
            "upstream = \"temporal\"\nlimits = { send_stall_timeout = \"250ms\" }",
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(
            config.listeners[0].limits.send_stall_timeout,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn shipped_relay_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/relay.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.listeners[0].listen, "127.0.0.1:7234");
        assert_eq!(config.upstreams[0].address, "127.0.0.1:7233");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse(&format!("{MINIMAL}\nbogus = 1\n")).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("bogus"), "{problems:?}");
    }

    #[test]
    fn unknown_nested_key_names_its_path() {
        let text = MINIMAL.replace(
            "upstream = \"temporal\"",
            "upstream = \"temporal\"\nlimits = { bogus = 1 }",
        );
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.problems()[0].key, "listener[0].limits.bogus", "{err}");
        assert!(err.to_string().contains("bogus"));
    }

    #[test]
    fn syntax_error_has_a_message_and_position() {
        let err =
            Config::parse("[admin]\nlisten = \"127.0.0.1:1\"\n# bad \u{7} char\n").unwrap_err();
        let problem = &err.problems()[0];
        assert!(!problem.message.is_empty());
        assert!(problem.message.contains("line 3"), "{problem:?}");
        let err = Config::parse("[[listener]]\nname = \n").unwrap_err();
        assert!(err.problems()[0].message.contains("line 2"), "{err}");
    }

    /// Found by the config_parse fuzz target: NUL bytes in a comment gave a problem with no message.
    #[test]
    fn fuzz_regression_nul_in_comment() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/config/fuzz-crash-nul-in-comment.toml");
        let err = Config::load(&path).unwrap_err();
        let problem = &err.problems()[0];
        assert_eq!(problem.key, "(file)");
        assert!(
            problem.message.contains("U+0000") && problem.message.contains("line 4"),
            "{problem:?}"
        );
    }

    /// Found by the config_parse fuzz target: an empty key gave a problem with an empty key path.
    #[test]
    fn fuzz_regression_empty_key() {
        let err = Config::parse("\"\"=\"\"").unwrap_err();
        assert_eq!(err.problems()[0].key, "\"\"");
    }

    #[test]
    fn bad_duration_names_its_key() {
        let text = format!("{MINIMAL}\n[shutdown]\ngrace = \"soon\"\n");
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.problems()[0].key, "shutdown.grace", "{err}");
    }

    #[test]
    fn cluster_connection_acl_problems_name_their_keys() {
        let text = r#"
            [[cluster_connection]]
            name = "a-b"
            local = { listen = "127.0.0.1:7301", upstream = "127.0.0.1:7233", advertised_address = "no port" }
            remote = { mode = "tcp", listen = "127.0.0.1:7401", address = "127.0.0.1:7402" }
            acl = { allowed_methods = ["AdminService.*", "Admin Service"], allowed_namespaces = ["billing", "", "billing"] }
        "#;
        let err = Config::parse(text).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cluster_connection[0].local.advertised_address",
                "cluster_connection[0].acl.allowed_methods[1]",
                "cluster_connection[0].acl.allowed_namespaces[1]",
                "cluster_connection[0].acl.allowed_namespaces[2]",
            ]
        );
        // Without allowed_methods every method is allowed; without allowed_namespaces, every
        // namespace.
        let text = text
            .replace("advertised_address = \"no port\"", "advertised_address = \"strait:7301\"")
            .replace(
                r#"allowed_methods = ["AdminService.*", "Admin Service"], allowed_namespaces = ["billing", "", "billing"]"#,
                "apply_to_local = true",
            );
        let config = Config::parse(&text).unwrap();
        let acl = config.cluster_connections[0].acl.as_ref().unwrap();
        assert_eq!(acl.allowed_methods, ["*"]);
        assert!(acl.allowed_namespaces.is_none());
    }

    /// A config with every kind of address key; `{KEY}` placeholders are filled by the test.
    const ADDRESSES: &str = r#"
        [admin]
        listen = "{admin.listen}"
        [[upstream]]
        name = "temporal"
        address = "{upstream[0].address}"
        [[listener]]
        name = "clients"
        listen = "{listener[0].listen}"
        upstream = "temporal"
        [[cluster_connection]]
        name = "tcp"
        local = { listen = "{cluster_connection[0].local.listen}", upstream = "{cluster_connection[0].local.upstream}", advertised_address = "{cluster_connection[0].local.advertised_address}" }
        remote = { mode = "tcp", listen = "{cluster_connection[0].remote.listen}", address = "{cluster_connection[0].remote.address}" }
        [[cluster_connection]]
        name = "mux-client"
        local = { listen = "127.0.0.1:7311", upstream = "127.0.0.1:7233" }
        remote = { mode = "mux-client", address = "{cluster_connection[1].remote.address}" }
        [[cluster_connection]]
        name = "mux-server"
        local = { listen = "127.0.0.1:7312", upstream = "127.0.0.1:7233" }
        remote = { mode = "mux-server", listen = "{cluster_connection[2].remote.listen}" }
    "#;

    /// Address keys of [`ADDRESSES`]: dialled (host:port) or bound (ip:port), with a valid value.
    const ADDRESS_KEYS: [(&str, bool, &str); 9] = [
        ("admin.listen", false, "127.0.0.1:9464"),
        ("upstream[0].address", true, "127.0.0.1:7233"),
        ("listener[0].listen", false, "127.0.0.1:7234"),
        (
            "cluster_connection[0].local.listen",
            false,
            "127.0.0.1:7301",
        ),
        (
            "cluster_connection[0].local.upstream",
            true,
            "127.0.0.1:7233",
        ),
        (
            "cluster_connection[0].local.advertised_address",
            true,
            "strait:7301",
        ),
        (
            "cluster_connection[0].remote.listen",
            false,
            "127.0.0.1:7401",
        ),
        (
            "cluster_connection[0].remote.address",
            true,
            "127.0.0.1:7402",
        ),
        (
            "cluster_connection[2].remote.listen",
            false,
            "127.0.0.1:7400",
        ),
    ];

    fn with_address(key: &str, value: &str) -> String {
        let mut text = ADDRESSES.replace(&format!("{{{key}}}"), value);
        for (other, _, valid) in ADDRESS_KEYS {
            text = text.replace(&format!("{{{other}}}"), valid);
        }
        text.replace("{cluster_connection[1].remote.address}", "127.0.0.1:7400")
    }

    #[test]
    fn addresses_strait_could_not_use_are_refused_with_their_key() {
        let mut keys = ADDRESS_KEYS.map(|(key, dial, _)| (key, dial)).to_vec();
        keys.push(("cluster_connection[1].remote.address", true));
        Config::parse(&with_address("", "")).unwrap();
        for (key, dial) in keys {
            for bad in [
                "http://127.0.0.1:7233",
                "[::1:7233",
                "::1:7233",
                "a b:7233",
                "host/x:7233",
                "127.0.0.1",
                "127.0.0.1:",
                "127.0.0.1:65536",
                "",
            ] {
                let err = Config::parse(&with_address(key, bad)).unwrap_err();
                let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
                assert_eq!(keys, [key], "{key} = {bad:?}: {err}");
                assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            }
            let good: &[&str] = if dial {
                &[
                    "127.0.0.1:7233",
                    "[::1]:7233",
                    "localhost:7233",
                    "temporal.example.com:7233",
                ]
            } else {
                // Listeners bind: an IP address (port 0: any free port).
                &["127.0.0.1:7999", "[::1]:7999", "0.0.0.0:0"]
            };
            for good in good {
                if let Err(err) = Config::parse(&with_address(key, good)) {
                    panic!("{key} = {good:?}: {err}");
                }
            }
            if !dial {
                let err = Config::parse(&with_address(key, "localhost:7999")).unwrap_err();
                assert_eq!(err.problems()[0].key, key, "{err}");
            }
        }
    }

    #[test]
    fn expose_upstream_names_is_a_checked_listener_setting() {
        let listener = |setting: &str| {
            format!(
                r#"
                [[upstream]]
                name = "t"
                address = "127.0.0.1:7233"
                [[listener]]
                name = "clients"
                listen = "127.0.0.1:7235"
                upstream = "t"
                [listener.translate]
                namespaces = {{ "orders" = "orders-prod" }}
                {setting}
                "#
            )
        };
        let config = Config::parse(&listener("")).unwrap();
        assert_eq!(config.listeners[0].translate.expose_upstream_names, None);
        let config = Config::parse(&listener("expose_upstream_names = true")).unwrap();
        assert_eq!(
            config.listeners[0].translate.expose_upstream_names,
            Some(true)
        );
        let err = Config::parse(&listener("expose_upstream_names = \"yes\"")).unwrap_err();
        assert!(err.to_string().contains("expose_upstream_names"), "{err}");
        // A cluster connection relays both clusters' names as they are: the key is refused there.
        let err = Config::parse(
            r#"
            [[cluster_connection]]
            name = "a-b"
            local = { listen = "127.0.0.1:7301", upstream = "127.0.0.1:7233" }
            remote = { mode = "tcp", listen = "127.0.0.1:7401", address = "127.0.0.1:7402" }
            translate = { namespaces = { "billing" = "billing-eu" }, expose_upstream_names = false }
            "#,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["cluster_connection[0].translate.expose_upstream_names"]
        );
    }

    #[test]
    fn mux_client_backoff_has_defaults_and_is_checked() {
        let link = |extra: &str| {
            format!(
                r#"
                [[cluster_connection]]
                name = "a-b"
                local = {{ listen = "127.0.0.1:7301", upstream = "127.0.0.1:7233" }}
                remote = {{ mode = "mux-client", address = "127.0.0.1:7400"{extra} }}
                "#
            )
        };
        let backoff = |config: &Config| match &config.cluster_connections[0].remote {
            RemoteSideConfig::MuxClient {
                backoff_initial,
                backoff_max,
                ..
            } => (*backoff_initial, *backoff_max),
            other => panic!("not mux-client: {other:?}"),
        };
        let config = Config::parse(&link("")).unwrap();
        assert_eq!(
            backoff(&config),
            (Duration::from_millis(100), Duration::from_secs(5))
        );
        let config =
            Config::parse(&link(r#", backoff_initial = "1ms", backoff_max = "20ms""#)).unwrap();
        assert_eq!(
            backoff(&config),
            (Duration::from_millis(1), Duration::from_millis(20))
        );
        for (extra, key) in [
            (r#", backoff_initial = "0s""#, "remote.backoff_initial"),
            (
                r#", backoff_initial = "2s", backoff_max = "1s""#,
                "remote.backoff_max",
            ),
        ] {
            let err = Config::parse(&link(extra)).unwrap_err();
            let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
            assert_eq!(
                keys,
                [format!("cluster_connection[0].{key}")],
                "{extra}: {err}"
            );
        }
        let err = Config::parse(&link(r#", backoff_max = "soon""#)).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn gate_readiness_is_off_by_default_and_opt_in_per_check() {
        let config = Config::parse(MINIMAL).unwrap();
        assert!(!config.upstreams[0].gate_readiness);
        let text = MINIMAL.replace(
            "address = \"127.0.0.1:7233\"",
            "address = \"127.0.0.1:7233\"\ngate_readiness = true",
        );
        assert!(Config::parse(&text).unwrap().upstreams[0].gate_readiness);

        let link = |local: &str, remote: &str| {
            format!(
                r#"
                [[cluster_connection]]
                name = "a-b"
                local = {{ listen = "127.0.0.1:7301", upstream = "127.0.0.1:7233"{local} }}
                remote = {{ {remote} }}
                "#
            )
        };
        let remotes = [
            r#"mode = "tcp", listen = "127.0.0.1:7401", address = "127.0.0.1:7402""#,
            r#"mode = "mux-client", address = "127.0.0.1:7400""#,
            r#"mode = "mux-server", listen = "127.0.0.1:7400""#,
        ];
        for remote in remotes {
            let config = Config::parse(&link("", remote)).unwrap();
            let connection = &config.cluster_connections[0];
            assert!(!connection.local.gate_readiness, "{remote}");
            assert!(!connection.remote.gates_readiness(), "{remote}");
            let gated = format!("{remote}, gate_readiness = true");
            let config = Config::parse(&link(", gate_readiness = true", &gated)).unwrap();
            let connection = &config.cluster_connections[0];
            assert!(connection.local.gate_readiness, "{remote}");
            assert!(connection.remote.gates_readiness(), "{remote}");
        }
        // Not a bool: refused (serde names the tagged `remote` table, not the field inside it).
        let err = Config::parse(&link(
            "",
            &format!("{}, gate_readiness = \"yes\"", remotes[1]),
        ))
        .unwrap_err();
        assert_eq!(
            err.problems()[0].key,
            "cluster_connection[0].remote",
            "{err}"
        );
        assert!(err.to_string().contains("expected a boolean"), "{err}");
        let err = Config::parse(&link(", gate_readiness = 1", remotes[0])).unwrap_err();
        assert_eq!(
            err.problems()[0].key,
            "cluster_connection[0].local.gate_readiness",
            "{err}"
        );
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = r#"
            [admin]
            listen = "nowhere"
            [[upstream]]
            name = "up"
            address = "no-port"
            connections = 0
            [[listener]]
            name = "a"
            listen = "127.0.0.1:7000"
            upstream = "missing"
            [[listener]]
            name = "a"
            listen = "127.0.0.1:7000"
            upstream = "up"
            tls = { cert = "/nonexistent/cert.pem", key = "/nonexistent/key.pem" }
        "#;
        let err = Config::parse(text).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "admin.listen",
            "upstream[0].address",
            "upstream[0].connections",
            "listener[0].upstream",
            "listener[1].name",
            "listener[1].listen",
            "listener[1].tls.cert",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
    }
}
