//! Node groups (`[[groups]]`): which member of a pool takes a request.
//!
//! A route whose `to` names a group asks [`Group::pick`] for an ordered candidate list: the
//! chosen member first, then the policy's next choices, handed to the transport's
//! [`Transport::send_any`](super::Transport::send_any), which retries down the list under the
//! core's rules (bodiless requests only). Members that are down, cooling down or drained (the
//! transport's [`Health`], the same state single nodes have) are never chosen; when none is
//! left the route answers 503 `node_unavailable`.
//!
//! Policies:
//! - `round_robin`: nginx's smooth weighted round robin: every pick adds each available
//!   member's weight to its running score, takes the highest, and takes the total off it. Over
//!   any run of `W` picks (the weights' sum) each member gets exactly its weight, interleaved.
//! - `least_conn`: the member with the least load per unit of weight; ties go round robin.
//! - `hash`: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018): the
//!   key (the upstream path, or `{stream}`) walks the [`Ring`]; the first available member
//!   whose load is under `ceil(c × (L + 1) × w / W)` takes it, where `L` is the available
//!   members' total load, `w` the member's weight, `W` theirs, `c` the group's `load_factor`.
//!   A key stays on its member (whose cache stays warm) until that member is over the bound;
//!   a hot key then spills to the next member on the ring instead of piling onto one.
//!
//! **Load** is what a member has been given and not finished: the proxied requests in flight
//! (held by an [`InFlight`] guard that lives as long as the response body, so a streamed
//! download counts until it ends or the viewer leaves), plus, for redirect routes, whose
//! requests never pass through the gateway, the member's *recent redirects*: each redirect adds
//! 1 to a score that halves every [`REDIRECT_HALF_LIFE`]. A member that gets `r` redirects a
//! second thus carries a load of about `1.44 × r` — its rate over the last ~1.4 s — which keeps
//! redirected clients of a hot file from all landing on one member.
//!
//! Live routes (`hash` on `{stream}`) use [`Group::preference`]: the ring order alone, with no
//! health or load in it, so the hub's key for a stream never changes and each stream is pulled
//! once; the pull skips members that are down by itself.
//!
//! Every counter is per member (a group holds at most `MAX_MEMBERS`); a reload rebuilds the
//! groups and carries each surviving member's counters over, so requests in flight across a
//! reload are still counted.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde::Serialize;
use tokio::time::Instant;

use super::health::{Health, State};
use super::ring::{self, Ring};
use crate::body::{Body, BoxError};
use crate::config::{GroupSettings, HashKey, NodeSettings, Policy};
use crate::error::GatewayError;
use crate::registry::Node;

/// How fast a member's recent-redirect score fades: it halves every this long.
pub const REDIRECT_HALF_LIFE: Duration = Duration::from_secs(1);

/// What a pick is for: it decides how the member's load grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// The gateway proxies: the load is held by the returned [`InFlight`] guard.
    Proxy,
    /// The client is redirected: the load is a recent-pick score that fades by itself.
    Redirect,
}

/// Every group of one applied config, by id.
#[derive(Default)]
pub struct Groups {
    by_id: HashMap<String, Arc<Group>>,
    /// Ids in the order written (for listings).
    order: Vec<String>,
}

impl Groups {
    /// Builds the groups of `settings` over the configured `nodes`. With `old` (a reload), a
    /// member kept under the same group and node id keeps its counters.
    pub fn build(settings: &[GroupSettings], nodes: &[NodeSettings], old: Option<&Groups>) -> Self {
        let mut by_id = HashMap::new();
        let mut order = Vec::new();
        for g in settings {
            let before = old.and_then(|o| o.get(&g.id));
            let members: Vec<Member> = g
                .members
                .iter()
                .filter_map(|m| {
                    // Config validation makes every member a configured node.
                    let n = nodes.iter().find(|n| n.id == m.node)?;
                    let stats = before
                        .and_then(|b| b.members.iter().find(|o| o.node.id == m.node))
                        .map(|o| o.stats.clone())
                        .unwrap_or_default();
                    Some(Member {
                        node: Arc::new(Node {
                            id: n.id.clone(),
                            url: n.url.clone(),
                            expires: None,
                        }),
                        weight: m.weight.max(1),
                        stats,
                    })
                })
                .collect();
            let ring = matches!(g.policy, Policy::Hash { .. })
                .then(|| Ring::new(members.iter().map(|m| (m.node.id.as_str(), m.weight))));
            let group = Group {
                id: g.id.clone(),
                policy: g.policy,
                rr: Mutex::new(vec![0; members.len()]),
                members,
                ring,
            };
            order.push(g.id.clone());
            by_id.insert(g.id.clone(), Arc::new(group));
        }
        Self { by_id, order }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Group>> {
        self.by_id.get(id)
    }

    /// Every group as `GET /api/v1/groups` lists it.
    pub fn views(&self, health: &Health) -> Vec<GroupView> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .map(|g| g.view(health))
            .collect()
    }
}

/// One group: its members, policy and the policy's state.
pub struct Group {
    id: String,
    policy: Policy,
    members: Vec<Member>,
    /// `hash` groups only.
    ring: Option<Ring>,
    /// Smooth weighted round robin's running score per member (also breaks `least_conn` ties).
    rr: Mutex<Vec<i64>>,
}

struct Member {
    node: Arc<Node>,
    weight: u32,
    stats: Arc<MemberStats>,
}

/// A member's counters (carried across reloads).
#[derive(Default)]
struct MemberStats {
    /// Proxied requests whose answer is still going out.
    in_flight: AtomicU64,
    /// Times chosen first.
    picks: AtomicU64,
    /// The fading score of recent redirects.
    recent: Mutex<Recent>,
}

/// A score that halves every [`REDIRECT_HALF_LIFE`].
#[derive(Default)]
struct Recent {
    score: f64,
    at: Option<Instant>,
}

impl Recent {
    fn at(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(t) => {
                let halves = now.saturating_duration_since(t).as_secs_f64()
                    / REDIRECT_HALF_LIFE.as_secs_f64();
                self.score * 0.5f64.powf(halves)
            }
        }
    }

    fn add(&mut self, now: Instant, n: f64) {
        self.score = self.at(now) + n;
        self.at = Some(now);
    }
}

impl MemberStats {
    fn recent(&self, now: Instant) -> f64 {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .at(now)
    }

    fn load(&self, now: Instant) -> f64 {
        self.in_flight.load(Ordering::Relaxed) as f64 + self.recent(now)
    }
}

/// A group's answer: where to send the request, and what holds the chosen member's load.
pub struct Pick {
    /// The chosen member first, then the policy's next choices; only available members.
    pub nodes: Vec<Arc<Node>>,
    /// Held as long as the proxied response body ([`Use::Proxy`] only).
    pub guard: Option<InFlight>,
}

impl Group {
    /// What a `hash` group hashes for a request to upstream `path` (its `{stream}` capture
    /// being `stream`); `None` for the other policies.
    pub fn key<'a>(&self, path: &'a str, stream: Option<&'a str>) -> Option<&'a str> {
        match self.policy {
            Policy::Hash {
                key: HashKey::Path, ..
            } => Some(path.split('?').next().unwrap_or(path)),
            Policy::Hash {
                key: HashKey::Stream,
                ..
            } => stream.or(Some(path)),
            _ => None,
        }
    }

    /// Chooses a member for one request (`key`: what [`Group::key`] gave) and returns the
    /// candidates, chosen first. Refused with 503 `node_unavailable` when no member is up and
    /// undrained.
    pub fn pick(
        self: &Arc<Self>,
        key: Option<&str>,
        health: &Health,
        purpose: Use,
    ) -> Result<Pick, GatewayError> {
        let avail = health.available(self.members.iter().map(|m| m.node.id.as_str()));
        if !avail.iter().any(|a| *a) {
            return Err(GatewayError::GroupUnavailable(self.id.clone()));
        }
        let now = Instant::now();
        let order = self.order(key, &avail, now);
        let chosen = order[0];
        let stats = &self.members[chosen].stats;
        stats.picks.fetch_add(1, Ordering::Relaxed);
        let guard = match purpose {
            Use::Proxy => {
                stats.in_flight.fetch_add(1, Ordering::Relaxed);
                Some(InFlight {
                    group: self.clone(),
                    member: chosen,
                })
            }
            Use::Redirect => {
                stats
                    .recent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(now, 1.0);
                None
            }
        };
        Ok(Pick {
            nodes: order
                .into_iter()
                .map(|i| self.members[i].node.clone())
                .collect(),
            guard,
        })
    }

    /// The available members (`avail[i]`), chosen first: never empty when one is available.
    fn order(&self, key: Option<&str>, avail: &[bool], now: Instant) -> Vec<usize> {
        let n = self.members.len();
        let up = |i: &usize| avail[*i];
        match (self.policy, &self.ring) {
            (Policy::Hash { load_factor: c, .. }, Some(ring)) => {
                let walk: Vec<usize> = ring
                    .walk(ring::hash(key.unwrap_or("").as_bytes()))
                    .filter(up)
                    .collect();
                let loads: Vec<f64> = self.members.iter().map(|m| m.stats.load(now)).collect();
                let total: f64 = walk.iter().map(|&i| loads[i]).sum();
                let weight: f64 = walk
                    .iter()
                    .map(|&i| f64::from(self.members[i].weight))
                    .sum();
                // Mirrokni's bound, weighted: the capacities add up to at least L + 1, so some
                // member is always under its own.
                let under = |i: usize| {
                    let w = f64::from(self.members[i].weight);
                    loads[i] < (c * (total + 1.0) * w / weight).ceil()
                };
                let chosen = walk.iter().position(|&i| under(i)).unwrap_or_default();
                let mut order = walk;
                let first = order.remove(chosen);
                order.insert(0, first);
                order
            }
            (Policy::LeastConn, _) => {
                let per_weight: Vec<f64> = self
                    .members
                    .iter()
                    .map(|m| m.stats.load(now) / f64::from(m.weight))
                    .collect();
                let least = (0..n)
                    .filter(up)
                    .map(|i| per_weight[i])
                    .fold(f64::INFINITY, f64::min);
                let tied: Vec<bool> = (0..n).map(|i| avail[i] && per_weight[i] <= least).collect();
                let chosen = self.round_robin(&tied);
                let mut rest: Vec<usize> = (0..n).filter(|&i| i != chosen && avail[i]).collect();
                rest.sort_by(|a, b| per_weight[*a].total_cmp(&per_weight[*b]));
                std::iter::once(chosen).chain(rest).collect()
            }
            _ => {
                let chosen = self.round_robin(avail);
                std::iter::once(chosen)
                    .chain((1..n).map(|k| (chosen + k) % n).filter(up))
                    .collect()
            }
        }
    }

    /// Smooth weighted round robin over the members `among` (at least one).
    fn round_robin(&self, among: &[bool]) -> usize {
        let mut cur = self.rr.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, m) in self.members.iter().enumerate() {
            if !among[i] {
                continue;
            }
            let w = i64::from(m.weight);
            cur[i] += w;
            total += w;
            if best.is_none_or(|b| cur[i] > cur[b]) {
                best = Some(i);
            }
        }
        let best = best.unwrap_or_default();
        if let Some(c) = cur.get_mut(best) {
            *c -= total;
        }
        best
    }

    /// A live stream's members in ring order for `key` (every member, no health, no load): the
    /// same list for a stream whatever happens, so its hub key never changes.
    pub fn preference(&self, key: &str) -> Vec<Arc<Node>> {
        match &self.ring {
            Some(ring) => ring
                .walk(ring::hash(key.as_bytes()))
                .map(|i| self.members[i].node.clone())
                .collect(),
            None => self.members.iter().map(|m| m.node.clone()).collect(),
        }
    }

    fn view(&self, health: &Health) -> GroupView {
        let now = Instant::now();
        let (key, load_factor) = match self.policy {
            Policy::Hash { key, load_factor } => (
                Some(match key {
                    HashKey::Path => "path",
                    HashKey::Stream => "{stream}",
                }),
                Some(load_factor),
            ),
            _ => (None, None),
        };
        GroupView {
            id: self.id.clone(),
            policy: self.policy.name(),
            key,
            load_factor,
            members: self
                .members
                .iter()
                .map(|m| {
                    let h = health.snapshot(&m.node.id);
                    MemberView {
                        node: m.node.id.clone(),
                        weight: m.weight,
                        state: h.state,
                        draining: h.draining,
                        in_flight: m.stats.in_flight.load(Ordering::Relaxed),
                        picks: m.stats.picks.load(Ordering::Relaxed),
                        recent_redirects: (m.stats.recent(now) * 100.0).round() / 100.0,
                    }
                })
                .collect(),
        }
    }
}

/// A group as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub id: String,
    pub policy: &'static str,
    /// `hash` groups: `path` or `{stream}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_factor: Option<f64>,
    pub members: Vec<MemberView>,
}

/// One member as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub node: String,
    pub weight: u32,
    /// The node's health (`up`, `cooling_down`, `down`).
    pub state: State,
    pub draining: bool,
    /// Proxied requests whose answer is still going out.
    pub in_flight: u64,
    /// Times chosen (first) since the member joined the group.
    pub picks: u64,
    /// The fading recent-redirect score (see the module docs).
    pub recent_redirects: f64,
}

/// The groups `/metrics` reports: those of the config applied now (the gateway sets them at
/// start and after each reload). Series: one per member, so bounded by the config.
#[derive(Debug, Default)]
pub struct GroupMetrics {
    current: std::sync::RwLock<Arc<Groups>>,
}

impl GroupMetrics {
    /// The groups of the config requests are now served with.
    pub fn set(&self, groups: Arc<Groups>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = groups;
    }
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("ids", &self.order)
            .finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for GroupMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let groups = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if groups.order.is_empty() {
            return Ok(());
        }
        let members = || {
            groups
                .order
                .iter()
                .filter_map(|id| groups.by_id.get(id))
                .flat_map(|g| g.members.iter().map(move |m| (g.id.as_str(), m)))
        };
        let mut m = enc.encode_descriptor(
            "group_member_in_flight",
            "Proxied requests a node group's member is answering right now (their bodies \
             still going out), by group and node.",
            None,
            MetricType::Gauge,
        )?;
        for (g, member) in members() {
            m.encode_family(&[("group", g), ("node", member.node.id.as_str())])?
                .encode_gauge(&member.stats.in_flight.load(Ordering::Relaxed))?;
        }
        let mut m = enc.encode_descriptor(
            "group_member_picks",
            "Times a node group's policy chose the member first, by group and node (kept \
             across reloads while the member stays in the group).",
            None,
            MetricType::Counter,
        )?;
        for (g, member) in members() {
            m.encode_family(&[("group", g), ("node", member.node.id.as_str())])?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                    &member.stats.picks.load(Ordering::Relaxed),
                    None,
                )?;
        }
        Ok(())
    }
}

/// One proxied request's share of a member's load, given back when dropped.
pub struct InFlight {
    group: Arc<Group>,
    member: usize,
}

impl InFlight {
    /// The request was answered by `node` (a retry may have moved it off the chosen member):
    /// the load moves with it.
    pub fn answered_by(&mut self, node: &str) {
        if self.group.members[self.member].node.id == node {
            return;
        }
        if let Some(j) = self.group.members.iter().position(|m| m.node.id == node) {
            self.group.members[j]
                .stats
                .in_flight
                .fetch_add(1, Ordering::Relaxed);
            self.group.members[self.member]
                .stats
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
            self.member = j;
        }
    }

    /// Holds this guard for as long as `body` is sent (see [`GuardedBody`]).
    pub fn hold(self, body: Body) -> Body {
        http_body_util::BodyExt::boxed(GuardedBody {
            inner: body,
            guard: Some(self),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.group.members[self.member]
            .stats
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that gives its request's [`InFlight`] back as soon as its last frame is
/// handed over (before the viewer has read it: the next request then sees the load gone), or
/// when it is dropped (the viewer left, or the body failed).
struct GuardedBody {
    inner: Body,
    guard: Option<InFlight>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.guard = None,
            Poll::Ready(None | Some(Err(_))) => this.guard = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemberSettings;
    use crate::upstream_path::BaseUrl;

    fn nodes(n: usize) -> Vec<NodeSettings> {
        (0..n)
            .map(|i| NodeSettings {
                id: format!("n{i}"),
                url: BaseUrl::parse(&format!("http://127.0.0.1:{}", 9000 + i)).expect("url"),
                streams: Vec::new(),
                health: None,
            })
            .collect()
    }

    fn group(weights: &[u32], policy: Policy) -> (Arc<Group>, Vec<NodeSettings>) {
        let ns = nodes(weights.len());
        let s = GroupSettings {
            id: "g".into(),
            members: weights
                .iter()
                .enumerate()
                .map(|(i, w)| MemberSettings {
                    node: format!("n{i}"),
                    weight: *w,
                })
                .collect(),
            policy,
        };
        let groups = Groups::build(&[s], &ns, None);
        (groups.get("g").expect("group").clone(), ns)
    }

    fn hash(c: f64) -> Policy {
        Policy::Hash {
            key: HashKey::Path,
            load_factor: c,
        }
    }

    fn health() -> Health {
        Health::new(1, Duration::from_secs(10))
    }

    fn first(p: &Pick) -> &str {
        &p.nodes[0].id
    }

    fn count(g: &Arc<Group>, h: &Health, n: usize, key: impl Fn(usize) -> String) -> Vec<usize> {
        let mut c = vec![0; g.members.len()];
        for i in 0..n {
            let k = key(i);
            let p = g.pick(Some(&k), h, Use::Proxy).expect("pick");
            c[p.nodes[0].id[1..].parse::<usize>().expect("index")] += 1;
        }
        c
    }

    #[tokio::test]
    async fn smooth_weighted_round_robin_interleaves_by_weight() {
        let h = health();
        let (g, _) = group(&[1, 1, 1], Policy::RoundRobin);
        assert_eq!(count(&g, &h, 3000, |_| String::new()), [1000, 1000, 1000]);
        let (g, _) = group(&[5, 1, 1], Policy::RoundRobin);
        // nginx's example: a a b a c a a, never five a's in a row.
        let seq: Vec<String> = (0..7)
            .map(|_| first(&g.pick(None, &h, Use::Proxy).expect("pick")).to_string())
            .collect();
        assert_eq!(seq, ["n0", "n0", "n1", "n0", "n2", "n0", "n0"]);
        let (g, _) = group(&[1, 2, 3], Policy::RoundRobin);
        assert_eq!(count(&g, &h, 3000, |_| String::new()), [500, 1000, 1500]);
    }

    #[tokio::test]
    async fn failed_and_drained_members_are_skipped_and_none_left_is_503() {
        let h = health();
        let (g, _) = group(&[1, 1, 1], Policy::RoundRobin);
        h.record_failure("n1", "refused");
        h.set_drained("n2", true).expect("drain");
        for _ in 0..10 {
            let p = g.pick(None, &h, Use::Proxy).expect("pick");
            assert_eq!(first(&p), "n0");
            assert_eq!(p.nodes.len(), 1, "only available members are candidates");
        }
        h.record_failure("n0", "refused");
        let e = g.pick(None, &h, Use::Proxy).err().expect("all down");
        assert_eq!(e.status_and_code().1, "node_unavailable");
        assert_eq!(e.status_and_code().0, 503);
    }

    #[tokio::test]
    async fn least_conn_prefers_fewer_in_flight_per_weight() {
        let h = health();
        let (g, _) = group(&[1, 1, 2], Policy::LeastConn);
        let a = g.pick(None, &h, Use::Proxy).expect("pick");
        let b = g.pick(None, &h, Use::Proxy).expect("pick");
        let c = g.pick(None, &h, Use::Proxy).expect("pick");
        let d = g.pick(None, &h, Use::Proxy).expect("pick");
        // n2 has twice the weight: it takes two while n0 and n1 take one each.
        let mut firsts: Vec<&str> = [&a, &b, &c, &d].iter().map(|p| first(p)).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, ["n0", "n1", "n2", "n2"]);
        // Free n0: the next goes there, and its candidates follow by load.
        let freed = if first(&a) == "n0" {
            a
        } else if first(&b) == "n0" {
            b
        } else if first(&c) == "n0" {
            c
        } else {
            d
        };
        drop(freed);
        let e = g.pick(None, &h, Use::Proxy).expect("pick");
        assert_eq!(first(&e), "n0");
        assert_eq!(e.nodes.len(), 3);
    }

    #[tokio::test]
    async fn hash_keeps_a_key_on_one_member() {
        let h = health();
        let (g, _) = group(&[1, 1, 1], hash(1.25));
        for i in 0..300 {
            let k = format!("/f/{i}");
            let want = first(&g.pick(Some(&k), &h, Use::Proxy).expect("pick")).to_string();
            for _ in 0..5 {
                let p = g.pick(Some(&k), &h, Use::Proxy).expect("pick");
                assert_eq!(first(&p), want, "guards dropped: no load, no spill");
                assert_eq!(p.nodes.len(), 3);
            }
        }
    }

    #[tokio::test]
    async fn removing_a_member_moves_its_keys_only() {
        let h = health();
        let (three, ns) = group(&[1, 1, 1], hash(1.25));
        let two = Groups::build(
            &[GroupSettings {
                id: "g".into(),
                members: ["n0", "n2"]
                    .iter()
                    .map(|n| MemberSettings {
                        node: n.to_string(),
                        weight: 1,
                    })
                    .collect(),
                policy: hash(1.25),
            }],
            &ns,
            None,
        );
        let two = two.get("g").expect("g");
        let mut moved = 0;
        for i in 0..3000 {
            let k = format!("/files/{i}.mp4");
            let before = first(&three.pick(Some(&k), &h, Use::Proxy).expect("pick")).to_string();
            let after = first(&two.pick(Some(&k), &h, Use::Proxy).expect("pick")).to_string();
            if before == "n1" {
                moved += 1;
            } else {
                assert_eq!(before, after);
            }
        }
        assert!((800..=1200).contains(&moved), "{moved}");
    }

    #[tokio::test]
    async fn a_hot_key_spills_once_its_member_is_over_the_bound() {
        let h = health();
        let (g, _) = group(&[1, 1, 1], hash(1.25));
        let key = Some("/hot.mp4");
        let owner = first(&g.pick(key, &h, Use::Proxy).expect("pick")).to_string();
        // Hold requests for the hot key: with L in flight, the owner takes the key while its
        // load is under ceil(1.25 × (L + 1) / 3).
        let mut held = Vec::new();
        let mut spilled = None;
        for l in 0..30 {
            let p = g.pick(key, &h, Use::Proxy).expect("pick");
            let bound = (1.25 * (f64::from(l) + 1.0) / 3.0).ceil() as usize;
            let owner_load = held.iter().filter(|q: &&Pick| first(q) == owner).count();
            if owner_load < bound {
                assert_eq!(first(&p), owner, "under the bound at L={l}");
            } else {
                assert_ne!(first(&p), owner, "over the bound at L={l}");
                spilled.get_or_insert(l);
            }
            held.push(p);
        }
        assert!(spilled.is_some());
        // The spill never overloads anyone: every member stays within its bound.
        let total = held.len() as f64;
        for m in &g.members {
            let load = m.stats.in_flight.load(Ordering::Relaxed) as f64;
            assert!(load <= (1.25 * total / 3.0).ceil(), "{load} of {total}");
        }
        drop(held);
        for m in &g.members {
            assert_eq!(m.stats.in_flight.load(Ordering::Relaxed), 0);
        }
        // Load gone: the key is back on its owner.
        assert_eq!(first(&g.pick(key, &h, Use::Proxy).expect("pick")), owner);
    }

    #[tokio::test(start_paused = true)]
    async fn redirect_load_is_a_fading_count_of_recent_picks() {
        let h = health();
        let (g, _) = group(&[1, 1, 1], hash(1.25));
        let key = Some("/hot.mp4");
        let owner = first(&g.pick(key, &h, Use::Redirect).expect("pick")).to_string();
        // 1 recent on the owner: L=1, bound ceil(1.25 × 2 / 3) = 1: the next redirect spills.
        let p = g.pick(key, &h, Use::Redirect).expect("pick");
        assert!(p.guard.is_none());
        assert_ne!(first(&p), owner);
        // Scores halve every second: after a long pause, the owner takes its key again.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(first(&g.pick(key, &h, Use::Redirect).expect("pick")), owner);
        let view = g.view(&h);
        let total: u64 = view.members.iter().map(|m| m.picks).sum();
        assert_eq!(total, 3);
        assert!(view.members.iter().all(|m| m.in_flight == 0));
        let mut rec = Recent::default();
        rec.add(Instant::now(), 4.0);
        tokio::time::sleep(REDIRECT_HALF_LIFE).await;
        assert!((rec.at(Instant::now()) - 2.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn the_load_follows_the_member_that_answered_and_survives_a_reload() {
        let h = health();
        let (g, ns) = group(&[1, 1], Policy::RoundRobin);
        let mut p = g.pick(None, &h, Use::Proxy).expect("pick");
        assert_eq!(first(&p), "n0");
        let mut guard = p.guard.take().expect("guard");
        guard.answered_by("n1");
        assert_eq!(g.members[0].stats.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(g.members[1].stats.in_flight.load(Ordering::Relaxed), 1);
        let old = Groups {
            by_id: [("g".to_string(), g.clone())].into(),
            order: vec!["g".into()],
        };
        let settings = [GroupSettings {
            id: "g".into(),
            members: vec![MemberSettings {
                node: "n1".into(),
                weight: 3,
            }],
            policy: Policy::LeastConn,
        }];
        let new = Groups::build(&settings, &ns, Some(&old));
        let v = new.views(&h);
        assert_eq!(v[0].members[0].in_flight, 1, "counted across the reload");
        assert_eq!(v[0].members[0].weight, 3);
        assert_eq!(v[0].policy, "least_conn");
        drop(guard);
        assert_eq!(new.views(&h)[0].members[0].in_flight, 0);
    }

    #[tokio::test]
    async fn live_preference_is_the_ring_order_whatever_the_health() {
        let h = health();
        let (g, _) = group(
            &[1, 1, 1],
            Policy::Hash {
                key: HashKey::Stream,
                load_factor: 1.25,
            },
        );
        let before = g.preference("cam1");
        h.record_failure(&before[0].id, "refused");
        let after = g.preference("cam1");
        let ids = |v: &[Arc<Node>]| v.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&before), ids(&after));
        assert_eq!(before.len(), 3);
        assert_eq!(g.key("/live/cam1.flv", Some("cam1")), Some("cam1"));
    }

    #[tokio::test]
    async fn the_guard_goes_with_the_last_frame() {
        use http_body_util::BodyExt;
        let h = health();
        let (g, _) = group(&[1], Policy::RoundRobin);
        let p = g.pick(None, &h, Use::Proxy).expect("pick");
        let body = p.guard.expect("guard").hold(crate::body::full("abc"));
        assert_eq!(g.members[0].stats.in_flight.load(Ordering::Relaxed), 1);
        let mut body = std::pin::pin!(body);
        let f = body.frame().await.expect("frame").expect("ok");
        assert_eq!(f.into_data().expect("data"), "abc");
        assert_eq!(g.members[0].stats.in_flight.load(Ordering::Relaxed), 0);
    }
}
