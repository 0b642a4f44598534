//! `GET /metrics`: the gateway's one metrics registry, in the Prometheus text format (or
//! OpenMetrics when the scraper asks for it), built on `prometheus-client`.
//!
//! What is counted where:
//! - requests, by route and status class, and body bytes in and out by route: at the request's
//!   end, by the record that also writes the access line (`gateway.rs`), so the two never
//!   disagree; long bodies add their bytes as they go;
//! - upstream connect and response-header latency and errors, by node: in the one transport
//!   ([`NodeMetrics`], labels bounded there);
//! - the live fan-out, the registry, Redis, the process: read at scrape time from the state
//!   that already exists (hubs, registry snapshot, `/proc/self`), so nothing is stored per
//!   stream or per node just for metrics.
//!
//! Every label value comes from the config or from a bounded set: `route` is the route's path
//! pattern as configured (`_admin`, `_metrics` and `_none` for the gateway's own paths and
//! requests no route matched), `node` a node id (bounded), `stream` one of the `top_streams`
//! streams with the most viewers (the rest summed as `stream="_other"`). No label ever holds a
//! request path, a query string or a credential.

pub mod nodes;
pub mod process;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Weak};

use crate::body::RequestBody;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry as PromRegistry;

use crate::body::{full, Body};
use crate::config::{Cidr, Settings, Target};
use crate::error::GatewayError;
use crate::fanout::Hubs;
use crate::registry::Registry;
use crate::server::{ConnInfo, Handler};

pub use nodes::NodeMetrics;

/// The `stream` label value the streams past `top_streams` are summed under.
pub const OTHER_STREAMS: &str = "_other";

/// The OpenMetrics content type, answered to scrapers that ask for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A route's body bytes are added to its counters at least every this many bytes, so a long
/// live body shows its traffic while it runs, not only when it ends.
pub const BYTES_FLUSH: u64 = 1 << 20;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// The status classes counted from the start (series at zero on the first scrape).
const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// One route's request counters, made at start.
pub struct RouteCounters {
    route: String,
    /// `2xx` to `5xx`, in [`CLASSES`] order.
    by_class: [Counter; 4],
    /// The family, for a status outside those classes (never sent by the gateway itself).
    family: Family<RouteStatus, Counter>,
    /// Body bytes sent to clients.
    pub response_bytes: Counter,
    /// Request body bytes received from clients (and forwarded to a node).
    pub request_bytes: Counter,
}

impl RouteCounters {
    /// One request ended with `status`.
    pub fn request(&self, status: u16) {
        match status / 100 {
            c @ 2..=5 => {
                self.by_class[usize::from(c - 2)].inc();
            }
            _ => {
                self.family
                    .get_or_create(&RouteStatus {
                        route: self.route.clone(),
                        status: "1xx",
                    })
                    .inc();
            }
        }
    }
}

/// The gateway's metrics: the registry `/metrics` encodes, and the handles the request path
/// counts into.
pub struct Metrics {
    registry: PromRegistry,
    /// The request families, for the counters of each route table (start and reloads).
    requests: Family<RouteStatus, Counter>,
    response_bytes: Family<RouteLabel, Counter>,
    request_bytes: Family<RouteLabel, Counter>,
    /// The route paths of the table in use: a reload drops the series of paths it removed.
    route_paths: std::sync::Mutex<Vec<String>>,
    /// `config_reloads_total` by `result` (`ok`, `error`).
    reloads: Family<ReloadResult, Counter>,
    /// When the config was last applied (start or reload), seconds since the epoch.
    last_reload: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `/api/v1` and `/hooks`.
    admin: Arc<RouteCounters>,
    /// `/metrics` on the main listener.
    scrape: Arc<RouteCounters>,
    /// Requests no route matched.
    unrouted: Arc<RouteCounters>,
    /// Node groups' per-member in-flight and pick counts (`upstream::balance`), for the
    /// config applied now.
    pub groups: Arc<crate::upstream::balance::GroupMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl RouteCounters {
    /// Counters registered nowhere (replaced right after `Metrics::new` makes its families).
    fn placeholder() -> Self {
        Self {
            route: String::new(),
            by_class: Default::default(),
            family: Family::default(),
            response_bytes: Counter::default(),
            request_bytes: Counter::default(),
        }
    }
}

/// The node ids the config names: `[[nodes]]`, and the origins of routes whose `to` is a URL.
pub fn configured_nodes(settings: &Settings) -> Vec<String> {
    let mut ids: Vec<String> = settings.nodes.iter().map(|n| n.id.clone()).collect();
    for r in &settings.routes {
        if let Target::Url(u) = &r.target {
            ids.push(u.origin());
        }
    }
    ids
}

impl Metrics {
    /// Builds the registry: the request families, the transport's `nodes`, and the collectors
    /// that read the live hubs, the stream registry and the process at scrape time.
    pub fn new(
        settings: &Settings,
        nodes: Arc<NodeMetrics>,
        hubs: &Arc<Hubs>,
        registry: Arc<dyn Registry>,
    ) -> Self {
        let mut root = PromRegistry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let reg = root.sub_registry_with_prefix("streamgate");
        let requests = Family::<RouteStatus, Counter>::default();
        let response_bytes = Family::<RouteLabel, Counter>::default();
        let request_bytes = Family::<RouteLabel, Counter>::default();
        reg.register(
            "http_requests",
            "Requests answered, by route (its configured path pattern) and status class, \
             counted when the response ends",
            requests.clone(),
        );
        reg.register(
            "http_response_bytes",
            "Response body bytes sent to clients, by route",
            response_bytes.clone(),
        );
        reg.register(
            "http_request_bytes",
            "Request body bytes received from clients and forwarded to nodes, by route",
            request_bytes.clone(),
        );
        let reloads = Family::<ReloadResult, Counter>::default();
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ReloadResult { result });
        }
        reg.register(
            "config_reloads",
            "Config reloads asked (SIGHUP or the admin API), by result: ok (applied) or error \
             (refused; the running config stays)",
            reloads.clone(),
        );
        let last_reload = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        last_reload.set(unix_now());
        reg.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running config was applied (start or the last successful reload), \
             seconds since the Unix epoch",
            last_reload.clone(),
        );
        nodes.register(reg);
        reg.register(
            "build",
            "The running streamgate build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        reg.register_collector(Box::new(LiveCollector {
            hubs: Arc::downgrade(hubs),
            top: settings.metrics.top_streams,
        }));
        reg.register_collector(Box::new(RegistryCollector { registry, nodes }));
        let groups = Arc::new(crate::upstream::balance::GroupMetrics::default());
        reg.register_collector(Box::new(groups.clone()));
        let mut me = Self {
            groups,
            registry: root,
            admin: Arc::new(RouteCounters::placeholder()),
            scrape: Arc::new(RouteCounters::placeholder()),
            unrouted: Arc::new(RouteCounters::placeholder()),
            requests,
            response_bytes,
            request_bytes,
            route_paths: std::sync::Mutex::new(Vec::new()),
            reloads,
            last_reload,
        };
        me.admin = me.counters("_admin");
        me.scrape = me.counters("_metrics");
        me.unrouted = me.counters("_none");
        me
    }

    /// Adds a collector read at scrape time under the `streamgate_` prefix (the cache's).
    pub fn with_collector(mut self, c: Box<dyn Collector>) -> Self {
        self.registry
            .sub_registry_with_prefix("streamgate")
            .register_collector(c);
        self
    }

    /// Registers the access log's count of lines dropped because its writer could not keep up
    /// (zero, and staying so, when the log is off).
    pub fn with_access_log_dropped(mut self, dropped: Counter) -> Self {
        self.registry
            .sub_registry_with_prefix("streamgate")
            .register(
                "access_log_dropped_lines",
                "Access log lines dropped because the log's writer could not keep up (its queue \
             was full); requests never wait for it",
                dropped,
            );
        self
    }

    /// One route's counters, labelled with its path: the same path keeps the same series
    /// across reloads.
    fn counters(&self, route: &str) -> Arc<RouteCounters> {
        let l = RouteLabel {
            route: route.to_string(),
        };
        Arc::new(RouteCounters {
            route: route.to_string(),
            by_class: CLASSES.map(|status| {
                self.requests.get_or_create_owned(&RouteStatus {
                    route: route.to_string(),
                    status,
                })
            }),
            family: self.requests.clone(),
            response_bytes: self.response_bytes.get_or_create_owned(&l),
            request_bytes: self.request_bytes.get_or_create_owned(&l),
        })
    }

    /// The counters of a route table, by index (at start and at each reload). The series of
    /// route paths the previous table had and this one has not are dropped, so reloads do not
    /// pile up series; a request still running on a removed route counts into a handle no
    /// longer exported.
    pub fn route_counters(
        &self,
        routes: &[crate::config::RouteSettings],
    ) -> Vec<Arc<RouteCounters>> {
        let out: Vec<_> = routes.iter().map(|r| self.counters(&r.path)).collect();
        let new: Vec<String> = routes.iter().map(|r| r.path.clone()).collect();
        let mut paths = self.route_paths.lock().unwrap_or_else(|p| p.into_inner());
        for gone in paths.iter().filter(|p| !new.contains(p)) {
            for status in CLASSES.into_iter().chain(["1xx"]) {
                self.requests.remove(&RouteStatus {
                    route: gone.clone(),
                    status,
                });
            }
            let l = RouteLabel {
                route: gone.clone(),
            };
            self.response_bytes.remove(&l);
            self.request_bytes.remove(&l);
        }
        *paths = new;
        out
    }

    /// Counts one config reload's outcome; a success also sets the last-reload time.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadResult { result }).inc();
        if ok {
            self.last_reload.set(unix_now());
        }
    }

    /// The counters of the registry API and hooks.
    pub fn admin(&self) -> &Arc<RouteCounters> {
        &self.admin
    }

    /// The counters of `/metrics` on the main listener.
    pub fn scrape(&self) -> &Arc<RouteCounters> {
        &self.scrape
    }

    /// The counters of requests no route matched.
    pub fn unrouted(&self) -> &Arc<RouteCounters> {
        &self.unrouted
    }

    /// The metrics as text: OpenMetrics when `accept` asks for it, else the Prometheus text
    /// format 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }

    /// The answer to a scrape (`GET` or `HEAD /metrics`), in the format `headers` accept.
    pub fn respond(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, GatewayError> {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return Err(GatewayError::MethodNotAllowed(std::borrow::Cow::Borrowed(
                "GET, HEAD",
            )));
        }
        let openmetrics = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        let text = self
            .encode(openmetrics)
            .map_err(|_| GatewayError::Internal("metrics could not be encoded".into()))?;
        let mut resp = Response::new(if *method == Method::HEAD {
            crate::body::empty()
        } else {
            full(text)
        });
        let ct = if openmetrics {
            OPENMETRICS
        } else {
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE
        };
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }
}

/// Who may read `/metrics` on the main listener: the admin token's bearer, or a source in
/// `[metrics] allow`.
pub struct Access {
    token: Option<String>,
    allow: Vec<Cidr>,
}

impl Access {
    pub fn new(settings: &Settings) -> Self {
        Self {
            token: settings.admin.token.clone(),
            allow: settings.metrics.allow.clone(),
        }
    }

    /// `Ok` if the request may read the metrics.
    pub fn check(&self, headers: &HeaderMap, peer: IpAddr) -> Result<(), GatewayError> {
        if self.allow.iter().any(|c| c.contains(peer)) {
            return Ok(());
        }
        let Some(want) = &self.token else {
            if self.allow.is_empty() {
                return Err(GatewayError::Disabled(
                    "/metrics (set [metrics] listen, [metrics] allow or [admin] token)",
                ));
            }
            return Err(GatewayError::Forbidden(
                "this address may not read /metrics",
            ));
        };
        match crate::admin::bearer_token(headers) {
            Some(t) if crate::auth::ct_eq(t.as_bytes(), want.as_bytes()) => Ok(()),
            _ => Err(GatewayError::Unauthorized),
        }
    }
}

/// The handler of the metrics listener (`[metrics] listen`): `/metrics` and nothing else, no
/// credentials.
pub struct MetricsServer {
    pub metrics: Arc<Metrics>,
}

impl Handler for MetricsServer {
    async fn call(&self, req: Request<RequestBody>, _conn: ConnInfo) -> Response<Body> {
        let rid = crate::request_id::from_headers(req.headers());
        let result = if req.uri().path() == "/metrics" {
            self.metrics.respond(req.method(), req.headers())
        } else {
            Err(GatewayError::NoRoute)
        };
        let mut resp = result.unwrap_or_else(|e| e.to_response(rid.to_str().unwrap_or_default()));
        resp.headers_mut().insert(crate::request_id::HEADER, rid);
        resp
    }
}

/// A gauge without labels, written by a collector.
pub(crate) fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: impl EncodeGaugeValue,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// A counter without labels, written by a collector from a value kept elsewhere.
pub(crate) fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// [`counter`] for a fractional value (seconds).
pub(crate) fn counter_f64(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, f64>(&v, None)
}

/// The live fan-out, read from the hubs at scrape time.
struct LiveCollector {
    hubs: Weak<Hubs>,
    /// `[metrics] top_streams`.
    top: usize,
}

impl std::fmt::Debug for LiveCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCollector")
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

/// One stream's figures for the per-stream families, summed over its hubs (two routes may
/// pull the same name from different places).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamFigures {
    pub viewers: u64,
    pub bytes_per_second: u64,
}

/// The `top` streams by viewers (ties by name), then everything else summed under
/// [`OTHER_STREAMS`] (always present, zero when nothing is left over).
pub fn top_streams<'a>(
    streams: impl IntoIterator<Item = (&'a str, StreamFigures)>,
    top: usize,
) -> Vec<(&'a str, StreamFigures)> {
    let mut by_name: HashMap<&str, StreamFigures> = HashMap::new();
    for (name, f) in streams {
        let e = by_name.entry(name).or_default();
        e.viewers += f.viewers;
        e.bytes_per_second += f.bytes_per_second;
    }
    // A stream literally named like the tail's label is counted in the tail.
    let mut other = by_name.remove(OTHER_STREAMS).unwrap_or_default();
    let mut v: Vec<(&str, StreamFigures)> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.viewers.cmp(&a.1.viewers).then(a.0.cmp(b.0)));
    for (_, f) in v.iter().skip(top) {
        other.viewers += f.viewers;
        other.bytes_per_second += f.bytes_per_second;
    }
    v.truncate(top);
    v.push((OTHER_STREAMS, other));
    v
}

impl Collector for LiveCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(hubs) = self.hubs.upgrade() else {
            return Ok(());
        };
        let streams = hubs.streams();
        let viewers: usize = streams.iter().map(|s| s.viewers).sum();
        gauge(
            &mut enc,
            "live_viewers",
            "Live viewers attached right now.",
            viewers as u64,
        )?;
        gauge(
            &mut enc,
            "live_streams",
            "Live streams pulled right now (one upstream pull each).",
            streams.len() as u64,
        )?;
        let c = &hubs.counters;
        for (name, help, v) in [
            (
                "live_pulls",
                "Upstream pulls started (first connections, not reconnects).",
                &c.pulls,
            ),
            (
                "live_reconnects",
                "Upstream reconnect attempts after a pull went live.",
                &c.reconnects,
            ),
            (
                "live_failovers",
                "Pulls that went live again on a different node than before.",
                &c.failovers,
            ),
            (
                "live_frames_dropped",
                "Tags not delivered to slow viewers (skipped to the next keyframe).",
                &c.frames_dropped,
            ),
            (
                "live_viewers_cut",
                "Viewers disconnected for being too slow.",
                &c.viewers_cut,
            ),
            (
                "live_received_bytes",
                "Live media bytes read from nodes.",
                &c.bytes_in,
            ),
            (
                "live_sent_bytes",
                "Live media bytes handed to viewers.",
                &c.bytes_out,
            ),
        ] {
            counter(&mut enc, name, help, v.load(Relaxed))?;
        }
        let rows = top_streams(
            streams.iter().map(|s| {
                (
                    s.stream.as_str(),
                    StreamFigures {
                        viewers: s.viewers as u64,
                        bytes_per_second: s.bytes_per_second,
                    },
                )
            }),
            self.top,
        );
        let mut m = enc.encode_descriptor(
            "live_stream_viewers",
            "Viewers per stream: the streams with the most viewers ([metrics] top_streams), \
             the rest summed as stream=\"_other\".",
            None,
            MetricType::Gauge,
        )?;
        for (name, f) in &rows {
            m.encode_family(&[("stream", *name)])?
                .encode_gauge(&f.viewers)?;
        }
        let mut m = enc.encode_descriptor(
            "live_stream_ingest_bytes_per_second",
            "Bytes per second read from the node per stream, over the last seconds, for the \
             same streams as live_stream_viewers.",
            None,
            MetricType::Gauge,
        )?;
        for (name, f) in &rows {
            m.encode_family(&[("stream", *name)])?
                .encode_gauge(&f.bytes_per_second)?;
        }
        Ok(())
    }
}

/// The stream registry and its store, read at scrape time; also gives back the node labels
/// of nodes that left the registry.
struct RegistryCollector {
    registry: Arc<dyn Registry>,
    nodes: Arc<NodeMetrics>,
}

impl std::fmt::Debug for RegistryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCollector").finish_non_exhaustive()
    }
}

impl Collector for RegistryCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = self.registry.now();
        let nodes = self.registry.nodes();
        let up = nodes.iter().filter(|n| n.is_up(now)).count() as u64;
        let mut m = enc.encode_descriptor(
            "registry_nodes",
            "Nodes in the stream registry, by state (up: configured or heartbeating within \
             its TTL).",
            None,
            MetricType::Gauge,
        )?;
        m.encode_family(&[("state", "up")])?.encode_gauge(&up)?;
        m.encode_family(&[("state", "down")])?
            .encode_gauge(&(nodes.len() as u64 - up))?;
        if let Some(connected) = self.registry.store_connected() {
            gauge(
                &mut enc,
                "registry_redis_connected",
                "1 while the registry is in sync with Redis, 0 while Redis cannot be reached.",
                u64::from(connected),
            )?;
        }
        self.nodes.prune(|id| self.registry.node(id).is_some());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(viewers: u64) -> StreamFigures {
        StreamFigures {
            viewers,
            bytes_per_second: viewers * 10,
        }
    }

    #[test]
    fn the_tail_is_summed_into_other() {
        let input = [
            ("a", f(1)),
            ("b", f(5)),
            ("c", f(3)),
            ("b", f(2)),
            ("d", f(3)),
        ];
        let rows = top_streams(input.iter().map(|(n, x)| (*n, *x)), 2);
        assert_eq!(
            rows,
            vec![("b", f(7)), ("c", f(3)), (OTHER_STREAMS, f(4))],
            "b summed over its hubs, c before d on a tie, a and d in the tail"
        );
        let rows = top_streams(std::iter::empty(), 5);
        assert_eq!(rows, vec![(OTHER_STREAMS, StreamFigures::default())]);
        // 1,000 streams: never more than top + 1 rows.
        let names: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
        let rows = top_streams(names.iter().map(|n| (n.as_str(), f(1))), 20);
        assert_eq!(rows.len(), 21);
        assert_eq!(rows[20], (OTHER_STREAMS, f(980)));
        // A stream named `_other` joins the tail instead of making a second series.
        let rows = top_streams([("_other", f(2)), ("x", f(1))], 0);
        assert_eq!(rows, vec![(OTHER_STREAMS, f(3))]);
    }
}
