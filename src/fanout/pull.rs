//! The gateway's source: one upstream HTTP-FLV pull per stream, feeding a [`Core`].
//!
//! [`Hubs`] maps a stream (node source + upstream path) to its [`Hub`]; the first viewer starts
//! the pull, later viewers attach. The pull task owns the upstream connection and the parser.
//!
//! When a stream ends, and when it only broke:
//! - **End** (viewers get a clean end) only when the stream is known to be over: the registry no
//!   longer lists it at a re-pull (unpublish hook or API), every candidate node answers 404 when
//!   the pull is re-established, or `reconnect_window` passed without media (audio or video
//!   frames; metadata and sequence headers do not count), across connections or on one that
//!   stays open.
//! - **Break** (reconnect or fail over; viewers keep their connection) for every other end of a
//!   pull: a close-delimited EOF (a node killed with `kill -9` looks exactly like a clean close),
//!   a chunked end while the stream is still registered, a reset, bad FLV, or silence past
//!   `upstream_idle_timeout`.
//!
//! Every retry waits through the one jittered [`Backoff`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::{AttachError, Core, Joining, Phase};
use super::viewer::{ViewerBody, ViewerInfo, ViewerStats};
use super::{Failure, LiveCounters, LiveSettings, Settings};
use crate::backoff::Backoff;
use crate::body::empty;
use crate::config::DrainMode;
use crate::error::GatewayError;
use crate::flv::codec::{AudioInfo, VideoInfo};
use crate::flv::{Event, Parser, TagKind};
use crate::registry::{Lookup, Node, Registry};
use crate::upstream::{PooledBody, Transport};

/// How often a pull samples its bitrates; a sample older than [`RATE_STALE`] reads as 0.
const RATE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const RATE_STALE: std::time::Duration = std::time::Duration::from_secs(3);

/// How often a fleet pull checks whether the fleet's choice moved away from its upstream.
const REPLAN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// First and longest wait between reconnect rounds.
const BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a pull has gone without media, against `reconnect_window`.
#[derive(Debug)]
struct Outage {
    /// Since when no media has flowed (`None` while it flows).
    since: Option<Instant>,
    window: std::time::Duration,
}

impl Outage {
    fn new(window: std::time::Duration) -> Self {
        Self {
            since: None,
            window,
        }
    }

    /// A connection delivered media: the outage (if any) is over.
    fn media(&mut self) {
        self.since = None;
    }

    /// Media stopped flowing at `t` (if no outage is running yet).
    fn stalled_since(&mut self, t: Instant) {
        self.since.get_or_insert(t);
    }

    /// A round ended with no media flowing: starts the outage if needed, and tells whether it
    /// has lasted the whole window (the stream is then over).
    fn expired(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        since.elapsed() >= self.window
    }
}

/// Where a hub finds its node(s).
#[derive(Clone)]
pub enum NodeSource {
    /// The stream registry, asked again at every (re)connect so failover follows it.
    Registry(Arc<dyn Registry>),
    /// A fixed node list from the route's `to`.
    Fixed(Vec<Arc<Node>>),
    /// Through the gateway fleet (`[fleet]`): other gateways first, chosen again at every
    /// (re)connect, then the nodes of the source it wraps.
    Fleet(crate::fleet::FleetSource),
}

impl NodeSource {
    /// What distinguishes this source in a hub's key: two routes that render the same upstream
    /// path but name different nodes must not share a pull.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Registry(_) => "registry".to_string(),
            Self::Fixed(nodes) => nodes
                .iter()
                .map(|n| n.url.join("", None))
                .collect::<Vec<_>>()
                .join(" "),
            Self::Fleet(f) => f.key(),
        }
    }

    /// Whether a running pull of `stream` from `node` should move (at its next keyframe): a
    /// fleet pull whose choice changed with the fleet's membership.
    fn should_leave(&self, stream: &str, node: &str) -> bool {
        match self {
            Self::Fleet(f) => f.should_leave(stream, node),
            _ => false,
        }
    }

    /// The path and extra headers of the pull's request to `node` (a gateway of the fleet is
    /// asked for its public path, with the hop and the fleet's pass).
    fn request(
        &self,
        node: &Node,
        upstream_path: &str,
    ) -> (String, Vec<(&'static str, HeaderValue)>) {
        match self {
            Self::Fleet(f) => f.request(node, upstream_path),
            _ => (upstream_path.to_string(), Vec::new()),
        }
    }

    /// Candidate nodes for `stream`, preferred first.
    pub fn nodes(&self, stream: &str) -> Result<Vec<Arc<Node>>, GatewayError> {
        match self {
            Self::Fixed(n) => Ok(n.clone()),
            Self::Registry(r) => match r.resolve(stream) {
                Lookup::Found(n) => Ok(n),
                Lookup::AllDown => Err(GatewayError::NodeUnavailable(stream.to_string())),
                Lookup::NotFound => Err(GatewayError::StreamNotFound(stream.to_string())),
            },
            Self::Fleet(f) => f.nodes(stream),
        }
    }
}

/// One stream's figures for listings.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStats {
    pub stream: String,
    pub upstream_path: String,
    pub node: String,
    pub viewers: usize,
    pub bytes_in: u64,
    /// Bytes per second read from the node, from the pull's latest rate sample.
    pub bytes_per_second: u64,
}

/// One pull with everything the admin API shows of it.
#[derive(Debug, Clone)]
pub struct PullInfo {
    pub stream: String,
    pub upstream_path: String,
    /// The node it pulls from now (empty before the first connection).
    pub node: String,
    pub phase: &'static str,
    pub viewers: usize,
    /// Bytes read from nodes, and handed to viewers (the latter updated once a second).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bits per second over the last second (0 while nothing flows).
    pub bitrate_in: u64,
    pub bitrate_out: u64,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
    /// When the pull started (wall clock), and for how long it has run.
    pub started_at: std::time::SystemTime,
    pub uptime: std::time::Duration,
}

/// A viewer with the pull it watches.
#[derive(Debug, Clone)]
pub struct ViewerOf {
    pub upstream_path: String,
    pub node: String,
    pub viewer: ViewerStats,
}

/// All hubs of this gateway.
pub struct Hubs {
    /// Running hubs by key. Bounded by `max_streams`; a hub leaves when its pull ends.
    map: Mutex<HashMap<String, Arc<Hub>>>,
    settings: LiveSettings,
    /// The one transport to nodes, shared with the proxy (pool, timeouts, node health).
    transport: Transport,
    shutdown: CancellationToken,
    pub counters: Arc<LiveCounters>,
}

impl Hubs {
    pub fn new(settings: LiveSettings, transport: Transport, shutdown: CancellationToken) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            settings,
            transport,
            shutdown,
            counters: Arc::new(LiveCounters::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Hub>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins `stream` (pulled from `upstream_path` on its node), starting the pull if needed.
    /// Returns the viewer's body and the id of the node serving it.
    ///
    /// Waits for the hub's whole first connect sequence over every candidate node (each
    /// attempt bounded by the transport's connect and header timeouts), so a silent first node does not cost the
    /// first viewer a 504 while the hub moves on to the next.
    pub async fn join(
        self: &Arc<Self>,
        stream: &str,
        upstream_path: &str,
        source: NodeSource,
        viewer: ViewerInfo,
    ) -> Result<(ViewerBody, String), GatewayError> {
        self.join_any(stream, upstream_path, &[], source, viewer)
            .await
    }

    /// [`Self::join`], attaching to a running pull of any of `also` first (in order) when one
    /// runs: the fleet's hop rule (`crate::fleet`) lets a request share more than one kind of
    /// pull.
    pub async fn join_any(
        self: &Arc<Self>,
        stream: &str,
        upstream_path: &str,
        also: &[NodeSource],
        source: NodeSource,
        viewer: ViewerInfo,
    ) -> Result<(ViewerBody, String), GatewayError> {
        // A hub can end between lookup and attach (linger expiry, unpublish): start anew. Three
        // rounds bound the loop; each one either attaches or sees a hub end.
        for _ in 0..3 {
            if self.shutdown.is_cancelled() {
                return Err(GatewayError::ShuttingDown);
            }
            // The guard keeps the hub from lingering out while this join waits to attach.
            let (hub, _joining) = self.hub_for(stream, upstream_path, also, &source)?;
            match hub.core.ready().await {
                Phase::Failed(f) => return Err(f.to_error()),
                Phase::Ended => continue,
                Phase::Connecting | Phase::Live | Phase::Reconnecting => {}
            }
            match hub.core.attach_viewer(viewer.clone()) {
                Ok(v) => return Ok((v, hub.core.source())),
                Err(AttachError::Ended) => continue,
                Err(AttachError::Full) => {
                    return Err(GatewayError::Overloaded("too many viewers on this stream"))
                }
            }
        }
        if self.shutdown.is_cancelled() {
            return Err(GatewayError::ShuttingDown);
        }
        Err(GatewayError::Overloaded(
            "the stream ended while joining; retry",
        ))
    }

    /// The running hub for the stream, or a new one with its pull started; with the join
    /// registered on it (so it cannot linger out before the caller attaches).
    fn hub_for(
        self: &Arc<Self>,
        stream: &str,
        upstream_path: &str,
        also: &[NodeSource],
        source: &NodeSource,
    ) -> Result<(Arc<Hub>, Joining), GatewayError> {
        let key = format!("{}\n{upstream_path}", source.key());
        let mut map = self.lock();
        for other in also {
            let k = format!("{}\n{upstream_path}", other.key());
            if let Some(joining) = map.get(&k).and_then(|h| h.core.joining().map(|j| (h, j))) {
                return Ok((joining.0.clone(), joining.1));
            }
        }
        if let Some(h) = map.get(&key) {
            if let Some(joining) = h.core.joining() {
                return Ok((h.clone(), joining));
            }
        }
        map.retain(|_, h| !h.core.is_over());
        if map.len() >= self.settings.max_streams {
            return Err(GatewayError::Overloaded(
                "too many live streams on this gateway",
            ));
        }
        let hub = Arc::new(Hub {
            key: key.clone(),
            stream: stream.to_string(),
            upstream_path: upstream_path.to_string(),
            core: Core::new(
                stream,
                Settings::from_live(&self.settings),
                self.counters.clone(),
                None,
            ),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            rates: Mutex::new(Rates::default()),
        });
        // Registered before the pull starts: a new core is connecting, never over.
        let joining = hub.core.joining().ok_or(GatewayError::Overloaded(
            "the stream ended while joining; retry",
        ))?;
        let pull = Pull {
            hub: hub.clone(),
            source: source.clone(),
            transport: self.transport.clone(),
            settings: self.settings.clone(),
            counters: self.counters.clone(),
            stop: self.shutdown.child_token(),
        };
        // Owned by the task's future from the start: even a task aborted before its first poll
        // ends the hub.
        let guard = PullGuard {
            hub: hub.clone(),
            hubs: Arc::downgrade(self),
            finished: false,
        };
        tokio::spawn(pull.run_and_forget(guard));
        self.counters.pulls.fetch_add(1, Ordering::Relaxed);
        map.insert(key, hub.clone());
        Ok((hub, joining))
    }

    /// Forgets `hub` once it has ended (called by its pull task).
    fn remove(&self, hub: &Arc<Hub>) {
        let mut map = self.lock();
        if map.get(&hub.key).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            map.remove(&hub.key);
        }
    }

    /// Figures for every running stream.
    pub fn streams(&self) -> Vec<StreamStats> {
        let mut v: Vec<StreamStats> = self.lock().values().map(|h| h.stats()).collect();
        v.sort_by(|a, b| a.stream.cmp(&b.stream));
        v
    }

    /// The running hubs, or those of one stream (a scan of at most `max_streams` hubs; the
    /// registry is not read).
    fn hubs_of(&self, stream: Option<&str>) -> Vec<Arc<Hub>> {
        let mut v: Vec<Arc<Hub>> = self
            .lock()
            .values()
            .filter(|h| stream.is_none_or(|s| h.stream == s))
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.stream, &a.upstream_path).cmp(&(&b.stream, &b.upstream_path)));
        v
    }

    /// Every pull (or those of `stream`) with its figures, codecs and rates.
    pub fn pulls(&self, stream: Option<&str>) -> Vec<PullInfo> {
        self.hubs_of(stream).iter().map(|h| h.info()).collect()
    }

    /// The viewers of `stream`, on whichever of its pulls.
    pub fn viewers(&self, stream: &str) -> Vec<ViewerOf> {
        let mut out = Vec::new();
        for h in self.hubs_of(Some(stream)) {
            let node = h.core.source();
            out.extend(h.core.viewer_stats().into_iter().map(|v| ViewerOf {
                upstream_path: h.upstream_path.clone(),
                node: node.clone(),
                viewer: v,
            }));
        }
        out
    }

    /// Ends viewer `id` of `stream` (its body ends cleanly at once); `false` if it does not
    /// watch that stream.
    pub fn kick(&self, stream: &str, id: u64) -> bool {
        self.hubs_of(Some(stream)).iter().any(|h| h.core.kick(id))
    }

    /// Per node: how many pulls run from it, and how many viewers they feed.
    pub fn loads(&self) -> std::collections::HashMap<String, (usize, usize)> {
        let mut m: std::collections::HashMap<String, (usize, usize)> = Default::default();
        for h in self.hubs_of(None) {
            if h.core.is_over() {
                continue;
            }
            let e = m.entry(h.core.source()).or_default();
            e.0 += 1;
            e.1 += h.core.viewers();
        }
        m
    }

    /// What pulls do when their node is drained.
    pub fn drain_mode(&self) -> DrainMode {
        self.settings.drain
    }
}

/// One pulled stream: its key, where it comes from, and its fan-out core.
pub struct Hub {
    /// The hub's key in [`Hubs`]: node source and upstream path.
    key: String,
    stream: String,
    upstream_path: String,
    core: Arc<Core>,
    /// Bytes read from nodes for this stream.
    bytes_in: AtomicU64,
    /// Bytes handed to its viewers, summed at each rate sample.
    bytes_out: AtomicU64,
    /// When the pull started.
    started: Instant,
    started_at: std::time::SystemTime,
    /// The latest bitrate sample, taken by the pull task.
    rates: Mutex<Rates>,
}

/// A hub's bitrates, sampled about once a second by its pull task.
#[derive(Debug, Default)]
struct Rates {
    /// When the last sample was taken (`None`: never).
    at: Option<Instant>,
    /// `bytes_in` then.
    bytes_in_at: u64,
    in_bps: u64,
    out_bps: u64,
}

impl Hub {
    /// Takes a rate sample if the last one is [`RATE_EVERY`] old.
    fn sample_rates(&self, now: Instant) {
        let mut r = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let Some(at) = r.at else {
            r.at = Some(now);
            r.bytes_in_at = self.bytes_in.load(Ordering::Relaxed);
            self.bytes_out
                .fetch_add(self.core.take_bytes_out(), Ordering::Relaxed);
            return;
        };
        let dt = now.saturating_duration_since(at);
        if dt < RATE_EVERY {
            return;
        }
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let out = self.core.take_bytes_out();
        self.bytes_out.fetch_add(out, Ordering::Relaxed);
        let per_sec = |bytes: u64| (bytes as f64 * 8.0 / dt.as_secs_f64()) as u64;
        r.in_bps = per_sec(bytes_in.saturating_sub(r.bytes_in_at));
        r.out_bps = per_sec(out);
        r.at = Some(now);
        r.bytes_in_at = bytes_in;
    }

    /// The latest bitrates in and out (bits per second); zero once no sample has been taken
    /// for [`RATE_STALE`] (the pull is reconnecting, or the node went quiet).
    fn bitrates(&self) -> (u64, u64) {
        let r = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        match r.at {
            Some(at) if at.elapsed() < RATE_STALE => (r.in_bps, r.out_bps),
            _ => (0, 0),
        }
    }

    /// This pull's figures, as `/api/v1/live` and the metrics read them.
    fn stats(&self) -> StreamStats {
        StreamStats {
            stream: self.stream.clone(),
            upstream_path: self.upstream_path.clone(),
            node: self.core.source(),
            viewers: self.core.viewers(),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_per_second: self.bitrates().0 / 8,
        }
    }

    fn info(&self) -> PullInfo {
        let (bitrate_in, bitrate_out) = self.bitrates();
        let (video, audio) = self.core.media_info();
        PullInfo {
            stream: self.stream.clone(),
            upstream_path: self.upstream_path.clone(),
            node: self.core.source(),
            phase: self.core.phase().name(),
            viewers: self.core.viewers(),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            bitrate_in,
            bitrate_out,
            video,
            audio,
            started_at: self.started_at,
            uptime: self.started.elapsed(),
        }
    }
}

/// Where a viewer may start: a video keyframe, or any audio frame while the connection has shown
/// no video (start-up tags are not frames).
fn is_resume_point(t: &crate::flv::Tag, seen_video: bool) -> bool {
    if t.is_sequence_header() {
        return false;
    }
    match t.kind() {
        TagKind::Video => t.is_keyframe(),
        TagKind::Audio => !seen_video,
        TagKind::Script => false,
    }
}

/// Sends the hub's upstream request to `node` through the one transport: its per-attempt
/// connect timeout, the response-header timeout, the stale-connection retry and node health
/// are the proxy's too. The answer's status is the caller's to judge (404 = not on this node).
/// `extra`: headers a fleet pull adds (its hop and pass).
pub async fn open(
    transport: &Transport,
    node: &Node,
    path: &str,
    extra: Vec<(&'static str, HeaderValue)>,
) -> Result<Response<PooledBody>, GatewayError> {
    let uri = node.url.join(path, None);
    let mut req = Request::new(empty());
    *req.uri_mut() = uri
        .parse()
        .map_err(|_| GatewayError::BadRequest("upstream path cannot be sent"))?;
    if let Ok(v) = HeaderValue::from_str(&node.url.authority) {
        req.headers_mut().insert(header::HOST, v);
    }
    req.headers_mut().insert(
        header::VIA,
        HeaderValue::from_static(crate::proxy::headers::VIA),
    );
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("streamgate-hub"),
    );
    for (name, value) in extra {
        req.headers_mut().insert(name, value);
    }
    Ok(transport.send(node, req).await?)
}

/// How one upstream connection ended.
enum PumpEnd {
    /// The connection broke (any EOF, reset, bad FLV, silence): reconnect.
    Broken(String),
    /// The node was drained: left at a keyframe, to reconnect to another node at once.
    Moved,
    /// Shutdown, or no viewers for `linger` (the core has ended).
    Stop,
}

/// What one connection achieved.
struct Pumped {
    end: PumpEnd,
    /// It delivered the FLV header (the core went live on it).
    live: bool,
    /// It delivered media tags: only that ends an outage.
    progressed: bool,
}

/// The pull task's state.
struct Pull {
    hub: Arc<Hub>,
    source: NodeSource,
    transport: Transport,
    settings: LiveSettings,
    counters: Arc<LiveCounters>,
    stop: CancellationToken,
}

/// How a round over the candidate nodes ended without a connection that went live.
enum Round {
    /// A connection went live and then broke (or delivered nothing new): reconnect.
    Broke,
    /// The node was drained under a live connection: reconnect elsewhere without waiting.
    Moved,
    /// Every candidate answered 404.
    AllGone,
    /// No candidate could be used; the last error.
    Failed(GatewayError),
    /// Shutdown or linger: the core has ended (or must).
    Stop,
}

/// Held by a pull task: when the task goes, by finishing or by dying (panic, abort), the hub
/// leaves [`Hubs`]; if it died, its core fails first, so attached viewers get an end (an error:
/// the stream broke) instead of hanging and joiners start a new pull instead of attaching to a
/// dead one.
struct PullGuard {
    hub: Arc<Hub>,
    hubs: Weak<Hubs>,
    /// `run()` returned: the core was ended or failed there.
    finished: bool,
}

impl Drop for PullGuard {
    fn drop(&mut self) {
        if !self.finished {
            tracing::error!(stream = %self.hub.stream, "live pull task died; failing the stream");
            self.hub.core.fail(Failure::Upstream {
                node: self.hub.core.source(),
                msg: "the live pull stopped unexpectedly".into(),
            });
        }
        if let Some(hubs) = self.hubs.upgrade() {
            hubs.remove(&self.hub);
        }
    }
}

impl Pull {
    async fn run_and_forget(self, mut guard: PullGuard) {
        self.run().await;
        guard.finished = true;
    }

    async fn run(self) {
        let core = self.hub.core.clone();
        let stream = self.hub.stream.clone();
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut ever_live = false;
        let mut outage = Outage::new(self.settings.reconnect_window);
        let mut avoid: Option<String> = None;
        loop {
            if self.stop.is_cancelled() {
                core.shut_down();
                return;
            }
            let round = match self.source.nodes(&stream) {
                Err(GatewayError::StreamNotFound(_)) if ever_live => {
                    core.end("the registry withdrew the stream");
                    return;
                }
                Err(e) => Round::Failed(e),
                Ok(nodes) if !ever_live && self.transport.order(&nodes).is_empty() => {
                    // A new pull never starts on a drained node.
                    Round::Failed(GatewayError::Draining(stream.clone()))
                }
                Ok(nodes) => {
                    // Healthy nodes first (the transport's view, shared with the proxy); a
                    // running pull may still fall back on a drained node, last ...
                    let mut nodes = self.transport.health().order_for_reconnect(&nodes);
                    if let Some(bad) = &avoid {
                        // ... and the node that just failed last.
                        nodes.sort_by_key(|n| &n.id == bad);
                    }
                    self.round(
                        &nodes,
                        &mut ever_live,
                        &mut outage,
                        &mut backoff,
                        &mut avoid,
                    )
                    .await
                }
            };
            match round {
                Round::Stop if self.stop.is_cancelled() => {
                    core.shut_down();
                    return;
                }
                Round::Stop => {
                    core.end("no viewers");
                    return;
                }
                Round::Moved => {
                    // Viewers stay attached; they resume on the new node's first keyframe.
                    core.reconnecting();
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Round::AllGone if ever_live => {
                    core.end("the node(s) answer 404: the stream is over");
                    return;
                }
                Round::AllGone => {
                    core.fail(Failure::NotFound(stream.clone()));
                    return;
                }
                Round::Failed(e) if !ever_live => {
                    tracing::warn!(stream = %stream, error = %e, "live pull failed");
                    core.fail(Failure::from_error(&e));
                    return;
                }
                Round::Failed(e) => {
                    tracing::debug!(stream = %stream, error = %e, "reconnect failed");
                }
                Round::Broke => {}
            }
            core.reconnecting();
            if outage.expired() {
                core.end("reconnect window passed without media");
                return;
            }
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = self.stop.cancelled() => {
                    core.shut_down();
                    return;
                }
                _ = core.idle() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Whether a node other than `node`, and not drained, holds the stream: only then does a
    /// pull leave a drained node.
    fn other_candidate(&self, node: &str) -> bool {
        self.source
            .nodes(&self.hub.stream)
            .map(|ns| self.transport.order(&ns).iter().any(|n| n.id != node))
            .unwrap_or(false)
    }

    /// Tries the candidates in order until one goes live; returns once its connection ends.
    async fn round(
        &self,
        nodes: &[Arc<Node>],
        ever_live: &mut bool,
        outage: &mut Outage,
        backoff: &mut Backoff,
        avoid: &mut Option<String>,
    ) -> Round {
        let stream = &self.hub.stream;
        let mut all_gone = !nodes.is_empty();
        let mut last = GatewayError::StreamNotFound(stream.clone());
        for node in nodes {
            let (path, extra) = self.source.request(node, &self.hub.upstream_path);
            let resp = tokio::select! {
                _ = self.stop.cancelled() => return Round::Stop,
                r = open(&self.transport, node, &path, extra) => r,
            };
            let resp = match resp {
                Ok(r) if r.status() == StatusCode::OK => r,
                Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                    last = GatewayError::StreamNotFound(stream.clone());
                    continue;
                }
                Ok(r) => {
                    all_gone = false;
                    last = GatewayError::Upstream {
                        node: node.id.clone(),
                        source: format!("node answered {}", r.status()).into(),
                    };
                    continue;
                }
                Err(e) => {
                    all_gone = false;
                    last = e;
                    continue;
                }
            };
            all_gone = false;
            // Only media ends an outage (the pump tells it): a node that accepts and fails at
            // once, or stays open sending no media, must not keep viewers waiting forever.
            let p = self.pump(resp.into_body(), &node.id, outage).await;
            self.hub.core.flush(); // what the last frames queued, before any wait
            *ever_live |= p.live;
            if p.progressed {
                backoff.reset();
            }
            match p.end {
                PumpEnd::Stop => return Round::Stop,
                PumpEnd::Moved => {
                    *avoid = Some(node.id.clone());
                    return Round::Moved;
                }
                PumpEnd::Broken(why) => {
                    tracing::warn!(stream = %stream, node = %node.id, %why, "upstream broke; reconnecting");
                    *avoid = Some(node.id.clone());
                    last = GatewayError::Upstream {
                        node: node.id.clone(),
                        source: why.into(),
                    };
                    if p.live {
                        return Round::Broke;
                    }
                    // Never went live: the next candidate, as in the first connect sequence.
                }
            }
        }
        if all_gone {
            Round::AllGone
        } else {
            Round::Failed(last)
        }
    }

    /// Reads one upstream connection until it ends, feeding the core. Media (audio or video
    /// frames) must flow within `reconnect_window` (from the running outage's start, else from
    /// the connection's, then from the last media): a connection that stays open with only
    /// metadata, or trickles bytes that never complete a tag, is a break, and, if it went live,
    /// `outage` then dates from the last media.
    async fn pump<B>(&self, mut body: B, node: &str, outage: &mut Outage) -> Pumped
    where
        B: http_body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let core = &self.hub.core;
        let window = self.settings.reconnect_window;
        let mut media_by = outage.since.unwrap_or_else(Instant::now) + window;
        let mut out = Pumped {
            end: PumpEnd::Stop,
            live: false,
            progressed: false,
        };
        let mut parser = Parser::new();
        // Viewers are woken at most once per `flush_interval`: what queued meanwhile goes out
        // in one write per viewer.
        let interval = self.settings.flush_interval;
        let mut last_flush = Instant::now();
        let mut flush_at: Option<Instant> = None;
        // `[live] drain = "move"`: once this node is drained (after the connection started),
        // the pull leaves it just before its next keyframe (or after `reconnect_window` at the
        // latest) and reconnects elsewhere, viewers attached.
        let health = self.transport.health().clone();
        let mut drains = health.drain_changes();
        drains.mark_unchanged();
        let mut watch_drain = self.settings.drain == DrainMode::Move;
        let mut leave_by: Option<Instant> = None;
        let mut seen_video = false;
        // `[fleet]`: a pull whose upstream the fleet would no longer choose (a gateway appeared
        // to pull from instead of the node, or this gateway became a root) moves the same way.
        let fleet = matches!(self.source, NodeSource::Fleet(_));
        let mut replan = tokio::time::interval_at(Instant::now() + REPLAN_EVERY, REPLAN_EVERY);
        loop {
            let frame = tokio::select! {
                _ = self.stop.cancelled() => return out,
                _ = core.idle() => return out,
                changed = drains.changed(), if watch_drain && leave_by.is_none() => {
                    if changed.is_err() {
                        watch_drain = false;
                    } else if health.is_drained(node) && self.other_candidate(node) {
                        tracing::info!(stream = %self.hub.stream, node, "node drained: the pull moves at the next keyframe");
                        leave_by = Some(Instant::now() + window);
                    }
                    continue;
                }
                _ = replan.tick(), if fleet && leave_by.is_none() => {
                    if self.source.should_leave(&self.hub.stream, node) {
                        tracing::info!(stream = %self.hub.stream, node, "fleet: the choice moved; the pull follows at the next keyframe");
                        leave_by = Some(Instant::now() + window);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(leave_by.unwrap_or(media_by)), if leave_by.is_some() => {
                    out.end = PumpEnd::Moved;
                    return out;
                }
                _ = tokio::time::sleep_until(media_by) => {
                    if out.live {
                        // A connection that never went live is the node's fault only: the
                        // next candidate gets its own window unless an outage already runs.
                        outage.stalled_since(media_by - window);
                    }
                    out.end = PumpEnd::Broken(format!("no media from the node for {window:?}"));
                    return out;
                }
                _ = tokio::time::sleep_until(flush_at.unwrap_or(last_flush)), if flush_at.is_some() => {
                    core.flush();
                    last_flush = Instant::now();
                    flush_at = None;
                    self.hub.sample_rates(last_flush);
                    continue;
                }
                f = tokio::time::timeout(self.settings.upstream_idle_timeout, body.frame()) => match f {
                    Ok(f) => f,
                    Err(_) => {
                        out.end = PumpEnd::Broken(format!(
                            "node sent nothing for {:?}", self.settings.upstream_idle_timeout
                        ));
                        return out;
                    }
                },
            };
            let data = match frame {
                None => {
                    // Any end of body, chunked or close-delimited, says nothing about the
                    // publisher: a break. Whether the stream is over is asked at the re-pull.
                    out.end = PumpEnd::Broken(match parser.finish() {
                        Ok(()) if out.live => "the node ended the response".into(),
                        Ok(()) => "node sent no FLV data".into(),
                        Err(e) => format!("stream cut mid-tag: {e}"),
                    });
                    return out;
                }
                Some(Err(e)) => {
                    out.end = PumpEnd::Broken(e.to_string());
                    return out;
                }
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers
                },
            };
            self.hub
                .bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            self.counters
                .bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if let Err(e) = parser.push_bytes(data) {
                out.end = PumpEnd::Broken(format!("bad FLV from node: {e}"));
                return out;
            }
            let mut media = false;
            loop {
                match parser.next_event() {
                    Ok(None) => break,
                    Ok(Some(Event::Header(h))) => {
                        if !out.live {
                            let before = core.source();
                            if !before.is_empty() && before != node {
                                self.counters.failovers.fetch_add(1, Ordering::Relaxed);
                            }
                            core.begin(h.has_audio, h.has_video, node);
                            out.live = true;
                        }
                    }
                    Ok(Some(Event::Tag(t))) => {
                        if leave_by.is_some() && is_resume_point(&t, seen_video) {
                            // Viewers got this node's whole GOP; the next node's starts them.
                            out.end = PumpEnd::Moved;
                            return out;
                        }
                        seen_video |= t.kind() == TagKind::Video;
                        media |= t.kind() != TagKind::Script && !t.is_sequence_header();
                        core.push(t);
                    }
                    Err(e) => {
                        out.end = PumpEnd::Broken(format!("bad FLV from node: {e}"));
                        return out;
                    }
                }
            }
            let now = Instant::now();
            if media {
                out.progressed = true;
                outage.media();
                media_by = now + window;
            }
            self.hub.sample_rates(now);
            if now >= last_flush + interval {
                core.flush();
                last_flush = now;
                flush_at = None;
            } else if flush_at.is_none() {
                flush_at = Some(last_flush + interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body::Frame;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::UpstreamSettings;
    use crate::flv::{Tag, FLV_HEADER};

    /// An upstream body fed by the test.
    struct Feed(mpsc::UnboundedReceiver<Bytes>);

    impl http_body::Body for Feed {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn live_settings() -> LiveSettings {
        LiveSettings {
            reconnect_window: Duration::from_secs(5),
            upstream_idle_timeout: Duration::from_secs(10),
            ..LiveSettings::default()
        }
    }

    fn test_pull(hubs: Option<&Arc<Hubs>>) -> Pull {
        let settings = live_settings();
        let counters = Arc::new(LiveCounters::default());
        let hub = Arc::new(Hub {
            key: "k".into(),
            stream: "s".into(),
            upstream_path: "/live/s.flv".into(),
            core: Core::new("s", Settings::from_live(&settings), counters.clone(), None),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            rates: Mutex::new(Rates::default()),
        });
        if let Some(hubs) = hubs {
            hubs.lock().insert(hub.key.clone(), hub.clone());
        }
        Pull {
            hub,
            source: NodeSource::Fixed(Vec::new()),
            transport: Transport::new(&UpstreamSettings::default()),
            settings,
            counters,
            stop: CancellationToken::new(),
        }
    }

    fn metadata(ts: u32) -> Bytes {
        let mut d = vec![2, 0, 10];
        d.extend_from_slice(b"onMetaData");
        d.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 9]);
        Tag::new(TagKind::Script, ts, &d)
            .expect("tag")
            .bytes()
            .clone()
    }

    fn video(ts: u32, key: bool) -> Bytes {
        let first = if key { 0x17 } else { 0x27 };
        Tag::new(TagKind::Video, ts, &[first, 1, 0, 0, 0, 5])
            .expect("tag")
            .bytes()
            .clone()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_sending_only_metadata_breaks_after_the_window_and_the_stream_ends() {
        let pull = test_pull(None);
        let _joining = pull.hub.core.joining().expect("joining"); // no linger meanwhile
        let (tx, rx) = mpsc::unbounded_channel();
        // The node: FLV header, two seconds of media, then metadata every second, forever.
        let feeder = tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(&FLV_HEADER));
            let _ = tx.send(metadata(0));
            for i in 0..50u32 {
                let _ = tx.send(video(i * 40, i % 25 == 0));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if tx.send(metadata(2000)).is_err() {
                    return;
                }
            }
        });
        let t0 = Instant::now();
        let mut outage = Outage::new(pull.settings.reconnect_window);
        let p = tokio::time::timeout(
            Duration::from_secs(60),
            pull.pump(Feed(rx), "n1", &mut outage),
        )
        .await
        .expect("the pump breaks a connection that sends no media");
        assert!(p.live && p.progressed);
        assert!(matches!(p.end, PumpEnd::Broken(_)));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(6_960) && took < Duration::from_millis(7_100),
            "the window counts from the last media: {took:?}"
        );
        assert!(
            outage.expired(),
            "the outage dates from the last media: the stream is over"
        );
        feeder.abort();
    }

    #[tokio::test]
    async fn a_pull_task_that_dies_fails_its_stream_and_leaves_hubs() {
        let hubs = Arc::new(Hubs::new(
            live_settings(),
            Transport::new(&UpstreamSettings::default()),
            CancellationToken::new(),
        ));
        // A node that accepts and never answers: the pull is mid-connect when its task dies.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let node = Arc::new(Node {
            id: "n1".into(),
            url: crate::upstream_path::BaseUrl::parse(&format!("http://{addr}")).expect("url"),
            expires: None,
        });
        let mut pull = test_pull(Some(&hubs));
        pull.source = NodeSource::Fixed(vec![node]);
        let core = pull.hub.core.clone();
        let guard = PullGuard {
            hub: pull.hub.clone(),
            hubs: Arc::downgrade(&hubs),
            finished: false,
        };
        let task = tokio::spawn(pull.run_and_forget(guard));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!core.is_over() && hubs.streams().len() == 1, "pulling");
        let mut viewer = core.attach().expect("attach");
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        assert!(
            matches!(core.phase(), Phase::Failed(_)),
            "joiners waiting get an answer"
        );
        assert!(hubs.streams().is_empty(), "new joiners start a new pull");
        let end = viewer.frame().await;
        assert!(
            matches!(end, Some(Err(_))),
            "the attached viewer sees a broken stream, not a hang"
        );
        drop(listener);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_goes_live_breaks_without_starting_an_outage() {
        let pull = test_pull(None);
        let _joining = pull.hub.core.joining().expect("joining");
        let (tx, rx) = mpsc::unbounded_channel();
        let feeder = tokio::spawn(async move {
            for b in FLV_HEADER.iter() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(Bytes::copy_from_slice(&[*b])).is_err() {
                    return;
                }
            }
        });
        let mut outage = Outage::new(pull.settings.reconnect_window);
        let p = tokio::time::timeout(
            Duration::from_secs(60),
            pull.pump(Feed(rx), "n1", &mut outage),
        )
        .await
        .expect("the pump breaks");
        assert!(!p.live && matches!(p.end, PumpEnd::Broken(_)));
        assert!(
            outage.since.is_none(),
            "the next candidate gets a whole window"
        );
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_trickling_bytes_that_never_make_a_tag_breaks() {
        let pull = test_pull(None);
        let _joining = pull.hub.core.joining().expect("joining");
        let (tx, rx) = mpsc::unbounded_channel();
        let feeder = tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(&FLV_HEADER));
            let tag = video(0, true);
            for b in tag.iter() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(Bytes::copy_from_slice(&[*b])).is_err() {
                    return;
                }
            }
        });
        let mut outage = Outage::new(pull.settings.reconnect_window);
        let p = tokio::time::timeout(
            Duration::from_secs(60),
            pull.pump(Feed(rx), "n1", &mut outage),
        )
        .await
        .expect("the pump breaks");
        assert!(p.live && !p.progressed);
        assert!(matches!(p.end, PumpEnd::Broken(_)));
        assert!(outage.expired());
        feeder.abort();
    }

    /// Reads `v` until it has delivered a video keyframe tag; returns the time that took.
    async fn until_keyframe(v: &mut ViewerBody) -> Duration {
        let t0 = Instant::now();
        let mut p = Parser::new();
        loop {
            let f = v.frame().await.expect("frame").expect("data");
            p.push_bytes(f.into_data().expect("data")).expect("flv");
            while let Some(e) = p.next_event().expect("flv") {
                if let Event::Tag(t) = e {
                    if t.kind() == TagKind::Video && t.is_keyframe() && !t.is_sequence_header() {
                        return t0.elapsed();
                    }
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_joiner_gets_its_first_keyframe_without_waiting_for_the_flush() {
        let pull = test_pull(None);
        let interval = pull.settings.flush_interval;
        assert!(interval >= Duration::from_millis(10), "{interval:?}");
        let core = pull.hub.core.clone();
        let _joining = core.joining().expect("joining");
        let (tx, rx) = mpsc::unbounded_channel();
        let pump = tokio::spawn(async move {
            let mut outage = Outage::new(pull.settings.reconnect_window);
            pull.pump(Feed(rx), "n1", &mut outage).await
        });
        // The first viewer of a new pull attaches between the node's header and its first
        // keyframe (it waited in `ready()`): it gets the keyframe as it arrives.
        tx.send(Bytes::from_static(&FLV_HEADER)).expect("send");
        tx.send(metadata(0)).expect("send");
        assert!(matches!(core.ready().await, Phase::Live));
        let mut first = core.attach().expect("attach");
        let feed = tx.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = feed.send(video(0, true));
        });
        let took = until_keyframe(&mut first).await;
        assert!(took < interval, "first keyframe after {took:?}");
        // A later joiner gets the cached GOP at once, between two flushes.
        tx.send(video(40, false)).expect("send");
        tokio::time::sleep(interval / 2).await;
        let mut later = core.attach().expect("attach");
        let took = until_keyframe(&mut later).await;
        assert_eq!(took, Duration::ZERO, "the GOP is queued at attach");
        drop((first, later, tx));
        pump.abort();
    }

    #[test]
    fn a_drained_pull_leaves_only_where_a_viewer_can_start() {
        let key = Tag::new(TagKind::Video, 0, &[0x17, 1, 0, 0, 0, 5]).expect("tag");
        let inter = Tag::new(TagKind::Video, 0, &[0x27, 1, 0, 0, 0, 5]).expect("tag");
        let avc_seq = Tag::new(TagKind::Video, 0, &[0x17, 0, 0, 0, 0, 1]).expect("tag");
        let aac = Tag::new(TagKind::Audio, 0, &[0xAF, 1, 9]).expect("tag");
        let aac_seq = Tag::new(TagKind::Audio, 0, &[0xAF, 0, 0x12, 0x08]).expect("tag");
        assert!(is_resume_point(&key, true));
        assert!(!is_resume_point(&inter, true));
        assert!(
            !is_resume_point(&avc_seq, false),
            "start-up tags are not frames"
        );
        assert!(!is_resume_point(&aac_seq, false));
        assert!(
            is_resume_point(&aac, false),
            "audio-only so far: any audio frame"
        );
        assert!(!is_resume_point(&aac, true), "with video, only a keyframe");
    }

    #[tokio::test(start_paused = true)]
    async fn the_reconnect_window_counts_only_time_without_media() {
        let mut o = Outage::new(Duration::from_secs(5));
        assert!(!o.expired(), "a break starts the window");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!o.expired());
        o.media(); // a reconnect that delivered media ends the outage
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!o.expired(), "a new break starts a new window");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!o.expired());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(o.expired(), "5 s without media: over");
    }
}
