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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

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
use crate::telemetry::warn_limited;
use crate::transport::connect::Connector;
use crate::transport::listen::Listener;
use crate::transport::mux::{spawn_session, Role, SessionSet};
use crate::transport::tls::ServerTls;
use crate::transport::BoxIo;
use crate::StartError;

/// ALPN of mux links, so that a mux port never mistakes an HTTP/2 client for a peer (or vice versa).
pub const MUX_ALPN: &[u8] = b"strait-mux/1";
/// Inbound streams a link's sessions may queue before the listener side takes them.
const INBOUND_BACKLOG: usize = 256;

/// What a started cluster connection exposes to the rest of the proxy.
pub struct StartedLink {
    pub addresses: Vec<(String, SocketAddr)>,
    pub status: LinkStatus,
}

/// The live state of one cluster connection, for /readyz.
pub struct LinkStatus {
    pub name: String,
    pub remote: RemoteStatus,
    /// Connections to the local frontend (calls from the remote side go there).
    pub local: Arc<UpstreamPool>,
    /// Connections to the remote side (calls from the local cluster go there): over TCP, or
    /// streams of the mux link.
    pub remote_pool: Arc<UpstreamPool>,
    /// `local.gate_readiness`: a local side that is down makes /readyz 503.
    pub(crate) gate_local: bool,
    /// `remote.gate_readiness`: remote sessions or connections that are down make /readyz 503.
    pub(crate) gate_remote: bool,
}

/// How the remote side is reached, with the mux sessions where there are any.
pub enum RemoteStatus {
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
pub struct LinkContext<'a> {
    pub lifecycle: &'a Lifecycle,
    pub connections: &'a TaskTracker,
    pub background: &'a TaskTracker,
    pub stop_background: &'a CancellationToken,
    pub labeler: &'a Arc<MethodLabeler>,
    pub descriptors: Option<&'a prost_reflect::DescriptorPool>,
    pub plans: &'a mut PlanCache,
    /// The namespace scope plan, compiled by the first link that needs one.
    pub scope: &'a mut Option<Arc<ScopePlan>>,
    /// The process-wide budget for messages held whole to be edited.
    pub gather_budget: &'a Arc<crate::relay::gather::Budget>,
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
pub fn inverse(translate: &TranslateConfig) -> TranslateConfig {
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
pub async fn start_link(
    config: &ClusterConnectionConfig,
    link: &mut LinkContext<'_>,
) -> Result<StartedLink, StartError> {
    let name = &config.name;
    let fail = |source| StartError::Listener {
        name: name.clone(),
        source: Box::new(source),
    };
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
    .map_err(|source| StartError::Upstream {
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
            .map_err(|source| StartError::Upstream {
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
                Connector::with_alpn(&(&upstream).into(), MUX_ALPN).map_err(|source| {
                    StartError::Upstream {
                        name: format!("{name}-mux"),
                        source: Box::new(source),
                    }
                })?;
            for slot in 0..*count {
                let dialer = MuxDialer {
                    connector: connector.clone(),
                    sessions: Arc::clone(&set),
                    inbound: inbound_tx.clone(),
                    stop: link.stop_background.clone(),
                    backoff_initial: *backoff_initial,
                    backoff_max: *backoff_max,
                };
                let span = info_span!("mux", link = %name, slot);
                link.background.spawn(dialer.run().instrument(span));
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
            let listener = Listener::bind_with_alpn(listen, tls.as_ref(), MUX_ALPN)
                .await
                .map_err(fail)?;
            let bound = local_addr(&listener, name)?;
            addresses.push((format!("{name}.mux"), bound));
            let set = SessionSet::for_link(name);
            let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_BACKLOG);
            let stop = link.stop_background.clone();
            let accepted = Arc::clone(&set);
            let span = info_span!("mux", link = %name, role = "server");
            link.background.spawn(
                async move {
                    let handshaker = listener.handshaker();
                    loop {
                        let (tcp, peer) = tokio::select! {
                            _ = stop.cancelled() => return,
                            accepted = listener.accept() => match accepted {
                                Ok(pair) => pair,
                                Err(err) => {
                                    warn_limited!(error = %err, "mux accept failed");
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    continue;
                                }
                            },
                        };
                        let (handshaker, accepted, inbound, stop) = (
                            handshaker.clone(),
                            Arc::clone(&accepted),
                            inbound_tx.clone(),
                            stop.clone(),
                        );
                        tokio::spawn(async move {
                            match handshaker.handshake(tcp, Duration::from_secs(10)).await {
                                Ok(io) => {
                                    info!(%peer, "mux session accepted");
                                    accepted.add(spawn_session(io, Role::Server, inbound, stop));
                                }
                                Err(err) => warn_limited!(%peer, error = %err, "mux peer refused"),
                            }
                        });
                    }
                }
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
            crate::access::MethodPolicy::new(&acl.allowed_methods).map_err(|err| {
                StartError::Acl {
                    name: name.clone(),
                    message: err.to_string(),
                }
            })?,
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
                .ok_or_else(|| StartError::Acl {
                    name: name.clone(),
                    message: "local.advertised_address needs AddOrUpdateRemoteClusterRequest \
                              in the descriptor set"
                        .into(),
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
) -> Result<Option<Arc<NamespaceAcl>>, StartError> {
    let Some(allowed) = config
        .acl
        .as_ref()
        .and_then(|a| a.allowed_namespaces.as_ref())
    else {
        return Ok(None);
    };
    let fail = |message: String| StartError::Acl {
        name: config.name.clone(),
        message,
    };
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

fn local_addr(listener: &Listener, name: &str) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Listener {
            name: name.to_owned(),
            source: Box::new(crate::transport::listen::ListenError::Bind {
                address: name.to_owned(),
                source,
            }),
        })
}

fn mux_pool(
    name: &str,
    label: &str,
    sessions: &Arc<SessionSet>,
    connections: usize,
    link: &mut LinkContext<'_>,
) -> Result<Arc<UpstreamPool>, StartError> {
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
    .map_err(|source| StartError::Upstream {
        name: format!("{name}-remote"),
        source: Box::new(source),
    })
}

/// One session slot of a mux client: dial, run the session until it ends, redial with jittered
/// exponential backoff.
struct MuxDialer {
    connector: Connector,
    sessions: Arc<SessionSet>,
    inbound: mpsc::Sender<BoxIo>,
    stop: CancellationToken,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl MuxDialer {
    async fn run(self) {
        let (initial, max) = (self.backoff_initial, self.backoff_max);
        let mut backoff = initial;
        loop {
            let dialed = tokio::select! {
                _ = self.stop.cancelled() => return,
                dialed = self.connector.connect() => dialed,
            };
            match dialed {
                Ok(io) => {
                    info!(address = %self.connector.address(), "mux session up");
                    let session =
                        spawn_session(io, Role::Client, self.inbound.clone(), self.stop.clone());
                    self.sessions.add(session.clone());
                    let since = tokio::time::Instant::now();
                    session.closed().await;
                    if self.stop.is_cancelled() {
                        return;
                    }
                    warn!(address = %self.connector.address(), "mux session lost; redialling");
                    if since.elapsed() >= Duration::from_secs(1) {
                        backoff = initial;
                        continue;
                    }
                }
                Err(err) => warn!(error = %err, retry_in = ?backoff, "mux dial failed"),
            }
            let delay = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }
}
