//! Counting what a client connection's HTTP/2 layer does on its own. h2 answers floods and limit
//! violations itself (GOAWAY ENHANCE_YOUR_CALM on rapid resets or CONTINUATION floods, 431 for an
//! oversized header list, REFUSED_STREAM beyond the stream limit) and never tells the application,
//! so the bytes it writes to the client are scanned: frame headers only, plus the first bytes of
//! GOAWAY and RST_STREAM payloads. Frames on streams the application never accepted can only come
//! from h2, which keeps resets Strait relays from an upstream out of the count.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::{Violation, ViolationCounters};

const HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
/// GOAWAY: last stream id and error code, then enough debug data to tell h2's reasons apart.
const GOAWAY_CAPTURE: usize = 8 + 32;

/// Shared between a connection's driver (which records accepted streams) and its byte stream.
pub(crate) struct ConnWatch {
    accepted: AtomicU32,
    violations: ViolationCounters,
}

impl ConnWatch {
    pub(crate) fn new(violations: ViolationCounters) -> Arc<Self> {
        Arc::new(Self {
            accepted: AtomicU32::new(0),
            violations,
        })
    }

    /// Records a stream the application accepted (client stream ids only grow).
    pub(crate) fn accepted(&self, stream: h2::StreamId) {
        self.accepted.fetch_max(u32::from(stream), Ordering::AcqRel);
    }
}

/// A client connection's byte stream with its outbound frames watched.
pub(crate) struct Watched<T> {
    inner: T,
    scanner: Scanner,
    watch: Arc<ConnWatch>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, watch: Arc<ConnWatch>) -> Self {
        Self {
            inner,
            scanner: Scanner::default(),
            watch,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        let accepted = self.watch.accepted.load(Ordering::Acquire);
        let violations = &self.watch.violations;
        self.scanner.scan(bytes, accepted, &mut |violation| {
            violations.count(violation)
        });
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.scan(&buf[..n.min(buf.len())]);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            // Only the bytes the inner stream took were written.
            let mut left = n;
            for buf in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(buf.len());
                self.scan(&buf[..take]);
                left -= take;
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Follows frame boundaries across writes of any size.
#[derive(Default)]
pub struct Scanner {
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// Payload bytes of the current frame still to come (0 while reading a frame header).
    remaining: usize,
    kind: u8,
    stream: u32,
    capture: Vec<u8>,
    capture_want: usize,
    /// The stream of the last 431 response h2 sent: the reset that follows it belongs to it.
    refused_headers: u32,
}

impl Scanner {
    /// Scans the next bytes h2 wrote; `accepted` is the highest stream the application accepted.
    pub fn scan(&mut self, mut bytes: &[u8], accepted: u32, report: &mut impl FnMut(Violation)) {
        while !bytes.is_empty() {
            if self.remaining == 0 {
                let take = (HEADER_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
                self.head_len += take;
                bytes = &bytes[take..];
                if self.head_len < HEADER_LEN {
                    return;
                }
                self.head_len = 0;
                let h = self.head;
                self.remaining = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                self.kind = h[3];
                self.stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.capture.clear();
                self.capture_want = match self.kind {
                    GOAWAY => self.remaining.min(GOAWAY_CAPTURE),
                    RST_STREAM => self.remaining.min(4),
                    _ => 0,
                };
                if self.remaining == 0 {
                    self.frame_done(accepted, report);
                }
                continue;
            }
            let take = self.remaining.min(bytes.len());
            let want = self
                .capture_want
                .saturating_sub(self.capture.len())
                .min(take);
            self.capture.extend_from_slice(&bytes[..want]);
            self.remaining -= take;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                self.frame_done(accepted, report);
            }
        }
    }

    fn frame_done(&mut self, accepted: u32, report: &mut impl FnMut(Violation)) {
        let code = |at: usize| {
            self.capture
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match self.kind {
            GOAWAY => {
                if code(4).is_none_or(|c| c == NO_ERROR) {
                    return;
                }
                let debug = self.capture.get(8..).unwrap_or_default();
                report(match debug {
                    b"too_many_resets" => Violation::RapidReset,
                    b"too_many_continuations" | b"header_list_way_too_large" => {
                        Violation::HeaderFlood
                    }
                    b"too_many_internal_resets" => Violation::ResetFlood,
                    _ => Violation::ProtocolError,
                });
            }
            // The only response h2 sends by itself: 431 for an oversized header list.
            HEADERS if self.stream > accepted => {
                self.refused_headers = self.stream;
                report(Violation::HeaderListTooLarge);
            }
            RST_STREAM if self.stream > accepted => match code(0) {
                Some(REFUSED_STREAM) => report(Violation::RefusedStream),
                Some(PROTOCOL_ERROR) if self.stream == self.refused_headers => {}
                Some(NO_ERROR | CANCEL) | None => {}
                Some(_) => report(Violation::ProtocolError),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, 0]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn goaway(code: u32, debug: &[u8]) -> Vec<u8> {
        let mut payload = 7u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(debug);
        frame(GOAWAY, 0, &payload)
    }

    /// Scans `bytes` split at every `step` bytes, with streams up to `accepted` accepted.
    fn scan(bytes: &[u8], step: usize, accepted: u32) -> Vec<Violation> {
        let mut scanner = Scanner::default();
        let mut seen = Vec::new();
        for chunk in bytes.chunks(step) {
            scanner.scan(chunk, accepted, &mut |v| seen.push(v));
        }
        seen
    }

    #[test]
    fn h2_verdicts_are_recognised_across_any_write_split() {
        let mut bytes = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]); // SETTINGS
        bytes.extend(frame(0x0, 1, &[7u8; 40_000])); // DATA on an accepted stream
        bytes.extend(frame(HEADERS, 9, &[0x48, 0x82, 0x64, 0x1f])); // 431
        bytes.extend(frame(RST_STREAM, 9, &PROTOCOL_ERROR.to_be_bytes())); // its reset
        bytes.extend(frame(RST_STREAM, 11, &REFUSED_STREAM.to_be_bytes()));
        bytes.extend(frame(RST_STREAM, 3, &REFUSED_STREAM.to_be_bytes())); // relayed: accepted
        bytes.extend(frame(RST_STREAM, 13, &CANCEL.to_be_bytes()));
        bytes.extend(goaway(0xb, b"too_many_resets"));
        bytes.extend(goaway(0xb, b"too_many_continuations"));
        bytes.extend(goaway(0xb, b"too_many_internal_resets"));
        bytes.extend(goaway(PROTOCOL_ERROR, b""));
        bytes.extend(goaway(NO_ERROR, b""));
        let expected = vec![
            Violation::HeaderListTooLarge,
            Violation::RefusedStream,
            Violation::RapidReset,
            Violation::HeaderFlood,
            Violation::ResetFlood,
            Violation::ProtocolError,
        ];
        for step in [1, 2, 5, 9, 10, 13, 4096, bytes.len()] {
            assert_eq!(scan(&bytes, step, 7), expected, "split every {step} bytes");
        }
    }

    #[test]
    fn frames_of_accepted_streams_are_not_counted() {
        let mut bytes = frame(HEADERS, 5, &[0x88]);
        bytes.extend(frame(RST_STREAM, 5, &PROTOCOL_ERROR.to_be_bytes()));
        assert!(scan(&bytes, 3, 5).is_empty());
    }
}
