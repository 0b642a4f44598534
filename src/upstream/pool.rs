//! The transport's HTTP/1 connection pool, with one promise: **when a node's answer has ended
//! for the reader, its connection is already idle in the pool.** The answer body
//! ([`PooledBody`]) reads the node's socket itself and checks the connection in before it
//! hands on the body's last bytes, so whoever sees the end and sends again finds it (no
//! second connection racing the first back).
//!
//! A connection ([`super::h1::Conn`]) is checked out, the request goes out on it from the
//! request future, the answer body reads the rest: no per-connection task, no channel.
//!
//! Kept deliberately small: HTTP/1.1 only, one idle list per node authority (newest first
//! out), `max_idle` per node, idle connections closed after `idle_timeout` (or as soon as the
//! node closes them, seen at checkout or by the sweep) by one background sweep that runs only
//! while something is idle.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::error::ErrorKind;
use super::h1::body::{Decoded, Decoder};
use super::h1::write::{self, ReqFraming, Uploader};
use super::h1::{self as h1, Conn, ConnectError, SendError};
use crate::body::Body;

/// How new connections are made.
#[derive(Debug, Clone, Copy)]
pub(super) struct Connector {
    /// Bounds each TCP connect attempt.
    pub timeout: Duration,
    /// TCP keepalive idle time, if any.
    pub keepalive: Option<Duration>,
}

impl Default for Connector {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            keepalive: None,
        }
    }
}

/// Idle connections to nodes, by node authority (`host:port`).
#[derive(Clone)]
pub(super) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// Idle connections per authority, oldest first.
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    /// At most this many idle connections per authority; the oldest goes first.
    max_idle: usize,
    /// An idle connection older than this is closed.
    idle_timeout: Duration,
    /// The sweep task is running (one at a time, only while something is idle).
    sweeping: AtomicBool,
}

/// How long one request's steps took, for the transport's latency metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Timing {
    /// Opening a new connection (TCP connect); `None` on a pooled one.
    pub connect: Option<Duration>,
    /// From writing the request to the response headers.
    pub headers: Option<Duration>,
}

/// Where a request's connection may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checkout {
    /// An idle pooled connection if one is clean, else a new one.
    Pooled,
    /// A new connection only: the retry of a request whose pooled connection the node had
    /// closed (the other idle ones may well be stale too, closed by the same node restart or
    /// idle timeout, without showing it yet).
    FreshOnly,
}

/// One idle connection.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// A connection lent to one answer, on its way back to the pool.
pub(crate) struct Lent {
    pub(crate) conn: Conn,
    key: String,
    pool: Weak<Inner>,
}

impl Lent {
    /// Back into the pool, if the pool is still there.
    pub(crate) fn check_in(self) {
        if let Some(pool) = self.pool.upgrade() {
            Inner::put(&pool, self.key, self.conn);
        }
    }
}

impl Pool {
    pub(super) fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                connector,
                idle: Mutex::new(HashMap::new()),
                max_idle,
                idle_timeout,
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Idle connections to `authority` right now (for tests and listings).
    #[cfg(test)]
    pub(super) fn idle_count(&self, authority: &str) -> usize {
        self.inner
            .idle
            .lock()
            .map(|m| m.get(authority).map_or(0, Vec::len))
            .unwrap_or(0)
    }

    /// Sends `req` on an idle connection to its authority, or a new one, and returns the
    /// answer once its head is in.
    ///
    /// A request that a pooled connection turned out unable to take (closed by the node while
    /// idle, so that the head could not be written) goes out again on a new connection: it
    /// was never sent, so this is safe for any method.
    pub(super) async fn request(
        &self,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, ErrorKind> {
        self.request_timed(req, &mut Timing::default(), Checkout::Pooled)
            .await
    }

    /// [`Pool::request`] on a connection from where `checkout` says, noting in `timing` how
    /// long a new connection took to open and how long the answer's head took once the
    /// request was being written.
    pub(super) async fn request_timed(
        &self,
        mut req: Request<Body>,
        timing: &mut Timing,
        checkout: Checkout,
    ) -> Result<Response<PooledBody>, ErrorKind> {
        let key = prepare(&mut req)?;
        let head_request = req.method() == Method::HEAD;
        let (parts, body) = req.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let framing = write::framing(&parts.headers, &body).map_err(ErrorKind::parse)?;
        let mut upload = (framing != ReqFraming::None).then(|| Uploader::new(body, framing));
        loop {
            let pooled = match checkout {
                Checkout::Pooled => self.checkout(&key),
                Checkout::FreshOnly => None,
            };
            let (mut conn, reused) = match pooled {
                Some(c) => (c, true),
                None => {
                    let t = Instant::now();
                    let io = h1::connect(
                        &key,
                        self.inner.connector.timeout,
                        self.inner.connector.keepalive,
                    )
                    .await
                    .map_err(|e| match e {
                        ConnectError::TimedOut => ErrorKind::ConnectTimeout,
                        ConnectError::Io(e) => ErrorKind::connect(e),
                    })?;
                    timing.connect = Some(t.elapsed());
                    (Conn::new(io), false)
                }
            };
            write::encode_head(
                &parts.method,
                target,
                &parts.headers,
                framing,
                &mut conn.wbuf,
            );
            let sent = Instant::now();
            let head = match conn.send(head_request, &mut upload).await {
                Ok(head) => head,
                Err(SendError::Unsent(_)) if reused => continue,
                Err(SendError::Unsent(e) | SendError::Io(e)) => return Err(ErrorKind::io(e)),
                Err(SendError::Parse(e)) => return Err(ErrorKind::parse(e)),
                Err(SendError::Client(e)) => return Err(ErrorKind::ClientBody(e)),
            };
            timing.headers = Some(sent.elapsed());
            let decoder = Decoder::new(head.framing);
            let upload = upload.filter(|u| !u.is_complete());
            let lent = Lent {
                conn,
                key,
                pool: Arc::downgrade(&self.inner),
            };
            let mut body = PooledBody {
                lent: Some(lent),
                decoder,
                reusable: head.reusable,
                upload,
            };
            if body.decoder.is_done() {
                // No body to read (304, 204, HEAD, a zero length): the connection is idle
                // again before the answer is handed on.
                body.finish();
            }
            let mut resp = Response::new(body);
            *resp.status_mut() = head.status;
            *resp.version_mut() = head.version;
            *resp.headers_mut() = head.headers;
            return Ok(resp);
        }
    }

    /// The newest idle connection to `key` that can still take a request; the ones found
    /// closed or expired on the way are dropped (closed).
    fn checkout(&self, key: &str) -> Option<Conn> {
        let mut map = self.inner.idle.lock().ok()?;
        let list = map.get_mut(key)?;
        let mut found = None;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < self.inner.idle_timeout && idle.conn.is_clean() {
                found = Some(idle.conn);
                break;
            }
        }
        if list.is_empty() {
            map.remove(key);
        }
        found
    }
}

impl Inner {
    fn put(this: &Arc<Self>, key: String, mut conn: Conn) {
        if this.max_idle == 0 {
            return;
        }
        conn.park();
        let Ok(mut map) = this.idle.lock() else {
            return;
        };
        let list = map.entry(key).or_default();
        if list.len() >= this.max_idle {
            list.remove(0); // the oldest goes; dropping it closes it
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
        drop(map);
        Self::start_sweep(this);
    }

    /// Closes idle connections past `idle_timeout` (or already closed by the node), every
    /// half timeout, until nothing is idle.
    fn start_sweep(this: &Arc<Self>) {
        if this.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            this.sweeping.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(this);
        let every = (this.idle_timeout / 2).max(Duration::from_millis(10));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = weak.upgrade() else { return };
                let Ok(mut map) = pool.idle.lock() else {
                    return;
                };
                map.retain(|_, list| {
                    list.retain(|i| i.since.elapsed() < pool.idle_timeout && i.conn.is_clean());
                    !list.is_empty()
                });
                if map.is_empty() {
                    // Cleared under the lock: a `put` after this starts a new sweep.
                    pool.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }
}

/// Checks the request is for an `http://` node, sets `Host` if the caller set none, and
/// returns the pool key (`host:port`, the port defaulted).
fn prepare(req: &mut Request<Body>) -> Result<String, ErrorKind> {
    let uri = req.uri();
    if uri.scheme_str() != Some("http") {
        return Err(ErrorKind::Other(
            format!("only http:// nodes are supported, not {uri}").into(),
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ErrorKind::Other(format!("no host in {uri}").into()))?;
    let key = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!("{}:80", authority.as_str()),
    };
    if !req.headers().contains_key(header::HOST) {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| ErrorKind::Other(format!("bad host: {e}").into()))?;
        req.headers_mut().insert(header::HOST, host);
    }
    Ok(key)
}

/// A node's answer body, read off the connection by whoever polls it; the connection goes
/// back to the pool before the body's end is reported (with the last bytes, when the end is
/// already known then).
pub struct PooledBody {
    /// The connection, until the body is complete (then checked in or closed) or failed.
    lent: Option<Lent>,
    /// Where the body is in its framing.
    decoder: Decoder,
    /// The answer allows another request on the connection once it is read.
    reusable: bool,
    /// The rest of the request body, when the node answered before taking all of it: written
    /// as the answer is read; the connection is reusable only if it all went out.
    upload: Option<Uploader>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("decoder", &self.decoder)
            .field("checked_in", &self.lent.is_none())
            .finish()
    }
}

impl PooledBody {
    /// This body as a [`crate::splice::SpliceSource`], when its bytes can move to the viewer
    /// without passing through user space: framed by a length or chunks, the request body
    /// (if any) all sent, the connection plain TCP. Otherwise the body comes back unchanged.
    #[allow(clippy::result_large_err)]
    pub fn into_splice(mut self) -> Result<Box<dyn crate::splice::SpliceSource>, Self> {
        let framed = matches!(
            self.decoder,
            Decoder::Length(_)
                | Decoder::ChunkSize
                | Decoder::ChunkData(_)
                | Decoder::ChunkEnd
                | Decoder::Trailers(_)
        );
        if !framed || self.upload.is_some() {
            return Err(self);
        }
        let Some(lent) = self.lent.take() else {
            return Err(self);
        };
        Ok(Box::new(h1::splice::SpliceBody::new(
            lent,
            self.decoder,
            self.reusable,
        )))
    }

    /// The body is complete: the connection goes back to the pool if it can take another
    /// request (a clean keep-alive answer, the whole upload sent, no stray bytes), and is
    /// closed otherwise.
    fn finish(&mut self) {
        if let Some(lent) = self.lent.take() {
            if self.reusable && self.upload.is_none() && lent.conn.rbuf.is_empty() {
                lent.check_in();
            }
        }
    }

    /// The connection broke or the body failed: it cannot be reused. (Found right after data
    /// was handed on, the node sent its last bytes and closed at once: the proxied answer's
    /// edge, [`super::DeferFailureBody`], lets those bytes out before the error.)
    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.lent = None;
        self.upload = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(lent) = this.lent.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(up) = this.upload.as_mut() {
                match up.poll_send(cx, &mut lent.conn.io) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => this.upload = None,
                    Poll::Ready(Err(_)) => {
                        // The node stopped taking the upload it answered: not reusable, and
                        // no longer written.
                        this.reusable = false;
                        this.upload = None;
                    }
                }
            }
            match this.decoder.decode(&mut lent.conn.rbuf) {
                Err(e) => return this.fail(e),
                Ok(Decoded::Data(data)) => {
                    if let Err(e) = this.decoder.skip_framing(&mut lent.conn.rbuf) {
                        return this.fail(e);
                    }
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => match lent.conn.poll_fill(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return this.fail(e),
                    Poll::Ready(Ok(0)) => {
                        if let Err(e) = this.decoder.eof() {
                            return this.fail(e);
                        }
                        this.reusable = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Ok(_)) => {}
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lent.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.lent.is_some(), self.decoder.remaining()) {
            (false, _) => SizeHint::with_exact(0),
            (true, Some(n)) => SizeHint::with_exact(n),
            (true, None) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use crate::upstream::test_node::{keep_alive, one_answer, After, Answer};
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;

    /// A keep-alive node answering request `i` by `answers[i % len]`; counts its connections.
    async fn node(answers: &'static [&'static [u8]]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        keep_alive(answers.iter().map(|a| Answer::keep(*a)).collect()).await
    }

    /// Whoever has read an answer to its end finds the connection idle in the pool: no wait,
    /// no second connection, whatever frames the answer (length, chunks, none at all).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ended_answer_has_already_given_its_connection_back() {
        static ANSWERS: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ];
        let (addr, conns) = node(ANSWERS).await;
        let pool = Pool::new(Connector::default(), 4, Duration::from_secs(60));
        let key = addr.to_string();
        for i in 0..200 {
            let req = Request::get(format!("http://{addr}/x"))
                .body(empty())
                .expect("req");
            let resp = pool.request(req).await.expect("answer");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let want: &[u8] = match i % 4 {
                0 => b"0123456789",
                1 => b"abcde",
                _ => b"",
            };
            assert_eq!(&body[..], want, "answer {i}");
            assert_eq!(
                pool.idle_count(&key),
                1,
                "answer {i}: connection idle at its end"
            );
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    /// An idle connection leaves the pool (and is closed) after `idle_timeout`, and the
    /// next request opens a new one; `max_idle = 0` keeps none.
    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout() {
        static ANSWERS: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"];
        let (addr, conns) = node(ANSWERS).await;
        let key = addr.to_string();
        let get = || {
            Request::get(format!("http://{addr}/x"))
                .body(empty())
                .expect("req")
        };
        let pool = Pool::new(Connector::default(), 4, Duration::from_millis(100));
        let r = pool.request(get()).await.expect("answer");
        let _ = r.into_body().collect().await.expect("body");
        assert_eq!(pool.idle_count(&key), 1);
        let start = std::time::Instant::now();
        while pool.idle_count(&key) != 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "never swept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = pool.request(get()).await.expect("answer");
        let _ = r.into_body().collect().await.expect("body");
        assert_eq!(conns.load(Ordering::SeqCst), 2);

        let pool = Pool::new(Connector::default(), 0, Duration::from_secs(60));
        let r = pool.request(get()).await.expect("answer");
        let _ = r.into_body().collect().await.expect("body");
        assert_eq!(pool.idle_count(&key), 0);
    }

    /// A node that sends its last bytes and closes at once: the bytes come out first, then
    /// the error, and the connection is gone.
    #[tokio::test]
    async fn a_node_dying_mid_body_gives_its_bytes_then_an_error() {
        let addr = one_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nsome bytes\r\n",
            After::Close,
        )
        .await;
        let pool = Pool::new(Connector::default(), 4, Duration::from_secs(60));
        let req = Request::get(format!("http://{addr}/x"))
            .body(empty())
            .expect("req");
        let mut body = pool.request(req).await.expect("answer").into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "some bytes");
        let e = body.frame().await.expect("a frame").expect_err("cut");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(body.is_end_stream());
        assert_eq!(pool.idle_count(&addr.to_string()), 0);
    }
}
