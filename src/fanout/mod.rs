//! The one fan-out engine: one source per stream, however many viewers watch it.
//!
//! [`engine::Core`] is a stream's fan-out: start-up cache (header, metadata, sequence headers)
//! and GOP cache, the timestamp rewriter, every viewer's bounded queue and the stream's one
//! lifecycle state. Sources feed it:
//! - [`pull`]: the gateway's upstream HTTP-FLV pull, with reconnect and failover ([`Hubs`]);
//! - [`looper`]: the origin's file replayed forever in real time.
//!
//! Policies therefore exist once: a slow viewer skips to the next keyframe, then is cut; a
//! joiner's start-up burst is exempt from the queue budget up to `max_gop_bytes`; timestamps are
//! wide inside and wrap modulo 2³² on the wire, monotonic per track; stream names follow
//! [`crate::router::valid_stream_name`]. Tags are refcounted `Bytes` shared by every viewer.

pub mod engine;
pub mod gop;
pub mod looper;
pub mod pull;
pub mod timestamps;
pub mod viewer;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub use engine::Core;
pub use pull::{Hubs, NodeSource, PullInfo};
pub use viewer::{EndWatch, ViewerBody, ViewerInfo, HTTP_FLV, WS_FLV};

pub use crate::config::LiveSettings;
use crate::error::GatewayError;

/// Process-wide counters, read by metrics and tests.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Upstream pulls started (first connections, not reconnects).
    pub pulls: AtomicU64,
    /// Upstream reconnect attempts after a pull was live.
    pub reconnects: AtomicU64,
    /// Pulls that went live again on a different node than the one they were live on.
    pub failovers: AtomicU64,
    /// Media bytes read from nodes.
    pub bytes_in: AtomicU64,
    /// Media bytes handed to viewers.
    pub bytes_out: AtomicU64,
    /// Tags not delivered to slow viewers (skipped to the next keyframe).
    pub frames_dropped: AtomicU64,
    /// Viewers disconnected for being too slow.
    pub viewers_cut: AtomicU64,
}

/// One stream's counters (the origin's `/stats` reads them). Shared, so they may outlive one
/// run of the stream (cumulative `bytes_sent`).
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Viewers attached right now: counted on attach, uncounted the moment a viewer is cut, its
    /// body dropped, or the stream ended.
    pub clients: AtomicU64,
    /// Bytes handed to viewers' connections.
    pub bytes_sent: AtomicU64,
}

/// What the engine needs of the configuration, whichever source feeds it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Start a new viewer on the cached GOP (instant picture) instead of the next keyframe.
    pub gop_cache: bool,
    /// Keep the stream this long after the last viewer leaves, for quick rejoins.
    pub linger: Duration,
    /// Bytes a viewer may have queued (beyond its start-up burst) before it skips.
    pub viewer_queue_bytes: usize,
    /// Media time a viewer may lag before it skips.
    pub viewer_queue_duration: Duration,
    /// Viewers per stream at most.
    pub max_viewers: usize,
    /// Bytes the GOP cache may hold; also the most a start-up burst is exempt for.
    pub max_gop_bytes: usize,
}

impl Settings {
    pub fn from_live(l: &LiveSettings) -> Self {
        Self {
            gop_cache: l.gop_cache,
            linger: l.linger,
            viewer_queue_bytes: l.viewer_queue_bytes,
            viewer_queue_duration: l.viewer_queue_duration,
            max_viewers: l.max_viewers_per_stream,
            max_gop_bytes: l.max_gop_bytes,
        }
    }
}

/// Why the first connection sequence failed (a clonable `GatewayError`, kept in the stream's
/// phase for every joiner that waited on it).
#[derive(Debug, Clone)]
pub enum Failure {
    NotFound(String),
    Unavailable(String),
    Draining(String),
    Timeout { node: String, secs: f64 },
    Connect { node: String, msg: String },
    Upstream { node: String, msg: String },
}

impl Failure {
    pub fn from_error(e: &GatewayError) -> Self {
        match e {
            GatewayError::StreamNotFound(s) => Self::NotFound(s.clone()),
            GatewayError::NodeUnavailable(s) => Self::Unavailable(s.clone()),
            GatewayError::Draining(s) => Self::Draining(s.clone()),
            GatewayError::UpstreamTimeout { node, secs } => Self::Timeout {
                node: node.clone(),
                secs: *secs,
            },
            GatewayError::UpstreamConnect { node, source } => Self::Connect {
                node: node.clone(),
                msg: source.to_string(),
            },
            GatewayError::Upstream { node, source } => Self::Upstream {
                node: node.clone(),
                msg: source.to_string(),
            },
            other => Self::Upstream {
                node: String::new(),
                msg: other.to_string(),
            },
        }
    }

    pub fn to_error(&self) -> GatewayError {
        match self.clone() {
            Self::NotFound(s) => GatewayError::StreamNotFound(s),
            Self::Unavailable(s) => GatewayError::NodeUnavailable(s),
            Self::Draining(s) => GatewayError::Draining(s),
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
