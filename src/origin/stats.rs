//! Counters behind `GET /stats`.
//!
//! Tests and benchmarks read `live_clients` and per-stream `clients` to learn how many upstream
//! connections a gateway opened, so those must be exact and prompt: a viewer is counted while
//! it is subscribed to a stream and uncounted the moment it is cut off or its response body is
//! dropped (which is how a disconnect shows up).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// Counters of one live stream: the fan-out engine's per-stream counters. Kept after the stream
/// stops, so `bytes_sent` is cumulative.
pub use crate::fanout::StreamCounters as StreamStats;

/// Node-wide counters.
#[derive(Debug)]
pub struct Stats {
    /// Per-stream counters by name. Bounded by `max_streams`: names come from files that exist,
    /// and past the bound new streams are refused rather than tracked.
    streams: Mutex<BTreeMap<String, Arc<StreamStats>>>,
    max_streams: usize,
    /// Bytes of `/files/` bodies handed to connections.
    pub file_bytes_sent: AtomicU64,
    /// `/files/` requests by path and query (what a cache in front made of its viewers'
    /// requests). Bounded by [`MAX_FILE_PATHS`]; past it, counted in `other`.
    file_requests: Mutex<BTreeMap<String, u64>>,
}

/// Most distinct `/files/` targets counted one by one.
pub const MAX_FILE_PATHS: usize = 10_000;

impl Stats {
    pub fn new(max_streams: usize) -> Self {
        Self {
            streams: Mutex::new(BTreeMap::new()),
            max_streams: max_streams.max(1),
            file_bytes_sent: AtomicU64::new(0),
            file_requests: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts one `/files/` request for `path` (after `/files/`) and `query`.
    pub fn file_request(&self, path: &str, query: Option<&str>) {
        let mut map = self.file_requests.lock().unwrap_or_else(|p| p.into_inner());
        let key = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let key = if map.len() >= MAX_FILE_PATHS && !map.contains_key(&key) {
            "other".to_string()
        } else {
            key
        };
        *map.entry(key).or_insert(0) += 1;
    }

    /// The counters of stream `name`, created on first use; `None` once `max_streams` names are
    /// tracked and `name` is not one of them.
    pub fn stream(&self, name: &str) -> Option<Arc<StreamStats>> {
        let mut map = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(name) {
            return Some(s.clone());
        }
        if map.len() >= self.max_streams {
            return None;
        }
        let s = Arc::new(StreamStats::default());
        map.insert(name.to_owned(), s.clone());
        Some(s)
    }

    /// The `/stats` document.
    pub fn snapshot(&self, node_name: &str) -> Value {
        let map = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut streams = serde_json::Map::new();
        let (mut clients, mut bytes) = (0u64, 0u64);
        for (name, s) in map.iter() {
            let c = s.clients.load(Ordering::Relaxed);
            let b = s.bytes_sent.load(Ordering::Relaxed);
            clients += c;
            bytes += b;
            streams.insert(name.clone(), json!({ "clients": c, "bytes_sent": b }));
        }
        json!({
            "name": node_name,
            "streams": streams,
            "live_clients": clients,
            "bytes_sent": bytes,
            "file_bytes_sent": self.file_bytes_sent.load(Ordering::Relaxed),
            "file_requests": self.file_requests.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_summed() {
        let s = Stats::new(2);
        s.stream("a")
            .unwrap()
            .clients
            .fetch_add(2, Ordering::Relaxed);
        s.stream("b")
            .unwrap()
            .bytes_sent
            .fetch_add(10, Ordering::Relaxed);
        assert!(s.stream("c").is_none());
        assert!(s.stream("a").is_some());
        let v = s.snapshot("n1");
        assert_eq!(v["live_clients"], 2);
        assert_eq!(v["bytes_sent"], 10);
        assert_eq!(v["streams"]["a"]["clients"], 2);
        assert_eq!(v["name"], "n1");
    }
}
