//! The gateway's request path, as named phases: route → auth → choose upstream → act
//! (redirect or proxy) → log. Errors from any phase become a response in `error.rs`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::auth::{now_unix, AuthHook, HookQuery, RequestFacts, SignedUrls, TokenAuth, ViewerAuth};
use crate::body::{Body, BoxError};
use crate::config::{Action, AuthMode, RouteSettings, Settings, Target};
use crate::cors;
use crate::error::GatewayError;
use crate::fanout::{Hubs, NodeSource};
use crate::limits::{Counter, RateLimit};
use crate::proxy::{self, Forward};
use crate::redirect;
use crate::registry::{self, Lookup, Node, Registry};
use crate::request_id;
use crate::router::{Captures, STREAM};
use crate::server::{self, ConnInfo, Handler, Running, ServeOptions};
use crate::upstream::Transport;
use crate::upstream_path::{strip_credentials, strip_secrets, BaseUrl};

/// Everything the request path needs, built once at start.
pub struct Gateway {
    routes: Vec<RouteSettings>,
    registry: Arc<dyn Registry>,
    /// The one transport to nodes (pool, timeouts, node health).
    transport: Transport,
    /// Tokens, signing keys and the secure_link expression.
    auth: ViewerAuth,
    /// How long a `sign_location` redirect's link stays valid.
    redirect_link_ttl: std::time::Duration,
    public_url: BaseUrl,
    /// One fan-out hub per live stream.
    hubs: Arc<Hubs>,
    /// The registry's writers (REST API, media-server hooks), served before the route table.
    admin: crate::admin::Admin,
    /// `[limits] requests_per_second_per_ip`: one token bucket per client address.
    rate: Option<Arc<RateLimit>>,
    /// `[limits] live_viewers_per_ip`: open live bodies per client address.
    viewers: Option<Arc<Counter>>,
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
    /// Builds the gateway over `registry` (already holding the static nodes).
    pub fn new(
        settings: &Settings,
        registry: Arc<dyn Registry>,
        public_url: BaseUrl,
        shutdown: CancellationToken,
    ) -> Self {
        let transport = Transport::new(&settings.upstream);
        transport.spawn_health_checks(&settings.nodes, &shutdown);
        let hubs = Arc::new(Hubs::new(
            settings.live.clone(),
            transport.clone(),
            shutdown.clone(),
        ));
        let hook = settings
            .auth
            .hook
            .as_ref()
            .map(|h| AuthHook::new(h, transport.clone()));
        let rate = settings.limits.rate.map(|r| Arc::new(RateLimit::new(r)));
        if let Some(rate) = &rate {
            // Full buckets are dropped periodically so the map holds only recent clients.
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
        // `auth = "jwt"`: the key set, with its JWKS file or URL refreshed in the background.
        let jwt = settings.auth.jwt.clone().map(|s| {
            let jwt = crate::auth::JwtAuth::new(s);
            jwt.spawn_refresh(&shutdown);
            jwt.spawn_url_refresh(transport.clone(), &shutdown);
            jwt
        });
        Self {
            rate,
            viewers: settings
                .limits
                .live_viewers_per_ip
                .map(|n| Counter::new(n, "live viewers")),
            admin: crate::admin::Admin::new(
                settings,
                registry.clone(),
                hubs.clone(),
                transport.health().clone(),
            ),
            hubs,
            routes: settings.routes.clone(),
            registry,
            transport,
            auth: ViewerAuth {
                tokens: TokenAuth::new(settings.auth.tokens.clone()),
                signed: SignedUrls::new(settings.auth.signing_keys.clone()),
                secure_link: settings.auth.secure_link.clone(),
                hook,
                jwt,
            },
            redirect_link_ttl: settings.auth.redirect_link_ttl,
            public_url,
        }
    }

    /// The live hubs (for metrics and listings).
    pub fn hubs(&self) -> &Arc<Hubs> {
        &self.hubs
    }

    fn find_route(&self, path: &str) -> Result<(&RouteSettings, Captures), GatewayError> {
        self.routes
            .iter()
            .find_map(|r| r.pattern.matches(path).map(|c| (r, c)))
            .ok_or(GatewayError::NoRoute)
    }

    /// Candidate nodes for the request, healthy ones first (see `upstream::health`).
    fn choose_nodes(
        &self,
        route: &RouteSettings,
        caps: &Captures,
    ) -> Result<Vec<Arc<Node>>, GatewayError> {
        let nodes = self.candidates(route, caps)?;
        Ok(if nodes.len() > 1 {
            self.transport.order(&nodes)
        } else {
            nodes
        })
    }

    fn candidates(
        &self,
        route: &RouteSettings,
        caps: &Captures,
    ) -> Result<Vec<Arc<Node>>, GatewayError> {
        match &route.target {
            Target::Node(id) => self
                .registry
                .node(id)
                .map(|n| vec![n])
                .ok_or_else(|| GatewayError::Internal(format!("configured node {id} missing"))),
            Target::Url(url) => Ok(vec![Arc::new(Node {
                id: url.origin(),
                url: url.clone(),
                expires: None,
            })]),
            Target::Registry => {
                let stream = caps.get(STREAM).unwrap_or_default();
                match self.registry.resolve(stream) {
                    Lookup::Found(nodes) => Ok(nodes),
                    Lookup::AllDown => Err(GatewayError::NodeUnavailable(stream.to_string())),
                    Lookup::NotFound => Err(GatewayError::StreamNotFound(stream.to_string())),
                }
            }
        }
    }

    /// `found` is the route lookup `call` made (`None` for the registry API's paths).
    async fn handle(
        &self,
        req: Request<Incoming>,
        found: Option<Result<(&RouteSettings, Captures), GatewayError>>,
        conn: ConnInfo,
        rid: &HeaderValue,
        log: &mut Option<AccessLog>,
    ) -> Result<Response<Body>, GatewayError> {
        let peer = conn.peer;
        // Phase 0: framing nginx would refuse (duplicate or missing Host, odd Transfer-Encoding).
        proxy::headers::check_request(req.version(), req.headers())?;
        // The registry's writers have their own auth and never reach a node.
        let Some(found) = found else {
            return Ok(self.admin.call(req, rid.to_str().unwrap_or_default()).await);
        };
        // Phase 1: route.
        let (route, caps) = found?;
        let caps = caps.validate()?;
        // Phase 2: auth, before anything touches a node.
        if route.auth != AuthMode::None {
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
                peer: peer.ip(),
                stream: caps.get(STREAM),
            };
            match (&self.auth.hook, route.auth) {
                (Some(hook), AuthMode::Hook) => {
                    hook.check(hook_query(route, &caps, &facts, rid)).await?
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
        // Phase 3: choose the upstream.
        let nodes = self.choose_nodes(route, &caps)?;
        let path = route.upstream.render(&caps);
        let query = strip_credentials(req.uri().query());
        // Phase 4: act (an `auto` route picks redirect or proxy for this client).
        let action = match route.action {
            Action::Auto if follows_redirects(req.headers()) => Action::Redirect,
            Action::Auto => Action::Proxy,
            a => a,
        };
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
                conn,
                rid,
                log,
                Upstream { nodes, path, query },
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
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        action: Action,
        route: &RouteSettings,
        caps: &Captures,
        req: Request<Incoming>,
        conn: ConnInfo,
        rid: &HeaderValue,
        log: &mut Option<AccessLog>,
        upstream: Upstream,
    ) -> Result<Response<Body>, GatewayError> {
        let Upstream { nodes, path, query } = upstream;
        let peer = conn.peer;
        match action {
            Action::Auto => Err(GatewayError::Internal("auto not resolved".into())),
            Action::Redirect => {
                let node = nodes
                    .first()
                    .ok_or_else(|| GatewayError::Internal("no node".into()))?;
                if let Some(log) = log {
                    log.node = node.id.clone();
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
                let remote_addr = peer.ip().to_canonical().to_string();
                let q = sl.sign_location(&node.url, &path, query.as_deref(), &remote_addr, expires);
                redirect::respond(route.status, &node.url, &path, Some(&q))
            }
            Action::Live => {
                if !matches!(*req.method(), Method::GET | Method::HEAD) {
                    return Err(GatewayError::MethodNotAllowed);
                }
                let stream = caps.get(STREAM).unwrap_or_default();
                let source = match route.target {
                    Target::Registry => NodeSource::Registry(self.registry.clone()),
                    _ => NodeSource::Fixed(nodes),
                };
                let mut resp = if req.method() == Method::HEAD {
                    // Headers only: no reason to start (and linger) a pull for a probe.
                    Response::new(crate::body::empty())
                } else {
                    // The viewer's slot is held by its body: given back when the viewer goes.
                    let slot = match &self.viewers {
                        Some(c) => Some(c.acquire(peer.ip())?),
                        None => None,
                    };
                    // The pull is shared by every viewer, so it carries no viewer's query.
                    let (body, node) = self.hubs.join(stream, &path, source).await?;
                    if let Some(log) = log {
                        log.node = node;
                    }
                    Response::new(
                        body.map_frame(move |f| {
                            let _held = &slot;
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
                // Every viewer credential goes, whichever Authorization line carries it.
                self.auth
                    .tokens
                    .remove_viewer_credentials(&mut parts.headers);
                // On token, hook and JWT routes the Authorization header is the viewer's credential.
                let strip_authorization =
                    matches!(route.auth, AuthMode::Token | AuthMode::Hook | AuthMode::Jwt);
                let (resp, node) = proxy::forward(
                    &self.transport,
                    parts,
                    body,
                    Forward {
                        nodes: &nodes,
                        path_and_query: &path_and_query,
                        strip_authorization,
                        peer,
                        secure: conn.secure,
                        request_id: rid,
                        public_url: &self.public_url,
                        path_map: Some(proxy::headers::PathMap {
                            upstream: &route.upstream_prefix,
                            public: &route.public_prefix,
                        }),
                    },
                )
                .await?;
                if let Some(log) = log {
                    log.node = node.id.clone();
                }
                Ok(resp)
            }
        }
    }
}

impl Handler for Gateway {
    async fn call(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let peer = conn.peer;
        let rid = request_id::from_headers(req.headers());
        // The access record (and the body wrapper that counts bytes into it) is built only when
        // its line would be written: with `access` filtered out, a request allocates neither.
        let mut log =
            tracing::enabled!(target: "access", tracing::Level::INFO).then(|| AccessLog {
                start: Instant::now(),
                method: req.method().clone(),
                path: match strip_secrets(req.uri().query()) {
                    Some(q) => format!("{}?{q}", req.uri().path()),
                    None => req.uri().path().to_string(),
                },
                status: 0,
                node: String::new(),
                request_id: rid.to_str().unwrap_or_default().to_string(),
                error: None,
                side: "",
                decision: "",
                bytes: 0,
                finished: false,
            });
        // The route is found once, here: its CORS policy covers every answer on its paths,
        // errors included, and the phases in `handle` go on from the same lookup.
        let path = req.uri().path();
        let admin = crate::admin::handles(path);
        let found = (!admin).then(|| self.find_route(path));
        let cors = match &found {
            Some(Ok((r, _))) => r.cors.as_ref().map(|c| (c, r.action)),
            _ => None,
        };
        let origin = cors
            .and_then(|_| req.headers().get(http::header::ORIGIN))
            .cloned();
        let preflight = cors.is_some() && cors::is_preflight(req.method(), req.headers());
        // The request rate is a viewer limit: the registry's writers (media-server hooks, the
        // REST API) carry their own secrets, and one media node may send a burst of hooks.
        let limited = match &self.rate {
            Some(r) if !admin => r.check(peer.ip()).err(),
            _ => None,
        };
        let result = match (limited, cors) {
            (Some(e), _) => Err(e),
            // A preflight carries no credentials and never reaches a node.
            (None, Some((policy, action))) if preflight => {
                cors::preflight(policy, origin.as_ref(), action)
            }
            (None, _) => self.handle(req, found, conn, &rid, &mut log).await,
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(log) = &mut log {
                    log.error = Some(e.to_string());
                    log.side = e.side_name();
                    if let Some(n) = e.node() {
                        log.node = n.to_string();
                    }
                }
                e.to_response(rid.to_str().unwrap_or_default())
            }
        };
        let (mut parts, body) = resp.into_parts();
        parts.headers.insert(request_id::HEADER, rid);
        if let Some((policy, _)) = cors {
            let ours = preflight && parts.status == http::StatusCode::NO_CONTENT;
            cors::apply(policy, origin.as_ref(), &mut parts.headers, ours);
        }
        match log {
            Some(mut log) => {
                log.status = parts.status.as_u16();
                Response::from_parts(parts, LoggedBody { inner: body, log }.boxed())
            }
            None => Response::from_parts(parts, body),
        }
    }
}

/// One access-log line, written when the response body is finished or dropped (viewer gone),
/// so bytes and duration are the real ones.
struct AccessLog {
    start: Instant,
    method: Method,
    /// Path and query without credentials.
    path: String,
    status: u16,
    node: String,
    request_id: String,
    error: Option<String>,
    /// Where the error came from (`downstream`, `upstream`, `internal`); empty without one.
    side: &'static str,
    /// What the route did: `redirect`, `proxy` or `live` (an `auto` route's choice shows here).
    decision: &'static str,
    bytes: u64,
    finished: bool,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        tracing::info!(
            target: "access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes = self.bytes,
            ms = self.start.elapsed().as_millis() as u64,
            node = %self.node,
            request_id = %self.request_id,
            complete = self.finished,
            error = self.error.as_deref().unwrap_or(""),
            side = self.side,
            decision = %self.decision,
        );
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
        client_ip: Some(facts.peer),
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
}

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

/// Counts body bytes into the access log.
struct LoggedBody {
    inner: Body,
    log: AccessLog,
}

impl HttpBody for LoggedBody {
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
                    this.log.bytes += d.len() as u64;
                }
                // hyper stops polling a body that says it has ended, so look now.
                if this.inner.is_end_stream() {
                    this.log.finished = true;
                }
            }
            Poll::Ready(None) => this.log.finished = true,
            Poll::Ready(Some(Err(e))) => {
                // The body broke mid-way: the node's (hub, upstream body) or the viewer's side is
                // not known here, only that the response did not complete.
                this.log.error = Some(e.to_string());
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
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
    let gw = Arc::new(Gateway::new(
        &settings,
        registry,
        public_url,
        shutdown.clone(),
    ));
    let mut opts = ServeOptions::from(&settings.server);
    opts.connections_per_ip = settings.limits.connections_per_ip;
    let mut running = server::run(listeners, gw, opts.clone(), shutdown.clone())?;
    let (Some(redirect), Some(tls)) = (redirect, first_tls) else {
        return Ok(running);
    };
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
    Ok(running)
}
