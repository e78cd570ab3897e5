//! The admin HTTP/1.1 listener: `/livez` (the process runs), `/readyz` and `/metrics` (Prometheus).
//!
//! Ready means this process can accept and relay calls: listeners bound and not draining. Upstream
//! and cluster-connection state is reported line by line (`warn` when down), but decides readiness
//! only where the configuration opts in (`gate_readiness`, then `fail`): two deployments gated on
//! each other behind Services that route only to ready pods would never become ready.

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
pub(crate) struct Readiness {
    pub(crate) listeners_bound: AtomicBool,
    pub(crate) draining: AtomicBool,
    /// The `[[upstream]]` pools, in configuration order.
    pub(crate) upstreams: Vec<GatedUpstream>,
    /// The cluster connections, in configuration order.
    pub(crate) links: Vec<LinkStatus>,
}

/// An `[[upstream]]` pool and its `gate_readiness`.
pub(crate) struct GatedUpstream {
    pub(crate) pool: Arc<UpstreamPool>,
    pub(crate) gates: bool,
}

/// How one check stands: `Warn` is a check that is down but does not decide readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckState {
    Ok,
    Warn,
    Fail,
}

impl CheckState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckState::Ok => "ok",
            CheckState::Warn => "warn",
            CheckState::Fail => "fail",
        }
    }
}

/// One line of /readyz: `ok|warn|fail <check>: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) state: CheckState,
    /// Whether this check decides readiness (a failing one makes /readyz 503).
    pub(crate) gates: bool,
    pub(crate) name: String,
    pub(crate) detail: String,
}

impl Check {
    /// A check that passes when `up`; when down it is `fail` if it `gates`, else `warn`.
    pub(crate) fn new(name: String, up: bool, gates: bool, detail: String) -> Check {
        let state = match (up, gates) {
            (true, _) => CheckState::Ok,
            (false, true) => CheckState::Fail,
            (false, false) => CheckState::Warn,
        };
        Check {
            state,
            gates,
            name,
            detail,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.state.as_str(), self.name, self.detail)
    }
}

/// The `listeners` check, which always gates: not ready before binding, nor while draining (the
/// listeners are closed then, and new connections refused).
fn listeners_check(bound: bool, draining: bool) -> Check {
    let detail = match (bound, draining) {
        (_, true) => "draining",
        (false, false) => "not bound yet",
        (true, false) => "bound",
    };
    Check::new("listeners".into(), bound && !draining, true, detail.into())
}

/// Ready when no check fails (warnings do not count).
fn verdict(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.state != CheckState::Fail)
}

impl Readiness {
    /// Every check, in a stable order: listeners, each upstream, then each cluster connection's
    /// sessions (mux modes), local side and remote side.
    pub(crate) fn checks(&self) -> Vec<Check> {
        let mut checks = vec![listeners_check(
            self.listeners_bound.load(Ordering::Acquire),
            self.draining.load(Ordering::Acquire),
        )];
        for upstream in &self.upstreams {
            let pool = &upstream.pool;
            checks.push(pool_check(
                format!("upstream {}", pool.name()),
                pool,
                pool.address(),
                upstream.gates,
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
                    checks.push(Check::new(
                        format!("link {name} sessions"),
                        up > 0,
                        link.gate_remote,
                        format!(
                            "{up} of {configured} mux sessions up (mux-client dialling {address})"
                        ),
                    ));
                }
                RemoteStatus::MuxServer { listen, sessions } => {
                    let up = sessions.live();
                    checks.push(Check::new(
                        format!("link {name} sessions"),
                        up > 0,
                        link.gate_remote,
                        format!("{up} mux sessions up (mux-server on {listen})"),
                    ));
                }
            }
            checks.push(pool_check(
                format!("link {name} local"),
                &link.local,
                link.local.address(),
                link.gate_local,
            ));
            checks.push(pool_check(
                format!("link {name} remote"),
                &link.remote_pool,
                &remote_via,
                link.gate_remote,
            ));
        }
        checks
    }

    /// True when no check fails: what /readyz answers 200 to.
    pub(crate) fn is_ready(&self) -> bool {
        verdict(&self.checks())
    }

    /// True when every check passes, gating or not: every upstream and link is up.
    pub(crate) fn all_ok(&self) -> bool {
        self.checks().iter().all(|c| c.state == CheckState::Ok)
    }

    /// The /readyz body: `ready` or `not ready`, then one line per check.
    pub(crate) fn report(&self) -> (bool, String) {
        let checks = self.checks();
        let ready = verdict(&checks);
        (ready, render(ready, &checks))
    }

    /// Sets `strait_ready` and `strait_ready_check`.
    fn publish(&self) {
        let checks = self.checks();
        let states: Vec<(&str, bool, bool)> = checks
            .iter()
            .map(|c| (c.name.as_str(), c.gates, c.state == CheckState::Ok))
            .collect();
        crate::metrics::readiness(verdict(&checks), &states);
    }
}

fn render(ready: bool, checks: &[Check]) -> String {
    let mut body = if ready { "ready\n" } else { "not ready\n" }.to_owned();
    for check in checks {
        body.push_str(&check.to_string());
        body.push('\n');
    }
    body
}

/// An upstream pool's state: up when at least one of its connections is.
fn pool_check(name: String, pool: &UpstreamPool, via: &str, gates: bool) -> Check {
    let (up, size) = (pool.connected(), pool.size());
    let detail = if up > 0 {
        format!("connected, {up} of {size} connections up ({via})")
    } else {
        format!(
            "not connected, 0 of {size} connections up ({via}): {}",
            pool.last_error()
        )
    };
    Check::new(name, up > 0, gates, detail)
}

/// Serves the admin endpoints until `stop` fires.
pub(crate) async fn serve(
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
                readiness.publish();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn check(name: &str, up: bool, gates: bool) -> Check {
        Check::new(name.into(), up, gates, "detail".into())
    }

    #[test]
    fn a_down_check_warns_unless_it_gates() {
        assert_eq!(check("upstream t", true, false).state, CheckState::Ok);
        assert_eq!(check("upstream t", true, true).state, CheckState::Ok);
        assert_eq!(check("upstream t", false, false).state, CheckState::Warn);
        assert_eq!(check("upstream t", false, true).state, CheckState::Fail);
        assert_eq!(
            check("link a-b remote", false, false).to_string(),
            "warn link a-b remote: detail"
        );
        assert_eq!(
            check("link a-b remote", false, true).to_string(),
            "fail link a-b remote: detail"
        );
    }

    #[test]
    fn warnings_leave_the_process_ready_and_failures_do_not() {
        let listeners = listeners_check(true, false);
        let warn = check("link b-a sessions", false, false);
        let fail = check("link b-a remote", false, true);
        assert!(verdict(&[listeners.clone(), warn.clone()]));
        assert!(!verdict(&[listeners.clone(), warn.clone(), fail.clone()]));
        assert_eq!(
            render(true, &[listeners, warn]),
            "ready\nok listeners: bound\nwarn link b-a sessions: detail\n"
        );
    }

    #[test]
    fn listeners_gate_before_binding_and_while_draining() {
        let shown = |bound, draining| listeners_check(bound, draining).to_string();
        assert_eq!(shown(false, false), "fail listeners: not bound yet");
        assert_eq!(shown(true, false), "ok listeners: bound");
        assert_eq!(shown(true, true), "fail listeners: draining");
        assert!(!verdict(&[listeners_check(true, true)]));
        assert!(verdict(&[listeners_check(true, false)]));
    }
}
