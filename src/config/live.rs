//! `[live]`: the fan-out hub's tunables.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, ConfigError};

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
    pub drain: Option<String>,
    pub websocket_ping_interval: Option<String>,
}

/// What a pull running on a node does when an operator drains that node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DrainMode {
    /// Reconnect to another node holding the stream at the next keyframe; viewers stay.
    #[default]
    Move,
    /// Keep pulling from the drained node until the stream ends or the pull breaks.
    Stay,
}

/// Tunables of the live fan-out (`[live]` in the config).
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// Start a new viewer on the cached GOP (instant picture) instead of the next keyframe.
    pub gop_cache: bool,
    /// Keep the pull this long after the last viewer leaves, for quick reconnects.
    pub linger: Duration,
    /// Viewers stay connected through an upstream gap shorter than this.
    pub reconnect_window: Duration,
    /// Bytes a viewer may have queued before it skips to the next keyframe.
    pub viewer_queue_bytes: usize,
    /// Media time a viewer may lag behind before it skips to the next keyframe.
    pub viewer_queue_duration: Duration,
    /// Viewers per stream at most (503 past it).
    pub max_viewers_per_stream: usize,
    /// Streams pulled at once at most (503 past it).
    pub max_streams: usize,
    /// Bytes the GOP cache may hold; a longer GOP is not cached (viewers wait for a keyframe).
    /// A joiner's burst (start-up tags + cached GOP) is exempt from `viewer_queue_bytes` up to
    /// this, so a viewer holds at most `max_gop_bytes + viewer_queue_bytes` (min 65536).
    pub max_gop_bytes: usize,
    /// A pull that delivers no bytes for this long counts as broken (reconnect, then end).
    pub upstream_idle_timeout: Duration,
    /// Viewers are woken at most this often; tags queued meanwhile go out in one write.
    /// Zero wakes them for every upstream read (lowest latency, most CPU). 100 ms: at 5,000
    /// viewers it costs a third less CPU than 50 ms (bench/live-ab.sh), for at most 100 ms
    /// of added delivery delay (SRS merges writes for 350 ms by default).
    pub flush_interval: Duration,
    /// What running pulls do when their node is drained (`move` or `stay`).
    pub drain: DrainMode,
    /// A WebSocket-FLV viewer is pinged this often, and dropped when it has not answered the
    /// previous ping by the next one.
    pub websocket_ping_interval: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            gop_cache: true,
            linger: Duration::from_secs(5),
            reconnect_window: Duration::from_secs(10),
            viewer_queue_bytes: 4 << 20,
            viewer_queue_duration: Duration::from_secs(10),
            max_viewers_per_stream: 10_000,
            max_streams: 1_000,
            max_gop_bytes: 16 << 20,
            flush_interval: Duration::from_millis(100),
            upstream_idle_timeout: Duration::from_secs(10),
            drain: DrainMode::Move,
            websocket_ping_interval: Duration::from_secs(30),
        }
    }
}

pub(super) fn validate(l: &RawLive) -> Result<LiveSettings, ConfigError> {
    let d = LiveSettings::default();
    let positive = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let live = LiveSettings {
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
        flush_interval: duration("live.flush_interval", &l.flush_interval, d.flush_interval)?,
        upstream_idle_timeout: duration(
            "live.upstream_idle_timeout",
            &l.upstream_idle_timeout,
            d.upstream_idle_timeout,
        )?,
        drain: match l.drain.as_deref() {
            None | Some("move") => DrainMode::Move,
            Some("stay") => DrainMode::Stay,
            Some(other) => {
                return Err(invalid(
                    "live.drain",
                    format!("{other:?} is not a drain mode (use \"move\" or \"stay\")"),
                ))
            }
        },
        websocket_ping_interval: duration(
            "live.websocket_ping_interval",
            &l.websocket_ping_interval,
            d.websocket_ping_interval,
        )?,
    };
    if live.websocket_ping_interval < Duration::from_secs(1)
        || live.websocket_ping_interval > Duration::from_secs(3600)
    {
        return Err(invalid(
            "live.websocket_ping_interval",
            "must be between 1s and 1h",
        ));
    }
    if live.linger > Duration::from_secs(3600) {
        return Err(invalid(
            "live.linger",
            "must be at most 1h (an idle pull holds a node connection)",
        ));
    }
    if live.reconnect_window < Duration::from_millis(100)
        || live.reconnect_window > Duration::from_secs(3600)
    {
        return Err(invalid(
            "live.reconnect_window",
            "must be between 100ms and 1h",
        ));
    }
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
    // A joiner's start-up burst (start-up tags and the cached GOP) is exempt from the viewer
    // queue budget up to `max_gop_bytes`, so the two bounds add up per viewer; a GOP cache below
    // the queue's own minimum (one large video frame) could never hold a GOP.
    if live.max_gop_bytes < 64 * 1024 {
        return Err(invalid(
            "live.max_gop_bytes",
            "must be at least 65536 (one large video frame); a viewer may queue up to max_gop_bytes of start-up burst on top of viewer_queue_bytes",
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
