//! The gateway's operations over HTTP: the REST API under `/api/v1` (operators and node agents,
//! `Authorization: Bearer <[admin] token>`): the registry's nodes and streams, the live streams
//! with their viewers, bitrates and codecs, kicking a viewer, draining a node; and the
//! media-server hooks under `/hooks` (SRS `http_hooks`, nginx-rtmp `notify`;
//! `?secret=<[registry] hook_secret>` in the URL because media servers cannot set headers).
//!
//! With `[ui] enabled`, the dashboard's static files under `/ui/` are served here too
//! ([`ui`]); the page itself holds no secret and calls the API with the admin token the
//! operator types.
//!
//! The gateway hands these paths here before its route table. Routing inside is an `axum`
//! router built through [`Table`], which records every path and its methods: `GET /api/v1`
//! lists them, and the test against docs/openapi.json reads that list. Every failure is a
//! [`GatewayError`], turned into the response by `error.rs` like anywhere else (SRS hooks
//! additionally get the non-zero `code` SRS reads). Credentials are checked before the body is
//! read, so a wrong secret never touches the registry, and bodies are capped at [`MAX_BODY`]
//! bytes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::body::RequestBody;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::access_log::rfc3339;
use crate::auth::ct_eq;
use crate::body::{full, json_response, Body};
use crate::config::DrainMode;
use crate::config::Settings;
use crate::config::StreamKey;
use crate::error::GatewayError;
use crate::fanout::{Hubs, PullInfo};
use crate::registry::hooks::{self, HookAction, HookEvent};
use crate::registry::{url_text, Node, Registry, RegistryError};
use crate::router::{valid_stream_key, valid_stream_name};
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
    /// The handlers' state (the cache is handed in after construction, [`Admin::with_cache`]).
    state: Arc<AdminState>,
    /// `[ui] enabled`: `/ui/` is ours too.
    ui: bool,
}

/// One route of the admin router, as `GET /api/v1` lists it: the path in the router's syntax
/// (`{id}` for a parameter) and the methods it serves (`HEAD` comes with `GET`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteDoc {
    pub path: &'static str,
    pub methods: &'static [&'static str],
}

/// The router under construction, and the list of what it serves: a route can only be added
/// with the methods it answers (a unit test holds each entry to its router).
struct Table {
    router: Router<Arc<AdminState>>,
    routes: Vec<RouteDoc>,
}

impl Table {
    fn route(
        mut self,
        path: &'static str,
        methods: &'static [&'static str],
        handlers: MethodRouter<Arc<AdminState>>,
    ) -> Self {
        self.routes.push(RouteDoc { path, methods });
        self.router = self.router.route(path, handlers);
        self
    }
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
    /// `[registry] key`: how a hook's stream becomes a registry key.
    stream_key: StreamKey,
    /// Nodes from the config file: the API refuses to change them (the file would win on the
    /// next start, and on other gateways at once).
    static_ids: HashSet<String>,
    /// The live fan-out, for `GET /api/v1/live`.
    hubs: Arc<Hubs>,
    /// The transport's view of each node's health, for the node listings; drain marks too.
    health: Arc<Health>,
    /// The route table as `GET /api/v1/routes` lists it (built once: it never changes).
    route_table: Value,
    /// Where the dashboard's player libraries are installed.
    vendor: ui::VendorDirs,
    /// `[ui] viewer_token`: the viewer token the dashboard's player presents by default.
    viewer_token: Option<String>,
    /// Every route, for `GET /api/v1`.
    routes: Vec<RouteDoc>,
    /// Asks the gateway to reload its config file (`POST /api/v1/reload`); empty when it was
    /// not started from one.
    reload: crate::reload::Slot,
    /// `[[groups]]` with their balancing state, for `GET /api/v1/groups`.
    groups: Arc<crate::upstream::balance::Groups>,
    /// The HLS / VOD cache, for `GET /api/v1/cache`.
    cache: std::sync::OnceLock<crate::cache::Cache>,
    /// The gateway fleet (`GET /api/v1/fleet`); `None` without `[fleet]`.
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl Admin {
    pub fn new(
        settings: &Settings,
        registry: Arc<dyn Registry>,
        hubs: Arc<Hubs>,
        health: Arc<Health>,
        reload: crate::reload::Slot,
        groups: Arc<crate::upstream::balance::Groups>,
        fleet: Option<Arc<crate::fleet::Fleet>>,
    ) -> Self {
        let table = Self::table();
        let state = Arc::new(AdminState {
            registry,
            admin_token: settings.admin.token.clone(),
            hook_secret: settings.registry.hook_secret.clone(),
            publish_tokens: settings.registry.publish_tokens.clone(),
            stream_key: settings.registry.key,
            static_ids: settings.nodes.iter().map(|n| n.id.clone()).collect(),
            hubs,
            health,
            route_table: routes_json(&settings.routes),
            vendor: ui::VendorDirs::new(settings.ui.vendor_dir.as_deref()),
            viewer_token: settings.ui.viewer_token.clone(),
            routes: table.routes,
            reload,
            groups,
            cache: std::sync::OnceLock::new(),
            fleet,
        });
        let mut router = table.router;
        if settings.ui.enabled {
            // The dashboard's files are not part of the API (`GET /api/v1` does not list them).
            router = router
                .route("/ui", get(|| async { ui::redirect_to_index() }))
                .route("/ui/", get(ui_file))
                .route("/ui/{*file}", get(ui_file));
        }
        let router = router
            .fallback(|| async { ApiError(GatewayError::NoRoute) })
            // axum sets `Allow` on this answer; `call` turns it into the message too.
            .method_not_allowed_fallback(|| async {
                ApiError(GatewayError::MethodNotAllowed(Cow::Borrowed("")))
            })
            .with_state(state.clone());
        Self {
            router,
            state,
            ui: settings.ui.enabled,
        }
    }

    /// Serves the cache's figures at `GET /api/v1/cache`.
    pub fn with_cache(self, cache: crate::cache::Cache) -> Self {
        let _ = self.state.cache.set(cache);
        self
    }

    /// Whether `path` is answered here rather than by the route table: the API, the hooks, and
    /// the dashboard when it is on.
    pub fn handles(&self, path: &str) -> bool {
        handles(path) || (self.ui && ui::handles(path))
    }

    /// Every route with its handlers, in the order `GET /api/v1` lists them.
    fn table() -> Table {
        Table {
            router: Router::new(),
            routes: Vec::new(),
        }
        .route("/api/v1", &["GET"], get(index))
        .route("/api/v1/nodes", &["GET"], get(list_nodes))
        .route(
            "/api/v1/nodes/{id}",
            &["GET", "PUT", "DELETE"],
            get(get_node).put(put_node).delete(delete_node),
        )
        .route("/api/v1/nodes/{id}/drain", &["POST"], post(drain_node))
        .route("/api/v1/nodes/{id}/undrain", &["POST"], post(undrain_node))
        .route("/api/v1/streams", &["GET"], get(list_streams))
        .route(
            "/api/v1/streams/{name}",
            &["GET", "PUT", "DELETE"],
            get(get_stream).put(put_stream).delete(delete_stream),
        )
        .route(
            "/api/v1/streams/{name}/viewers",
            &["GET"],
            get(list_viewers),
        )
        .route(
            "/api/v1/streams/{name}/viewers/{id}",
            &["DELETE"],
            delete(kick_viewer),
        )
        .route("/api/v1/live", &["GET"], get(live_status))
        .route("/api/v1/fleet", &["GET"], get(fleet_status))
        .route("/api/v1/routes", &["GET"], get(list_routes))
        .route("/api/v1/groups", &["GET"], get(list_groups))
        .route("/api/v1/cache", &["GET"], get(cache_status))
        .route("/api/v1/ui", &["GET"], get(ui_settings))
        .route("/api/v1/reload", &["POST"], post(reload_config))
        .route("/hooks/srs", &["POST"], post(srs_hook))
        .route("/hooks/nginx-rtmp", &["POST"], post(nginx_rtmp_hook))
    }

    /// Answers one admin or hook request; `request_id` goes into error bodies.
    pub async fn call(&self, req: Request<RequestBody>, request_id: &str) -> Response<Body> {
        let srs = req.uri().path() == "/hooks/srs";
        let resp = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (mut parts, body) = resp.into_parts();
        if let Some(Failure(mut e)) = parts.extensions.remove::<Failure>() {
            if matches!(*e, GatewayError::MethodNotAllowed(_)) {
                // The methods the path serves, from the `Allow` header axum set ("GET,HEAD").
                let allow = parts
                    .headers
                    .get(http::header::ALLOW)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                e = Arc::new(GatewayError::MethodNotAllowed(Cow::Owned(allow)));
            }
            tracing::info!(request_id, error = %e, "admin request refused");
            let mut resp = if srs {
                // SRS accepts only `{"code":0}`; a non-zero code says why it refused.
                let (status, mut body) = e.to_json(request_id);
                body["code"] = json!(status.as_u16());
                json_response(status, &body)
            } else {
                e.to_response(request_id)
            };
            resp.extensions_mut().insert(LoggedError {
                error: e.to_string(),
                side: e.side_name(),
            });
            return resp;
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

/// An admin request's error, left in the response's extensions for the access log's `error`
/// and `side` (the answer itself is already built).
#[derive(Clone, Debug)]
pub struct LoggedError {
    pub error: String,
    pub side: &'static str,
}

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
    // `app/stream` keys come percent-encoded (`live%2Fcam1`) in one segment.
    if !valid_stream_key(&name) {
        return Err(GatewayError::BadStreamName.into());
    }
    Ok(name)
}

/// Live pulls and their viewers per node.
type Loads = HashMap<String, (usize, usize)>;

fn node_json(n: &Node, st: &AdminState, loads: &Loads, now: Instant) -> Value {
    let (pulls, viewers) = loads.get(&n.id).copied().unwrap_or_default();
    json!({
        "id": n.id,
        "url": url_text(&n.url),
        "up": n.is_up(now),
        "expires_in_ms": n.expires.map(|e| e.saturating_duration_since(now).as_millis() as u64),
        "static": st.static_ids.contains(&n.id),
        // This gateway's own view (passive failures, active check, drain); not shared between
        // gateways.
        "draining": st.health.is_drained(&n.id),
        "health": st.health.snapshot(&n.id),
        "live_pulls": pulls,
        "live_viewers": viewers,
    })
}

/// A stream: where the registry says it is (`registered`, `nodes`, `up_nodes`), and the live
/// pulls this gateway runs for it.
fn stream_json(
    name: &str,
    nodes: Option<&[String]>,
    pulls: &[PullInfo],
    reg: &dyn Registry,
    now: Instant,
) -> Value {
    let listed = nodes.unwrap_or_default();
    let up: Vec<&String> = listed
        .iter()
        .filter(|id| reg.node(id).is_some_and(|n| n.is_up(now)))
        .collect();
    json!({
        "name": name,
        "registered": nodes.is_some(),
        "nodes": listed,
        "up_nodes": up,
        "viewers": pulls.iter().map(|p| p.viewers).sum::<usize>(),
        "pulls": pulls.iter().map(pull_json).collect::<Vec<_>>(),
    })
}

fn pull_json(p: &PullInfo) -> Value {
    json!({
        "upstream_path": p.upstream_path,
        "node": (!p.node.is_empty()).then_some(&p.node),
        "phase": p.phase,
        "viewers": p.viewers,
        "bytes_in": p.bytes_in,
        "bytes_out": p.bytes_out,
        "bitrate_in_bps": p.bitrate_in,
        "bitrate_out_bps": p.bitrate_out,
        "video": p.video.as_ref().map(|v| json!({
            "codec": v.codec,
            "profile": v.profile,
            "level": v.level,
            "width": v.width,
            "height": v.height,
        })),
        "audio": p.audio.as_ref().map(|a| json!({
            "codec": a.codec,
            "sample_rate": a.sample_rate,
            "channels": a.channels,
        })),
        "started_at": rfc3339(p.started_at),
        "uptime_s": secs(p.uptime),
    })
}

/// Seconds with millisecond precision.
fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// The pulls of every stream, by stream name.
fn pulls_by_stream(hubs: &Hubs) -> BTreeMap<String, Vec<PullInfo>> {
    let mut by: BTreeMap<String, Vec<PullInfo>> = BTreeMap::new();
    for p in hubs.pulls(None) {
        by.entry(p.stream.clone()).or_default().push(p);
    }
    by
}

/// One stream, looked up directly in the registry and among the hubs (never a listing).
fn one_stream(st: &AdminState, name: &str) -> Option<Value> {
    let entry = st.registry.stream(name);
    let pulls = st.hubs.pulls(Some(name));
    if entry.is_none() && pulls.is_empty() {
        return None;
    }
    Some(stream_json(
        name,
        entry.as_ref().map(|e| e.nodes.as_slice()),
        &pulls,
        st.registry.as_ref(),
        st.registry.now(),
    ))
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

/// `[fleet]`: the gateways this one knows (tier, region, last heartbeat) and, per stream it
/// pulls, where from. 404 `disabled` without a `[fleet]` section.
async fn fleet_status(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    match &st.fleet {
        Some(f) => ok(f.status(&st.hubs)),
        None => Err(ApiError(GatewayError::Disabled("fleet"))),
    }
}

/// `GET /api/v1`: every route of this API (and the hooks) with its methods.
async fn index(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    ok(json!({ "routes": st.routes }))
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

/// `GET /api/v1/groups`: every node group with its policy and, per member, weight, health,
/// requests in flight and picks (see `upstream::balance`).
async fn list_groups(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    ok(json!({ "groups": st.groups.views(&st.health) }))
}

/// `GET /api/v1/routes`: how viewers reach streams and files (the dashboard builds play URLs
/// from it).
async fn list_routes(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    ok(st.route_table.clone())
}

/// `GET /api/v1/cache`: the HLS / VOD cache's bytes and entries against its bounds, and the
/// counters of each cached route.
async fn cache_status(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    match st.cache.get() {
        Some(c) => ok(c.snapshot()),
        None => Err(GatewayError::Disabled("the cache").into()),
    }
}

/// `GET /api/v1/ui`: what the dashboard's player needs: the default viewer token (`[ui]
/// viewer_token`, shown to admins only) and which player libraries are installed.
/// `POST /api/v1/reload`: reads the config file again and applies it (see `crate::reload`),
/// answering what changed, or the file's error with the running config kept.
async fn reload_config(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    let Some(trigger) = st.reload.get() else {
        return Err(GatewayError::Disabled("config reload (serve --config FILE)").into());
    };
    match trigger.reload("api").await {
        Ok(a) => ok(json!({
            "reloaded": true,
            "routes": a.routes,
            "nodes": a.nodes,
            "nodes_added": a.nodes_added,
            "nodes_removed": a.nodes_removed,
            "listeners_added": a.listeners_added,
            "listeners_removed": a.listeners_removed,
            "needs_restart": a.needs_restart,
        })),
        Err(crate::reload::ReloadError::Invalid(e)) => {
            Err(GatewayError::ConfigInvalid(e.to_string()).into())
        }
        Err(e) => Err(GatewayError::ReloadFailed(e.to_string()).into()),
    }
}

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
    let now = st.registry.now();
    let loads = st.hubs.loads();
    let nodes: Vec<Value> = st
        .registry
        .nodes()
        .iter()
        .map(|n| node_json(n, &st, &loads, now))
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
    ok(node_json(&n, &st, &st.hubs.loads(), st.registry.now()))
}

/// `POST /api/v1/nodes/{id}/drain`: nothing new goes to the node (viewers, proxied requests,
/// redirects, pulls); its running pulls move at their next keyframe or stay (`[live] drain`).
/// This gateway's mark only, like node health.
async fn drain_node(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    set_drain(&st, node_id(id)?, true)
}

/// `POST /api/v1/nodes/{id}/undrain`: the node takes new work again.
async fn undrain_node(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    set_drain(&st, node_id(id)?, false)
}

fn set_drain(st: &AdminState, id: String, drained: bool) -> ApiResult {
    let n = st
        .registry
        .node(&id)
        .ok_or_else(|| GatewayError::NodeNotFound(id.clone()))?;
    let changed = st
        .health
        .set_drained(&id, drained)
        .map_err(|why| GatewayError::Conflict(why.to_string()))?;
    let mode = match st.hubs.drain_mode() {
        DrainMode::Move => "move",
        DrainMode::Stay => "stay",
    };
    if changed {
        if drained {
            tracing::info!(node = %id, pulls = mode, "node drained through the API");
        } else {
            tracing::info!(node = %id, "node undrained through the API");
        }
    }
    let mut v = node_json(&n, st, &st.hubs.loads(), st.registry.now());
    v["drain_mode"] = json!(mode);
    ok(v)
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
    // A removal racing this write (through another gateway) may already have taken the node
    // out again: answer with what was written.
    let now = st.registry.now();
    let n = st.registry.node(&id).unwrap_or_else(|| {
        Arc::new(Node {
            id: id.clone(),
            url,
            expires: ttl.map(|t| now + t),
        })
    });
    ok(node_json(&n, &st, &st.hubs.loads(), now))
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
    // A node registered again under this id starts undrained.
    let _ = st.health.set_drained(&id, false);
    tracing::info!(node = %id, "node removed through the API");
    ok(json!({ "id": id, "removed": true }))
}

/// `GET /api/v1/streams`: every registered stream and every stream this gateway pulls (a
/// fixed-node route's streams are pulled without being registered), sorted by name.
async fn list_streams(_: AdminAuth, State(st): State<Arc<AdminState>>) -> ApiResult {
    let now = st.registry.now();
    let mut pulls = pulls_by_stream(&st.hubs);
    let reg = st.registry.as_ref();
    let mut streams: Vec<(String, Value)> = st
        .registry
        .streams()
        .iter()
        .map(|s| {
            let p = pulls.remove(&s.name).unwrap_or_default();
            let v = stream_json(&s.name, Some(&s.nodes), &p, reg, now);
            (s.name.clone(), v)
        })
        .collect();
    streams.extend(
        pulls
            .into_iter()
            .map(|(name, p)| (name.clone(), stream_json(&name, None, &p, reg, now))),
    );
    streams.sort_by(|a, b| a.0.cmp(&b.0));
    let streams: Vec<Value> = streams.into_iter().map(|(_, v)| v).collect();
    ok(json!({ "streams": streams }))
}

/// `GET /api/v1/streams/{name}`: one stream, without listing the registry.
async fn get_stream(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let name = stream_name(name)?;
    let v = one_stream(&st, &name).ok_or(GatewayError::StreamNotFound(name))?;
    ok(v)
}

/// `GET /api/v1/streams/{name}/viewers`: who watches the stream, on which pull.
async fn list_viewers(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let name = stream_name(name)?;
    let viewers = st.hubs.viewers(&name);
    if viewers.is_empty() && st.registry.stream(&name).is_none() {
        return Err(GatewayError::StreamNotFound(name).into());
    }
    let viewers: Vec<Value> = viewers
        .iter()
        .map(|v| {
            let s = &v.viewer;
            json!({
                "id": s.id,
                "client": s.client.to_string(),
                "protocol": s.protocol,
                "since": rfc3339(s.since),
                "connected_s": secs(s.connected),
                "bytes": s.bytes,
                "queue_bytes": s.queue_bytes,
                "queue_lag_ms": s.queue_lag_ms,
                "skipping": s.skipping,
                "node": (!v.node.is_empty()).then_some(&v.node),
                "upstream_path": v.upstream_path,
            })
        })
        .collect();
    ok(json!({ "stream": name, "viewers": viewers }))
}

/// `DELETE /api/v1/streams/{name}/viewers/{id}`: ends exactly that viewer's response (a clean
/// end at once; its access line says `closed=kicked`).
async fn kick_viewer(
    _: AdminAuth,
    State(st): State<Arc<AdminState>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let Path((name, id)) = p.map_err(|_| GatewayError::BadPath("undecodable path segment"))?;
    if !valid_stream_key(&name) {
        return Err(GatewayError::BadStreamName.into());
    }
    let id: u64 = id
        .parse()
        .map_err(|_| GatewayError::BadRequest("viewer ids are numbers"))?;
    if !st.hubs.kick(&name, id) {
        return Err(GatewayError::ViewerNotFound { stream: name, id }.into());
    }
    ok(json!({ "stream": name, "id": id, "kicked": true }))
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
    // A removal racing this write may already have withdrawn it again: answer with what was
    // written.
    let v = one_stream(&st, &name).unwrap_or_else(|| {
        stream_json(
            &name,
            Some(std::slice::from_ref(&req.node)),
            &[],
            st.registry.as_ref(),
            st.registry.now(),
        )
    });
    ok(v)
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
        None => st
            .registry
            .stream(&name)
            .map(|e| e.nodes)
            .unwrap_or_default(),
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
    // The registry key: the stream name, or `app/stream`; `None` for names we never accept.
    let key = valid_stream_name(&ev.stream)
        .then_some(())
        .and_then(|()| match st.stream_key {
            StreamKey::Stream => Some(ev.stream.clone()),
            StreamKey::AppStream => ev
                .app
                .as_deref()
                .filter(|a| valid_stream_name(a))
                .map(|a| format!("{a}/{}", ev.stream)),
        });
    match ev.action {
        HookAction::Publish => {
            let Some(key) = key else {
                return Err(GatewayError::BadStreamName.into());
            };
            if !st.publish_tokens.is_empty() {
                let good = ev.token.as_deref().is_some_and(|t| {
                    st.publish_tokens
                        .iter()
                        .any(|k| ct_eq(t.as_bytes(), k.as_bytes()))
                });
                if !good {
                    tracing::warn!(server, stream = %key, node, client = %ev.client, "publish refused: bad publish token");
                    return Err(GatewayError::PublishForbidden.into());
                }
            }
            st.registry.announce(&key, node).await?;
            tracing::info!(server, stream = %key, node, client = %ev.client, vhost = ev.vhost.as_deref().unwrap_or_default(), "stream published");
        }
        HookAction::Unpublish => {
            // An unpublish for a name we never accepted changes nothing and is still "ok": the
            // media server only wants an answer.
            if let Some(key) = key {
                if st.registry.withdraw(&key, node).await? {
                    tracing::info!(server, stream = %key, node, client = %ev.client, "stream unpublished");
                }
            }
        }
        HookAction::Renew => {
            // A renewal of a record we do not hold (withdrawn, expired) changes nothing.
            if let Some(key) = key {
                if !st.registry.renew(&key, node).await? {
                    tracing::debug!(server, stream = %key, node, "renewal of an unknown stream record ignored");
                }
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

    /// What the router did with a request: the error its placeholder answer carries.
    async fn outcome(router: &Router, method: &str, path: &str) -> Option<String> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("infallible");
        resp.extensions()
            .get::<Failure>()
            .map(|f| f.0.status_and_code().1.to_string())
    }

    #[tokio::test]
    async fn every_route_serves_exactly_the_methods_it_lists() {
        // No admin token and no hook secret: every handler stops at its credentials, so only
        // the routing is tested.
        let settings = crate::config::parse("").expect("config");
        let transport = crate::upstream::Transport::new(&settings.upstream);
        let hubs = Arc::new(Hubs::new(
            settings.live.clone(),
            transport.clone(),
            tokio_util::sync::CancellationToken::new(),
        ));
        let admin = Admin::new(
            &settings,
            Arc::new(crate::registry::MemoryRegistry::default()),
            hubs,
            transport.health().clone(),
            crate::reload::Slot::default(),
            Arc::default(),
            None,
        );
        let routes = Admin::table().routes;
        assert!(routes.len() >= 12);
        for r in &routes {
            assert!(handles(r.path), "{} is handed to the admin router", r.path);
            let path = r.path.replace("{id}", "7").replace("{name}", "cam1");
            for m in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
                let got = outcome(&admin.router, m, &path).await;
                if r.methods.contains(&m) {
                    assert_eq!(got.as_deref(), Some("disabled"), "{m} {path}");
                } else {
                    assert_eq!(got.as_deref(), Some("method_not_allowed"), "{m} {path}");
                }
            }
        }
        for path in ["/api/v1/nope", "/api/v1/nodes/a/b/c", "/hooks/other"] {
            assert_eq!(
                outcome(&admin.router, "GET", path).await.as_deref(),
                Some("not_found"),
                "{path}"
            );
        }
    }

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
