//! The gather attack of the memory bench: on one h2c connection, streams to
//! `StartWorkflowExecution` (a request a translating listener must edit, so holds whole), each
//! declaring a large message, sending `0a 06 "orders"` and zeros, and never ending it. Each stream
//! sends only as the proxy grants window and stops when the proxy answers it.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderValue, Method, Request};

pub const START_WORKFLOW: &str =
    "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";

/// How the attack went.
pub struct Attack {
    /// Streams the proxy was still holding when they had sent everything.
    pub held: usize,
    /// Streams the proxy answered: (grpc-status, grpc-message).
    pub answered: Vec<(String, String)>,
    /// Streams that failed otherwise (reset, timeout), with the first error.
    pub failed: usize,
    pub first_error: Option<String>,
    /// The open streams and their connection, kept until dropped.
    pub hold: Vec<h2::SendStream<Bytes>>,
    pub connection: Option<(
        SendRequest<Bytes>,
        h2::PingPong,
        tokio::task::JoinHandle<()>,
    )>,
}

/// Runs `streams` attacking streams at once on one connection to `target`, each bounded by
/// `bound`; then a PING round trip, so the proxy has read everything that was sent.
pub async fn run(
    target: SocketAddr,
    streams: usize,
    declared: u32,
    sent: usize,
    bound: Duration,
) -> Result<Attack, String> {
    let sock = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let (sender, mut conn) = h2::client::handshake(sock)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let mut pp = conn.ping_pong().ok_or("no ping_pong")?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri: http::Uri = format!("http://{target}{START_WORKFLOW}")
        .parse()
        .map_err(|e| format!("uri: {e}"))?;
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let sender = sender.clone();
            let uri = uri.clone();
            tokio::spawn(tokio::time::timeout(
                bound,
                stream(sender, uri, declared, sent),
            ))
        })
        .collect();
    let mut attack = Attack {
        held: 0,
        answered: Vec::new(),
        failed: 0,
        first_error: None,
        hold: Vec::new(),
        connection: None,
    };
    for task in tasks {
        let outcome = match task.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(format!("stream neither answered nor done within {bound:?}")),
            Err(e) => Err(format!("stream task: {e}")),
        };
        match outcome {
            Ok(Ended::Held(stream)) => {
                attack.held += 1;
                attack.hold.push(stream);
            }
            Ok(Ended::Answered(status, message)) => attack.answered.push((status, message)),
            Err(e) => {
                attack.failed += 1;
                attack.first_error.get_or_insert(e);
            }
        }
    }
    tokio::time::timeout(bound, pp.ping(h2::Ping::opaque()))
        .await
        .map_err(|_| format!("no PING answer within {bound:?}"))?
        .map_err(|e| format!("ping: {e}"))?;
    attack.connection = Some((sender, pp, driver));
    Ok(attack)
}

enum Ended {
    Held(h2::SendStream<Bytes>),
    Answered(String, String),
}

async fn stream(
    sender: SendRequest<Bytes>,
    uri: http::Uri,
    declared: u32,
    sent: usize,
) -> Result<Ended, String> {
    let mut sender = sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    let (response, mut tx) = sender
        .send_request(request, false)
        .map_err(|e| format!("send_request: {e}"))?;
    let body = b"\x0a\x06orders";
    let mut pending = Vec::with_capacity(5 + body.len());
    pending.push(0);
    pending.extend_from_slice(&declared.to_be_bytes());
    pending.extend_from_slice(body);
    let mut pending = Bytes::from(pending);
    let zeros = Bytes::from(vec![0u8; 64 * 1024]);
    let mut left = sent.saturating_sub(body.len());
    // A backend may answer with headers at once; the proxy's verdict then comes as trailers.
    let mut response = Some(response);
    let mut reply: Option<h2::RecvStream> = None;
    loop {
        if pending.is_empty() {
            if left == 0 {
                return Ok(Ended::Held(tx));
            }
            let n = left.min(zeros.len());
            pending = zeros.slice(..n);
            left -= n;
        }
        tx.reserve_capacity(pending.len());
        let event = poll_fn(|cx| {
            if let Some(future) = response.as_mut() {
                if let Poll::Ready(head) = Pin::new(future).poll(cx) {
                    return Poll::Ready(Event::Head(head));
                }
            }
            if let Some(body) = reply.as_mut() {
                if let Poll::Ready(trailers) = body.poll_trailers(cx) {
                    return Poll::Ready(Event::Trailers(trailers));
                }
            }
            tx.poll_capacity(cx).map(Event::Capacity)
        })
        .await;
        match event {
            Event::Head(head) => {
                response = None;
                let head = head.map_err(|e| format!("stream failed without an answer: {e}"))?;
                if head.body().is_end_stream() {
                    return Ok(answered(head.headers()));
                }
                reply = Some(head.into_body());
            }
            Event::Trailers(trailers) => {
                let trailers = trailers.map_err(|e| format!("stream failed: {e}"))?;
                return Ok(answered(&trailers.unwrap_or_default()));
            }
            Event::Capacity(Some(Ok(0))) => {}
            Event::Capacity(Some(Ok(n))) => {
                let part = pending.split_to(n.min(pending.len()));
                if tx.send_data(part, false).is_err() {
                    return verdict(response, reply).await;
                }
            }
            Event::Capacity(_) => return verdict(response, reply).await,
        }
    }
}

enum Event {
    Head(Result<http::Response<h2::RecvStream>, h2::Error>),
    Trailers(Result<Option<http::HeaderMap>, h2::Error>),
    Capacity(Option<Result<usize, h2::Error>>),
}

/// The stream can take no more data: the proxy's answer is on its way (or came with a reset).
async fn verdict(
    response: Option<h2::client::ResponseFuture>,
    reply: Option<h2::RecvStream>,
) -> Result<Ended, String> {
    let mut body = match (response, reply) {
        (Some(response), _) => {
            let head = response
                .await
                .map_err(|e| format!("stream failed without an answer: {e}"))?;
            if head.body().is_end_stream() {
                return Ok(answered(head.headers()));
            }
            head.into_body()
        }
        (None, Some(body)) => body,
        (None, None) => return Err("stream closed without an answer".into()),
    };
    let trailers = poll_fn(|cx| body.poll_trailers(cx))
        .await
        .map_err(|e| format!("stream failed: {e}"))?;
    Ok(answered(&trailers.unwrap_or_default()))
}

fn answered(headers: &http::HeaderMap) -> Ended {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Ended::Answered(header("grpc-status"), header("grpc-message"))
}
