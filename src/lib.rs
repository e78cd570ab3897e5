//! # Strait: a byte-level HTTP/2 gRPC proxy for Temporal
//!
//! ## Data path
//! ```text
//! client ──h2c/TLS──▶ transport::listen ─▶ relay::server (HTTP/2 connection, one task per call)
//!                                             │
//!                         relay::call ◀───────┘  admission: pipeline::MethodTable, one lookup of
//!                           │                    :path → MethodEntry (labels, policy, stages)
//!                           │  headers: hop-by-hop dropped, :authority set, stages see them
//!                           │  relay::pump: DATA → grpc::frame (5-byte prefixes, size limit) → DATA
//!                           │    fast path (no stage reads the direction): streamed, never gathered
//!                           │    else pipeline::Flow: a message held as wire::Chunks, inflated once
//!                           │    (grpc::compression), through the stages in order (pipeline::acl,
//!                           │    pipeline::translate, pipeline::field_override), deflated once
//!                           ▼
//!                relay::upstream (pool of HTTP/2 connections) ─▶ transport::connect ──TCP/TLS──▶ Temporal
//!                                                           or ─▶ transport::mux (yamux over TLS)
//! ```
//! No generated stubs: a call is routed by its `:path` and its messages are framed, never decoded, so
//! RPCs this build has never heard of pass through like any other. Typed errors (a stage's, the
//! pump's, an upstream's) become a grpc-status only in `relay::call`.
//!
//! ## Layout
//! - `config`: the TOML schema, defaults (one `Default` per section) and `validate()` (every
//!   problem, with its key); it converts into the settings types of `transport` and `telemetry`,
//!   which read no config.
//! - `transport`: accepting (`listen`), dialing (`connect`), rustls settings (`tls`), certificate
//!   dates (`validity`), the one redial `backoff` (upstream pool and mux dialer), syscall batching
//!   (`coalesce`), and mux links (`mux`: sessions; `mux::accept` and `mux::dial`, a link's two ends).
//! - `relay`: the HTTP/2 relay: `server` (connections), `call` (one call, and the edge where errors
//!   become statuses), `pump` (one direction's body, flow control), `upstream` (the pool), `gather`
//!   (budgets for messages held whole), `watch` (protocol-violation counting).
//! - `pipeline`: admission (`MethodTable`) and the message stages: `acl` (a cluster connection's
//!   namespace ACL and scope), `translate` (names and UTF-8 repair), `field_override`; a new stage
//!   is a module and one line in `Pipeline::new`.
//! - `grpc`: message `frame`s, `status` codes and trailers, `timeout` (`grpc-timeout`), `method`
//!   paths and metric labels, `compression` (gzip, undone and redone once per message), and the one
//!   `client` for Strait's own outbound calls (reflection, namespace resolution).
//! - `wire`: the protobuf wire format, the only code touching tags/varints/lengths, over one buffer
//!   or a message held in pieces (`wire::chunks`); shared by `rewrite` and `access`.
//! - `classify`: which string fields of Temporal's messages hold namespace names, search-attribute
//!   names and queries (shared by `rewrite` and `access`).
//! - `rewrite`: descriptor-guided wire edits (namespace and search-attribute names, UTF-8 repair):
//!   `plan` (compiled field paths), `walker` (one pass, splices), `query` (visibility queries),
//!   `status_details` (error details), `reference` (the decode-and-re-encode oracle tests and fuzzing
//!   compare against).
//! - `access`: the method policy; `namespaces` (a link's namespace ACL), `scope` (where a message
//!   names namespaces), `resolver` (namespace IDs to names, through `grpc::client`).
//! - `descriptor_set`, `reflection`: the embedded Temporal descriptor set, and dumping one from a
//!   server by reflection.
//! - `admin`, `metrics`, `telemetry`: /livez /readyz /metrics, metric names (with their own label
//!   types: `metrics` imports no other module), logs (`log` records of rustls and yamux included).
//! - `cluster`: cluster connections, wired from the pieces above (its own `LinkError`).
//! - `signals`: SIGTERM/SIGINT drain (a second one exits at once); SIGHUP/SIGUSR1/SIGUSR2 are logged.
//!
//! Tests and benches share their helpers through the `strait-test-support` workspace crate
//! (`tests/support`); the fuzz targets are a workspace of their own (`fuzz/`).

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
// Most items are crate-private; their docs are read with `--document-private-items`, where these
// links resolve.
#![allow(rustdoc::private_intra_doc_links)]

#[cfg(feature = "internals")]
pub mod access;
#[cfg(not(feature = "internals"))]
#[allow(unreachable_pub)] // public with `internals`, for the fuzz targets and benches
pub(crate) mod access;
pub(crate) mod admin;
pub(crate) mod classify;
pub(crate) mod cluster;
pub mod config;
pub mod descriptor_set;
pub mod grpc;
#[cfg(feature = "internals")]
pub mod metrics;
#[cfg(not(feature = "internals"))]
#[allow(unreachable_pub)] // public with `internals`, for the fuzz targets and benches
pub(crate) mod metrics;
pub mod pipeline;
pub mod reflection;
pub mod relay;
pub mod rewrite;
pub mod signals;
pub mod telemetry;
pub mod transport;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::{GatedUpstream, Readiness};
use crate::config::Config;
use crate::grpc::method::MethodLabeler;
use crate::pipeline::{MethodTable, Pipeline};
use crate::relay::server::{serve_listener, Lifecycle};
use crate::relay::upstream::UpstreamPool;
use crate::relay::ListenerContext;
use crate::rewrite::{PlanCache, Rewriter};
use crate::transport::connect::ConnectError;
use crate::transport::listen::{ListenError, Listener};
use crate::transport::tls::ServerTls;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {name:?}: {source}")]
    Listener {
        name: String,
        source: Box<ListenError>,
    },
    #[error("admin listener {address}: {source}")]
    Admin {
        address: String,
        source: std::io::Error,
    },
    #[error("upstream {name:?}: {source}")]
    Upstream {
        name: String,
        source: Box<ConnectError>,
    },
    #[error("descriptor set: {0}")]
    Descriptors(Box<descriptor_set::DescriptorError>),
    #[error("cluster connection {name:?}: {source}")]
    Link {
        name: String,
        source: Box<cluster::LinkError>,
    },
    #[error("listener {listener:?} names unknown upstream {upstream:?}")]
    UnknownUpstream { listener: String, upstream: String },
}

/// A started proxy: its bound addresses and the handles to stop it.
pub struct Running {
    listeners: HashMap<String, SocketAddr>,
    admin: SocketAddr,
    grace: Duration,
    lifecycle: Lifecycle,
    connections: TaskTracker,
    background: TaskTracker,
    stop_background: CancellationToken,
    readiness: Arc<Readiness>,
}

impl Running {
    /// The address a listener is bound to (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// True once listeners are bound, while not draining, and while no check that opts in with
    /// `gate_readiness` fails: what /readyz answers 200 to.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// True when every /readyz check passes, gating or not: every upstream connected and every
    /// cluster connection up (a mux link with a session).
    pub fn all_checks_ok(&self) -> bool {
        self.readiness.all_ok()
    }

    /// Stops accepting, sends GOAWAY on every connection, waits for in-flight calls up to the grace
    /// period, then ends whatever is left: each call gets UNAVAILABLE "proxy shutting down" (as
    /// trailers if its response had begun), its upstream call is cancelled, and each connection
    /// closes after a final GOAWAY. Returns true when every call finished in time.
    pub async fn shutdown(self) -> bool {
        self.readiness.draining.store(true, Ordering::Release);
        self.lifecycle.drain.cancel();
        self.connections.close();
        let drained = tokio::time::timeout(self.grace, self.connections.wait())
            .await
            .is_ok();
        if drained {
            info!("all calls drained");
        } else {
            warn!(grace = ?self.grace, "grace period over; ending the remaining calls with UNAVAILABLE");
            self.lifecycle.abort.cancel();
            // Each connection ends its calls and closes within `relay::server::ABORT_FLUSH` (then
            // drops its socket); bound the wait all the same.
            let _ = tokio::time::timeout(
                relay::server::ABORT_FLUSH + Duration::from_secs(3),
                self.connections.wait(),
            )
            .await;
        }
        self.stop_background.cancel();
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.background.wait()).await;
        // Whatever rate-limited lines were dropped and not reported yet.
        telemetry::report_suppressed(true);
        drained
    }
}

/// Binds every listener and the admin port, starts the upstream pools, and serves until `shutdown`.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let prometheus = metrics::install();
    for (key, warning) in config.certificate_warnings(transport::validity::now()) {
        warn!(%key, "{warning}");
    }
    let lifecycle = Lifecycle {
        drain: CancellationToken::new(),
        abort: CancellationToken::new(),
    };
    let stop_background = CancellationToken::new();
    let background = TaskTracker::new();
    let connections = TaskTracker::new();

    // Bind everything first so that a busy port fails the start before any traffic is accepted.
    let mut bound = Vec::new();
    for listener_config in &config.listeners {
        let tls = listener_config.tls.as_ref().map(ServerTls::from);
        let listener = Listener::bind(&listener_config.listen, tls.as_ref())
            .await
            .map_err(|source| StartError::Listener {
                name: listener_config.name.clone(),
                source: Box::new(source),
            })?;
        bound.push((listener_config, listener));
    }
    let admin_listener = tokio::net::TcpListener::bind(&config.admin.listen)
        .await
        .map_err(|source| StartError::Admin {
            address: config.admin.listen.clone(),
            source,
        })?;
    let admin = admin_listener
        .local_addr()
        .map_err(|source| StartError::Admin {
            address: config.admin.listen.clone(),
            source,
        })?;

    let mut pools: HashMap<&str, Arc<UpstreamPool>> = HashMap::new();
    for upstream in &config.upstreams {
        let pool = UpstreamPool::start(upstream, stop_background.clone(), &background).map_err(
            |source| StartError::Upstream {
                name: upstream.name.clone(),
                source: Box::new(source),
            },
        )?;
        pools.insert(upstream.name.as_str(), pool);
    }

    // Descriptors and rewrite plans only when something edits anything: a pure relay never
    // builds a descriptor pool.
    let mut rewriters: HashMap<&str, Option<Arc<Rewriter>>> = HashMap::new();
    let translating = config.listeners.iter().any(|l| !l.translate.is_empty())
        || config.cluster_connections.iter().any(|c| {
            !c.translate.is_empty()
                || c.local.advertised_address.is_some()
                || c.acl
                    .as_ref()
                    .is_some_and(|a| a.allowed_namespaces.is_some())
        });
    let descriptors = if translating {
        Some(
            descriptor_set::Descriptors::embedded_or_load(config.descriptors.file.as_deref())
                .map_err(|e| StartError::Descriptors(Box::new(e)))?,
        )
    } else {
        None
    };
    let mut plans = PlanCache::default();
    if let Some(descriptors) = &descriptors {
        for listener in &config.listeners {
            let rewriter = Rewriter::new(&listener.translate, descriptors.pool(), &mut plans);
            rewriters.insert(listener.name.as_str(), rewriter);
        }
    }
    // Metric labels are the names the descriptor set defines; a pure relay reads only the names.
    let method_names = match &descriptors {
        Some(descriptors) => descriptors.method_names(),
        None => descriptor_set::method_names(config.descriptors.file.as_deref())
            .map_err(|e| StartError::Descriptors(Box::new(e)))?,
    };
    let labeler = Arc::new(MethodLabeler::new(method_names));
    let gather_budget = Arc::new(relay::gather::Budget::new(
        config.limits.gather_bytes,
        "limits.gather_bytes",
    ));

    let mut scope = None;
    let mut link_addresses = Vec::new();
    let mut links = Vec::new();
    {
        let mut link = cluster::LinkContext {
            lifecycle: &lifecycle,
            connections: &connections,
            background: &background,
            stop_background: &stop_background,
            labeler: &labeler,
            descriptors: descriptors.as_ref().map(|d| d.pool()),
            plans: &mut plans,
            scope: &mut scope,
            gather_budget: &gather_budget,
        };
        for connection in &config.cluster_connections {
            let started = cluster::start_link(connection, &mut link)
                .await
                .map_err(|source| StartError::Link {
                    name: connection.name.clone(),
                    source: Box::new(source),
                })?;
            link_addresses.extend(started.addresses);
            links.push(started.status);
        }
    }

    let readiness = Arc::new(Readiness {
        listeners_bound: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        upstreams: config
            .upstreams
            .iter()
            .filter_map(|u| {
                pools.get(u.name.as_str()).map(|pool| GatedUpstream {
                    pool: Arc::clone(pool),
                    gates: u.gate_readiness,
                })
            })
            .collect(),
        links,
    });
    {
        // One housekeeping task: metrics upkeep and the report of rate-limited log lines.
        let (stop, handle) = (stop_background.clone(), prometheus.clone());
        background.spawn(async move {
            let upkeep = async move {
                match handle {
                    Some(handle) => metrics::upkeep(handle).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                () = upkeep => {}
                () = telemetry::report_suppressed_periodically() => {}
            }
        });
    }
    background.spawn(admin::serve(
        admin_listener,
        Arc::clone(&readiness),
        prometheus,
        stop_background.clone(),
    ));

    let mut listeners = HashMap::new();
    for (listener_config, listener) in bound {
        let Some(pool) = pools.get(listener_config.upstream.as_str()) else {
            return Err(StartError::UnknownUpstream {
                listener: listener_config.name.clone(),
                upstream: listener_config.upstream.clone(),
            });
        };
        let address = listener
            .local_addr()
            .map_err(|source| StartError::Listener {
                name: listener_config.name.clone(),
                source: Box::new(ListenError::Bind {
                    address: listener_config.listen.clone(),
                    source,
                }),
            })?;
        info!(listener = %listener_config.name, %address, upstream = %pool.name(), tls = listener_config.tls.is_some(), "listening");
        listeners.insert(listener_config.name.clone(), address);
        let ctx = Arc::new(ListenerContext {
            name: Arc::from(listener_config.name.as_str()),
            upstream: Arc::clone(pool),
            limits: listener_config.limits.clone(),
            metrics: metrics::ListenerMetrics::new(&listener_config.name),
            methods: MethodTable::new(
                Arc::clone(&labeler),
                &Pipeline::new(
                    None,
                    rewriters.remove(listener_config.name.as_str()).flatten(),
                    None,
                ),
                None,
            ),
            gather_budget: Arc::clone(&gather_budget),
            limits_key: "listener.limits",
        });
        connections.spawn(serve_listener(
            listener,
            ctx,
            lifecycle.clone(),
            connections.clone(),
        ));
    }
    listeners.extend(link_addresses);
    readiness.listeners_bound.store(true, Ordering::Release);
    info!(%admin, "admin listening");

    Ok(Running {
        listeners,
        admin,
        grace: config.shutdown.grace,
        lifecycle,
        connections,
        background,
        stop_background,
        readiness,
    })
}

/// One item that is `pub` with the `internals` feature, for the fuzz targets and benches that reach
/// into the crate, and `pub(crate)` without it: `crate::internal! { pub fn parse(..) { .. } }`.
/// Without the feature the item's `pub` fields and methods are crate-visible only, hence the `allow`.
macro_rules! internal {
    ($(#[$attr:meta])* pub $($item:tt)*) => {
        $(#[$attr])*
        #[cfg(feature = "internals")]
        pub $($item)*

        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        #[allow(unreachable_pub)]
        pub(crate) $($item)*
    };
}
pub(crate) use internal;
