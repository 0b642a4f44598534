//! The embedded registry: two maps behind one `RwLock`. Reads (every request) take the read lock
//! for a hash lookup; writes are rare. Both maps are bounded. At the limit a write first makes
//! room by dropping what can no longer serve anyone (the node that has been down longest, or a
//! stream none of whose nodes is up); only when everything is live does it fail with
//! [`RegistryError::Full`], so a platform full of dead entries heals by itself.
//!
//! The Redis backend keeps one of these as its local snapshot and uses the synchronous `*_now`
//! methods to apply changes it has already written to Redis.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{Lookup, Node, Registry, RegistryError, StreamEntry, WriteFuture};
use crate::upstream_path::BaseUrl;

/// Default bound on streams and on nodes.
pub const DEFAULT_MAX_STREAMS: usize = 100_000;
pub const DEFAULT_MAX_NODES: usize = 10_000;
/// Most nodes one stream can be held by (a stream pushed to many nodes).
pub const MAX_NODES_PER_STREAM: usize = 16;

#[derive(Default)]
struct State {
    nodes: HashMap<String, Arc<Node>>,
    /// stream → node ids in announcement order (first announced is preferred).
    streams: HashMap<String, Vec<String>>,
}

impl State {
    /// Drops `id`'s stream records; streams left with no node go away.
    fn forget_streams_of(&mut self, id: &str) {
        self.streams.retain(|_, ids| {
            ids.retain(|i| i != id);
            !ids.is_empty()
        });
    }
}

/// In-process registry.
pub struct MemoryRegistry {
    state: RwLock<State>,
    max_streams: usize,
    max_nodes: usize,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::with_limits(DEFAULT_MAX_STREAMS, DEFAULT_MAX_NODES)
    }
}

impl MemoryRegistry {
    pub fn with_limits(max_streams: usize, max_nodes: usize) -> Self {
        Self {
            state: RwLock::new(State::default()),
            max_streams,
            max_nodes,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent: keep going.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Registry::resolve`] as if the time were `now`. The Redis backend passes the moment it
    /// lost Redis, so nodes that were up then stay up while no heartbeat can reach it.
    pub fn resolve_at(&self, stream: &str, now: Instant) -> Lookup {
        let st = self.read();
        let Some(ids) = st.streams.get(stream) else {
            return Lookup::NotFound;
        };
        let known: Vec<&Arc<Node>> = ids.iter().filter_map(|id| st.nodes.get(id)).collect();
        if known.is_empty() {
            return Lookup::NotFound;
        }
        let up: Vec<Arc<Node>> = known
            .into_iter()
            .filter(|n| n.is_up(now))
            .cloned()
            .collect();
        if up.is_empty() {
            Lookup::AllDown
        } else {
            Lookup::Found(up)
        }
    }

    /// Adds or refreshes a node now. At the node limit, the node down the longest is dropped
    /// (with its stream records) to make room.
    pub fn put_node_now(
        &self,
        id: &str,
        url: &BaseUrl,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        let now = Instant::now();
        let expires = ttl.map(|t| now + t);
        self.put_node_until(id, url, expires)
    }

    /// Adds or refreshes a node with an absolute expiry (the Redis snapshot computes it from a
    /// key's remaining TTL).
    pub fn put_node_until(
        &self,
        id: &str,
        url: &BaseUrl,
        expires: Option<Instant>,
    ) -> Result<(), RegistryError> {
        let now = Instant::now();
        let mut st = self.write();
        if !st.nodes.contains_key(id) && st.nodes.len() >= self.max_nodes {
            let victim = st
                .nodes
                .values()
                .filter(|n| !n.is_up(now))
                .min_by_key(|n| n.expires)
                .map(|n| n.id.clone());
            match victim {
                Some(v) => {
                    tracing::warn!(node = %v, "node limit reached: forgetting the node down the longest");
                    st.nodes.remove(&v);
                    st.forget_streams_of(&v);
                }
                None => return Err(RegistryError::Full(self.max_nodes)),
            }
        }
        st.nodes.insert(
            id.to_string(),
            Arc::new(Node {
                id: id.to_string(),
                url: url.clone(),
                expires,
            }),
        );
        Ok(())
    }

    /// Forgets a node and its stream records; `true` if it was known.
    pub fn remove_node_now(&self, id: &str) -> bool {
        let mut st = self.write();
        let known = st.nodes.remove(id).is_some();
        st.forget_streams_of(id);
        known
    }

    /// Records that `node` holds `stream`. At the stream limit, a stream none of whose nodes is
    /// up is dropped to make room.
    pub fn announce_now(&self, stream: &str, node: &str) -> Result<(), RegistryError> {
        let now = Instant::now();
        let mut st = self.write();
        if !st.nodes.contains_key(node) {
            return Err(RegistryError::UnknownNode(node.to_string()));
        }
        if let Some(ids) = st.streams.get_mut(stream) {
            if !ids.iter().any(|i| i == node) {
                if ids.len() >= MAX_NODES_PER_STREAM {
                    return Err(RegistryError::Full(MAX_NODES_PER_STREAM));
                }
                ids.push(node.to_string());
            }
            return Ok(());
        }
        if st.streams.len() >= self.max_streams {
            let victim = st
                .streams
                .iter()
                .find(|(_, ids)| {
                    !ids.iter()
                        .any(|i| st.nodes.get(i).is_some_and(|n| n.is_up(now)))
                })
                .map(|(name, _)| name.clone());
            match victim {
                Some(v) => {
                    tracing::warn!(stream = %v, "stream limit reached: forgetting a stream with no live node");
                    st.streams.remove(&v);
                }
                None => return Err(RegistryError::Full(self.max_streams)),
            }
        }
        st.streams
            .insert(stream.to_string(), vec![node.to_string()]);
        Ok(())
    }

    /// Records that `node` no longer holds `stream`; `true` if it did.
    pub fn withdraw_now(&self, stream: &str, node: &str) -> bool {
        let mut st = self.write();
        let Some(ids) = st.streams.get_mut(stream) else {
            return false;
        };
        let before = ids.len();
        ids.retain(|i| i != node);
        let removed = ids.len() != before;
        if ids.is_empty() {
            st.streams.remove(stream);
        }
        removed
    }

    /// How many nodes and streams are held (tests and logs).
    pub fn len(&self) -> (usize, usize) {
        let st = self.read();
        (st.nodes.len(), st.streams.len())
    }

    /// Whether nothing at all is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

impl Registry for MemoryRegistry {
    fn resolve(&self, stream: &str) -> Lookup {
        self.resolve_at(stream, Instant::now())
    }

    fn node(&self, id: &str) -> Option<Arc<Node>> {
        self.read().nodes.get(id).cloned()
    }

    fn nodes(&self) -> Vec<Arc<Node>> {
        let mut v: Vec<Arc<Node>> = self.read().nodes.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn streams(&self) -> Vec<StreamEntry> {
        let mut v: Vec<StreamEntry> = self
            .read()
            .streams
            .iter()
            .map(|(name, ids)| StreamEntry {
                name: name.clone(),
                nodes: ids.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn stream(&self, name: &str) -> Option<StreamEntry> {
        self.read().streams.get(name).map(|ids| StreamEntry {
            name: name.to_string(),
            nodes: ids.clone(),
        })
    }

    fn put_node<'a>(
        &'a self,
        id: &'a str,
        url: &'a BaseUrl,
        ttl: Option<Duration>,
    ) -> WriteFuture<'a, ()> {
        Box::pin(std::future::ready(self.put_node_now(id, url, ttl)))
    }

    fn remove_node<'a>(&'a self, id: &'a str) -> WriteFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.remove_node_now(id))))
    }

    fn announce<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, ()> {
        Box::pin(std::future::ready(self.announce_now(stream, node)))
    }

    fn withdraw<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.withdraw_now(stream, node))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> BaseUrl {
        BaseUrl::parse("http://127.0.0.1:1").expect("url")
    }

    fn dead() -> Option<Instant> {
        Some(Instant::now() - Duration::from_secs(1))
    }

    #[test]
    fn resolve_prefers_first_up_node() {
        let r = MemoryRegistry::default();
        r.put_node_until("a", &url(), dead()).expect("put");
        r.put_node_now("b", &url(), None).expect("put");
        r.announce_now("cam1", "a").expect("announce");
        assert!(matches!(r.resolve("cam1"), Lookup::AllDown));
        r.announce_now("cam1", "b").expect("announce");
        match r.resolve("cam1") {
            Lookup::Found(n) => assert_eq!(n[0].id, "b"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.resolve("cam2"), Lookup::NotFound));
        assert!(matches!(
            r.announce_now("cam1", "zz"),
            Err(RegistryError::UnknownNode(_))
        ));
        assert!(r.withdraw_now("cam1", "a"));
        assert!(r.withdraw_now("cam1", "b"));
        assert!(!r.withdraw_now("cam1", "b"));
        assert!(matches!(r.resolve("cam1"), Lookup::NotFound));
    }

    #[test]
    fn ttl_expiry_and_heartbeat() {
        let r = MemoryRegistry::default();
        r.put_node_now("a", &url(), Some(Duration::from_millis(50)))
            .expect("put");
        r.announce_now("cam1", "a").expect("announce");
        assert!(matches!(r.resolve("cam1"), Lookup::Found(_)));
        let later = Instant::now() + Duration::from_millis(100);
        assert!(matches!(r.resolve_at("cam1", later), Lookup::AllDown));
        r.put_node_now("a", &url(), Some(Duration::from_secs(60)))
            .expect("heartbeat");
        assert!(matches!(r.resolve_at("cam1", later), Lookup::Found(_)));
    }

    #[test]
    fn one_stream_is_looked_up_directly() {
        let r = MemoryRegistry::default();
        r.put_node_now("a", &url(), None).expect("put");
        r.put_node_until("b", &url(), dead()).expect("put");
        r.announce_now("s1", "a").expect("1");
        r.announce_now("s1", "b").expect("1b");
        assert_eq!(
            r.stream("s1"),
            Some(StreamEntry {
                name: "s1".into(),
                nodes: vec!["a".into(), "b".into()]
            }),
            "every node holding it, up or not, in preference order"
        );
        assert_eq!(r.stream("s2"), None);
    }

    #[test]
    fn remove_node_drops_its_streams() {
        let r = MemoryRegistry::default();
        r.put_node_now("a", &url(), None).expect("put");
        r.put_node_now("b", &url(), None).expect("put");
        r.announce_now("s1", "a").expect("1");
        r.announce_now("s2", "a").expect("2");
        r.announce_now("s2", "b").expect("2b");
        assert!(r.remove_node_now("a"));
        assert!(!r.remove_node_now("a"));
        assert_eq!(
            r.streams(),
            vec![StreamEntry {
                name: "s2".into(),
                nodes: vec!["b".into()]
            }]
        );
    }

    #[test]
    fn limits_are_enforced_and_dead_entries_make_room() {
        let r = MemoryRegistry::with_limits(2, 1);
        r.put_node_now("a", &url(), None).expect("put");
        assert!(matches!(
            r.put_node_now("b", &url(), None),
            Err(RegistryError::Full(1))
        ));
        r.put_node_now("a", &url(), None)
            .expect("refreshing an existing node is fine");
        r.announce_now("s1", "a").expect("1");
        r.announce_now("s2", "a").expect("2");
        assert!(matches!(
            r.announce_now("s3", "a"),
            Err(RegistryError::Full(2))
        ));
        r.announce_now("s1", "a")
            .expect("re-announce is idempotent");
        // Once `a` is down, a new node takes its place and `a`'s streams go with it.
        r.put_node_until("a", &url(), dead()).expect("a dies");
        r.put_node_now("b", &url(), None)
            .expect("room made by dropping dead a");
        assert!(r.node("a").is_none());
        assert_eq!(r.len(), (1, 0));
        // A stream with no live node gives way to a new one.
        let r = MemoryRegistry::with_limits(1, 2);
        r.put_node_until("a", &url(), dead()).expect("put");
        r.put_node_now("b", &url(), None).expect("put");
        r.announce_now("old", "a").expect("old");
        r.announce_now("new", "b").expect("new replaces old");
        assert!(matches!(r.resolve("old"), Lookup::NotFound));
        // One stream on too many nodes.
        let r = MemoryRegistry::default();
        for i in 0..=MAX_NODES_PER_STREAM {
            let id = format!("n{i}");
            r.put_node_now(&id, &url(), None).expect("put");
            let res = r.announce_now("s", &id);
            assert_eq!(res.is_ok(), i < MAX_NODES_PER_STREAM, "{i}: {res:?}");
        }
    }
}
