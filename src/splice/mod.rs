//! Zero-copy bodies: a node's answer moves node socket → pipe → viewer socket with
//! `splice(2)`, so its bytes never enter user space. Only plain HTTP/1.1 on both legs can take
//! this path (no TLS, no HTTP/2, no cache, no transformation); everything else keeps the
//! copying path, which stays the reference behaviour.
//!
//! The contract between the two legs is [`SpliceSource`]: the transport's answer body that can
//! move its bytes into a pipe, framing (Content-Length, chunked) handled on its side. The
//! viewer's side is [`body::SpliceBody`] (fills the pipe, yields markers) and
//! [`link::SpliceIo`] (the connection's IO, which splices what the markers stand for); pipes
//! come from a bounded pool ([`pipe::Pipes`]). Whether an answer takes this path is decided
//! here, in [`offer`] (the request's side) and [`answer`] (the node's answer), and every
//! fallback is counted by reason.

pub mod body;
pub mod link;
pub mod pipe;
#[cfg(test)]
mod tests;

pub use link::{Link, SpliceIo};
pub use pipe::{Fallback, Pipes};

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::task::{ready, Context, Poll};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body_util::{BodyExt, Either};
use rustix::pipe::{splice, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::body::Body;
use crate::upstream::{DeferFailureBody, IdleTimeoutBody, PooledBody};

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

/// A request that may have its answer spliced: its connection's link and the pool.
#[derive(Debug)]
pub struct Offer {
    link: Link,
    pipes: Arc<Pipes>,
    /// On an `hls_session` route, the request's path: a playlist answer is rewritten.
    playlist_path: Option<String>,
}

/// What the request side knows, for [`offer`].
pub struct Request<'a> {
    /// The pool (`None`: `[server] splice = false`).
    pub pipes: Option<&'a Arc<Pipes>>,
    /// The connection's [`Link`]: only a plain HTTP/1.1 connection has one.
    pub link: Option<&'a Link>,
    /// The viewer's connection is TLS.
    pub secure: bool,
    pub version: Version,
    pub method: &'a Method,
    /// A `cache = ...` route answers it.
    pub cached: bool,
    /// An `hls_session` route: playlists are rewritten per viewer (the request's path).
    pub playlist_path: Option<&'a str>,
}

/// The request's side of the decision: a plain HTTP/1.1 viewer connection, a GET, no cache.
/// `None` takes the copying path (counted, unless splicing is off).
pub fn offer(r: Request<'_>) -> Option<Offer> {
    let pipes = r.pipes?;
    let why = match r.link {
        _ if r.secure => Fallback::Tls,
        _ if r.version >= Version::HTTP_2 => Fallback::Http2,
        _ if r.method != Method::GET => Fallback::Method,
        _ if r.cached => Fallback::Cache,
        None => Fallback::Http2,
        Some(link) => {
            return Some(Offer {
                link: link.clone(),
                pipes: pipes.clone(),
                playlist_path: r.playlist_path.map(str::to_string),
            })
        }
    };
    pipes.stats.fallback(why);
    None
}

/// The answer's side: the node's `body` as a spliced body when the answer has one, is not
/// rewritten, the transport can hand its connection over and a pipe is free; otherwise the
/// copying path (today's [`IdleTimeoutBody`]), counted by reason. Either way the answer's
/// edge is a [`DeferFailureBody`]: bytes already in memory reach the viewer before a node
/// failure right behind them.
pub fn answer<B>(
    offer: Option<Offer>,
    head: &http::response::Parts,
    body: B,
    idle: Duration,
) -> Body
where
    B: Spliceable,
    B::Error: Into<crate::body::BoxError>,
{
    DeferFailureBody::new(choose(offer, head, body, idle)).boxed()
}

/// The node's answer as [`answer`] chose to move it: copied, spliced, or (never in practice)
/// failed.
type Chosen<B> = Either<IdleTimeoutBody<B>, Either<body::SpliceBody, Body>>;

/// [`answer`]'s choice, before its edge.
fn choose<B>(
    offer: Option<Offer>,
    head: &http::response::Parts,
    body: B,
    idle: Duration,
) -> Chosen<B>
where
    B: Spliceable,
    B::Error: Into<crate::body::BoxError>,
{
    let copy = |b: B| Either::Left(IdleTimeoutBody::new(b, idle));
    let Some(offer) = offer else {
        return copy(body);
    };
    let stats = &offer.pipes.stats;
    let why = if !has_body(head) || http_body::Body::is_end_stream(&body) {
        Fallback::NoBody
    } else if offer
        .playlist_path
        .as_deref()
        .is_some_and(|p| crate::proxy::playlist::is_playlist(p, &head.headers))
    {
        Fallback::Transform
    } else if offer.link.busy() {
        Fallback::Busy
    } else {
        // The pipe first: a source taken cannot go back to the copying path.
        let Some(lease) = offer.pipes.acquire() else {
            stats.fallback(Fallback::Pipes);
            return copy(body);
        };
        match body.into_splice() {
            Err(body) => {
                stats.fallback(Fallback::Source);
                return copy(body);
            }
            Ok(source) => match body::SpliceBody::new(source, offer.link, lease, idle) {
                Ok(b) => return Either::Right(Either::Left(b)),
                // Unreachable in practice (checked `busy` above, same task): fail the body
                // rather than guess.
                Err(_) => {
                    let failed = futures_util::stream::once(async {
                        Err::<http_body::Frame<Bytes>, crate::body::BoxError>(
                            "the connection's pipe was taken".into(),
                        )
                    });
                    return Either::Right(Either::Right(
                        http_body_util::StreamBody::new(failed).boxed(),
                    ));
                }
            },
        }
    };
    stats.fallback(why);
    copy(body)
}

/// A node's answer body that may hand itself over as a [`SpliceSource`] (the transport's
/// [`PooledBody`]; a test body in this module's tests).
pub trait Spliceable:
    http_body::Body<Data = Bytes> + Unpin + Send + Sync + Sized + 'static
{
    /// The body as a splice source, or itself back for the copying path.
    #[allow(clippy::result_large_err)]
    fn into_splice(self) -> Result<Box<dyn SpliceSource>, Self>;
}

impl Spliceable for PooledBody {
    fn into_splice(self) -> Result<Box<dyn SpliceSource>, Self> {
        PooledBody::into_splice(self)
    }
}

/// Whether an answer's head announces a body (1xx, 204, 304 and `Content-Length: 0` do not).
fn has_body(head: &http::response::Parts) -> bool {
    let s = head.status;
    if s.is_informational() || s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED {
        return false;
    }
    head.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() != "0")
}

#[cfg(test)]
mod contract_tests {
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
