//! One call: from the client's request headers to the last trailer. Headers are forwarded (hop-by-hop
//! ones dropped, `:authority` set for the upstream), both bodies are pumped concurrently through the
//! framing layer, and every way a call can end is mapped: normal trailers, trailers-only responses,
//! a client's reset (a cancel upstream), an upstream's own reset (relayed; CANCEL as CANCELLED),
//! upstream failure (UNAVAILABLE), oversized or malformed messages (RESOURCE_EXHAUSTED / INTERNAL),
//! the call's own deadline (DEADLINE_EXCEEDED) and requests that are not gRPC (HTTP 415 / 405).

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::PushPromises;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::gather::{Budget, Gather, GatherError, Scope};
use super::pump::{pump_body, BodyEnd, Counters, Edits, PumpError};
use super::ListenerContext;
use crate::access::namespaces::{AccessError, DenialKind};
use crate::grpc::compression::{CompressionError, Encoding};
use crate::grpc::frame::{FrameDecoder, FrameError};
use crate::grpc::status::{Code, Status};
use crate::grpc::timeout;
use crate::metrics::RelayErrorKind;
use crate::pipeline::{CallState, Flow, FlowError, MethodEntry, StageError};
use crate::rewrite::walker::{EditError, EditStats, Unknown};
use crate::rewrite::Direction;
use crate::telemetry::warn_limited;

/// Grace after a call's own deadline before the proxy ends it: the upstream normally answers
/// DEADLINE_EXCEEDED itself, and its answer is the better one.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// Connection-specific headers (RFC 9113 §8.2.2) never forwarded; `te: trailers` is re-added.
/// Constants, so that no header name is parsed per call.
static HOP_BY_HOP: [HeaderName; 7] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::TE,
    http::header::HOST,
];

/// How a call ended, as far as the proxy is concerned.
#[derive(Debug)]
enum CallError {
    ClientReset(Reason),
    ClientGone(h2::Error),
    /// The upstream peer itself reset the stream with this reason (not CANCEL).
    UpstreamReset(Reason),
    /// The upstream peer itself reset the stream with CANCEL.
    UpstreamCancelled,
    /// The upstream connection failed (closed, or ended by Strait's HTTP/2 client for garbage or a
    /// protocol error), or h2 reset the stream for an error in the upstream's frames.
    UpstreamFailed(h2::Error),
    RequestFrame(FrameError),
    ResponseFrame(FrameError),
    /// A message the pipeline refused or could not read (it is not forwarded).
    Stage(Direction, FlowError),
    Deadline(Duration),
    /// The side written to granted no flow-control window for `send_stall_timeout`.
    Stalled(Direction, Duration),
    /// A message to be held whole was over its limit or a gather budget.
    Gather(GatherError),
}

/// The client side of the response: before headers, the `SendResponse`; after, the body stream.
struct ClientResponse {
    respond: SendResponse<Bytes>,
    body: Option<SendStream<Bytes>>,
}

impl ClientResponse {
    /// Ends the call towards the client with `status`: as trailers after response headers were sent,
    /// or as a trailers-only response before.
    fn fail(&mut self, status: &Status) {
        let result = match &mut self.body {
            Some(body) => body.send_trailers(status.to_trailers()),
            None => self
                .respond
                .send_response(status.to_trailers_only_response(), true)
                .map(|_| ()),
        };
        if let Err(err) = result {
            debug!(error = %err, "could not send status to client");
        }
    }

    fn reset(&mut self, reason: Reason) {
        match &mut self.body {
            Some(body) => body.send_reset(reason),
            None => self.respond.send_reset(reason),
        }
    }

    /// The shutdown grace period is over: UNAVAILABLE (which clients retry), as trailers after
    /// response headers or as a trailers-only response before; RST_STREAM CANCEL if the stream
    /// takes neither.
    fn shutting_down(&mut self) -> Code {
        let status = Status::new(Code::Unavailable, "proxy shutting down");
        let sent = match &mut self.body {
            Some(body) => body.send_trailers(status.to_trailers()),
            None => self
                .respond
                .send_response(status.to_trailers_only_response(), true)
                .map(|_| ()),
        };
        if sent.is_err() {
            self.reset(Reason::CANCEL);
        }
        status.code
    }
}

/// Answers a request that is not gRPC with an HTTP error, as the gRPC spec asks (PROTOCOL-HTTP2:
/// 415 for another content type), so that a plain HTTP client does not read a 200 as success: 405
/// (with `allow`) for a gRPC content type with another method. The status is in the headers too,
/// for gRPC clients, and a line of text says why.
fn refuse_non_grpc(client: &mut ClientResponse, is_grpc: bool, head: bool) -> Code {
    let (http_status, text) = if is_grpc {
        (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "strait relays gRPC only: the method must be POST",
        )
    } else {
        (
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "strait relays gRPC only: the content-type must be application/grpc",
        )
    };
    let status = Status::new(Code::Unimplemented, text);
    let mut response = Response::new(());
    *response.status_mut() = http_status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if is_grpc {
        headers.insert(http::header::ALLOW, HeaderValue::from_static("POST"));
    }
    headers.extend(status.to_trailers());
    // A reply to HEAD carries no body (RFC 9110 §9.3.2).
    let sent = client
        .respond
        .send_response(response, head)
        .and_then(|mut body| {
            if head {
                Ok(())
            } else {
                body.send_data(Bytes::from(format!("{text}\n")), true)
            }
        });
    if let Err(err) = sent {
        debug!(error = %err, "could not refuse a non-gRPC request");
    }
    status.code
}

/// Relays one call to the listener's upstream, until it ends or `abort` fires (the shutdown grace
/// period is over): then the upstream call is cancelled and the client gets UNAVAILABLE.
/// `gather_budget` is its connection's.
pub(crate) async fn relay_call(
    ctx: Arc<ListenerContext>,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    abort: CancellationToken,
    gather_budget: Arc<Budget>,
) {
    let started = Instant::now();
    // Admission: the one lookup of the call's path.
    let method = ctx.methods.get(request.uri().path());
    let method_metrics = method.metrics(&ctx.metrics);
    ctx.metrics.in_flight.increment(1.0);
    let mut client = ClientResponse {
        respond,
        body: None,
    };
    let relayed = {
        let relay = relay(&ctx, &method, request, &mut client, started, &gather_budget);
        tokio::pin!(relay);
        tokio::select! {
            code = &mut relay => Some(code),
            () = abort.cancelled() => None,
        }
        // Dropping `relay` drops the upstream stream's handles: h2 resets it with CANCEL.
    };
    let code = match relayed {
        Some(code) => code,
        None => client.shutting_down(),
    };
    ctx.metrics.in_flight.decrement(1.0);
    method_metrics.finished(code, started.elapsed());
}

async fn relay(
    ctx: &ListenerContext,
    method: &Arc<MethodEntry>,
    request: Request<RecvStream>,
    client: &mut ClientResponse,
    started: Instant,
    gather_budget: &Arc<Budget>,
) -> Code {
    let (parts, mut client_recv) = request.into_parts();
    let is_grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc || parts.method != http::Method::POST {
        ctx.metrics.relay_error(RelayErrorKind::NotGrpc);
        let head = parts.method == http::Method::HEAD;
        return refuse_non_grpc(client, is_grpc, head);
    }

    if !method.allowed {
        let path = parts.uri.path();
        ctx.metrics.relay_error(RelayErrorKind::PermissionDenied);
        crate::metrics::acl_denied(&ctx.name, DenialKind::Method);
        let status = Status::new(
            Code::PermissionDenied,
            format!("method {path} is not allowed on {:?}", ctx.name),
        );
        client.fail(&status);
        return status.code;
    }

    // The call's own deadline, else the listener's cap; never a proxy timeout shorter than the call's.
    let own = parts.headers.get("grpc-timeout").and_then(timeout::parse);
    let budget = match own {
        Some(own) => Some(own.saturating_add(DEADLINE_GRACE)),
        None => ctx.limits.max_call_duration,
    };
    let deadline = budget.and_then(|b| started.checked_add(b));

    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // The client's (already parsed) path with the upstream's scheme and authority.
    let mut uri_parts = http::uri::Parts::default();
    uri_parts.scheme = Some(ctx.upstream.scheme().clone());
    uri_parts.authority = Some(ctx.upstream.authority().clone());
    uri_parts.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    let uri = Uri::from_parts(uri_parts);
    let Ok(uri) = uri else {
        let status = Status::new(Code::Internal, format!("invalid request path {path:?}"));
        client.fail(&status);
        return status.code;
    };
    let mut upstream_request = Request::new(());
    *upstream_request.method_mut() = http::Method::POST;
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = forwardable(parts.headers);
    upstream_request
        .headers_mut()
        .insert(http::header::TE, HeaderValue::from_static("trailers"));
    // The stages see the headers before anything goes upstream, and may refuse the call.
    let call = Arc::new(CallState::default());
    if let Err(err) = method.request_headers(&call, upstream_request.headers_mut()) {
        let status = stage_status(ctx, "request", &FlowError::Stage(err));
        client.fail(&status);
        return status.code;
    }
    let request_encoding = Encoding::from_header(upstream_request.headers().get("grpc-encoding"));

    // Waiting for an upstream connection is bounded by the connect timeout and the call's deadline.
    let connect_deadline = started + ctx.upstream.connect_timeout();
    let acquire_deadline = deadline.map_or(connect_deadline, |d| d.min(connect_deadline));
    let end_of_stream = client_recv.is_end_stream();
    let (mut response_future, mut upstream_send) = {
        let mut attempts = 0;
        loop {
            let sender = match ctx.upstream.acquire(acquire_deadline).await {
                Ok(sender) => sender,
                Err(err) => {
                    ctx.metrics.relay_error(RelayErrorKind::UpstreamUnavailable);
                    let status = Status::new(Code::Unavailable, err.to_string());
                    client.fail(&status);
                    return status.code;
                }
            };
            let mut sender = sender;
            match sender.send_request(upstream_request.clone(), end_of_stream) {
                Ok(pair) => break pair,
                // The connection closed between acquire and send: nothing was sent, so retry.
                Err(err) if attempts < 2 => {
                    attempts += 1;
                    debug!(error = %err, "upstream refused a new stream; retrying");
                }
                Err(err) => {
                    ctx.metrics.relay_error(RelayErrorKind::UpstreamUnavailable);
                    let status = Status::new(
                        Code::Unavailable,
                        format!("upstream {:?} unavailable: {err}", ctx.upstream.name()),
                    );
                    client.fail(&status);
                    return status.code;
                }
            }
        }
    };

    let limit = ctx.limits.max_message_bytes;
    // An edited request is held whole (and inflated whole), so it has a limit of its own.
    let request_limit = limit.min(ctx.limits.max_edited_request_bytes);
    let request_limit_key = if request_limit < limit {
        "max_edited_request_bytes"
    } else {
        "max_message_bytes"
    };
    let gather = |max_message: u32, key: &str| Gather {
        max_message,
        max_message_key: Arc::from(format!("{}.{key}", ctx.limits_key)),
        connection: Arc::clone(gather_budget),
        process: Arc::clone(&ctx.gather_budget),
        metrics: ctx.metrics.gather.clone(),
    };
    let mut request_edits = Flow::new(
        method,
        Direction::ToUpstream,
        &call,
        request_encoding,
        request_limit,
    )
    .map(|flow| Edits {
        flow,
        gather: gather(request_limit, request_limit_key),
    });
    let mut response_stats = EditStats::default();
    // A second handle on the upstream stream's receiving half, which the response pump may be too
    // busy to read (held up by a slow client): it ends when that half does, with h2's own error for
    // a stream that failed. Push is disabled, so it yields no promises.
    let mut upstream_stream = response_future.push_promises();
    let mut upstream_recv_ended = false;
    let outcome = {
        let request_pump = async {
            if end_of_stream {
                return Ok(RequestEnd::Sent);
            }
            let mut decoder = FrameDecoder::new(limit);
            let counters = Counters {
                bytes: &ctx.metrics.request_bytes,
                messages: &ctx.metrics.request_messages,
            };
            let pumped = match pump_body(
                &mut client_recv,
                &mut upstream_send,
                &mut decoder,
                &counters,
                request_edits.as_mut(),
            )
            .await
            {
                Ok(BodyEnd::Trailers(trailers)) => upstream_send
                    .send_trailers(forwardable(trailers))
                    .map_err(PumpError::Dst),
                Ok(BodyEnd::EndOfStream) => Ok(()),
                Err(err) => Err(err),
            };
            match pumped {
                Ok(()) => Ok(RequestEnd::Sent),
                Err(err @ (PumpError::DstReset(_) | PumpError::Dst(_))) => {
                    Ok(RequestEnd::UpstreamClosed(err))
                }
                Err(err) => Err(request_error(err)),
            }
        };
        let response = relay_response(
            ctx,
            response_future,
            client,
            limit,
            method,
            &call,
            &mut response_stats,
            gather(limit, "max_message_bytes"),
        );
        tokio::pin!(request_pump);
        tokio::pin!(response);
        let expiry = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        let mut request_done = false;
        loop {
            let failed = tokio::select! {
                result = &mut request_pump, if !request_done => {
                    request_done = true;
                    match result {
                        Ok(RequestEnd::Sent) => continue,
                        // h2 tells the sending half only a reason, the same for a reset the
                        // upstream sent and for a GOAWAY Strait's own client sent when the upstream
                        // sent garbage: the receiving half says which.
                        Ok(RequestEnd::UpstreamClosed(err)) => {
                            match recv_state(&mut upstream_stream).await {
                                RecvState::Failed(failure) => failure,
                                RecvState::Ended => {
                                    upstream_recv_ended = true;
                                    continue;
                                }
                                RecvState::Open => break Err(request_error(err)),
                            }
                        }
                        Err(err) => break Err(err),
                    }
                }
                closed = upstream_stream.push_promise(), if !upstream_recv_ended => match closed {
                    Some(Err(failure)) => failure,
                    _ => {
                        upstream_recv_ended = true;
                        continue;
                    }
                },
                result = &mut response => break result,
                () = &mut expiry => break Err(CallError::Deadline(budget.unwrap_or_default())),
            };
            // The upstream stream failed. What the response pump can still hand the client at once
            // is delivered (a response that arrived whole still wins); if it waits for the client,
            // the call ends now, with why.
            let now = poll_fn(|cx| {
                Poll::Ready(match response.as_mut().poll(cx) {
                    Poll::Ready(result) => Some(result),
                    Poll::Pending => None,
                })
            })
            .await;
            break now.unwrap_or_else(|| Err(upstream_error(failed)));
        }
    };

    if let Some(edits) = &request_edits {
        ctx.metrics.rewrote(&edits.flow.stats);
    }
    ctx.metrics.rewrote(&response_stats);
    match outcome {
        Ok(code) => code,
        Err(err) => fail_call(ctx, err, client, &mut upstream_send),
    }
}

/// How the request direction ended, when not with an error of its own.
enum RequestEnd {
    Sent,
    /// The upstream stream took no more of the request: why is for its receiving half to tell.
    UpstreamClosed(PumpError),
}

/// Where the upstream stream's receiving half stands.
enum RecvState {
    Open,
    /// It ended normally (a reset after a complete response, RFC 9113 §8.1, included).
    Ended,
    /// Reset or failed: h2's error, which tells who (`is_remote`) and what (reset, GOAWAY, I/O).
    Failed(h2::Error),
}

/// Looks, without waiting, at the receiving half through its push-promise handle.
async fn recv_state(stream: &mut PushPromises) -> RecvState {
    poll_fn(|cx| {
        Poll::Ready(match std::pin::pin!(stream.push_promise()).poll(cx) {
            Poll::Pending => RecvState::Open,
            Poll::Ready(Some(Err(err))) => RecvState::Failed(err),
            Poll::Ready(_) => RecvState::Ended,
        })
    })
    .await
}

/// Maps an error of the request direction (client → upstream).
fn request_error(err: PumpError) -> CallError {
    match err {
        PumpError::Src(err) => client_error(err),
        PumpError::Dst(err) => CallError::UpstreamFailed(err),
        PumpError::DstReset(reason) => CallError::UpstreamFailed(h2::Error::from(reason)),
        PumpError::Frame(err) => CallError::RequestFrame(err),
        PumpError::Stage(err) => CallError::Stage(Direction::ToUpstream, err),
        PumpError::Stalled(limit) => CallError::Stalled(Direction::ToUpstream, limit),
        PumpError::Gather(err) => CallError::Gather(err),
    }
}

/// Maps an error of the response direction (upstream → client).
fn response_error(err: PumpError) -> CallError {
    match err {
        PumpError::Src(err) => upstream_error(err),
        PumpError::Dst(err) => client_error(err),
        PumpError::DstReset(reason) => CallError::ClientReset(reason),
        PumpError::Frame(err) => CallError::ResponseFrame(err),
        PumpError::Stage(err) => CallError::Stage(Direction::ToClient, err),
        PumpError::Stalled(limit) => CallError::Stalled(Direction::ToClient, limit),
        PumpError::Gather(err) => CallError::Gather(err),
    }
}

fn client_error(err: h2::Error) -> CallError {
    match err.reason() {
        Some(reason) if err.is_reset() => CallError::ClientReset(reason),
        _ => CallError::ClientGone(err),
    }
}

/// Only a reset the upstream peer sent is its answer; anything else on the upstream side (a reset
/// h2 sent for the upstream's bad frames, a GOAWAY, a closed connection) is a failed upstream.
fn upstream_error(err: h2::Error) -> CallError {
    match err.reason() {
        Some(Reason::CANCEL) if err.is_reset() && err.is_remote() => CallError::UpstreamCancelled,
        Some(reason) if err.is_reset() && err.is_remote() => CallError::UpstreamReset(reason),
        _ => CallError::UpstreamFailed(err),
    }
}

/// The status a gRPC client reads from a reset it receives (gRPC PROTOCOL-HTTP2, "Errors"): what a
/// relayed reset counts as.
fn reset_code(reason: Reason) -> Code {
    match reason {
        Reason::REFUSED_STREAM => Code::Unavailable,
        Reason::CANCEL => Code::Cancelled,
        Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

/// Ends a failed call on both sides and returns the code it counts as.
fn fail_call(
    ctx: &ListenerContext,
    err: CallError,
    client: &mut ClientResponse,
    upstream_send: &mut SendStream<Bytes>,
) -> Code {
    match err {
        CallError::ClientReset(reason) => {
            debug!(?reason, "client reset the call; cancelling upstream");
            upstream_send.send_reset(Reason::CANCEL);
            Code::Cancelled
        }
        CallError::ClientGone(err) => {
            debug!(error = %err, "client connection failed; cancelling upstream");
            upstream_send.send_reset(Reason::CANCEL);
            Code::Cancelled
        }
        // Relayed as it came: the client's gRPC library reads it as it would from the upstream
        // (REFUSED_STREAM stays safe to retry).
        CallError::UpstreamReset(reason) => {
            debug!(?reason, "upstream reset the call; resetting client stream");
            client.reset(reason);
            reset_code(reason)
        }
        CallError::UpstreamCancelled => {
            debug!("upstream cancelled the call");
            let status = Status::new(
                Code::Cancelled,
                format!(
                    "upstream {:?} cancelled the call (RST_STREAM CANCEL)",
                    ctx.upstream.name()
                ),
            );
            client.fail(&status);
            status.code
        }
        CallError::UpstreamFailed(err) => {
            warn_limited!(error = %err, "upstream failed during the call");
            ctx.metrics.relay_error(RelayErrorKind::UpstreamFailed);
            upstream_send.send_reset(Reason::CANCEL);
            let status = Status::new(
                Code::Unavailable,
                format!(
                    "upstream {:?} failed during the call: {err}",
                    ctx.upstream.name()
                ),
            );
            client.fail(&status);
            status.code
        }
        CallError::RequestFrame(err) | CallError::ResponseFrame(err) => {
            upstream_send.send_reset(Reason::CANCEL);
            let status = frame_status(&err);
            ctx.metrics.relay_error(match err {
                FrameError::TooLarge { .. } => RelayErrorKind::MessageTooLarge,
                _ => RelayErrorKind::MalformedFrame,
            });
            client.fail(&status);
            status.code
        }
        CallError::Stage(direction, err) => {
            upstream_send.send_reset(Reason::CANCEL);
            let side = match direction {
                Direction::ToUpstream => "request",
                Direction::ToClient => "response",
            };
            let status = stage_status(ctx, side, &err);
            client.fail(&status);
            status.code
        }
        CallError::Stalled(direction, limit) => {
            ctx.metrics.relay_error(RelayErrorKind::SendStalled);
            upstream_send.send_reset(Reason::CANCEL);
            // Trailers are not flow-controlled, so even a client that reads nothing gets the status.
            let status = match direction {
                Direction::ToClient => Status::new(
                    Code::ResourceExhausted,
                    format!("the client read nothing of the response for {limit:?} (no HTTP/2 window; send_stall_timeout): call ended by the proxy"),
                ),
                Direction::ToUpstream => Status::new(
                    Code::Unavailable,
                    format!(
                        "upstream {:?} read nothing of the request for {limit:?} (no HTTP/2 window; send_stall_timeout)",
                        ctx.upstream.name()
                    ),
                ),
            };
            warn_limited!(message = %status.message, "call stalled; ended");
            client.fail(&status);
            status.code
        }
        CallError::Gather(err) => {
            upstream_send.send_reset(Reason::CANCEL);
            match &err {
                GatherError::TooLarge { .. } => {
                    ctx.metrics.relay_error(RelayErrorKind::MessageTooLarge);
                    debug!(error = %err, "message too large to hold whole; call failed");
                }
                // One client's doing: its own connection's budget.
                GatherError::OverBudget {
                    scope: Scope::Connection,
                    ..
                } => {
                    ctx.metrics.relay_error(RelayErrorKind::GatherBudget);
                    debug!(error = %err, "connection gather budget full; call failed");
                }
                // Every client's edited calls are refused while it is full: the operator's concern.
                GatherError::OverBudget { .. } => {
                    ctx.metrics.relay_error(RelayErrorKind::GatherBudget);
                    warn_limited!(error = %err, "process gather budget full; call failed");
                }
            }
            let status = Status::new(Code::ResourceExhausted, err.to_string());
            client.fail(&status);
            status.code
        }
        CallError::Deadline(budget) => {
            ctx.metrics.relay_error(RelayErrorKind::DeadlineExceeded);
            upstream_send.send_reset(Reason::CANCEL);
            let status = Status::new(
                Code::DeadlineExceeded,
                format!(
                    "call deadline of {budget:?} (grpc-timeout plus grace) exceeded at the proxy"
                ),
            );
            client.fail(&status);
            status.code
        }
    }
}

/// The status of a call the pipeline refused (its `side`'s message or headers), with its metric and
/// log line.
fn stage_status(ctx: &ListenerContext, side: &str, err: &FlowError) -> Status {
    match err {
        // A name the client cannot see: answered as the upstream answers a name it does not know.
        FlowError::Stage(StageError::Edit(EditError::Unknown(unknown))) => {
            let code = match unknown {
                Unknown::Namespace(_) => Code::NotFound,
                Unknown::SearchAttribute { .. } | Unknown::QueryAttribute(_) => {
                    Code::InvalidArgument
                }
            };
            debug!(%unknown, "request names a hidden upstream name");
            Status::new(code, unknown.to_string())
        }
        FlowError::Stage(StageError::Edit(_)) | FlowError::Compression(_) => {
            ctx.metrics.relay_error(RelayErrorKind::RewriteFailed);
            let code = match err {
                FlowError::Stage(StageError::Edit(EditError::Query(_))) => Code::InvalidArgument,
                FlowError::Compression(CompressionError::Unsupported(_)) => Code::Unimplemented,
                _ => Code::Internal,
            };
            warn_limited!(error = %err, side, "message could not be edited; call failed");
            Status::new(
                code,
                format!("strait could not edit the {side} message: {err}"),
            )
        }
        FlowError::Stage(StageError::Access(access)) => {
            let (code, kind) = match access {
                AccessError::Denied { .. } => {
                    (Code::PermissionDenied, RelayErrorKind::PermissionDenied)
                }
                AccessError::Unresolved(_) => {
                    (Code::Unavailable, RelayErrorKind::UpstreamUnavailable)
                }
                AccessError::Malformed(_) => (Code::Internal, RelayErrorKind::RewriteFailed),
            };
            ctx.metrics.relay_error(kind);
            if code == Code::PermissionDenied {
                debug!(error = %err, "request denied");
            } else {
                warn_limited!(error = %err, side, "message could not be checked; call failed");
            }
            Status::new(code, err.to_string())
        }
    }
}

fn frame_status(err: &FrameError) -> Status {
    match err {
        FrameError::TooLarge { .. } => Status::new(Code::ResourceExhausted, err.to_string()),
        _ => Status::new(Code::Internal, err.to_string()),
    }
}

/// Waits for the upstream response, forwards its headers, body and trailers to the client.
#[allow(clippy::too_many_arguments)]
async fn relay_response(
    ctx: &ListenerContext,
    response_future: h2::client::ResponseFuture,
    client: &mut ClientResponse,
    limit: u32,
    method: &Arc<MethodEntry>,
    call: &Arc<CallState>,
    stats: &mut EditStats,
    gather: Gather,
) -> Result<Code, CallError> {
    let response = {
        tokio::pin!(response_future);
        let respond = &mut client.respond;
        poll_fn(|cx| {
            if let std::task::Poll::Ready(reset) = respond.poll_reset(cx) {
                return std::task::Poll::Ready(Err(match reset {
                    Ok(reason) => CallError::ClientReset(reason),
                    Err(err) => client_error(err),
                }));
            }
            response_future.as_mut().poll(cx).map_err(upstream_error)
        })
        .await?
    };
    let (mut parts, mut upstream_recv) = response.into_parts();
    parts.headers = forwardable(std::mem::take(&mut parts.headers));

    if upstream_recv.is_end_stream() {
        // Trailers-only: the status is in the headers.
        let code = Code::from_headers(&parts.headers).unwrap_or(Code::Unknown);
        method.response_status(call, &mut parts.headers, stats);
        client
            .respond
            .send_response(Response::from_parts(parts, ()), true)
            .map_err(client_error)?;
        return Ok(code);
    }

    let parts_encoding = parts.headers.get("grpc-encoding").cloned();
    let body = client
        .respond
        .send_response(Response::from_parts(parts, ()), false)
        .map_err(client_error)?;
    let client_body = client.body.insert(body);
    let mut decoder = FrameDecoder::new(limit);
    let encoding = Encoding::from_header(parts_encoding.as_ref());
    let mut edits = Flow::new(method, Direction::ToClient, call, encoding, limit)
        .map(|flow| Edits { flow, gather });
    let counters = Counters {
        bytes: &ctx.metrics.response_bytes,
        messages: &ctx.metrics.response_messages,
    };
    let pumped = pump_body(
        &mut upstream_recv,
        client_body,
        &mut decoder,
        &counters,
        edits.as_mut(),
    )
    .await;
    if let Some(edits) = &edits {
        stats.add(&edits.flow.stats);
    }
    match pumped {
        Ok(BodyEnd::Trailers(mut trailers)) => {
            let code = Code::from_headers(&trailers).unwrap_or(Code::Unknown);
            method.response_status(call, &mut trailers, stats);
            client_body
                .send_trailers(forwardable(trailers))
                .map_err(client_error)?;
            Ok(code)
        }
        // A response that ends without trailers carries no status: gRPC clients report it as such.
        Ok(BodyEnd::EndOfStream) => Ok(Code::Unknown),
        Err(err) => Err(response_error(err)),
    }
}

/// Drops connection-specific headers; everything else (metadata, `grpc-*`) passes unchanged.
fn forwardable(mut headers: HeaderMap) -> HeaderMap {
    // One pass over the (few) names instead of a hash lookup per hop-by-hop name: most header
    // blocks carry none of them, requests only `te`.
    let mut present = [false; 7];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
            any = true;
        }
    }
    if any {
        for (name, present) in HOP_BY_HOP.iter().zip(present) {
            if present {
                headers.remove(name);
            }
        }
    }
    headers
}
