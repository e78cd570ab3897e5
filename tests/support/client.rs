//! A minimal HTTP/2 gRPC client for the focused relay tests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request};
use tokio::net::TcpStream;

use crate::backend::{frame, take_messages};

pub async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

pub fn grpc_request(path: &str) -> Request<()> {
    let mut request = Request::builder()
        .method("POST")
        .uri(format!("http://strait.test{path}"))
        .body(())
        .unwrap();
    request
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    request
        .headers_mut()
        .insert("te", HeaderValue::from_static("trailers"));
    request
}

/// The whole outcome of a finished call.
#[derive(Debug)]
pub struct Reply {
    pub headers: HeaderMap,
    pub messages: Vec<Bytes>,
    /// Trailers, or the headers of a trailers-only response.
    pub trailers: HeaderMap,
    pub trailers_only: bool,
}

impl Reply {
    pub fn status(&self) -> i32 {
        self.trailers
            .get("grpc-status")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn message(&self) -> String {
        self.trailers
            .get("grpc-message")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

pub async fn read_reply(response: h2::client::ResponseFuture) -> Result<Reply, h2::Error> {
    let response = response.await?;
    let (parts, mut body) = response.into_parts();
    if body.is_end_stream() {
        return Ok(Reply {
            trailers: parts.headers.clone(),
            headers: parts.headers,
            messages: vec![],
            trailers_only: true,
        });
    }
    let messages = read_messages(&mut body).await?;
    let trailers = body.trailers().await?.unwrap_or_default();
    Ok(Reply {
        headers: parts.headers,
        messages,
        trailers,
        trailers_only: false,
    })
}

pub async fn read_messages(body: &mut RecvStream) -> Result<Vec<Bytes>, h2::Error> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    Ok(take_messages(&mut buf))
}

/// A unary call: one request message, the whole reply, bounded in time.
pub async fn unary(
    send: &SendRequest<Bytes>,
    request: Request<()>,
    body: &[u8],
) -> Result<Reply, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(request, false)?;
    // A server may answer, and close the stream, before the request is sent in full (RFC 9113
    // §8.1; Strait does for a call it refuses at once): then its answer is the outcome.
    let _ = stream.send_data(frame(body), true);
    tokio::time::timeout(Duration::from_secs(20), read_reply(response))
        .await
        .expect("call timed out")
}
