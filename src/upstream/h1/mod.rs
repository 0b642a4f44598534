//! The transport's own HTTP/1.1 client connection: a TCP socket with one reused read buffer
//! and one reused head buffer, driven by whoever waits on it (no task, no channel). The
//! request future writes the head, streams the body and parses the answer's head; the answer
//! body ([`super::PooledBody`]) then reads the body off the same socket and checks the
//! connection back into the pool at its end. Owning the socket is also what lets a body hand
//! it to `splice(2)` ([`splice`]).
//!
//! - [`write`]: the request head and the request body's framing;
//! - [`parse`]: the answer head and its body framing (RFC 9112 §6.3);
//! - [`body`]: decoding the answer body (length, chunks, until close).

pub(crate) mod body;
pub(crate) mod parse;
pub(crate) mod splice;
pub(crate) mod write;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::body::BoxError;
use parse::{Head, Parsed};
use write::{UploadError, Uploader};

/// The first read of an answer's body, and the floor reads shrink back to.
const MIN_READ: usize = 8 * 1024;
/// The largest read: bulk bodies come in pieces this big when the socket has them (hyper read
/// up to ~400 KiB at a time).
const MAX_READ: usize = 512 * 1024;

/// Most read-buffer capacity an idle connection keeps.
const MAX_IDLE_BUF: usize = 64 * 1024;

/// One HTTP/1.1 connection to a node.
pub(crate) struct Conn {
    pub(crate) io: TcpStream,
    /// Bytes read from the node and not yet consumed (the rest of a head, body bytes).
    pub(crate) rbuf: BytesMut,
    /// The request head, written here first (kept for the next request).
    pub(crate) wbuf: Vec<u8>,
    /// How much the next read asks for: doubles while reads fill it, halves when they do
    /// not come close.
    read_size: usize,
}

/// How a request on a connection failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The head could not be written: nothing reached the node, the request is still ours.
    Unsent(io::Error),
    /// Reading or writing failed after the head went out (or the node closed).
    Io(io::Error),
    /// The answer head was not valid HTTP/1.
    Parse(String),
    /// The viewer's request body failed.
    Client(BoxError),
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Self {
        Self {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::with_capacity(1024),
            read_size: MIN_READ,
        }
    }

    /// Before the connection waits idle: a read buffer grown by a bulk body is let go (its
    /// memory is freed once the body's last pieces are), a small one is kept for the next
    /// answer.
    pub(crate) fn park(&mut self) {
        if self.rbuf.capacity() > MAX_IDLE_BUF {
            self.rbuf = BytesMut::new();
        }
    }

    /// Whether an idle connection can still take a request: nothing buffered, and the
    /// socket has neither an end of stream nor stray bytes waiting. Without a readiness event
    /// since the last read drained the socket, that is known without a system call: reads clear
    /// the readiness when they come back short ([`Self::poll_fill`]), and a node's bytes or
    /// its close would have set it again. Only a socket with an event pending is probed.
    pub(crate) fn is_clean(&self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if self.io.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        matches!(self.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what the socket has into the read buffer; `Ok(0)` is the node's end of stream.
    /// Through tokio's `AsyncRead`, which clears the socket's readiness when a read comes back
    /// short of the room it had: the socket is then drained, and [`Self::is_clean`] needs no
    /// probe.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_size {
            self.rbuf.reserve(self.read_size);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            std::pin::Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        if n >= self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
        Poll::Ready(Ok(n))
    }

    /// Reads at most `max` bytes into the read buffer (framing around spliced data: as
    /// little of the body as possible passes through memory); `Ok(0)` is the end of stream.
    pub(crate) fn poll_fill_max(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let mut small = [0u8; 256];
        let room = max.min(small.len());
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            match self.io.try_read(&mut small[..room]) {
                Ok(n) => {
                    self.rbuf.extend_from_slice(&small[..n]);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads until a final answer head is in (interim 1xx answers skipped) and consumes it.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<Head, SendError>> {
        loop {
            if !self.rbuf.is_empty() {
                match parse::parse(&self.rbuf, head_request).map_err(SendError::Parse)? {
                    Parsed::Final(n, head) => {
                        self.rbuf.advance(n);
                        return Poll::Ready(Ok(head));
                    }
                    Parsed::Interim(n) => {
                        self.rbuf.advance(n);
                        continue;
                    }
                    Parsed::Partial => {}
                }
            }
            if ready!(self.poll_fill(cx)).map_err(SendError::Io)? == 0 {
                return Poll::Ready(Err(SendError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before message completed",
                ))));
            }
        }
    }

    /// Sends the request whose head is in `wbuf`, with the body in `upload` if any, and
    /// returns the answer's head. The body goes out while the answer is awaited: a node may
    /// answer before taking all of it (the rest is then the answer body's to drive).
    pub(crate) async fn send(
        &mut self,
        head_request: bool,
        upload: &mut Option<Uploader>,
    ) -> Result<Head, SendError> {
        self.io
            .write_all(&self.wbuf)
            .await
            .map_err(SendError::Unsent)?;
        poll_fn(|cx| {
            if let Some(up) = upload.as_mut() {
                if !up.is_complete() {
                    match up.poll_send(cx, &mut self.io) {
                        Poll::Ready(Ok(())) | Poll::Pending => {}
                        Poll::Ready(Err(UploadError::Client(e))) => {
                            return Poll::Ready(Err(SendError::Client(e)))
                        }
                        Poll::Ready(Err(UploadError::Io(e))) => {
                            return Poll::Ready(Err(SendError::Io(e)))
                        }
                    }
                }
            }
            self.poll_head(cx, head_request)
        })
        .await
    }
}

/// A new TCP connection to `authority` (`host:port`): each address it resolves to in turn,
/// each attempt bounded by `timeout`; TCP_NODELAY (the first bytes of a live stream must not
/// wait on Nagle) and keepalive set.
pub(crate) async fn connect(
    authority: &str,
    timeout: Duration,
    keepalive: Option<Duration>,
) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<SocketAddr> = match authority.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => tokio::net::lookup_host(authority)
            .await
            .map_err(ConnectError::Io)?
            .collect(),
    };
    let mut last = ConnectError::Io(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{authority} resolves to no address"),
    ));
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => last = ConnectError::TimedOut,
            Ok(Err(e)) => last = ConnectError::Io(e),
            Ok(Ok(s)) => {
                s.set_nodelay(true).map_err(ConnectError::Io)?;
                if let Some(d) = keepalive {
                    let ka = socket2::TcpKeepalive::new().with_time(d);
                    socket2::SockRef::from(&s)
                        .set_tcp_keepalive(&ka)
                        .map_err(ConnectError::Io)?;
                }
                return Ok(s);
            }
        }
    }
    Err(last)
}

/// Why a connection could not be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    TimedOut,
    Io(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (Conn, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (Conn::new(c.expect("connect")), s.expect("accept").0)
    }

    /// Polls `is_clean` until it says `want` (a readiness event takes the driver a moment).
    async fn until_clean_is(conn: &Conn, want: bool) {
        let start = std::time::Instant::now();
        while conn.is_clean() != want {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "is_clean never {want}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A read that drains the socket leaves no readiness behind, so checking an idle
    /// connection costs no system call; stray bytes or the node's close are still seen.
    #[tokio::test]
    async fn a_drained_connection_is_clean_without_a_probe_and_a_closed_one_is_not() {
        let (mut conn, mut node) = pair().await;
        node.write_all(b"HTTP/1.1 200 OK\r\n").await.expect("write");
        let n = poll_fn(|cx| conn.poll_fill(cx)).await.expect("fill");
        assert_eq!(n, 17);
        conn.rbuf.clear();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            conn.io.poll_read_ready(&mut cx).is_pending(),
            "a short read cleared the readiness"
        );
        assert!(conn.is_clean());
        // Bytes the node sends while the connection is idle make it unusable.
        node.write_all(b"x").await.expect("write");
        until_clean_is(&conn, false).await;

        let (conn, node) = pair().await;
        assert!(conn.is_clean());
        drop(node);
        until_clean_is(&conn, false).await;
    }
}
