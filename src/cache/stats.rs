//! Cache counters per route (hit, miss, collapsed, revalidated, bypass), read by the admin API
//! (`GET /api/v1/cache`) and `/metrics`. The `route` label is a configured route path: bounded
//! by the config, never a request path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde_json::{json, Value};

/// One route's counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Served from a complete, fresh object.
    pub hit: AtomicU64,
    /// Made a fetch from the node (a new object, or a stale one without validators).
    pub miss: AtomicU64,
    /// Joined a fetch in flight: no request to the node of its own.
    pub collapsed: AtomicU64,
    /// A stale object the node confirmed with `304 Not Modified`.
    pub revalidated: AtomicU64,
    /// The node's answer could not be shared (no-store, private, Vary, Set-Cookie): forwarded.
    pub bypass: AtomicU64,
    /// Of the misses, VOD slices read back from the disk tier (no node request).
    pub disk: AtomicU64,
}

impl Counters {
    pub fn json(&self) -> Value {
        json!({
            "hit": self.hit.load(Relaxed),
            "miss": self.miss.load(Relaxed),
            "collapsed": self.collapsed.load(Relaxed),
            "revalidated": self.revalidated.load(Relaxed),
            "bypass": self.bypass.load(Relaxed),
            "disk": self.disk.load(Relaxed),
        })
    }

    fn results(&self) -> [(&'static str, u64); 6] {
        [
            ("hit", self.hit.load(Relaxed)),
            ("miss", self.miss.load(Relaxed)),
            ("collapsed", self.collapsed.load(Relaxed)),
            ("revalidated", self.revalidated.load(Relaxed)),
            ("bypass", self.bypass.load(Relaxed)),
            ("disk", self.disk.load(Relaxed)),
        ]
    }
}

/// `/metrics` for the cache, read at scrape time.
#[derive(Debug)]
pub struct CacheCollector(pub Weak<super::Inner>);

impl Collector for CacheCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let (bytes, entries) = inner.usage();
        let limits = inner.settings();
        crate::metrics::gauge(
            &mut enc,
            "cache_bytes",
            "Body bytes held by the HLS/VOD cache (in-flight fills included).",
            bytes,
        )?;
        crate::metrics::gauge(
            &mut enc,
            "cache_entries",
            "Objects held by the HLS/VOD cache (in-flight fills included).",
            entries as u64,
        )?;
        crate::metrics::gauge(
            &mut enc,
            "cache_memory_limit_bytes",
            "[cache] memory_bytes.",
            limits.memory_bytes,
        )?;
        let routes: Vec<(String, Arc<Counters>)> = inner.route_counters();
        let mut m = enc.encode_descriptor(
            "cache_requests",
            "Requests on cached routes, by route and result: hit, miss (fetched from the \
             node), collapsed (joined a fetch in flight), revalidated (304 from the node), \
             bypass (the answer could not be shared), disk (a miss read back from the VOD disk \
             tier)",
            None,
            MetricType::Counter,
        )?;
        for (route, c) in &routes {
            for (result, v) in c.results() {
                m.encode_family(&[("route", route.as_str()), ("result", result)])?
                    .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }
        Ok(())
    }
}
