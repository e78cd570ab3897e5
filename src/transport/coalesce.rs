//! Syscall batching under h2: many calls' frames in one `writev`, bulk data in few large reads.
//!
//! **Writes.** An h2 connection task flushes whenever it runs, and tokio runs a task that was just
//! woken next (the LIFO slot). On a busy connection every call's task wakes the connection task as
//! it queues a frame, so each frame set went out in its own `writev` (~1.7 writes per relayed
//! 100-byte message), and h2 writes a large DATA frame in a write of its own (4 per 64 KiB message
//! at the usual 16 KiB frame size). [`Coalescing`] takes writes into its buffer and defers the
//! flush: it wakes its own task and returns `Pending`. A task that wakes itself is requeued at the
//! back of the run queue, so every call task already runnable queues its frames first, and h2
//! encodes them when it runs again. The flush goes through once the buffer holds
//! `FLUSH_AT_BYTES` or a deferral added nothing, so a flush is deferred only while it makes the
//! batch grow, always with a wake-up: nothing stalls, and on an idle runtime the task is polled
//! again at once.
//!
//! **Reads.** h2 reads 8–16 KiB at a time. While a connection carries bulk data (a read filled the
//! whole buffer h2 offered), reads go through a `READ_AHEAD_BYTES` buffer instead; the buffer is
//! dropped as soon as the traffic is small again, so idle and small-message connections hold none.
//! It is read into uninitialised (`poll_read_buf`): busy small-message connections go in and out
//! of bulk mode often, and zeroing 64 KiB each time cost more than the reads.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A flush goes through without deferral once this much is buffered.
const FLUSH_AT_BYTES: usize = 64 * 1024;
/// Writes are buffered up to this much; beyond it the buffer is written out first, and a single
/// write this large bypasses the buffer.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// A write buffer grown beyond this is given back after it drains.
const KEEP_WRITE_CAPACITY: usize = 2 * WRITE_BUFFER_BYTES;
/// Size of the read-ahead buffer used while a connection carries bulk data.
const READ_AHEAD_BYTES: usize = 64 * 1024;
/// A read-ahead read shorter than this means the bulk is over: the buffer is dropped once drained.
const BULK_READ_BYTES: usize = 16 * 1024;

/// A byte stream with deferred, batched writes and large reads while data is bulk.
pub(crate) struct Coalescing<T> {
    inner: T,
    /// Bytes accepted but not yet written: `write_buf[written..]`.
    write_buf: Vec<u8>,
    written: usize,
    /// Buffered length when the flush was last deferred: a second deferral needs more bytes.
    deferred_at: Option<usize>,
    /// Read-ahead bytes not yet handed on (no allocation unless in bulk mode).
    read_buf: BytesMut,
    /// The last direct read filled the reader's whole buffer: more is likely waiting.
    bulk: bool,
}

impl<T> Coalescing<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            write_buf: Vec::new(),
            written: 0,
            deferred_at: None,
            read_buf: BytesMut::new(),
            bulk: false,
        }
    }

    fn buffered(&self) -> usize {
        self.write_buf.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.write_buf.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.write_buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.write_buf.clear();
        self.written = 0;
        self.deferred_at = None;
        if self.write_buf.capacity() > KEEP_WRITE_CAPACITY {
            self.write_buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_buffer(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.buffered() + len > WRITE_BUFFER_BYTES {
            ready!(self.poll_drain(cx))?;
            if len >= WRITE_BUFFER_BYTES {
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
        }
        for buf in bufs {
            self.write_buf.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read_buf.is_empty() {
            if !this.bulk || buf.remaining() >= READ_AHEAD_BYTES {
                let before = buf.remaining();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let read = before - buf.remaining();
                this.bulk = read > 0 && buf.remaining() == 0;
                return Poll::Ready(Ok(()));
            }
            // Emptied, so this reuses the allocation if there is one, else makes one.
            this.read_buf.reserve(READ_AHEAD_BYTES);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.read_buf
            ))?;
            if read < BULK_READ_BYTES {
                this.bulk = false;
            }
        }
        let n = this.read_buf.len().min(buf.remaining());
        buf.put_slice(&this.read_buf[..n]);
        this.read_buf.advance(n);
        if this.read_buf.is_empty() && !this.bulk {
            // Small traffic again: an idle connection keeps no read buffer.
            this.read_buf = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_buffer(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_buffer(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let buffered = this.buffered();
        if buffered > 0 && buffered < FLUSH_AT_BYTES && this.deferred_at != Some(buffered) {
            this.deferred_at = Some(buffered);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Waker, Arc<CountingWaker>) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (Waker::from(Arc::clone(&counter)), counter)
    }

    #[tokio::test]
    async fn everything_written_arrives_in_order() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut io = Coalescing::new(client);
        let big: Vec<u8> = (0..3 * WRITE_BUFFER_BYTES).map(|i| i as u8).collect();
        io.write_all(b"hello").await.unwrap();
        io.flush().await.unwrap();
        io.write_all(&big).await.unwrap();
        io.write_all(b"bye").await.unwrap();
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..5], b"hello");
        assert_eq!(&got[5..5 + big.len()], &big[..]);
        assert_eq!(&got[5 + big.len()..], b"bye");
    }

    #[test]
    fn a_flush_is_deferred_only_while_the_batch_grows_and_always_wakes() {
        let (client, _server) = tokio::io::duplex(1 << 20);
        let mut io = Coalescing::new(client);
        let (waker, count) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut io = Pin::new(&mut io);
        assert!(matches!(
            io.as_mut().poll_write(&mut cx, b"abc"),
            Poll::Ready(Ok(3))
        ));
        assert!(io.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // More bytes arrived: deferred again.
        assert!(matches!(
            io.as_mut().poll_write(&mut cx, b"def"),
            Poll::Ready(Ok(3))
        ));
        assert!(io.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // Nothing new: the flush goes through.
        assert!(matches!(
            io.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.buffered(), 0);
    }

    #[test]
    fn a_full_batch_is_flushed_at_once() {
        let (client, _server) = tokio::io::duplex(1 << 20);
        let mut io = Coalescing::new(client);
        let (waker, count) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut io = Pin::new(&mut io);
        let chunk = vec![1u8; FLUSH_AT_BYTES];
        assert!(io.as_mut().poll_write(&mut cx, &chunk).is_ready());
        assert!(matches!(
            io.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn bulk_reads_use_the_read_ahead_buffer_and_small_ones_release_it() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut io = Coalescing::new(server);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&data).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 8192];
        while got.len() < data.len() {
            let n = io.read(&mut chunk).await.unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        assert!(io.bulk, "full reads switch to bulk mode");
        // A short message: read ahead, handed over, and the buffer given back.
        client.write_all(b"tail").await.unwrap();
        drop(client);
        let mut rest = Vec::new();
        loop {
            let n = io.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(rest, b"tail");
        assert!(io.read_buf.is_empty());
    }
}
