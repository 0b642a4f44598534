//! The embedded registry: maps behind one `RwLock`. Reads (every request) take the read lock
//! for a hash lookup; writes are rare. Both maps are bounded. At the limit a write first makes
//! room by dropping what can no longer serve anyone (the node that has been down longest, or a
//! stream none of whose records is live); only when everything is live does it fail with
//! [`RegistryError::Full`], so a platform full of dead entries heals by itself.
//!
//! **Leases.** With a stream lease (`[registry] stream_lease`), each stream record (stream on a
//! node) expires unless renewed: by its node's heartbeat ([`Registry::put_node`] renews every
//! record of the node, through a per-node index, so a heartbeat costs the node's streams and
//! not the registry's size), by a renew hook ([`Registry::renew`]) or by announcing it again.
//! An expired record no longer resolves (a publisher whose media server crashed without an
//! unpublish hook stops answering after the lease: 404 `stream_not_found`), is left out of
//! listings, and is swept by the next writes. Records from the config file never expire.
//!
//! Time comes from tokio's clock (`tokio::time::Instant`), so the lease logic is tested on a
//! paused clock; outside a paused runtime it is the system's monotonic clock.
//!
//! The Redis backend keeps one of these as its local snapshot and uses the synchronous `*_now`
//! / `*_until` methods to apply changes it has already written to Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{Lookup, Node, Registry, RegistryError, StreamEntry, WriteFuture};
use crate::upstream_path::BaseUrl;

/// Default bound on streams and on nodes.
pub const DEFAULT_MAX_STREAMS: usize = 100_000;
pub const DEFAULT_MAX_NODES: usize = 10_000;
/// Most nodes one stream can be held by (a stream pushed to many nodes).
pub const MAX_NODES_PER_STREAM: usize = 16;
/// Least time between two sweeps of expired records by the writes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The registry's clock: tokio's, so tests can pause it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// One stream record: a node holding the stream, until its lease runs out (`None`: never).
#[derive(Debug, Clone)]
struct Holder {
    node: String,
    lease: Option<Instant>,
}

impl Holder {
    fn live(&self, now: Instant) -> bool {
        self.lease.is_none_or(|l| now < l)
    }
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, Arc<Node>>,
    /// stream → records in announcement order (first announced is preferred).
    streams: HashMap<String, Vec<Holder>>,
    /// node → the streams it holds (so removing or renewing a node costs its own streams).
    by_node: HashMap<String, HashSet<String>>,
}

impl State {
    /// Drops `id`'s stream records; streams left with no record go away.
    fn forget_streams_of(&mut self, id: &str) {
        for s in self.by_node.remove(id).unwrap_or_default() {
            self.drop_record(&s, id);
        }
    }

    /// Removes one record (not the index entry); `true` if it was there.
    fn drop_record(&mut self, stream: &str, node: &str) -> bool {
        let Some(hs) = self.streams.get_mut(stream) else {
            return false;
        };
        let before = hs.len();
        hs.retain(|h| h.node != node);
        let removed = hs.len() != before;
        if hs.is_empty() {
            self.streams.remove(stream);
        }
        removed
    }

    fn unindex(&mut self, stream: &str, node: &str) {
        if let Some(set) = self.by_node.get_mut(node) {
            set.remove(stream);
            if set.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    /// Removes every record whose lease ran out by `now`; returns them.
    fn sweep(&mut self, now: Instant) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for (s, hs) in &self.streams {
            for h in hs.iter().filter(|h| !h.live(now)) {
                gone.push((s.clone(), h.node.clone()));
            }
        }
        for (s, n) in &gone {
            self.drop_record(s, n);
            self.unindex(s, n);
        }
        gone
    }

    fn live_nodes(&self, stream: &str, now: Instant) -> Option<Vec<String>> {
        let ids: Vec<String> = self
            .streams
            .get(stream)?
            .iter()
            .filter(|h| h.live(now))
            .map(|h| h.node.clone())
            .collect();
        (!ids.is_empty()).then_some(ids)
    }
}

/// In-process registry.
pub struct MemoryRegistry {
    state: RwLock<State>,
    max_streams: usize,
    max_nodes: usize,
    /// How long a stream record lives without renewal (`None`: until withdrawn).
    lease: Option<Duration>,
    /// When the writes may sweep expired records next.
    next_sweep: Mutex<Option<Instant>>,
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
            lease: None,
            next_sweep: Mutex::new(None),
        }
    }

    /// Stream records announced through the [`Registry`] methods expire `lease` after their
    /// last renewal.
    pub fn with_lease(mut self, lease: Option<Duration>) -> Self {
        self.lease = lease;
        self
    }

    /// The configured stream lease.
    pub fn lease(&self) -> Option<Duration> {
        self.lease
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
        let Some(hs) = st.streams.get(stream) else {
            return Lookup::NotFound;
        };
        let known: Vec<&Arc<Node>> = hs
            .iter()
            .filter(|h| h.live(now))
            .filter_map(|h| st.nodes.get(&h.node))
            .collect();
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

    /// [`Registry::stream`] as of `now` (records whose lease ran out are left out).
    pub fn stream_at(&self, name: &str, now: Instant) -> Option<StreamEntry> {
        self.read().live_nodes(name, now).map(|nodes| StreamEntry {
            name: name.to_string(),
            nodes,
        })
    }

    /// [`Registry::streams`] as of `now`.
    pub fn streams_at(&self, now: Instant) -> Vec<StreamEntry> {
        let st = self.read();
        let mut v: Vec<StreamEntry> = st
            .streams
            .keys()
            .filter_map(|name| {
                st.live_nodes(name, now).map(|nodes| StreamEntry {
                    name: name.clone(),
                    nodes,
                })
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Adds or refreshes a node now. At the node limit, the node down the longest is dropped
    /// (with its stream records) to make room.
    pub fn put_node_now(
        &self,
        id: &str,
        url: &BaseUrl,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        let expires = ttl.map(|t| now() + t);
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
        let now = now();
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

    /// Extends the lease of every leased record of `node` to `until` (a node heartbeat).
    /// Records without a lease (config file) stay without one; expired ones stay expired.
    pub fn renew_node_until(&self, node: &str, until: Instant) {
        let now = now();
        let mut st = self.write();
        let State {
            streams, by_node, ..
        } = &mut *st;
        for s in by_node.get(node).into_iter().flatten() {
            for h in streams.get_mut(s).into_iter().flatten() {
                if h.node == node && h.lease.is_some() && h.live(now) {
                    h.lease = Some(until);
                }
            }
        }
    }

    /// Extends one record's lease to `until`; `false` if there is no live record.
    pub fn renew_until(&self, stream: &str, node: &str, until: Option<Instant>) -> bool {
        let now = now();
        let mut st = self.write();
        let Some(h) = st
            .streams
            .get_mut(stream)
            .and_then(|hs| hs.iter_mut().find(|h| h.node == node))
        else {
            return false;
        };
        if !h.live(now) {
            return false;
        }
        if h.lease.is_some() {
            h.lease = until;
        }
        true
    }

    /// Forgets a node and its stream records; `true` if it was known.
    pub fn remove_node_now(&self, id: &str) -> bool {
        let mut st = self.write();
        let known = st.nodes.remove(id).is_some();
        st.forget_streams_of(id);
        known
    }

    /// Records that `node` holds `stream`, without a lease (the config file). See
    /// [`Self::announce_until`].
    pub fn announce_now(&self, stream: &str, node: &str) -> Result<(), RegistryError> {
        self.announce_until(stream, node, None)
    }

    /// Records that `node` holds `stream` until `lease` (`None`: until withdrawn); announcing
    /// a known record again renews it and keeps its place. At the stream limit, a stream none of
    /// whose records is live (lease and node) is dropped to make room.
    pub fn announce_until(
        &self,
        stream: &str,
        node: &str,
        lease: Option<Instant>,
    ) -> Result<(), RegistryError> {
        let now = now();
        let mut st = self.write();
        if !st.nodes.contains_key(node) {
            return Err(RegistryError::UnknownNode(node.to_string()));
        }
        if let Some(hs) = st.streams.get_mut(stream) {
            match hs.iter_mut().find(|h| h.node == node) {
                Some(h) if h.live(now) => h.lease = lease,
                _ => {
                    // A new record, or one whose lease ran out: it goes last.
                    hs.retain(|h| h.node != node);
                    // Expired records do not count (the sweep drops them).
                    if hs.iter().filter(|h| h.live(now)).count() >= MAX_NODES_PER_STREAM {
                        return Err(RegistryError::Full(MAX_NODES_PER_STREAM));
                    }
                    hs.push(Holder {
                        node: node.to_string(),
                        lease,
                    });
                }
            }
            st.by_node
                .entry(node.to_string())
                .or_default()
                .insert(stream.to_string());
            return Ok(());
        }
        if st.streams.len() >= self.max_streams {
            let victim = st
                .streams
                .iter()
                .find(|(_, hs)| {
                    !hs.iter()
                        .any(|h| h.live(now) && st.nodes.get(&h.node).is_some_and(|n| n.is_up(now)))
                })
                .map(|(name, hs)| (name.clone(), hs.clone()));
            match victim {
                Some((v, hs)) => {
                    tracing::warn!(stream = %v, "stream limit reached: forgetting a stream with no live record");
                    st.streams.remove(&v);
                    for h in hs {
                        st.unindex(&v, &h.node);
                    }
                }
                None => return Err(RegistryError::Full(self.max_streams)),
            }
        }
        st.streams.insert(
            stream.to_string(),
            vec![Holder {
                node: node.to_string(),
                lease,
            }],
        );
        st.by_node
            .entry(node.to_string())
            .or_default()
            .insert(stream.to_string());
        Ok(())
    }

    /// Records that `node` no longer holds `stream`; `true` if it did (an expired record
    /// counts as not held).
    pub fn withdraw_now(&self, stream: &str, node: &str) -> bool {
        let now = now();
        let mut st = self.write();
        let live = st
            .streams
            .get(stream)
            .and_then(|hs| hs.iter().find(|h| h.node == node))
            .is_some_and(|h| h.live(now));
        st.drop_record(stream, node);
        st.unindex(stream, node);
        live
    }

    /// Removes every record whose lease has run out; returns them as (stream, node).
    pub fn sweep_expired(&self, now: Instant) -> Vec<(String, String)> {
        self.write().sweep(now)
    }

    /// Sweeps expired records at most every [`SWEEP_EVERY`] (called by the writes).
    fn maybe_sweep(&self) {
        if self.lease.is_none() {
            return;
        }
        let now = now();
        {
            let mut next = self.next_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if next.is_some_and(|n| now < n) {
                return;
            }
            *next = Some(now + SWEEP_EVERY);
        }
        let gone = self.sweep_expired(now);
        if !gone.is_empty() {
            tracing::info!(records = gone.len(), "stream leases ran out");
        }
    }

    fn lease_until(&self) -> Option<Instant> {
        self.lease.map(|l| now() + l)
    }

    /// Every live record as (stream, node, lease), streams by name and records in preference
    /// order (the Redis backend writes them back into an emptied Redis).
    pub fn records_at(&self, now: Instant) -> Vec<(String, String, Option<Instant>)> {
        let st = self.read();
        let mut names: Vec<&String> = st.streams.keys().collect();
        names.sort();
        names
            .into_iter()
            .flat_map(|s| {
                st.streams[s]
                    .iter()
                    .filter(|h| h.live(now))
                    .map(|h| (s.clone(), h.node.clone(), h.lease))
            })
            .collect()
    }

    /// How many nodes and streams are held, expired records included (tests and logs).
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
        self.resolve_at(stream, now())
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
        self.streams_at(now())
    }

    fn stream(&self, name: &str) -> Option<StreamEntry> {
        self.stream_at(name, now())
    }

    fn put_node<'a>(
        &'a self,
        id: &'a str,
        url: &'a BaseUrl,
        ttl: Option<Duration>,
    ) -> WriteFuture<'a, ()> {
        self.maybe_sweep();
        let r = self.put_node_now(id, url, ttl);
        if let (Ok(()), Some(until)) = (&r, self.lease_until()) {
            self.renew_node_until(id, until);
        }
        Box::pin(std::future::ready(r))
    }

    fn remove_node<'a>(&'a self, id: &'a str) -> WriteFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.remove_node_now(id))))
    }

    fn announce<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, ()> {
        self.maybe_sweep();
        let lease = self.lease_until();
        Box::pin(std::future::ready(self.announce_until(stream, node, lease)))
    }

    fn announce_fixed<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, ()> {
        Box::pin(std::future::ready(self.announce_until(stream, node, None)))
    }

    fn renew<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, bool> {
        let lease = self.lease_until();
        Box::pin(std::future::ready(
            Ok(self.renew_until(stream, node, lease)),
        ))
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

    /// Leases on tokio's paused clock: a record lives `lease` after its last renewal, whether
    /// the renewal is a heartbeat of its node, a renew hook or a new announcement; config-file
    /// records never expire; an expired record resolves 404 and is swept by later writes.
    #[tokio::test(start_paused = true)]
    async fn stream_leases_expire_unless_renewed() {
        let lease = Duration::from_secs(10);
        let r = MemoryRegistry::default().with_lease(Some(lease));
        r.put_node("a", &url(), Some(Duration::from_secs(60)))
            .await
            .expect("put");
        r.put_node_now("s", &url(), None).expect("static node");
        r.announce_now("fixed", "s").expect("static stream");
        r.announce("cam1", "a").await.expect("announce");
        r.announce("cam2", "a").await.expect("announce");
        tokio::time::advance(Duration::from_secs(8)).await;
        // A heartbeat of `a` renews both of its records.
        r.put_node("a", &url(), Some(Duration::from_secs(60)))
            .await
            .expect("heartbeat");
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(matches!(r.resolve("cam1"), Lookup::Found(_)));
        // A renew hook renews one record only.
        assert!(r.renew("cam1", "a").await.expect("renew"));
        assert!(!r.renew("nope", "a").await.expect("renew"), "no record");
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(matches!(r.resolve("cam1"), Lookup::Found(_)));
        assert!(
            matches!(r.resolve("cam2"), Lookup::NotFound),
            "cam2's lease ran out"
        );
        assert_eq!(r.stream("cam2"), None, "left out of lookups");
        assert_eq!(
            r.streams()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            vec!["cam1", "fixed"]
        );
        assert!(!r.renew("cam2", "a").await.expect("renew"), "too late");
        assert!(
            !r.withdraw_now("cam2", "a"),
            "an expired record is not held"
        );
        // The crashed node stops heartbeating: its streams 404 after the lease, even though
        // the node itself is still within its TTL. Config-file streams stay.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(matches!(r.resolve("cam1"), Lookup::NotFound));
        assert!(matches!(r.resolve("fixed"), Lookup::Found(_)));
        // Re-announcing brings a stream back; the next write sweeps what expired.
        r.announce("cam3", "a").await.expect("announce");
        assert_eq!(r.len(), (2, 2), "cam1 and cam2 swept: fixed and cam3 left");
        assert!(matches!(r.resolve("cam3"), Lookup::Found(_)));
    }

    #[test]
    fn the_node_index_follows_records() {
        let r = MemoryRegistry::default();
        r.put_node_now("a", &url(), None).expect("put");
        r.announce_now("s1", "a").expect("1");
        assert!(r.withdraw_now("s1", "a"));
        r.announce_now("s2", "a").expect("2");
        assert!(r.remove_node_now("a"));
        r.put_node_now("a", &url(), None).expect("put again");
        assert!(r.read().by_node.is_empty(), "no stale index entries");
        assert_eq!(r.len(), (1, 0));
    }
}
