//! Strait's own outbound gRPC calls (server reflection, namespace resolution; later KMS or external
//! authorization): a path and request messages the caller encoded → response messages and the
//! status, over h2. No generated stubs: callers encode and decode their messages with prost.
//!
//! A [`Client`] either borrows connections from an upstream pool (its dialing, backoff, keepalive
//! and metrics stay the pool's) or owns one connection it dialed with the crate's [`Connector`].
//! Every call is bounded: an optional deadline (sent as `grpc-timeout` and enforced locally), the
//! size of one response message, and for unary calls exactly one response message. Failures are
//! [`ClientError`]s that name the upstream and the method; callers decide what a status means.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use tokio::task::JoinHandle;

use super::frame::{encode_message, FrameDecoder, FrameError, FrameEvent};
use super::status::{percent_decode, Code};
use super::timeout;
use crate::relay::upstream::{UpstreamError, UpstreamPool};
use crate::transport::connect::{ConnectError, Connector};

/// Windows of a dedicated connection: one answer may be a large message (a reflection answer
/// carries many file descriptors), and it should arrive without a window update per 64 KiB.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Largest response message accepted unless the client is told otherwise.
const DEFAULT_MAX_RESPONSE: u32 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("upstream {upstream}: {source}")]
    Connect {
        upstream: Arc<str>,
        source: ConnectError,
    },
    #[error("upstream {upstream}: HTTP/2 handshake: {source}")]
    Handshake {
        upstream: Arc<str>,
        source: h2::Error,
    },
    /// No pooled connection could take the call (the error names the upstream).
    #[error("{0}")]
    Unavailable(UpstreamError),
    #[error("upstream {upstream} {path}: HTTP/2: {source}")]
    Http2 {
        upstream: Arc<str>,
        path: String,
        source: h2::Error,
    },
    #[error("upstream {upstream} {path}: HTTP status {status}")]
    HttpStatus {
        upstream: Arc<str>,
        path: String,
        status: StatusCode,
    },
    #[error("upstream {upstream} {path}: {} {message}", .code.as_str())]
    Status {
        upstream: Arc<str>,
        path: String,
        code: Code,
        message: String,
    },
    /// A malformed, oversized or truncated response message.
    #[error("upstream {upstream} {path}: {source}")]
    Frame {
        upstream: Arc<str>,
        path: String,
        source: FrameError,
    },
    #[error("upstream {upstream} {path}: a compressed message, which was not asked for")]
    Compressed { upstream: Arc<str>, path: String },
    #[error("upstream {upstream} {path}: no answer within {after:?}")]
    DeadlineExceeded {
        upstream: Arc<str>,
        path: String,
        after: Duration,
    },
    #[error(
        "upstream {upstream} {path}: unary call ended OK without exactly one response message"
    )]
    NotUnary { upstream: Arc<str>, path: String },
    #[error("upstream {upstream}: {path:?} is not a valid request path")]
    Path { upstream: Arc<str>, path: String },
}

/// Aborts the task driving a dedicated connection when the client goes, however it goes.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Channel {
    Pool(Arc<UpstreamPool>),
    Dedicated {
        send_request: SendRequest<Bytes>,
        _driver: AbortOnDrop,
    },
}

/// A gRPC client of one upstream.
pub(crate) struct Client {
    upstream: Arc<str>,
    channel: Channel,
    scheme: Scheme,
    authority: Authority,
    metadata: HeaderMap,
    max_response: u32,
    /// How long a call without a deadline waits for a connection to take it (pooled, or stream
    /// capacity on its own).
    acquire_timeout: Duration,
}

impl Client {
    /// Calls over `pool`'s connections, to its scheme and authority.
    pub(crate) fn over_pool(pool: Arc<UpstreamPool>) -> Self {
        Self {
            upstream: Arc::from(pool.name()),
            scheme: pool.scheme().clone(),
            authority: pool.authority().clone(),
            acquire_timeout: pool.connect_timeout(),
            channel: Channel::Pool(pool),
            metadata: HeaderMap::new(),
            max_response: DEFAULT_MAX_RESPONSE,
        }
    }

    /// Dials one connection of its own with `connector` and performs the HTTP/2 handshake, both
    /// within `timeout`. `upstream` names it in errors; `authority` is sent as `:authority`.
    pub(crate) async fn connect(
        upstream: &str,
        connector: &Connector,
        authority: Authority,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let upstream: Arc<str> = Arc::from(upstream);
        let dial = async {
            let io = connector
                .connect()
                .await
                .map_err(|source| ClientError::Connect {
                    upstream: Arc::clone(&upstream),
                    source,
                })?;
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .enable_push(false)
                .handshake::<_, Bytes>(io)
                .await
                .map_err(|source| ClientError::Handshake {
                    upstream: Arc::clone(&upstream),
                    source,
                })
        };
        let (send_request, connection) =
            tokio::time::timeout(timeout, dial)
                .await
                .map_err(|_| ClientError::Connect {
                    upstream: Arc::clone(&upstream),
                    source: ConnectError::Timeout {
                        address: connector.address().to_owned(),
                        timeout,
                    },
                })??;
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "gRPC client connection ended");
            }
        });
        Ok(Self {
            upstream,
            scheme: if connector.is_tls() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            authority,
            channel: Channel::Dedicated {
                send_request,
                _driver: AbortOnDrop(driver),
            },
            metadata: HeaderMap::new(),
            max_response: DEFAULT_MAX_RESPONSE,
            acquire_timeout: timeout,
        })
    }

    /// Headers sent with every call (e.g. `user-agent`, credentials).
    pub(crate) fn with_metadata(mut self, metadata: HeaderMap) -> Self {
        self.metadata = metadata;
        self
    }

    /// The largest response message accepted; a larger one fails the call at its prefix.
    pub(crate) fn with_max_response(mut self, limit: u32) -> Self {
        self.max_response = limit;
        self
    }

    /// One request message, one response message within `timeout` (connection wait included).
    /// A non-OK status is [`ClientError::Status`].
    pub(crate) async fn unary(
        &self,
        path: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let mut call = self.call(path, Some(timeout)).await?;
        call.send(request, true)?;
        let message = call.recv().await?;
        let extra = match message {
            Some(_) => call.recv().await?,
            None => None,
        };
        match (message, extra) {
            (Some(message), None) => Ok(message),
            _ => Err(ClientError::NotUnary {
                upstream: Arc::clone(&self.upstream),
                path: path.to_owned(),
            }),
        }
    }

    /// Opens a call whose messages flow both ways (server-streaming: one [`Call::send`] with
    /// `end`, then [`Call::recv`] until `None`). With `timeout`, the whole call is bounded by it and
    /// the server is told so; without, only the wait for a connection is bounded.
    pub(crate) async fn call(
        &self,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<Call, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let context = CallContext {
            upstream: Arc::clone(&self.upstream),
            path: path.to_owned(),
            deadline: deadline.zip(timeout),
        };
        let acquire_deadline = deadline.unwrap_or_else(|| Instant::now() + self.acquire_timeout);
        let mut send_request = match &self.channel {
            Channel::Pool(pool) => pool
                .acquire(acquire_deadline)
                .await
                .map_err(ClientError::Unavailable)?,
            Channel::Dedicated { send_request, .. } => {
                // `ready` waits while the connection is at its concurrent-stream limit.
                match tokio::time::timeout_at(acquire_deadline.into(), send_request.clone().ready())
                    .await
                {
                    Ok(ready) => ready.map_err(|source| context.http2(source))?,
                    Err(_) => {
                        let after = timeout.unwrap_or(self.acquire_timeout);
                        return Err(context.deadline_exceeded(after));
                    }
                }
            }
        };
        let request = self.request(&context)?;
        let (response, send) = send_request
            .send_request(request, false)
            .map_err(|source| context.http2(source))?;
        Ok(Call {
            context,
            send,
            response: Some(response),
            body: None,
            decoder: FrameDecoder::new(self.max_response),
            pending: Bytes::new(),
            done: false,
        })
    }

    fn request(&self, context: &CallContext) -> Result<Request<()>, ClientError> {
        let path =
            PathAndQuery::try_from(context.path.as_str()).map_err(|_| ClientError::Path {
                upstream: Arc::clone(&self.upstream),
                path: context.path.clone(),
            })?;
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| ClientError::Path {
                upstream: Arc::clone(&self.upstream),
                path: context.path.clone(),
            })?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        for (name, value) in &self.metadata {
            headers.append(name, value.clone());
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        if let Some((deadline, _)) = context.deadline {
            headers.insert(
                "grpc-timeout",
                timeout::encode(deadline.saturating_duration_since(Instant::now())),
            );
        }
        Ok(request)
    }
}

/// What names a call in its errors, and its deadline.
struct CallContext {
    upstream: Arc<str>,
    path: String,
    /// The deadline and the timeout it came from (for the error).
    deadline: Option<(Instant, Duration)>,
}

impl CallContext {
    fn http2(&self, source: h2::Error) -> ClientError {
        ClientError::Http2 {
            upstream: Arc::clone(&self.upstream),
            path: self.path.clone(),
            source,
        }
    }

    fn frame(&self, source: FrameError) -> ClientError {
        ClientError::Frame {
            upstream: Arc::clone(&self.upstream),
            path: self.path.clone(),
            source,
        }
    }

    fn deadline_exceeded(&self, after: Duration) -> ClientError {
        ClientError::DeadlineExceeded {
            upstream: Arc::clone(&self.upstream),
            path: self.path.clone(),
            after,
        }
    }

    /// The status in `headers` (trailers, or the headers of a trailers-only response).
    fn status(&self, headers: &HeaderMap) -> Result<(), ClientError> {
        let code = Code::from_headers(headers).unwrap_or(Code::Unknown);
        if code == Code::Ok {
            return Ok(());
        }
        let message = match headers.get("grpc-message") {
            Some(value) => percent_decode(value.as_bytes()),
            None if headers.contains_key("grpc-status") => String::new(),
            None => "the call ended without grpc-status".to_owned(),
        };
        Err(ClientError::Status {
            upstream: Arc::clone(&self.upstream),
            path: self.path.clone(),
            code,
            message,
        })
    }
}

/// One call in progress: request messages out, response messages in, the status at the end.
/// Dropping it before the end resets the stream (h2 sends `CANCEL`).
pub(crate) struct Call {
    context: CallContext,
    send: SendStream<Bytes>,
    response: Option<ResponseFuture>,
    body: Option<RecvStream>,
    decoder: FrameDecoder,
    pending: Bytes,
    done: bool,
}

impl Call {
    /// Frames and sends one request message; `end` half-closes the request side after it.
    pub(crate) fn send(&mut self, message: &[u8], end: bool) -> Result<(), ClientError> {
        let framed = encode_message(false, message).map_err(|e| self.context.frame(e))?;
        self.send
            .send_data(framed, end)
            .map_err(|e| self.context.http2(e))
    }

    /// Half-closes the request side: no more request messages.
    pub(crate) fn close_send(&mut self) -> Result<(), ClientError> {
        self.send
            .send_data(Bytes::new(), true)
            .map_err(|e| self.context.http2(e))
    }

    /// The next response message, or `None` once the call ended with OK.
    pub(crate) async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self.context.deadline {
            Some((deadline, after)) => tokio::time::timeout_at(deadline.into(), self.recv_inner())
                .await
                .map_err(|_| self.context.deadline_exceeded(after))?,
            None => self.recv_inner().await,
        }
    }

    async fn recv_inner(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.done {
            return Ok(None);
        }
        if let Some(response) = self.response.take() {
            let response = response.await.map_err(|e| self.context.http2(e))?;
            if response.status() != StatusCode::OK {
                return Err(ClientError::HttpStatus {
                    upstream: Arc::clone(&self.context.upstream),
                    path: self.context.path.clone(),
                    status: response.status(),
                });
            }
            // A trailers-only response: the status is in the headers, and no body follows.
            if response.headers().contains_key("grpc-status") || response.body().is_end_stream() {
                self.done = true;
                return self.context.status(response.headers()).map(|()| None);
            }
            self.body = Some(response.into_body());
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let mut message: Option<BytesMut> = None;
        loop {
            while let Some(event) = self
                .decoder
                .next(&mut self.pending)
                .map_err(|e| self.context.frame(e))?
            {
                match event {
                    FrameEvent::Header(header) => {
                        if header.compressed {
                            return Err(ClientError::Compressed {
                                upstream: Arc::clone(&self.context.upstream),
                                path: self.context.path.clone(),
                            });
                        }
                        // The decoder has checked `len` against the limit.
                        message = Some(BytesMut::with_capacity(header.len as usize));
                    }
                    FrameEvent::Body(chunk) => {
                        if let Some(message) = message.as_mut() {
                            message.extend_from_slice(&chunk);
                        }
                    }
                    FrameEvent::End => {
                        return Ok(Some(message.take().unwrap_or_default().freeze()))
                    }
                }
            }
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    self.pending = chunk;
                }
                Some(Err(source)) => return Err(self.context.http2(source)),
                None => break,
            }
        }
        self.decoder.finish().map_err(|e| self.context.frame(e))?;
        let trailers = body
            .trailers()
            .await
            .map_err(|e| self.context.http2(e))?
            .unwrap_or_default();
        self.done = true;
        self.context.status(&trailers).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    use std::net::SocketAddr;

    use crate::config::UpstreamConfig;
    use h2::server::SendResponse;
    use http::Response;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// How the test server answers a call.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Each request message back, reversed, then OK in the trailers.
        Echo,
        /// One message, then `NOT_FOUND` with a percent-encoded message in the trailers.
        StatusInTrailers,
        /// Headers with `PERMISSION_DENIED` and END_STREAM: no body, no trailers.
        TrailersOnly,
        /// A message prefix declaring 1 MiB.
        Oversized,
        /// A prefix whose compressed flag is 2.
        BadFlag,
        /// Two messages to a call that wanted one.
        TwoMessages,
        /// Nothing, ever (the stream stays open).
        Silent,
    }

    /// What the server saw of one call.
    struct Seen {
        headers: HeaderMap,
        /// Whether the client reset the stream (an abandoned call).
        reset: Option<h2::Reason>,
    }

    struct Server {
        addr: SocketAddr,
        seen: mpsc::UnboundedReceiver<Seen>,
    }

    impl Server {
        /// The next call the server finished with; bounded, so a broken handler fails the test.
        async fn next_seen(&mut self) -> Seen {
            tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
                .await
                .expect("the server saw no call")
                .expect("the server stopped")
        }
    }

    async fn server(answer: Answer) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((request, respond))) = conn.accept().await {
                        tokio::spawn(handle(answer, request, respond, seen_tx.clone()));
                    }
                });
            }
        });
        Server { addr, seen }
    }

    fn grpc_headers(status: Option<(Code, &str)>) -> Response<()> {
        let mut response = Response::new(());
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        if let Some((code, message)) = status {
            headers.insert("grpc-status", HeaderValue::from(code as u16));
            headers.insert("grpc-message", HeaderValue::from_str(message).unwrap());
        }
        response
    }

    async fn handle(
        answer: Answer,
        request: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        seen: mpsc::UnboundedSender<Seen>,
    ) {
        let (parts, mut body) = request.into_parts();
        let ok = || {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            t
        };
        let mut reset = None;
        match answer {
            Answer::TrailersOnly => {
                let headers = grpc_headers(Some((Code::PermissionDenied, "not%20you")));
                respond.send_response(headers, true).unwrap();
            }
            Answer::Silent => {
                let mut send = respond.send_response(grpc_headers(None), false).unwrap();
                // Waits for the client to give up on the call.
                reset = Some(
                    std::future::poll_fn(|cx| send.poll_reset(cx))
                        .await
                        .unwrap(),
                );
            }
            _ => {
                let mut send = respond.send_response(grpc_headers(None), false).unwrap();
                let mut received = BytesMut::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                    received.extend_from_slice(&chunk);
                }
                let mut input = received.freeze();
                let mut decoder = FrameDecoder::new(u32::MAX);
                let mut messages = Vec::new();
                let mut current = Vec::new();
                while let Some(event) = decoder.next(&mut input).unwrap() {
                    match event {
                        FrameEvent::Header(_) => current.clear(),
                        FrameEvent::Body(b) => current.extend_from_slice(&b),
                        FrameEvent::End => messages.push(std::mem::take(&mut current)),
                    }
                }
                match answer {
                    Answer::Echo => {
                        for mut m in messages {
                            m.reverse();
                            send.send_data(encode_message(false, &m).unwrap(), false)
                                .unwrap();
                        }
                        send.send_trailers(ok()).unwrap();
                    }
                    Answer::StatusInTrailers => {
                        send.send_data(encode_message(false, b"partial").unwrap(), false)
                            .unwrap();
                        let mut t = HeaderMap::new();
                        t.insert("grpc-status", HeaderValue::from_static("5"));
                        t.insert(
                            "grpc-message",
                            HeaderValue::from_static("no%20such%20thing"),
                        );
                        send.send_trailers(t).unwrap();
                    }
                    Answer::Oversized => {
                        let prefix = crate::grpc::frame::MessageHeader {
                            compressed: false,
                            len: 1024 * 1024,
                        }
                        .encode();
                        send.send_data(Bytes::copy_from_slice(&prefix), false)
                            .unwrap();
                        send.send_trailers(ok()).unwrap();
                    }
                    Answer::BadFlag => {
                        send.send_data(Bytes::from_static(&[2, 0, 0, 0, 1, 9]), false)
                            .unwrap();
                        send.send_trailers(ok()).unwrap();
                    }
                    Answer::TwoMessages => {
                        for m in [&b"one"[..], b"two"] {
                            send.send_data(encode_message(false, m).unwrap(), false)
                                .unwrap();
                        }
                        send.send_trailers(ok()).unwrap();
                    }
                    Answer::TrailersOnly | Answer::Silent => unreachable!(),
                }
            }
        }
        let _ = seen.send(Seen {
            headers: parts.headers,
            reset,
        });
    }

    fn connector(addr: SocketAddr) -> Connector {
        let mut config = UpstreamConfig::with_defaults("test".into(), addr.to_string());
        config.connect_timeout = Duration::from_secs(5);
        Connector::new(&(&config).into()).unwrap()
    }

    async fn client(server: &Server) -> Client {
        let authority: Authority = server.addr.to_string().parse().unwrap();
        let mut metadata = HeaderMap::new();
        metadata.insert("x-extra", HeaderValue::from_static("yes"));
        Client::connect(
            "test",
            &connector(server.addr),
            authority,
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .with_metadata(metadata)
        .with_max_response(64 * 1024)
    }

    const PATH: &str = "/test.Service/Method";
    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn unary_ok_sends_metadata_and_deadline() {
        let mut server = server(Answer::Echo).await;
        let client = client(&server).await;
        let reply = client.unary(PATH, b"abc", LONG).await.unwrap();
        assert_eq!(reply, Bytes::from_static(b"cba"));
        let seen = server.next_seen().await;
        assert_eq!(seen.headers["x-extra"], "yes");
        assert_eq!(seen.headers["content-type"], "application/grpc");
        assert_eq!(seen.headers["te"], "trailers");
        let sent = timeout::parse(&seen.headers["grpc-timeout"]).unwrap();
        assert!(
            sent <= LONG && sent > LONG - Duration::from_secs(5),
            "{sent:?}"
        );
    }

    #[tokio::test]
    async fn streaming_call_carries_several_messages_each_way() {
        let server = server(Answer::Echo).await;
        let client = client(&server).await;
        let mut call = client.call(PATH, None).await.unwrap();
        call.send(b"12", false).unwrap();
        call.send(b"", false).unwrap();
        call.send(b"345", false).unwrap();
        call.close_send().unwrap();
        let mut replies = Vec::new();
        while let Some(message) = call.recv().await.unwrap() {
            replies.push(message);
        }
        assert_eq!(replies, [&b"21"[..], b"", b"543"]);
        // After the end, the call stays ended.
        assert_eq!(call.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn non_ok_status_in_trailers_is_an_error_with_decoded_message() {
        let server = server(Answer::StatusInTrailers).await;
        let client = client(&server).await;
        let err = client.unary(PATH, b"x", LONG).await.unwrap_err();
        match &err {
            ClientError::Status {
                upstream,
                path,
                code: Code::NotFound,
                message,
            } => {
                assert_eq!(&**upstream, "test");
                assert_eq!(path, PATH);
                assert_eq!(message, "no such thing");
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            err.to_string(),
            format!("upstream test {PATH}: NOT_FOUND no such thing")
        );
    }

    #[tokio::test]
    async fn trailers_only_status_is_an_error() {
        let server = server(Answer::TrailersOnly).await;
        let client = client(&server).await;
        let err = client.unary(PATH, b"x", LONG).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Status { code: Code::PermissionDenied, message, .. } if message == "not you"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn oversized_response_is_refused_at_its_prefix() {
        let server = server(Answer::Oversized).await;
        let client = client(&server).await;
        let err = client.unary(PATH, b"x", LONG).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Frame {
                    source: FrameError::TooLarge {
                        len: 1_048_576,
                        limit: 65_536
                    },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn malformed_frame_is_an_error() {
        let server = server(Answer::BadFlag).await;
        let client = client(&server).await;
        let err = client.unary(PATH, b"x", LONG).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Frame {
                    source: FrameError::BadFlag(2),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unary_wants_exactly_one_message() {
        let server = server(Answer::TwoMessages).await;
        let client = client(&server).await;
        let err = client.unary(PATH, b"x", LONG).await.unwrap_err();
        assert!(matches!(err, ClientError::NotUnary { .. }), "{err}");
    }

    #[tokio::test]
    async fn deadline_ends_the_call_and_resets_its_stream() {
        let mut server = server(Answer::Silent).await;
        let client = client(&server).await;
        let timeout = Duration::from_millis(200);
        let err = client.unary(PATH, b"x", timeout).await.unwrap_err();
        assert!(
            matches!(err, ClientError::DeadlineExceeded { after, .. } if after == timeout),
            "{err}"
        );
        // The abandoned call reached the server as a reset, and it had been told the deadline.
        let seen = server.next_seen().await;
        assert_eq!(seen.reset, Some(h2::Reason::CANCEL));
        assert!(timeout::parse(&seen.headers["grpc-timeout"]).unwrap() <= timeout);
    }

    #[tokio::test]
    async fn refused_connection_names_the_upstream() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let err = Client::connect(
            "test",
            &connector(addr),
            addr.to_string().parse().unwrap(),
            Duration::from_secs(5),
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(
                &err,
                ClientError::Connect {
                    source: ConnectError::Tcp { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("upstream test: connect to"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn pooled_calls_use_the_pool_and_report_it_down() {
        let server = server(Answer::Echo).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let config = UpstreamConfig::with_defaults("pooled".into(), server.addr.to_string());
        let pool = UpstreamPool::start(&config, stop.clone(), &tracker).unwrap();
        let client = Client::over_pool(pool);
        assert_eq!(client.unary(PATH, b"ab", LONG).await.unwrap(), "ba");

        // A pool whose upstream refuses connections: the call fails with the pool's error.
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let config = UpstreamConfig::with_defaults("down".into(), addr.to_string());
        let pool = UpstreamPool::start(&config, stop.clone(), &tracker).unwrap();
        let client = Client::over_pool(pool);
        let err = client.unary(PATH, b"x", LONG).await.unwrap_err();
        assert!(matches!(err, ClientError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("\"down\""), "{err}");
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
