//! A minimal gRPC-over-h2 client for the soak: unary calls and ping-pong bidi streams, each
//! checked end to end (`:status` 200, `grpc-status` 0, whole messages) and bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request};
use tokio::net::TcpStream;

use strait_test_support::bench::h2cfg;

/// Opens an HTTP/2 connection (its driver runs on the current runtime).
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Bytes>, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timed out"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(h2cfg::STREAM_WINDOW)
        .initial_connection_window_size(h2cfg::CONNECTION_WINDOW)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

/// A gRPC request for `path`, with `grpc-timeout` when given (e.g. "90S").
pub fn request(path: &str, timeout: Option<&'static str>, namespace: bool) -> Request<()> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://soak{path}"))
        .body(())
        .unwrap_or_default();
    let headers = request.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout {
        headers.insert("grpc-timeout", HeaderValue::from_static(timeout));
    }
    if namespace {
        headers.insert("temporal-namespace", HeaderValue::from_static("default"));
    }
    request
}

pub fn frame(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out.freeze()
}

/// Splits whole messages off the front of `buf`.
fn take_messages(buf: &mut BytesMut) -> Vec<Bytes> {
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

/// `grpc-status` 0, or the status and message as an error.
fn check_status(headers: &HeaderMap) -> Result<(), String> {
    match headers.get("grpc-status").map(HeaderValue::as_bytes) {
        Some(b"0") => Ok(()),
        Some(code) => Err(format!(
            "grpc-status {}: {}",
            String::from_utf8_lossy(code),
            headers
                .get("grpc-message")
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .unwrap_or_default()
        )),
        None => Err("no grpc-status".to_owned()),
    }
}

async fn read_messages(body: &mut RecvStream, limit: usize) -> Result<Vec<Bytes>, String> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("response body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            return Err(format!("response over {limit} bytes"));
        }
    }
    let messages = take_messages(&mut buf);
    if !buf.is_empty() {
        return Err(format!("{} bytes of a message left over", buf.len()));
    }
    Ok(messages)
}

/// One unary call: one request message in, exactly one response message out, status OK.
pub async fn unary(
    send: &SendRequest<Bytes>,
    request: Request<()>,
    body: Bytes,
    bound: Duration,
) -> Result<Bytes, String> {
    let call = async {
        let mut send = send
            .clone()
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let (response, mut stream) = send
            .send_request(request, false)
            .map_err(|e| format!("send request: {e}"))?;
        stream
            .send_data(frame(&body), true)
            .map_err(|e| format!("send body: {e}"))?;
        let response = response.await.map_err(|e| format!("response: {e}"))?;
        if response.status() != 200 {
            return Err(format!("HTTP status {}", response.status()));
        }
        let (parts, mut body) = response.into_parts();
        if body.is_end_stream() {
            check_status(&parts.headers)?;
            return Err("trailers-only OK response without a message".to_owned());
        }
        let messages = read_messages(&mut body, 64 << 20).await?;
        let trailers = body
            .trailers()
            .await
            .map_err(|e| format!("trailers: {e}"))?
            .ok_or("no trailers")?;
        check_status(&trailers)?;
        match <[Bytes; 1]>::try_from(messages) {
            Ok([message]) => Ok(message),
            Err(messages) => Err(format!("{} response messages, not 1", messages.len())),
        }
    };
    tokio::time::timeout(bound, call)
        .await
        .map_err(|_| format!("no answer within {bound:?}"))?
}

/// A bidi stream: messages go out one at a time and each comes back before the next.
pub struct Bidi {
    send: SendStream<Bytes>,
    recv: RecvStream,
    buf: BytesMut,
}

impl Bidi {
    pub async fn open(send: &SendRequest<Bytes>, request: Request<()>) -> Result<Bidi, String> {
        let mut send = send
            .clone()
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let (response, stream) = send
            .send_request(request, false)
            .map_err(|e| format!("send request: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .map_err(|_| "no response headers within 10 s".to_owned())?
            .map_err(|e| format!("response: {e}"))?;
        if response.status() != 200 {
            return Err(format!("HTTP status {}", response.status()));
        }
        Ok(Bidi {
            send: stream,
            recv: response.into_body(),
            buf: BytesMut::new(),
        })
    }

    /// Sends `message` and waits (bounded) for it to come back unchanged.
    pub async fn ping(&mut self, message: Bytes, bound: Duration) -> Result<(), String> {
        self.send
            .send_data(frame(&message), false)
            .map_err(|e| format!("send: {e}"))?;
        let echoed = tokio::time::timeout(bound, async {
            loop {
                if let Some(echoed) = take_messages(&mut self.buf).pop() {
                    return Ok(echoed);
                }
                match self.recv.data().await {
                    Some(Ok(chunk)) => {
                        let _ = self.recv.flow_control().release_capacity(chunk.len());
                        self.buf.extend_from_slice(&chunk);
                    }
                    Some(Err(e)) => return Err(format!("stream: {e}")),
                    None => return Err("stream ended early".to_owned()),
                }
            }
        })
        .await
        .map_err(|_| format!("no echo within {bound:?}"))??;
        if echoed != message {
            return Err(format!(
                "echo of {} bytes came back as {} different bytes",
                message.len(),
                echoed.len()
            ));
        }
        Ok(())
    }

    /// Half-closes and checks the stream ends with status OK and nothing more.
    pub async fn finish(mut self, bound: Duration) -> Result<(), String> {
        self.send
            .send_data(Bytes::new(), true)
            .map_err(|e| format!("half-close: {e}"))?;
        tokio::time::timeout(bound, async {
            let rest = read_messages(&mut self.recv, 1 << 20).await?;
            if !rest.is_empty() {
                return Err(format!("{} unexpected messages at the end", rest.len()));
            }
            let trailers = self
                .recv
                .trailers()
                .await
                .map_err(|e| format!("trailers: {e}"))?
                .ok_or("no trailers")?;
            check_status(&trailers)
        })
        .await
        .map_err(|_| format!("stream did not end within {bound:?}"))?
    }
}
