//! The gateway's request path, as named phases: route → auth → choose upstream → act
//! (redirect or proxy) → log and count. Errors from any phase become a response in `error.rs`.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::body::RequestBody;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use crate::access_log::{AccessSink, Entry, NodeName};
use crate::auth::{
    now_unix, AuthHook, HlsSessions, HookQuery, RequestFacts, Session, SignedUrls, TokenAuth,
    ViewerAuth,
};
use crate::body::{Body, BoxError};
use crate::client_addr::{self, Client, TrustedProxies};
use crate::config::{Action, AuthMode, NodeSettings, RouteSettings, Settings, Target};
use crate::cors;
use crate::error::GatewayError;
use crate::fanout::{EndWatch, Hubs, NodeSource, ViewerInfo, HTTP_FLV, WS_FLV};
use crate::limits::{Counter, RateLimit};
use crate::metrics::{self, Metrics, NodeMetrics, RouteCounters};
use crate::proxy::playlist::{self, Kind, Place};
use crate::proxy::{self, Forward};
use crate::redirect;
use crate::registry::{self, Lookup, Node, Registry};
use crate::reload::ReloadError;
use crate::request_id;
use crate::router::{Captures, STREAM};
use crate::server::{self, ConnInfo, Handler, Running, ServeOptions};
use crate::stall_timeout::StallFlag;
use crate::upstream::balance::{Groups, InFlight, Use};
use crate::upstream::Transport;
use crate::upstream_path::{strip_credentials, BaseUrl};
use crate::websocket;

/// The gateway: the parts that live as long as the process, and the config applied to each
/// request, which a reload swaps whole (see `crate::reload`). A request clones the applied
/// config's `Arc` once at its start, so it sees one config from its first phase to its last.
pub struct Gateway {
    shared: Arc<Shared>,
    /// The config requests are served with now; a reload replaces the `Arc`.
    active: RwLock<Arc<Active>>,
}

/// What lives across reloads: live pulls and their viewers, the connection pool, the registry,
/// metrics and the access log.
struct Shared {
    registry: Arc<dyn Registry>,
    /// The one transport to nodes (pool, node health). Each applied config takes a clone with
    /// its own timeouts.
    transport: Transport,
    public_url: BaseUrl,
    /// One fan-out hub per live stream.
    hubs: Arc<Hubs>,
    /// This gateway's place in a fleet of gateways (`[fleet]`), restart-only.
    fleet: Option<Arc<crate::fleet::Fleet>>,
    /// The one metrics registry: request counters by route, the transport's by node, and the
    /// collectors that read hubs, registry and process at scrape time.
    metrics: Arc<Metrics>,
    /// Where access lines go (`None`: `[log] access = "off"`).
    access: Option<Arc<AccessSink>>,
    /// Cancelled at shutdown: a response cut then is logged `closed=shutdown`.
    shutdown: CancellationToken,
    /// Asks for a config reload; set when the gateway serves a config file.
    reload: crate::reload::Slot,
    /// Adds and removes the main server's listeners; set once it runs (a reload applies
    /// `server.listen` through it).
    listeners: std::sync::OnceLock<server::Listeners>,
    /// The listeners serving now: each entry as configured, and the address it is bound to.
    bound: std::sync::Mutex<Vec<(crate::config::ListenerSettings, SocketAddr)>>,
    /// The HLS / VOD cache (`cache = "hls"|"vod"` routes); kept across reloads.
    cache: crate::cache::Cache,
    /// The pipes of spliced bodies (`None`: `[server] splice = false`); restart-only.
    splice: Option<Arc<crate::splice::Pipes>>,
}

/// Everything the request path takes from the config file, built at start and at each reload.
struct Active {
    shared: Arc<Shared>,
    /// The settings this was built from, with the restart-only parts as the process runs them
    /// (the next reload compares against these).
    settings: Settings,
    routes: Vec<RouteSettings>,
    /// Request counters per route, by index in `routes`.
    route_counters: Vec<Arc<RouteCounters>>,
    /// Cache counters per route, by index in `routes` (`None`: the route is not cached).
    cache_counters: Vec<Option<Arc<crate::cache::Counters>>>,
    /// The shared transport with this config's header and body timeouts.
    transport: Transport,
    /// Tokens, signing keys and the secure_link expression.
    auth: ViewerAuth,
    /// How long a `sign_location` redirect's link stays valid.
    redirect_link_ttl: std::time::Duration,
    /// The registry's writers (REST API, media-server hooks), served before the route table.
    admin: crate::admin::Admin,
    /// `[limits] requests_per_second_per_ip`: one token bucket per client address.
    rate: Option<Arc<RateLimit>>,
    /// `[limits] live_viewers_per_ip`: open live bodies per client address.
    viewers: Option<Arc<Counter>>,
    /// Who may read `/metrics` on this listener; `None` when `[metrics] listen` serves it on
    /// its own (the path is then an ordinary one here).
    metrics_access: Option<metrics::Access>,
    /// `server.trusted_proxies`: whose `X-Forwarded-For` names the client.
    trusted_proxies: TrustedProxies,
    /// `live.websocket_ping_interval`, for WebSocket-FLV viewers.
    ws_ping_interval: std::time::Duration,
    /// Stops this config's active health checks when a reload replaces it.
    checks: CancellationToken,
    /// `[[groups]]`: the node pools routes may name, with their balancing state.
    groups: Arc<Groups>,
}

/// The path metrics are served at.
pub const METRICS_PATH: &str = "/metrics";

/// A matched route: its index in the route table (for its counters), itself, its captures.
type Found<'a> = (usize, &'a RouteSettings, Captures);

/// Where a request goes, decided once from its path.
enum Dest<'a> {
    /// The registry's writers (`/api/v1`, `/hooks`), with their own auth.
    Admin,
    /// `/metrics` on the main listener.
    Metrics,
    /// The route table's answer.
    Route(Result<Found<'a>, GatewayError>),
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("registry: {0}")]
    Registry(#[from] registry::RegistryError),
}

impl Gateway {
    /// Builds the gateway over `registry` (already holding the static nodes). An access log
    /// file that cannot be opened is reported and replaced by stderr; [`start`] refuses to
    /// start instead.
    pub fn new(
        settings: &Settings,
        registry: Arc<dyn Registry>,
        public_url: BaseUrl,
        shutdown: CancellationToken,
    ) -> Self {
        let access = AccessSink::start(&settings.log, &shutdown).unwrap_or_else(|e| {
            tracing::error!(error = %e, "access log: writing to stderr instead");
            let stderr = crate::config::LogSettings {
                access: crate::config::AccessTarget::Stderr,
                ..settings.log.clone()
            };
            AccessSink::start(&stderr, &shutdown).ok().flatten()
        });
        Self::with_access_log(settings, registry, public_url, shutdown, access)
    }

    fn with_access_log(
        settings: &Settings,
        registry: Arc<dyn Registry>,
        public_url: BaseUrl,
        shutdown: CancellationToken,
        access: Option<Arc<AccessSink>>,
    ) -> Self {
        let node_metrics = Arc::new(NodeMetrics::new(
            metrics::configured_nodes(settings),
            settings.metrics.max_nodes,
        ));
        let transport = Transport::new(&settings.upstream).with_metrics(node_metrics.clone());
        let hubs = Arc::new(Hubs::new(
            settings.live.clone(),
            transport.clone(),
            shutdown.clone(),
        ));
        let cache = crate::cache::Cache::new(&settings.cache);
        let splice = settings.server.splice.then(|| {
            crate::splice::Pipes::new(settings.server.splice_pipes, crate::splice::pipe::PIPE_SIZE)
        });
        let mut metrics = Metrics::new(settings, node_metrics, &hubs, registry.clone())
            .with_collector(Box::new(cache.collector()))
            .with_access_log_dropped(
                access
                    .as_ref()
                    .map(|a| a.dropped_counter())
                    .unwrap_or_default(),
            );
        if let Some(p) = &splice {
            metrics = metrics.with_collector(Box::new(p.collector()));
        }
        let metrics = Arc::new(metrics);
        let fleet = settings.fleet.as_ref().and_then(|f| {
            crate::fleet::Fleet::start(f, &public_url, &hubs, &shutdown)
                .map_err(|e| tracing::error!(error = %e, "fleet: off"))
                .ok()
        });
        let shared = Arc::new(Shared {
            registry,
            transport,
            public_url,
            hubs,
            fleet,
            metrics,
            access,
            shutdown,
            reload: crate::reload::Slot::default(),
            listeners: std::sync::OnceLock::new(),
            bound: std::sync::Mutex::new(Vec::new()),
            cache,
            splice,
        });
        let active = Active::build(&shared, settings.clone(), None);
        shared.metrics.groups.set(active.groups.clone());
        Self {
            shared,
            active: RwLock::new(Arc::new(active)),
        }
    }

    /// Access lines dropped because the log writer could not keep up.
    pub fn access_log_dropped(&self) -> u64 {
        self.shared.access.as_ref().map_or(0, |a| a.dropped())
    }

    /// The live hubs (for metrics and listings).
    pub fn hubs(&self) -> &Arc<Hubs> {
        &self.shared.hubs
    }

    /// The metrics registry (the metrics listener serves it).
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The config requests are served with now.
    fn current(&self) -> Arc<Active> {
        match self.active.read() {
            Ok(a) => a.clone(),
            // A panic while swapping cannot leave a half-written `Arc`: the value is whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Brings the registry's static nodes from `old` to `new`: nodes gone from the file are
    /// removed (with their stream records), new ones added, a changed URL or stream list
    /// rewritten. Returns the ids added and removed.
    async fn sync_nodes(
        &self,
        old: &[NodeSettings],
        new: &[NodeSettings],
    ) -> Result<(Vec<String>, Vec<String>), ReloadError> {
        let reg = &self.shared.registry;
        let fail = |e: registry::RegistryError| ReloadError::Apply(format!("registry: {e}"));
        let mut removed = Vec::new();
        for o in old {
            if !new.iter().any(|n| n.id == o.id) {
                reg.remove_node(&o.id).await.map_err(fail)?;
                removed.push(o.id.clone());
            }
        }
        let mut added = Vec::new();
        for n in new {
            let before = old.iter().find(|o| o.id == n.id);
            if before.is_none_or(|o| o.url != n.url) {
                reg.put_node(&n.id, &n.url, None).await.map_err(fail)?;
            }
            if before.is_none() {
                added.push(n.id.clone());
            }
            for s in &n.streams {
                if before.is_none_or(|o| !o.streams.contains(s)) {
                    // Config-file records never expire, whatever `stream_lease` says.
                    reg.announce_fixed(s, &n.id).await.map_err(fail)?;
                }
            }
            for s in before.map(|o| o.streams.as_slice()).unwrap_or_default() {
                if !n.streams.contains(s) {
                    reg.withdraw(s, &n.id).await.map_err(fail)?;
                }
            }
        }
        Ok((added, removed))
    }
}

impl Gateway {
    /// Which of `listen` are not served yet (to bind and add), and which running listeners
    /// `listen` no longer has (to remove, with their bound address). Entries match by their
    /// whole settings; `127.0.0.1:0` stays the listener already bound for it.
    fn listener_changes(
        &self,
        listen: &[crate::config::ListenerSettings],
    ) -> (
        Vec<crate::config::ListenerSettings>,
        Vec<(crate::config::ListenerSettings, SocketAddr)>,
    ) {
        let key = |l: &crate::config::ListenerSettings| format!("{l:?}");
        let bound = self.shared.bound.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = vec![false; bound.len()];
        let mut add = Vec::new();
        for l in listen {
            match (0..bound.len()).find(|&i| !kept[i] && key(&bound[i].0) == key(l)) {
                Some(i) => kept[i] = true,
                None => add.push(l.clone()),
            }
        }
        let remove = bound
            .iter()
            .zip(kept)
            .filter(|(_, k)| !k)
            .map(|(b, _)| b.clone())
            .collect();
        (add, remove)
    }
}

impl crate::reload::Target for Gateway {
    async fn apply(&self, settings: Settings) -> Result<crate::reload::Applied, ReloadError> {
        let old = self.current();
        let live_listeners = self.shared.listeners.get();
        // New listeners are bound first: a taken port refuses the reload before anything
        // changed.
        let (to_add, to_remove) = match live_listeners {
            Some(_) => self.listener_changes(&settings.server.listen),
            None => (Vec::new(), Vec::new()),
        };
        let added = server::bind(&to_add)
            .await
            .map_err(|e| ReloadError::Apply(format!("server.listen: {e}")))?;
        let (nodes_added, nodes_removed) = self
            .sync_nodes(&old.settings.nodes, &settings.nodes)
            .await?;
        let mut applied = crate::reload::Applied {
            routes: settings.routes.len(),
            nodes: settings.nodes.len(),
            nodes_added,
            nodes_removed,
            needs_restart: restart_only_changes(&old.settings, &settings, live_listeners.is_some()),
            ..Default::default()
        };
        let listen = settings.server.listen.clone();
        let mut next = Active::build(&self.shared, settings, Some(&old));
        if let Some(ctl) = live_listeners {
            next.settings.server.listen = listen;
            let mut now = Vec::new();
            for (l, cfg) in added.into_iter().zip(to_add) {
                let scheme = if l.is_tls() { "https" } else { "http" };
                let addr = l
                    .local_addr()
                    .map_err(|e| ReloadError::Apply(e.to_string()))?;
                ctl.add(l)
                    .await
                    .map_err(|e| ReloadError::Apply(e.to_string()))?;
                applied.listeners_added.push(format!("{scheme}://{addr}"));
                now.push((cfg, addr));
            }
            for (cfg, addr) in &to_remove {
                let scheme = if cfg.tls.is_some() { "https" } else { "http" };
                ctl.remove(*addr)
                    .await
                    .map_err(|e| ReloadError::Apply(e.to_string()))?;
                applied.listeners_removed.push(format!("{scheme}://{addr}"));
            }
            let mut bound = self.shared.bound.lock().unwrap_or_else(|p| p.into_inner());
            bound.retain(|(_, a)| !to_remove.iter().any(|(_, r)| r == a));
            bound.extend(now);
        }
        let next = Arc::new(next);
        self.shared.metrics.groups.set(next.groups.clone());
        match self.active.write() {
            Ok(mut a) => *a = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        // Requests already running keep the old config until they end; its health checks stop
        // now (the new one runs its own).
        old.checks.cancel();
        Ok(applied)
    }

    fn record(&self, ok: bool) {
        self.shared.metrics.config_reload(ok);
    }
}

/// Whether `new` keeps the HLS session key `old` drew at random: rebuilding would draw another
/// and end every running session.
fn same_random_session_key(old: &Settings, new: &Settings) -> bool {
    let (o, n) = (&old.auth.hls_session, &new.auth.hls_session);
    o.secret.is_none()
        && n.secret.is_none()
        && o.ttl == n.ttl
        && o.max_age == n.max_age
        && o.bind_ip == n.bind_ip
}

/// The settings a reload cannot change in a running process, named as the config names them,
/// when `new` differs from `old` there. Compared by their debug form: every settings type
/// has one, and a change in any field shows in it.
fn restart_only_changes(old: &Settings, new: &Settings, listeners_live: bool) -> Vec<&'static str> {
    fn differ<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut out = Vec::new();
    let (o, n) = (&old.server, &new.server);
    if differ(&o.listen, &n.listen) && !listeners_live {
        out.push("server.listen");
    }
    if o.https_redirect != n.https_redirect {
        out.push("server.https_redirect");
    }
    let server_rest = |s: &crate::config::ServerSettings| crate::config::ServerSettings {
        listen: Vec::new(),
        https_redirect: None,
        trusted_proxies: TrustedProxies::default(),
        ..s.clone()
    };
    if differ(&server_rest(o), &server_rest(n)) {
        out.push("server");
    }
    if old.limits.connections_per_ip != new.limits.connections_per_ip {
        out.push("limits.connections_per_ip");
    }
    let (o, n) = (&old.upstream, &new.upstream);
    if o.connect_timeout != n.connect_timeout
        || o.tcp_keepalive != n.tcp_keepalive
        || o.tls_handshake_timeout != n.tls_handshake_timeout
        || o.max_idle_per_node != n.max_idle_per_node
        || o.idle_timeout != n.idle_timeout
        || o.max_fails != n.max_fails
        || o.fail_timeout != n.fail_timeout
    {
        out.push("upstream (pool, connect and health settings)");
    }
    if differ(&old.live, &new.live) {
        out.push("live");
    }
    if old.registry.backend != new.registry.backend {
        out.push("registry.backend");
    }
    if old.log != new.log {
        out.push("log");
    }
    if old.fleet != new.fleet {
        out.push("fleet");
    }
    if old.metrics.listen != new.metrics.listen
        || old.metrics.top_streams != new.metrics.top_streams
        || old.metrics.max_nodes != new.metrics.max_nodes
    {
        out.push("metrics (listen, top_streams, max_nodes)");
    }
    out
}

impl Active {
    /// Builds the per-request config from `settings`. With `old` (a reload), what holds state
    /// that a rebuild would lose is kept when its settings did not change: the rate buckets and
    /// live-viewer counts, the JWT key set (a JWKS URL would be empty until fetched again), and
    /// the HLS session key when it is a random one.
    fn build(shared: &Arc<Shared>, settings: Settings, old: Option<&Active>) -> Self {
        let shutdown = &shared.shutdown;
        let transport = shared.transport.with_timeouts(&settings.upstream);
        let checks = shutdown.child_token();
        transport.spawn_health_checks(&settings.nodes, &checks);
        let hook = settings
            .auth
            .hook
            .as_ref()
            .map(|h| AuthHook::new(h, transport.clone()));
        let kept = |f: fn(&Settings) -> String| old.filter(|o| f(&o.settings) == f(&settings));
        let rate = match kept(|s| format!("{:?}", s.limits.rate)) {
            Some(o) => o.rate.clone(),
            None => settings.limits.rate.map(|r| Arc::new(RateLimit::new(r))),
        };
        if let (Some(rate), None) = (&rate, kept(|s| format!("{:?}", s.limits.rate))) {
            // Full buckets are dropped periodically so the map holds only recent clients; the
            // task ends with the last holder of the buckets.
            let rate = Arc::downgrade(rate);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::limits::PRUNE_INTERVAL);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => match rate.upgrade() {
                            Some(r) => r.prune(),
                            None => return,
                        },
                    }
                }
            });
        }
        let viewers = match kept(|s| format!("{:?}", s.limits.live_viewers_per_ip)) {
            Some(o) => o.viewers.clone(),
            None => settings
                .limits
                .live_viewers_per_ip
                .map(|n| Counter::new(n, "live viewers")),
        };
        // `auth = "jwt"`: the key set, with its JWKS file or URL refreshed in the background
        // (the refresh ends with the last holder of the key set).
        let jwt = match kept(|s| format!("{:?}", s.auth.jwt)) {
            Some(o) => o.auth.jwt.clone(),
            None => settings.auth.jwt.clone().map(|s| {
                let jwt = crate::auth::JwtAuth::new(s);
                jwt.spawn_refresh(shutdown);
                jwt.spawn_url_refresh(transport.clone(), shutdown);
                jwt
            }),
        };
        let sessions = match old {
            Some(o) if same_random_session_key(&o.settings, &settings) => o.auth.sessions.clone(),
            _ => HlsSessions::new(&settings.auth.hls_session),
        };
        let groups = Arc::new(Groups::build(
            &settings.groups,
            &settings.nodes,
            old.map(|o| &*o.groups),
        ));
        let mut stored = settings.clone();
        if let Some(o) = old {
            // What the process still runs with, whatever the file says now.
            stored.server = crate::config::ServerSettings {
                trusted_proxies: settings.server.trusted_proxies.clone(),
                ..o.settings.server.clone()
            };
            stored.upstream = crate::config::UpstreamSettings {
                response_header_timeout: settings.upstream.response_header_timeout,
                body_idle_timeout: settings.upstream.body_idle_timeout,
                ..o.settings.upstream.clone()
            };
            stored.live = o.settings.live.clone();
            stored.registry.backend = o.settings.registry.backend.clone();
            stored.log = o.settings.log.clone();
            stored.fleet = o.settings.fleet.clone();
            stored.metrics.listen = o.settings.metrics.listen;
            stored.metrics.top_streams = o.settings.metrics.top_streams;
            stored.metrics.max_nodes = o.settings.metrics.max_nodes;
            stored.limits.connections_per_ip = o.settings.limits.connections_per_ip;
        }
        Self {
            shared: shared.clone(),
            route_counters: shared.metrics.route_counters(&settings.routes),
            cache_counters: shared.cache.configure(&settings.cache, &settings.routes),
            metrics_access: stored
                .metrics
                .listen
                .is_none()
                .then(|| metrics::Access::new(&settings)),
            ws_ping_interval: settings.live.websocket_ping_interval,
            rate,
            trusted_proxies: settings.server.trusted_proxies.clone(),
            viewers,
            admin: crate::admin::Admin::new(
                &settings,
                shared.registry.clone(),
                shared.hubs.clone(),
                transport.health().clone(),
                shared.reload.clone(),
                groups.clone(),
                shared.fleet.clone(),
            )
            .with_cache(shared.cache.clone()),
            routes: settings.routes.clone(),
            transport,
            auth: ViewerAuth {
                tokens: TokenAuth::new(settings.auth.tokens.clone()),
                signed: SignedUrls::new(settings.auth.signing_keys.clone()),
                secure_link: settings.auth.secure_link.clone(),
                hook,
                jwt,
                sessions,
            },
            redirect_link_ttl: settings.auth.redirect_link_ttl,
            checks,
            groups,
            settings: stored,
        }
    }

    fn find_route(&self, path: &str) -> Result<Found<'_>, GatewayError> {
        self.routes
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.pattern.matches(path).map(|c| (i, r, c)))
            .ok_or(GatewayError::NoRoute)
    }

    /// Where `path` goes.
    fn destination(&self, path: &str) -> Dest<'_> {
        if self.metrics_access.is_some() && path == METRICS_PATH {
            Dest::Metrics
        } else if self.admin.handles(path) {
            // The admin API, the hooks, and the dashboard's files (`[ui]`).
            Dest::Admin
        } else {
            Dest::Route(self.find_route(path))
        }
    }

    /// The counters a request to `dest` is counted in.
    fn counters(&self, dest: &Dest<'_>) -> Arc<RouteCounters> {
        match dest {
            Dest::Admin => self.shared.metrics.admin(),
            Dest::Metrics => self.shared.metrics.scrape(),
            Dest::Route(Ok((i, _, _))) => self
                .route_counters
                .get(*i)
                .unwrap_or(self.shared.metrics.unrouted()),
            Dest::Route(Err(_)) => self.shared.metrics.unrouted(),
        }
        .clone()
    }

    /// Candidate nodes for the request, healthy ones first (see `upstream::health`).
    fn choose_nodes(
        &self,
        route: &RouteSettings,
        caps: &Captures,
    ) -> Result<Vec<Arc<Node>>, GatewayError> {
        let nodes = self.candidates(route, caps)?;
        if nodes.len() < 2 && !self.transport.health().any_drained() {
            return Ok(nodes);
        }
        let ordered = self.transport.order(&nodes);
        if ordered.is_empty() && !nodes.is_empty() {
            // Every candidate is drained: nothing new goes to a drained node.
            let what = caps.get(STREAM).unwrap_or(route.public_prefix.as_str());
            return Err(GatewayError::Draining(what.to_string()));
        }
        Ok(ordered)
    }

    /// Phase 3: the candidates for a request that `action` will serve from `path` on the node,
    /// and, when a group's member was picked for a proxied request, the guard that counts it
    /// in flight (held by the response body).
    fn choose(
        &self,
        route: &RouteSettings,
        caps: &Captures,
        action: Action,
        path: &str,
    ) -> Result<(Vec<Arc<Node>>, Option<InFlight>), GatewayError> {
        let Target::Group(id) = &route.target else {
            return Ok((self.choose_nodes(route, caps)?, None));
        };
        let group = self.group(id)?;
        let purpose = match action {
            // The hub keys its pull by the group's fixed order (see `Action::Live`).
            Action::Live => return Ok((self.candidates(route, caps)?, None)),
            Action::Redirect => Use::Redirect,
            Action::Proxy | Action::Auto => Use::Proxy,
        };
        // The namespaced key (`app/stream` when the route captures `{app}`), as the hub keys it.
        let stream = caps.get(STREAM).map(|_| caps.stream_key());
        let key = group.key(path, stream.as_deref());
        let pick = group.pick(key, self.transport.health(), purpose)?;
        Ok((pick.nodes, pick.guard))
    }

    fn group(&self, id: &str) -> Result<&Arc<crate::upstream::balance::Group>, GatewayError> {
        self.groups
            .get(id)
            .ok_or_else(|| GatewayError::Internal(format!("configured group {id} missing")))
    }

    fn candidates(
        &self,
        route: &RouteSettings,
        caps: &Captures,
    ) -> Result<Vec<Arc<Node>>, GatewayError> {
        match &route.target {
            Target::Node(id) => self
                .shared
                .registry
                .node(id)
                .map(|n| vec![n])
                .ok_or_else(|| GatewayError::Internal(format!("configured node {id} missing"))),
            Target::Url(url) => Ok(vec![Arc::new(Node {
                id: url.origin(),
                url: url.clone(),
                expires: None,
            })]),
            // A group's members in its ring order for the request (live routes: the hub's
            // source, the same list whatever the health); proxy and redirect routes pick in
            // `choose`.
            Target::Group(id) => {
                let group = self.group(id)?;
                let path = route.upstream.render(caps);
                let stream = caps.get(STREAM).map(|_| caps.stream_key());
                Ok(group.preference(group.key(&path, stream.as_deref()).unwrap_or(&path)))
            }
            Target::Registry => {
                let key = caps.stream_key();
                let stream = key.as_ref();
                match self.shared.registry.resolve(stream) {
                    Lookup::Found(nodes) => Ok(nodes),
                    Lookup::AllDown => Err(GatewayError::NodeUnavailable(stream.to_string())),
                    Lookup::NotFound => Err(GatewayError::StreamNotFound(stream.to_string())),
                }
            }
        }
    }

    /// `dest` is where `call` found the path goes; `link` is the connection's splice link
    /// (plain HTTP/1.1 with `[server] splice`).
    #[allow(clippy::too_many_arguments)]
    async fn handle(
        &self,
        req: Request<RequestBody>,
        dest: Dest<'_>,
        counters: &Arc<RouteCounters>,
        client: &Client,
        link: Option<&crate::splice::Link>,
        rid: &HeaderValue,
        log: &mut Option<AccessLog>,
    ) -> Result<Response<Body>, GatewayError> {
        // Phase 0: framing nginx would refuse (duplicate or missing Host, odd Transfer-Encoding).
        proxy::headers::check_request(req.version(), req.headers())?;
        let found = match dest {
            // The registry's writers have their own auth and never reach a node.
            Dest::Admin => {
                let call = self.admin.call(req, rid.to_str().unwrap_or_default());
                return Ok(Box::pin(call).await);
            }
            Dest::Metrics => {
                if let Some(access) = &self.metrics_access {
                    access.check(req.headers(), client.ip)?;
                }
                return self.shared.metrics.respond(req.method(), req.headers());
            }
            Dest::Route(found) => found,
        };
        // Phase 1: route.
        let (route_index, route, caps) = found?;
        let caps = caps.validate()?;
        // Phase 2: auth, before anything touches a node. On an `hls_session` route, a URL the
        // gateway signed for this path stands in for the route's auth (see `auth::session`).
        let session = if route.hls_session {
            let uri = req.uri();
            self.auth
                .sessions
                .check(uri.path(), uri.query(), client.ip, now_unix())?
        } else {
            None
        };
        if let Some(s) = &session {
            // A session is a capability to read what a playlist listed, nothing more.
            if !matches!(*req.method(), Method::GET | Method::HEAD) {
                return Err(GatewayError::SessionInvalid);
            }
            if let Some(log) = log {
                log.session.clone_from(&s.id);
            }
        }
        // A gateway of the fleet pulling a live route shows the fleet's pass instead of a
        // viewer's credentials (`fleet::signature`); a forged or expired pass is refused.
        let pass = match (&self.shared.fleet, route.action) {
            (Some(f), Action::Live) => f.verify(req.headers(), req.uri().path())?,
            _ => None,
        };
        if route.auth != AuthMode::None && session.is_none() && pass.is_none() {
            let host = req
                .uri()
                .host()
                .or_else(|| {
                    req.headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                })
                .unwrap_or("");
            let facts = RequestFacts {
                headers: req.headers(),
                path: req.uri().path(),
                query: req.uri().query(),
                host,
                client: client.ip,
                stream: caps.get(STREAM),
            };
            match (&self.auth.hook, route.auth) {
                (Some(hook), AuthMode::Hook) => {
                    Box::pin(hook.check(hook_query(route, &caps, &facts, rid))).await?
                }
                _ => self.auth.check(route.auth, &facts, now_unix())?,
            }
        }
        // A fixed-node live route serves only the names it lists: anything else is refused here,
        // before a pull could start on the node.
        if let Some(list) = &route.streams {
            let stream = caps.get(STREAM).unwrap_or_default();
            if !list.allows(stream) {
                return Err(GatewayError::StreamNotFound(stream.to_string()));
            }
        }
        // Phase 3: choose the upstream (an `auto` route picks redirect or proxy for this client
        // first: a group counts a redirect's load differently).
        let action = match route.action {
            Action::Auto if follows_redirects(req.headers()) => Action::Redirect,
            Action::Auto => Action::Proxy,
            a => a,
        };
        let path = route.upstream.render(&caps);
        let (nodes, guard) = self.choose(route, &caps, action, &path)?;
        let query = strip_credentials(req.uri().query());
        // Phase 4: act.
        if let Some(log) = log {
            log.decision = match action {
                Action::Redirect => "redirect",
                Action::Proxy => "proxy",
                Action::Live => "live",
                Action::Auto => "",
            };
        }
        let mut resp = self
            .act(
                action,
                route,
                &caps,
                req,
                client,
                link,
                rid,
                log,
                Upstream {
                    nodes,
                    path,
                    query,
                    session,
                    guard,
                    cache: self.cache_counters.get(route_index).cloned().flatten(),
                    pass,
                },
                counters,
            )
            .await?;
        if route.action == Action::Auto {
            // The answer depends on this header: a cache must not serve one client's to another.
            resp.headers_mut().append(
                http::header::VARY,
                HeaderValue::from_static("Sec-Fetch-Dest"),
            );
        }
        Ok(resp)
    }

    /// Phase 4: redirect, serve live, or proxy.
    ///
    /// Every await below that reaches another component (the transport, the cache, the hubs,
    /// the fleet) is boxed: an `async fn`'s state is as large as its largest await, and hyper
    /// moves the whole request future once per request, so inline sub-futures made a redirect
    /// copy ~10 KB of state it never used. Boxed, each path pays only for its own.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        action: Action,
        route: &RouteSettings,
        caps: &Captures,
        mut req: Request<RequestBody>,
        client: &Client,
        link: Option<&crate::splice::Link>,
        rid: &HeaderValue,
        log: &mut Option<AccessLog>,
        upstream: Upstream,
        counters: &Arc<RouteCounters>,
    ) -> Result<Response<Body>, GatewayError> {
        let Upstream {
            nodes,
            path,
            query,
            session,
            mut guard,
            cache,
            pass,
        } = upstream;
        match action {
            Action::Auto => Err(GatewayError::Internal("auto not resolved".into())),
            Action::Redirect => {
                let node = nodes
                    .first()
                    .ok_or_else(|| GatewayError::Internal("no node".into()))?;
                if let Some(log) = log {
                    log.node = NodeName::Node(node.clone());
                }
                if !route.sign_location {
                    return redirect::respond(route.status, &node.url, &path, query.as_deref());
                }
                // The Location carries the node's nginx `secure_link` signature. Config makes a
                // `sign_location` route need the expression; without it, refuse rather than
                // hand out an unsigned link.
                let sl = self.auth.secure_link.as_ref().ok_or_else(|| {
                    GatewayError::Internal("sign_location without a secure_link expression".into())
                })?;
                let expires = now_unix().saturating_add(self.redirect_link_ttl.as_secs());
                let remote_addr = client.ip.to_string();
                let q = sl.sign_location(&node.url, &path, query.as_deref(), &remote_addr, expires);
                redirect::respond(route.status, &node.url, &path, Some(&q))
            }
            Action::Live => {
                if !matches!(*req.method(), Method::GET | Method::HEAD) {
                    return Err(GatewayError::MethodNotAllowed(Cow::Borrowed("GET, HEAD")));
                }
                // The registry's key (`app/stream` on a namespaced route) also keys the hub, so
                // one name in two applications is two streams.
                let key = caps.stream_key();
                let stream = key.as_ref();
                let source = match route.target {
                    Target::Registry => NodeSource::Registry(self.shared.registry.clone()),
                    // The route's own nodes, not `nodes` (ordered by health, drained ones left
                    // out): the hub's key must not change with them, or one stream would get a
                    // second pull. The pull orders (and skips drained nodes) by itself.
                    _ => {
                        drop(nodes);
                        NodeSource::Fixed(self.candidates(route, caps)?)
                    }
                };
                // `[fleet]`: maybe send the viewer to the gateway already serving the stream,
                // else pull through the fleet's tiers (`crate::fleet`).
                let (also, source) = match &self.shared.fleet {
                    None => (Vec::new(), source),
                    Some(f) => {
                        let to = Box::pin(self.fleet_redirect(f, route, stream, &req, &pass));
                        if let Some(to) = to.await {
                            if let Some(log) = log {
                                log.decision = "redirect";
                            }
                            return Ok(to);
                        }
                        let hop = pass.as_ref().map_or(0, |p| p.hop);
                        f.sources(stream, hop, source, req.uri().path())
                    }
                };
                // A pull served to another gateway counts in this one's load, and is not a
                // viewer of the per-address limit.
                let serving = pass
                    .as_ref()
                    .and(self.shared.fleet.as_ref())
                    .map(|f| f.serving());
                if websocket::is_upgrade(&req) {
                    // WebSocket-FLV: the same viewer, framed as WebSocket messages. Everything
                    // that can refuse it happens before the `101`.
                    let accept = websocket::accept_key(req.headers())?;
                    let slot = match &self.viewers {
                        Some(c) => Some(c.acquire(client.ip)?),
                        None => None,
                    };
                    let info = ViewerInfo {
                        client: client.ip,
                        protocol: WS_FLV,
                    };
                    let join = self
                        .shared
                        .hubs
                        .join_any(stream, &path, &also, source, info);
                    let (viewer, node) = Box::pin(join).await?;
                    let end_watch = viewer.end_watch();
                    let session = websocket::Session {
                        viewer,
                        upgrade: hyper::upgrade::on(&mut req),
                        ping_interval: self.ws_ping_interval,
                        shutdown: self.shared.shutdown.clone(),
                        hold: req.extensions().get::<server::ConnHold>().cloned(),
                    };
                    // The access line is written when the session ends, with its bytes; the
                    // request itself is counted as the `101` goes out.
                    let mut log = log.take();
                    if let Some(log) = &mut log {
                        log.node = NodeName::Name(node);
                        log.proto = "ws";
                    }
                    let counters = counters.clone();
                    tokio::spawn(async move {
                        let out = session.run().await;
                        drop(slot);
                        counters.response_bytes.inc_by(out.bytes);
                        if let Some(mut log) = log {
                            log.close = out.close;
                            let complete = out.error.is_none();
                            log.error = out.error;
                            // Why the engine let go of it (slow, kicked, stream end), else the
                            // client's doing.
                            let closed = end_watch
                                .reason()
                                .map(|r| r.as_str())
                                .or((!complete).then_some("client"));
                            log.write(101, out.bytes, complete, closed);
                        }
                    });
                    return Ok(websocket::switching(accept));
                }
                let mut resp = if req.method() == Method::HEAD {
                    // Headers only: no reason to start (and linger) a pull for a probe.
                    Response::new(crate::body::empty())
                } else {
                    // The viewer's slot is held by its body: given back when the viewer goes.
                    let slot = match (&self.viewers, &serving) {
                        (Some(c), None) => Some(c.acquire(client.ip)?),
                        _ => None,
                    };
                    // The pull is shared by every viewer, so it carries no viewer's query.
                    let viewer = ViewerInfo {
                        client: client.ip,
                        protocol: HTTP_FLV,
                    };
                    let join = self
                        .shared
                        .hubs
                        .join_any(stream, &path, &also, source, viewer);
                    let (body, node) = Box::pin(join).await?;
                    if let Some(log) = log {
                        log.node = NodeName::Name(node);
                        log.end = Some(body.end_watch());
                    }
                    Response::new(
                        body.map_frame(move |f| {
                            let _held = (&slot, &serving);
                            f
                        })
                        .boxed(),
                    )
                };
                let h = resp.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("video/x-flv"),
                );
                h.insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache"),
                );
                Ok(resp)
            }
            Action::Proxy => {
                let path_and_query = match &query {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                let (mut parts, body) = req.into_parts();
                // What a playlist answer is rewritten with: the request as the viewer sent it.
                let viewer = route.hls_session.then(|| ViewerRequest {
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    host: parts
                        .uri
                        .authority()
                        .map(|a| a.as_str().to_string())
                        .or_else(|| {
                            parts
                                .headers
                                .get(http::header::HOST)
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_string)
                        })
                        .unwrap_or_default(),
                    client: client.ip,
                    session,
                });
                if viewer.is_some() {
                    // A playlist must arrive readable to be rewritten; media segments gain
                    // nothing from compression anyway.
                    parts.headers.remove(http::header::ACCEPT_ENCODING);
                }
                // Every viewer credential goes, whichever Authorization line carries it.
                self.auth
                    .tokens
                    .remove_viewer_credentials(&mut parts.headers);
                // On token, hook and JWT routes the Authorization header is the viewer's credential.
                let strip_authorization =
                    matches!(route.auth, AuthMode::Token | AuthMode::Hook | AuthMode::Jwt);
                let cached = match (route.cache, cache) {
                    (Some(mode), Some(c)) if matches!(parts.method, Method::GET | Method::HEAD) => {
                        Some((mode, c))
                    }
                    _ => None,
                };
                // Whether the answer may be spliced (the answer's side is `proxy::forward`'s).
                let splice = crate::splice::offer(crate::splice::Request {
                    pipes: self.shared.splice.as_ref(),
                    link,
                    secure: client.secure,
                    version: parts.version,
                    method: &parts.method,
                    cached: cached.is_some(),
                    playlist_path: viewer.as_ref().map(|v| v.uri.path()),
                });
                let (resp, node) = if let Some((mode, c)) = cached {
                    // A cached answer is the gateway's, not a load on the member: most are hits,
                    // and a fill (one per object, on its own task) outlives this viewer.
                    drop(guard.take());
                    let fill = CacheFill {
                        nodes,
                        path_and_query,
                        strip_authorization,
                        client: *client,
                        request_id: rid.clone(),
                        counters: counters.clone(),
                    };
                    Box::pin(self.cached_answer(route, mode, caps, parts, fill, c)).await?
                } else {
                    let forward = proxy::forward(
                        &self.transport,
                        parts,
                        body,
                        Forward {
                            nodes: &nodes,
                            path_and_query: &path_and_query,
                            strip_authorization,
                            client,
                            request_id: rid,
                            public_url: &self.shared.public_url,
                            path_map: Some(proxy::headers::PathMap {
                                upstream: &route.upstream_prefix,
                                public: &route.public_prefix,
                            }),
                            request_bytes: &counters.request_bytes,
                            splice,
                        },
                    );
                    Box::pin(forward).await?
                };
                if let Some(log) = log {
                    log.node = NodeName::Node(node.clone());
                }
                // A group member's load is held by the body, on the member that answered.
                let resp = match guard {
                    Some(mut g) => {
                        g.answered_by(&node.id);
                        resp.map(|b| g.hold(b))
                    }
                    None => resp,
                };
                match viewer {
                    Some(v)
                        if resp.status() == http::StatusCode::OK
                            && matches!(v.method, Method::GET | Method::HEAD)
                            && playlist::is_playlist(v.uri.path(), resp.headers()) =>
                    {
                        Box::pin(self.session_playlist(resp, route, &node, v, log)).await
                    }
                    _ => Ok(resp),
                }
            }
        }
    }

    /// Redirect affinity (`affinity = "redirect"` on a live route in a `[fleet]`): a 302 to a
    /// gateway of the region already serving `stream`, same path and query plus `sg_hop=1`.
    /// Never for a request from a gateway (`pass`), one that carries the hop header or
    /// parameter (it came by a redirect), or a stream this gateway pulls already.
    async fn fleet_redirect(
        &self,
        fleet: &crate::fleet::Fleet,
        route: &RouteSettings,
        stream: &str,
        req: &Request<RequestBody>,
        pass: &Option<crate::fleet::Pass>,
    ) -> Option<Response<Body>> {
        if route.affinity != crate::config::Affinity::Redirect
            || pass.is_some()
            || req.headers().contains_key(crate::fleet::HOP_HEADER)
            || crate::upstream_path::query_param(req.uri().query(), crate::fleet::HOP_PARAM)
                .is_some()
            || !self.shared.hubs.pulls(Some(stream)).is_empty()
        {
            return None;
        }
        let to = fleet.serving_elsewhere(stream).await?;
        let base = BaseUrl::parse(&to.url).ok()?;
        let hop = format!("{}=1", crate::fleet::HOP_PARAM);
        let query = match req.uri().query() {
            Some(q) if !q.is_empty() => format!("{q}&{hop}"),
            _ => hop,
        };
        redirect::respond(302, &base, req.uri().path(), Some(&query)).ok()
    }

    /// A node's playlist on an `hls_session` route, answered per viewer: its URIs signed for
    /// the viewer's session (a new one when the request passed the route's auth), or, for a
    /// live media playlist fetched with the viewer's credentials, a redirect to its own session
    /// URL, which the player then reloads instead of the credential URL.
    async fn session_playlist(
        &self,
        resp: Response<Body>,
        route: &RouteSettings,
        node: &Node,
        v: ViewerRequest,
        log: &mut Option<AccessLog>,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut parts, body) = resp.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.parse::<u64>().ok());
        let h = &mut parts.headers;
        // Per viewer, and rewritten: the node's validators and length describe another body.
        for name in [
            http::header::CONTENT_LENGTH,
            http::header::ETAG,
            http::header::LAST_MODIFIED,
            http::header::ACCEPT_RANGES,
        ] {
            h.remove(name);
        }
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        if !h.contains_key(http::header::CONTENT_TYPE) {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.apple.mpegurl"),
            );
        }
        if v.method == Method::HEAD {
            return Ok(Response::from_parts(parts, body));
        }
        let unreadable = |why| GatewayError::PlaylistUnreadable {
            node: node.id.clone(),
            why,
        };
        if h.get(http::header::CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return Err(unreadable("is compressed (Content-Encoding)"));
        }
        if declared.is_some_and(|n| n > playlist::MAX_PLAYLIST_BYTES as u64) {
            return Err(GatewayError::PlaylistTooLarge {
                node: node.id.clone(),
                limit: playlist::MAX_PLAYLIST_BYTES,
            });
        }
        let bytes = playlist::read(body, &node.id).await?;
        let text = std::str::from_utf8(&bytes).map_err(|_| unreadable("is not UTF-8"))?;
        if !playlist::is_m3u(text) {
            // Not a playlist after all (an error page served as .m3u8): as it came.
            return Ok(with_body(parts, bytes));
        }
        let sessions = &self.auth.sessions;
        let now = now_unix();
        let shape = playlist::shape(text);
        let path = v.uri.path();
        let (session, opened) = match v.session {
            Some(s) => (s, false),
            None => (sessions.open(now), true),
        };
        if let Some(log) = log {
            log.session.clone_from(&session.id);
        }
        if opened && !shape.master && !shape.ended {
            // The player reloads a live media playlist at the URL it first fetched; that must
            // be the session's, not the (soon expired) credential's.
            let last = &path[path.rfind('/').map_or(0, |i| i + 1)..];
            let theirs = strip_credentials(v.uri.query());
            let ours = sessions.query(&session, path, session.end, v.client);
            let location = match theirs {
                Some(q) => format!("./{last}?{q}&{ours}"),
                None => format!("./{last}?{ours}"),
            };
            let mut r = Response::new(crate::body::empty());
            *r.status_mut() = http::StatusCode::FOUND;
            let h = r.headers_mut();
            h.insert(
                http::header::LOCATION,
                HeaderValue::from_str(&location)
                    .map_err(|_| GatewayError::BadRequest("path cannot be redirected"))?,
            );
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
            return Ok(r);
        }
        let media_expires =
            sessions.media_expiry(&session, now, if shape.ended { shape.duration } else { 0 });
        let place = Place {
            path,
            host: &v.host,
            public_url: &self.shared.public_url,
            node: &node.url,
            map: proxy::headers::PathMap {
                upstream: &route.upstream_prefix,
                public: &route.public_prefix,
            },
        };
        let rewritten = playlist::rewrite(text, &place, &mut |p, kind| {
            // Only paths a session can open: those of an `hls_session` route.
            let covered = self.find_route(p).is_ok_and(|(_, r, _)| r.hls_session);
            covered.then(|| {
                let expires = match kind {
                    Kind::Playlist => session.end,
                    Kind::Media => media_expires,
                };
                sessions.query(&session, p, expires, v.client)
            })
        });
        Ok(with_body(parts, Bytes::from(rewritten)))
    }
}

/// A response of `parts` with `bytes` as its whole body, and the length to match.
fn with_body(mut parts: http::response::Parts, bytes: Bytes) -> Response<Body> {
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(parts, crate::body::full(bytes))
}

/// On an `hls_session` route, what a playlist's rewriting needs of the viewer's request.
struct ViewerRequest {
    method: Method,
    /// The request target as the viewer sent it (path at the gateway, query with credentials).
    uri: http::Uri,
    /// The host the viewer named: URIs naming it are the gateway's own.
    host: String,
    /// The real client (a session may be bound to its address).
    client: IpAddr,
    /// The session the request came with, if it did.
    session: Option<Session>,
}

impl Active {
    async fn call(&self, req: Request<RequestBody>, conn: ConnInfo) -> Response<Body> {
        let start = Instant::now();
        // Who this is, decided once: every phase below asks `client`, never the connection.
        let stalled = conn.stalled.clone();
        let mut conn = conn;
        let link = conn.splice.take();
        let client = client_addr::resolve(conn, req.headers(), &self.trusted_proxies);
        let rid = request_id::from_headers(req.headers());
        // One record per request, made before anything can fail: a request dropped before it has
        // an answer (the viewer left) is still counted and logged, as a 499. The access line's
        // own fields are gathered only when it would be written.
        let log = match &self.shared.access {
            Some(sink) if tracing::enabled!(target: "access", tracing::Level::INFO) => {
                Some(AccessLog {
                    sink: sink.clone(),
                    start,
                    client: client.ip,
                    peer: client.peer,
                    method: req.method().clone(),
                    target: target_of(req.uri()),
                    node: NodeName::None,
                    request_id: rid.clone(),
                    error: None,
                    side: "",
                    decision: "",
                    session: String::new(),
                    proto: "http",
                    close: None,
                    end: None,
                    stalled,
                })
            }
            _ => None,
        };
        // The route is found once, here: its CORS policy covers every answer on its paths,
        // errors included, and the phases in `handle` go on from the same lookup.
        let dest = self.destination(req.uri().path());
        let mut end = RequestEnd {
            counters: self.counters(&dest),
            status: None,
            bytes: 0,
            counted: 0,
            finished: AtomicBool::new(false),
            body_failed: false,
            log,
        };
        if let (Some(log), Dest::Route(Ok((_, r, _)))) = (&mut end.log, &dest) {
            // A WebSocket-FLV attempt is logged as one, refused (401, 429, …) or not.
            if r.action == Action::Live && websocket::is_upgrade(&req) {
                log.proto = "ws";
            }
        }
        let cors = match &dest {
            Dest::Route(Ok((_, r, _))) => r.cors.as_ref().map(|c| (c, r.action)),
            _ => None,
        };
        let origin = cors
            .and_then(|_| req.headers().get(http::header::ORIGIN))
            .cloned();
        let preflight = cors.is_some() && cors::is_preflight(req.method(), req.headers());
        // The request rate is a viewer limit: the registry's writers (media-server hooks, the
        // REST API) carry their own secrets, and one media node may send a burst of hooks; a
        // scraper reads /metrics on a schedule. The dashboard's files need no secret, so they
        // count like a viewer's requests.
        let viewer_request = match &dest {
            Dest::Route(_) => true,
            Dest::Admin => !crate::admin::handles(req.uri().path()),
            Dest::Metrics => false,
        };
        let limited = match &self.rate {
            Some(r) if viewer_request => r.check(client.ip).err(),
            _ => None,
        };
        let result = match (limited, cors) {
            (Some(e), _) => Err(e),
            // A preflight carries no credentials and never reaches a node.
            (None, Some((policy, action))) if preflight => {
                cors::preflight(policy, origin.as_ref(), action)
            }
            (None, _) => {
                self.handle(
                    req,
                    dest,
                    &end.counters,
                    &client,
                    link.as_ref(),
                    &rid,
                    &mut end.log,
                )
                .await
            }
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(log) = &mut end.log {
                    log.error = Some(e.to_string());
                    log.side = e.side_name();
                    if let Some(n) = e.node() {
                        log.node = NodeName::Name(n.to_string());
                    }
                }
                e.to_response(rid.to_str().unwrap_or_default())
            }
        };
        let (mut parts, body) = resp.into_parts();
        if let Some(e) = parts.extensions.remove::<crate::admin::LoggedError>() {
            if let Some(log) = &mut end.log {
                log.error = Some(e.error);
                log.side = e.side;
            }
        }
        parts.headers.insert(request_id::HEADER, rid);
        if let Some((policy, _)) = cors {
            let ours = preflight && parts.status == http::StatusCode::NO_CONTENT;
            cors::apply(policy, origin.as_ref(), &mut parts.headers, ours);
        }
        end.status = Some(parts.status.as_u16());
        Response::from_parts(parts, CountedBody { inner: body, end }.boxed())
    }
}

impl Handler for Gateway {
    async fn call(&self, req: Request<RequestBody>, conn: ConnInfo) -> Response<Body> {
        // One config for the whole request, even if a reload swaps it meanwhile.
        let active = self.current();
        active.call(req, conn).await
    }
}

/// The access line's fields besides the outcome (written by [`RequestEnd`]).
struct AccessLog {
    sink: Arc<AccessSink>,
    start: Instant,
    /// The real client (`client_addr::resolve`).
    client: IpAddr,
    /// The connection's peer: the TCP peer, or the PROXY header's source. Differs from
    /// `client` when a trusted proxy's `X-Forwarded-For` named someone else.
    peer: SocketAddr,
    method: Method,
    /// Path and query as the client sent them (the log's writer removes the credentials).
    target: String,
    node: NodeName,
    request_id: HeaderValue,
    error: Option<String>,
    /// Where the error came from (`downstream`, `upstream`, `internal`); empty without one.
    side: &'static str,
    /// What the route did: `redirect`, `proxy` or `live` (an `auto` route's choice shows here).
    decision: &'static str,
    /// A live viewer's body: why the engine let go of it.
    end: Option<EndWatch>,
    /// Set if the connection's write timed out (`send_timeout`).
    stalled: StallFlag,
    /// How the answer went out: `http`, or `ws` for a WebSocket-FLV viewer.
    proto: &'static str,
    /// The WebSocket close code sent or echoed (none for HTTP).
    close: Option<u16>,
    /// The HLS session the request came with or opened (`hls_session` routes).
    session: String,
}

impl AccessLog {
    /// Hands the request's outcome to the log's writer, which formats the line.
    fn write(self, status: u16, bytes: u64, complete: bool, closed: Option<&'static str>) {
        let entry = Entry {
            at: std::time::SystemTime::now(),
            client: self.client,
            peer: self.peer,
            method: self.method,
            target: self.target,
            status,
            bytes,
            ms: self.start.elapsed().as_millis() as u64,
            node: self.node,
            request_id: self.request_id,
            decision: self.decision,
            complete,
            closed,
            error: self.error,
            side: self.side,
            proto: self.proto,
            ws_close: self.close,
            session: self.session,
        };
        self.sink.write(entry);
    }
}

/// The request target as the client sent it, path and query, in one allocation.
fn target_of(uri: &http::Uri) -> String {
    let (path, query) = (uri.path(), uri.query());
    let mut t = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    t.push_str(path);
    if let Some(q) = query {
        t.push('?');
        t.push_str(q);
    }
    t
}

/// The end of one request, the one place that knows its outcome: when the response body is
/// finished or dropped (the viewer gone), it counts the request into its route's metrics and
/// writes the access line (when the `access` target is on), so status, bytes and duration are
/// the real ones in both.
struct RequestEnd {
    /// The route's request and byte counters.
    counters: Arc<RouteCounters>,
    /// The status answered; `None` until there is an answer.
    status: Option<u16>,
    /// Body bytes sent so far.
    bytes: u64,
    /// Of `bytes`, those already added to the route's byte counter (a long body adds them as
    /// it goes, every [`metrics::BYTES_FLUSH`]).
    counted: u64,
    /// The body ended by itself (atomic: `is_end_stream` only has `&self`).
    finished: AtomicBool,
    /// The body ended in an error of its own (the node's side, for a proxied body).
    body_failed: bool,
    /// `None` when the access log is off or filtered out.
    log: Option<AccessLog>,
}

impl RequestEnd {
    /// Why the response ended, if not by itself (see [`Record::closed`]).
    fn closed(&self, finished: bool) -> Option<&'static str> {
        let log = self.log.as_ref();
        if let Some(why) = log.and_then(|l| l.end.as_ref()).and_then(EndWatch::reason) {
            return Some(why.as_str());
        }
        if finished && self.status.is_some() {
            return None;
        }
        if log.is_some_and(|l| l.stalled.is_set()) {
            Some("send_timeout")
        } else if self.body_failed {
            Some("upstream")
        } else if log.is_some_and(|l| l.sink.shutting_down()) {
            Some("shutdown")
        } else {
            Some("client")
        }
    }

    /// `n` more body bytes went out.
    fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
        if self.bytes - self.counted >= metrics::BYTES_FLUSH {
            self.counters
                .response_bytes
                .inc_by(self.bytes - self.counted);
            self.counted = self.bytes;
        }
    }
}

impl Drop for RequestEnd {
    fn drop(&mut self) {
        let finished = self.finished.load(Ordering::Relaxed);
        let closed = self.closed(finished);
        // No answer: the client left first (499, as nginx logs it), or shutdown cut it (503,
        // what the request would have been answered then).
        let status = self
            .status
            .unwrap_or(if closed == Some("shutdown") { 503 } else { 499 });
        self.counters.request(status);
        if self.bytes > self.counted {
            self.counters
                .response_bytes
                .inc_by(self.bytes - self.counted);
        }
        if let Some(log) = self.log.take() {
            log.write(
                status,
                self.bytes,
                finished && self.status.is_some(),
                closed,
            );
        }
    }
}

/// What the auth hook is told about a request: never the credential-bearing query as is.
fn hook_query(
    route: &RouteSettings,
    caps: &Captures,
    facts: &RequestFacts<'_>,
    rid: &HeaderValue,
) -> HookQuery {
    let query = strip_credentials(facts.query);
    let mut params = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        params
            .entry(k.into_owned())
            .or_insert_with(|| serde_json::Value::String(v.into_owned()));
    }
    HookQuery {
        route: route.public_prefix.clone(),
        stream: caps.get(STREAM).map(str::to_string),
        path: facts.path.to_string(),
        client_ip: Some(facts.client),
        params,
        query,
        token: ViewerAuth::presented_credential(facts.headers, facts.query),
        referer: facts
            .headers
            .get(http::header::REFERER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        request_id: rid.to_str().unwrap_or_default().to_string(),
    }
}

/// Phase 3's answer: where the request goes.
struct Upstream {
    /// Candidate nodes, healthy first.
    nodes: Vec<Arc<Node>>,
    /// The rendered path on the node.
    path: String,
    /// The viewer's query without credentials.
    query: Option<String>,
    /// The HLS session the request came with (it then skipped the route's auth).
    session: Option<Session>,
    /// A group member's in-flight count for a proxied request (`upstream::balance`).
    guard: Option<InFlight>,
    /// The route's cache counters, when it is a cached route.
    cache: Option<Arc<crate::cache::Counters>>,
    /// A fleet gateway's verified pass (it then skipped the route's auth).
    pass: Option<crate::fleet::Pass>,
}

// --- cache (issue 13): the cache's lookup before the forward, its fills through the one
// transport (`proxy::fetch`). ---

/// What a cache fill needs to reach the node on the first viewer's behalf.
struct CacheFill {
    nodes: Vec<Arc<Node>>,
    path_and_query: String,
    strip_authorization: bool,
    client: Client,
    request_id: HeaderValue,
    counters: Arc<RouteCounters>,
}

impl Active {
    /// Answers a GET or HEAD on a cached route from the cache; what it lacks is fetched once
    /// for every viewer asking meanwhile. Range, conditionals and HEAD are the cache's to
    /// answer: the fill asks for the whole object (or a slice) with a GET.
    async fn cached_answer(
        &self,
        route: &RouteSettings,
        mode: crate::config::CacheMode,
        caps: &Captures,
        parts: http::request::Parts,
        fill: CacheFill,
        counters: Arc<crate::cache::Counters>,
    ) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
        use http::header;
        let mut fill = fill;
        fill.path_and_query = crate::cache::key::without_params(
            std::mem::take(&mut fill.path_and_query),
            &self.settings.cache.ignore_params,
        );
        // What a fill sends the node, built only when the cache has to fetch (a hit never
        // copies the request): the viewer's request as a GET, without its range,
        // conditionals and Accept-Encoding.
        let (method, uri, version) = (&parts.method, &parts.uri, parts.version);
        let viewer_headers = &parts.headers;
        let make = || -> crate::cache::Fetch {
            let mut headers = viewer_headers.clone();
            for h in [
                header::RANGE,
                header::IF_RANGE,
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
                header::IF_MATCH,
                header::IF_UNMODIFIED_SINCE,
                header::ACCEPT_ENCODING,
            ] {
                headers.remove(h);
            }
            let uri = uri.clone();
            let transport = self.transport.clone();
            let public_url = self.shared.public_url.clone();
            let prefixes = (route.upstream_prefix.clone(), route.public_prefix.clone());
            let fill = Arc::new(CacheFill {
                nodes: fill.nodes.clone(),
                path_and_query: fill.path_and_query.clone(),
                strip_authorization: fill.strip_authorization,
                client: fill.client,
                request_id: fill.request_id.clone(),
                counters: fill.counters.clone(),
            });
            Arc::new(move |extra: http::HeaderMap| {
                let (mut p, ()) = Request::new(()).into_parts();
                p.method = Method::GET;
                p.uri = uri.clone();
                p.version = version;
                p.headers = headers.clone();
                for (k, v) in &extra {
                    p.headers.insert(k, v.clone());
                }
                let (transport, public_url, prefixes, fill) = (
                    transport.clone(),
                    public_url.clone(),
                    prefixes.clone(),
                    fill.clone(),
                );
                Box::pin(async move {
                    proxy::fetch(
                        &transport,
                        p,
                        Forward {
                            nodes: &fill.nodes,
                            path_and_query: &fill.path_and_query,
                            strip_authorization: fill.strip_authorization,
                            client: &fill.client,
                            request_id: &fill.request_id,
                            public_url: &public_url,
                            path_map: Some(proxy::headers::PathMap {
                                upstream: &prefixes.0,
                                public: &prefixes.1,
                            }),
                            request_bytes: &fill.counters.request_bytes,
                            splice: None,
                        },
                    )
                    .await
                })
            })
        };
        let ask = crate::cache::Ask {
            route: &route.path,
            mode,
            stream: caps.get(STREAM),
            target: &fill.path_and_query,
            method,
            headers: viewer_headers,
            counters,
        };
        self.shared
            .cache
            .serve_with(ask, &crate::cache::Fetcher::lazy(&make))
            .await
    }
}
// --- end cache ---

/// Whether the client follows a redirect by itself: a browser loading an `<img>`, `<video>`,
/// `<audio>` or a page does; `fetch`/XHR players (`Sec-Fetch-Dest: empty`) and clients that do
/// not say are proxied, since a cross-origin redirect would need CORS on the node.
fn follows_redirects(headers: &http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-dest")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| {
            ["image", "video", "audio", "document"]
                .iter()
                .any(|n| d.trim().eq_ignore_ascii_case(n))
        })
}

/// Counts body bytes into the request's [`RequestEnd`], which it holds until the body is done.
struct CountedBody {
    inner: Body,
    end: RequestEnd,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.end.sent(d.len());
                }
                // hyper stops polling a body that says it has ended, so look now.
                if this.inner.is_end_stream() {
                    this.end.finished.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => this.end.finished.store(true, Ordering::Relaxed),
            Poll::Ready(Some(Err(e))) => {
                // The body broke mid-way: a live viewer's end says why (slow, source failed);
                // otherwise it is the node's answer that broke (upstream error or silence).
                this.end.body_failed = true;
                if let Some(log) = &mut this.end.log {
                    log.error = Some(e.to_string());
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        // hyper asks before writing the head: a body that is over already (a redirect, an
        // empty answer) is never polled, and is complete once the head is handed over.
        let over = self.inner.is_end_stream();
        if over {
            self.end.finished.store(true, Ordering::Relaxed);
        }
        over
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Starts a gateway for `settings` with the registry backend its config names.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> Result<Running, StartError> {
    let reg = registry::build(&settings, shutdown.clone())?;
    start_with_registry(settings, reg, shutdown).await
}

/// Starts a gateway over a given registry (tests and the demo use this to share one).
pub async fn start_with_registry(
    settings: Settings,
    registry: Arc<dyn Registry>,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    start_inner(settings, registry, shutdown, None).await
}

/// Starts a gateway for `settings`, read from `file`: SIGHUP and `POST /api/v1/reload` read
/// the file again and apply it (see `crate::reload`).
pub async fn start_from_file(
    settings: Settings,
    file: std::path::PathBuf,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let reg = registry::build(&settings, shutdown.clone())?;
    start_inner(settings, reg, shutdown, Some(file)).await
}

async fn start_inner(
    settings: Settings,
    registry: Arc<dyn Registry>,
    shutdown: CancellationToken,
    file: Option<std::path::PathBuf>,
) -> Result<Running, StartError> {
    let listeners = server::bind(&settings.server.listen).await?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    // Bound before anything starts, so a taken port fails the start as a whole.
    let redirect = match settings.server.https_redirect {
        Some(a) => Some(server::bind_all(&[a]).await?),
        None => None,
    };
    let first_tls = listeners.iter().position(server::Listener::is_tls);
    let public_url = match &settings.server.public_url {
        Some(u) => u.clone(),
        None => {
            let scheme = if listeners[0].is_tls() {
                "https"
            } else {
                "http"
            };
            BaseUrl::parse(&format!("{scheme}://{}", addrs[0]))
                .map_err(|e| std::io::Error::other(format!("public url: {e}")))?
        }
    };
    let access = AccessSink::start(&settings.log, &shutdown)?;
    let gw = Arc::new(Gateway::with_access_log(
        &settings,
        registry,
        public_url,
        shutdown.clone(),
        access.clone(),
    ));
    // The metrics listener is bound before anything runs, so a bad address fails the start.
    let metrics_listener = match settings.metrics.listen {
        Some(a) => Some(server::bind_all(&[a]).await?),
        None => None,
    };
    let mut opts = ServeOptions::from(&settings.server);
    opts.connections_per_ip = settings.limits.connections_per_ip;
    let metrics = gw.metrics().clone();
    let trigger = file.map(|f| {
        let t = crate::reload::spawn(f, gw.clone(), shutdown.clone());
        let _ = gw.shared.reload.set(t.clone());
        t
    });
    let live_listeners = trigger.is_some();
    let mut running = server::run_with_reload(
        listeners,
        gw.clone(),
        opts.clone(),
        shutdown.clone(),
        trigger,
    )?;
    if live_listeners {
        // A reload adds and removes listeners of this server. The bound list goes in first: a
        // reload sees the control only once the list it works on is there.
        if let Ok(mut b) = gw.shared.bound.lock() {
            *b = settings
                .server
                .listen
                .iter()
                .cloned()
                .zip(addrs.iter().copied())
                .collect();
        }
        let _ = gw.shared.listeners.set(running.listeners.clone());
    }
    if let Some(listeners) = metrics_listener {
        // Plain HTTP for one scraper or a few: a handful of connections, no per-client limits.
        let opts = ServeOptions {
            max_connections: METRICS_CONNECTIONS,
            ..ServeOptions::from(&settings.server)
        };
        let m = server::run(
            listeners,
            Arc::new(metrics::MetricsServer { metrics }),
            opts,
            shutdown.clone(),
        )?;
        let main = running.task;
        running.metrics_addr = m.addrs.first().copied();
        running.task = tokio::spawn(async move {
            let _ = main.await;
            let _ = m.task.await;
        });
    }
    if let (Some(redirect), Some(tls)) = (redirect, first_tls) {
        let handler = Arc::new(redirect::HttpsRedirect {
            public: settings
                .server
                .public_url
                .clone()
                .filter(|u| u.scheme == "https"),
            tls_port: addrs[tls].port(),
        });
        let r = server::run(redirect, handler, opts, shutdown)?;
        tracing::info!(addr = %r.addrs[0], "redirecting plain HTTP to HTTPS");
        running.addrs.extend(r.addrs);
        running.secure.extend(r.secure);
        let main = running.task;
        running.task = tokio::spawn(async move {
            let _ = main.await;
            let _ = r.task.await;
        });
    }
    // Once the servers have drained, the access lines still queued are written before the task
    // (which the binary waits for) ends.
    let server_task = running.task;
    running.task = tokio::spawn(async move {
        let _ = server_task.await;
        if let Some(a) = access {
            a.close().await;
        }
    });
    Ok(running)
}

/// Most connections the metrics listener holds open at once.
const METRICS_CONNECTIONS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Settings {
        crate::config::parse(text).expect("config")
    }

    #[test]
    fn a_reload_names_what_only_a_restart_applies() {
        let base = "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\ntokens = [\"a\"]\n";
        let old = parse(base);
        // Tokens, routes, per-request limits and header timeouts apply at once.
        let new = parse(&format!(
            "{}[limits]\nrequests_per_second_per_ip = 5\n[upstream]\nresponse_header_timeout = \"9s\"\n",
            base.replace("\"a\"", "\"b\"")
        ));
        assert!(restart_only_changes(&old, &new, true).is_empty());
        // Listeners apply when the server can change them, else they wait for a restart.
        let two = parse(&base.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]",
        ));
        assert!(restart_only_changes(&old, &two, true).is_empty());
        assert_eq!(restart_only_changes(&old, &two, false), ["server.listen"]);
        let other = parse(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"7s\"\n[auth]\ntokens = [\"a\"]\n\
             [live]\nlinger = \"1s\"\n[upstream]\nconnect_timeout = \"1s\"\n\
             [limits]\nconnections_per_ip = 3\n[log]\nformat = \"json\"\n",
        );
        assert_eq!(
            restart_only_changes(&old, &other, true),
            [
                "server",
                "limits.connections_per_ip",
                "upstream (pool, connect and health settings)",
                "live",
                "log"
            ]
        );
    }
}
