//! Zero-copy bodies: a node's answer moves node socket → pipe → viewer socket with
//! `splice(2)`, so its bytes never enter user space. Only plain HTTP/1.1 on both legs can take
//! this path (no TLS, no HTTP/2, no cache, no transformation); everything else keeps the
//! copying path, which stays the reference behaviour.
//!
//! The contract between the two legs is [`SpliceSource`]: the transport's answer body that can
//! move its bytes into a pipe, framing (Content-Length, chunked) handled on its side.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use rustix::pipe::{splice, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// One step of a [`SpliceSource`].
#[derive(Debug)]
pub enum Step {
    /// This many body bytes were moved into the pipe.
    Spliced(usize),
    /// Body bytes that were already in memory (read with the answer's head, or a chunk's
    /// framing read around them); they go to the viewer before anything spliced after them.
    Data(Bytes),
    /// The body is complete; its connection has gone back to the pool (or closed).
    End,
}

/// A node's answer body that can move its bytes into a pipe without copying them.
pub trait SpliceSource: Send + Unpin + 'static {
    /// Moves at most `max` body bytes into `pipe`, whose free room the caller guarantees is at
    /// least `max` (so a would-block can only be the socket's). A node that closes before the
    /// body is complete is an error (`UnexpectedEof`), never an early `End`.
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        pipe: BorrowedFd<'_>,
        max: usize,
    ) -> Poll<io::Result<Step>>;

    /// Body bytes still to come, when the framing says (Content-Length); `None` for chunked.
    fn remaining(&self) -> Option<u64>;
}

/// Moves up to `max` bytes from `sock` into `pipe` once the socket is readable. `Ok(0)` is the
/// node's end of stream. The pipe must have room for `max` bytes: a full pipe would look like
/// an empty socket and clear its readiness.
pub fn poll_socket_to_pipe(
    sock: &TcpStream,
    cx: &mut Context<'_>,
    pipe: BorrowedFd<'_>,
    max: usize,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(sock.poll_read_ready(cx))?;
        let moved = sock.try_io(Interest::READABLE, || {
            splice(
                sock.as_fd(),
                None,
                pipe,
                None,
                max,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            )
            .map_err(io::Error::from)
        });
        match moved {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn socket_bytes_reach_the_pipe_unchanged() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"hello, pipe").await.unwrap();
        });
        let sock = TcpStream::connect(addr).await.unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut got = 0;
        while got < 11 {
            let n = std::future::poll_fn(|cx| poll_socket_to_pipe(&sock, cx, w.as_fd(), 64))
                .await
                .unwrap();
            assert!(n > 0, "end of stream before the bytes");
            got += n;
        }
        writer.await.unwrap();
        let mut buf = [0u8; 32];
        let n = rustix::io::read(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello, pipe");
    }
}
