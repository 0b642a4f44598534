//! The writers of the stream registry, over HTTP: the REST API under `/api/v1` (operators and
//! node agents, `Authorization: Bearer <[admin] token>`) and the media-server hooks under
//! `/hooks` (SRS `http_hooks`, nginx-rtmp `notify`; `?secret=<[registry] hook_secret>` in the
//! URL because media servers cannot set headers).
//!
//! With `[ui] enabled`, the dashboard's static files under `/ui/` are served here too
//! ([`ui`]); the page itself holds no secret and calls the API with the admin token the
//! operator types.
//!
//! The gateway hands these paths here before its route table. Routing inside is an `axum`
//! router; every failure is a [`GatewayError`], turned into the response by `error.rs` like
//! anywhere else (SRS hooks additionally get the non-zero `code` SRS reads). Credentials are
//! checked before the body is read, so a wrong secret never touches the registry, and bodies
//! are capped at [`MAX_BODY`] bytes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::auth::ct_eq;
use crate::body::{full, json_response, Body};
use crate::config::Settings;
use crate::error::GatewayError;
use crate::fanout::Hubs;
use crate::registry::hooks::{self, HookAction, HookEvent};
use crate::registry::{url_text, Node, Registry, RegistryError};
use crate::router::valid_stream_name;
use crate::upstream::Health;
use crate::upstream_path::BaseUrl;

pub mod ui;

/// Largest accepted request body. Hook payloads are a few hundred bytes and API bodies smaller;
/// anything bigger is a mistake or an attack and is refused before it is buffered.
pub const MAX_BODY: usize = 16 * 1024;
/// Bounds on a node's heartbeat TTL: shorter would flap on a busy machine, longer would keep a
/// dead node "up" for a day.
pub const MIN_TTL: Duration = Duration::from_millis(100);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Whether a path belongs to the admin API or the hooks (checked before the route table).
pub fn handles(path: &str) -> bool {
    path == "/api/v1"
        || path.starts_with("/api/v1/")
        || path == "/hooks"
        || path.starts_with("/hooks/")
}

/// The admin router, built once at start.
pub struct Admin {
    router: Router,
    /// `[ui] enabled`: `/ui/` is ours too.
    ui: bool,
}

/// What every handler needs.
struct AdminState {
    registry: Arc<dyn Registry>,
    /// `None`: the REST API is off.
    admin_token: Option<String>,
    /// `None`: the hooks are off.
    hook_secret: Option<String>,
    /// Empty: publishes are not checked for a token.
    publish_tokens: Vec<String>,
    /// Nodes from the config file: the API refuses to change them (the file would win on the
    /// next start, and on other gateways at once).
    static_ids: HashSet<String>,
    /// The live fan-out, for `GET /api/v1/live`.
    hubs: Arc<Hubs>,
    /// The transport's view of each node's health, for the node listings.
    health: Arc<Health>,
    /// The route table as `GET /api/v1/routes` lists it (built once: it never changes).
    routes: Value,
    /// Where the dashboard's player libraries are installed.
    vendor: ui::VendorDirs,
    /// `[ui] viewer_token`: the viewer token the dashboard's player presents by default.
    viewer_token: Option<String>,
}

impl Admin {
    pub fn new(
        settings: &Settings,
        registry: Arc<dyn Registry>,
        hubs: Arc<Hubs>,
        health: Arc<Health>,
    ) -> Self {
        let state = Arc::new(AdminState {
            registry,
            admin_token: settings.admin.token.clone(),
            hook_secret: settings.registry.hook_secret.clone(),
            publish_tokens: settings.registry.publish_tokens.clone(),
            static_ids: settings.nodes.iter().map(|n| n.id.clone()).collect(),
            hubs,
            health,
            routes: routes_json(&settings.routes),
            vendor: ui::VendorDirs::new(settings.ui.vendor_dir.as_deref()),
            viewer_token: settings.ui.viewer_token.clone(),
        });
        let mut router = Router::new()
            .route("/api/v1/nodes", get(list_nodes))
            .route(
                "/api/v1/nodes/{id}",
                get(get_node).put(put_node).delete(delete_node),
            )
            .route("/api/v1/streams", get(list_streams))
            .route("/api/v1/live", get(live_status))
            .route("/api/v1/live/{name}", get(live_stream))
            .route("/api/v1/routes", get(list_routes))
            .route("/api/v1/ui", get(ui_settings))
            .route(
                "/api/v1/streams/{name}",
                get(get_stream).put(put_stream).delete(delete_stream),
            )
            .route("/hooks/srs", post(srs_hook))
            .route("/hooks/nginx-rtmp", post(nginx_rtmp_hook));
        if settings.ui.enabled {
            router = router
                .route("/ui", get(|| async { ui::redirect_to_index() }))
                .route("/ui/", get(ui_file))
                .route("/ui/{*file}", get(ui_file));
        }
        let router = router
            .fallback(|| async { ApiError(GatewayError::NoRoute) })
            .method_not_allowed_fallback(|| async { ApiError(GatewayError::MethodNotAllowed) })
            .with_state(state);
        Self {
            router,
            ui: settings.ui.enabled,
        }
    }

    /// Whether `path` is answered here rather than by the route table: the API, the hooks, and
    /// the dashboard when it is on.
    pub fn handles(&self, path: &str) -> bool {
        handles(path) || (self.ui && ui::handles(path))
    }

    /// Answers one admin or hook request; `request_id` goes into error bodies.
    pub async fn call(&self, req: Request<Incoming>, request_id: &str) -> Response<Body> {
        let srs = req.uri().path() == "/hooks/srs";
        let resp = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (mut parts, body) = resp.into_parts();
        if let Some(Failure(e)) = parts.extensions.remove::<Failure>() {
            tracing::info!(request_id, error = %e, "admin request refused");
            if srs {
                // SRS accepts only `{"code":0}`; a non-zero code says why it refused.
                let (status, mut body) = e.to_json(request_id);
                body["code"] = json!(status.as_u16());
                return json_response(status, &body);
            }
            return e.to_response(request_id);
        }
        // Our handlers answer with small JSON bodies already in memory; axum's body type is not
        // `Sync` as ours must be, so take the bytes out.
        match body.collect().await {
            Ok(c) => Response::from_parts(parts, full(c.to_bytes())),
            Err(e) => GatewayError::Internal(e.to_string()).to_response(request_id),
        }
    }
}

/// A handler's failure. It becomes a placeholder response carrying the error, which
/// [`Admin::call`] turns into the real one (it knows the request id and the caller's dialect).
struct ApiError(GatewayError);

#[derive(Clone)]
struct Failure(Arc<GatewayError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let mut r = self.0.status_and_code().0.into_response();
        r.extensions_mut().insert(Failure(Arc::new(self.0)));
        r
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        Self(e)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        Self(match e {
            RegistryError::UnknownNode(n) => GatewayError::UnknownNode(n),
            RegistryError::Full(n) => GatewayError::RegistryFull(n),
            RegistryError::Unavailable(why) => {
                tracing::warn!(error = %why, "registry write failed");
                GatewayError::RegistryUnavailable
            }
        })
    }
}

type ApiResult = Result<Response<Body>, ApiError>;

/// The token of an `Authorization: Bearer <token>` header (the admin API's and `/metrics`'
/// credential).
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// Proof that the request carried the admin bearer token.
struct AdminAuth;

impl FromRequestParts<Arc<AdminState>> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AdminState>) -> Result<Self, ApiError> {
        let Some(want) = &st.admin_token else {
            return Err(GatewayError::Disabled("the admin API (set [admin] token)").into());
        };
        match bearer_token(&parts.headers) {
            Some(t) if ct_eq(t.as_bytes(), want.as_bytes()) => Ok(AdminAuth),
            _ => Err(GatewayError::Unauthorized.into()),
        }
    }
}

/// A hook call with the right `?secret=`, and the node named by its `?node=`.
struct HookAuth {
    node: String,
}

impl FromRequestParts<Arc<AdminState>> for HookAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Arc<AdminState>) -> Result<Self, ApiError> {
        let Some(want) = &st.hook_secret else {
            return Err(
                GatewayError::Disabled("media-server hooks (set [registry] hook_secret)").into(),
            );
        };
        let query = parts.uri.query().unwrap_or("");
        match hooks::query_value(query, "secret") {
            Some(s) if ct_eq(s.as_bytes(), want.as_bytes()) => {}
            _ => return Err(GatewayError::Unauthorized.into()),
        }
        let node = hooks::query_value(query, "node").ok_or(GatewayError::BadRequest(
            "the hook URL needs ?node=<node id>",
        ))?;
        if !valid_node_id(&node) {
            return Err(GatewayError::BadRequest("?node= must match [A-Za-z0-9_.-]{1,128}").into());
        }
        Ok(HookAuth { node })
    }
}

/// The request body, read only up to [`MAX_BODY`] bytes.
struct SmallBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for SmallBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, ApiError> {
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(GatewayError::BodyTooLarge(MAX_BODY).into());
        }
        match http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(c) => Ok(SmallBody(c.to_bytes())),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(GatewayError::BodyTooLarge(MAX_BODY).into())
            }
            Err(_) => {
                Err(GatewayError::BadBody("the request body could not be read".into()).into())
            }
        }
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::BadBody("a JSON body is required".into()).into());
    }
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::BadBody(format!("invalid JSON body: {e}")).into())
}

/// Node ids follow the same rule as stream names (and the config file), so any id can appear in
/// a URL, a Redis key and a hook's `?node=` unescaped.
fn valid_node_id(id: &str) -> bool {
    valid_stream_name(id)
}

fn node_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = p.map_err(|_| GatewayError::BadPath("undecodable path segment"))?;
    if !valid_node_id(&id) {
        return Err(GatewayError::BadRequest(
            "node ids must match [A-Za-z0-9_.-]{1,128} without \"..\"",
        )
        .into());
    }
    Ok(id)
}

fn stream_name(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = p.map_err(|_| GatewayError::BadPath("undecodable path segment"))?;
    if !valid_stream_name(&name) {
        return Err(GatewayError::BadStreamName.into());
    }
    Ok(name)
}

fn node_json(n: &Node, st: &AdminState, now: Instant) -> Value {
    json!({
        "id": n.id,
        "url": url_text(&n.url),
        "up": n.is_up(now),
        "expires_in_ms": n.expires.map(|e| e.saturating_duration_since(now).as_millis() as u64),
        "static": st.static_ids.contains(&n.id),
        // This gateway's own view (passive failures, active check); not shared between gateways.
        "health": st.health.snapshot(&n.id),
    })
}

fn stream_json(name: &str, nodes: &[String], reg: &dyn Registry, now: Instant) -> Value {
    let up: Vec<&String> = nodes
        .iter()
        .filter(|id| reg.node(id).is_some_and(|n| n.is_up(now)))
        .collect();
    json!({ "name": name, "nodes": nodes, "up_nodes": up })
}

fn ok(v: Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, &v))
}

/// The live fan-out as it runs: each pulled stream with its node and viewers, and the
/// process-wide counters (pulls, reconnects, bytes, frames dropped, viewers cut).
async fn live_status(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &st.hubs.counters;
    let streams = st.hubs.streams();
    ok(json!({
        "viewers": streams.iter().map(|s| s.viewers).sum::<usize>(),
        "streams": streams,
        "pulls": c.pulls.load(Relaxed),
        "reconnects": c.reconnects.load(Relaxed),
        "bytes_in": c.bytes_in.load(Relaxed),
        "bytes_out": c.bytes_out.load(Relaxed),
        "frames_dropped": c.frames_dropped.load(Relaxed),
        "viewers_cut": c.viewers_cut.load(Relaxed),
    }))
}

/// `GET /api/v1/live/{name}`: the running pulls of one stream, each with its viewers (empty
/// while nobody watches it).
async fn live_stream(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let name = stream_name(name)?;
    let pulls: Vec<Value> = st
        .hubs
        .stream_viewers(&name)
        .into_iter()
        .map(|(s, viewers)| {
            json!({
                "node": s.node,
                "upstream_path": s.upstream_path,
                "viewers": s.viewers,
                "bytes_in": s.bytes_in,
                "viewer_list": viewers,
            })
        })
        .collect();
    ok(json!({ "stream": name, "pulls": pulls }))
}

/// The route table for listings: pattern, action and auth mode (no secrets, no node addresses).
fn routes_json(routes: &[crate::config::RouteSettings]) -> Value {
    use crate::config::{Action, AuthMode};
    let list: Vec<Value> = routes
        .iter()
        .map(|r| {
            json!({
                "path": r.path,
                "action": match r.action {
                    Action::Redirect => "redirect",
                    Action::Proxy => "proxy",
                    Action::Live => "live",
                    Action::Auto => "auto",
                },
                "auth": match r.auth {
                    AuthMode::None => "none",
                    AuthMode::Token => "token",
                    AuthMode::Signed => "signed",
                    AuthMode::SecureLink => "secure_link",
                    AuthMode::Hook => "hook",
                    AuthMode::Jwt => "jwt",
                },
                "stream": r.pattern.has_stream(),
            })
        })
        .collect();
    json!({ "routes": list })
}

/// `GET /api/v1/routes`: how viewers reach streams and files (the dashboard builds play URLs
/// from it).
async fn list_routes(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    ok(st.routes.clone())
}

/// `GET /api/v1/ui`: what the dashboard's player needs: the default viewer token (`[ui]
/// viewer_token`, shown to admins only) and which player libraries are installed.
async fn ui_settings(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    ok(json!({
        "viewer_token": st.viewer_token,
        "players": st.vendor.installed(),
    }))
}

/// `/ui/` and `/ui/<file>`: the dashboard (no credential: it is a static page).
async fn ui_file(
    State(st): State<Arc<AdminState>>,
    file: Option<Path<String>>,
) -> Result<Response<Body>, ApiError> {
    let name = file.map(|Path(f)| f).unwrap_or_default();
    Ok(ui::serve(&name, &st.vendor).await?)
}

async fn list_nodes(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    let now = Instant::now();
    let nodes: Vec<Value> = st
        .registry
        .nodes()
        .iter()
        .map(|n| node_json(n, &st, now))
        .collect();
    ok(json!({ "nodes": nodes }))
}

async fn get_node(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = node_id(id)?;
    let n = st
        .registry
        .node(&id)
        .ok_or(GatewayError::NodeNotFound(id))?;
    ok(node_json(&n, &st, Instant::now()))
}

/// `PUT /api/v1/nodes/{id}` body. Unknown keys are refused so a typo (`"tll"`) is not silently
/// a node that never expires.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutNode {
    url: String,
    #[serde(default)]
    ttl: Option<Ttl>,
}

/// Seconds as a number (`10`, `2.5`) or a duration string (`"10s"`, `"500ms"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Secs(f64),
    Text(String),
}

fn parse_ttl(t: &Ttl) -> Result<Duration, ApiError> {
    let d = match t {
        Ttl::Secs(s) if s.is_finite() && *s > 0.0 && *s <= MAX_TTL.as_secs_f64() => {
            Some(Duration::from_secs_f64(*s))
        }
        Ttl::Secs(_) => None,
        Ttl::Text(s) => crate::config::parse_duration(s),
    };
    match d {
        Some(d) if (MIN_TTL..=MAX_TTL).contains(&d) => Ok(d),
        _ => Err(GatewayError::BadBody(
            "ttl must be between 0.1 and 86400 seconds (a number of seconds or \"10s\", \"500ms\")"
                .into(),
        )
        .into()),
    }
}

async fn put_node(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    id: Result<Path<String>, PathRejection>,
    SmallBody(body): SmallBody,
) -> ApiResult {
    let id = node_id(id)?;
    if st.static_ids.contains(&id) {
        return Err(GatewayError::Conflict(format!(
            "node {id:?} comes from the config file; change it there"
        ))
        .into());
    }
    let req: PutNode = parse_json(&body)?;
    let url = BaseUrl::parse(&req.url)
        .map_err(|why| GatewayError::BadBody(format!("url {:?}: {why}", req.url)))?;
    if url.scheme != "http" {
        return Err(GatewayError::BadBody("nodes are reached over plain http".into()).into());
    }
    let ttl = req.ttl.as_ref().map(parse_ttl).transpose()?;
    st.registry.put_node(&id, &url, ttl).await?;
    let n = st
        .registry
        .node(&id)
        .ok_or_else(|| GatewayError::Internal("node vanished".into()))?;
    ok(node_json(&n, &st, Instant::now()))
}

async fn delete_node(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = node_id(id)?;
    if st.static_ids.contains(&id) {
        return Err(GatewayError::Conflict(format!(
            "node {id:?} comes from the config file; remove it there"
        ))
        .into());
    }
    if !st.registry.remove_node(&id).await? {
        return Err(GatewayError::NodeNotFound(id).into());
    }
    tracing::info!(node = %id, "node removed through the API");
    ok(json!({ "id": id, "removed": true }))
}

async fn list_streams(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    let now = Instant::now();
    let streams: Vec<Value> = st
        .registry
        .streams()
        .iter()
        .map(|s| stream_json(&s.name, &s.nodes, st.registry.as_ref(), now))
        .collect();
    ok(json!({ "streams": streams }))
}

fn find_stream(st: &AdminState, name: &str) -> Option<Vec<String>> {
    st.registry
        .streams()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.nodes)
}

async fn get_stream(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let name = stream_name(name)?;
    let nodes =
        find_stream(&st, &name).ok_or_else(|| GatewayError::StreamNotFound(name.clone()))?;
    ok(stream_json(
        &name,
        &nodes,
        st.registry.as_ref(),
        Instant::now(),
    ))
}

/// `PUT /api/v1/streams/{name}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutStream {
    node: String,
}

async fn put_stream(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    name: Result<Path<String>, PathRejection>,
    SmallBody(body): SmallBody,
) -> ApiResult {
    let name = stream_name(name)?;
    let req: PutStream = parse_json(&body)?;
    if !valid_node_id(&req.node) {
        return Err(
            GatewayError::BadBody("node ids must match [A-Za-z0-9_.-]{1,128}".into()).into(),
        );
    }
    st.registry.announce(&name, &req.node).await?;
    tracing::info!(stream = %name, node = %req.node, "stream announced through the API");
    let nodes = find_stream(&st, &name).unwrap_or_default();
    ok(stream_json(
        &name,
        &nodes,
        st.registry.as_ref(),
        Instant::now(),
    ))
}

/// `DELETE /api/v1/streams/{name}[?node=ID]`: from one node, or from every node holding it.
async fn delete_stream(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    name: Result<Path<String>, PathRejection>,
    parts: http::Uri,
) -> ApiResult {
    let name = stream_name(name)?;
    let from: Vec<String> = match hooks::query_value(parts.query().unwrap_or(""), "node") {
        Some(n) => vec![n],
        None => find_stream(&st, &name).unwrap_or_default(),
    };
    let mut removed = Vec::new();
    for node in from {
        if st.registry.withdraw(&name, &node).await? {
            removed.push(node);
        }
    }
    if removed.is_empty() {
        return Err(GatewayError::StreamNotFound(name).into());
    }
    tracing::info!(stream = %name, nodes = ?removed, "stream withdrawn through the API");
    ok(json!({ "stream": name, "removed_from": removed }))
}

/// Applies a parsed hook to the registry: admission check and announce on publish, withdraw on
/// unpublish, nothing for other calls.
async fn apply_hook(
    st: &AdminState,
    node: &str,
    ev: HookEvent,
    server: &'static str,
) -> Result<(), ApiError> {
    match ev.action {
        HookAction::Publish => {
            if !valid_stream_name(&ev.stream) {
                return Err(GatewayError::BadStreamName.into());
            }
            if !st.publish_tokens.is_empty() {
                let good = ev.token.as_deref().is_some_and(|t| {
                    st.publish_tokens
                        .iter()
                        .any(|k| ct_eq(t.as_bytes(), k.as_bytes()))
                });
                if !good {
                    tracing::warn!(server, stream = %ev.stream, node, client = %ev.client, "publish refused: bad publish token");
                    return Err(GatewayError::PublishForbidden.into());
                }
            }
            st.registry.announce(&ev.stream, node).await?;
            tracing::info!(server, stream = %ev.stream, node, client = %ev.client, "stream published");
        }
        HookAction::Unpublish => {
            // An unpublish for a name we never accepted changes nothing and is still "ok": the
            // media server only wants an answer.
            if valid_stream_name(&ev.stream) && st.registry.withdraw(&ev.stream, node).await? {
                tracing::info!(server, stream = %ev.stream, node, client = %ev.client, "stream unpublished");
            }
        }
        HookAction::Ignore(call) => {
            tracing::debug!(server, call = %call, node, "hook call ignored");
        }
    }
    Ok(())
}

/// `POST /hooks/srs?node=ID&secret=S`: SRS `http_hooks` (`on_publish`, `on_unpublish`; other
/// actions accepted and ignored). Answers `{"code":0}` to accept.
async fn srs_hook(
    h: HookAuth,
    State(st): State<Arc<AdminState>>,
    SmallBody(body): SmallBody,
) -> ApiResult {
    let ev = hooks::parse_srs(&body).map_err(|e| GatewayError::BadBody(e.to_string()))?;
    apply_hook(&st, &h.node, ev, "srs").await?;
    ok(json!({ "code": 0 }))
}

/// `POST /hooks/nginx-rtmp?node=ID&secret=S`: nginx-rtmp `on_publish` / `on_publish_done`
/// (form body). Any 2xx accepts; 403 makes nginx drop the publisher.
async fn nginx_rtmp_hook(
    h: HookAuth,
    State(st): State<Arc<AdminState>>,
    SmallBody(body): SmallBody,
) -> ApiResult {
    let ev = hooks::parse_nginx_rtmp(&body).map_err(|e| GatewayError::BadBody(e.to_string()))?;
    apply_hook(&st, &h.node, ev, "nginx-rtmp").await?;
    ok(json!({ "code": 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ids() {
        assert!(handles("/api/v1/nodes") && handles("/hooks/srs") && handles("/api/v1"));
        assert!(!handles("/api/v10") && !handles("/hooksx") && !handles("/hls/x/a.m3u8"));
        assert!(
            valid_node_id("n1.a_b-c")
                && !valid_node_id("")
                && !valid_node_id("a/b")
                && !valid_node_id("a b")
        );
        assert!(parse_ttl(&Ttl::Secs(1.5)).is_ok());
        assert!(parse_ttl(&Ttl::Text("500ms".into())).is_ok());
        assert!(parse_ttl(&Ttl::Secs(0.0)).is_err());
        assert!(parse_ttl(&Ttl::Secs(f64::NAN)).is_err());
        assert!(parse_ttl(&Ttl::Text("10ms".into())).is_err());
        assert!(parse_ttl(&Ttl::Secs(1e12)).is_err());
    }
}
