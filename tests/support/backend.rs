//! An in-process HTTP/2 gRPC backend whose behaviour is chosen by the method name, for the focused
//! relay tests. It records what it saw (headers, resets) so tests can assert what crossed the proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// What the backend observed.
#[derive(Default)]
pub struct Observed {
    /// Request headers by method name (the last one seen).
    pub headers: Mutex<HashMap<String, HeaderMap>>,
    pub authorities: Mutex<Vec<String>>,
    /// Bytes a flooding response managed to hand to h2 (flow control permitting).
    pub flood_sent: AtomicU64,
    started_tx: Mutex<Option<mpsc::UnboundedSender<String>>>,
    reset_tx: Mutex<Option<mpsc::UnboundedSender<(String, Reason)>>>,
    pub gate: Notify,
    /// Notified (notify_waiters), every connection open now gets a graceful GOAWAY, as a server
    /// that limits connection age sends (Temporal's frontend: after 5 minutes).
    pub goaway: Notify,
    /// Connections accepted so far.
    pub connections: AtomicU64,
    /// Request messages (raw wire bytes, compressed flag stripped) by method name (the last call).
    pub bodies: Mutex<HashMap<String, Vec<Bytes>>>,
    /// Canned replies by method name: response messages and trailers (or, with no messages and
    /// `trailers_only`, a trailers-only response).
    pub replies: Mutex<HashMap<String, Reply>>,
    /// Computed replies by method name: the reply is made from the request messages.
    pub computed: Mutex<HashMap<String, ReplyFn>>,
}

/// Makes a reply from the request messages of a call.
pub type ReplyFn = Arc<dyn Fn(&[Bytes]) -> Reply + Send + Sync>;

#[derive(Clone, Default)]
pub struct Reply {
    pub messages: Vec<Bytes>,
    pub trailers: HeaderMap,
    pub trailers_only: bool,
    pub headers: HeaderMap,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub observed: Arc<Observed>,
    /// Methods whose handling started, in order.
    pub started: mpsc::UnboundedReceiver<String>,
    /// Streams the backend saw reset by its peer (the proxy), with the reason.
    pub resets: mpsc::UnboundedReceiver<(String, Reason)>,
}

pub fn frame(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out.freeze()
}

/// Splits complete messages off `buf`.
pub fn take_messages(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).freeze());
    }
    out
}

impl Backend {
    pub async fn start() -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (started_tx, started) = mpsc::unbounded_channel();
        let (reset_tx, resets) = mpsc::unbounded_channel();
        let observed = Arc::new(Observed {
            started_tx: Mutex::new(Some(started_tx)),
            reset_tx: Mutex::new(Some(reset_tx)),
            ..Default::default()
        });
        let obs = Arc::clone(&observed);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let obs = Arc::clone(&obs);
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(stream).await else {
                        return;
                    };
                    obs.connections.fetch_add(1, Ordering::Relaxed);
                    let mut closing = false;
                    loop {
                        let accepted = tokio::select! {
                            accepted = conn.accept() => accepted,
                            _ = obs.goaway.notified(), if !closing => {
                                closing = true;
                                conn.graceful_shutdown();
                                continue;
                            }
                        };
                        let Some(accepted) = accepted else {
                            break;
                        };
                        let Ok((request, respond)) = accepted else {
                            eprintln!("backend connection error: {accepted:?}");
                            break;
                        };
                        tokio::spawn(handle(Arc::clone(&obs), request, respond));
                    }
                });
            }
        });
        Backend {
            addr,
            observed,
            started,
            resets,
        }
    }

    /// Registers a canned reply for `method`.
    pub fn reply(&self, method: &str, reply: Reply) {
        self.observed
            .replies
            .lock()
            .unwrap()
            .insert(method.to_owned(), reply);
    }

    /// Registers a reply computed from each call's request messages for `method`.
    pub fn reply_with(
        &self,
        method: &str,
        reply: impl Fn(&[Bytes]) -> Reply + Send + Sync + 'static,
    ) {
        self.observed
            .computed
            .lock()
            .unwrap()
            .insert(method.to_owned(), Arc::new(reply));
    }

    /// Waits (bounded) for the next method to start.
    pub async fn next_started(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.started.recv())
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits (bounded) for the next reset the backend observed.
    pub async fn next_reset(&mut self) -> (String, Reason) {
        tokio::time::timeout(Duration::from_secs(10), self.resets.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

fn response_headers() -> Response<()> {
    let mut response = Response::new(());
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-trailer", HeaderValue::from_static("yes"));
    trailers
}

async fn read_all(body: &mut RecvStream) -> Vec<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    take_messages(&mut buf)
}

async fn send(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let n = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
        };
        if n == 0 {
            continue;
        }
        stream.send_data(data.split_to(n.min(data.len())), false)?;
    }
    Ok(())
}

async fn watch_reset(obs: &Observed, method: &str, respond: &mut SendResponse<Bytes>) {
    if let Ok(reason) = std::future::poll_fn(|cx| respond.poll_reset(cx)).await {
        record_reset(obs, method, reason);
    }
}

fn record_reset(obs: &Observed, method: &str, reason: Reason) {
    if let Some(tx) = obs.reset_tx.lock().unwrap().as_ref() {
        let _ = tx.send((method.to_owned(), reason));
    }
}

async fn handle(
    obs: Arc<Observed>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let method = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    obs.headers
        .lock()
        .unwrap()
        .insert(method.clone(), request.headers().clone());
    obs.authorities.lock().unwrap().push(
        request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    );
    if let Some(tx) = obs.started_tx.lock().unwrap().as_ref() {
        let _ = tx.send(method.clone());
    }
    let mut body = request.into_body();
    match method.as_str() {
        "TrailersOnly" => {
            let mut response = response_headers();
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static("5"));
            response.headers_mut().insert(
                "grpc-message",
                HeaderValue::from_static("thing%20not%20found"),
            );
            let _ = respond.send_response(response, true);
        }
        "Hang" | "NoRead" => {
            // Hold the request (unread for NoRead) until the proxy resets the stream.
            if method == "Hang" {
                let _ = read_all(&mut body).await;
            }
            watch_reset(&obs, &method, &mut respond).await;
            drop(body);
        }
        "EarlyReply" => {
            // Answer after the first message, without waiting for the request to end (as grpc-go
            // servers do for unary calls), and keep the stream until the test is done.
            let mut buf = BytesMut::new();
            let first = loop {
                let Some(Ok(chunk)) = body.data().await else {
                    return;
                };
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
                if let Some(m) = take_messages(&mut buf).into_iter().next() {
                    break m;
                }
            };
            let Ok(mut stream) = respond.send_response(response_headers(), false) else {
                return;
            };
            let _ = send(&mut stream, frame(&first)).await;
            let _ = stream.send_trailers(ok_trailers());
            obs.gate.notified().await;
            drop(body);
        }
        "Reset" => {
            let _ = read_all(&mut body).await;
            respond.send_reset(Reason::CANCEL);
        }
        "Gate" => {
            let messages = read_all(&mut body).await;
            tokio::select! {
                _ = obs.gate.notified() => {}
                _ = watch_reset(&obs, &method, &mut respond) => return,
            }
            let Ok(mut stream) = respond.send_response(response_headers(), false) else {
                return;
            };
            for m in messages {
                let _ = send(&mut stream, frame(&m)).await;
            }
            let _ = stream.send_trailers(ok_trailers());
        }
        "Big" => {
            // The request holds the response size as a big-endian u32.
            let messages = read_all(&mut body).await;
            let size = messages
                .first()
                .map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
                .unwrap_or(0);
            let Ok(mut stream) = respond.send_response(response_headers(), false) else {
                return;
            };
            if send(&mut stream, frame(&vec![7u8; size as usize]))
                .await
                .is_ok()
            {
                let _ = stream.send_trailers(ok_trailers());
            }
        }
        "Flood" => {
            let _ = read_all(&mut body).await;
            let Ok(mut stream) = respond.send_response(response_headers(), false) else {
                return;
            };
            let message = frame(&vec![1u8; 64 * 1024]);
            for _ in 0..2048 {
                if send(&mut stream, message.clone()).await.is_err() {
                    record_reset(&obs, &method, Reason::CANCEL);
                    return;
                }
                obs.flood_sent
                    .fetch_add(message.len() as u64, Ordering::Relaxed);
            }
            let _ = stream.send_trailers(ok_trailers());
        }
        "Stream" => {
            // Bidi echo: each message goes back as soon as it is complete.
            let Ok(mut stream) = respond.send_response(response_headers(), false) else {
                return;
            };
            let mut buf = BytesMut::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
                for m in take_messages(&mut buf) {
                    if send(&mut stream, frame(&m)).await.is_err() {
                        return;
                    }
                }
            }
            let _ = stream.send_trailers(ok_trailers());
        }
        "Bidi" => {
            // Bidi echo like Stream, recording a request stream that ends in a reset (a cancel).
            let Ok(mut stream) = respond.send_response(response_headers(), false) else {
                return;
            };
            let mut buf = BytesMut::new();
            loop {
                match body.data().await {
                    Some(Ok(chunk)) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        buf.extend_from_slice(&chunk);
                        for m in take_messages(&mut buf) {
                            if send(&mut stream, frame(&m)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Err(err)) => {
                        record_reset(
                            &obs,
                            &method,
                            err.reason().unwrap_or(Reason::INTERNAL_ERROR),
                        );
                        return;
                    }
                    None => break,
                }
            }
            let _ = stream.send_trailers(ok_trailers());
        }
        _ if obs.replies.lock().unwrap().contains_key(&method)
            || obs.computed.lock().unwrap().contains_key(&method) =>
        {
            let messages = read_all(&mut body).await;
            let computed = obs.computed.lock().unwrap().get(&method).cloned();
            let reply = match computed {
                Some(make) => make(&messages),
                None => obs.replies.lock().unwrap()[&method].clone(),
            };
            obs.bodies.lock().unwrap().insert(method.clone(), messages);
            let mut response = response_headers();
            response.headers_mut().extend(reply.headers.clone());
            if reply.trailers_only {
                response.headers_mut().extend(reply.trailers);
                let _ = respond.send_response(response, true);
                return;
            }
            let Ok(mut stream) = respond.send_response(response, false) else {
                return;
            };
            for m in reply.messages {
                if send(&mut stream, m).await.is_err() {
                    return;
                }
            }
            let _ = stream.send_trailers(reply.trailers);
        }
        _ => {
            // Echo: every request message back, request metadata reflected in response headers.
            let messages = read_all(&mut body).await;
            let mut response = response_headers();
            for (name, value) in obs.headers.lock().unwrap().get(&method).unwrap().iter() {
                if name.as_str().starts_with("x-") || name == "temporal-namespace" {
                    let echoed = http::HeaderName::try_from(format!("x-echo-{name}")).unwrap();
                    response.headers_mut().insert(echoed, value.clone());
                }
            }
            let Ok(mut stream) = respond.send_response(response, false) else {
                return;
            };
            for m in messages {
                if send(&mut stream, frame(&m)).await.is_err() {
                    return;
                }
            }
            let _ = stream.send_trailers(ok_trailers());
        }
    }
}
