//! Gateway tiers that keep one pull per stream (`[fleet]`; the design is in FLEET.md).
//!
//! Gateways announce themselves in Redis with heartbeats; for each stream, at most
//! `node_pulls` tier-1 gateways of a region pull from the node and every other gateway pulls
//! from a gateway ([`choice`]). A pull from a gateway is an ordinary live pull through the one
//! transport and the one fan-out engine: [`FleetSource`] is a `NodeSource` whose candidates are
//! gateways (then the nodes, as a last resort), whose requests carry the hop count and the
//! fleet's pass ([`signature`]), and which chooses again at every reconnect, so a dead upstream
//! gateway costs its downstream viewers a reconnect, not their connection.
//!
//! Loops cannot form: every hub has a fixed outgoing hop (`out_hop`); a request arriving at hop
//! `h` only joins a hub that pulls at a hop above `h` or pulls from the node, and a request at
//! `max_depth` is served from the node. Hops strictly grow along any chain of gateways.
//!
//! Keys (prefix `P`, default `streamgate-fleet`), all bounded:
//! - `P:gw:ID`: the gateway's [`Record`] (JSON), `PX` heartbeat TTL;
//! - `P:gws:REGION`: set of the region's ids (read up to `max_gateways`; ids whose record has
//!   expired are removed by whoever reads them);
//! - `P:pulls:REGION:STREAM`: hash, gateway id → where it pulls the stream from (`node:ID` or
//!   `gw:ID`), written when a pull starts, moves or ends, refreshed every [`ANNOUNCE_TTL`] / 3,
//!   expiring after [`ANNOUNCE_TTL`]; read for redirect affinity.

pub mod choice;
pub mod membership;
pub mod signature;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use choice::{Member, Plan};
pub use membership::{Membership, Record};
pub use signature::{Pass, HOP_HEADER, HOP_PARAM};

use crate::config::FleetSettings;
use crate::error::GatewayError;
use crate::fanout::{Hubs, NodeSource};
use crate::registry::Node;
use crate::upstream_path::BaseUrl;

/// Node ids of gateways in the transport (node ids cannot contain ':', so no clash).
pub const GATEWAY_PREFIX: &str = "fleet:";
/// How long a stream's pull announcements live without a refresh.
pub const ANNOUNCE_TTL: Duration = Duration::from_secs(30);
/// One Redis round trip, at most.
const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a viewer request waits on Redis for redirect affinity before it is served here.
const AFFINITY_TIMEOUT: Duration = Duration::from_millis(300);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn bounded<T, E: std::fmt::Display>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Key names under one prefix, inside a `{hash tag}` (one Redis Cluster slot, so pipelines
/// and `MGET` never cross slots), as the registry's keys are.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(p: &str) -> Self {
        let prefix = if p.contains('{') {
            p.to_string()
        } else {
            format!("{{{p}}}")
        };
        Self { prefix }
    }
}

impl Keys {
    fn gateway(&self, id: &str) -> String {
        format!("{}:gw:{id}", self.prefix)
    }
    fn region(&self, region: &str) -> String {
        format!("{}:gws:{region}", self.prefix)
    }
    fn pulls(&self, region: &str, stream: &str) -> String {
        format!("{}:pulls:{region}:{stream}", self.prefix)
    }
}

/// This gateway's place in the fleet.
pub struct Fleet {
    settings: FleetSettings,
    /// Where other gateways pull from this one (`[fleet] url`, else the public URL).
    url: String,
    members: RwLock<Membership>,
    /// The registry's kind of Redis connection (single server, Sentinel or Cluster).
    conn: crate::registry::redis::Store,
    keys: Keys,
    /// Gateway-to-gateway pulls this gateway serves now (its announced load).
    serving: Arc<AtomicU64>,
    /// The last heartbeat reached Redis.
    connected: AtomicBool,
}

/// Held by the body of a pull this gateway serves to another gateway: counts it in the load.
pub struct Serving(Arc<AtomicU64>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Fleet {
    /// Builds the fleet membership and starts its heartbeat; does not wait for Redis (until it
    /// answers, this gateway knows no other and pulls from the node).
    pub fn start(
        settings: &FleetSettings,
        public_url: &BaseUrl,
        hubs: &Arc<Hubs>,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let url = settings.url.as_ref().unwrap_or(public_url);
        if url.scheme != "http" {
            return Err(format!(
                "other gateways pull over plain http: set [fleet] url (the public URL is {})",
                url.join("", None)
            ));
        }
        let conn =
            crate::registry::redis::Store::open(&settings.redis).map_err(|e| e.to_string())?;
        let fleet = Arc::new(Self {
            members: RwLock::new(Membership::new(&settings.id, settings.heartbeat_ttl)),
            url: url.join("", None),
            settings: settings.clone(),
            conn,
            keys: Keys::new(&settings.key_prefix),
            serving: Arc::new(AtomicU64::new(0)),
            connected: AtomicBool::new(false),
        });
        tokio::spawn(heartbeat_task(
            fleet.clone(),
            Arc::downgrade(hubs),
            shutdown.clone(),
        ));
        Ok(fleet)
    }

    /// This gateway as a member, with its load now.
    pub fn me(&self) -> Member {
        let s = &self.settings;
        Member {
            id: s.id.clone(),
            url: self.url.clone(),
            region: s.region.clone(),
            tier: s.tier,
            load: self.serving.load(Ordering::Relaxed),
        }
    }

    fn alive(&self) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .alive()
    }

    /// Where this gateway pulls `stream` from now.
    pub fn plan(&self, stream: &str) -> Plan {
        let s = &self.settings;
        choice::plan(
            stream,
            &self.me(),
            &self.alive(),
            s.node_pulls,
            s.balance,
            &s.upstreams,
        )
    }

    /// A live member as a transport node (`fleet:ID`).
    fn gateway_node(&self, id: &str) -> Option<Arc<Node>> {
        let m = self
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)?;
        let url = BaseUrl::parse(&m.url).ok()?;
        Some(Arc::new(Node {
            id: format!("{GATEWAY_PREFIX}{id}"),
            url,
            expires: None,
        }))
    }

    /// Checks a request's fleet pass (see [`signature`]).
    pub fn verify(
        &self,
        headers: &http::HeaderMap,
        path: &str,
    ) -> Result<Option<Pass>, GatewayError> {
        signature::verify(
            &self.settings.secret,
            headers,
            path,
            crate::auth::now_unix(),
        )
    }

    /// Counts a pull this gateway serves to another, until the guard drops.
    pub fn serving(&self) -> Serving {
        self.serving.fetch_add(1, Ordering::Relaxed);
        Serving(self.serving.clone())
    }

    /// The hop a new pull of this gateway's tier carries when made for a request at `hop_in`:
    /// at least one more than the request's, and high enough that the requests a well-built
    /// fleet sends here (from the tiers below) join it rather than start a second pull.
    fn out_hop(&self, hop_in: u8) -> u8 {
        out_hop(self.settings.tier, self.settings.max_depth, hop_in)
    }

    /// The sources a live request for `stream` at `hop_in` may join (an existing pull of the
    /// first found), and the one to start when none runs. `inner` is the route's own source
    /// (the node pull); `public_path` the path other gateways are asked for.
    pub fn sources(
        self: &Arc<Self>,
        stream: &str,
        hop_in: u8,
        inner: NodeSource,
        public_path: &str,
    ) -> (Vec<NodeSource>, NodeSource) {
        let max = self.settings.max_depth;
        let fleet = |out_hop: u8| {
            NodeSource::Fleet(FleetSource {
                fleet: self.clone(),
                inner: Box::new(inner.clone()),
                public_path: public_path.to_string(),
                out_hop,
            })
        };
        // A node pull serves any hop; a gateway pull only requests below its own hop.
        let mut join: Vec<NodeSource> = vec![inner.clone()];
        join.extend((hop_in.saturating_add(1)..=max).rev().map(fleet));
        // A root's pull reads from the node for good (any request may join it); any other
        // gateway's is a fleet pull, even when it reads from the node for now (alone, or the
        // tier below is empty): it moves to a gateway once the fleet names one.
        let root = self.settings.tier <= 1 && self.plan(stream) == Plan::Node;
        let create = if hop_in >= max || root {
            inner
        } else {
            fleet(self.out_hop(hop_in))
        };
        (join, create)
    }

    /// Redirect affinity: a live gateway of the region (not this one) that announced a pull of
    /// `stream`, best-scored first; `None` when there is none or Redis does not answer quickly.
    pub async fn serving_elsewhere(&self, stream: &str) -> Option<Member> {
        let key = self.keys.pulls(&self.settings.region, stream);
        let mut cmd = redis::cmd("HKEYS");
        cmd.arg(&key);
        let fut = self.conn.query::<Vec<String>>(&cmd);
        let ids = match tokio::time::timeout(AFFINITY_TIMEOUT, fut).await {
            Ok(Ok(ids)) => ids,
            _ => return None,
        };
        let me = self.me();
        let alive = self.alive();
        alive
            .into_iter()
            .filter(|m| m.region == me.region && m.id != me.id && m.url != me.url)
            .filter(|m| ids.contains(&m.id))
            .max_by_key(|m| choice::hash(&[stream, &m.id]))
    }

    /// `GET /api/v1/fleet`.
    pub fn status(&self, hubs: &Hubs) -> Value {
        let views = self
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .views();
        let pulls: Vec<Value> = hubs
            .pulls(None)
            .into_iter()
            .map(|p| {
                let upstream = upstream_name(&p.node);
                json!({
                    "stream": p.stream,
                    "upstream_path": p.upstream_path,
                    "upstream": upstream,
                    "phase": p.phase,
                    "viewers": p.viewers,
                    "plan": match self.plan(&p.stream) {
                        Plan::Node => vec!["node".to_string()],
                        Plan::Gateways(g) => g.into_iter().map(|g| format!("gw:{g}")).collect(),
                    },
                })
            })
            .collect();
        let me = self.me();
        json!({
            "id": me.id,
            "url": me.url,
            "region": me.region,
            "tier": me.tier,
            "node_pulls": self.settings.node_pulls,
            "max_depth": self.settings.max_depth,
            "serving": me.load,
            "redis_connected": self.connected.load(Ordering::Relaxed),
            "gateways": views,
            "pulls": pulls,
        })
    }

    /// One heartbeat: writes this gateway's record, reads the region's.
    async fn heartbeat(&self, beat: u64) -> Result<Vec<Record>, String> {
        let s = &self.settings;
        let rec = Record {
            member: self.me(),
            beat,
            at_ms: now_ms(),
        };
        let text = serde_json::to_string(&rec).map_err(|e| e.to_string())?;
        let region = self.keys.region(&s.region);
        let (mut ids,): (Vec<String>,) = bounded(
            self.conn.query_pipe(
                redis::pipe()
                    .cmd("SET")
                    .arg(self.keys.gateway(&s.id))
                    .arg(text)
                    .arg("PX")
                    .arg(s.heartbeat_ttl.as_millis() as u64)
                    .ignore()
                    .sadd(&region, &s.id)
                    .ignore()
                    .smembers(&region),
            ),
        )
        .await?;
        ids = bounded_ids(ids, s.max_gateways);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|i| self.keys.gateway(i)).collect();
        let values: Vec<Option<String>> =
            bounded(self.conn.query(redis::cmd("MGET").arg(&keys))).await?;
        let mut out = Vec::with_capacity(values.len());
        let mut gone = Vec::new();
        for (id, v) in ids.iter().zip(values) {
            match v.and_then(|t| serde_json::from_str::<Record>(&t).ok()) {
                Some(r) if r.member.id == *id && r.member.region == s.region => out.push(r),
                _ => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            bounded(
                self.conn
                    .query::<()>(redis::cmd("SREM").arg(&region).arg(&gone)),
            )
            .await?;
        }
        Ok(out)
    }

    /// Writes what changed in this gateway's pulls since `announced` (and everything again when
    /// `full`): `P:pulls:REGION:STREAM` field ID = upstream.
    async fn announce(
        &self,
        now: HashMap<String, String>,
        announced: &mut HashMap<String, String>,
        full: bool,
    ) -> Result<(), String> {
        let s = &self.settings;
        let mut p = redis::pipe();
        let mut any = false;
        for (stream, up) in &now {
            if full || announced.get(stream) != Some(up) {
                let key = self.keys.pulls(&s.region, stream);
                p.hset(&key, &s.id, up)
                    .ignore()
                    .pexpire(&key, ANNOUNCE_TTL.as_millis() as i64)
                    .ignore();
                any = true;
            }
        }
        for stream in announced.keys().filter(|k| !now.contains_key(*k)) {
            p.hdel(self.keys.pulls(&s.region, stream), &s.id).ignore();
            any = true;
        }
        if any {
            bounded(self.conn.query_pipe::<()>(&p)).await?;
        }
        *announced = now;
        Ok(())
    }

    /// Leaves the fleet at shutdown: others stop choosing this gateway at once.
    async fn leave(&self, announced: &HashMap<String, String>) {
        let s = &self.settings;
        let mut p = redis::pipe();
        p.del(self.keys.gateway(&s.id))
            .ignore()
            .srem(self.keys.region(&s.region), &s.id)
            .ignore();
        for stream in announced.keys() {
            p.hdel(self.keys.pulls(&s.region, stream), &s.id).ignore();
        }
        let _ = bounded(self.conn.query_pipe::<()>(&p)).await;
    }
}

/// At most `max` of the region's ids, the same ones on every gateway (the first in order), so
/// gateways past the bound are ignored alike everywhere rather than seen by some only.
fn bounded_ids(mut ids: Vec<String>, max: usize) -> Vec<String> {
    ids.sort();
    ids.dedup();
    ids.truncate(max);
    ids
}

/// The outgoing hop of a new pull at a tier-`tier` gateway for a request at `hop_in` (below
/// `max_depth`): `max_depth + 1 - tier` (so the requests lower tiers send join the pull), and
/// always above `hop_in` (so hops grow along every chain).
fn out_hop(tier: u8, max_depth: u8, hop_in: u8) -> u8 {
    let base = (max_depth + 1).saturating_sub(tier).clamp(1, max_depth);
    base.max(hop_in.saturating_add(1))
}

/// A pull's `core.source()` as the fleet lists it: `gw:ID` or `node:ID`.
fn upstream_name(source: &str) -> String {
    match source.strip_prefix(GATEWAY_PREFIX) {
        Some(id) => format!("gw:{id}"),
        None if source.is_empty() => String::new(),
        None => format!("node:{source}"),
    }
}

/// The heartbeat: every `heartbeat_interval`, renew this gateway's record, read the region's,
/// and announce the pulls that changed.
async fn heartbeat_task(fleet: Arc<Fleet>, hubs: Weak<Hubs>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(fleet.settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = 0u64;
    let mut announced: HashMap<String, String> = HashMap::new();
    let mut refreshed = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                fleet.leave(&announced).await;
                return;
            }
            _ = tick.tick() => {}
        }
        beat += 1;
        match fleet.heartbeat(beat).await {
            Ok(records) => {
                fleet
                    .members
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(records);
                if !fleet.connected.swap(true, Ordering::Relaxed) {
                    tracing::info!(id = %fleet.settings.id, "fleet: heartbeat reaches Redis");
                }
            }
            Err(e) => {
                fleet
                    .members
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .failed();
                if fleet.connected.swap(false, Ordering::Relaxed) || beat == 1 {
                    tracing::warn!(error = %e, "fleet: Redis unreachable; other gateways will age out and pulls go to the node");
                }
            }
        }
        let Some(hubs) = hubs.upgrade() else { return };
        let pulls: HashMap<String, String> = hubs
            .pulls(None)
            .into_iter()
            .filter(|p| p.phase == "live")
            .map(|p| (p.stream.clone(), upstream_name(&p.node)))
            .collect();
        drop(hubs);
        let full = refreshed.elapsed() >= ANNOUNCE_TTL / 3;
        if full {
            refreshed = Instant::now();
        }
        if let Err(e) = fleet.announce(pulls, &mut announced, full).await {
            tracing::debug!(error = %e, "fleet: announcing pulls failed");
            // Everything again at the next beat.
            announced.clear();
        }
    }
}

/// A live pull through the fleet: chooses its upstream gateway at every (re)connect.
#[derive(Clone)]
pub struct FleetSource {
    fleet: Arc<Fleet>,
    /// The route's own source: the nodes, tried after the gateways (and alone when this
    /// gateway is a root).
    inner: Box<NodeSource>,
    /// The viewer-facing path other gateways serve the stream at.
    public_path: String,
    /// The hop this pull's requests carry (fixed for the hub's life).
    pub out_hop: u8,
}

impl FleetSource {
    /// The hub key part: requests join only a pull whose hop is above theirs.
    pub fn key(&self) -> String {
        format!("fleet/{}\n{}", self.out_hop, self.inner.key())
    }

    /// Candidates: the planned gateways, then the nodes (when every gateway fails, viewers are
    /// kept by a node pull rather than lost).
    pub fn nodes(&self, stream: &str) -> Result<Vec<Arc<Node>>, GatewayError> {
        let nodes = self.inner.nodes(stream)?;
        match self.fleet.plan(stream) {
            Plan::Node => Ok(nodes),
            Plan::Gateways(ids) => Ok(ids
                .iter()
                .filter_map(|id| self.fleet.gateway_node(id))
                .chain(nodes)
                .collect()),
        }
    }

    /// Whether a pull of `stream` reading from `current` (a transport node id) should move: it
    /// reads from a node while the fleet now names a live gateway, from a gateway while this
    /// gateway became a root, or from a gateway the fleet no longer names. Never for a mere
    /// reordering among the named gateways (bounded load), so pulls do not flap.
    pub fn should_leave(&self, stream: &str, current: &str) -> bool {
        let gw = current.strip_prefix(GATEWAY_PREFIX);
        match (self.fleet.plan(stream), gw) {
            (Plan::Node, gw) => gw.is_some(),
            (Plan::Gateways(ids), None) => {
                ids.iter().any(|id| self.fleet.gateway_node(id).is_some())
            }
            (Plan::Gateways(ids), Some(gw)) => !ids.iter().any(|id| id == gw),
        }
    }

    /// The path and extra headers of a pull from `node`: a gateway is asked for the public
    /// path with the hop and the fleet's pass; a node for the upstream path, as always.
    pub fn request(
        &self,
        node: &Node,
        upstream_path: &str,
    ) -> (String, Vec<(&'static str, HeaderValue)>) {
        if !node.id.starts_with(GATEWAY_PREFIX) {
            return (upstream_path.to_string(), Vec::new());
        }
        let s = &self.fleet.settings;
        let headers = signature::headers(
            &s.secret,
            &s.id,
            crate::auth::now_unix(),
            self.out_hop,
            &self.public_path,
        );
        (self.public_path.clone(), headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_grow_along_every_chain_and_stay_within_the_depth() {
        for max in 1..=8u8 {
            for tier in 1..=8u8 {
                for hop_in in 0..max {
                    let out = out_hop(tier, max, hop_in);
                    assert!(out > hop_in, "tier {tier} max {max} hop {hop_in}");
                    assert!(out <= max, "tier {tier} max {max} hop {hop_in}");
                }
            }
        }
        // Two tiers, depth 3: an edge's pull (hop 2) joins a tier-1 pull made for its own
        // viewers (hop 3), whose requests the roots serve from the node.
        assert_eq!(out_hop(2, 3, 0), 2);
        assert_eq!(out_hop(1, 3, 0), 3);
        assert_eq!(out_hop(1, 3, 2), 3);
    }

    #[test]
    fn the_membership_read_is_bounded_and_the_same_everywhere() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            bounded_ids(ids(&["c", "a", "b", "a"]), 2),
            ids(&["a", "b"]),
            "any order in, the same first two out"
        );
        assert_eq!(bounded_ids(ids(&["b", "a"]), 10), ids(&["a", "b"]));
    }

    #[test]
    fn upstreams_are_named_for_listings() {
        assert_eq!(upstream_name("fleet:t1-a"), "gw:t1-a");
        assert_eq!(upstream_name("origin"), "node:origin");
        assert_eq!(upstream_name(""), "");
    }
}
