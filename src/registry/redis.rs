//! The Redis backend: one registry shared by several gateways.
//!
//! Lookups never touch Redis. Each gateway keeps a [`MemoryRegistry`] snapshot that the request
//! path reads; a background task keeps it current:
//! - every write goes to Redis first (failure → [`RegistryError::Unavailable`], the snapshot is
//!   left alone), then into the local snapshot, and is published on a pub/sub channel that every
//!   gateway (the writer too) applies to its own snapshot: propagation takes milliseconds;
//! - pub/sub loses what is sent while a subscriber is disconnected, so the task also compares a
//!   version counter every `resync_interval` and re-reads the whole state when it moved, and
//!   always re-reads after (re)subscribing;
//! - while Redis cannot be reached, lookups go on from the last snapshot, with node liveness
//!   judged as of the moment Redis was lost (no heartbeat can arrive, so nodes that were up stay
//!   up); when Redis returns, the task resubscribes and re-reads by itself. If Redis came back
//!   empty (restarted without persistence: the `seeded` marker is gone), each gateway merges its
//!   last known state back before re-reading, so a Redis restart does not unpublish the
//!   platform; writes made meanwhile are kept (`HSETNX`).
//!
//! Keys (prefix `P`, default `streamgate`):
//! - `P:nodes` hash: node id → base URL (kept after the node expires, so its streams answer
//!   503 `node_unavailable` instead of 404 while it is down);
//! - `P:alive:ID` string with a `PX` TTL: present while the node is up (no TTL for nodes
//!   registered without one);
//! - `P:streams` hash: `STREAM/NODE` → announcement order (microseconds since the epoch), so the
//!   first node announced stays preferred on every gateway;
//! - `P:version` counter, bumped by every change of structure (not by plain heartbeats);
//! - `P:seeded` marker, set by the first re-read against this Redis (see above);
//! - `P:events` pub/sub channel carrying [`Event`]s as JSON.
//!
//! Static `[[nodes]]` from the config file are part of every snapshot but never written to
//! Redis: each gateway has its own config, and they keep routing even if Redis was never up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    load_static, url_text, Lookup, MemoryRegistry, Node, Registry, RegistryError, StreamEntry,
    WriteFuture,
};
use crate::config::NodeSettings;
use crate::upstream_path::BaseUrl;

/// How long one Redis round trip may take before the write fails with 503. Short: a caller (a
/// media server's hook) is waiting, and a retry is the caller's call.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect back-off bounds for the pub/sub link.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Most `HSCAN` rounds when collecting a removed node's streams (each returns ~1000 fields).
const MAX_SCAN_ROUNDS: usize = 1_000;

/// What [`RedisRegistry::start`] needs.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
    pub key_prefix: String,
    pub resync_interval: Duration,
    pub statics: Vec<NodeSettings>,
}

/// A change, as published on the events channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    Node {
        id: String,
        url: String,
        ttl_ms: Option<u64>,
    },
    NodeGone {
        id: String,
    },
    Announce {
        stream: String,
        node: String,
    },
    Withdraw {
        stream: String,
        node: String,
    },
}

/// Key names under one prefix.
#[derive(Debug, Clone)]
struct Keys {
    nodes: String,
    streams: String,
    version: String,
    /// Set once a gateway has written its state into this Redis; missing means Redis is new or
    /// lost its data (a restart without persistence), so gateways write their state back.
    seeded: String,
    events: String,
    alive_prefix: String,
}

impl Keys {
    fn new(p: &str) -> Self {
        Self {
            nodes: format!("{p}:nodes"),
            streams: format!("{p}:streams"),
            version: format!("{p}:version"),
            seeded: format!("{p}:seeded"),
            events: format!("{p}:events"),
            alive_prefix: format!("{p}:alive:"),
        }
    }
    fn alive(&self, id: &str) -> String {
        format!("{}{id}", self.alive_prefix)
    }
}

/// `STREAM/NODE`: neither name can contain `/` (both are `[A-Za-z0-9_.-]`).
fn field(stream: &str, node: &str) -> String {
    format!("{stream}/{node}")
}

/// Announcement order: microseconds since the epoch (gateways' clocks are close enough for
/// "who came first" between pushes seconds apart).
fn order_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn unavailable(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(e.to_string())
}

/// Runs one Redis call with [`OP_TIMEOUT`].
async fn bounded<T>(
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable("timed out")),
    }
}

/// The reply to the state-reading transaction: version, seeded marker, nodes, stream records.
type StateReply = (
    Option<u64>,
    Option<String>,
    HashMap<String, String>,
    HashMap<String, String>,
);

/// The whole state as read from Redis, before it becomes a snapshot.
struct RawState {
    version: Option<u64>,
    /// `false`: no gateway has written its state into this Redis yet.
    seeded: bool,
    /// Node id → base URL.
    nodes: Vec<(String, String)>,
    /// Remaining TTL of each node's alive key, in `nodes` order (-2 gone, -1 no TTL).
    pttls: Vec<i64>,
    /// `STREAM/NODE` → announcement order.
    streams: HashMap<String, String>,
}

/// The Redis-backed registry.
pub struct RedisRegistry {
    /// What lookups read; replaced whole by each full re-read, changed in place by events.
    snapshot: RwLock<Arc<MemoryRegistry>>,
    /// Config-file nodes: loaded into every snapshot, never written to Redis.
    statics: Vec<NodeSettings>,
    /// Ids of `statics`, so a re-seed does not copy them into Redis.
    static_ids: HashSet<String>,
    /// Multiplexed, self-reconnecting connection for writes and re-reads.
    conn: ConnectionManager,
    /// For the dedicated pub/sub connection (a subscribed connection can do nothing else).
    client: redis::Client,
    keys: Keys,
    /// While Redis is unreachable: the moment it was lost. Lookups judge node liveness as of
    /// then, since no heartbeat can reach us meanwhile.
    lost_at: RwLock<Option<Instant>>,
    resync_interval: Duration,
    /// Bumped by every local write once Redis has it, before it touches the snapshot: a
    /// re-read that saw it move while it was reading does not swap its (older) picture in.
    local_writes: std::sync::atomic::AtomicU64,
}

impl RedisRegistry {
    /// Builds the registry and starts its sync task; does not wait for Redis (a gateway must
    /// start and serve its static config even when Redis is down).
    pub fn start(
        opts: RedisOptions,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RegistryError> {
        let client = redis::Client::open(opts.url.as_str()).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        let snapshot = MemoryRegistry::default();
        load_static(&snapshot, &opts.statics)?;
        let reg = Arc::new(Self {
            snapshot: RwLock::new(Arc::new(snapshot)),
            static_ids: opts.statics.iter().map(|n| n.id.clone()).collect(),
            statics: opts.statics,
            conn,
            client,
            keys: Keys::new(&opts.key_prefix),
            // Not synced yet: judge liveness as of start until the first re-read.
            lost_at: RwLock::new(Some(Instant::now())),
            resync_interval: opts.resync_interval,
            local_writes: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(sync_task(reg.clone(), shutdown));
        Ok(reg)
    }

    fn snap(&self) -> Arc<MemoryRegistry> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_lost(&self, lost: bool) {
        let mut g = self.lost_at.write().unwrap_or_else(|p| p.into_inner());
        match (lost, g.is_some()) {
            (true, false) => *g = Some(Instant::now()),
            (false, true) => *g = None,
            _ => {}
        }
    }

    /// Whether the last contact with Redis succeeded (a health signal for operators and tests).
    pub fn is_synced(&self) -> bool {
        self.lost_at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn event_json(ev: &Event) -> String {
        serde_json::to_string(ev).unwrap_or_default()
    }

    /// Applies one published change to the snapshot.
    fn apply(&self, ev: Event) {
        let snap = self.snap();
        let res = match ev {
            // This gateway's config file owns its static nodes: another gateway cannot move them.
            Event::Node { id, .. } if self.static_ids.contains(&id) => Ok(()),
            Event::Node { id, url, ttl_ms } => match BaseUrl::parse(&url) {
                Ok(u) => snap.put_node_now(&id, &u, ttl_ms.map(Duration::from_millis)),
                Err(e) => {
                    tracing::warn!(node = %id, error = %e, "registry event with a bad node url ignored");
                    Ok(())
                }
            },
            Event::NodeGone { id } => {
                snap.remove_node_now(&id);
                // A static node deleted from Redis is still in our config.
                if let Some(n) = self.statics.iter().find(|n| n.id == id) {
                    let _ = load_static(&snap, std::slice::from_ref(n));
                }
                Ok(())
            }
            Event::Announce { stream, node } => snap.announce_now(&stream, &node),
            Event::Withdraw { stream, node } => {
                snap.withdraw_now(&stream, &node);
                Ok(())
            }
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "registry event could not be applied locally");
        }
    }

    /// Reads the raw state: version, nodes with their alive-key PTTLs, stream records.
    async fn read_state(&self) -> Result<RawState, RegistryError> {
        let mut conn = self.conn();
        let (version, seeded, nodes, streams): StateReply = bounded(
            redis::pipe()
                .atomic()
                .get(&self.keys.version)
                .get(&self.keys.seeded)
                .hgetall(&self.keys.nodes)
                .hgetall(&self.keys.streams)
                .query_async(&mut conn),
        )
        .await?;
        let nodes: Vec<(String, String)> = nodes.into_iter().collect();
        let pttls: Vec<i64> = if nodes.is_empty() {
            Vec::new()
        } else {
            let mut p = redis::pipe();
            for (id, _) in &nodes {
                p.pttl(self.keys.alive(id));
            }
            bounded(p.query_async(&mut conn)).await?
        };
        Ok(RawState {
            version,
            seeded: seeded.is_some(),
            nodes,
            pttls,
            streams,
        })
    }

    /// Reads the whole state from Redis into a fresh snapshot and swaps it in. Returns the
    /// version read.
    async fn full_resync(&self) -> Result<u64, RegistryError> {
        // A local write landing while we read would be lost by the swap; read again then. The
        // last try swaps regardless: the write's own event re-applies it right after.
        for _ in 0..3 {
            let writes = self.local_writes.load(std::sync::atomic::Ordering::SeqCst);
            if let Some(version) = self.try_full_resync(writes).await? {
                return Ok(version);
            }
        }
        let writes = self.local_writes.load(std::sync::atomic::Ordering::SeqCst);
        Ok(self.try_full_resync(writes).await?.unwrap_or(0))
    }

    /// One re-read; `None` if a local write happened since `writes` was read (nothing swapped).
    async fn try_full_resync(&self, writes: u64) -> Result<Option<u64>, RegistryError> {
        let mut state = self.read_state().await?;
        if !state.seeded {
            self.reseed().await?;
            // Read back what we (and maybe other gateways at once) wrote.
            state = self.read_state().await?;
        }
        let RawState {
            version,
            nodes,
            pttls,
            streams,
            ..
        } = state;
        let now = Instant::now();
        let fresh = MemoryRegistry::default();
        load_static(&fresh, &self.statics)?;
        for ((id, url), pttl) in nodes.iter().zip(pttls) {
            if self.static_ids.contains(id) {
                continue; // our config file owns it
            }
            let Ok(url) = BaseUrl::parse(url) else {
                tracing::warn!(node = %id, "node with a bad url in redis ignored");
                continue;
            };
            let expires = match pttl {
                -1 => None,
                ms if ms >= 0 => Some(now + Duration::from_millis(ms as u64)),
                _ => Some(now), // key gone: the node missed its heartbeats
            };
            if let Err(e) = fresh.put_node_until(id, &url, expires) {
                tracing::warn!(node = %id, error = %e, "node from redis not kept locally");
            }
        }
        let mut pairs: Vec<(u64, &str, &str)> = streams
            .iter()
            .filter_map(|(f, order)| {
                let (s, n) = f.split_once('/')?;
                Some((order.parse().unwrap_or(u64::MAX), s, n))
            })
            .collect();
        pairs.sort_unstable();
        for (_, s, n) in pairs {
            match fresh.announce_now(s, n) {
                // A record left by a node removed concurrently: nothing to route to.
                Ok(()) | Err(RegistryError::UnknownNode(_)) => {}
                Err(e) => {
                    tracing::warn!(stream = %s, node = %n, error = %e, "stream from redis not kept locally")
                }
            }
        }
        let mut current = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        if self.local_writes.load(std::sync::atomic::Ordering::SeqCst) != writes {
            return Ok(None);
        }
        *current = Arc::new(fresh);
        Ok(Some(version.unwrap_or(0)))
    }

    /// Marks a local write as done in Redis; call before applying it to the snapshot.
    fn wrote(&self) {
        self.local_writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Redis is new or came back empty: write our last known (non-static) state back, merging
    /// with what other gateways write at the same time (`HSETNX`, `SET NX`), and mark it seeded.
    async fn reseed(&self) -> Result<(), RegistryError> {
        let snap = self.snap();
        let now = Instant::now();
        let mut p = redis::pipe();
        p.atomic();
        let mut any = false;
        let statics: HashSet<(&str, &str)> = self
            .statics
            .iter()
            .flat_map(|n| n.streams.iter().map(move |s| (s.as_str(), n.id.as_str())))
            .collect();
        let nodes = snap.nodes();
        for n in &nodes {
            if self.static_ids.contains(&n.id) {
                continue;
            }
            any = true;
            p.hset_nx(&self.keys.nodes, &n.id, url_text(&n.url))
                .ignore();
            match n.expires {
                None => {
                    p.cmd("SET")
                        .arg(self.keys.alive(&n.id))
                        .arg("1")
                        .arg("NX")
                        .ignore();
                }
                Some(e) if e > now => {
                    let ms = (e - now).as_millis().max(1) as u64;
                    p.cmd("SET")
                        .arg(self.keys.alive(&n.id))
                        .arg("1")
                        .arg("NX")
                        .arg("PX")
                        .arg(ms)
                        .ignore();
                }
                Some(_) => {}
            }
        }
        let base = order_now();
        for (i, st) in snap.streams().iter().enumerate() {
            for (j, node) in st.nodes.iter().enumerate() {
                if statics.contains(&(st.name.as_str(), node.as_str())) {
                    continue;
                }
                any = true;
                let order = base + (i * super::memory::MAX_NODES_PER_STREAM + j) as u64;
                p.hset_nx(&self.keys.streams, field(&st.name, node), order)
                    .ignore();
            }
        }
        p.cmd("SET").arg(&self.keys.seeded).arg("1").ignore();
        if any {
            p.incr(&self.keys.version, 1).ignore();
        }
        let mut conn = self.conn();
        bounded(p.query_async::<()>(&mut conn)).await?;
        if any {
            tracing::warn!(
                nodes = nodes.len(),
                "redis had no registry: wrote the last known one back"
            );
        }
        Ok(())
    }

    async fn current_version(&self) -> Result<u64, RegistryError> {
        let mut conn = self.conn();
        let v: Option<u64> = bounded(
            redis::cmd("GET")
                .arg(&self.keys.version)
                .query_async(&mut conn),
        )
        .await?;
        Ok(v.unwrap_or(0))
    }

    async fn do_put_node(
        &self,
        id: &str,
        url: &BaseUrl,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        let snap = self.snap();
        // Plain heartbeats (same node, same url) change no structure: they refresh the TTL and
        // tell the others, without making every gateway re-read everything.
        let structural = snap.node(id).is_none_or(|n| n.url != *url);
        let ttl_ms = ttl.map(|t| t.as_millis().max(1) as u64);
        let ev = Event::Node {
            id: id.to_string(),
            url: url_text(url),
            ttl_ms,
        };
        let mut p = redis::pipe();
        p.atomic()
            .hset(&self.keys.nodes, id, url_text(url))
            .ignore();
        match ttl_ms {
            Some(ms) => p
                .cmd("SET")
                .arg(self.keys.alive(id))
                .arg("1")
                .arg("PX")
                .arg(ms)
                .ignore(),
            None => p.cmd("SET").arg(self.keys.alive(id)).arg("1").ignore(),
        };
        if structural {
            p.incr(&self.keys.version, 1).ignore();
        }
        p.publish(&self.keys.events, Self::event_json(&ev)).ignore();
        let mut conn = self.conn();
        bounded(p.query_async::<()>(&mut conn)).await?;
        self.wrote();
        self.snap().put_node_now(id, url, ttl)
    }

    async fn do_remove_node(&self, id: &str) -> Result<bool, RegistryError> {
        let mut conn = self.conn();
        // Collect the node's stream records (`*/ID`; ids hold no glob characters).
        let pattern = format!("*/{id}");
        let mut fields: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        for _ in 0..MAX_SCAN_ROUNDS {
            let (next, batch): (u64, Vec<String>) = bounded(
                redis::cmd("HSCAN")
                    .arg(&self.keys.streams)
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn),
            )
            .await?;
            // HSCAN returns field, value, field, value…
            fields.extend(batch.into_iter().step_by(2));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let ev = Event::NodeGone { id: id.to_string() };
        let mut p = redis::pipe();
        p.atomic().hdel(&self.keys.nodes, id);
        p.del(self.keys.alive(id)).ignore();
        if !fields.is_empty() {
            p.hdel(&self.keys.streams, &fields).ignore();
        }
        p.incr(&self.keys.version, 1).ignore();
        p.publish(&self.keys.events, Self::event_json(&ev)).ignore();
        let (removed,): (i64,) = bounded(p.query_async(&mut conn)).await?;
        self.wrote();
        let local = self.snap().remove_node_now(id);
        Ok(removed > 0 || local)
    }

    async fn do_announce(&self, stream: &str, node: &str) -> Result<(), RegistryError> {
        if self.snap().node(node).is_none() {
            // The snapshot can lag Redis for a moment (a re-read swapped in just before a node
            // registered through this gateway was applied): Redis decides.
            let mut conn = self.conn();
            let known: bool = bounded(
                redis::cmd("HEXISTS")
                    .arg(&self.keys.nodes)
                    .arg(node)
                    .query_async(&mut conn),
            )
            .await?;
            if !known {
                return Err(RegistryError::UnknownNode(node.to_string()));
            }
        }
        let ev = Event::Announce {
            stream: stream.to_string(),
            node: node.to_string(),
        };
        let mut p = redis::pipe();
        p.atomic()
            .hset_nx(&self.keys.streams, field(stream, node), order_now())
            .ignore()
            .incr(&self.keys.version, 1)
            .ignore()
            .publish(&self.keys.events, Self::event_json(&ev))
            .ignore();
        let mut conn = self.conn();
        bounded(p.query_async::<()>(&mut conn)).await?;
        self.wrote();
        // Redis has it; if the snapshot does not know the node yet, the published event
        // brings the announcement in once the node's own event has been applied.
        match self.snap().announce_now(stream, node) {
            Err(RegistryError::UnknownNode(_)) => Ok(()),
            other => other,
        }
    }

    async fn do_withdraw(&self, stream: &str, node: &str) -> Result<bool, RegistryError> {
        let ev = Event::Withdraw {
            stream: stream.to_string(),
            node: node.to_string(),
        };
        let mut p = redis::pipe();
        p.atomic()
            .hdel(&self.keys.streams, field(stream, node))
            .incr(&self.keys.version, 1)
            .ignore()
            .publish(&self.keys.events, Self::event_json(&ev))
            .ignore();
        let mut conn = self.conn();
        let (removed,): (i64,) = bounded(p.query_async(&mut conn)).await?;
        self.wrote();
        let local = self.snap().withdraw_now(stream, node);
        Ok(removed > 0 || local)
    }
}

impl Registry for RedisRegistry {
    fn resolve(&self, stream: &str) -> Lookup {
        let now = self
            .lost_at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(Instant::now);
        self.snap().resolve_at(stream, now)
    }

    fn node(&self, id: &str) -> Option<Arc<Node>> {
        self.snap().node(id)
    }

    fn nodes(&self) -> Vec<Arc<Node>> {
        self.snap().nodes()
    }

    fn streams(&self) -> Vec<StreamEntry> {
        self.snap().streams()
    }

    fn stream(&self, name: &str) -> Option<StreamEntry> {
        self.snap().stream(name)
    }

    fn put_node<'a>(
        &'a self,
        id: &'a str,
        url: &'a BaseUrl,
        ttl: Option<Duration>,
    ) -> WriteFuture<'a, ()> {
        Box::pin(self.do_put_node(id, url, ttl))
    }

    fn remove_node<'a>(&'a self, id: &'a str) -> WriteFuture<'a, bool> {
        Box::pin(self.do_remove_node(id))
    }

    fn announce<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, ()> {
        Box::pin(self.do_announce(stream, node))
    }

    fn withdraw<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, bool> {
        Box::pin(self.do_withdraw(stream, node))
    }

    fn store_connected(&self) -> Option<bool> {
        Some(self.is_synced())
    }
}

/// Keeps the snapshot in step with Redis until `shutdown`: subscribe, re-read, then apply
/// events as they come and re-read whenever the version moved; on any failure, back off,
/// reconnect and start over.
async fn sync_task(reg: Arc<RedisRegistry>, shutdown: CancellationToken) {
    let mut backoff = crate::backoff::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut warned = false;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sync_once(&reg, &shutdown) => r,
        };
        reg.set_lost(true);
        match outcome {
            Ok(()) => return, // shutdown
            Err(SyncEnd::Connected(e)) => {
                // We were in sync, then lost it: start the back-off from the bottom.
                backoff.reset();
                warned = true;
                tracing::warn!(error = %e, "lost redis; routing from the last known registry");
            }
            Err(SyncEnd::NeverConnected(e)) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot reach redis; routing from the last known registry");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// How one connected stretch of the sync task ended.
enum SyncEnd {
    /// Failed before the first re-read completed.
    NeverConnected(RegistryError),
    /// Was in sync, then lost Redis.
    Connected(RegistryError),
}

async fn sync_once(reg: &RedisRegistry, shutdown: &CancellationToken) -> Result<(), SyncEnd> {
    let mut pubsub = bounded(reg.client.get_async_pubsub())
        .await
        .map_err(SyncEnd::NeverConnected)?;
    bounded(pubsub.subscribe(&reg.keys.events))
        .await
        .map_err(SyncEnd::NeverConnected)?;
    // Subscribed first, re-read second: nothing written in between is missed.
    let mut version = reg.full_resync().await.map_err(SyncEnd::NeverConnected)?;
    reg.set_lost(false);
    tracing::info!(version, "registry in sync with redis");
    let mut messages = pubsub.into_on_message();
    let mut tick = tokio::time::interval(reg.resync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err(SyncEnd::Connected(unavailable("pub/sub connection closed")));
                };
                match serde_json::from_slice::<Event>(msg.get_payload_bytes()) {
                    Ok(ev) => reg.apply(ev),
                    Err(e) => tracing::warn!(error = %e, "unreadable registry event ignored"),
                }
            }
            _ = tick.tick() => {
                let v = reg.current_version().await.map_err(SyncEnd::Connected)?;
                if v != version {
                    version = reg.full_resync().await.map_err(SyncEnd::Connected)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json() {
        let ev = Event::Node {
            id: "n1".into(),
            url: "http://127.0.0.1:1".into(),
            ttl_ms: Some(1500),
        };
        let s = RedisRegistry::event_json(&ev);
        assert_eq!(
            s,
            r#"{"op":"node","id":"n1","url":"http://127.0.0.1:1","ttl_ms":1500}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&s).expect("parse"), ev);
        let ev = Event::Withdraw {
            stream: "cam1".into(),
            node: "n1".into(),
        };
        assert_eq!(
            serde_json::from_str::<Event>(&RedisRegistry::event_json(&ev)).expect("parse"),
            ev
        );
        assert_eq!(field("cam1", "n1"), "cam1/n1");
        assert_eq!(Keys::new("sg").alive("n1"), "sg:alive:n1");
    }
}
