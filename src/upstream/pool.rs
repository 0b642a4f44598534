//! The transport's own HTTP/1 connection pool, with one promise hyper-util's legacy client
//! does not keep: **when a node's answer has ended for the reader, its connection is already
//! idle in the pool.**
//!
//! hyper-util hands a connection back from a spawned task once the connection has read the
//! whole answer *and* polled for its next request; the reader of the body is told "end" before
//! that (hyper 0.14 held the end back with `delayed_eof`; hyper 1 dropped it). A request sent
//! right after an answer ended (the next viewer, the next segment) could find the pool empty,
//! and hyper-util then starts a connect that is not cancelled even when the old connection
//! turns up a moment later: one more TCP connection per race, more of them the busier the
//! machine. Here the body ([`PooledBody`]) holds back its last frame until the connection has
//! been checked in, so whoever sees the end and sends again finds it.
//!
//! Kept deliberately small: HTTP/1 only, one idle list per node authority (newest first out),
//! `max_idle` per node, idle connections closed after `idle_timeout` by one background sweep
//! that runs only while something is idle.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

use super::body::Upload;
use super::error::ErrorKind;
use crate::body::Body;

/// How long a dropped answer's connection may take to become idle before it is closed instead
/// of checked in (it normally takes one step of the connection's task).
const CHECK_IN_WAIT: Duration = Duration::from_secs(5);

/// Idle connections to nodes, by node authority (`host:port`).
#[derive(Clone)]
pub(super) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Makes new connections (connect timeout, TCP_NODELAY, keepalive are set on it).
    connector: HttpConnector,
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
    /// Opening a new connection (TCP connect and HTTP/1 handshake); `None` on a pooled one.
    pub connect: Option<Duration>,
    /// From handing the request to the connection to the response headers.
    pub headers: Option<Duration>,
}

/// One idle connection.
struct Idle {
    tx: SendRequest<Body>,
    since: Instant,
}

/// A connection lent to one request, on its way back to the pool.
struct Lent {
    tx: SendRequest<Body>,
    key: String,
    pool: Weak<Inner>,
}

impl Lent {
    /// Back into the pool if the connection can take another request; dropped (closed) if not.
    fn check_in(self) {
        if let Some(pool) = self.pool.upgrade() {
            if self.tx.is_ready() {
                Inner::put(&pool, self.key, self.tx);
            }
        }
    }
}

impl Pool {
    pub(super) fn new(connector: HttpConnector, max_idle: usize, idle_timeout: Duration) -> Self {
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
    /// answer once its headers are in. `upload` watches the request body, if it has one: the
    /// connection is reusable only once that body has been sent.
    ///
    /// A request that a pooled connection turned out unable to take (closed by the node while
    /// idle, before a byte of ours was written) goes out again on a new connection: it was
    /// never sent, so this is safe for any method.
    pub(super) async fn request(
        &self,
        req: Request<Body>,
        upload: Option<Arc<Upload>>,
    ) -> Result<Response<PooledBody>, ErrorKind> {
        self.request_timed(req, upload, &mut Timing::default())
            .await
    }

    /// [`Pool::request`], noting in `timing` how long a new connection took to open and how
    /// long the answer's headers took once the request was handed to a connection.
    pub(super) async fn request_timed(
        &self,
        mut req: Request<Body>,
        upload: Option<Arc<Upload>>,
        timing: &mut Timing,
    ) -> Result<Response<PooledBody>, ErrorKind> {
        let key = prepare(&mut req)?;
        let connect_uri = req_connect_uri(&key)?;
        let bodiless = upload.is_none();
        loop {
            let (mut tx, reused) = match self.checkout(&key) {
                Some(tx) => (tx, true),
                None => {
                    let t = Instant::now();
                    let tx = self.connect(&connect_uri).await?;
                    timing.connect = Some(t.elapsed());
                    (tx, false)
                }
            };
            if let Err(e) = tx.ready().await {
                if reused {
                    continue; // closed while idle; nothing was sent on it
                }
                return Err(ErrorKind::classify_error(&e, false, false));
            }
            let sent = Instant::now();
            let resp = match tx.try_send_request(req).await {
                Ok(resp) => {
                    timing.headers = Some(sent.elapsed());
                    resp
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        req = unsent;
                        continue;
                    }
                    _ => {
                        let failed = upload.as_ref().is_some_and(|u| u.client_failed());
                        return Err(ErrorKind::classify_error(e.error(), false, failed));
                    }
                },
            };
            let lent = Lent {
                tx,
                key,
                pool: Arc::downgrade(&self.inner),
            };
            let (parts, body) = resp.into_parts();
            if body.is_end_stream() && bodiless {
                // No body to hold back (304, 204, HEAD): check the connection in before the
                // answer is handed on. The connection is about to ask for its next request (it
                // has read the whole answer and written the whole request), or to close.
                let mut lent = lent;
                if lent.tx.ready().await.is_ok() {
                    lent.check_in();
                }
                return Ok(Response::from_parts(parts, PooledBody::done(body)));
            }
            return Ok(Response::from_parts(
                parts,
                PooledBody {
                    inner: body,
                    lent: Some(lent),
                    upload,
                    held: None,
                    ended: false,
                },
            ));
        }
    }

    /// The newest idle connection to `key` that can still take a request.
    fn checkout(&self, key: &str) -> Option<SendRequest<Body>> {
        let mut map = self.inner.idle.lock().ok()?;
        let list = map.get_mut(key)?;
        let mut found = None;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < self.inner.idle_timeout
                && idle.tx.is_ready()
                && !idle.tx.is_closed()
            {
                found = Some(idle.tx);
                break;
            }
        }
        if list.is_empty() {
            map.remove(key);
        }
        found
    }

    /// A new connection: TCP (bounded by the connector's connect timeout), then the HTTP/1
    /// handshake; the connection's task runs until either side closes it.
    async fn connect(&self, uri: &Uri) -> Result<SendRequest<Body>, ErrorKind> {
        let io: TokioIo<tokio::net::TcpStream> = self
            .inner
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(|e| ErrorKind::classify_error(&e, true, false))?;
        let (tx, conn) = http1::handshake(io)
            .await
            .map_err(|e| ErrorKind::classify_error(&e, false, false))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }
}

impl Inner {
    fn put(this: &Arc<Self>, key: String, tx: SendRequest<Body>) {
        if this.max_idle == 0 {
            return;
        }
        let Ok(mut map) = this.idle.lock() else {
            return;
        };
        let list = map.entry(key).or_default();
        if list.len() >= this.max_idle {
            list.remove(0); // the oldest goes; dropping it closes it
        }
        list.push(Idle {
            tx,
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
                    list.retain(|i| i.since.elapsed() < pool.idle_timeout && !i.tx.is_closed());
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

/// Origin-form target, a `Host` header if the caller set none; returns the pool key.
fn prepare(req: &mut Request<Body>) -> Result<String, ErrorKind> {
    let uri = req.uri();
    if uri.scheme_str() != Some("http") {
        return Err(ErrorKind::Other(
            format!("only http:// nodes are supported, not {uri}").into(),
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ErrorKind::Other(format!("no host in {uri}").into()))?
        .clone();
    let target = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>()
        .map_err(|e| ErrorKind::Other(format!("bad request target: {e}").into()))?;
    if !req.headers().contains_key(header::HOST) {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| ErrorKind::Other(format!("bad host: {e}").into()))?;
        req.headers_mut().insert(header::HOST, host);
    }
    *req.uri_mut() = target;
    Ok(authority.as_str().to_string())
}

fn req_connect_uri(authority: &str) -> Result<Uri, ErrorKind> {
    format!("http://{authority}/")
        .parse()
        .map_err(|e| ErrorKind::Other(format!("bad node address: {e}").into()))
}

/// A node's answer body whose connection goes back to the pool before the body's end is
/// reported: the last frame (or the end itself) waits until the connection has checked in.
pub struct PooledBody {
    inner: Incoming,
    /// The connection, until it has checked in (or turned out not reusable).
    lent: Option<Lent>,
    /// The request body, when there is one: until it is sent the connection cannot be reused,
    /// and the answer's end is not held back for it.
    upload: Option<Arc<Upload>>,
    /// The last frame, held while the connection checks in.
    held: Option<Frame<Bytes>>,
    /// The inner body has yielded its end.
    ended: bool,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("inner", &self.inner)
            .field("checked_in", &self.lent.is_none())
            .field("ended", &self.ended)
            .finish()
    }
}

impl PooledBody {
    /// This body as a [`crate::splice::SpliceSource`], when its bytes can move to the viewer
    /// without passing through user space. Not yet: hyper's client connection owns the socket
    /// (the transport's own HTTP/1 connection will hand it over).
    #[allow(clippy::result_large_err)]
    pub fn into_splice(self) -> Result<Box<dyn crate::splice::SpliceSource>, Self> {
        Err(self)
    }

    /// A body with nothing to hold back.
    fn done(inner: Incoming) -> Self {
        Self {
            inner,
            lent: None,
            upload: None,
            held: None,
            ended: false,
        }
    }

    /// The node has sent the whole answer.
    fn complete(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        loop {
            if this.complete() {
                if let Some(lent) = &mut this.lent {
                    let upload_sent = this.upload.as_ref().is_none_or(|u| u.is_done());
                    if upload_sent {
                        // The connection is about to ask for its next request, or to close:
                        // its own task decides that right after the answer's last byte.
                        match lent.tx.poll_ready(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(())) => {
                                if let Some(lent) = this.lent.take() {
                                    lent.check_in();
                                }
                            }
                            Poll::Ready(Err(_)) => this.lent = None,
                        }
                    } else {
                        // The node answered before taking the whole upload: the connection
                        // may never be reusable; do not hold the answer for it.
                        this.lent = None;
                    }
                }
                if let Some(f) = this.held.take() {
                    return Poll::Ready(Some(Ok(f)));
                }
                if this.ended {
                    return Poll::Ready(None);
                }
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    if this.lent.is_some() && this.inner.is_end_stream() {
                        this.held = Some(f);
                        continue;
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if this.lent.is_some() {
                        continue;
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.lent = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lent.is_none() && self.held.is_none() && self.complete()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(f) = self.held.as_ref().and_then(|f| f.data_ref()) {
            let n = f.len() as u64;
            hint.set_lower(hint.lower() + n);
            if let Some(u) = hint.upper() {
                hint.set_upper(u + n);
            }
        }
        hint
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Dropped after the whole answer arrived but before its end was polled (a server stops
        // polling once a known length is written): check the connection in when it is ready.
        // Dropped mid-answer: the connection goes with it (it cannot be reused).
        if !self.complete() {
            return;
        }
        let Some(mut lent) = self.lent.take() else {
            return;
        };
        if self.upload.as_ref().is_some_and(|u| !u.is_done()) {
            // The node answered before taking the whole upload: the connection may never be
            // reusable, and nothing bounds the rest of that upload any more. Let it close.
            return;
        }
        if lent.tx.is_ready() {
            lent.check_in();
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // Bounded: a connection that does not become idle soon is not worth keeping.
                if let Ok(Ok(())) = tokio::time::timeout(CHECK_IN_WAIT, lent.tx.ready()).await {
                    lent.check_in();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A keep-alive node answering request `i` by `answers[i % len]`; counts its connections.
    async fn node(answers: &'static [&'static [u8]]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let count = conns.clone();
        tokio::spawn(async move {
            let mut served = 0usize;
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        let a = answers[served % answers.len()];
                        served += 1;
                        if s.write_all(a).await.is_err() {
                            break;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
            }
        });
        (addr, conns)
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
        let pool = Pool::new(HttpConnector::new(), 4, Duration::from_secs(60));
        let key = addr.to_string();
        for i in 0..200 {
            let req = Request::get(format!("http://{addr}/x"))
                .body(empty())
                .expect("req");
            let resp = pool.request(req, None).await.expect("answer");
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
        let pool = Pool::new(HttpConnector::new(), 4, Duration::from_millis(100));
        let r = pool.request(get(), None).await.expect("answer");
        let _ = r.into_body().collect().await.expect("body");
        assert_eq!(pool.idle_count(&key), 1);
        let start = std::time::Instant::now();
        while pool.idle_count(&key) != 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "never swept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = pool.request(get(), None).await.expect("answer");
        let _ = r.into_body().collect().await.expect("body");
        assert_eq!(conns.load(Ordering::SeqCst), 2);

        let pool = Pool::new(HttpConnector::new(), 0, Duration::from_secs(60));
        let r = pool.request(get(), None).await.expect("answer");
        let _ = r.into_body().collect().await.expect("body");
        assert_eq!(pool.idle_count(&key), 0);
    }
}
