//! The embedded registry: two maps behind one `RwLock`. Reads (every request) take the read lock
//! for a hash lookup; writes are rare. Both maps are bounded: past the limit an announce fails
//! with [`RegistryError::Full`] instead of growing without end.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::{Lookup, Node, Registry, RegistryError};

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
        Self { state: RwLock::new(State::default()), max_streams, max_nodes }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent: keep going.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Registry for MemoryRegistry {
    fn resolve(&self, stream: &str) -> Lookup {
        let st = self.read();
        let Some(ids) = st.streams.get(stream) else {
            return Lookup::NotFound;
        };
        let now = Instant::now();
        let up: Vec<Arc<Node>> = ids
            .iter()
            .filter_map(|id| st.nodes.get(id))
            .filter(|n| n.is_up(now))
            .cloned()
            .collect();
        if up.is_empty() {
            Lookup::AllDown
        } else {
            Lookup::Found(up)
        }
    }

    fn node(&self, id: &str) -> Option<Arc<Node>> {
        self.read().nodes.get(id).cloned()
    }

    fn nodes(&self) -> Vec<Arc<Node>> {
        self.read().nodes.values().cloned().collect()
    }

    fn put_node(&self, node: Node) -> Result<(), RegistryError> {
        let mut st = self.write();
        if !st.nodes.contains_key(&node.id) && st.nodes.len() >= self.max_nodes {
            return Err(RegistryError::Full(self.max_nodes));
        }
        st.nodes.insert(node.id.clone(), Arc::new(node));
        Ok(())
    }

    fn announce(&self, stream: &str, node: &str) -> Result<(), RegistryError> {
        let mut st = self.write();
        if !st.nodes.contains_key(node) {
            return Err(RegistryError::UnknownNode(node.to_string()));
        }
        let len = st.streams.len();
        match st.streams.get_mut(stream) {
            Some(ids) => {
                if !ids.iter().any(|i| i == node) {
                    if ids.len() >= MAX_NODES_PER_STREAM {
                        return Err(RegistryError::Full(MAX_NODES_PER_STREAM));
                    }
                    ids.push(node.to_string());
                }
            }
            None => {
                if len >= self.max_streams {
                    return Err(RegistryError::Full(self.max_streams));
                }
                st.streams.insert(stream.to_string(), vec![node.to_string()]);
            }
        }
        Ok(())
    }

    fn withdraw(&self, stream: &str, node: &str) -> bool {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream_path::BaseUrl;
    use std::time::Duration;

    fn node(id: &str, expires: Option<Instant>) -> Node {
        Node { id: id.into(), url: BaseUrl::parse("http://127.0.0.1:1").expect("url"), expires }
    }

    #[test]
    fn resolve_prefers_first_up_node() {
        let r = MemoryRegistry::default();
        r.put_node(node("a", Some(Instant::now() - Duration::from_secs(1)))).expect("put");
        r.put_node(node("b", None)).expect("put");
        r.announce("cam1", "a").expect("announce");
        assert!(matches!(r.resolve("cam1"), Lookup::AllDown));
        r.announce("cam1", "b").expect("announce");
        match r.resolve("cam1") {
            Lookup::Found(n) => assert_eq!(n[0].id, "b"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.resolve("cam2"), Lookup::NotFound));
        assert!(matches!(r.announce("cam1", "zz"), Err(RegistryError::UnknownNode(_))));
        assert!(r.withdraw("cam1", "a"));
        assert!(r.withdraw("cam1", "b"));
        assert!(matches!(r.resolve("cam1"), Lookup::NotFound));
    }

    #[test]
    fn limits_are_enforced() {
        let r = MemoryRegistry::with_limits(2, 1);
        r.put_node(node("a", None)).expect("put");
        assert!(matches!(r.put_node(node("b", None)), Err(RegistryError::Full(1))));
        r.put_node(node("a", None)).expect("refreshing an existing node is fine");
        r.announce("s1", "a").expect("1");
        r.announce("s2", "a").expect("2");
        assert!(matches!(r.announce("s3", "a"), Err(RegistryError::Full(2))));
        r.announce("s1", "a").expect("re-announce is idempotent");
    }
}
