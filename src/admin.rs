//! The admin HTTP/1.1 listener: `/livez` (the process runs), `/readyz` (listeners bound, every
//! upstream connected, every cluster connection with a mux session where it has mux sessions; one
//! line per check, 503 when any fails, and while draining) and `/metrics` (Prometheus).

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::cluster::{LinkStatus, RemoteStatus};
use crate::relay::upstream::UpstreamPool;

/// What /readyz reports on.
pub struct Readiness {
    pub listeners_bound: AtomicBool,
    pub draining: AtomicBool,
    /// The `[[upstream]]` pools, in configuration order.
    pub upstreams: Vec<Arc<UpstreamPool>>,
    /// The cluster connections, in configuration order.
    pub links: Vec<LinkStatus>,
}

/// One line of /readyz: `ok <check>: <detail>` or `fail <check>: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub name: String,
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.ok { "ok" } else { "fail" };
        write!(f, "{status} {}: {}", self.name, self.detail)
    }
}

impl Readiness {
    /// Every check, in a stable order: listeners, shutdown, each upstream, then each cluster
    /// connection's sessions (mux modes), local side and remote side.
    pub fn checks(&self) -> Vec<Check> {
        let bound = self.listeners_bound.load(Ordering::Acquire);
        let draining = self.draining.load(Ordering::Acquire);
        let mut checks = vec![
            Check {
                ok: bound,
                name: "listeners".into(),
                detail: if bound { "bound" } else { "not bound yet" }.into(),
            },
            Check {
                ok: !draining,
                name: "shutdown".into(),
                detail: if draining { "draining" } else { "not draining" }.into(),
            },
        ];
        for upstream in &self.upstreams {
            checks.push(pool_check(
                format!("upstream {}", upstream.name()),
                upstream,
                upstream.address(),
            ));
        }
        for link in &self.links {
            let name = &link.name;
            let remote_via = match &link.remote {
                RemoteStatus::Tcp => link.remote_pool.address().to_owned(),
                RemoteStatus::MuxClient { .. } | RemoteStatus::MuxServer { .. } => {
                    "streams of the mux link".to_owned()
                }
            };
            match &link.remote {
                RemoteStatus::Tcp => {}
                RemoteStatus::MuxClient {
                    address,
                    configured,
                    sessions,
                } => {
                    let up = sessions.live();
                    checks.push(Check {
                        ok: up > 0,
                        name: format!("link {name} sessions"),
                        detail: format!(
                            "{up} of {configured} mux sessions up (mux-client dialling {address})"
                        ),
                    });
                }
                RemoteStatus::MuxServer { listen, sessions } => {
                    let up = sessions.live();
                    checks.push(Check {
                        ok: up > 0,
                        name: format!("link {name} sessions"),
                        detail: format!("{up} mux sessions up (mux-server on {listen})"),
                    });
                }
            }
            checks.push(pool_check(
                format!("link {name} local"),
                &link.local,
                link.local.address(),
            ));
            checks.push(pool_check(
                format!("link {name} remote"),
                &link.remote_pool,
                &remote_via,
            ));
        }
        checks
    }

    /// True when every check passes.
    pub fn is_ready(&self) -> bool {
        self.checks().iter().all(|c| c.ok)
    }

    /// The /readyz body: `ready` or `not ready`, then one line per check.
    pub fn report(&self) -> (bool, String) {
        let checks = self.checks();
        let ready = checks.iter().all(|c| c.ok);
        let mut body = if ready { "ready\n" } else { "not ready\n" }.to_owned();
        for check in checks {
            body.push_str(&check.to_string());
            body.push('\n');
        }
        (ready, body)
    }
}

/// An upstream pool's state: connected when at least one of its connections is up.
fn pool_check(name: String, pool: &UpstreamPool, via: &str) -> Check {
    let (up, size) = (pool.connected(), pool.size());
    if up > 0 {
        Check {
            ok: true,
            name,
            detail: format!("connected, {up} of {size} connections up ({via})"),
        }
    } else {
        Check {
            ok: false,
            name,
            detail: format!(
                "not connected, 0 of {size} connections up ({via}): {}",
                pool.last_error()
            ),
        }
    }
}

/// Serves the admin endpoints until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    metrics: Option<PrometheusHandle>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let readiness = Arc::clone(&readiness);
        let metrics = metrics.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &readiness, metrics.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => if let Err(err) = result { debug!(error = %err, "admin connection") },
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    readiness: &Readiness,
    metrics: Option<&PrometheusHandle>,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    match request.uri().path() {
        "/livez" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match readiness.report() {
            (true, body) => text(StatusCode::OK, body),
            (false, body) => text(StatusCode::SERVICE_UNAVAILABLE, body),
        },
        "/metrics" => match metrics {
            Some(handle) => {
                crate::metrics::refresh_runtime();
                let mut response = text(StatusCode::OK, handle.render());
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics recorder unavailable\n".to_owned(),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /livez, /readyz or /metrics\n".to_owned(),
        ),
    }
}
