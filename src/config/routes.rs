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
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
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
            other => {
                return Err(invalid(
                    format!("{key}.action"),
                    format!("{other:?} is not one of redirect, proxy, live"),
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
                if !node_ids.contains_key(to.as_str()) {
                    return Err(invalid(
                        format!("{key}.to"),
                        format!("no node with id {to:?}"),
                    ));
                }
                Target::Node(to.clone())
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
        let status = match (action, r.status) {
            (Action::Redirect, None) => 302,
            (Action::Redirect, Some(s @ (301 | 302 | 303 | 307 | 308))) => s,
            (Action::Redirect, Some(s)) => {
                return Err(invalid(
                    format!("{key}.status"),
                    format!("{s} is not a redirect status (use 301, 302, 303, 307 or 308)"),
                ))
            }
            (_, None) => 0,
            (_, Some(_)) => {
                return Err(invalid(
                    format!("{key}.status"),
                    "only redirect routes take a status",
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
            Some(other) => {
                return Err(invalid(
                    format!("{key}.auth"),
                    format!("{other:?} is not one of none, token, signed, secure_link"),
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
        routes.push(RouteSettings {
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
