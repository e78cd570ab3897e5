//! Raw HTTP/2 frames over a plain `TcpStream`, for tests that must misbehave in ways a real HTTP/2
//! client library refuses to: rapid resets, CONTINUATION floods, streams beyond the peer's limit,
//! zero windows, silence. The writer builds frames byte by byte (HPACK as literals without indexing,
//! no Huffman: any decoder accepts them); the reader returns frames as they arrive, with a bound on
//! every wait, and answers PING and SETTINGS on request so a connection can look alive.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: header fields and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

pub fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, ACK, 0, &[])
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn goaway(last_stream: u32, code: u32) -> Vec<u8> {
    let mut payload = last_stream.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

pub fn data(stream: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
    frame(
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
        payload,
    )
}

pub fn headers(stream: u32, block: &[u8], flags: u8) -> Vec<u8> {
    frame(HEADERS, flags, stream, block)
}

pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    frame(
        CONTINUATION,
        if end_headers { END_HEADERS } else { 0 },
        stream,
        block,
    )
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `mask`.
fn hpack_int(out: &mut Vec<u8>, value: usize, n: u8, mask: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(mask | value as u8);
        return;
    }
    out.push(mask | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// One header field as a literal without indexing, new name, no Huffman (RFC 7541 §6.2.2).
pub fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_int(out, name.len(), 7, 0);
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, value.len(), 7, 0);
    out.extend_from_slice(value);
}

/// The header block of a gRPC request for `path`, plus `extra` fields.
pub fn grpc_request_block(path: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST".as_bytes()),
        (":scheme", b"http"),
        (":authority", b"strait.test"),
        (":path", path.as_bytes()),
        ("content-type", b"application/grpc"),
        ("te", b"trailers"),
    ] {
        hpack_literal(&mut block, name, value);
    }
    for (name, value) in extra {
        hpack_literal(&mut block, name, value);
    }
    block
}

/// A gRPC message: uncompressed flag, length prefix, body.
pub fn grpc_message(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Bytes,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The debug data of a GOAWAY frame, as text.
    pub fn debug_data(&self) -> String {
        match self.kind {
            GOAWAY => {
                String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default()).into_owned()
            }
            _ => String::new(),
        }
    }

    pub fn is_end_stream(&self) -> bool {
        matches!(self.kind, DATA | HEADERS) && self.flags & END_STREAM != 0
    }
}

/// How a read ended.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (EOF, or reset).
    Closed,
    /// Nothing arrived within the bound.
    Timeout,
}

/// The writing half of a raw connection; clones share it, so a test can flood from one task while
/// another reads.
#[derive(Clone)]
pub struct RawWriter(Arc<Mutex<OwnedWriteHalf>>);

impl RawWriter {
    /// Writes bytes; an error means the peer has closed the connection (or stopped reading for 10 s).
    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut half = self.0.lock().await;
        match tokio::time::timeout(Duration::from_secs(10), half.write_all(bytes)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write stalled for 10 s",
            )),
        }
    }
}

/// A raw HTTP/2 client connection.
pub struct RawConn {
    reader: OwnedReadHalf,
    writer: RawWriter,
    buf: BytesMut,
    /// Answer PINGs with an ACK (a live peer) or ignore them (a dead one); shared, so a test can
    /// flip it while another task reads.
    answer_pings: Arc<AtomicBool>,
    /// ACK the server's SETTINGS.
    ack_settings: bool,
}

impl RawConn {
    /// A TCP connection that has sent nothing yet, and answers nothing (an answer before the
    /// preface would be a protocol error) until [`RawConn::open`] turns answers on.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (reader, writer) = stream.into_split();
        RawConn {
            reader,
            writer: RawWriter(Arc::new(Mutex::new(writer))),
            buf: BytesMut::new(),
            answer_pings: Arc::new(AtomicBool::new(false)),
            ack_settings: false,
        }
    }

    /// Connects and sends the preface and a SETTINGS frame with `values`.
    pub async fn open(addr: SocketAddr, values: &[(u16, u32)]) -> RawConn {
        let mut conn = RawConn::connect(addr).await;
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(values));
        conn.send(&hello).await.expect("send preface");
        conn.answer_pings.store(true, Ordering::SeqCst);
        conn.ack_settings = true;
        conn
    }

    pub fn writer(&self) -> RawWriter {
        self.writer.clone()
    }

    /// The switch for answering PINGs (on at first).
    pub fn ping_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.answer_pings)
    }

    /// Writes bytes; an error means the peer has closed the connection.
    pub async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.send(bytes).await
    }

    /// The next frame, waiting at most `bound`; PINGs and SETTINGS are answered as configured
    /// (and returned all the same).
    pub async fn next_frame(&mut self, bound: Duration) -> Result<Frame, ReadError> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head = self.buf.split_to(9);
                    let payload = self.buf.split_to(len).freeze();
                    let frame = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload,
                    };
                    self.answer(&frame).await;
                    return Ok(frame);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout_at(deadline, self.reader.read(&mut chunk)).await;
            match read {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(ReadError::Closed),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn answer(&mut self, frame: &Frame) {
        let reply = if frame.kind == PING
            && frame.flags & ACK == 0
            && self.answer_pings.load(Ordering::SeqCst)
        {
            self::frame(PING, ACK, 0, &frame.payload)
        } else if frame.kind == SETTINGS && frame.flags & ACK == 0 && self.ack_settings {
            settings_ack()
        } else {
            return;
        };
        // Never wait behind a flood another task is writing (its write may be stalled by the
        // server's flow control): the answer is skipped then. A failed write shows as a closed
        // connection on the next read.
        if let Ok(mut half) = self.writer.0.try_lock() {
            let _ = tokio::time::timeout(Duration::from_secs(5), half.write_all(&reply)).await;
        }
    }

    /// Reads until the server's SETTINGS frame (the first frame it sends), bounded.
    pub async fn await_settings(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.next_frame(left).await.expect("server SETTINGS");
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                return;
            }
        }
    }

    /// Reads frames until the connection closes or `bound` passes, keeping a summary.
    pub async fn read_until_closed(&mut self, bound: Duration) -> Summary {
        let started = Instant::now();
        let mut summary = Summary::default();
        loop {
            let left = bound.saturating_sub(started.elapsed());
            match self.next_frame(left).await {
                Ok(frame) => summary.add(frame),
                Err(ReadError::Closed) => {
                    summary.closed_after = Some(started.elapsed());
                    return summary;
                }
                Err(ReadError::Timeout) => return summary,
            }
        }
    }

    /// Reads frames until `stop` says so, the connection closes or `bound` passes.
    pub async fn read_until(
        &mut self,
        bound: Duration,
        mut stop: impl FnMut(&Summary) -> bool,
    ) -> Summary {
        let started = Instant::now();
        let mut summary = Summary::default();
        while !stop(&summary) {
            let left = bound.saturating_sub(started.elapsed());
            match self.next_frame(left).await {
                Ok(frame) => summary.add(frame),
                Err(ReadError::Closed) => {
                    summary.closed_after = Some(started.elapsed());
                    break;
                }
                Err(ReadError::Timeout) => break,
            }
        }
        summary
    }
}

/// What a reader saw: the GOAWAY, resets by stream, frames per stream (bounded: payloads of DATA
/// frames are kept only for streams that a test reads responses from, up to 1 MiB in all).
#[derive(Debug, Default)]
pub struct Summary {
    pub frames: usize,
    pub goaway: Option<Frame>,
    pub resets: Vec<(u32, u32)>,
    /// Streams that ended (END_STREAM seen).
    pub ended: Vec<u32>,
    /// (stream, HEADERS frames, DATA bytes) for each stream that got any.
    pub streams: Vec<(u32, usize, Vec<u8>)>,
    pub pings: usize,
    /// Set when the connection closed, with the time it took.
    pub closed_after: Option<Duration>,
}

const KEPT_DATA: usize = 1024 * 1024;

impl Summary {
    fn add(&mut self, frame: Frame) {
        self.frames += 1;
        match frame.kind {
            GOAWAY => self.goaway = Some(frame.clone()),
            RST_STREAM => self
                .resets
                .push((frame.stream, frame.error_code().unwrap_or(u32::MAX))),
            PING => self.pings += 1,
            HEADERS | DATA => {
                let kept: usize = self.streams.iter().map(|s| s.2.len()).sum();
                let entry = match self.streams.iter().position(|s| s.0 == frame.stream) {
                    Some(i) => &mut self.streams[i],
                    None => {
                        self.streams.push((frame.stream, 0, Vec::new()));
                        self.streams.last_mut().expect("just pushed")
                    }
                };
                if frame.kind == HEADERS {
                    entry.1 += 1;
                } else if kept < KEPT_DATA {
                    entry.2.extend_from_slice(&frame.payload);
                }
            }
            _ => {}
        }
        if frame.is_end_stream() {
            self.ended.push(frame.stream);
        }
    }

    pub fn goaway_code(&self) -> Option<u32> {
        self.goaway.as_ref().and_then(Frame::error_code)
    }

    pub fn reset_of(&self, stream: u32) -> Option<u32> {
        self.resets
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, code)| *code)
    }

    /// DATA bytes received on `stream`.
    pub fn data_of(&self, stream: u32) -> &[u8] {
        self.streams
            .iter()
            .find(|s| s.0 == stream)
            .map(|s| s.2.as_slice())
            .unwrap_or_default()
    }
}

/// Splits gRPC messages off DATA bytes (for checking echoed bodies).
pub fn grpc_messages(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if bytes.len() < 5 + len {
            break;
        }
        bytes.advance(5);
        out.push(bytes[..len].to_vec());
        bytes.advance(len);
    }
    out
}

/// The header block of a response: `:status` and, for 200, the gRPC content type, plus `extra`.
pub fn response_block(status: u16, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    hpack_literal(&mut block, ":status", status.to_string().as_bytes());
    if status == 200 {
        hpack_literal(&mut block, "content-type", b"application/grpc");
    }
    for (name, value) in extra {
        hpack_literal(&mut block, name, value);
    }
    block
}

impl RawConn {
    /// The server side of the next connection on `listener` (bounded wait): reads the client's
    /// preface, sends an empty SETTINGS frame, and answers PING and SETTINGS like
    /// [`RawConn::open`]. For a scripted upstream that misbehaves as an HTTP/2 library will not.
    pub async fn accept(listener: &tokio::net::TcpListener) -> RawConn {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("no connection within 10 s")
            .expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let (mut reader, writer) = stream.into_split();
        let mut preface = [0u8; PREFACE.len()];
        tokio::time::timeout(Duration::from_secs(10), reader.read_exact(&mut preface))
            .await
            .expect("no preface within 10 s")
            .expect("read preface");
        assert_eq!(&preface[..], PREFACE, "not an HTTP/2 client");
        let conn = RawConn {
            reader,
            writer: RawWriter(Arc::new(Mutex::new(writer))),
            buf: BytesMut::new(),
            answer_pings: Arc::new(AtomicBool::new(true)),
            ack_settings: true,
        };
        conn.send(&settings(&[])).await.expect("send SETTINGS");
        conn
    }

    /// Reads (bounded) until a HEADERS frame opens a stream and a DATA frame has arrived on it;
    /// returns the stream's id.
    pub async fn next_request(&mut self, bound: Duration) -> u32 {
        let deadline = tokio::time::Instant::now() + bound;
        let mut opened = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match self.next_frame(left).await {
                Ok(frame) => frame,
                Err(err) => panic!("no request within {bound:?}: {err:?}"),
            };
            match (frame.kind, opened) {
                (HEADERS, None) => opened = Some(frame.stream),
                (DATA, Some(id)) if frame.stream == id => return id,
                _ => {}
            }
        }
    }
}
