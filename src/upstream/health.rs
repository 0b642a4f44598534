//! Node health, kept by this gateway alone (not shared through Redis): passive, like nginx's
//! `max_fails` / `fail_timeout` (a node that failed `max_fails` times in a row is skipped for
//! `fail_timeout`), and active where `[[nodes]] health` names a path to `GET` every
//! `health_interval` (non-2xx or no answer: down until a check passes).
//!
//! A failure is the node not answering: a connect error or timeout, a header timeout, a
//! connection closed before the headers. A 4xx/5xx answer is an answer and counts as success.
//! After its cooldown a node is tried again; one more failure starts a new cooldown at once
//! (its count is still at `max_fails`), one success clears it.
//!
//! The map is bounded: a node has an entry only while it has failures on record, an active
//! check or a drain mark (a success removes a passive-only entry), so it holds about one entry
//! per failing, checked or draining node, and never more than [`MAX_TRACKED`] (the registry's
//! own node limit): past it, an entry without an active check or drain mark is evicted, one not
//! cooling down first. A node removed from the registry keeps its entry until it is evicted or
//! succeeds again under the same id.
//!
//! **Drain** is an operator's mark (`POST /api/v1/nodes/{id}/drain`), kept here because it
//! steers the same choice: a draining node is *left out* of [`Health::order`] (no new viewer,
//! proxied request, redirect or pull goes to it), while [`Health::order_for_reconnect`] keeps it
//! last so a pull already running on it can still reconnect there when no other node can serve.
//! Pulls watch [`Health::drain_changes`] to move off a node drained under them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::registry::Node;

/// Most nodes tracked at once; equal to the registry's default node limit.
pub const MAX_TRACKED: usize = crate::registry::memory::DEFAULT_MAX_NODES;

/// Longest `last_error` kept per node (an error chain can be long; the API shows it).
const MAX_ERROR_LEN: usize = 256;

/// What the gateway thinks of a node right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Tried in preference order.
    Up,
    /// Failed `max_fails` times in a row; tried only after the others until `fail_timeout`.
    CoolingDown,
    /// Its active health check fails; tried only after the others until a check passes.
    Down,
}

/// A node's health as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub state: State,
    pub consecutive_fails: u32,
    pub last_error: Option<String>,
    /// The node has an active health check.
    pub checked: bool,
    /// An operator drained the node: nothing new is sent to it.
    pub draining: bool,
}

#[derive(Debug, Default)]
struct Entry {
    /// Failures since the last success.
    consecutive_fails: u32,
    /// Skipped until then (passive health).
    cooling_until: Option<Instant>,
    last_error: Option<String>,
    /// The node has an active check; its entry is never evicted.
    checked: bool,
    /// The last active check failed.
    check_down: bool,
    /// Drained by an operator: left out of [`Health::order`]; never evicted.
    drained: bool,
}

impl Entry {
    fn state(&self, now: Instant) -> State {
        if self.check_down {
            State::Down
        } else if self.cooling_until.is_some_and(|t| now < t) {
            State::CoolingDown
        } else {
            State::Up
        }
    }

    /// Nothing worth remembering: an entry like this is dropped.
    fn is_clean(&self) -> bool {
        !self.checked && !self.drained && self.consecutive_fails == 0
    }
}

/// The health of every node this gateway talks to.
#[derive(Debug)]
pub struct Health {
    /// 0: passive health is off.
    max_fails: u32,
    fail_timeout: Duration,
    /// By node id; see the module docs for the bound.
    map: Mutex<HashMap<String, Entry>>,
    /// How many entries are drained, so the single-candidate path can skip the lock.
    drained: AtomicUsize,
    /// Bumped on every drain or undrain; running pulls watch it.
    drain_gen: watch::Sender<u64>,
}

impl Health {
    pub fn new(max_fails: u32, fail_timeout: Duration) -> Self {
        Self {
            max_fails,
            fail_timeout,
            map: Mutex::new(HashMap::new()),
            drained: AtomicUsize::new(0),
            drain_gen: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `id`, made if there is room (evicting one without failures or check).
    fn entry<'a>(map: &'a mut HashMap<String, Entry>, id: &str) -> Option<&'a mut Entry> {
        if !map.contains_key(id) {
            if map.len() >= MAX_TRACKED {
                let victim = map
                    .iter()
                    .filter(|(_, e)| !e.checked && !e.drained)
                    .min_by_key(|(_, e)| e.cooling_until)
                    .map(|(k, _)| k.clone())?;
                map.remove(&victim);
            }
            map.insert(id.to_string(), Entry::default());
        }
        map.get_mut(id)
    }

    /// The node failed to answer.
    pub fn record_failure(&self, id: &str, error: &str) {
        if self.max_fails == 0 {
            return;
        }
        let now = Instant::now();
        let mut map = self.lock();
        let Some(e) = Self::entry(&mut map, id) else {
            return;
        };
        e.consecutive_fails = e.consecutive_fails.saturating_add(1);
        e.last_error = Some(truncate(error));
        if e.consecutive_fails >= self.max_fails {
            if e.state(now) == State::Up {
                tracing::warn!(node = id, fails = e.consecutive_fails, cooldown = ?self.fail_timeout, error, "node skipped after repeated failures");
            }
            e.cooling_until = Some(now + self.fail_timeout);
        }
    }

    /// The node answered (any status).
    pub fn record_success(&self, id: &str) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(id) {
            e.consecutive_fails = 0;
            e.cooling_until = None;
            if e.is_clean() {
                map.remove(id);
            }
        }
    }

    /// Registers an active check for `id` (state `Up` until a check says otherwise).
    pub fn add_checked(&self, id: &str) {
        if let Some(e) = Self::entry(&mut self.lock(), id) {
            e.checked = true;
        }
    }

    /// The outcome of an active check: `Err(why)` marks the node down.
    pub fn record_check(&self, id: &str, outcome: Result<(), String>) {
        let mut map = self.lock();
        let Some(e) = Self::entry(&mut map, id) else {
            return;
        };
        e.checked = true;
        match outcome {
            Ok(()) => {
                if e.check_down {
                    tracing::info!(node = id, "health check passes again");
                }
                e.check_down = false;
            }
            Err(why) => {
                if !e.check_down {
                    tracing::warn!(node = id, error = %why, "health check failed: node down");
                }
                e.check_down = true;
                e.last_error = Some(truncate(&why));
            }
        }
    }

    /// The node's state now.
    pub fn state(&self, id: &str) -> State {
        let now = Instant::now();
        self.lock().get(id).map_or(State::Up, |e| e.state(now))
    }

    /// The node's health for listings.
    pub fn snapshot(&self, id: &str) -> Snapshot {
        let now = Instant::now();
        match self.lock().get(id) {
            None => Snapshot {
                state: State::Up,
                consecutive_fails: 0,
                last_error: None,
                checked: false,
                draining: false,
            },
            Some(e) => Snapshot {
                state: e.state(now),
                consecutive_fails: e.consecutive_fails,
                last_error: e.last_error.clone(),
                checked: e.checked,
                draining: e.drained,
            },
        }
    }

    /// `nodes` with the ones that are up first, each group in its given order; draining nodes
    /// left out. Nodes cooling down or down are kept at the end rather than dropped: if every
    /// candidate is unhealthy, they are tried anyway rather than failing the viewer. Empty only
    /// if every candidate is draining.
    pub fn order(&self, nodes: &[Arc<Node>]) -> Vec<Arc<Node>> {
        self.order_with(nodes, false)
    }

    /// [`Health::order`] for a pull that is already running: draining nodes come last instead
    /// of not at all, so the pull can fall back on the node it was on when nothing else serves.
    pub fn order_for_reconnect(&self, nodes: &[Arc<Node>]) -> Vec<Arc<Node>> {
        self.order_with(nodes, true)
    }

    fn order_with(&self, nodes: &[Arc<Node>], keep_drained: bool) -> Vec<Arc<Node>> {
        let now = Instant::now();
        let map = self.lock();
        if map.is_empty() {
            return nodes.to_vec();
        }
        let mut up = Vec::with_capacity(nodes.len());
        let mut unhealthy = Vec::new();
        let mut drained = Vec::new();
        for n in nodes {
            match map.get(&n.id) {
                Some(e) if e.drained => drained.push(n.clone()),
                Some(e) if e.state(now) != State::Up => unhealthy.push(n.clone()),
                _ => up.push(n.clone()),
            }
        }
        up.extend(unhealthy);
        if keep_drained {
            up.extend(drained);
        }
        up
    }

    /// For each of `ids`: whether it takes new work now (up, not drained). One look under the
    /// lock for a node group's members (`balance`).
    pub fn available<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        let now = Instant::now();
        let map = self.lock();
        ids.into_iter()
            .map(|id| {
                map.get(id)
                    .is_none_or(|e| !e.drained && e.state(now) == State::Up)
            })
            .collect()
    }

    /// Whether any node is drained (a cheap look, without the lock).
    pub fn any_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed) > 0
    }

    /// Whether `id` is drained.
    pub fn is_drained(&self, id: &str) -> bool {
        self.any_drained() && self.lock().get(id).is_some_and(|e| e.drained)
    }

    /// Marks `id` drained (`true`) or not. Returns whether the mark changed. Only fails to
    /// drain when the map is full of nodes that cannot be evicted (checked or drained).
    pub fn set_drained(&self, id: &str, drained: bool) -> Result<bool, &'static str> {
        let mut map = self.lock();
        let changed = if drained {
            let Some(e) = Self::entry(&mut map, id) else {
                return Err("too many nodes tracked to drain another");
            };
            !std::mem::replace(&mut e.drained, true)
        } else {
            match map.get_mut(id) {
                Some(e) if e.drained => {
                    e.drained = false;
                    if e.is_clean() {
                        map.remove(id);
                    }
                    true
                }
                _ => false,
            }
        };
        if changed {
            if drained {
                self.drained.fetch_add(1, Ordering::Relaxed);
            } else {
                self.drained.fetch_sub(1, Ordering::Relaxed);
            }
            drop(map);
            self.drain_gen.send_modify(|g| *g += 1);
        }
        Ok(changed)
    }

    /// Changes whenever a node is drained or undrained.
    pub fn drain_changes(&self) -> watch::Receiver<u64> {
        self.drain_gen.subscribe()
    }

    /// Entries held (for tests of the bound).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ERROR_LEN {
        return s.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream_path::BaseUrl;

    fn node(id: &str) -> Arc<Node> {
        Arc::new(Node {
            id: id.into(),
            url: BaseUrl::parse("http://127.0.0.1:1").expect("url"),
            expires: None,
        })
    }

    fn ids(v: &[Arc<Node>]) -> Vec<&str> {
        v.iter().map(|n| n.id.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn max_fails_then_cooldown_then_retry() {
        let h = Health::new(3, Duration::from_secs(10));
        let nodes = [node("a"), node("b")];
        h.record_failure("a", "connect timed out");
        h.record_failure("a", "connect timed out");
        assert_eq!(h.state("a"), State::Up, "two of three");
        assert_eq!(ids(&h.order(&nodes)), ["a", "b"]);
        h.record_failure("a", "connect timed out");
        assert_eq!(h.state("a"), State::CoolingDown);
        assert_eq!(ids(&h.order(&nodes)), ["b", "a"], "skipped, kept last");
        let s = h.snapshot("a");
        assert_eq!(s.consecutive_fails, 3);
        assert_eq!(s.last_error.as_deref(), Some("connect timed out"));
        assert!(!s.checked);

        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(h.state("a"), State::CoolingDown);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(h.state("a"), State::Up, "cooldown over: tried again");
        // One more failure after the cooldown starts a new one at once.
        h.record_failure("a", "header timeout");
        assert_eq!(h.state("a"), State::CoolingDown);
        tokio::time::advance(Duration::from_secs(11)).await;
        h.record_success("a");
        assert_eq!(h.state("a"), State::Up);
        assert_eq!(
            h.tracked(),
            0,
            "a healthy node without a check leaves no entry"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_count() {
        let h = Health::new(2, Duration::from_secs(10));
        h.record_failure("a", "x");
        h.record_success("a");
        h.record_failure("a", "x");
        assert_eq!(h.state("a"), State::Up, "not two in a row");
    }

    #[tokio::test(start_paused = true)]
    async fn all_unhealthy_are_still_candidates() {
        let h = Health::new(1, Duration::from_secs(10));
        let nodes = [node("a"), node("b")];
        h.record_failure("a", "x");
        h.record_failure("b", "x");
        assert_eq!(ids(&h.order(&nodes)), ["a", "b"]);
    }

    #[test]
    fn max_fails_zero_is_off() {
        let h = Health::new(0, Duration::from_secs(10));
        for _ in 0..10 {
            h.record_failure("a", "x");
        }
        assert_eq!(h.state("a"), State::Up);
        assert_eq!(h.tracked(), 0);
    }

    #[test]
    fn active_checks() {
        let h = Health::new(3, Duration::from_secs(10));
        h.add_checked("a");
        assert_eq!(h.snapshot("a").state, State::Up);
        assert!(h.snapshot("a").checked);
        h.record_check("a", Err("answered 503".into()));
        assert_eq!(h.state("a"), State::Down);
        let nodes = [node("a"), node("b")];
        assert_eq!(ids(&h.order(&nodes)), ["b", "a"]);
        h.record_success("a"); // a proxied answer does not override the check
        assert_eq!(h.state("a"), State::Down);
        h.record_check("a", Ok(()));
        assert_eq!(h.state("a"), State::Up);
        assert_eq!(h.tracked(), 1, "a checked node keeps its entry");
    }

    #[test]
    fn drained_nodes_get_nothing_new_but_a_running_pull_may_fall_back() {
        let h = Health::new(1, Duration::from_secs(10));
        let nodes = [node("a"), node("b"), node("c")];
        let mut changes = h.drain_changes();
        assert!(!h.any_drained());
        assert_eq!(h.set_drained("a", true), Ok(true));
        assert_eq!(h.set_drained("a", true), Ok(false), "idempotent");
        assert!(changes.has_changed().expect("sender alive"));
        changes.mark_unchanged();
        assert!(h.is_drained("a") && !h.is_drained("b") && h.snapshot("a").draining);
        h.record_failure("b", "x"); // cooling down: last, but still a candidate
        assert_eq!(ids(&h.order(&nodes)), ["c", "b"]);
        assert_eq!(ids(&h.order_for_reconnect(&nodes)), ["c", "b", "a"]);
        assert!(h.order(&[node("a")]).is_empty(), "every candidate draining");
        h.record_success("a");
        assert!(h.is_drained("a"), "an answer does not undrain");
        assert_eq!(h.set_drained("a", false), Ok(true));
        assert!(changes.has_changed().expect("sender alive"));
        assert!(!h.any_drained());
        assert_eq!(ids(&h.order(&nodes)), ["a", "c", "b"]);
        h.record_success("b");
        assert_eq!(h.tracked(), 0, "an undrained healthy node leaves no entry");
    }

    #[test]
    fn bounded() {
        let h = Health::new(1, Duration::from_secs(10));
        for i in 0..MAX_TRACKED + 50 {
            h.record_failure(&format!("n{i}"), "x");
        }
        assert_eq!(h.tracked(), MAX_TRACKED);
        assert_eq!(truncate(&"é".repeat(200)).len(), MAX_ERROR_LEN + "…".len());
    }
}
