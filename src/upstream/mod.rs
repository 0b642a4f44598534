//! The one transport to nodes, shared by the proxy and the live hub.
//!
//! One attempt ([`Transport::send`]) is bounded three ways, each by its own timer:
//! - **connect**: `upstream.connect_timeout` per TCP connect attempt (each address a node's
//!   name resolves to is tried in turn);
//! - **response headers**: `upstream.response_header_timeout`, started once the request is
//!   written: for a request with a body, once its last byte has been handed to the connection
//!   (a slow upload is not a slow node); for a bodiless one, when it is handed to the pool
//!   (its connect is bounded by the connect timeout);
//! - **body progress**: `upstream.body_idle_timeout` bounds silence in an upload (whoever stops:
//!   the viewer sending, or the node reading) and, through [`IdleTimeoutBody`], in the node's
//!   answer.
//!
//! Requests go through the transport's own HTTP/1 pool ([`pool`]) and its own HTTP/1.1 client
//! connection ([`h1`]): no per-connection task and no channel; the request future writes the
//! request and parses the answer's head, the answer body reads the rest off the socket, and
//! an answer's end reaches its reader only once the connection is idle again, so the next
//! request reuses it. Owning the socket lets a plain answer body go to the viewer by
//! `splice(2)` ([`PooledBody::into_splice`]).
//!
//! Failures are classified once ([`UpstreamError`]): which side failed, and whether the request
//! may go to another node ([`Transport::send_any`]). Node health ([`Health`]) is recorded on
//! every attempt and orders the candidates.

pub mod balance;
pub mod body;
pub mod defer_body;
pub mod error;
pub(crate) mod h1;
pub mod health;
pub mod idle_body;
pub mod idle_deadline;
pub mod pool;
pub mod ring;
#[cfg(test)]
pub(crate) mod test_node;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use crate::body::{empty, Body};
use crate::config::{NodeSettings, UpstreamSettings};
use crate::metrics::NodeMetrics;
use crate::registry::Node;

pub use error::{ErrorKind, UpstreamError};

/// Most of a health check's answer read (and required to arrive): a status page, not a file.
const HEALTH_BODY_LIMIT: usize = 64 * 1024;
pub use defer_body::DeferFailureBody;
pub use health::Health;
pub use idle_body::IdleTimeoutBody;
pub use idle_deadline::IdleDeadline;
pub use pool::PooledBody;

/// The transport: the connection pool, its timeouts and the nodes' health. Cloning is cheap
/// (reference counts); every clone shares the pool and the health map.
#[derive(Clone)]
pub struct Transport {
    /// The pool every request to a node goes through: the proxy's, the live pulls', the
    /// health checks'.
    pool: pool::Pool,
    connect_timeout: Duration,
    header_timeout: Duration,
    body_idle_timeout: Duration,
    health: Arc<Health>,
    /// Connect and response-header latency and errors by node (`None`: not measured).
    metrics: Option<Arc<NodeMetrics>>,
}

impl Transport {
    /// Builds the transport from the settings. TCP_NODELAY keeps the first bytes of a live
    /// stream from waiting on Nagle; the connect timeout applies per connect attempt.
    pub fn new(s: &UpstreamSettings) -> Self {
        let connector = pool::Connector {
            timeout: s.connect_timeout,
            keepalive: Some(s.tcp_keepalive),
        };
        let pool = pool::Pool::new(connector, s.max_idle_per_node, s.idle_timeout);
        Self {
            pool,
            connect_timeout: s.connect_timeout,
            header_timeout: s.response_header_timeout,
            body_idle_timeout: s.body_idle_timeout,
            health: Arc::new(Health::new(s.max_fails, s.fail_timeout)),
            metrics: None,
        }
    }

    /// Measures every attempt at a node into `metrics` (the gateway's; hosts that are not
    /// nodes, like the auth hook, are never measured).
    /// The same transport (pool, health, metrics) with `s`'s response header and body idle
    /// timeouts, for the requests a reloaded config serves. The connect timeout and the pool's
    /// settings belong to the pool and stay as started.
    pub fn with_timeouts(&self, s: &UpstreamSettings) -> Self {
        let mut t = self.clone();
        t.header_timeout = s.response_header_timeout;
        t.body_idle_timeout = s.body_idle_timeout;
        t
    }

    pub fn with_metrics(mut self, metrics: Arc<NodeMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The nodes' health (for listings).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// How long a proxied body may make no progress.
    pub fn body_idle_timeout(&self) -> Duration {
        self.body_idle_timeout
    }

    /// `nodes` with healthy ones first (see [`Health::order`]).
    pub fn order(&self, nodes: &[Arc<Node>]) -> Vec<Arc<Node>> {
        self.health.order(nodes)
    }

    /// ONE attempt at `node`: connect and header timeouts, one same-node retry of a bodiless
    /// request whose pooled connection turned out closed, node health recorded. The response
    /// body is the node's, unbounded in time: wrap it in [`IdleTimeoutBody`] to stream it.
    ///
    /// A response carrying `Transfer-Encoding` loses any `Content-Length`: the connection has
    /// framed the body by the former (RFC 9112 §6.3), and passing both on would let a viewer
    /// read the length as the whole answer.
    pub async fn send(
        &self,
        node: &Node,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        self.send_with(node, req, true).await
    }

    /// [`Transport::send`] to a host that is not a media node (the auth hook): same pool and
    /// timers, but its failures never count toward any node's health.
    pub async fn send_unrecorded(
        &self,
        host: &Node,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        self.send_with(host, req, false).await
    }

    async fn send_with(
        &self,
        node: &Node,
        req: Request<Body>,
        record_health: bool,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let replayable = is_replayable(&req);
        let copy = replayable.then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.version(),
                req.headers().clone(),
            )
        });
        let mut timing = pool::Timing::default();
        let mut result = self.attempt(req, &mut timing, pool::Checkout::Pooled).await;
        if let (Err(ErrorKind::Closed(why)), Some((method, uri, version, headers))) =
            (&result, copy)
        {
            // "Connection closed before message completed": the node closed a pooled
            // connection as we sent on it. A fresh connection fixes that; once, and only for a
            // request we can send again. Fresh, not another pooled one: those may be just as
            // stale (a node restart closes them all).
            tracing::debug!(node = %node.id, error = %why, "retrying on a fresh connection");
            let mut again = Request::new(empty());
            *again.method_mut() = method;
            *again.uri_mut() = uri;
            *again.version_mut() = version;
            *again.headers_mut() = headers;
            if let (Some(m), Some(d), true) = (&self.metrics, timing.connect, record_health) {
                m.connected(&node.id, d);
            }
            timing = pool::Timing::default();
            result = self
                .attempt(again, &mut timing, pool::Checkout::FreshOnly)
                .await;
        }
        if let (Some(m), true) = (&self.metrics, record_health) {
            if let Some(d) = timing.connect {
                m.connected(&node.id, d);
            }
            match &result {
                Ok(_) => {
                    if let Some(d) = timing.headers {
                        m.answered(&node.id, d);
                    }
                }
                Err(kind) => m.failed(&node.id, kind),
            }
        }
        match result {
            Ok(mut resp) => {
                if record_health {
                    self.health.record_success(&node.id);
                }
                if resp.headers().contains_key(header::TRANSFER_ENCODING) {
                    resp.headers_mut().remove(header::CONTENT_LENGTH);
                }
                Ok(resp)
            }
            Err(kind) => {
                if record_health && kind.is_node_failure() {
                    self.health.record_failure(&node.id, &kind.to_string());
                }
                Err(UpstreamError {
                    node: node.id.clone(),
                    kind,
                    replayable,
                })
            }
        }
    }

    /// Sends to the first of `nodes` that answers, healthy ones first. `request_for` builds the
    /// request for each node tried. A node failure (connect, timeout, closed before headers)
    /// moves on to the next node for a bodiless request; a request with a body gets one
    /// attempt (its body cannot be sent twice). Returns the answer and the node that gave it.
    pub async fn send_any<E, F>(
        &self,
        nodes: &[Arc<Node>],
        mut request_for: F,
    ) -> Result<(Response<PooledBody>, Arc<Node>), E>
    where
        F: FnMut(&Node) -> Result<Request<Body>, E>,
        E: From<UpstreamError>,
    {
        let mut last = None;
        for node in self.order(nodes) {
            let req = request_for(&node)?;
            match self.send(&node, req).await {
                Ok(resp) => return Ok((resp, node)),
                Err(e) => {
                    tracing::debug!(node = %node.id, error = %e, retry = e.retryable(), "upstream attempt failed");
                    if !e.retryable() {
                        return Err(e.into());
                    }
                    last = Some(e);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| {
                UpstreamError::new(
                    "",
                    ErrorKind::Other("no node to send the request to".into()),
                )
            })
            .into())
    }

    /// Starts one background check per node with `health` configured; each stops when
    /// `shutdown` is cancelled.
    pub fn spawn_health_checks(&self, nodes: &[NodeSettings], shutdown: &CancellationToken) {
        for n in nodes {
            let Some(check) = &n.health else { continue };
            self.health.add_checked(&n.id);
            let t = self.clone();
            let id = n.id.clone();
            let uri = n.url.join(&check.path, None);
            let every = check.interval;
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let outcome = tokio::select! {
                        _ = stop.cancelled() => return,
                        o = t.check(&uri) => o,
                    };
                    t.health.record_check(&id, outcome);
                }
            });
        }
    }

    /// `GET uri` for a small document the gateway itself needs (a JWKS): 2xx within the connect
    /// and header timeouts, the body read within `body_idle_timeout` and at most `limit` bytes.
    pub async fn get_small(
        &self,
        uri: &str,
        limit: usize,
        user_agent: &'static str,
    ) -> Result<Bytes, String> {
        let mut req = Request::new(empty());
        *req.uri_mut() = uri.parse().map_err(|e| format!("bad URL: {e}"))?;
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, host);
        }
        req.headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static(user_agent));
        let wait = self.connect_timeout + self.header_timeout;
        let resp = match tokio::time::timeout(wait, self.pool.request(req)).await {
            Err(_) => return Err(format!("no answer within {wait:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), limit).collect();
        let body = match tokio::time::timeout(self.body_idle_timeout, body).await {
            Err(_) => return Err("the body did not arrive in time".into()),
            Ok(Err(e)) => return Err(format!("body: {e} (limit {limit} bytes)")),
            Ok(Ok(b)) => b.to_bytes(),
        };
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("answered {status}"))
        }
    }

    /// One active check: `GET uri`, 2xx with its (small) body within the timeouts is up.
    async fn check(&self, uri: &str) -> Result<(), String> {
        self.get_small(uri, HEALTH_BODY_LIMIT, "streamgate-health")
            .await
            .map(|_| ())
            .map_err(|e| format!("health check: {e}"))
    }

    /// Sends one request on a connection from where `checkout` says and waits for the
    /// headers, with the timers above.
    async fn attempt(
        &self,
        req: Request<Body>,
        timing: &mut pool::Timing,
        checkout: pool::Checkout,
    ) -> Result<Response<PooledBody>, ErrorKind> {
        if req.body().is_end_stream() {
            return match tokio::time::timeout(
                self.header_timeout,
                self.pool.request_timed(req, timing, checkout),
            )
            .await
            {
                Err(_) => Err(ErrorKind::HeaderTimeout(self.header_timeout)),
                Ok(r) => r,
            };
        }
        let (parts, body) = req.into_parts();
        let (body, upload) = body::UploadBody::new(body);
        let fut =
            self.pool
                .request_timed(Request::from_parts(parts, body.boxed()), timing, checkout);
        tokio::pin!(fut);
        // Phase 1: the body is on its way. No header timer yet; the upload must keep moving.
        // A stall is noticed after one to two `body_idle_timeout`s.
        loop {
            let before = upload.frames();
            tokio::select! {
                r = &mut fut => return r,
                _ = upload.sent() => break,
                _ = tokio::time::sleep(self.body_idle_timeout) => {
                    if upload.frames() == before {
                        return Err(if upload.waiting_on_client() {
                            ErrorKind::ClientBodyTimeout(self.body_idle_timeout)
                        } else {
                            ErrorKind::UploadStalled(self.body_idle_timeout)
                        });
                    }
                }
            }
        }
        // Phase 2: the request is written; the node owes us headers.
        match tokio::time::timeout(self.header_timeout, fut).await {
            Err(_) => Err(ErrorKind::HeaderTimeout(self.header_timeout)),
            Ok(r) => r,
        }
    }
}

/// A request we can send again: a safe method and no body.
fn is_replayable(req: &Request<Body>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && req.body().is_end_stream()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::full;
    use crate::upstream_path::BaseUrl;
    use std::sync::atomic::Ordering;

    fn node(addr: std::net::SocketAddr) -> Node {
        Node {
            id: "n".into(),
            url: BaseUrl::parse(&format!("http://{addr}")).expect("url"),
            expires: None,
        }
    }

    fn get(addr: std::net::SocketAddr) -> Request<Body> {
        Request::get(format!("http://{addr}/x"))
            .body(empty())
            .expect("req")
    }

    #[tokio::test]
    async fn a_stale_pooled_connection_is_retried_once_for_a_get_only() {
        let (addr, conns) = test_node::answering_once_per_connection().await;
        let t = Transport::new(&UpstreamSettings::default());
        let n = node(addr);
        let r = t.send(&n, get(addr)).await.expect("first");
        assert_eq!(r.status(), 200);
        let _ = r.into_body().collect().await; // back to the pool
        let r = t
            .send(&n, get(addr))
            .await
            .expect("retried on a fresh connection");
        assert_eq!(r.status(), 200);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        assert_eq!(t.health().snapshot("n").consecutive_fails, 0);

        // The same trap for a POST: not replayed, not retryable elsewhere.
        let (addr, _) = test_node::answering_once_per_connection().await;
        let n = node(addr);
        let r = t.send(&n, get(addr)).await.expect("first");
        let _ = r.into_body().collect().await;
        let post = Request::post(format!("http://{addr}/x"))
            .body(full("data"))
            .expect("req");
        let e = t.send(&n, post).await.expect_err("closed");
        assert!(matches!(e.kind, ErrorKind::Closed(_)), "{e}");
        assert!(!e.retryable());
        assert_eq!(t.health().snapshot("n").consecutive_fails, 1);
    }

    /// Two idle pooled connections, both closed by the node as they are used: the retry of
    /// the request that found the first one stale goes out on a new connection, not on the
    /// other stale one, and succeeds.
    #[tokio::test]
    async fn the_retry_after_a_stale_connection_takes_a_new_one() {
        let (addr, conns) = test_node::answering_once_per_connection().await;
        let t = Transport::new(&UpstreamSettings::default());
        let n = node(addr);
        let key = addr.to_string();
        // Two answers open at once: two connections, both idle once their bodies are read.
        let a = t.send(&n, get(addr)).await.expect("first");
        let b = t.send(&n, get(addr)).await.expect("second");
        let _ = a.into_body().collect().await.expect("body");
        let _ = b.into_body().collect().await.expect("body");
        assert_eq!(t.pool.idle_count(&key), 2);
        assert_eq!(conns.load(Ordering::SeqCst), 2);

        let r = t
            .send(&n, get(addr))
            .await
            .expect("retried on a new connection");
        assert_eq!(r.status(), 200);
        assert_eq!(conns.load(Ordering::SeqCst), 3, "one new connection");
        assert_eq!(
            t.pool.idle_count(&key),
            1,
            "the retry left the other pooled connection alone"
        );
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(t.health().snapshot("n").consecutive_fails, 0);
    }

    #[tokio::test]
    async fn an_unrecorded_host_never_touches_node_health() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l); // nothing listens: connections are refused
        let t = Transport::new(&UpstreamSettings::default());
        let n = node(addr);
        for _ in 0..5 {
            assert!(t.send_unrecorded(&n, get(addr)).await.is_err());
        }
        assert_eq!(t.health().snapshot("n").consecutive_fails, 0);
        assert!(t.send(&n, get(addr)).await.is_err());
        assert_eq!(t.health().snapshot("n").consecutive_fails, 1);
    }

    #[tokio::test]
    async fn content_length_goes_when_transfer_encoding_frames_the_answer() {
        let addr = test_node::one_answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            test_node::After::Hold,
        )
        .await;
        let t = Transport::new(&UpstreamSettings::default());
        let r = t.send(&node(addr), get(addr)).await.expect("answer");
        assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"hello world");
    }
}
