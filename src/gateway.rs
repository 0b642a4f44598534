//! The gateway's request path, as named phases: route → auth → choose upstream → act
//! (redirect or proxy) → log. Errors from any phase become a response in `error.rs`.

use std::net::SocketAddr;
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

use crate::auth::{now_unix, RequestFacts, SignedUrls, TokenAuth, ViewerAuth};
use crate::body::{Body, BoxError};
use crate::config::{Action, AuthMode, RouteSettings, Settings, Target};
use crate::error::GatewayError;
use crate::fanout::{Hubs, NodeSource};
use crate::proxy::{self, Forward};
use crate::redirect;
use crate::registry::{self, Lookup, Node, Registry};
use crate::request_id;
use crate::router::{Captures, STREAM};
use crate::server::{self, Handler, Running, ServeOptions};
use crate::upstream::Transport;
use crate::upstream_path::{strip_credentials, strip_params, BaseUrl, SECRET_PARAMS};

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
        Self {
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

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        rid: &HeaderValue,
        log: &mut Option<AccessLog>,
    ) -> Result<Response<Body>, GatewayError> {
        // Phase 0: framing nginx would refuse (duplicate or missing Host, odd Transfer-Encoding).
        proxy::headers::check_request(req.version(), req.headers())?;
        // The registry's writers have their own auth and never reach a node.
        if crate::admin::handles(req.uri().path()) {
            return Ok(self.admin.call(req, rid.to_str().unwrap_or_default()).await);
        }
        // Phase 1: route.
        let (route, caps) = self.find_route(req.uri().path())?;
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
            };
            self.auth.check(route.auth, &facts, now_unix())?;
        }
        // Phase 3: choose the upstream.
        let nodes = self.choose_nodes(route, &caps)?;
        let path = route.upstream.render(&caps);
        let query = strip_credentials(req.uri().query());
        // Phase 4: act.
        match route.action {
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
                    // The pull is shared by every viewer, so it carries no viewer's query.
                    let (body, node) = self.hubs.join(stream, &path, source).await?;
                    if let Some(log) = log {
                        log.node = node;
                    }
                    Response::new(body.boxed())
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
                let strip_authorization = route.auth == AuthMode::Token;
                let (resp, node) = proxy::forward(
                    &self.transport,
                    parts,
                    body,
                    Forward {
                        nodes: &nodes,
                        path_and_query: &path_and_query,
                        strip_authorization,
                        peer,
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
    async fn call(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let rid = request_id::from_headers(req.headers());
        // The access record (and the body wrapper that counts bytes into it) is built only when
        // its line would be written: with `access` filtered out, a request allocates neither.
        let mut log =
            tracing::enabled!(target: "access", tracing::Level::INFO).then(|| AccessLog {
                start: Instant::now(),
                method: req.method().clone(),
                path: match strip_params(req.uri().query(), SECRET_PARAMS) {
                    Some(q) => format!("{}?{q}", req.uri().path()),
                    None => req.uri().path().to_string(),
                },
                status: 0,
                node: String::new(),
                request_id: rid.to_str().unwrap_or_default().to_string(),
                error: None,
                side: "",
                bytes: 0,
                finished: false,
            });
        let resp = match self.handle(req, peer, &rid, &mut log).await {
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
        );
    }
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
    let listeners = server::bind_all(&settings.server.listen).await?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let public_url = match &settings.server.public_url {
        Some(u) => u.clone(),
        None => BaseUrl::parse(&format!("http://{}", addrs[0]))
            .map_err(|e| std::io::Error::other(format!("public url: {e}")))?,
    };
    let gw = Arc::new(Gateway::new(
        &settings,
        registry,
        public_url,
        shutdown.clone(),
    ));
    let opts = ServeOptions::from(&settings.server);
    Ok(server::run(listeners, gw, opts, shutdown)?)
}
