//! One live stream's hub: a single upstream pull, fanned out to every viewer.
//!
//! The pull task owns the upstream connection and the parser. Viewers are slots in a list behind
//! a mutex, taken once per upstream tag (a `try_send` per viewer) and on join/leave. The hub's
//! life: Connecting → Live (first FLV header) → reconnecting through gaps shorter than
//! `reconnect_window`, failing over to other nodes the registry lists → Ended (node ended the
//! stream, window passed, no viewers for `linger`, or shutdown), which ends every viewer cleanly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::gop::{GopCache, InitCache};
use super::timestamps::Rewriter;
use super::viewer::{Budget, Offer, Slot, ViewerBody};
use super::{Hubs, LiveCounters, LiveSettings, NodeSource, StreamStats};
use crate::body::empty;
use crate::error::GatewayError;
use crate::flv::{self, Event, Parser, Tag, TagKind};
use crate::proxy::UpstreamClient;
use crate::registry::Node;

/// Why a hub could not take a viewer.
#[derive(Debug)]
pub enum AttachError {
    /// The hub has ended; start a new one.
    Ended,
    /// The per-stream viewer limit is reached.
    Full,
}

/// Why the first connection failed (a simplified, clonable `GatewayError`).
#[derive(Debug, Clone)]
enum Failure {
    NotFound(String),
    Unavailable(String),
    Timeout { node: String, secs: f64 },
    Connect { node: String, msg: String },
    Upstream { node: String, msg: String },
}

impl Failure {
    fn from_error(e: &GatewayError) -> Self {
        match e {
            GatewayError::StreamNotFound(s) => Self::NotFound(s.clone()),
            GatewayError::NodeUnavailable(s) => Self::Unavailable(s.clone()),
            GatewayError::UpstreamTimeout { node, secs } => Self::Timeout {
                node: node.clone(),
                secs: *secs,
            },
            GatewayError::UpstreamConnect { node, source } => Self::Connect {
                node: node.clone(),
                msg: source.to_string(),
            },
            other => Self::Upstream {
                node: String::new(),
                msg: other.to_string(),
            },
        }
    }

    fn to_error(&self) -> GatewayError {
        match self.clone() {
            Self::NotFound(s) => GatewayError::StreamNotFound(s),
            Self::Unavailable(s) => GatewayError::NodeUnavailable(s),
            Self::Timeout { node, secs } => GatewayError::UpstreamTimeout { node, secs },
            Self::Connect { node, msg } => GatewayError::UpstreamConnect {
                node,
                source: msg.into(),
            },
            Self::Upstream { node, msg } => GatewayError::Upstream {
                node,
                source: msg.into(),
            },
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Connecting,
    Live,
    Failed(Failure),
    Ended,
}

/// Everything a hub is started with.
pub struct HubInit {
    /// The hub's key in [`Hubs`]: node source and upstream path.
    pub key: String,
    pub stream: String,
    pub upstream_path: String,
    pub source: NodeSource,
    pub settings: LiveSettings,
    pub client: UpstreamClient,
    pub counters: Arc<LiveCounters>,
    pub stop: CancellationToken,
    pub hubs: Weak<Hubs>,
}

struct Inner {
    viewers: Vec<Slot>,
    init: InitCache,
    gop: GopCache,
    /// Node currently pulled from.
    node: String,
    /// Viewer timestamp of the latest tag.
    last_ts: u32,
    /// A video tag has been seen. Until then audio frames count as keyframes: header flags
    /// are not to be trusted (SRS announces video on audio-only streams).
    seen_video: bool,
    /// Since when the hub has had no viewers (`None` while it has some).
    idle_since: Option<Instant>,
    ended: bool,
}

/// One stream's fan-out.
pub struct Hub {
    key: String,
    stream: String,
    upstream_path: String,
    settings: LiveSettings,
    counters: Arc<LiveCounters>,
    inner: Mutex<Inner>,
    state: watch::Sender<State>,
    next_id: AtomicU64,
    bytes_in: AtomicU64,
    /// Woken when the last viewer leaves, so the pull can start its linger timer.
    viewer_left: Notify,
}

/// How one upstream connection ended.
enum PumpEnd {
    /// The node ended the stream (clean end of body).
    Clean,
    /// Connection or parse failure: reconnect.
    Broken(String),
    /// Shutdown or no viewers for `linger`.
    Stop,
}

impl Hub {
    /// Creates the hub and starts its pull task.
    pub fn spawn(init: HubInit) -> Arc<Hub> {
        let (state, _) = watch::channel(State::Connecting);
        // Grace for the first viewer, who attaches only once the hub is live.
        let grace = Instant::now() + init.settings.response_header_timeout;
        let hub = Arc::new(Hub {
            key: init.key,
            stream: init.stream,
            upstream_path: init.upstream_path,
            settings: init.settings,
            counters: init.counters,
            inner: Mutex::new(Inner {
                viewers: Vec::new(),
                init: InitCache::default(),
                gop: GopCache::default(),
                node: String::new(),
                last_ts: 0,
                seen_video: false,
                idle_since: Some(grace),
                ended: false,
            }),
            state,
            next_id: AtomicU64::new(1),
            bytes_in: AtomicU64::new(0),
            viewer_left: Notify::new(),
        });
        let task_hub = hub.clone();
        tokio::spawn(async move {
            task_hub.run(init.source, init.client, init.stop).await;
            task_hub.finish();
            if let Some(hubs) = init.hubs.upgrade() {
                hubs.remove(&task_hub.key, &task_hub);
            }
        });
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_ended(&self) -> bool {
        matches!(*self.state.borrow(), State::Ended | State::Failed(_))
    }

    /// The node currently serving the stream.
    pub fn node(&self) -> String {
        self.lock().node.clone()
    }

    pub fn stats(&self) -> StreamStats {
        let inner = self.lock();
        StreamStats {
            stream: self.stream.clone(),
            upstream_path: self.upstream_path.clone(),
            node: inner.node.clone(),
            viewers: inner.viewers.len(),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
        }
    }

    /// Waits until the pull is live (or failed, or ended).
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), GatewayError> {
        let mut rx = self.state.subscribe();
        let waited =
            tokio::time::timeout(limit, rx.wait_for(|s| !matches!(s, State::Connecting))).await;
        match waited {
            Err(_) => Err(GatewayError::UpstreamTimeout {
                node: self.node(),
                secs: limit.as_secs_f64(),
            }),
            Ok(Err(_)) => Err(GatewayError::Internal("hub state channel closed".into())),
            Ok(Ok(s)) => match &*s {
                State::Failed(f) => Err(f.to_error()),
                _ => Ok(()),
            },
        }
    }

    fn budget(&self) -> Budget {
        Budget {
            bytes: self.settings.viewer_queue_bytes,
            media_ms: u32::try_from(self.settings.viewer_queue_duration.as_millis())
                .unwrap_or(u32::MAX),
        }
    }

    /// Adds a viewer: it gets the header, start-up tags and the cached GOP (or waits for the
    /// next keyframe), then live tags.
    pub fn attach(self: &Arc<Self>) -> Result<ViewerBody, AttachError> {
        let budget = self.budget();
        let mut inner = self.lock();
        if inner.ended {
            return Err(AttachError::Ended);
        }
        if inner.viewers.len() >= self.settings.max_viewers_per_stream {
            return Err(AttachError::Full);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let gop: &[Tag] = if self.settings.gop_cache {
            inner.gop.tags()
        } else {
            &[]
        };
        let (mut slot, shared) = Slot::new(id);
        let header = inner
            .init
            .header
            .clone()
            .unwrap_or_else(|| Bytes::from_static(&flv::FLV_HEADER));
        slot.offer_control(&header);
        for t in inner.init.tags() {
            slot.offer_control(t.bytes());
        }
        if gop.is_empty() {
            slot.skipping = true; // start on the next keyframe
        } else {
            for t in gop {
                let key = t.kind() == TagKind::Video && t.is_keyframe();
                slot.offer(t.bytes(), t.timestamp(), key, budget);
            }
        }
        inner.viewers.push(slot);
        inner.idle_since = None;
        drop(inner);
        Ok(ViewerBody::new(
            shared,
            self.clone(),
            id,
            self.counters.clone(),
        ))
    }

    /// Removes a viewer (its body was dropped).
    pub(crate) fn detach(&self, id: u64) {
        let mut inner = self.lock();
        inner.viewers.retain(|v| v.id != id);
        if inner.viewers.is_empty() && inner.idle_since.is_none() {
            inner.idle_since = Some(Instant::now());
            drop(inner);
            self.viewer_left.notify_waiters();
        }
    }

    /// Ends every viewer cleanly and marks the hub ended.
    fn finish(&self) {
        let mut inner = self.lock();
        inner.ended = true;
        inner.viewers.clear();
        drop(inner);
        self.state.send_modify(|s| {
            if !matches!(s, State::Failed(_)) {
                *s = State::Ended;
            }
        });
    }

    /// Resolves once the hub has had no viewers for `linger`.
    async fn idle(&self) {
        loop {
            let notified = self.viewer_left.notified();
            let deadline = {
                let mut inner = self.lock();
                match inner.idle_since {
                    Some(t) if Instant::now() >= t + self.settings.linger => {
                        // Decided under the lock, so no viewer can attach to a hub that is
                        // about to end.
                        inner.ended = true;
                        return;
                    }
                    Some(t) => Some(t + self.settings.linger),
                    None => None,
                }
            };
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => notified.await,
            }
        }
    }

    async fn run(
        self: &Arc<Self>,
        source: NodeSource,
        client: UpstreamClient,
        stop: CancellationToken,
    ) {
        let mut rewriter = Rewriter::default();
        let mut live = false;
        let mut outage: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        let mut avoid: Option<String> = None;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let attempt = match source.nodes(&self.stream) {
                Ok(mut nodes) => {
                    if let Some(bad) = &avoid {
                        // Try the node that just failed last.
                        nodes.sort_by_key(|n| &n.id == bad);
                    }
                    self.connect(&client, &nodes).await
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok((body, node)) => {
                    self.lock().node = node.clone();
                    rewriter.splice();
                    if live {
                        self.resync_viewers();
                    }
                    let mut progressed = false;
                    let end = self
                        .pump(body, &mut rewriter, &stop, &mut live, &mut progressed)
                        .await;
                    self.wake_viewers(); // what the last frames queued, before any wait
                    if progressed {
                        // Only a connection that delivered media ends an outage: a node that
                        // accepts and fails at once must not keep viewers waiting forever.
                        outage = None;
                        backoff = Duration::from_millis(100);
                    }
                    match end {
                        PumpEnd::Clean => {
                            tracing::info!(stream = %self.stream, %node, "node ended the stream");
                            return;
                        }
                        PumpEnd::Stop => return,
                        PumpEnd::Broken(why) => {
                            if !live {
                                self.fail(&GatewayError::Upstream {
                                    node: node.clone(),
                                    source: why.into(),
                                });
                                return;
                            }
                            tracing::warn!(stream = %self.stream, %node, %why, "upstream broke; reconnecting");
                            outage.get_or_insert_with(Instant::now);
                            avoid = Some(node);
                        }
                    }
                }
                Err(e) => {
                    if !live {
                        self.fail(&e);
                        return;
                    }
                    tracing::debug!(stream = %self.stream, error = %e, "reconnect failed");
                    outage.get_or_insert_with(Instant::now);
                }
            }
            if outage.is_some_and(|since| since.elapsed() >= self.settings.reconnect_window) {
                tracing::warn!(stream = %self.stream, "reconnect window passed; ending the stream");
                return;
            }
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.idle() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// After a reconnect: frames cached from the old connection must not precede the new one's,
    /// and every viewer restarts on the new connection's first keyframe.
    fn resync_viewers(&self) {
        let mut inner = self.lock();
        inner.gop.clear();
        for v in inner.viewers.iter_mut() {
            v.skipping = true;
        }
    }

    /// Wakes every viewer that has tags queued since its last wake.
    fn wake_viewers(&self) {
        for v in self.lock().viewers.iter_mut() {
            v.wake();
        }
    }

    fn count_cuts(&self, cut: u64) {
        if cut > 0 {
            tracing::info!(stream = %self.stream, viewers = cut, "slow viewer cut off");
            self.counters.viewers_cut.fetch_add(cut, Ordering::Relaxed);
        }
    }

    fn fail(&self, e: &GatewayError) {
        tracing::warn!(stream = %self.stream, error = %e, "live pull failed");
        self.lock().ended = true;
        self.state
            .send_replace(State::Failed(Failure::from_error(e)));
    }

    /// Opens the pull on the first node that answers 200.
    async fn connect(
        &self,
        client: &UpstreamClient,
        nodes: &[Arc<Node>],
    ) -> Result<(Incoming, String), GatewayError> {
        let mut last = GatewayError::StreamNotFound(self.stream.clone());
        for node in nodes {
            let uri = node.url.join(&self.upstream_path, None);
            let mut req = Request::new(empty());
            *req.uri_mut() = match uri.parse() {
                Ok(u) => u,
                Err(_) => return Err(GatewayError::BadRequest("upstream path cannot be sent")),
            };
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
            let limit = self.settings.response_header_timeout;
            match tokio::time::timeout(limit, client.request(req)).await {
                Err(_) => {
                    last = GatewayError::UpstreamTimeout {
                        node: node.id.clone(),
                        secs: limit.as_secs_f64(),
                    }
                }
                Ok(Err(e)) => last = GatewayError::from_upstream(&node.id, e),
                Ok(Ok(resp)) if resp.status() == StatusCode::OK => {
                    return Ok((resp.into_body(), node.id.clone()))
                }
                Ok(Ok(resp)) if resp.status() == StatusCode::NOT_FOUND => {
                    last = GatewayError::StreamNotFound(self.stream.clone())
                }
                Ok(Ok(resp)) => {
                    last = GatewayError::Upstream {
                        node: node.id.clone(),
                        source: format!("node answered {}", resp.status()).into(),
                    }
                }
            }
        }
        Err(last)
    }

    /// Reads one upstream connection until it ends, fanning tags out.
    async fn pump(
        &self,
        mut body: Incoming,
        rewriter: &mut Rewriter,
        stop: &CancellationToken,
        live: &mut bool,
        progressed: &mut bool,
    ) -> PumpEnd {
        let mut parser = Parser::new();
        let mut header_seen = false;
        // Viewers are woken at most once per `flush_interval`: what queued meanwhile goes out
        // in one write per viewer.
        let interval = self.settings.flush_interval;
        let mut last_flush = Instant::now();
        let mut flush_at: Option<Instant> = None;
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return PumpEnd::Stop,
                _ = self.idle() => return PumpEnd::Stop,
                _ = tokio::time::sleep_until(flush_at.unwrap_or(last_flush).into()), if flush_at.is_some() => {
                    self.wake_viewers();
                    last_flush = Instant::now();
                    flush_at = None;
                    continue;
                }
                f = tokio::time::timeout(self.settings.upstream_idle_timeout, body.frame()) => match f {
                    Ok(f) => f,
                    Err(_) => return PumpEnd::Broken(format!(
                        "node sent nothing for {:?}", self.settings.upstream_idle_timeout
                    )),
                },
            };
            let data = match frame {
                None => {
                    return match parser.finish() {
                        Ok(()) if header_seen => PumpEnd::Clean,
                        Ok(()) => PumpEnd::Broken("node sent no FLV data".into()),
                        Err(e) => PumpEnd::Broken(format!("stream cut mid-tag: {e}")),
                    };
                }
                Some(Err(e)) => return PumpEnd::Broken(e.to_string()),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers
                },
            };
            self.bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            self.counters
                .bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if let Err(e) = parser.push_bytes(data) {
                return PumpEnd::Broken(format!("bad FLV from node: {e}"));
            }
            loop {
                match parser.next_event() {
                    Ok(None) => break,
                    Ok(Some(Event::Header(h))) => {
                        header_seen = true;
                        if !*live {
                            let mut inner = self.lock();
                            inner.init.header = Some(Bytes::copy_from_slice(&flv::file_header(
                                h.has_audio,
                                h.has_video,
                            )));
                            drop(inner);
                            *live = true;
                            self.state.send_replace(State::Live);
                        }
                    }
                    Ok(Some(Event::Tag(t))) => {
                        *progressed = true;
                        self.on_tag(t, rewriter);
                    }
                    Err(e) => return PumpEnd::Broken(format!("bad FLV from node: {e}")),
                }
            }
            let now = Instant::now();
            if now >= last_flush + interval {
                self.wake_viewers();
                last_flush = now;
                flush_at = None;
            } else if flush_at.is_none() {
                flush_at = Some(last_flush + interval);
            }
        }
    }

    /// Rewrites a tag's timestamp and offers it to every viewer.
    fn on_tag(&self, tag: Tag, rewriter: &mut Rewriter) {
        let ts = rewriter.map(tag.timestamp());
        let tag = if ts == tag.timestamp() {
            tag
        } else {
            tag.with_timestamp(ts)
        };
        let budget = self.budget();
        let mut inner = self.lock();
        inner.last_ts = ts;
        let inner = &mut *inner;
        if tag.kind() == TagKind::Video {
            inner.seen_video = true; // sequence headers count: they announce the track
        }
        match inner.init.update(&tag) {
            Some(false) => {} // same start-up tag again (after a reconnect): viewers have it
            Some(true) => {
                if tag.is_sequence_header() {
                    // New codec configuration: frames cached under the old one are useless.
                    inner.gop.clear();
                }
                let bytes = tag.bytes();
                let mut cut = 0u64;
                inner.viewers.retain_mut(|v| match v.offer_control(bytes) {
                    Offer::Cut => {
                        cut += 1;
                        false
                    }
                    Offer::Sent | Offer::Dropped => true,
                });
                self.count_cuts(cut);
            }
            None => {
                let key = match tag.kind() {
                    TagKind::Video => tag.is_keyframe(),
                    TagKind::Audio => !inner.seen_video,
                    TagKind::Script => false,
                };
                if self.settings.gop_cache && tag.kind() != TagKind::Script {
                    inner.gop.push(&tag, key, self.settings.max_gop_bytes);
                }
                let bytes = tag.bytes();
                let (mut dropped, mut cut) = (0u64, 0u64);
                inner
                    .viewers
                    .retain_mut(|v| match v.offer(bytes, ts, key, budget) {
                        Offer::Sent => true,
                        Offer::Dropped => {
                            dropped += 1;
                            true
                        }
                        Offer::Cut => {
                            cut += 1;
                            false
                        }
                    });
                if dropped > 0 {
                    self.counters
                        .frames_dropped
                        .fetch_add(dropped, Ordering::Relaxed);
                }
                self.count_cuts(cut);
            }
        }
    }
}
