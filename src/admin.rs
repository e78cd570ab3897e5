//! The admin HTTP/1.1 listener: `/livez` (the process runs), `/readyz` (listeners bound and every
//! upstream connected; 503 with the reasons otherwise, and while draining) and `/metrics` (Prometheus).

use std::convert::Infallible;
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

use crate::relay::upstream::UpstreamPool;

/// What /readyz reports on.
pub struct Readiness {
    pub listeners_bound: AtomicBool,
    pub draining: AtomicBool,
    pub upstreams: Vec<Arc<UpstreamPool>>,
}

impl Readiness {
    /// `Ok` when ready, else every reason it is not.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if !self.listeners_bound.load(Ordering::Acquire) {
            reasons.push("listeners not bound yet".to_owned());
        }
        if self.draining.load(Ordering::Acquire) {
            reasons.push("shutting down".to_owned());
        }
        for upstream in &self.upstreams {
            if upstream.connected() == 0 {
                reasons.push(format!(
                    "upstream {:?} ({}) not connected",
                    upstream.name(),
                    upstream.address()
                ));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
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
        "/readyz" => match readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
            Err(reasons) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", reasons.join("; ")),
            ),
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
