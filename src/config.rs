//! TOML → validated, typed settings. One parse function ([`parse`]), unit-tested; every error
//! names the key it is about, so `streamgate check-config` can say exactly what to fix.
//!
//! Two stages, each its own type: [`RawConfig`] mirrors the file (serde, unknown keys refused),
//! [`Settings`] is what the rest of the program uses (durations parsed, routes compiled, nodes
//! resolved).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::router::{Pattern, Template};
use crate::upstream_path::BaseUrl;

/// A configuration error, always naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (the message names the key and line).
    #[error("{0}")]
    Syntax(String),
    /// A value parsed but is not acceptable.
    #[error("{key}: {why}")]
    Invalid { key: String, why: String },
}

fn invalid(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        why: why.into(),
    }
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub live: RawLive,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub registry: RawRegistry,
    #[serde(default)]
    pub admin: RawAdmin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub backend: Option<String>,
    pub url: Option<String>,
    pub hook_secret: Option<String>,
    pub publish_tokens: Option<Vec<String>>,
    pub key_prefix: Option<String>,
    pub resync_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<String>,
}

/// `listen` may be one address or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<OneOrMany>,
    pub public_url: Option<String>,
    pub drain_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub send_buffer: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub connect_timeout: Option<String>,
    pub tcp_keepalive: Option<String>,
    pub max_idle_per_node: Option<usize>,
    pub idle_timeout: Option<String>,
    pub tls_handshake_timeout: Option<String>,
    pub response_header_timeout: Option<String>,
    pub body_idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// `[live]`: the fan-out hub's tunables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLive {
    pub gop_cache: Option<bool>,
    pub linger: Option<String>,
    pub reconnect_window: Option<String>,
    pub viewer_queue_bytes: Option<usize>,
    pub viewer_queue_duration: Option<String>,
    pub max_viewers_per_stream: Option<usize>,
    pub max_streams: Option<usize>,
    pub max_gop_bytes: Option<usize>,
    pub flush_interval: Option<String>,
    pub upstream_idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub streams: Vec<String>,
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
}

/// Validated settings: what the gateway runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    /// Accepted viewer tokens (`?token=` or `Authorization: Bearer`).
    pub tokens: Vec<String>,
    pub nodes: Vec<NodeSettings>,
    pub routes: Vec<RouteSettings>,
    /// The live fan-out (`[live]`).
    pub live: crate::live::LiveSettings,
    /// Where the stream registry lives and who may write to it (`[registry]`).
    pub registry: RegistrySettings,
    /// The REST API (`[admin]`).
    pub admin: AdminSettings,
}

/// Which registry backend holds the stream → node map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryBackend {
    /// In-process maps: one gateway, nothing to run besides it.
    Memory,
    /// Shared through Redis, for several gateways; each keeps a local snapshot for lookups.
    Redis {
        url: String,
        /// Prefix of every key and of the pub/sub channel, so platforms can share one Redis.
        key_prefix: String,
        /// How often the snapshot checks Redis for changes that pub/sub may have missed.
        resync_interval: Duration,
    },
}

/// `[registry]`: the backend and the secrets that guard writes from media servers.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub backend: RegistryBackend,
    /// Hooks must carry `?secret=` equal to this; `None` turns the hook endpoints off.
    pub hook_secret: Option<String>,
    /// If not empty, a publish hook is accepted only with `token=` set to one of these.
    pub publish_tokens: Vec<String>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            backend: RegistryBackend::Memory,
            hook_secret: None,
            publish_tokens: Vec::new(),
        }
    }
}

/// `[admin]`: the REST API's bearer token; `None` turns `/api/v1` off.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    /// Base URL viewers reach us at; upstream `Location`s pointing at a node are rewritten to it.
    /// `None` means "derive from the first bound address" (resolved at start).
    pub public_url: Option<BaseUrl>,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// A write to a viewer that makes no progress for this long closes the connection.
    pub send_timeout: Duration,
    /// `SO_SNDBUF` for client sockets; `None` leaves the kernel's autotuning on.
    pub send_buffer: Option<usize>,
}

/// The node transport. Defaults mirror the Go design we replace.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub tcp_keepalive: Duration,
    pub max_idle_per_node: usize,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub response_header_timeout: Duration,
    /// A proxied body from a node that sends nothing for this long is aborted.
    pub body_idle_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            tcp_keepalive: Duration::from_secs(30),
            max_idle_per_node: 100,
            idle_timeout: Duration::from_secs(90),
            tls_handshake_timeout: Duration::from_secs(10),
            response_header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub id: String,
    pub url: BaseUrl,
    pub streams: Vec<String>,
}

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
    /// Literal start of `upstream` and of `path`: a node's `Location` under the first is
    /// rewritten to the second.
    pub upstream_prefix: String,
    pub public_prefix: String,
}

/// Reads and validates a config file.
pub fn load(path: &str) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_string(),
        source,
    })?;
    parse(&text)
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Settings, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    validate(raw)
}

/// Parses "30s", "500ms", "2m", "1h" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

fn duration(key: &str, v: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).ok_or_else(|| {
            invalid(
                key,
                format!("{s:?} is not a duration (use e.g. \"500ms\", \"30s\", \"2m\")"),
            )
        }),
    }
}

fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let listen_raw = match raw.server.listen {
        None => vec!["127.0.0.1:8080".to_string()],
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    if listen_raw.is_empty() {
        return Err(invalid("server.listen", "at least one address is needed"));
    }
    let mut listen = Vec::new();
    for (i, a) in listen_raw.iter().enumerate() {
        let addr: SocketAddr = a.parse().map_err(|_| {
            invalid(
                format!("server.listen[{i}]"),
                format!("{a:?} is not an IP:port address"),
            )
        })?;
        listen.push(addr);
    }
    let public_url = match &raw.server.public_url {
        None => None,
        Some(u) => Some(
            BaseUrl::parse(u)
                .map_err(|why| invalid("server.public_url", format!("{u:?}: {why}")))?,
        ),
    };
    let server = ServerSettings {
        listen,
        public_url,
        drain_timeout: duration(
            "server.drain_timeout",
            &raw.server.drain_timeout,
            Duration::from_secs(10),
        )?,
        max_connections: match raw.server.max_connections {
            Some(0) => return Err(invalid("server.max_connections", "must be at least 1")),
            Some(n) => n,
            None => 10_000,
        },
        header_read_timeout: duration(
            "server.header_read_timeout",
            &raw.server.header_read_timeout,
            Duration::from_secs(30),
        )?,
        send_timeout: duration(
            "server.send_timeout",
            &raw.server.send_timeout,
            Duration::from_secs(30),
        )?,
        send_buffer: match raw.server.send_buffer {
            Some(n) if n < 4096 => {
                return Err(invalid("server.send_buffer", "must be at least 4096 bytes"))
            }
            other => other,
        },
    };
    if server.send_timeout.is_zero() {
        return Err(invalid("server.send_timeout", "must be greater than zero"));
    }

    let d = UpstreamSettings::default();
    let u = &raw.upstream;
    let upstream = UpstreamSettings {
        connect_timeout: duration(
            "upstream.connect_timeout",
            &u.connect_timeout,
            d.connect_timeout,
        )?,
        tcp_keepalive: duration("upstream.tcp_keepalive", &u.tcp_keepalive, d.tcp_keepalive)?,
        max_idle_per_node: u.max_idle_per_node.unwrap_or(d.max_idle_per_node),
        idle_timeout: duration("upstream.idle_timeout", &u.idle_timeout, d.idle_timeout)?,
        tls_handshake_timeout: duration(
            "upstream.tls_handshake_timeout",
            &u.tls_handshake_timeout,
            d.tls_handshake_timeout,
        )?,
        response_header_timeout: duration(
            "upstream.response_header_timeout",
            &u.response_header_timeout,
            d.response_header_timeout,
        )?,
        body_idle_timeout: duration(
            "upstream.body_idle_timeout",
            &u.body_idle_timeout,
            d.body_idle_timeout,
        )?,
    };
    for (key, v) in [
        ("upstream.connect_timeout", upstream.connect_timeout),
        ("upstream.body_idle_timeout", upstream.body_idle_timeout),
        (
            "upstream.response_header_timeout",
            upstream.response_header_timeout,
        ),
    ] {
        if v.is_zero() {
            return Err(invalid(key, "must be greater than zero"));
        }
    }

    for (i, t) in raw.auth.tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(invalid(
                format!("auth.tokens[{i}]"),
                "a token cannot be empty",
            ));
        }
    }

    let mut ids = HashSet::new();
    let mut nodes = Vec::new();
    for (i, n) in raw.nodes.into_iter().enumerate() {
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
        nodes.push(NodeSettings {
            id: n.id,
            url,
            streams: n.streams,
        });
    }

    let node_ids: HashMap<&str, ()> = nodes.iter().map(|n| (n.id.as_str(), ())).collect();
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
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
                if raw.auth.tokens.is_empty() {
                    return Err(invalid(
                        format!("{key}.auth"),
                        "\"token\" needs at least one token in auth.tokens",
                    ));
                }
                AuthMode::Token
            }
            Some(other) => {
                return Err(invalid(
                    format!("{key}.auth"),
                    format!("{other:?} is not one of none, token"),
                ))
            }
        };
        routes.push(RouteSettings {
            upstream_prefix: upstream.literal_prefix().to_string(),
            public_prefix: pattern.literal_prefix(),
            pattern,
            action,
            target,
            upstream,
            status,
            auth,
        });
    }

    let registry = validate_registry(&raw.registry)?;
    let admin = match &raw.admin.token {
        Some(t) if t.trim().is_empty() => return Err(invalid("admin.token", "cannot be empty")),
        t => AdminSettings { token: t.clone() },
    };
    let live = validate_live(&raw.live, upstream.response_header_timeout)?;
    Ok(Settings {
        server,
        upstream,
        tokens: raw.auth.tokens,
        nodes,
        routes,
        live,
        registry,
        admin,
    })
}

fn validate_live(
    l: &RawLive,
    response_header_timeout: Duration,
) -> Result<crate::live::LiveSettings, ConfigError> {
    let d = crate::live::LiveSettings::default();
    let positive = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let live = crate::live::LiveSettings {
        gop_cache: l.gop_cache.unwrap_or(d.gop_cache),
        linger: duration("live.linger", &l.linger, d.linger)?,
        reconnect_window: duration(
            "live.reconnect_window",
            &l.reconnect_window,
            d.reconnect_window,
        )?,
        viewer_queue_bytes: positive(
            "live.viewer_queue_bytes",
            l.viewer_queue_bytes,
            d.viewer_queue_bytes,
        )?,
        viewer_queue_duration: duration(
            "live.viewer_queue_duration",
            &l.viewer_queue_duration,
            d.viewer_queue_duration,
        )?,
        max_viewers_per_stream: positive(
            "live.max_viewers_per_stream",
            l.max_viewers_per_stream,
            d.max_viewers_per_stream,
        )?,
        max_streams: positive("live.max_streams", l.max_streams, d.max_streams)?,
        max_gop_bytes: positive("live.max_gop_bytes", l.max_gop_bytes, d.max_gop_bytes)?,
        response_header_timeout,
        flush_interval: duration("live.flush_interval", &l.flush_interval, d.flush_interval)?,
        upstream_idle_timeout: duration(
            "live.upstream_idle_timeout",
            &l.upstream_idle_timeout,
            d.upstream_idle_timeout,
        )?,
    };
    if live.upstream_idle_timeout < Duration::from_millis(100) {
        return Err(invalid(
            "live.upstream_idle_timeout",
            "must be at least 100ms",
        ));
    }
    if live.flush_interval > Duration::from_secs(1) {
        return Err(invalid(
            "live.flush_interval",
            "must be at most 1s (it adds to viewers' latency)",
        ));
    }
    if live.viewer_queue_bytes < 64 * 1024 {
        return Err(invalid(
            "live.viewer_queue_bytes",
            "must be at least 65536 (one large video frame)",
        ));
    }
    if live.viewer_queue_duration < Duration::from_millis(500) {
        return Err(invalid(
            "live.viewer_queue_duration",
            "must be at least 500ms",
        ));
    }
    Ok(live)
}

fn validate_registry(r: &RawRegistry) -> Result<RegistrySettings, ConfigError> {
    let resync_interval = duration(
        "registry.resync_interval",
        &r.resync_interval,
        Duration::from_secs(1),
    )?;
    if resync_interval < Duration::from_millis(100) || resync_interval > Duration::from_secs(60) {
        return Err(invalid(
            "registry.resync_interval",
            "must be between 100ms and 60s",
        ));
    }
    let backend = match r.backend.as_deref().unwrap_or("memory") {
        "memory" => {
            if r.url.is_some() {
                return Err(invalid(
                    "registry.url",
                    "only used with backend = \"redis\"",
                ));
            }
            RegistryBackend::Memory
        }
        "redis" => {
            let url = r.url.clone().ok_or_else(|| {
                invalid(
                    "registry.url",
                    "missing: backend = \"redis\" needs url = \"redis://host:port\"",
                )
            })?;
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                return Err(invalid(
                    "registry.url",
                    format!("{url:?}: use redis://host:port[/db]"),
                ));
            }
            let key_prefix = r
                .key_prefix
                .clone()
                .unwrap_or_else(|| "streamgate".to_string());
            if key_prefix.is_empty() || key_prefix.chars().any(|c| c.is_whitespace()) {
                return Err(invalid(
                    "registry.key_prefix",
                    "must be non-empty, without spaces",
                ));
            }
            RegistryBackend::Redis {
                url,
                key_prefix,
                resync_interval,
            }
        }
        other => {
            return Err(invalid(
                "registry.backend",
                format!("{other:?} is not one of memory, redis"),
            ))
        }
    };
    if let Some(s) = &r.hook_secret {
        if s.is_empty() {
            return Err(invalid(
                "registry.hook_secret",
                "cannot be empty (omit it to turn hooks off)",
            ));
        }
    }
    let publish_tokens = r.publish_tokens.clone().unwrap_or_default();
    for (i, t) in publish_tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(invalid(
                format!("registry.publish_tokens[{i}]"),
                "a token cannot be empty",
            ));
        }
    }
    if !publish_tokens.is_empty() && r.hook_secret.is_none() {
        return Err(invalid(
            "registry.publish_tokens",
            "publish tokens are checked by the hooks, which need registry.hook_secret",
        ));
    }
    Ok(RegistrySettings {
        backend,
        hook_secret: r.hook_secret.clone(),
        publish_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
drain_timeout = "10s"

[upstream]
connect_timeout = "30s"
tcp_keepalive = "30s"
max_idle_per_node = 100
idle_timeout = "90s"
tls_handshake_timeout = "10s"
response_header_timeout = "10s"

[auth]
tokens = ["s3cret"]

[[nodes]]
id = "a"
url = "http://127.0.0.1:9001"
streams = ["cam1", "cam2"]

[[routes]]
path = "/snap/{*rest}"
action = "redirect"
to = "a"
upstream = "/files/{*rest}"
status = 302

[[routes]]
path = "/vod/{*rest}"
action = "proxy"
to = "a"
upstream = "/files/{*rest}"

[[routes]]
path = "/flv/{stream}.flv"
action = "live"
upstream = "/live/{stream}.flv"
auth = "token"

[[routes]]
path = "/hls/{stream}/{*rest}"
action = "proxy"
upstream = "/hls/{stream}/{*rest}"
"#;

    fn err(text: &str) -> String {
        parse(text).expect_err("must fail").to_string()
    }

    #[test]
    fn example_parses() {
        let s = parse(EXAMPLE).expect("valid");
        assert_eq!(s.routes.len(), 4);
        assert_eq!(s.routes[0].status, 302);
        assert_eq!(s.routes[2].action, Action::Live);
        assert!(matches!(s.routes[2].target, Target::Registry));
        assert_eq!(s.routes[2].auth, AuthMode::Token);
        assert_eq!(s.upstream.idle_timeout, Duration::from_secs(90));
        assert_eq!(s.nodes[0].streams, vec!["cam1", "cam2"]);
    }

    #[test]
    fn listen_accepts_a_list() {
        let s = parse("[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n").expect("valid");
        assert_eq!(s.server.listen.len(), 2);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("7 fortnights"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("[upstream]\nidle_timeout = \"soon\"\n").starts_with("upstream.idle_timeout:"));
        assert!(err("[server]\nlisten = \"nope\"\n").starts_with("server.listen[0]:"));
        let bad_status = EXAMPLE.replace("status = 302", "status = 305");
        assert!(
            err(&bad_status).starts_with("routes[0].status:"),
            "{}",
            err(&bad_status)
        );
        let bad_to = EXAMPLE.replace(
            "to = \"a\"\nupstream = \"/files/{*rest}\"\nstatus",
            "to = \"zz\"\nupstream = \"/files/{*rest}\"\nstatus",
        );
        assert!(err(&bad_to).starts_with("routes[0].to:"));
        let bad_action = EXAMPLE.replace("action = \"proxy\"\nto", "action = \"teleport\"\nto");
        assert!(err(&bad_action).starts_with("routes[1].action:"));
        let no_tokens = EXAMPLE.replace("tokens = [\"s3cret\"]", "tokens = []");
        assert!(err(&no_tokens).starts_with("routes[2].auth:"));
        let bad_var = EXAMPLE.replace(
            "upstream = \"/live/{stream}.flv\"",
            "upstream = \"/live/{name}.flv\"",
        );
        assert!(err(&bad_var).starts_with("routes[2].upstream:"));
        let dup = format!("{EXAMPLE}\n[[nodes]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n");
        assert!(err(&dup).contains("duplicate node id"));
        let https = EXAMPLE.replace("http://127.0.0.1:9001", "https://127.0.0.1:9001");
        assert!(err(&https).starts_with("nodes[0].url:"));
        let stream = EXAMPLE.replace("\"cam2\"", "\"../x\"");
        assert!(err(&stream).starts_with("nodes[0].streams[1]:"));
        let no_target = "[[routes]]\npath = \"/x/{*rest}\"\naction = \"proxy\"\n";
        assert!(err(no_target).starts_with("routes[0].to:"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n");
        assert!(e.contains("lsiten"), "{e}");
    }

    #[test]
    fn registry_and_admin_sections() {
        let s = parse("").expect("defaults");
        assert_eq!(s.registry.backend, RegistryBackend::Memory);
        assert!(s.admin.token.is_none() && s.registry.hook_secret.is_none());
        let s = parse(
            "[registry]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nhook_secret = \"h00k\"\npublish_tokens = [\"pub1\"]\n[admin]\ntoken = \"adm1n\"\n",
        )
        .expect("valid");
        assert!(matches!(
            &s.registry.backend,
            RegistryBackend::Redis { url, key_prefix, resync_interval }
                if url == "redis://127.0.0.1:6379" && key_prefix == "streamgate" && *resync_interval == Duration::from_secs(1)
        ));
        assert_eq!(s.registry.publish_tokens, vec!["pub1"]);
        assert_eq!(s.admin.token.as_deref(), Some("adm1n"));
        assert!(err("[registry]\nbackend = \"etcd\"\n").starts_with("registry.backend:"));
        assert!(err("[registry]\nbackend = \"redis\"\n").starts_with("registry.url:"));
        assert!(err("[registry]\nurl = \"redis://x\"\n").starts_with("registry.url:"));
        assert!(err("[registry]\nbackend = \"redis\"\nurl = \"http://x\"\n")
            .starts_with("registry.url:"));
        assert!(
            err("[registry]\npublish_tokens = [\"p\"]\n").starts_with("registry.publish_tokens:")
        );
        assert!(err("[registry]\nhook_secret = \"\"\n").starts_with("registry.hook_secret:"));
        assert!(
            err("[registry]\nresync_interval = \"1ms\"\n").starts_with("registry.resync_interval:")
        );
        assert!(err("[admin]\ntoken = \"\"\n").starts_with("admin.token:"));
        assert!(err("[admin]\ntokne = \"x\"\n").contains("tokne"));
    }
}
