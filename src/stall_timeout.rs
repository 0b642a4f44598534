//! A socket wrapper that fails a write making no progress for too long.
//!
//! hyper has no write timeout: a viewer that stops reading leaves its connection blocked in a
//! write forever, pinning buffers and a connection slot. Wrapped, such a write fails after
//! `limit`, hyper drops the connection, and the response body (a live viewer, an upstream
//! download) is dropped with it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Set once the connection's write timed out, so whoever logs the request it was answering can
/// say `closed=send_timeout` (the server puts a clone in every request's extensions).
#[derive(Clone, Debug, Default)]
pub struct StallFlag(Arc<AtomicBool>);

impl StallFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `inner` with a bound on how long a write may stay pending.
pub struct StallTimeout<T> {
    inner: T,
    limit: Duration,
    /// Running while a write is pending; reset by any progress.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: StallFlag,
}

impl<T> StallTimeout<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            stalled: StallFlag::default(),
        }
    }

    /// The flag set when a write times out.
    pub fn flag(&self) -> StallFlag {
        self.stalled.clone()
    }

    /// The IO below.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Maps a write poll: progress resets the timer, pending arms it, expiry fails the write.
    fn watch<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    self.stalled.0.store(true, Ordering::Relaxed);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer stopped reading",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut w = StallTimeout::new(a, Duration::from_millis(100));
        let flag = w.flag();
        let big = vec![0u8; 64 * 1024];
        let err = w
            .write_all(&big)
            .await
            .expect_err("the duplex peer never reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(flag.is_set(), "whoever logs the request learns why");
    }

    #[tokio::test]
    async fn progress_resets_the_timer() {
        let (a, mut b) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 256];
            let mut total = 0;
            while total < 8 * 1024 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                total += b.read(&mut buf).await.expect("read");
            }
        });
        let mut w = StallTimeout::new(a, Duration::from_millis(200));
        w.write_all(&vec![1u8; 8 * 1024])
            .await
            .expect("a slow but steady reader is fine");
        reader.await.expect("reader");
    }
}
