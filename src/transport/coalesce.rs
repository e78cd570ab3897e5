//! Write coalescing: batch the HTTP/2 frames of many calls into one syscall.
//!
//! An h2 connection task flushes whenever it runs, and tokio runs a task that was just woken next
//! (the LIFO slot). On a busy connection every call's task wakes the connection task as it queues a
//! frame, so each few-byte frame set went out in its own `writev`: a proxy that relays 100-byte
//! calls spent a third of its CPU in the kernel, with ~13 writes per read.
//!
//! [`Coalescing`] defers a small write once: it wakes its own task and returns `Pending`. A task
//! that wakes itself is requeued at the back of the run queue, so every call task already runnable
//! gets to queue its frames first; when the connection task runs again, h2 encodes all of them into
//! its buffer and the write goes through. One deferral per write, always with a wake-up, so nothing
//! stalls; on an idle runtime the task is polled again at once. Large writes (bulk DATA) gain
//! nothing from batching and pass straight through.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes at least this large are not deferred: the syscall is already amortised over the bytes.
const DEFER_BELOW_BYTES: usize = 16 * 1024;

/// A byte stream whose small writes are deferred once to the back of the run queue.
pub struct Coalescing<T> {
    inner: T,
    /// The next small write has been deferred once and goes through.
    deferred: bool,
}

impl<T> Coalescing<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            deferred: false,
        }
    }

    /// Whether a write of `len` bytes should yield first; arms the next one to go through.
    fn defer(&mut self, len: usize, cx: &mut Context<'_>) -> bool {
        if self.deferred || len >= DEFER_BELOW_BYTES || len == 0 {
            self.deferred = false;
            return false;
        }
        self.deferred = true;
        cx.waker().wake_by_ref();
        true
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.defer(buf.len(), cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.defer(len, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn small_writes_are_deferred_once_and_then_written() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut io = Coalescing::new(client);
        // `write_all` re-polls after the self-wake: the bytes arrive, nothing stalls.
        io.write_all(b"hello").await.unwrap();
        io.write_all(&[7u8; DEFER_BELOW_BYTES]).await.unwrap();
        io.flush().await.unwrap();
        drop(io);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut got)
            .await
            .unwrap();
        assert_eq!(&got[..5], b"hello");
        assert_eq!(got.len(), 5 + DEFER_BELOW_BYTES);
    }

    #[test]
    fn a_deferral_wakes_the_task_and_the_next_attempt_goes_through() {
        let (client, _server) = tokio::io::duplex(1 << 16);
        let mut io = Coalescing::new(client);
        let waker = futures_test_waker::counting();
        let mut cx = Context::from_waker(&waker.0);
        let first = Pin::new(&mut io).poll_write(&mut cx, b"abc");
        assert!(first.is_pending());
        assert_eq!(waker.1.load(std::sync::atomic::Ordering::SeqCst), 1);
        let second = Pin::new(&mut io).poll_write(&mut cx, b"abc");
        assert!(matches!(second, Poll::Ready(Ok(3))));
    }

    /// A waker that counts wake-ups.
    mod futures_test_waker {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Wake, Waker};

        struct Counter(Arc<AtomicUsize>);
        impl Wake for Counter {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }

        pub fn counting() -> (Waker, Arc<AtomicUsize>) {
            let count = Arc::new(AtomicUsize::new(0));
            (Waker::from(Arc::new(Counter(Arc::clone(&count)))), count)
        }
    }
}
