//! Live HTTP-FLV fan-out: one upstream pull per stream, however many viewers watch it.
//!
//! [`Hubs`] maps a stream to its [`hub::Hub`]; the first viewer starts the pull, later viewers
//! attach. A viewer gets the FLV header, metadata and sequence headers, then the cached GOP
//! (so the picture appears at once) and live tags. Tags are refcounted `Bytes` shared by every
//! viewer; each viewer has a bounded queue, and one that falls behind skips to the next
//! keyframe or is cut off, never slowing the pull or the others.

pub mod gop;
pub mod hub;
pub mod timestamps;
pub mod viewer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::proxy::UpstreamClient;
use crate::registry::{Lookup, Node, Registry};

pub use hub::Hub;
pub use viewer::ViewerBody;

pub use crate::config::LiveSettings;

/// Process-wide counters, read by metrics and tests.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Upstream pulls started (first connections, not reconnects).
    pub pulls: AtomicU64,
    /// Upstream reconnect attempts after a pull was live.
    pub reconnects: AtomicU64,
    /// Media bytes read from nodes.
    pub bytes_in: AtomicU64,
    /// Media bytes handed to viewers.
    pub bytes_out: AtomicU64,
    /// Tags not delivered to slow viewers (skipped to the next keyframe).
    pub frames_dropped: AtomicU64,
    /// Viewers disconnected for being too slow.
    pub viewers_cut: AtomicU64,
}

/// Where a hub finds its node(s).
#[derive(Clone)]
pub enum NodeSource {
    /// The stream registry, asked again at every (re)connect so failover follows it.
    Registry(Arc<dyn Registry>),
    /// A fixed node list from the route's `to`.
    Fixed(Vec<Arc<Node>>),
}

impl NodeSource {
    /// What distinguishes this source in a hub's key: two routes that render the same upstream
    /// path but name different nodes must not share a pull.
    fn key(&self) -> String {
        match self {
            Self::Registry(_) => "registry".to_string(),
            Self::Fixed(nodes) => nodes
                .iter()
                .map(|n| n.url.join("", None))
                .collect::<Vec<_>>()
                .join(" "),
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
}

/// All hubs of this gateway.
pub struct Hubs {
    map: Mutex<HashMap<String, Arc<Hub>>>,
    settings: LiveSettings,
    client: UpstreamClient,
    shutdown: CancellationToken,
    pub counters: Arc<LiveCounters>,
}

impl Hubs {
    pub fn new(
        settings: LiveSettings,
        client: UpstreamClient,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            settings,
            client,
            shutdown,
            counters: Arc::new(LiveCounters::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Hub>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins `stream` (pulled from `upstream_path` on its node), starting the pull if needed.
    /// Returns the viewer's body and the id of the node serving it.
    pub async fn join(
        self: &Arc<Self>,
        stream: &str,
        upstream_path: &str,
        source: NodeSource,
    ) -> Result<(ViewerBody, String), GatewayError> {
        if self.shutdown.is_cancelled() {
            return Err(GatewayError::Overloaded("the gateway is shutting down"));
        }
        // A hub can end between lookup and attach (node ended the stream); then start anew once.
        for _ in 0..2 {
            let hub = self.hub_for(stream, upstream_path, &source)?;
            hub.wait_ready(self.settings.response_header_timeout)
                .await?;
            match hub.attach() {
                Ok(v) => {
                    let node = hub.node();
                    return Ok((v, node));
                }
                Err(hub::AttachError::Ended) => continue,
                Err(hub::AttachError::Full) => {
                    return Err(GatewayError::Overloaded("too many viewers on this stream"))
                }
            }
        }
        Err(GatewayError::Overloaded(
            "the stream ended while joining; retry",
        ))
    }

    fn hub_for(
        self: &Arc<Self>,
        stream: &str,
        upstream_path: &str,
        source: &NodeSource,
    ) -> Result<Arc<Hub>, GatewayError> {
        let key = format!("{}\n{upstream_path}", source.key());
        let mut map = self.lock();
        if let Some(h) = map.get(&key) {
            if !h.is_ended() {
                return Ok(h.clone());
            }
        }
        map.retain(|_, h| !h.is_ended());
        if map.len() >= self.settings.max_streams {
            return Err(GatewayError::Overloaded(
                "too many live streams on this gateway",
            ));
        }
        let hub = Hub::spawn(hub::HubInit {
            key: key.clone(),
            stream: stream.to_string(),
            upstream_path: upstream_path.to_string(),
            source: source.clone(),
            settings: self.settings.clone(),
            client: self.client.clone(),
            counters: self.counters.clone(),
            stop: self.shutdown.child_token(),
            hubs: Arc::downgrade(self),
        });
        self.counters.pulls.fetch_add(1, Ordering::Relaxed);
        map.insert(key, hub.clone());
        Ok(hub)
    }

    /// Forgets `hub` once it has ended (called by the hub itself).
    pub(crate) fn remove(&self, key: &str, hub: &Hub) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|h| std::ptr::eq(h.as_ref(), hub)) {
            map.remove(key);
        }
    }

    /// Figures for every running stream.
    pub fn streams(&self) -> Vec<StreamStats> {
        let mut v: Vec<StreamStats> = self.lock().values().map(|h| h.stats()).collect();
        v.sort_by(|a, b| a.stream.cmp(&b.stream));
        v
    }
}
