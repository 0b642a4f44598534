//! `[[nodes]]` and `[[routes]]`: the static nodes and the route table.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, AuthSettings, ConfigError};
use crate::router::{Pattern, Template};
use crate::upstream_path::BaseUrl;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub streams: Vec<String>,
    /// Path of an active health check (`GET`, 2xx = up).
    pub health: Option<String>,
    pub health_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: String,
    pub action: String,
    pub to: Option<String>,
    pub upstream: Option<String>,
    pub status: Option<u16>,
    pub auth: Option<String>,
    /// Redirects only: sign the `Location` for nginx `secure_link` (`md5=…&expires=…`).
    pub sign_location: Option<bool>,
    /// Live routes with a fixed node: the stream names a viewer may ask for.
    pub streams: Option<Vec<String>>,
    /// Browser origins allowed to read this route's answers: a list, or `"*"`.
    pub cors: Option<RawCors>,
    /// Proxy routes: playlists carry the gateway's own session signatures (`[auth.hls_session]`).
    pub hls_session: Option<bool>,
    /// Proxy and auto routes: serve through the HLS / VOD cache (`"hls"` or `"vod"`).
    pub cache: Option<String>,
    /// Live routes in a `[fleet]`: `"redirect"` answers a viewer with a 302 to a gateway of
    /// the region that already serves the stream.
    pub affinity: Option<String>,
}

/// `cors` may be `"*"` or a list of origins.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCors {
    Any(String),
    List(Vec<String>),
}

/// A fixed-node live route's allow-list: exact names and `prefix*` patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamList {
    /// Names allowed as written.
    pub exact: HashSet<String>,
    /// Literal starts of allowed names (from `prefix*`).
    pub prefixes: Vec<String>,
}

impl StreamList {
    /// Whether a viewer may start or join `stream` on this route.
    pub fn allows(&self, stream: &str) -> bool {
        self.exact.contains(stream) || self.prefixes.iter().any(|p| stream.starts_with(p.as_str()))
    }
}

/// Which browser origins may read a route's answers (`cors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// `"*"`: any origin; answers carry `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins (`scheme://host[:port]`, lower-cased), echoed back with `Vary: Origin`.
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub id: String,
    pub url: BaseUrl,
    pub streams: Vec<String>,
    /// An active health check, when `health` is set.
    pub health: Option<HealthCheck>,
}

/// `[[nodes]] health` and `health_interval`: a background `GET` of `path` every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and query) on the node, starting with `/`.
    pub path: String,
    pub interval: Duration,
}

/// How often an active health check runs unless `health_interval` says otherwise.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// What a route does with a matched request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Answer with a `Location`; never contact the node.
    Redirect,
    /// Fetch from the node and stream the answer back.
    Proxy,
    /// A live stream: proxy with a registry lookup; the response watches shutdown.
    Live,
    /// Per request: redirect clients that follow redirects natively (`Sec-Fetch-Dest` image,
    /// video, audio, document), proxy the others (fetch/XHR players, unknown clients).
    Auto,
}

/// Which cache rules a route's answers are kept by (`cache = "hls"` / `"vod"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Live HLS and LL-HLS: playlist lifetimes from their target duration, blocking reloads
    /// coalesced, a restarted stream's segments never mixed with the old ones.
    Hls,
    /// Files: fetched and kept in fixed slices, so a range fetches only what it needs.
    Vod,
}

/// How a route authenticates viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Token,
    /// Native signed URLs: `?expires=…&kid=…&sign=…` (HMAC-SHA256).
    Signed,
    /// nginx `secure_link` URLs: `?md5=…&expires=…`.
    SecureLink,
    /// Asks the external service in `[auth.hook]` (decisions cached).
    Hook,
    /// JSON Web Tokens (`Authorization: Bearer` or `?jwt=`), keys in `[auth.jwt]`.
    Jwt,
}

/// Where a route's requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A configured node, by id.
    Node(String),
    /// An absolute base URL (redirects to a CDN, say).
    Url(BaseUrl),
    /// The node the stream registry names for the `{stream}` capture.
    Registry,
    /// A `[[groups]]` id: its policy picks a member per request (`upstream::balance`).
    Group(String),
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// The path pattern as written in the config: the admin API lists it, the dashboard builds
    /// play URLs from it, and it is the route's `route` label in the metrics (bounded by the
    /// config, never a request path).
    pub path: String,
    pub pattern: Pattern,
    pub action: Action,
    pub target: Target,
    pub upstream: Template,
    pub status: u16,
    pub auth: AuthMode,
    /// Redirects: the `Location` carries an nginx `secure_link` signature.
    pub sign_location: bool,
    /// Literal start of `upstream` and of `path`: a node's `Location` under the first is
    /// rewritten to the second.
    pub upstream_prefix: String,
    pub public_prefix: String,
    /// Fixed-node live routes: the stream names allowed (`None` elsewhere).
    pub streams: Option<StreamList>,
    /// Cross-origin access for browsers (`None`: the gateway adds no CORS headers).
    pub cors: Option<CorsPolicy>,
    /// HLS sessions: playlists are rewritten so their URIs carry a session signature, and a
    /// request with a valid one skips `auth` (see `auth::session`).
    pub hls_session: bool,
    /// Served through the cache (`None`: every request goes to the node).
    pub cache: Option<CacheMode>,
    /// Live routes: send viewers to the region's gateway already serving the stream (`[fleet]`).
    pub affinity: Affinity,
}

/// What a fleet gateway does with a viewer of a stream another gateway of its region serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Affinity {
    /// Serve it here (pulling through the fleet's tiers).
    #[default]
    None,
    /// Answer 302 to that gateway (same path and query, plus `sg_hop=1`).
    Redirect,
}

/// Validates `[[nodes]]`.
pub(super) fn validate_nodes(raw: Vec<RawNode>) -> Result<Vec<NodeSettings>, ConfigError> {
    let mut ids = HashSet::new();
    let mut nodes = Vec::new();
    for (i, n) in raw.into_iter().enumerate() {
        let key = format!("nodes[{i}]");
        if !crate::router::valid_stream_name(&n.id) {
            return Err(invalid(
                format!("{key}.id"),
                format!(
                    "{:?}: use 1 to 128 letters, digits, '_', '.', '-', without \"..\"",
                    n.id
                ),
            ));
        }
        if !ids.insert(n.id.clone()) {
            return Err(invalid(
                format!("{key}.id"),
                format!("duplicate node id {:?}", n.id),
            ));
        }
        let url = BaseUrl::parse(&n.url)
            .map_err(|why| invalid(format!("{key}.url"), format!("{:?}: {why}", n.url)))?;
        if url.scheme != "http" {
            return Err(invalid(
                format!("{key}.url"),
                "nodes are reached over plain http (put TLS in front of the gateway, not behind it)",
            ));
        }
        for (j, s) in n.streams.iter().enumerate() {
            if !crate::router::valid_stream_name(s) {
                return Err(invalid(
                    format!("{key}.streams[{j}]"),
                    format!("{s:?} is not a stream name ([A-Za-z0-9_.-]{{1,128}}, no \"..\")"),
                ));
            }
        }
        let health = match (&n.health, &n.health_interval) {
            (None, Some(_)) => {
                return Err(invalid(
                    format!("{key}.health_interval"),
                    "needs `health` (the path to check)",
                ))
            }
            (None, None) => None,
            (Some(path), _) => {
                if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
                    return Err(invalid(
                        format!("{key}.health"),
                        format!("{path:?}: a path starting with '/', without spaces"),
                    ));
                }
                let interval = duration(
                    &format!("{key}.health_interval"),
                    &n.health_interval,
                    DEFAULT_HEALTH_INTERVAL,
                )?;
                if interval < Duration::from_millis(100) {
                    return Err(invalid(
                        format!("{key}.health_interval"),
                        "must be at least 100ms",
                    ));
                }
                Some(HealthCheck {
                    path: path.clone(),
                    interval,
                })
            }
        };
        nodes.push(NodeSettings {
            id: n.id,
            url,
            streams: n.streams,
            health,
        });
    }

    Ok(nodes)
}

/// Validates `[[routes]]` against the nodes and what `[auth]` provides.
pub(super) fn validate_routes(
    raw: &[RawRoute],
    nodes: &[NodeSettings],
    groups: &[super::GroupSettings],
    available: &AuthSettings,
) -> Result<Vec<RouteSettings>, ConfigError> {
    let node_ids: HashMap<&str, ()> = nodes.iter().map(|n| (n.id.as_str(), ())).collect();
    let mut routes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        let pattern = Pattern::parse(&r.path)
            .map_err(|why| invalid(format!("{key}.path"), format!("{:?}: {why}", r.path)))?;
        let action = match r.action.as_str() {
            "redirect" => Action::Redirect,
            "proxy" => Action::Proxy,
            "live" => Action::Live,
            "auto" => Action::Auto,
            other => {
                return Err(invalid(
                    format!("{key}.action"),
                    format!("{other:?} is not one of redirect, proxy, live, auto"),
                ))
            }
        };
        let target = match &r.to {
            Some(to) if to.contains("://") => {
                let url = BaseUrl::parse(to)
                    .map_err(|why| invalid(format!("{key}.to"), format!("{to:?}: {why}")))?;
                if action != Action::Redirect && url.scheme != "http" {
                    return Err(invalid(
                        format!("{key}.to"),
                        "proxy and live routes reach nodes over plain http",
                    ));
                }
                Target::Url(url)
            }
            Some(to) => {
                if let Some(g) = groups.iter().find(|g| &g.id == to) {
                    super::groups::check_route(&format!("{key}.to"), g, action, &pattern)?;
                    Target::Group(to.clone())
                } else if !node_ids.contains_key(to.as_str()) {
                    return Err(invalid(
                        format!("{key}.to"),
                        format!("no node or group with id {to:?}"),
                    ));
                } else {
                    Target::Node(to.clone())
                }
            }
            None => {
                if !pattern.has_stream() {
                    return Err(invalid(
                        format!("{key}.to"),
                        "missing: give a node id or base URL, or put {stream} in the path so the registry picks the node",
                    ));
                }
                Target::Registry
            }
        };
        if action == Action::Live && !pattern.has_stream() {
            return Err(invalid(
                format!("{key}.path"),
                "a live route needs {stream} in its path",
            ));
        }
        let upstream_text = r.upstream.as_deref().unwrap_or(&r.path);
        let upstream = Template::parse(upstream_text).map_err(|why| {
            invalid(
                format!("{key}.upstream"),
                format!("{upstream_text:?}: {why}"),
            )
        })?;
        for var in upstream.vars() {
            if !pattern.captures(var) {
                return Err(invalid(
                    format!("{key}.upstream"),
                    format!("uses {{{var}}}, which the path does not capture"),
                ));
            }
        }
        let redirects = matches!(action, Action::Redirect | Action::Auto);
        let status = match (redirects, r.status) {
            (true, None) => 302,
            (true, Some(s @ (301 | 302 | 303 | 307 | 308))) => s,
            (true, Some(s)) => {
                return Err(invalid(
                    format!("{key}.status"),
                    format!("{s} is not a redirect status (use 301, 302, 303, 307 or 308)"),
                ))
            }
            (false, None) => 0,
            (false, Some(_)) => {
                return Err(invalid(
                    format!("{key}.status"),
                    "only redirect and auto routes take a status",
                ))
            }
        };
        let auth = match r.auth.as_deref() {
            None | Some("none") => AuthMode::None,
            Some("token") => {
                if available.tokens.is_empty() {
                    return Err(invalid(
                        format!("{key}.auth"),
                        "\"token\" needs at least one token in auth.tokens",
                    ));
                }
                AuthMode::Token
            }
            Some("signed") => {
                if available.signing_keys.is_empty() {
                    return Err(invalid(
                        format!("{key}.auth"),
                        "\"signed\" needs at least one key in auth.signing_keys",
                    ));
                }
                AuthMode::Signed
            }
            Some("secure_link") => {
                if available.secure_link.is_none() {
                    return Err(invalid(
                        format!("{key}.auth"),
                        "\"secure_link\" needs auth.secure_link_secret_expression",
                    ));
                }
                AuthMode::SecureLink
            }
            Some("hook") => {
                if available.hook.is_none() {
                    return Err(invalid(
                        format!("{key}.auth"),
                        "\"hook\" needs [auth.hook] with the hook's url",
                    ));
                }
                AuthMode::Hook
            }
            Some("jwt") => {
                let Some(jwt) = &available.jwt else {
                    return Err(invalid(format!("{key}.auth"), "\"jwt\" needs [auth.jwt]"));
                };
                if jwt.paths_claim.is_none() && !pattern.has_stream() {
                    return Err(invalid(
                        format!("{key}.auth"),
                        "\"jwt\" checks the token's stream list, so the path needs {stream} (or set auth.jwt.paths_claim)",
                    ));
                }
                AuthMode::Jwt
            }
            Some(other) => {
                return Err(invalid(
                    format!("{key}.auth"),
                    format!("{other:?} is not one of none, token, signed, secure_link, hook, jwt"),
                ))
            }
        };
        let sign_location = r.sign_location.unwrap_or(false);
        if sign_location {
            if action != Action::Redirect {
                return Err(invalid(
                    format!("{key}.sign_location"),
                    "only redirect routes have a Location to sign",
                ));
            }
            if available.secure_link.is_none() {
                return Err(invalid(
                    format!("{key}.sign_location"),
                    "needs auth.secure_link_secret_expression (the node's secure_link_md5)",
                ));
            }
        }
        let hls_session = r.hls_session.unwrap_or(false);
        if hls_session {
            if action != Action::Proxy {
                return Err(invalid(
                    format!("{key}.hls_session"),
                    "only proxy routes: the gateway must read the playlist to rewrite it",
                ));
            }
            if auth == AuthMode::None {
                return Err(invalid(
                    format!("{key}.hls_session"),
                    "a session stands in for the route's auth; this route has none (set `auth`)",
                ));
            }
        }
        let cache = match r.cache.as_deref() {
            None => None,
            Some(_) if !matches!(action, Action::Proxy | Action::Auto) => {
                return Err(invalid(
                    format!("{key}.cache"),
                    "only proxy and auto routes fetch what a cache could keep",
                ))
            }
            Some("hls") => Some(CacheMode::Hls),
            Some("vod") => Some(CacheMode::Vod),
            Some(other) => {
                return Err(invalid(
                    format!("{key}.cache"),
                    format!("{other:?} is not one of hls, vod"),
                ))
            }
        };
        let streams = validate_streams(&key, r, action, &target)?;
        let affinity = match r.affinity.as_deref() {
            None | Some("none") => Affinity::None,
            Some("redirect") if action == Action::Live => Affinity::Redirect,
            Some("redirect") => return Err(invalid(
                format!("{key}.affinity"),
                "only live routes (a fleet gateway redirects viewers of a stream it does not pull)",
            )),
            Some(other) => {
                return Err(invalid(
                    format!("{key}.affinity"),
                    format!("{other:?}: use \"none\" or \"redirect\""),
                ))
            }
        };
        let cors = match &r.cors {
            None => None,
            Some(c) => Some(validate_cors(&key, c)?),
        };
        routes.push(RouteSettings {
            affinity,
            path: r.path.clone(),
            streams,
            cors,
            hls_session,
            cache,
            upstream_prefix: upstream.literal_prefix().to_string(),
            public_prefix: pattern.literal_prefix(),
            pattern,
            action,
            target,
            upstream,
            status,
            auth,
            sign_location,
        });
    }

    Ok(routes)
}

/// `routes[i].streams`: required on a live route with a fixed node (`to`), refused elsewhere.
fn validate_streams(
    key: &str,
    r: &RawRoute,
    action: Action,
    target: &Target,
) -> Result<Option<StreamList>, ConfigError> {
    let fixed_live = action == Action::Live && !matches!(target, Target::Registry);
    let raw = match (&r.streams, fixed_live) {
        (None, false) => return Ok(None),
        (Some(_), false) => {
            return Err(invalid(
                format!("{key}.streams"),
                "only a live route with a fixed node (`to`) takes a stream list; registry routes serve what the registry holds",
            ))
        }
        (None, true) => {
            return Err(invalid(
                format!("{key}.streams"),
                "missing: a live route with a fixed node needs the list of stream names viewers may ask for (exact names or \"prefix*\"); without it any name would start a pull on the node",
            ))
        }
        (Some(v), true) => v,
    };
    if raw.is_empty() {
        return Err(invalid(
            format!("{key}.streams"),
            "empty: list at least one stream name or \"prefix*\" pattern",
        ));
    }
    let mut list = StreamList::default();
    for (j, s) in raw.iter().enumerate() {
        match s.strip_suffix('*') {
            Some(prefix) => {
                if prefix.is_empty() {
                    return Err(invalid(
                        format!("{key}.streams[{j}]"),
                        "a bare \"*\" would let any name start a pull; give a prefix (\"cam*\")",
                    ));
                }
                if !crate::router::valid_stream_name(prefix) || prefix.ends_with('.') {
                    return Err(invalid(
                        format!("{key}.streams[{j}]"),
                        format!("{s:?}: a pattern is a stream name's start ([A-Za-z0-9_.-]) then one '*' at the end"),
                    ));
                }
                list.prefixes.push(prefix.to_string());
            }
            None => {
                if !crate::router::valid_stream_name(s) {
                    return Err(invalid(
                        format!("{key}.streams[{j}]"),
                        format!("{s:?} is not a stream name ([A-Za-z0-9_.-]{{1,128}}, no \"..\") nor a \"prefix*\" pattern"),
                    ));
                }
                list.exact.insert(s.clone());
            }
        }
    }
    Ok(Some(list))
}

/// `routes[i].cors`: `"*"` or a non-empty list of `scheme://host[:port]` origins.
fn validate_cors(key: &str, raw: &RawCors) -> Result<CorsPolicy, ConfigError> {
    let list = match raw {
        RawCors::Any(s) if s == "*" => return Ok(CorsPolicy::Any),
        RawCors::Any(s) => {
            return Err(invalid(
                format!("{key}.cors"),
                format!("{s:?}: use \"*\" or a list of origins ([\"https://player.example\"])"),
            ))
        }
        RawCors::List(v) => v,
    };
    if list.is_empty() {
        return Err(invalid(
            format!("{key}.cors"),
            "empty: list at least one origin, or leave `cors` out",
        ));
    }
    let mut out = Vec::new();
    for (j, o) in list.iter().enumerate() {
        let ok = o.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && rest.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        });
        if !ok {
            return Err(invalid(
                format!("{key}.cors[{j}]"),
                format!("{o:?} is not an origin: scheme://host[:port], no path or trailing '/'"),
            ));
        }
        out.push(o.to_ascii_lowercase());
    }
    Ok(CorsPolicy::List(out))
}
