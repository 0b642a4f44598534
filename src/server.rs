//! Listeners (plain HTTP/1.1, or TLS with HTTP/2 and HTTP/1.1 by ALPN), connection limits,
//! panic isolation and graceful shutdown: the part of serving that the gateway and the origin
//! share.
//!
//! Each accepted connection runs in its own task. A semaphore caps how many are open at once
//! (past it, accept waits: the kernel backlog absorbs bursts). On a TLS listener the handshake
//! runs in that task, bounded by `tls_handshake_timeout`, so a client that never sends its
//! ClientHello holds its slot only that long. Shutdown is a cancellation token: on cancel,
//! listeners close, idle connections are told to close (HTTP/2: GOAWAY), in-flight requests get
//! `drain_timeout` to finish, and long-lived bodies (live streams) watch the same token and end
//! cleanly by themselves. Whatever is still open when `drain_timeout` passes (a client that
//! stopped reading, a download that would take an hour) is closed: each connection task also
//! watches a second token, cancelled at the deadline, and drops its connection.
//!
//! HTTP/2 multiplexes many requests on one connection with per-stream flow control: a stream
//! whose viewer stops granting window is not polled (its live queue overflows and the fan-out
//! drops or resyncs that viewer) while the other streams go on. `send_timeout` still guards the
//! socket below TLS: a peer that stops reading altogether loses the whole connection.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::body::{json_response, Body, RequestBody};
use crate::config::ListenerSettings;
use crate::proxy_protocol::Rewind;
use crate::stall_timeout::{StallFlag, StallTimeout};
use crate::tls;

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
    /// On a plain HTTP/1.1 connection with `[server] splice`, the connection's splice link
    /// ([`crate::splice::offer`]): a reference count per request, never an allocation.
    pub(crate) splice: Option<crate::splice::Link>,
}

impl ConnInfo {
    /// A plain-TCP connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Self {
        Self {
            peer,
            secure: false,
            stalled: StallFlag::default(),
            splice: None,
        }
    }

    /// The same connection, watched by `flag`.
    pub(crate) fn with_stall_flag(mut self, flag: StallFlag) -> Self {
        self.stalled = flag;
        self
    }
}

/// What an open connection holds: its `max_connections` permit, its per-address slot, and its
/// place in the drain (shutdown waits for it). Handed to every request with an `Upgrade` header
/// in its extensions, so a connection that a handler takes over after a `101` (WebSocket-FLV)
/// keeps them after hyper's connection task has let go of it; the last clone gives them back.
#[derive(Clone)]
pub struct ConnHold(Arc<HoldInner>);

struct HoldInner {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip_slot: Option<crate::limits::CountGuard>,
    /// The drain waits until every connection's sender is gone (see `serve`).
    _open: mpsc::Sender<()>,
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
        req: Request<RequestBody>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Limits and timeouts of the serving side.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Most connections open at once; accept waits for a free slot past it.
    pub max_connections: usize,
    /// How long a client may take to send its request headers (slowloris guard). On HTTP/2 it
    /// is also how long a connection may stay open with no request in flight.
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
    /// How long a TLS client may take to complete its handshake.
    pub tls_handshake_timeout: Duration,
    /// How often TLS certificate files are checked for a change (`None`: SIGHUP only).
    pub tls_watch_interval: Option<Duration>,
    /// HTTP/2: most streams open at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: largest decoded header block a request may carry.
    pub http2_max_header_list_size: u32,
    /// `[server] splice`: plain HTTP/1.1 connections get the splicing IO and a
    /// [`crate::splice::Link`] in every request, so proxied bodies may move with `splice(2)`.
    pub splice: bool,
    /// `[server] own_http1`: plain connections start on [`crate::http1`], hyper takes over
    /// what it hands on.
    pub own_http1: bool,
}

/// Most bytes hyper buffers per connection on each side before it waits for the socket. It
/// bounds what a slow client pins (hyper's default is ~400 KiB) and makes a stalled live viewer
/// push back on its own queue promptly. On HTTP/2 it bounds each stream's send buffer.
pub const CONNECTION_BUFFER: usize = 64 * 1024;

/// HTTP/2 streams a client may open and reset before we have answered them, per connection
/// (hyper's default; the "rapid reset" guard, CVE-2023-44487).
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// HTTP/2 streams we may reset because of the client's protocol errors before the connection
/// is closed (hyper's default; CVE-2024-27316-style floods).
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

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
            tls_handshake_timeout: s.tls_handshake_timeout,
            tls_watch_interval: s.tls_watch_interval,
            http2_max_concurrent_streams: s.http2_max_concurrent_streams,
            http2_max_header_list_size: s.http2_max_header_list_size,
            splice: s.splice,
            own_http1: s.own_http1,
        }
    }
}

/// A bound socket, plain or TLS.
pub struct Listener {
    tcp: TcpListener,
    /// Connections start with a PROXY protocol header (`proxy_protocol = true`).
    proxy_protocol: bool,
    /// The listener's certificates (swapped by a reload) and the rustls config that asks them.
    tls: Option<(Arc<tls::Certificates>, Arc<rustls::ServerConfig>)>,
}

impl Listener {
    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
    /// Whether this listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self {
            tcp,
            proxy_protocol: false,
            tls: None,
        }
    }
}

/// Binds every address as a plain listener, failing with the address that could not be bound.
pub async fn bind_all(addrs: &[SocketAddr]) -> std::io::Result<Vec<Listener>> {
    let plain: Vec<ListenerSettings> = addrs.iter().copied().map(ListenerSettings::plain).collect();
    bind(&plain).await
}

/// Binds every listener and loads the TLS ones' certificates; fails naming the address or the
/// certificate key.
pub async fn bind(listen: &[ListenerSettings]) -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::with_capacity(listen.len());
    for l in listen {
        let addr = l.addr;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                let certs = tls::Certificates::load(t).map_err(std::io::Error::other)?;
                let cfg = certs
                    .server_config()
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", t.key)))?;
                Some((certs, cfg))
            }
        };
        out.push(Listener {
            tcp,
            proxy_protocol: l.proxy_protocol,
            tls,
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
    let (_keep, control) = mpsc::channel(1);
    serve_controlled(listeners, handler, opts, shutdown, control).await
}

/// A change to the set of listeners of a running server (see [`Listeners`]).
enum ListenerCmd {
    Add(Listener),
    /// Stop accepting on this bound address; its connections drain as at shutdown.
    Remove(SocketAddr),
}

/// Adds listeners to a running server or removes them (a config reload's `server.listen`).
#[derive(Clone, Debug)]
pub struct Listeners {
    tx: mpsc::Sender<ListenerCmd>,
    /// TLS listeners added later join the certificate reload (SIGHUP).
    tls: tls::Reloader,
}

impl Listeners {
    /// Starts serving on `l` (already bound) with the server's handler, limits and caps.
    pub async fn add(&self, l: Listener) -> std::io::Result<()> {
        if let Some((certs, _)) = &l.tls {
            self.tls.add(certs.clone());
        }
        self.tx
            .send(ListenerCmd::Add(l))
            .await
            .map_err(|_| std::io::Error::other("the server is shutting down"))
    }

    /// Stops accepting on `addr`; its open connections are told to close (idle ones at once,
    /// requests in flight when they end) and are closed after `drain_timeout`.
    pub async fn remove(&self, addr: SocketAddr) -> std::io::Result<()> {
        self.tx
            .send(ListenerCmd::Remove(addr))
            .await
            .map_err(|_| std::io::Error::other("the server is shutting down"))
    }
}

/// [`serve`], with listeners added and removed through `control` while it runs.
async fn serve_controlled<H: Handler>(
    listeners: Vec<Listener>,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: CancellationToken,
    mut control: mpsc::Receiver<ListenerCmd>,
) {
    // Every connection task holds a sender; when the last one is gone, all have drained.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    // Cancelled when the drain window is over: connection tasks then drop their connections.
    let force_close = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    // One count for every listener: the cap is per client, not per port.
    let per_ip = opts
        .connections_per_ip
        .map(|n| crate::limits::Counter::new(n, "connections"));
    let builders = Arc::new(Builders::new(&opts));
    // Per listener: its address, its own stop and force-close (children of the server's), and
    // its accept task.
    type Accepting = (
        SocketAddr,
        (CancellationToken, CancellationToken),
        tokio::task::JoinHandle<()>,
    );
    let mut accepting: Vec<Accepting> = Vec::new();
    let start = |listener: Listener| {
        let addr = listener.local_addr().ok();
        let stop = shutdown.child_token();
        let force = force_close.child_token();
        let conn = ConnCtx {
            handler: handler.clone(),
            builders: builders.clone(),
            opts: opts.clone(),
            shutdown: stop.clone(),
            force_close: force.clone(),
            open: open_tx.clone(),
        };
        let slots = Slots {
            permits: permits.clone(),
            per_ip: per_ip.clone(),
        };
        let task = tokio::spawn(accept_loop(listener, slots, conn));
        (addr, (stop, force), task)
    };
    for listener in listeners {
        if let (Some(addr), stop, task) = start(listener) {
            accepting.push((addr, stop, task));
        }
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            cmd = control.recv() => match cmd {
                // Nobody can change the listeners any more: serve until shutdown.
                None => { shutdown.cancelled().await; break; }
                Some(ListenerCmd::Add(l)) => {
                    if let (Some(addr), stop, task) = start(l) {
                        tracing::info!(%addr, "listener added");
                        accepting.push((addr, stop, task));
                    }
                }
                Some(ListenerCmd::Remove(addr)) => {
                    if let Some(i) = accepting.iter().position(|(a, _, _)| *a == addr) {
                        let (_, (stop, force), task) = accepting.swap_remove(i);
                        stop.cancel();
                        let _ = task.await;
                        // What is still open on it after the drain window is closed, as at
                        // shutdown.
                        let drain = opts.drain_timeout;
                        tokio::spawn(async move {
                            tokio::time::sleep(drain).await;
                            force.cancel();
                        });
                        tracing::info!(%addr, "listener removed; its connections drain");
                    }
                }
            },
        }
    }
    drop(open_tx);
    for (_, _, t) in accepting {
        let _ = t.await;
    }
    // Listeners are closed now. Give in-flight requests the drain window.
    tokio::select! {
        _ = open_rx.recv() => tracing::info!("all connections drained"),
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

/// hyper's connection builders, one per protocol, configured once.
struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(opts: &ServeOptions) -> Self {
        let mut b = auto::Builder::new(TokioExecutor::new());
        // `writev` stays hyper's default (decided by the IO): the splicing IO says it writes
        // vectored, so hyper queues body frames as they are, which spliced bodies rely on
        // (`crate::splice::link`). Forcing it off would flatten them; the IO then fails the
        // connection rather than send a marker's zeros.
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(opts.header_read_timeout)
            .max_buf_size(CONNECTION_BUFFER);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(opts.http2_max_concurrent_streams)
            .max_header_list_size(opts.http2_max_header_list_size)
            .max_send_buf_size(CONNECTION_BUFFER)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
            // A peer that vanished without a FIN answers no PING: its connection goes.
            .keep_alive_interval(opts.send_timeout)
            .keep_alive_timeout(opts.send_timeout);
        // The protocol is known before hyper sees a byte (plain: HTTP/1.1; TLS: ALPN), so the
        // auto builder never has to sniff a preface, which no timeout would bound.
        Self {
            h1: b.clone().http1_only(),
            h2: b.http2_only(),
        }
    }
}

/// What every connection task of a server shares.
struct ConnCtx<H> {
    handler: Arc<H>,
    builders: Arc<Builders>,
    opts: ServeOptions,
    shutdown: CancellationToken,
    force_close: CancellationToken,
    /// Held while the connection is open (see `serve`).
    open: mpsc::Sender<()>,
}

impl<H> Clone for ConnCtx<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            builders: self.builders.clone(),
            opts: self.opts.clone(),
            shutdown: self.shutdown.clone(),
            force_close: self.force_close.clone(),
            open: self.open.clone(),
        }
    }
}

async fn accept_loop<H: Handler>(listener: Listener, slots: Slots, ctx: ConnCtx<H>) {
    let tls = listener.tls.as_ref().map(|(_, cfg)| cfg.clone());
    loop {
        let permit = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            p = slots.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
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
        if let Some(n) = ctx.opts.send_buffer {
            if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(n) {
                tracing::debug!(error = %e, "cannot set SO_SNDBUF");
            }
        }
        let ctx = ctx.clone();
        let tls = tls.clone();
        let per_ip = slots.per_ip.clone();
        let proxy_protocol = listener.proxy_protocol;
        // Everything from here runs per connection, so a slow PROXY header or TLS handshake
        // holds up only its own connection, never the accept loop.
        tokio::spawn(async move {
            let (io, info) = if proxy_protocol {
                let timeout = ctx.opts.proxy_protocol_timeout;
                match read_proxy_header(stream, peer, timeout, &ctx.force_close).await {
                    Some(x) => x,
                    None => return,
                }
            } else {
                (
                    Rewind::new(bytes::Bytes::new(), stream),
                    ConnInfo::plain(peer),
                )
            };
            // Over the per-address cap, the connection is still served, but only to say 429
            // and close: the client learns why (a refused or reset socket says nothing), and
            // the slot it holds meanwhile is bounded by the header read timeout and the global
            // cap. The address is the PROXY header's when there is one: the balancer's own
            // would make every client one.
            let (ip_slot, refused) = match per_ip.as_ref().map(|c| c.acquire(info.peer.ip())) {
                None => (None, None),
                Some(Ok(slot)) => (Some(slot), None),
                Some(Err(e)) => (None, Some(Arc::new(e))),
            };
            // The connection's slots and its place in the drain, held by every request on it
            // and by an upgraded session (WebSocket-FLV) until it ends.
            let hold = ConnHold(Arc::new(HoldInner {
                _permit: permit,
                _ip_slot: ip_slot,
                _open: ctx.open.clone(),
                force_close: ctx.force_close.clone(),
            }));
            connection(io, info, tls, refused, hold, &ctx).await;
            drop(ctx);
        });
    }
}

/// One connection, from the TLS handshake (if any) to its end.
async fn connection<H: Handler>(
    stream: Rewind<TcpStream>,
    info: ConnInfo,
    tls: Option<Arc<rustls::ServerConfig>>,
    refused: Option<Arc<crate::error::GatewayError>>,
    hold: ConnHold,
    ctx: &ConnCtx<H>,
) {
    let Some(cfg) = tls else {
        // Plain HTTP/1.1: proxied bodies may be spliced (`crate::splice`); the splicing IO is
        // below `StallTimeout`, so spliced writes keep `send_timeout`.
        if ctx.opts.splice {
            let link = crate::splice::Link::default();
            let io = StallTimeout::new(
                crate::splice::SpliceIo::new(stream, link.clone()),
                ctx.opts.send_timeout,
            );
            let mut info = info.with_stall_flag(io.flag());
            info.splice = Some(link);
            return serve_plain(io, info, refused, hold, ctx).await;
        }
        let io = StallTimeout::new(stream, ctx.opts.send_timeout);
        let info = info.with_stall_flag(io.flag());
        return serve_plain(io, info, refused, hold, ctx).await;
    };
    // Below TLS, so a peer that stops reading fails the encrypted writes too.
    let io = StallTimeout::new(stream, ctx.opts.send_timeout);
    let info = info.with_stall_flag(io.flag());
    // Boxed: the TLS path's futures (the handshake, a TLS stream) are larger than the plain
    // path's, and inline they would size every plain connection's task (a live viewer's for
    // hours) for them.
    Box::pin(serve_tls(io, cfg, info, refused, hold, ctx)).await;
}

/// [`connection`] in plain HTTP/1.1: the own server first (`[server] own_http1`), hyper for
/// what it hands on; hyper alone for a connection over the per-address cap (its 429).
async fn serve_plain<H: Handler, IO>(
    io: IO,
    info: ConnInfo,
    refused: Option<Arc<crate::error::GatewayError>>,
    hold: ConnHold,
    ctx: &ConnCtx<H>,
) where
    IO: AsyncRead + AsyncWrite + crate::http1::Unread + Unpin + Send + 'static,
{
    let io = if ctx.opts.own_http1 && refused.is_none() {
        let serve = crate::http1::Serve {
            handler: &ctx.handler,
            header_read_timeout: ctx.opts.header_read_timeout,
            shutdown: &ctx.shutdown,
            force_close: &ctx.force_close,
        };
        match crate::http1::serve(io, &info, serve).await {
            crate::http1::Ended::Closed => return,
            crate::http1::Ended::Handoff(io) => io,
        }
    } else {
        io
    };
    // Boxed: hyper's connection is large, and most plain connections never get here.
    Box::pin(serve_io(io, false, info, refused, hold, ctx)).await;
}

/// [`connection`] over TLS: the handshake (bounded), then HTTP on the TLS stream.
async fn serve_tls<H: Handler>(
    io: StallTimeout<Rewind<TcpStream>>,
    cfg: Arc<rustls::ServerConfig>,
    info: ConnInfo,
    refused: Option<Arc<crate::error::GatewayError>>,
    hold: ConnHold,
    ctx: &ConnCtx<H>,
) {
    let peer = info.peer;
    let handshake = tokio::time::timeout(
        ctx.opts.tls_handshake_timeout,
        tokio_rustls::TlsAcceptor::from(cfg).accept(io),
    );
    let io = tokio::select! {
        r = handshake => match r {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = ctx.shutdown.cancelled() => return,
    };
    let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
    let info = ConnInfo {
        secure: true,
        ..info
    };
    serve_io(io, h2, info, refused, hold, ctx).await;
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

/// Serves HTTP on an established connection until it ends, shutdown drains it, or the drain
/// deadline drops it.
async fn serve_io<H: Handler, IO>(
    io: IO,
    h2: bool,
    info: ConnInfo,
    refused: Option<Arc<crate::error::GatewayError>>,
    hold: ConnHold,
    ctx: &ConnCtx<H>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    // HTTP/2 only: how many requests are in flight (their response bodies included), so a
    // connection with none is closed after `header_read_timeout`, as HTTP/1.1's header timeout
    // closes an idle keep-alive connection. A client that sends no preface is caught by it too.
    let in_flight = h2.then(|| Arc::new(watch::channel(Flights::default()).0));
    let refused_h2 = h2 && refused.is_some();
    let send_timeout = ctx.opts.send_timeout;
    let handler = ctx.handler.clone();
    let counter = in_flight.clone();
    let svc_hold = hold.clone();
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let handler = handler.clone();
        let refused = refused.clone();
        let info = info.clone();
        // Only a request that may take the connection over (WebSocket-FLV) needs the hold:
        // extensions are a map allocated on first insert.
        if req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(svc_hold.clone());
        }
        let guard = counter.as_ref().map(|c| InFlight::enter(c.clone()));
        async move {
            if let Some(e) = refused {
                let rid = crate::request_id::from_headers(req.headers());
                let close = req.version() < http::Version::HTTP_2;
                drop(req);
                let mut resp = e.to_response(rid.to_str().unwrap_or_default());
                resp.headers_mut().insert(crate::request_id::HEADER, rid);
                if close {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                return Ok::<_, std::convert::Infallible>(resp);
            }
            // Boxed per request: hyper keeps one allocation the size of the service's future
            // for a connection's whole life (its in-flight slot), and the handler's future is
            // several KiB; a live viewer's connection, open for hours, then holds a pointer.
            let req = req.map(RequestBody::Hyper);
            let resp = AssertUnwindSafe(Box::pin(handler.call(req, info)))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(%peer, "request handler panicked");
                    panicked()
                });
            // The request stays in flight until its body is done or dropped.
            Ok::<_, std::convert::Infallible>(match guard {
                None => resp,
                Some(g) => resp.map(|b| H2Body::new(b, g, send_timeout).boxed()),
            })
        }
    });
    let builder = if h2 {
        &ctx.builders.h2
    } else {
        &ctx.builders.h1
    };
    // A live route may answer `101` and take the connection (WebSocket-FLV, HTTP/1.1 only);
    // the upgraded IO is still the `StallTimeout` socket, so writes keep `send_timeout`.
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // Over the per-IP cap, an HTTP/2 connection closes once its first answer (the 429) is out,
    // as the HTTP/1.1 one does by `Connection: close`.
    let idle = match refused_h2 {
        true => idle_for(in_flight, Duration::ZERO, true),
        false => idle_for(in_flight, ctx.opts.header_read_timeout, false),
    };
    tokio::pin!(idle);
    let mut closing = false;
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
                return;
            }
            _ = ctx.shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            served = &mut idle, if !closing => {
                tracing::debug!(%peer, "idle HTTP/2 connection closed");
                if !served {
                    // No request ever: hyper would wait for the preface before its GOAWAY.
                    return;
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
                grace = Some(Box::pin(tokio::time::sleep(ctx.opts.header_read_timeout)));
            }
            // The client has had its GOAWAY and as long again to finish.
            _ = async { if let Some(g) = grace.as_mut() { g.await } }, if grace.is_some() => {
                return;
            }
            // Dropping the connection closes its socket.
            _ = ctx.force_close.cancelled() => {
                tracing::debug!(%peer, "closed at the drain deadline");
                return;
            }
        }
    }
}

/// The answer to a request whose handler panicked (both HTTP/1.1 servers and HTTP/2).
pub(crate) fn panicked() -> Response<Body> {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({"error": "internal"}),
    )
}

/// An HTTP/2 response body: keeps its request counted in flight, and applies `send_timeout`
/// per stream. On HTTP/1.1 a viewer that stops reading stalls the socket, and `StallTimeout`
/// closes it; on HTTP/2 it can stall one stream (by granting it no window) while the
/// connection lives on. hyper then simply stops pulling the body, so a watchdog notices a body
/// that handed hyper a frame and was not asked for the next one within `send_timeout`, and
/// drops what it holds (a node connection, a live viewer's place). The stream itself is reset
/// when hyper polls again or the connection ends.
struct H2Body {
    inner: Arc<std::sync::Mutex<Option<Body>>>,
    /// Polls so far, and whether the last one handed hyper a frame (shared with the watchdog).
    progress: Arc<StreamProgress>,
    /// Stopped when the body goes.
    watchdog: Option<tokio::task::AbortHandle>,
    _in_flight: InFlight,
}

#[derive(Default)]
struct StreamProgress {
    polls: std::sync::atomic::AtomicU64,
    handed: std::sync::atomic::AtomicBool,
}

impl H2Body {
    fn new(body: Body, in_flight: InFlight, limit: Duration) -> Self {
        let inner = Arc::new(std::sync::Mutex::new(Some(body)));
        let progress = Arc::new(StreamProgress::default());
        // A body hyper can take whole (it is done, or fits the stream's send buffer) holds
        // nothing worth a watchdog.
        let small = {
            let b = inner.lock().unwrap_or_else(|p| p.into_inner());
            b.as_ref().is_none_or(|b| {
                http_body::Body::is_end_stream(b)
                    || http_body::Body::size_hint(b)
                        .exact()
                        .is_some_and(|n| n <= CONNECTION_BUFFER as u64)
            })
        };
        let watchdog = (!small).then(|| {
            let inner = inner.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                let mut last = progress.polls.load(Relaxed);
                loop {
                    tokio::time::sleep(limit).await;
                    let now = progress.polls.load(Relaxed);
                    if now == last && progress.handed.load(Relaxed) {
                        let held = inner.lock().unwrap_or_else(|p| p.into_inner()).take();
                        drop(held);
                        tracing::debug!(
                            ?limit,
                            "HTTP/2 stream got no window; its body is released"
                        );
                        return;
                    }
                    last = now;
                }
            })
            .abort_handle()
        });
        Self {
            inner,
            progress,
            watchdog,
            _in_flight: in_flight,
        }
    }
}

impl Drop for H2Body {
    fn drop(&mut self) {
        if let Some(w) = &self.watchdog {
            w.abort();
        }
    }
}

impl http_body::Body for H2Body {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let this = self.get_mut();
        this.progress.polls.fetch_add(1, Relaxed);
        let mut inner = this.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(body) = inner.as_mut() else {
            return std::task::Poll::Ready(Some(Err("HTTP/2 stream stalled: no window".into())));
        };
        let r = std::pin::Pin::new(body).poll_frame(cx);
        this.progress
            .handed
            .store(matches!(r, std::task::Poll::Ready(Some(Ok(_)))), Relaxed);
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .lock()
            .map(|b| b.as_ref().is_some_and(http_body::Body::is_end_stream))
            .unwrap_or(false)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .lock()
            .ok()
            .and_then(|b| b.as_ref().map(http_body::Body::size_hint))
            .unwrap_or_default()
    }
}

/// An HTTP/2 connection's requests: how many are in flight now, and how many ever started. The
/// second is what tells "served one" apart from "served none": a request can start and end
/// between two looks at `now`, which then never shows it.
#[derive(Debug, Default, Clone, Copy)]
struct Flights {
    now: usize,
    started: u64,
}

/// A request in flight on an HTTP/2 connection; counted out when dropped.
struct InFlight(Arc<watch::Sender<Flights>>);

impl InFlight {
    fn enter(c: Arc<watch::Sender<Flights>>) -> Self {
        c.send_modify(|f| {
            f.now += 1;
            f.started += 1;
        });
        Self(c)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|f| f.now = f.now.saturating_sub(1));
    }
}

/// Resolves once no request has been in flight for `limit` (with `after_one`, counting only
/// from the end of a first request), telling whether any request was seen; never without a
/// counter.
async fn idle_for(
    count: Option<Arc<watch::Sender<Flights>>>,
    limit: Duration,
    after_one: bool,
) -> bool {
    let Some(count) = count else {
        return std::future::pending().await;
    };
    let mut rx = count.subscribe();
    if after_one && rx.wait_for(|f| f.started > 0).await.is_err() {
        return std::future::pending().await;
    }
    loop {
        if rx.wait_for(|f| f.now == 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            _ = tokio::time::sleep(limit) => return rx.borrow().started > 0,
            r = rx.changed() => {
                if r.is_err() {
                    return std::future::pending().await;
                }
            }
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
    /// Per address: whether it serves TLS (its URLs are `https://`).
    pub secure: Vec<bool>,
    /// Reloads the TLS listeners' certificates (SIGHUP and file changes already do).
    pub reload: tls::Reloader,
    /// `[metrics] listen`: where the metrics-only listener was bound, if it was.
    pub metrics_addr: Option<SocketAddr>,
    /// Adds and removes listeners of the main server while it runs.
    pub listeners: Listeners,
    /// Completes once the server has shut down and drained.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `addrs` (plain HTTP) and serves `handler` on them in a background task.
pub async fn start<H: Handler>(
    addrs: &[SocketAddr],
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    run(bind_all(addrs).await?, handler, opts, shutdown)
}

/// Serves `handler` on already-bound `listeners` in a background task. With TLS listeners, their
/// certificates are reloaded on SIGHUP and when their files change.
pub fn run<H: Handler>(
    listeners: Vec<Listener>,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    run_with_reload(listeners, handler, opts, shutdown, None)
}

/// [`run`], and with `config` SIGHUP also reloads the config file through it.
pub fn run_with_reload<H: Handler>(
    listeners: Vec<Listener>,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: CancellationToken,
    config: Option<crate::reload::Trigger>,
) -> std::io::Result<Running> {
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let secure = listeners.iter().map(Listener::is_tls).collect();
    let reload = tls::Reloader::default();
    for l in &listeners {
        if let Some((certs, _)) = &l.tls {
            reload.add(certs.clone());
        }
    }
    let tls = listeners.iter().any(Listener::is_tls);
    if tls {
        if let Some(every) = opts.tls_watch_interval {
            reload.watch(every, shutdown.clone());
        }
    }
    if tls || config.is_some() {
        on_hangup(reload.clone(), config, shutdown.clone());
    }
    let (tx, control) = mpsc::channel(4);
    let task = tokio::spawn(serve_controlled(
        listeners, handler, opts, shutdown, control,
    ));
    Ok(Running {
        addrs,
        secure,
        listeners: Listeners {
            tx,
            tls: reload.clone(),
        },
        reload,
        metrics_addr: None,
        task,
    })
}

/// The one place SIGHUP is handled: it reloads the TLS certificates `reload` holds, then the
/// config file through `config` (whose outcome the reload task logs and counts). Without TLS
/// listeners and a config file no handler is installed, and SIGHUP keeps its default action.
pub fn on_hangup(
    reload: tls::Reloader,
    config: Option<crate::reload::Trigger>,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; reload by file change only");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                s = hup.recv() => {
                    if s.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading TLS certificates and the config file");
                    let r = reload.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload()).await;
                    if let Some(c) = &config {
                        // The outcome is logged and counted by the reload task.
                        let _ = c.reload("SIGHUP").await;
                    }
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (reload, config, shutdown);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request that starts and ends before the idle watch first looks still counts as
    /// served: the refused HTTP/2 connection is closed after its 429, and an idle one that
    /// served a request gets its GOAWAY rather than a silent close.
    #[tokio::test(start_paused = true)]
    async fn a_request_over_before_the_idle_watch_looks_is_still_served() {
        let count = Arc::new(watch::channel(Flights::default()).0);
        drop(InFlight::enter(count.clone()));
        let after_one = tokio::time::timeout(
            Duration::from_secs(1),
            idle_for(Some(count.clone()), Duration::ZERO, true),
        )
        .await;
        assert_eq!(after_one, Ok(true));
        let idle = idle_for(Some(count.clone()), Duration::from_secs(5), false).await;
        assert!(idle, "the request was seen");
        let fresh = Arc::new(watch::channel(Flights::default()).0);
        assert!(!idle_for(Some(fresh), Duration::from_secs(5), false).await);
        // One in flight: not idle until it ends, then `limit` later.
        let held = InFlight::enter(count.clone());
        let start = tokio::time::Instant::now();
        let watch = tokio::spawn(idle_for(Some(count), Duration::from_secs(5), false));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!watch.is_finished());
        drop(held);
        assert_eq!(watch.await.ok(), Some(true));
        assert_eq!(start.elapsed(), Duration::from_secs(65));
    }

    /// Answers every request with one chunk, then a body that never ends.
    struct Endless;

    impl Handler for Endless {
        async fn call(&self, _req: Request<RequestBody>, _conn: ConnInfo) -> Response<Body> {
            let first = futures_util::stream::iter([Ok::<_, crate::body::BoxError>(
                http_body::Frame::data(bytes::Bytes::from_static(b"first")),
            )]);
            let body = StreamBody::new(first.chain(futures_util::stream::pending()));
            Response::new(BodyExt::boxed(body))
        }
    }

    use futures_util::StreamExt;

    /// A TLS listener on 127.0.0.1:0 with a fresh self-signed certificate for `a.test`.
    fn tls_listener(dir: &std::path::Path) -> ListenerSettings {
        let ck = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).expect("rcgen");
        let cert = dir.join("a.crt");
        let key = dir.join("a.key");
        std::fs::write(&cert, ck.cert.pem()).expect("write");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write");
        ListenerSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_protocol: false,
            tls: Some(crate::config::TlsSettings {
                certificates: vec![crate::config::CertificateFiles { cert, key }],
                key: "server.listen[0].tls".into(),
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_says_hello_is_closed_at_the_handshake_timeout() {
        let dir = tempfile::tempdir().expect("tmp");
        let shutdown = CancellationToken::new();
        let opts = ServeOptions {
            tls_handshake_timeout: Duration::from_secs(3),
            ..ServeOptions::default()
        };
        let running = run(
            bind(&[tls_listener(dir.path())]).await.expect("bind"),
            Arc::new(Endless),
            opts,
            shutdown.clone(),
        )
        .expect("run");
        assert_eq!(running.secure, vec![true]);
        let mut client = tokio::net::TcpStream::connect(running.addrs[0])
            .await
            .expect("connect");
        let connected_at = tokio::time::Instant::now();
        let mut buf = [0u8; 64];
        // Silent: no ClientHello. Only the handshake timeout can end this.
        let closed = tokio::time::timeout(Duration::from_secs(60), client.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "closed within the bound: {closed:?}"
        );
        let waited = connected_at.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(10),
            "closed at the timeout: {waited:?}"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), running.task)
            .await
            .expect("server task ends")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn an_h2_connection_with_no_request_is_closed_after_the_header_timeout() {
        let dir = tempfile::tempdir().expect("tmp");
        let listener = tls_listener(dir.path());
        let leaf =
            std::fs::read(&listener.tls.as_ref().expect("tls").certificates[0].cert).expect("read");
        let shutdown = CancellationToken::new();
        let opts = ServeOptions {
            header_read_timeout: Duration::from_secs(5),
            ..ServeOptions::default()
        };
        let running = run(
            bind(&[listener]).await.expect("bind"),
            Arc::new(Endless),
            opts,
            shutdown.clone(),
        )
        .expect("run");
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(&leaf).expect("pem"))
            .expect("root");
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(running.addrs[0])
            .await
            .expect("connect");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(
                rustls_pki_types::ServerName::try_from("a.test").expect("name"),
                tcp,
            )
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let opened = tokio::time::Instant::now();
        // No preface, no request: the server's SETTINGS may arrive, then the close.
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the idle h2 connection was closed");
        let waited = opened.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(30),
            "closed at the idle bound: {waited:?}"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), running.task)
            .await
            .expect("server task ends")
            .expect("no panic");
    }

    /// Answers an `Upgrade` request with `101` and keeps the upgraded connection (and its hold)
    /// until the client closes it; anything else gets a plain `200`.
    struct Upgrader;

    impl Handler for Upgrader {
        async fn call(&self, mut req: Request<RequestBody>, _conn: ConnInfo) -> Response<Body> {
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
            &[SocketAddr::from(([127, 0, 0, 1], 0))],
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
            &[SocketAddr::from(([127, 0, 0, 1], 0))],
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
