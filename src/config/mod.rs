//! TOML → validated, typed settings. One parse function ([`parse`]), unit-tested; every error
//! names the key it is about, so `streamgate check-config` can say exactly what to fix.
//!
//! Two stages, each its own type: [`RawConfig`] mirrors the file (serde, unknown keys refused),
//! [`Settings`] is what the rest of the program uses (durations parsed, routes compiled, nodes
//! resolved).

mod auth;
mod cache;
mod duration;
mod fleet;
mod groups;
mod limits;
mod live;
mod log;
mod metrics;
mod registry;
mod routes;
mod server;
mod ui;
mod upstream;

use serde::Deserialize;

pub use auth::{
    AuthSettings, HlsSessionSettings, HookFormat, HookSettings, RawAuth, RawHlsSession, RawHook,
    RawSigningKey, DEFAULT_HLS_SESSION_MAX_AGE, DEFAULT_HLS_SESSION_TTL, DEFAULT_REDIRECT_LINK_TTL,
};
pub use cache::{CacheSettings, RawCache};
use duration::duration;
pub use duration::parse_duration;
pub use fleet::{FleetSettings, RawFleet};
pub use groups::{
    GroupSettings, HashKey, MemberSettings, Policy, RawGroup, RawMember, DEFAULT_LOAD_FACTOR,
    MAX_MEMBERS, MAX_TOTAL_WEIGHT, MAX_WEIGHT,
};
pub use limits::{LimitSettings, RateSettings, RawLimits};
pub use live::{DrainMode, LiveSettings, RawLive};
pub use log::{AccessTarget, LogFormat, LogSettings, RawLog};
pub use metrics::{Cidr, MetricsSettings, RawMetrics};
pub use registry::{
    AdminSettings, RawAdmin, RawRegistry, RegistryBackend, RegistrySettings, StreamKey,
};
pub use routes::{
    Action, Affinity, AuthMode, CacheMode, CorsPolicy, HealthCheck, NodeSettings, RawCors, RawNode,
    RawRoute, RouteSettings, StreamList, Target, DEFAULT_HEALTH_INTERVAL,
};
pub use server::{
    CertificateFiles, ListenerSettings, RawCertificate, RawListen, RawListenEntry, RawListener,
    RawServer, RawTls, ServerSettings, TlsSettings,
};
pub use ui::{RawUi, UiSettings};
pub use upstream::{RawUpstream, UpstreamSettings};

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
    /// `[[groups]]`: pools of nodes a route's `to` may name.
    #[serde(default)]
    pub groups: Vec<RawGroup>,
    #[serde(default)]
    pub registry: RawRegistry,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub ui: RawUi,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub fleet: RawFleet,
}

/// Validated settings: what the gateway runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    /// Viewer tokens, signing keys, the secure_link expression (`[auth]`).
    pub auth: AuthSettings,
    pub nodes: Vec<NodeSettings>,
    /// Node groups (`[[groups]]`), by id in the order written.
    pub groups: Vec<GroupSettings>,
    pub routes: Vec<RouteSettings>,
    /// The live fan-out (`[live]`).
    pub live: LiveSettings,
    /// Where the stream registry lives and who may write to it (`[registry]`).
    pub registry: RegistrySettings,
    /// The REST API (`[admin]`).
    pub admin: AdminSettings,
    /// Per-client limits (`[limits]`), all off by default.
    pub limits: LimitSettings,
    /// The dashboard at `/ui/` (`[ui]`), off by default.
    pub ui: UiSettings,
    /// Where `/metrics` is served and how its bounded families are cut (`[metrics]`).
    pub metrics: MetricsSettings,
    /// The access log's format and destination (`[log]`).
    pub log: LogSettings,
    /// The HLS / VOD cache's bounds and lifetimes (`[cache]`).
    pub cache: CacheSettings,
    /// Gateway tiers sharing pulls (`[fleet]`); `None`: this gateway pulls on its own.
    pub fleet: Option<FleetSettings>,
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

fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let server = server::validate(&raw.server)?;
    let upstream = upstream::validate(&raw.upstream)?;
    let auth = auth::validate(raw.auth)?;
    let nodes = routes::validate_nodes(raw.nodes)?;
    let groups = groups::validate(&raw.groups, &nodes)?;
    let routes = routes::validate_routes(&raw.routes, &nodes, &groups, &auth)?;
    let registry = registry::validate(&raw.registry)?;
    // Hooks key streams as `app/stream` or as `stream`: registry routes must build the same key.
    for (i, r) in routes.iter().enumerate() {
        if !matches!(r.target, Target::Registry) {
            continue;
        }
        match (registry.key, r.pattern.captures(crate::router::APP)) {
            (StreamKey::AppStream, false) => return Err(invalid(
                format!("routes[{i}].path"),
                "with [registry] key = \"app/stream\", a registry route needs {app} in its path",
            )),
            (StreamKey::Stream, true) => {
                return Err(invalid(
                    format!("routes[{i}].path"),
                    "{app} in a registry route needs [registry] key = \"app/stream\"",
                ))
            }
            _ => {}
        }
    }
    let fleet = fleet::validate(&raw.fleet, &registry)?;
    let admin = match &raw.admin.token {
        Some(t) if t.trim().is_empty() => return Err(invalid("admin.token", "cannot be empty")),
        t => AdminSettings { token: t.clone() },
    };
    let live = live::validate(&raw.live)?;
    let limits = limits::validate(&raw.limits)?;
    let ui = ui::validate(raw.ui, &auth, &admin)?;
    let log = log::validate(&raw.log)?;
    let metrics = metrics::validate(&raw.metrics)?;
    let cache = cache::validate(&raw.cache)?;
    // Port 0 asks the system for a free port each time: two such addresses never clash.
    if metrics
        .listen
        .is_some_and(|m| m.port() != 0 && server.listen.iter().any(|l| l.addr == m))
    {
        return Err(invalid(
            "metrics.listen",
            "must differ from every server.listen address",
        ));
    }
    if let Some(f) = fleet.as_ref().filter(|f| f.url.is_none()) {
        let tls = match &server.public_url {
            Some(u) => u.scheme != "http",
            None => server.listen.first().is_some_and(|l| l.tls.is_some()),
        };
        if tls {
            return Err(invalid(
                "fleet.url",
                format!(
                    "missing: gateway {:?} is public over https; say where the fleet reaches it over plain http",
                    f.id
                ),
            ));
        }
    }
    Ok(Settings {
        cache,
        fleet,
        ui,
        log,
        limits,
        metrics,
        server,
        upstream,
        auth,
        nodes,
        groups,
        routes,
        live,
        registry,
        admin,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    fn registry_keys_leases_and_endpoints() {
        let route = |path: &str| {
            format!("[[routes]]\npath = \"{path}\"\naction = \"proxy\"\nupstream = \"/x\"\n")
        };
        let keyed = "[registry]\nkey = \"app/stream\"\n";
        let s = parse(&format!("{keyed}{}", route("/{app}/{stream}/x"))).expect("valid");
        assert_eq!(s.registry.key, StreamKey::AppStream);
        let e = err(&format!("{keyed}{}", route("/hls/{stream}/x")));
        assert!(e.starts_with("routes[0].path:"), "{e}");
        let e = err(&route("/{app}/{stream}/x"));
        assert!(e.starts_with("routes[0].path:"), "{e}");
        assert!(err("[registry]\nkey = \"vhost\"\n").starts_with("registry.key:"));
        let s = parse("[registry]\nstream_lease = \"30s\"\n").expect("lease");
        assert_eq!(s.registry.stream_lease, Some(Duration::from_secs(30)));
        assert_eq!(parse("").expect("default").registry.stream_lease, None);
        assert!(err("[registry]\nstream_lease = \"10ms\"\n").starts_with("registry.stream_lease:"));
        let sentinel = "[registry]\nbackend = \"redis\"\nurl = \"redis+sentinel://127.0.0.1:26379/mymaster\"\n";
        assert!(parse(sentinel).is_ok());
        let bad = "[registry]\nbackend = \"redis\"\nurl = \"redis+sentinel://127.0.0.1:26379\"\n";
        assert!(err(bad).starts_with("registry.url:"));
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
    fn log_and_drain_settings() {
        let s = parse(
            "[log]\nformat = \"json\"\naccess = \"/var/log/sg.log\"\n[live]\ndrain = \"stay\"\n",
        )
        .expect("valid");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.access, AccessTarget::File("/var/log/sg.log".into()));
        assert_eq!(s.live.drain, DrainMode::Stay);
        let d = parse("").expect("valid");
        assert_eq!(d.log, LogSettings::default());
        assert_eq!(d.live.drain, DrainMode::Move);
        assert!(err("[log]\nformat = \"xml\"\n").starts_with("log.format:"));
        assert!(err("[log]\naccess = \" \"\n").starts_with("log.access:"));
        assert!(err("[live]\ndrain = \"later\"\n").starts_with("live.drain:"));
    }

    #[test]
    fn listen_accepts_a_list() {
        let s = parse("[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n").expect("valid");
        assert_eq!(s.server.listen.len(), 2);
    }

    #[test]
    fn listen_entries_may_be_tables() {
        let s = parse(
            "[server]\nlisten = [\"127.0.0.1:1\", { address = \"127.0.0.1:2\", proxy_protocol = true }, { address = \"[::1]:3\" }]\n",
        )
        .expect("valid");
        let l = &s.server.listen;
        assert_eq!(l.len(), 3);
        assert_eq!((l[0].addr.port(), l[0].proxy_protocol), (1, false));
        assert_eq!((l[1].addr.port(), l[1].proxy_protocol), (2, true));
        assert_eq!((l[2].addr.port(), l[2].proxy_protocol), (3, false));
        // One table alone, inline or as a section.
        let s = parse("[server]\nlisten = { address = \"127.0.0.1:4\", proxy_protocol = true }\n")
            .expect("valid");
        assert!(s.server.listen[0].proxy_protocol);
        let s = parse("[server.listen]\naddress = \"127.0.0.1:5\"\n").expect("valid");
        assert_eq!(s.server.listen[0].addr.port(), 5);
        // Errors name the entry, and a typo in a table is called one.
        assert!(
            err("[server]\nlisten = [\"127.0.0.1:1\", { address = \"nope\" }]\n")
                .starts_with("server.listen[1].address:")
        );
        let e = err("[server]\nlisten = [{ adress = \"127.0.0.1:1\" }]\n");
        assert!(e.contains("unknown field `adress`"), "{e}");
        let e =
            err("[server]\nlisten = [{ address = \"127.0.0.1:1\", proxy_protocol = \"yes\" }]\n");
        assert!(e.contains("proxy_protocol") || e.contains("boolean"), "{e}");
        let e = err("[server]\nlisten = 8080\n");
        assert!(e.contains("IP:port"), "{e}");
        assert!(err("[server]\nlisten = []\n").starts_with("server.listen:"));
    }

    #[test]
    fn trusted_proxies_are_cidrs() {
        let s = parse(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\", \"192.0.2.7\"]\nproxy_protocol_timeout = \"2s\"\n",
        )
        .expect("valid");
        let t = &s.server.trusted_proxies;
        assert!(t.contains("10.9.9.9".parse().expect("ip")));
        assert!(t.contains("::1".parse().expect("ip")));
        assert!(t.contains("192.0.2.7".parse().expect("ip")));
        assert!(!t.contains("192.0.2.8".parse().expect("ip")));
        assert_eq!(s.server.proxy_protocol_timeout, Duration::from_secs(2));
        let d = parse("").expect("defaults");
        assert!(
            d.server.trusted_proxies.is_empty(),
            "nobody is trusted by default"
        );
        assert_eq!(d.server.proxy_protocol_timeout, Duration::from_secs(5));
        let e = err("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n");
        assert!(
            e.starts_with("server.trusted_proxies[1]:") && e.contains("10.0.0.0/8"),
            "{e}"
        );
        assert!(err("[server]\nproxy_protocol_timeout = \"0s\"\n")
            .starts_with("server.proxy_protocol_timeout:"));
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
    fn transport_and_health_keys() {
        let s = parse("").expect("defaults");
        assert_eq!(s.upstream.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.upstream.max_fails, 3);
        assert_eq!(s.upstream.fail_timeout, Duration::from_secs(10));
        let s = parse("[upstream]\nmax_fails = 0\nfail_timeout = \"1m\"\n").expect("valid");
        assert_eq!(s.upstream.max_fails, 0);
        assert_eq!(s.upstream.fail_timeout, Duration::from_secs(60));
        assert!(err("[upstream]\nfail_timeout = \"0s\"\n").starts_with("upstream.fail_timeout:"));
        let node = "[[nodes]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
        let s = parse(&format!("{node}health = \"/healthz\"\n")).expect("valid");
        assert_eq!(
            s.nodes[0].health,
            Some(HealthCheck {
                path: "/healthz".into(),
                interval: DEFAULT_HEALTH_INTERVAL
            })
        );
        let s = parse(&format!(
            "{node}health = \"/h?x=1\"\nhealth_interval = \"250ms\"\n"
        ))
        .expect("valid");
        assert_eq!(
            s.nodes[0].health.as_ref().map(|h| h.interval),
            Some(Duration::from_millis(250))
        );
        assert!(parse(node).expect("valid").nodes[0].health.is_none());
        assert!(err(&format!("{node}health = \"healthz\"\n")).starts_with("nodes[0].health:"));
        assert!(err(&format!("{node}health_interval = \"1s\"\n"))
            .starts_with("nodes[0].health_interval:"));
        assert!(err(&format!(
            "{node}health = \"/h\"\nhealth_interval = \"10ms\"\n"
        ))
        .starts_with("nodes[0].health_interval:"));
    }

    #[test]
    fn the_gop_cache_and_the_viewer_queue_are_related() {
        // A 5 MiB GOP over a 4 MiB queue is fine: the start-up burst is exempt up to the GOP
        // cache's bound.
        let s = parse(
            "[live]
viewer_queue_bytes = 4194304
max_gop_bytes = 5242880
",
        )
        .expect("valid");
        assert_eq!(s.live.max_gop_bytes, 5 << 20);
        let e = err("[live]
max_gop_bytes = 1000
");
        assert!(e.starts_with("live.max_gop_bytes:"), "{e}");
        assert!(
            e.contains("viewer_queue_bytes"),
            "the error explains the relation: {e}"
        );
    }

    #[test]
    fn a_fixed_node_live_route_needs_a_stream_list() {
        let node = "[[nodes]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
        let route = "[[routes]]\npath = \"/f/{stream}.flv\"\naction = \"live\"\nto = \"a\"\n";
        let e = err(&format!("{node}{route}"));
        assert!(e.starts_with("routes[0].streams:"), "{e}");
        assert!(e.contains("any name would start a pull"), "says why: {e}");
        let s = parse(&format!("{node}{route}streams = [\"cam1\", \"lobby-*\"]\n")).expect("valid");
        let list = s.routes[0].streams.as_ref().expect("list");
        assert!(list.allows("cam1") && list.allows("lobby-3") && list.allows("lobby-"));
        assert!(!list.allows("cam2") && !list.allows("cam1x") && !list.allows("lobby"));
        // A base URL is a fixed node too.
        let url_route = route.replace("to = \"a\"", "to = \"http://127.0.0.1:2\"");
        assert!(err(&url_route).starts_with("routes[0].streams:"));
        for bad in ["[]", "[\"*\"]", "[\"../x\"]", "[\"a*b\"]", "[\"cam**\"]"] {
            let e = err(&format!("{node}{route}streams = {bad}\n"));
            assert!(e.starts_with("routes[0].streams"), "{bad}: {e}");
        }
        // Registry routes take their names from the registry: a list there is a mistake.
        let e =
            err("[[routes]]\npath = \"/f/{stream}.flv\"\naction = \"live\"\nstreams = [\"x\"]\n");
        assert!(e.starts_with("routes[0].streams:"), "{e}");
        assert!(
            parse("[[routes]]\npath = \"/f/{stream}.flv\"\naction = \"live\"\n")
                .expect("registry live route")
                .routes[0]
                .streams
                .is_none()
        );
    }

    #[test]
    fn cors_keys() {
        let route = "[[routes]]\npath = \"/v/{*rest}\"\naction = \"redirect\"\nto = \"http://cdn.example\"\n";
        let s = parse(&format!("{route}cors = \"*\"\n")).expect("valid");
        assert_eq!(s.routes[0].cors, Some(CorsPolicy::Any));
        let s = parse(&format!(
            "{route}cors = [\"https://A.example\", \"http://localhost:3000\"]\n"
        ))
        .expect("valid");
        assert_eq!(
            s.routes[0].cors,
            Some(CorsPolicy::List(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ]))
        );
        assert!(parse(route).expect("valid").routes[0].cors.is_none());
        assert!(err(&format!("{route}cors = \"yes\"\n")).starts_with("routes[0].cors:"));
        assert!(err(&format!("{route}cors = []\n")).starts_with("routes[0].cors:"));
        for bad in [
            "https://a.example/",
            "a.example",
            "ftp://a.example",
            "https://a.example/x",
        ] {
            let e = err(&format!("{route}cors = [\"{bad}\"]\n"));
            assert!(e.starts_with("routes[0].cors[0]:"), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_keys() {
        let s = parse("").expect("defaults");
        assert_eq!(s.limits, LimitSettings::default(), "all off by default");
        let s = parse("[limits]\nconnections_per_ip = 50\nrequests_per_second_per_ip = 10\nlive_viewers_per_ip = 4\n")
            .expect("valid");
        assert_eq!(s.limits.connections_per_ip.map(|n| n.get()), Some(50));
        let r = s.limits.rate.expect("rate");
        assert_eq!(
            (r.per_second.get(), r.burst.get()),
            (10, 10),
            "burst defaults to the rate"
        );
        assert_eq!(s.limits.live_viewers_per_ip.map(|n| n.get()), Some(4));
        let s = parse("[limits]\nrequests_per_second_per_ip = 10\nburst = 40\n").expect("valid");
        assert_eq!(s.limits.rate.map(|r| r.burst.get()), Some(40));
        assert!(err("[limits]\nburst = 5\n").starts_with("limits.burst:"));
        assert!(
            err("[limits]\nrequests_per_second_per_ip = 10\nburst = 5\n")
                .starts_with("limits.burst:")
        );
        assert!(err("[limits]\nconnections_per_ip = 0\n").starts_with("limits.connections_per_ip:"));
        assert!(
            err("[limits]\nlive_viewers_per_ip = 0\n").starts_with("limits.live_viewers_per_ip:")
        );
        assert!(err("[limits]\nrps = 1\n").contains("rps"));
    }

    #[test]
    fn auto_routes() {
        let node = "[[nodes]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
        let route = "[[routes]]\npath = \"/m/{*rest}\"\naction = \"auto\"\nto = \"a\"\n";
        let s = parse(&format!("{node}{route}")).expect("valid");
        assert_eq!(
            (s.routes[0].action, s.routes[0].status),
            (Action::Auto, 302)
        );
        let s = parse(&format!("{node}{route}status = 307\n")).expect("valid");
        assert_eq!(s.routes[0].status, 307);
        assert!(err(&format!("{node}{route}status = 200\n")).starts_with("routes[0].status:"));
        // It may proxy, so it reaches nodes over plain http.
        let https = route.replace("to = \"a\"", "to = \"https://cdn.example\"");
        assert!(err(&https).starts_with("routes[0].to:"));
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

    #[test]
    fn durations_are_bounded_where_timers_use_them() {
        // Far past what an Instant can take: an error naming the key, not a panic later.
        let e = err("[live]\nlinger = \"18446744073709551615s\"\n");
        assert!(e.starts_with("live.linger:"), "{e}");
        let e = err("[server]\ndrain_timeout = \"99999h\"\n");
        assert!(e.starts_with("server.drain_timeout:"), "{e}");
        assert!(err("[live]\nlinger = \"2h\"\n").starts_with("live.linger:"));
        assert!(err("[live]\nreconnect_window = \"0s\"\n").starts_with("live.reconnect_window:"));
        let s = parse("[live]\nlinger = \"0s\"\n").expect("no linger is a valid choice");
        assert_eq!(s.live.linger, Duration::ZERO);
        assert_eq!(s.live.websocket_ping_interval, Duration::from_secs(30));
        for bad in ["500ms", "2h"] {
            let e = err(&format!("[live]\nwebsocket_ping_interval = \"{bad}\"\n"));
            assert!(e.starts_with("live.websocket_ping_interval:"), "{e}");
        }
    }
}
