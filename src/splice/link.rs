//! The viewer side: the HTTP server owns the viewer's socket and writes what the body yields,
//! so a spliced body cannot write the socket itself. It yields *markers* instead: frames that
//! point into [`MARK`], a private static region, one byte per body byte now in the connection's
//! pipe. The own HTTP/1.1 server (`crate::http1::framing`) and hyper's, on an IO that writes
//! vectored, hand each frame's `Bytes` as-is to `poll_write_vectored` as its own slice
//! (hyper queues them); [`SpliceIo`] recognises a slice that
//! points into `MARK` (a pointer range check) and, instead of writing those zeros, splices as
//! many bytes from the pipe to the socket, reporting them written. Ordinary slices (the head,
//! chunk framing, `Step::Data`) are written as they are.
//!
//! The body and the IO share the connection's [`Link`], which holds the pipe while a body
//! uses it and counts the bytes in it. Zeros can never reach the wire: a marker with fewer
//! bytes in the pipe than it claims is an IO error, and a plain `poll_write` while the pipe
//! holds body bytes (hyper flattening frames into its own buffer: vectored writes off) fails
//! the connection too.

use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use rustix::pipe::{splice, SpliceFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::pipe::Lease;

/// Longest marker: at least any pipe's capacity (the kernel's `fs.pipe-max-size` default is
/// 1 MiB; a larger granted pipe is simply filled only this far). In `.bss`: it costs no file
/// size and its pages are never written, so never backed by memory of their own.
pub const MARK_LEN: usize = 1 << 20;

static MARK: [u8; MARK_LEN] = [0; MARK_LEN];

/// A frame standing for `n` bytes now in the connection's pipe (`n <= MARK_LEN`).
pub fn marker(n: usize) -> bytes::Bytes {
    bytes::Bytes::from_static(&MARK[..n.min(MARK_LEN)])
}

/// Whether `buf` is (part of) a marker.
fn is_mark(buf: &[u8]) -> bool {
    !buf.is_empty() && MARK.as_ptr_range().contains(&buf.as_ptr())
}

/// What a connection's spliced body and its IO share (see the module doc). One per plain
/// HTTP/1.1 connection, in every request's extensions.
#[derive(Clone, Debug, Default)]
pub struct Link(Arc<Mutex<State>>);

#[derive(Debug, Default)]
pub(super) struct State {
    /// The pipe, while a body uses it or bytes of one are still in it.
    pub(super) lease: Option<Lease>,
    /// A body holds the pipe (so the IO must not give it back when it drains it).
    pub(super) body: bool,
    /// The body, waiting for the IO to drain the pipe.
    pub(super) waker: Option<Waker>,
    /// The connection wrote without vectored writes while the pipe held body bytes: hyper
    /// copies frames, so markers would go out as zeros. The connection has failed.
    pub(super) flattened: bool,
}

impl Link {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an earlier body's bytes are still in the connection's pipe (a pipelined
    /// request's answer then takes the copying path; hyper writes it after them).
    pub fn busy(&self) -> bool {
        self.lock().lease.is_some()
    }
}

/// The socket under a connection's IO wrappers, for `splice(2)`.
pub trait Socket {
    fn socket(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Socket for crate::proxy_protocol::Rewind<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// A plain connection's IO that turns markers into `splice(2)` from the pipe to the socket.
/// It sits below [`crate::stall_timeout::StallTimeout`], so a viewer that stops reading fails
/// spliced writes after `send_timeout` as it fails copied ones.
pub struct SpliceIo<T> {
    inner: T,
    link: Link,
}

impl<T> SpliceIo<T> {
    pub fn new(inner: T, link: Link) -> Self {
        Self { inner, link }
    }

    /// The IO below.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: Socket> SpliceIo<T> {
    /// Moves up to `len` bytes of the pipe to the socket, for a marker of `len` bytes.
    fn poll_splice_out(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        let sock = self.inner.socket();
        let mut st = self.link.lock();
        let Some(lease) = st.lease.as_mut() else {
            return Poll::Ready(Err(io::Error::other("a spliced frame without a pipe")));
        };
        if lease.held < len {
            return Poll::Ready(Err(io::Error::other(format!(
                "a spliced frame of {len} bytes with {} in the pipe",
                lease.held
            ))));
        }
        let Some(pipe) = lease.pipe() else {
            return Poll::Ready(Err(io::Error::other("a spliced frame without a pipe")));
        };
        let moved = loop {
            ready!(sock.poll_write_ready(cx))?;
            let r = sock.try_io(Interest::WRITABLE, || {
                splice(
                    pipe.read_end(),
                    None,
                    sock.as_fd(),
                    None,
                    len,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            });
            match r {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        lease.held -= moved;
        lease
            .stats()
            .bytes
            .fetch_add(moved as u64, std::sync::atomic::Ordering::Relaxed);
        if lease.held == 0 {
            if let Some(w) = st.waker.take() {
                w.wake();
            }
            if !st.body {
                // The body is over and its last bytes are out: the pipe goes back, empty.
                st.lease = None;
            }
        }
        Poll::Ready(Ok(moved))
    }

    /// Fails the connection if a flattened write could carry a marker's zeros.
    fn check_plain_write(&self) -> io::Result<()> {
        let mut st = self.link.lock();
        if st.lease.as_ref().is_some_and(|l| l.held > 0) {
            st.flattened = true;
            if let Some(w) = st.waker.take() {
                w.wake();
            }
            return Err(io::Error::other(
                "spliced body on a connection without vectored writes; closed",
            ));
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SpliceIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Socket + Unpin> AsyncWrite for SpliceIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_mark(buf) {
            return this.poll_splice_out(cx, buf.len());
        }
        this.check_plain_write()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match bufs.iter().position(|b| is_mark(b)) {
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            // What comes before the marker goes first; hyper offers the marker again.
            Some(i) if i > 0 => Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..i]),
            Some(_) => this.poll_splice_out(cx, bufs[0].len()),
        }
    }

    /// Always: hyper must queue frames (its "Queue" write strategy), never copy them.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
