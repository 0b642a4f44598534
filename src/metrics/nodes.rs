//! The transport's node-labelled families: connect and response-header latency, and errors by
//! kind.
//!
//! The `node` label is bounded: every node the config names (`[[nodes]]` and routes whose `to`
//! is a URL) has its own, and so do the first `[metrics] max_nodes` others the transport talks
//! to (nodes registered through the API or hooks); any more share `node="_other"`. A scrape
//! gives back the slots of registered nodes that have left the registry, so a cluster whose
//! nodes come and go keeps labelling the ones it has now.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::upstream::ErrorKind;

/// The label shared by nodes past the bound.
pub const OTHER: &str = "_other";

/// Latency buckets in seconds, from a loopback connect to a node about to time out.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeKind {
    node: String,
    kind: &'static str,
}

type LatencyFamily = Family<NodeLabel, Histogram, fn() -> Histogram>;

/// One label's histograms, looked up once per attempt.
struct Series {
    label: String,
    connect: Histogram,
    headers: Histogram,
}

/// Which node ids have a label of their own.
#[derive(Default)]
struct Slots {
    /// By node id (configured ones included); ids past the bound are not here.
    by_id: HashMap<String, Arc<Series>>,
    /// Entries of `by_id` that are not configured nodes, against `max_dynamic`.
    dynamic: usize,
    /// `node="_other"`, made on first use.
    other: Option<Arc<Series>>,
}

/// The transport's node-labelled metrics.
pub struct NodeMetrics {
    connect: LatencyFamily,
    headers: LatencyFamily,
    errors: Family<NodeKind, Counter>,
    slots: Mutex<Slots>,
    /// Nodes the config names: always labelled, never given back.
    configured: HashSet<String>,
    /// Labelled nodes beyond `configured`.
    max_dynamic: usize,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl NodeMetrics {
    /// `configured`: the node ids the config names; `max_dynamic`: how many others get a label.
    pub fn new(configured: impl IntoIterator<Item = String>, max_dynamic: usize) -> Self {
        Self {
            connect: Family::new_with_constructor(latency_histogram),
            headers: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            slots: Mutex::new(Slots::default()),
            configured: configured.into_iter().collect(),
            max_dynamic,
        }
    }

    /// Registers the families (on a registry already prefixed `streamgate_`).
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "upstream_connect_duration_seconds",
            "Time to open a TCP connection to a node (successful attempts), by node",
            self.connect.clone(),
        );
        reg.register(
            "upstream_response_header_duration_seconds",
            "Time from sending a request on a connection to the node's response headers, by node",
            self.headers.clone(),
        );
        reg.register(
            "upstream_errors",
            "Failed attempts at a node, by node and kind (connect, connect_timeout, \
             header_timeout, closed, upload_stalled, other)",
            self.errors.clone(),
        );
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn make(&self, label: &str) -> Arc<Series> {
        let l = NodeLabel {
            node: label.to_string(),
        };
        Arc::new(Series {
            label: label.to_string(),
            connect: self.connect.get_or_create_owned(&l),
            headers: self.headers.get_or_create_owned(&l),
        })
    }

    /// The series for `node`: its own if it has or can get a slot, else `_other`.
    fn series(&self, node: &str) -> Arc<Series> {
        let mut slots = self.lock();
        if let Some(s) = slots.by_id.get(node) {
            return s.clone();
        }
        let configured = self.configured.contains(node);
        if configured || slots.dynamic < self.max_dynamic {
            let s = self.make(node);
            slots.by_id.insert(node.to_string(), s.clone());
            if !configured {
                slots.dynamic += 1;
            }
            return s;
        }
        if let Some(o) = &slots.other {
            return o.clone();
        }
        let o = self.make(OTHER);
        slots.other = Some(o.clone());
        o
    }

    /// A TCP connection to `node` took `d`.
    pub fn connected(&self, node: &str, d: Duration) {
        self.series(node).connect.observe(d.as_secs_f64());
    }

    /// `node` sent its response headers `d` after the request was handed to the connection.
    pub fn answered(&self, node: &str, d: Duration) {
        self.series(node).headers.observe(d.as_secs_f64());
    }

    /// An attempt at `node` failed; the viewer's own failures are not counted.
    pub fn failed(&self, node: &str, kind: &ErrorKind) {
        if let Some(kind) = kind.metric_kind() {
            let node = self.series(node).label.clone();
            self.errors.get_or_create(&NodeKind { node, kind }).inc();
        }
    }

    /// Gives back the labels of non-configured nodes for which `keep` says no (they left the
    /// registry): their series go, and the slot is free for another node.
    pub fn prune(&self, keep: impl Fn(&str) -> bool) {
        let mut slots = self.lock();
        let gone: Vec<String> = slots
            .by_id
            .keys()
            .filter(|id| !self.configured.contains(*id) && !keep(id))
            .cloned()
            .collect();
        for id in gone {
            slots.by_id.remove(&id);
            slots.dynamic -= 1;
            let l = NodeLabel { node: id };
            self.connect.remove(&l);
            self.headers.remove(&l);
            for kind in ErrorKind::METRIC_KINDS {
                self.errors.remove(&NodeKind {
                    node: l.node.clone(),
                    kind,
                });
            }
        }
    }

    /// Distinct `node` label values in use (tests).
    #[cfg(test)]
    fn labels(&self) -> usize {
        let s = self.lock();
        s.by_id.len() + usize::from(s.other.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_are_bounded_and_given_back() {
        let m = NodeMetrics::new(["a".to_string()], 2);
        for i in 0..100 {
            m.connected(&format!("n{i}"), Duration::from_millis(1));
        }
        m.connected("a", Duration::from_millis(1));
        // "a", two dynamic nodes, and `_other` for the 98 past the bound.
        assert_eq!(m.labels(), 4);
        assert_eq!(m.connect.len(), 4);
        m.failed("n50", &ErrorKind::ConnectTimeout);
        assert!(m.errors.contains(&NodeKind {
            node: OTHER.into(),
            kind: "connect_timeout"
        }));
        // n0 and n1 leave the registry: their slots go to the next nodes seen.
        m.failed("n0", &ErrorKind::ConnectTimeout);
        m.prune(|id| id != "n0" && id != "n1");
        assert_eq!(m.connect.len(), 2, "a and _other remain");
        assert!(!m.errors.contains(&NodeKind {
            node: "n0".into(),
            kind: "connect_timeout"
        }));
        m.connected("n7", Duration::from_millis(1));
        assert!(m.connect.contains(&NodeLabel { node: "n7".into() }));
        // The configured node is never pruned.
        m.prune(|_| false);
        assert!(m.connect.contains(&NodeLabel { node: "a".into() }));
        // The viewer's own failures are not the node's.
        m.failed("a", &ErrorKind::ClientBodyTimeout(Duration::from_secs(1)));
        assert!(!m.errors.contains(&NodeKind {
            node: "a".into(),
            kind: "other"
        }));
    }
}
