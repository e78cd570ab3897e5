//! Cluster connections: the server-to-server side of Strait. Each connection joins the local Temporal
//! cluster to a remote one:
//!
//! ```text
//!  local Temporal ──▶ local.listen ──▶ [translate local→remote] ──▶ remote (tcp address | mux streams)
//!  local Temporal ◀── local.upstream ◀── [translate remote→local] ◀── remote (tcp listener | mux streams)
//! ```
//!
//! In the mux modes one side dials (`mux-client`, `sessions` yamux sessions over TCP+TLS) and the other
//! accepts (`mux-server`); every session carries HTTP/2 connections opened by either side, so calls
//! flow both ways over links that only one side accepts.
//!
//! This module only wires the pieces together: the mux ends (`transport::mux::{accept, dial}`), the
//! upstream pools, the pipelines and the listeners' serve loops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, Instrument};

use crate::access::namespaces::{NameSide, NamespaceAcl, NamespacePolicy};
use crate::access::resolver::NamespaceResolver;
use crate::access::scope::ScopePlan;
use crate::config::{ClusterConnectionConfig, RemoteSideConfig, TranslateConfig, UpstreamConfig};
use crate::grpc::method::MethodLabeler;
use crate::metrics::ListenerMetrics;
use crate::pipeline::{MethodTable, Pipeline};
use crate::relay::server::{serve_listener, serve_streams, Lifecycle};
use crate::relay::upstream::{Dialer, UpstreamPool};
use crate::relay::ListenerContext;
use crate::rewrite::FieldOverride;
use crate::rewrite::{PlanCache, Rewriter};
use crate::transport::backoff::Backoff;
use crate::transport::connect::{ConnectError, Connector};
use crate::transport::listen::{ListenError, Listener};
use crate::transport::mux::{self, SessionSet};
use crate::transport::tls::ServerTls;
use crate::transport::BoxIo;

/// Why a cluster connection could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// One of its ports could not be bound (or its TLS settings used).
    #[error("{0}")]
    Listen(Box<ListenError>),
    /// One of its sides could not be dialled as configured (TLS settings).
    #[error("upstream {name:?}: {source}")]
    Upstream {
        name: String,
        source: Box<ConnectError>,
    },
    #[error("acl: {0}")]
    Acl(String),
    #[error("local.advertised_address: {0}")]
    AdvertisedAddress(String),
}
/// Inbound streams a link's sessions may queue before the listener side takes them.
const INBOUND_BACKLOG: usize = 256;

/// What a started cluster connection exposes to the rest of the proxy.
pub(crate) struct StartedLink {
    pub(crate) addresses: Vec<(String, SocketAddr)>,
    pub(crate) status: LinkStatus,
}

/// The live state of one cluster connection, for /readyz.
pub(crate) struct LinkStatus {
    pub(crate) name: String,
    pub(crate) remote: RemoteStatus,
    /// Connections to the local frontend (calls from the remote side go there).
    pub(crate) local: Arc<UpstreamPool>,
    /// Connections to the remote side (calls from the local cluster go there): over TCP, or
    /// streams of the mux link.
    pub(crate) remote_pool: Arc<UpstreamPool>,
    /// `local.gate_readiness`: a local side that is down makes /readyz 503.
    pub(crate) gate_local: bool,
    /// `remote.gate_readiness`: remote sessions or connections that are down make /readyz 503.
    pub(crate) gate_remote: bool,
}

/// How the remote side is reached, with the mux sessions where there are any.
pub(crate) enum RemoteStatus {
    Tcp,
    MuxClient {
        address: String,
        configured: usize,
        sessions: Arc<SessionSet>,
    },
    MuxServer {
        listen: SocketAddr,
        sessions: Arc<SessionSet>,
    },
}

/// Shared pieces the links are built with.
pub(crate) struct LinkContext<'a> {
    pub(crate) lifecycle: &'a Lifecycle,
    pub(crate) connections: &'a TaskTracker,
    pub(crate) background: &'a TaskTracker,
    pub(crate) stop_background: &'a CancellationToken,
    pub(crate) labeler: &'a Arc<MethodLabeler>,
    pub(crate) descriptors: Option<&'a prost_reflect::DescriptorPool>,
    pub(crate) plans: &'a mut PlanCache,
    /// The namespace scope plan, compiled by the first link that needs one.
    pub(crate) scope: &'a mut Option<Arc<ScopePlan>>,
    /// The process-wide budget for messages held whole to be edited.
    pub(crate) gather_budget: &'a Arc<crate::relay::gather::Budget>,
}

fn upstream_config(
    name: String,
    address: &str,
    tls: Option<crate::config::ClientTlsConfig>,
    connections: usize,
) -> UpstreamConfig {
    UpstreamConfig {
        tls,
        connections,
        ..UpstreamConfig::with_defaults(name, address.to_owned())
    }
}

/// The same mapping seen from the other side: remote name = local name.
pub(crate) fn inverse(translate: &TranslateConfig) -> TranslateConfig {
    let namespaces: BTreeMap<String, String> = translate
        .namespaces
        .iter()
        .map(|(local, remote)| (remote.clone(), local.clone()))
        .collect();
    let search_attributes = translate
        .search_attributes
        .iter()
        .map(|(local_ns, names)| {
            let remote_ns = translate
                .namespaces
                .get(local_ns)
                .cloned()
                .unwrap_or_else(|| local_ns.clone());
            (
                remote_ns,
                names.iter().map(|(l, r)| (r.clone(), l.clone())).collect(),
            )
        })
        .collect();
    TranslateConfig {
        namespaces,
        search_attributes,
        repair_utf8: translate.repair_utf8,
        expose_upstream_names: translate.expose_upstream_names,
    }
}

fn rewriter(config: &TranslateConfig, link: &mut LinkContext<'_>) -> Option<Arc<Rewriter>> {
    let pool = link.descriptors?;
    // A link refuses and hides no name: replication carries whatever the clusters send.
    let config = TranslateConfig {
        expose_upstream_names: Some(true),
        ..config.clone()
    };
    Rewriter::new(&config, pool, link.plans)
}

/// Binds and starts one cluster connection.
pub(crate) async fn start_link(
    config: &ClusterConnectionConfig,
    link: &mut LinkContext<'_>,
) -> Result<StartedLink, LinkError> {
    let name = &config.name;
    let fail = |source| LinkError::Listen(Box::new(source));
    let local_listener = Listener::bind(&config.local.listen, None)
        .await
        .map_err(fail)?;
    let local_pool = UpstreamPool::start(
        &upstream_config(
            format!("{name}-local"),
            &config.local.upstream,
            config.local.tls.clone(),
            1,
        ),
        link.stop_background.clone(),
        link.background,
    )
    .map_err(|source| LinkError::Upstream {
        name: format!("{name}-local"),
        source: Box::new(source),
    })?;

    let mut addresses = vec![(format!("{name}.local"), local_addr(&local_listener, name)?)];
    let remote_status;
    let (remote_pool, remote_inbound) = match &config.remote {
        RemoteSideConfig::Tcp {
            listen,
            address,
            tls,
            ..
        } => {
            let listener = Listener::bind(listen, None).await.map_err(fail)?;
            addresses.push((format!("{name}.remote"), local_addr(&listener, name)?));
            let pool = UpstreamPool::start(
                &upstream_config(format!("{name}-remote"), address, tls.clone(), 1),
                link.stop_background.clone(),
                link.background,
            )
            .map_err(|source| LinkError::Upstream {
                name: format!("{name}-remote"),
                source: Box::new(source),
            })?;
            remote_status = RemoteStatus::Tcp;
            (pool, Inbound::Listener(listener))
        }
        RemoteSideConfig::MuxClient {
            address,
            sessions: count,
            tls,
            backoff_initial,
            backoff_max,
            ..
        } => {
            let set = SessionSet::for_link(name);
            let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_BACKLOG);
            let upstream = upstream_config(format!("{name}-mux"), address, tls.clone(), *count);
            let connector =
                Connector::with_alpn(&(&upstream).into(), mux::ALPN).map_err(|source| {
                    LinkError::Upstream {
                        name: format!("{name}-mux"),
                        source: Box::new(source),
                    }
                })?;
            for slot in 0..*count {
                let dial = mux::dial::run(
                    connector.clone(),
                    Arc::clone(&set),
                    inbound_tx.clone(),
                    Backoff::new(*backoff_initial, *backoff_max),
                    link.stop_background.clone(),
                );
                let span = info_span!("mux", link = %name, slot);
                link.background.spawn(dial.instrument(span));
            }
            remote_status = RemoteStatus::MuxClient {
                address: address.clone(),
                configured: *count,
                sessions: Arc::clone(&set),
            };
            (
                mux_pool(name, address, &set, *count, link)?,
                Inbound::Streams(inbound_rx),
            )
        }
        RemoteSideConfig::MuxServer { listen, tls, .. } => {
            let tls = tls.as_ref().map(ServerTls::from);
            let listener = Listener::bind_with_alpn(listen, tls.as_ref(), mux::ALPN)
                .await
                .map_err(fail)?;
            let bound = local_addr(&listener, name)?;
            addresses.push((format!("{name}.mux"), bound));
            let set = SessionSet::for_link(name);
            let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_BACKLOG);
            let span = info_span!("mux", link = %name, role = "server");
            link.background.spawn(
                mux::accept::run(
                    listener,
                    Arc::clone(&set),
                    inbound_tx,
                    link.stop_background.clone(),
                )
                .instrument(span),
            );
            remote_status = RemoteStatus::MuxServer {
                listen: bound,
                sessions: Arc::clone(&set),
            };
            let count = 1;
            (
                mux_pool(name, listen, &set, count, link)?,
                Inbound::Streams(inbound_rx),
            )
        }
    };

    let methods = match &config.acl {
        Some(acl) => Some(Arc::new(
            crate::access::MethodPolicy::new(&acl.allowed_methods)
                .map_err(|err| LinkError::Acl(err.to_string()))?,
        )),
        None => None,
    };
    let apply_to_local = config.acl.as_ref().is_some_and(|a| a.apply_to_local);
    let local_methods = methods.clone().filter(|_| apply_to_local);
    let inbound_namespaces = namespace_acl(
        config,
        &local_pool,
        format!("{name}-remote"),
        NameSide::Remote,
        link,
    )?;
    let outbound_namespaces = match apply_to_local {
        true => namespace_acl(
            config,
            &local_pool,
            format!("{name}-local"),
            NameSide::Local,
            link,
        )?,
        false => None,
    };
    let field_override = match &config.local.advertised_address {
        Some(address) => Some(
            link.descriptors
                .and_then(|pool| FieldOverride::frontend_address(pool, address))
                .ok_or_else(|| {
                    LinkError::AdvertisedAddress(
                        "needs AddOrUpdateRemoteClusterRequest in the descriptor set".into(),
                    )
                })?,
        ),
        None => None,
    };
    // Calls from the local cluster go out in remote names; calls from the remote come in local names.
    let outbound = Arc::new(ListenerContext {
        name: Arc::from(format!("{name}-local").as_str()),
        upstream: Arc::clone(&remote_pool),
        limits: config.limits.clone(),
        metrics: ListenerMetrics::new(&format!("{name}-local")),
        methods: MethodTable::new(
            Arc::clone(link.labeler),
            &Pipeline::new(outbound_namespaces, rewriter(&config.translate, link), None),
            local_methods,
        ),
        gather_budget: Arc::clone(link.gather_budget),
        limits_key: "cluster_connection.limits",
    });
    let inbound = Arc::new(ListenerContext {
        name: Arc::from(format!("{name}-remote").as_str()),
        upstream: Arc::clone(&local_pool),
        limits: config.limits.clone(),
        metrics: ListenerMetrics::new(&format!("{name}-remote")),
        methods: MethodTable::new(
            Arc::clone(link.labeler),
            &Pipeline::new(
                inbound_namespaces,
                rewriter(&inverse(&config.translate), link),
                field_override,
            ),
            methods,
        ),
        gather_budget: Arc::clone(link.gather_budget),
        limits_key: "cluster_connection.limits",
    });
    let connections = link.connections.clone();
    link.connections.spawn(serve_listener(
        local_listener,
        outbound,
        link.lifecycle.clone(),
        connections.clone(),
    ));
    match remote_inbound {
        Inbound::Listener(listener) => {
            link.connections.spawn(serve_listener(
                listener,
                inbound,
                link.lifecycle.clone(),
                connections,
            ));
        }
        Inbound::Streams(streams) => {
            link.connections.spawn(serve_streams(
                streams,
                inbound,
                link.lifecycle.clone(),
                connections,
            ));
        }
    }
    info!(link = %name, "cluster connection started");
    Ok(StartedLink {
        addresses,
        status: LinkStatus {
            name: name.clone(),
            remote: remote_status,
            local: local_pool,
            remote_pool,
            gate_local: config.local.gate_readiness,
            gate_remote: config.remote.gates_readiness(),
        },
    })
}

/// The namespace ACL of one side of a link, if `acl.allowed_namespaces` is set. IDs are always
/// resolved against the local cluster.
fn namespace_acl(
    config: &ClusterConnectionConfig,
    local_pool: &Arc<UpstreamPool>,
    listener: String,
    request_names: NameSide,
    link: &mut LinkContext<'_>,
) -> Result<Option<Arc<NamespaceAcl>>, LinkError> {
    let Some(allowed) = config
        .acl
        .as_ref()
        .and_then(|a| a.allowed_namespaces.as_ref())
    else {
        return Ok(None);
    };
    let fail = LinkError::Acl;
    let pool = link
        .descriptors
        .ok_or_else(|| fail("acl.allowed_namespaces needs the descriptor set".into()))?;
    let scope = Arc::clone(
        link.scope
            .get_or_insert_with(|| Arc::new(ScopePlan::compile(pool))),
    );
    let resolver = NamespaceResolver::new(Arc::clone(local_pool), pool, RESOLVE_TIMEOUT)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Some(Arc::new(NamespaceAcl::new(
        Arc::from(listener.as_str()),
        NamespacePolicy::new(allowed, &config.translate.namespaces),
        Arc::new(resolver),
        scope,
        request_names,
    ))))
}

/// How long a namespace-ID lookup at the local cluster may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

enum Inbound {
    Listener(Listener),
    Streams(mpsc::Receiver<BoxIo>),
}

fn local_addr(listener: &Listener, name: &str) -> Result<SocketAddr, LinkError> {
    listener.local_addr().map_err(|source| {
        LinkError::Listen(Box::new(ListenError::Bind {
            address: name.to_owned(),
            source,
        }))
    })
}

fn mux_pool(
    name: &str,
    label: &str,
    sessions: &Arc<SessionSet>,
    connections: usize,
    link: &mut LinkContext<'_>,
) -> Result<Arc<UpstreamPool>, LinkError> {
    let config = upstream_config(format!("{name}-remote"), label, None, connections);
    let dialer = Dialer::Mux {
        sessions: Arc::clone(sessions),
        label: label.to_owned(),
        timeout: config.connect_timeout,
    };
    UpstreamPool::start_with(
        &config,
        dialer,
        link.stop_background.clone(),
        link.background,
    )
    .map_err(|source| LinkError::Upstream {
        name: format!("{name}-remote"),
        source: Box::new(source),
    })
}
