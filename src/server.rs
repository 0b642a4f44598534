//! Listeners, connection limits, panic isolation and graceful shutdown: the part of serving
//! HTTP/1 that the gateway and the origin share.
//!
//! Each accepted connection runs in its own task. A semaphore caps how many are open at once
//! (past it, accept waits: the kernel backlog absorbs bursts). On a listener marked
//! `proxy_protocol`, that task first reads the PROXY header (`proxy_protocol.rs`, bounded
//! in time and size), whose source then stands for the peer: in [`ConnInfo`] and for the
//! per-address connection cap. Shutdown is a cancellation token:
//! on cancel, listeners close, idle keep-alive connections are told to close, in-flight requests
//! get `drain_timeout` to finish, and long-lived bodies (live streams) watch the same token and
//! end cleanly by themselves. Whatever is still open when `drain_timeout` passes (a client that
//! stopped reading, a download that would take an hour) is closed: each connection task also
//! watches a second token, cancelled at the deadline, and drops its connection.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::body::{json_response, Body};
use crate::config::ListenerSettings;
use crate::proxy_protocol::Rewind;
use crate::stall_timeout::{StallFlag, StallTimeout};

/// What the server knows about the connection a request came on, handed to the handler.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address: the TCP peer (or what a trusted PROXY protocol header names).
    pub peer: SocketAddr,
    /// The viewer reached us over TLS (so forwarded requests say `https`).
    pub secure: bool,
    /// Set if a write on the connection timed out (`send_timeout`): the access log says
    /// `closed=send_timeout`. Cloned per request (a reference count), never allocated.
    pub(crate) stalled: StallFlag,
}

impl ConnInfo {
    /// A plain-TCP connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Self {
        Self {
            peer,
            secure: false,
            stalled: StallFlag::default(),
        }
    }

    /// The same connection, watched by `flag`.
    pub(crate) fn with_stall_flag(mut self, flag: StallFlag) -> Self {
        self.stalled = flag;
        self
    }
}

/// What an open connection holds: its `max_connections` permit, its per-address slot, and its
/// place in the drain (shutdown waits for it). Handed to every request in its extensions, so a
/// connection that a handler takes over after a `101` (WebSocket-FLV) keeps them after hyper's
/// connection task has let go of it; the last clone gives them back.
#[derive(Clone)]
pub struct ConnHold(Arc<HoldInner>);

struct HoldInner {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip_slot: Option<crate::limits::CountGuard>,
    /// Counted by `GracefulShutdown::shutdown`, which waits for every watcher to go.
    _drain: hyper_util::server::graceful::Watcher,
    /// Cancelled at the drain deadline: whoever holds the connection drops it then.
    force_close: CancellationToken,
}

impl ConnHold {
    /// Cancelled when the drain deadline passes: close the connection now.
    pub fn force_close(&self) -> CancellationToken {
        self.0.force_close.clone()
    }
}

/// What a server does with one request. Implemented by the gateway and by the origin.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request on `conn`. Must not panic, but if it does, only this request fails.
    fn call(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Limits and timeouts of the serving side.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Most connections open at once; accept waits for a free slot past it.
    pub max_connections: usize,
    /// How long a client may take to send its request headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after shutdown starts.
    pub drain_timeout: Duration,
    /// A write to a client that makes no progress for this long closes the connection.
    pub send_timeout: Duration,
    /// Kernel send buffer per client socket (`SO_SNDBUF`); `None` keeps the kernel's
    /// autotuning, which on loopback can hold megabytes for a client that stopped reading.
    pub send_buffer: Option<usize>,
    /// `[limits] connections_per_ip`: connections past it are answered 429 and closed.
    pub connections_per_ip: Option<std::num::NonZeroU32>,
    /// On a `proxy_protocol` listener, how long a connection may take to send its header.
    pub proxy_protocol_timeout: Duration,
}

/// Most bytes hyper buffers per connection on each side before it waits for the socket. It
/// bounds what a slow client pins (hyper's default is ~400 KiB) and makes a stalled live viewer
/// push back on its own queue promptly.
pub const CONNECTION_BUFFER: usize = 64 * 1024;

impl Default for ServeOptions {
    fn default() -> Self {
        Self::from(&crate::config::ServerSettings::default())
    }
}

impl From<&crate::config::ServerSettings> for ServeOptions {
    fn from(s: &crate::config::ServerSettings) -> Self {
        Self {
            max_connections: s.max_connections,
            header_read_timeout: s.header_read_timeout,
            drain_timeout: s.drain_timeout,
            send_timeout: s.send_timeout,
            send_buffer: s.send_buffer,
            connections_per_ip: None,
            proxy_protocol_timeout: s.proxy_protocol_timeout,
        }
    }
}

/// A bound listener and how its connections are to be read.
pub struct Listener {
    pub tcp: TcpListener,
    pub settings: ListenerSettings,
}

impl Listener {
    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Binds every listener, failing with the address that could not be bound.
pub async fn bind_all(listen: &[ListenerSettings]) -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::with_capacity(listen.len());
    for settings in listen {
        let addr = settings.addr;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        out.push(Listener {
            tcp,
            settings: settings.clone(),
        });
    }
    Ok(out)
}

/// Serves `handler` on `listeners` until `shutdown` is cancelled, then drains.
pub async fn serve<H: Handler>(
    listeners: Vec<Listener>,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: CancellationToken,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    // Cancelled when the drain window is over: connection tasks then drop their connections.
    let force_close = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    // One count for every listener: the cap is per client, not per port.
    let per_ip = opts
        .connections_per_ip
        .map(|n| crate::limits::Counter::new(n, "connections"));
    let mut accept_tasks = Vec::new();
    for listener in listeners {
        let handler = handler.clone();
        let graceful = graceful.clone();
        let slots = Slots {
            permits: permits.clone(),
            per_ip: per_ip.clone(),
        };
        let shutdown = shutdown.clone();
        let opts = opts.clone();
        let force_close = force_close.clone();
        accept_tasks.push(tokio::spawn(async move {
            accept_loop(
                listener,
                handler,
                graceful,
                slots,
                opts,
                shutdown,
                force_close,
            )
            .await;
        }));
    }
    for t in accept_tasks {
        let _ = t.await;
    }
    // Listeners are closed now. Give in-flight requests the drain window.
    let graceful = match Arc::try_unwrap(graceful) {
        Ok(g) => g,
        Err(_) => {
            force_close.cancel();
            return;
        }
    };
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!(timeout = ?opts.drain_timeout, "drain timeout reached; closing remaining connections");
            force_close.cancel();
        }
    }
}

/// The connection caps every listener shares.
struct Slots {
    /// `max_connections`: accept waits for a permit.
    permits: Arc<Semaphore>,
    /// `connections_per_ip`: past it, a connection only gets a 429.
    per_ip: Option<Arc<crate::limits::Counter>>,
}

async fn accept_loop<H: Handler>(
    listener: Listener,
    handler: Arc<H>,
    graceful: Arc<GracefulShutdown>,
    slots: Slots,
    opts: ServeOptions,
    shutdown: CancellationToken,
    force_close: CancellationToken,
) {
    let proxy_protocol = listener.settings.proxy_protocol;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, tcp_peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if let Some(n) = opts.send_buffer {
            if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(n) {
                tracing::debug!(error = %e, "cannot set SO_SNDBUF");
            }
        }
        // Taken here, not in the task: a drain then waits for connections still sending their
        // PROXY header too (bounded by its timeout), and the server's own handle on
        // `graceful` is the only one left once the accept loops end.
        let watcher = graceful.watcher();
        let per_ip = slots.per_ip.clone();
        let handler = handler.clone();
        let opts = opts.clone();
        let force_close = force_close.clone();
        let shutdown = shutdown.clone();
        // Everything from here runs per connection, so a slow PROXY header holds up only its
        // own connection, never the accept loop.
        tokio::spawn(async move {
            let (io, info) = if proxy_protocol {
                let timeout = opts.proxy_protocol_timeout;
                match read_proxy_header(stream, tcp_peer, timeout, &force_close).await {
                    Some(x) => x,
                    None => return,
                }
            } else {
                (
                    Rewind::new(bytes::Bytes::new(), stream),
                    ConnInfo::plain(tcp_peer),
                )
            };
            let peer = info.peer;
            // Over the per-address cap, the connection is still served, but only to say 429
            // and close: the client learns why (a refused or reset socket says nothing), and
            // the slot it holds meanwhile is bounded by the header read timeout and the global
            // cap. The address is the PROXY header's when there is one: the balancer's own
            // would make every client one.
            let (ip_slot, refused) = match per_ip.as_ref().map(|c| c.acquire(peer.ip())) {
                None => (None, None),
                Some(Ok(slot)) => (Some(slot), None),
                Some(Err(e)) => (None, Some(Arc::new(e))),
            };
            // The connection's slots and drain watch, held by every request on it and by an
            // upgraded session (WebSocket-FLV) until it ends.
            let hold = ConnHold(Arc::new(HoldInner {
                _permit: permit,
                _ip_slot: ip_slot,
                _drain: watcher,
                force_close: force_close.clone(),
            }));
            let io = StallTimeout::new(io, opts.send_timeout);
            let info = info.with_stall_flag(io.flag());
            let svc_hold = hold.clone();
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let handler = handler.clone();
                let refused = refused.clone();
                let info = info.clone();
                req.extensions_mut().insert(svc_hold.clone());
                async move {
                    if let Some(e) = refused {
                        let rid = crate::request_id::from_headers(req.headers());
                        drop(req);
                        let mut resp = e.to_response(rid.to_str().unwrap_or_default());
                        resp.headers_mut().insert(crate::request_id::HEADER, rid);
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                        return Ok::<_, std::convert::Infallible>(resp);
                    }
                    let resp = AssertUnwindSafe(handler.call(req, info))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            tracing::error!(%peer, "request handler panicked");
                            json_response(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &serde_json::json!({"error": "internal"}),
                            )
                        });
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_read_timeout)
                .max_buf_size(CONNECTION_BUFFER)
                .serve_connection(TokioIo::new(io), svc)
                // A live route may answer `101` and take the connection (WebSocket-FLV); the
                // upgraded IO is still the `StallTimeout` socket, so writes keep `send_timeout`.
                .with_upgrades();
            // hyper-util's `GracefulShutdown::watch` takes no upgradeable HTTP/1 connection, so
            // the same is done here: on shutdown, idle keep-alive connections close and
            // in-flight requests finish; the hold's watcher keeps the drain waiting meanwhile.
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        r = conn.as_mut() => Some(r),
                        _ = force_close.cancelled() => None,
                    }
                }
                _ = force_close.cancelled() => None,
            };
            match r {
                Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with error"),
                // Dropping the connection closes its socket.
                None => tracing::debug!(%peer, "closed at the drain deadline"),
                Some(Ok(())) => {}
            }
            // An upgraded connection's session holds a clone until it ends.
            drop(hold);
        });
    }
}

/// Reads the PROXY protocol header a connection on a marked listener must start with. `None`
/// (logged) means the connection is to be closed: no header, a malformed or oversized one, or
/// none complete within `timeout`.
async fn read_proxy_header(
    mut stream: TcpStream,
    tcp_peer: SocketAddr,
    timeout: Duration,
    force_close: &CancellationToken,
) -> Option<(Rewind<TcpStream>, ConnInfo)> {
    let read = tokio::select! {
        r = crate::proxy_protocol::read(&mut stream, timeout) => r,
        _ = force_close.cancelled() => return None,
    };
    match read {
        Ok((header, rest)) => {
            // The balancer is believed: its header names the client. UNKNOWN and LOCAL (its
            // own health checks) keep the TCP peer.
            let peer = header.source.unwrap_or(tcp_peer);
            tracing::debug!(%tcp_peer, %peer, version = header.version, "PROXY protocol header");
            Some((Rewind::new(rest, stream), ConnInfo::plain(peer)))
        }
        Err(e) => {
            tracing::warn!(%tcp_peer, error = %e, "PROXY protocol header refused; connection closed");
            None
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// A server that is bound and running in the background.
pub struct Running {
    /// The addresses actually bound (port 0 resolved), in listen order.
    pub addrs: Vec<SocketAddr>,
    /// Completes once the server has shut down and drained.
    pub task: tokio::task::JoinHandle<()>,
    /// The gateway's metrics listener (`[metrics] listen`), if it has one.
    pub metrics_addr: Option<SocketAddr>,
}

/// Binds `listen` and serves `handler` on them in a background task.
pub async fn start<H: Handler>(
    listen: &[ListenerSettings],
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    run(bind_all(listen).await?, handler, opts, shutdown)
}

/// Serves `handler` on already-bound `listeners` in a background task.
pub fn run<H: Handler>(
    listeners: Vec<Listener>,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let task = tokio::spawn(serve(listeners, handler, opts, shutdown));
    Ok(Running {
        addrs,
        task,
        metrics_addr: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every request with one chunk, then a body that never ends.
    struct Endless;

    impl Handler for Endless {
        async fn call(&self, _req: Request<Incoming>, _conn: ConnInfo) -> Response<Body> {
            let first = futures_util::stream::iter([Ok::<_, crate::body::BoxError>(
                http_body::Frame::data(bytes::Bytes::from_static(b"first")),
            )]);
            let body = StreamBody::new(first.chain(futures_util::stream::pending()));
            Response::new(BodyExt::boxed(body))
        }
    }

    use futures_util::StreamExt;

    /// Answers an `Upgrade` request with `101` and keeps the upgraded connection (and its hold)
    /// until the client closes it; anything else gets a plain `200`.
    struct Upgrader;

    impl Handler for Upgrader {
        async fn call(&self, mut req: Request<Incoming>, _conn: ConnInfo) -> Response<Body> {
            if !req.headers().contains_key(http::header::UPGRADE) {
                return Response::new(crate::body::full("plain"));
            }
            let hold = req.extensions().get::<ConnHold>().cloned();
            assert!(
                hold.is_some(),
                "every request carries its connection's hold"
            );
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(u) = upgrade.await {
                    let mut io = TokioIo::new(u);
                    let mut b = [0u8; 16];
                    while let Ok(n) = io.read(&mut b).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
                drop(hold);
            });
            let mut resp = Response::new(crate::body::empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut().insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("test"),
            );
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            resp
        }
    }

    async fn head_of(client: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the response head");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn an_upgraded_connection_keeps_its_connection_slot() {
        let shutdown = CancellationToken::new();
        let opts = ServeOptions {
            max_connections: 1,
            ..ServeOptions::default()
        };
        let running = start(
            &[ListenerSettings::plain(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            )))],
            Arc::new(Upgrader),
            opts,
            shutdown.clone(),
        )
        .await
        .expect("bind");
        let addr = running.addrs[0];
        let mut upgraded = tokio::net::TcpStream::connect(addr).await.expect("connect");
        upgraded
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
            .await
            .expect("write");
        assert!(head_of(&mut upgraded).await.starts_with("HTTP/1.1 101"));
        // hyper's connection task is over; the session still holds the only slot.
        let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect");
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let waited = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
        assert!(waited.is_err(), "not served while the upgraded one is open");
        // The session ends: its slot goes back and the waiting connection is served.
        drop(upgraded);
        assert!(head_of(&mut second).await.starts_with("HTTP/1.1 200"));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), running.task)
            .await
            .expect("server task ends")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_deadline_closes_what_is_still_open() {
        let shutdown = CancellationToken::new();
        let opts = ServeOptions {
            drain_timeout: Duration::from_secs(2),
            ..ServeOptions::default()
        };
        let running = start(
            &[ListenerSettings::plain(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            )))],
            Arc::new(Endless),
            opts,
            shutdown.clone(),
        )
        .await
        .expect("bind");
        let mut client = tokio::net::TcpStream::connect(running.addrs[0])
            .await
            .expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(5).any(|w| w == b"first") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the first chunk");
            got.extend_from_slice(&buf[..n]);
        }
        let cancelled_at = tokio::time::Instant::now();
        shutdown.cancel();
        // The body never ends, so only the drain deadline can close the connection.
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Ok(0) | Err(_) = client.read(&mut buf).await {
                    return;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection outlived the drain deadline");
        assert!(
            cancelled_at.elapsed() >= Duration::from_secs(2),
            "closed at the deadline, not before"
        );
        tokio::time::timeout(Duration::from_secs(1), running.task)
            .await
            .expect("server task ends")
            .expect("no panic");
    }
}
