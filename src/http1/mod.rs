//! streamgate's own HTTP/1.1 server for plain connections: the common requests (HTTP/1.1, no
//! body, no upgrade) are parsed, answered and kept alive here, with no per-connection task
//! hand-off, no buffers held while an answer streams (a live viewer's connection holds none
//! of its own for hours), and answers written with one vectored write per frame. The first
//! request it does not take (an upload, a WebSocket upgrade, HTTP/1.0, anything malformed) and
//! every one after it go to hyper, with the bytes already read put back in front of the
//! socket: hyper stays the reference for everything unusual, and its answers to bad input are
//! unchanged.
//!
//! What hyper's HTTP/1 server does is kept: `header_read_timeout` bounds the wait for a head
//! (an idle keep-alive connection too), a client's end of stream aborts the request in flight
//! (hyper's default, `half_close = false`), graceful shutdown closes idle connections at once
//! and the others after their answer, the drain deadline drops them, a panicking handler is a
//! 500 for its request only. Writes stay under `send_timeout` by the IO below
//! (`crate::stall_timeout`). One thing is better: a failing body's bytes already in memory are
//! written before the connection closes (hyper drops unflushed writes).

pub(crate) mod date;
pub(crate) mod framing;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::server::{ConnInfo, Handler};
use framing::{Framer, Framing, Outgoing};
use request::Head;

/// The connection's read buffer to begin with: a typical request head, with room.
const INITIAL_BUFFER: usize = 2048;

/// Largest request head read here; past it hyper reads it again and answers 431
/// (`crate::server::CONNECTION_BUFFER`, its `max_buf_size`).
const MAX_HEAD: usize = crate::server::CONNECTION_BUFFER;

/// An answer whose body may be larger than this is a stream (a download, a live stream): once
/// it waits, the connection gives back its buffers.
const SMALL_BODY: u64 = 64 * 1024;

/// Most body bytes queued for one write (hyper's write buffer held as much).
const BURST: usize = 64 * 1024;

/// A head buffer that grew past this is given back after its answer.
const KEEP_HEAD: usize = 4096;

/// An IO that can take back bytes read from it, so hyper reads them first (the bottom of the
/// stack is [`crate::proxy_protocol::Rewind`]).
pub(crate) trait Unread {
    fn unread(&mut self, bytes: Bytes);
}

/// How the own server left a connection.
pub(crate) enum Ended<IO> {
    /// Closed (or to be dropped): nothing more to do.
    Closed,
    /// hyper serves the rest; the bytes read ahead are back in the IO.
    Handoff(IO),
}

/// What serving needs besides the connection.
pub(crate) struct Serve<'a, H> {
    pub(crate) handler: &'a Arc<H>,
    pub(crate) header_read_timeout: Duration,
    /// Graceful shutdown: idle connections close, busy ones after their answer.
    pub(crate) shutdown: &'a CancellationToken,
    /// The drain deadline: drop the connection now.
    pub(crate) force_close: &'a CancellationToken,
}

/// Serves requests on `io` until it closes or a request is for hyper.
pub(crate) async fn serve<H, IO>(mut io: IO, info: &ConnInfo, s: Serve<'_, H>) -> Ended<IO>
where
    H: Handler,
    IO: AsyncRead + AsyncWrite + Unread + Unpin + Send,
{
    let mut buf = BytesMut::new();
    let mut out = Outgoing::default();
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        // A request head: what the buffer holds, or read (bounded by the header timeout).
        let (req, close) = loop {
            match request::parse(&mut buf) {
                Head::Request { req, close } => break (req, close),
                Head::Handoff => return handoff(io, buf),
                Head::Partial if buf.len() >= MAX_HEAD => return handoff(io, buf),
                Head::Partial => {}
            }
            // Idle between requests at shutdown: close now.
            if buf.is_empty() && s.shutdown.is_cancelled() {
                return Ended::Closed;
            }
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(if buf.is_empty() {
                    INITIAL_BUFFER
                } else {
                    buf.len()
                });
            }
            // Most heads are there already (pipelined, or sent while we answered the last).
            let read = match poll_fn(|cx| Poll::Ready(poll_read(&mut io, cx, &mut buf))).await {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    let deadline = tokio::time::Instant::now() + s.header_read_timeout;
                    let t = match timer.as_mut() {
                        Some(t) => {
                            t.as_mut().reset(deadline);
                            t
                        }
                        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    let idle = buf.is_empty();
                    tokio::select! {
                        biased;
                        r = poll_fn(|cx| poll_read(&mut io, cx, &mut buf)) => r,
                        _ = t.as_mut() => {
                            tracing::debug!(peer = %info.peer, "no request head within the header timeout");
                            return Ended::Closed;
                        }
                        _ = s.shutdown.cancelled(), if idle => return Ended::Closed,
                        _ = s.force_close.cancelled() => return Ended::Closed,
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return Ended::Closed,
                Ok(_) => {}
            }
        };

        // The handler, watching for the client to leave meanwhile.
        let method = req.method().clone();
        let call = AssertUnwindSafe(Box::pin(s.handler.call(req, info.clone()))).catch_unwind();
        let resp = tokio::select! {
            biased;
            r = call => r.unwrap_or_else(|_| {
                tracing::error!(peer = %info.peer, "request handler panicked");
                crate::server::panicked()
            }),
            () = poll_fn(|cx| watch(&mut io, cx, &mut buf)) => return Ended::Closed,
            _ = s.force_close.cancelled() => return Ended::Closed,
        };

        // The answer: its head, then its body as it comes.
        let (parts, body) = resp.into_parts();
        let exact = body.size_hint().exact();
        let (framing, close) = response::encode(
            &parts,
            &method,
            body.is_end_stream(),
            exact,
            close || s.shutdown.is_cancelled(),
            &mut out.head,
        );
        drop(parts);
        out.send_head();
        let mut send = Sending {
            body: (framing != Framing::None).then_some(body),
            framer: Framer::new(framing),
            failed: false,
            stream: exact.is_none_or(|n| n > SMALL_BODY),
        };
        if send.stream {
            // Hours of a live stream need no header timer: the next wait makes a new one.
            timer = None;
        }
        let sent = tokio::select! {
            biased;
            r = poll_fn(|cx| send.poll(cx, &mut io, &mut buf, &mut out)) => r,
            _ = s.force_close.cancelled() => return Ended::Closed,
        };
        if !sent || close {
            if sent {
                let _ = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
            }
            return Ended::Closed;
        }
        out.release_head(KEEP_HEAD);
    }
}

/// Puts the bytes read ahead back and lets hyper have the connection.
fn handoff<IO: Unread>(mut io: IO, buf: BytesMut) -> Ended<IO> {
    if !buf.is_empty() {
        io.unread(buf.freeze());
    }
    Ended::Handoff(io)
}

/// Reads what the socket has into `buf`'s spare room.
fn poll_read<IO: AsyncRead + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Pending while the client is there; ready when it has gone (end of stream or an error).
/// What it sends meanwhile (a pipelined request) is kept in `buf`, up to a head's limit.
fn watch<IO: AsyncRead + Unpin>(io: &mut IO, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<()> {
    // A small read on the stack: a connection streaming an answer holds no read buffer.
    let mut room = [0u8; 512];
    while buf.len() < MAX_HEAD {
        let mut rb = ReadBuf::new(&mut room);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(()),
            Poll::Ready(Ok(())) => buf.extend_from_slice(rb.filled()),
        }
    }
    Poll::Pending
}

/// An answer's body on its way out.
struct Sending {
    /// `None` once it is over (or has none to send).
    body: Option<Body>,
    framer: Framer,
    /// The body failed: what is queued goes out, then the connection closes.
    failed: bool,
    /// May run long: once it waits, the connection's buffers are given back.
    stream: bool,
}

impl Sending {
    /// Writes the answer; `true` once all of it is out and the connection may serve again.
    /// The body is asked for frames before anything queued is written, so the head and the
    /// frames that are ready (a live viewer's queued tags) go out in one write.
    fn poll<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
        buf: &mut BytesMut,
        out: &mut Outgoing,
    ) -> Poll<bool> {
        loop {
            let mut waiting = false;
            // Frames that are ready go out together, up to a burst.
            while !self.failed && out.has_room() && out.queued_bytes() < BURST {
                let Some(body) = self.body.as_mut() else {
                    break;
                };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            continue; // trailers are not sent
                        };
                        if data.is_empty() {
                            continue;
                        }
                        let last = self.body.as_ref().is_none_or(|b| b.is_end_stream());
                        if let Err(e) = self.framer.data(data, last, out) {
                            tracing::debug!(error = %e, "answer body does not fit its framing");
                            self.failed = true;
                        } else if last || self.framer.is_full() {
                            // Done with the body once its length is met (hyper does not poll
                            // it again either) or it said it is over (the last chunk went
                            // with it).
                            self.body = None;
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(error = %e, "answer body failed");
                        self.body = None;
                        self.failed = true;
                    }
                    Poll::Ready(None) => {
                        self.body = None;
                        if let Err(e) = self.framer.end(out) {
                            tracing::debug!(error = %e, "answer body ended short");
                            self.failed = true;
                        }
                    }
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                }
            }
            if !out.is_empty() {
                match out.poll_write(cx, io) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "writing an answer failed");
                        return Poll::Ready(false);
                    }
                    Poll::Pending => return self.wait(cx, io, buf, out),
                }
            }
            if waiting {
                return self.wait(cx, io, buf, out);
            }
            if self.failed {
                return Poll::Ready(false);
            }
            if self.body.is_none() {
                return Poll::Ready(true);
            }
        }
    }

    /// The body or the socket is not ready: watch the client meanwhile (its end of stream
    /// aborts the answer), and give back the buffers a long answer does not need.
    fn wait<IO: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
        buf: &mut BytesMut,
        out: &mut Outgoing,
    ) -> Poll<bool> {
        if self.stream {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
            if out.is_empty() {
                out.release_head(0);
            }
        }
        match watch(io, cx, buf) {
            Poll::Ready(()) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive): `Connection`,
/// `Upgrade`, for both servers and the transport.
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether any `name` header of `headers` lists `token`.
pub(crate) fn header_has_token(
    headers: &http::HeaderMap,
    name: http::HeaderName,
    token: &str,
) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| has_token(v.as_bytes(), token.as_bytes()))
}

impl<T> Unread for crate::proxy_protocol::Rewind<T> {
    fn unread(&mut self, bytes: Bytes) {
        self.put_back(bytes);
    }
}

impl<T: Unread> Unread for crate::stall_timeout::StallTimeout<T> {
    fn unread(&mut self, bytes: Bytes) {
        self.get_mut().unread(bytes);
    }
}

impl<T: Unread> Unread for crate::splice::SpliceIo<T> {
    fn unread(&mut self, bytes: Bytes) {
        self.get_mut().unread(bytes);
    }
}

#[cfg(test)]
mod sending_tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::io;

    /// A client socket that takes every write whole and counts the calls; never readable.
    #[derive(Default)]
    struct Counting {
        writes: usize,
        got: Vec<u8>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.got.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            let mut n = 0;
            for b in bufs {
                self.got.extend_from_slice(b);
                n += b.len();
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn the_head_and_the_frames_that_are_ready_go_out_in_one_write() {
        // A live viewer's body: three tags queued, then nothing yet.
        let tags = futures_util::stream::iter(["tag1", "tag2", "tag3"].map(|t| {
            Ok::<_, crate::body::BoxError>(http_body::Frame::data(Bytes::from_static(t.as_bytes())))
        }));
        let body = StreamBody::new(futures_util::StreamExt::chain(
            tags,
            futures_util::stream::pending(),
        ))
        .boxed();
        let mut send = Sending {
            body: Some(body),
            framer: Framer::new(Framing::Chunked),
            failed: false,
            stream: true,
        };
        let mut out = Outgoing::default();
        out.head.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        out.send_head();
        let mut io = Counting::default();
        let mut buf = BytesMut::new();
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        assert!(send.poll(&mut cx, &mut io, &mut buf, &mut out).is_pending());
        assert_eq!(io.writes, 1, "one writev for the head and the three tags");
        assert_eq!(
            io.got,
            b"HTTP/1.1 200 OK\r\n\r\n4\r\ntag1\r\n4\r\ntag2\r\n4\r\ntag3\r\n"
        );
        assert!(
            out.head.capacity() == 0,
            "a waiting stream holds no head buffer"
        );
    }
}
