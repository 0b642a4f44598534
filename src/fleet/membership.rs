//! The gateways this one knows of, and which of them are alive.
//!
//! Liveness is judged on this gateway's own clock: a member is alive while its heartbeat
//! counter (`beat`) had moved within `ttl` at this gateway's last read of Redis. Gateways' wall
//! clocks never have to agree, and a gateway too busy to run its own heartbeat for a while does
//! not take the others for dead (it judges them as of its last read). When reads have failed for
//! `ttl` (Redis unreachable; one slow or failed read on a busy machine is not enough), every
//! other member counts as gone, so the gateway pulls from the node itself (the behaviour
//! without a fleet) instead of trusting a picture that may be stale.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::choice::Member;

/// A gateway's record as written to Redis at each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub member: Member,
    /// Bumped at every heartbeat: a record whose counter stops moving is a dead gateway's.
    pub beat: u64,
    /// The writer's wall clock (milliseconds since the epoch), for listings only.
    pub at_ms: u64,
}

/// A member with what this gateway saw of it.
#[derive(Debug, Clone)]
struct Seen {
    record: Record,
    /// When its `beat` last moved (this gateway's clock).
    moved: Instant,
}

/// The membership snapshot: bounded by the number of records a read returns (`max_gateways`).
#[derive(Debug)]
pub struct Membership {
    me: String,
    ttl: Duration,
    members: HashMap<String, Seen>,
    /// When the last read of Redis succeeded (`None`: never).
    read_at: Option<Instant>,
    /// Since when reads fail (`None`: the last one succeeded).
    failing_since: Option<Instant>,
}

/// One member for listings.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    #[serde(flatten)]
    pub member: Member,
    pub alive: bool,
    /// When its last heartbeat was written (its own clock, RFC 3339).
    pub last_heartbeat: String,
    /// Seconds since this gateway saw its heartbeat move.
    pub heartbeat_age: f64,
}

impl Membership {
    pub fn new(me: &str, ttl: Duration) -> Self {
        Self {
            me: me.to_string(),
            ttl,
            members: HashMap::new(),
            read_at: None,
            failing_since: None,
        }
    }

    /// A read of Redis failed: once they have failed for `ttl`, nobody else counts as alive
    /// until one succeeds.
    pub fn failed(&mut self) {
        self.failing_since.get_or_insert_with(Instant::now);
    }

    /// Applies one read of the region's records: new and moved ones are refreshed, members
    /// missing from the read (their key expired) are forgotten. This gateway's own record is
    /// ignored (it is always alive to itself).
    pub fn apply(&mut self, records: Vec<Record>) {
        let now = Instant::now();
        let mut next = HashMap::with_capacity(records.len());
        for r in records {
            if r.member.id == self.me {
                continue;
            }
            let moved = match self.members.remove(&r.member.id) {
                Some(old) if old.record.beat == r.beat => old.moved,
                _ => now,
            };
            next.insert(r.member.id.clone(), Seen { record: r, moved });
        }
        self.members = next;
        self.read_at = Some(now);
        self.failing_since = None;
    }

    fn is_alive(&self, s: &Seen) -> bool {
        let reachable = self.failing_since.is_none_or(|f| f.elapsed() < self.ttl);
        reachable
            && self
                .read_at
                .is_some_and(|at| at.saturating_duration_since(s.moved) < self.ttl)
    }

    /// The other members alive now.
    pub fn alive(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self
            .members
            .values()
            .filter(|s| self.is_alive(s))
            .map(|s| s.record.member.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// An alive member by id.
    pub fn get(&self, id: &str) -> Option<Member> {
        self.members
            .get(id)
            .filter(|s| self.is_alive(s))
            .map(|s| s.record.member.clone())
    }

    /// Every member known, alive or not yet forgotten, for listings.
    pub fn views(&self) -> Vec<MemberView> {
        let now = Instant::now();
        let mut v: Vec<MemberView> = self
            .members
            .values()
            .map(|s| MemberView {
                member: s.record.member.clone(),
                alive: self.is_alive(s),
                last_heartbeat: crate::access_log::rfc3339(
                    SystemTime::UNIX_EPOCH + Duration::from_millis(s.record.at_ms),
                ),
                heartbeat_age: now.saturating_duration_since(s.moved).as_secs_f64(),
            })
            .collect();
        v.sort_by(|a, b| a.member.id.cmp(&b.member.id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::choice::{plan, Plan};
    use super::*;

    fn rec(id: &str, tier: u8, beat: u64) -> Record {
        Record {
            member: Member {
                id: id.into(),
                url: format!("http://{id}"),
                region: "r".into(),
                tier,
                load: 0,
            },
            beat,
            at_ms: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_whose_heartbeat_stops_expires_after_the_ttl() {
        let mut m = Membership::new("me", Duration::from_secs(3));
        m.apply(vec![rec("a", 1, 1), rec("b", 1, 1), rec("me", 1, 9)]);
        assert_eq!(m.alive().len(), 2, "its own record is not a member");
        for beat in 2..=3 {
            tokio::time::advance(Duration::from_secs(1)).await;
            // `a` keeps beating; `b`'s record stays (its key has not expired yet) but is stale.
            m.apply(vec![rec("a", 1, beat), rec("b", 1, 1)]);
        }
        tokio::time::advance(Duration::from_millis(999)).await;
        m.apply(vec![rec("a", 1, 3), rec("b", 1, 1)]);
        assert_eq!(m.alive().len(), 2, "2.999 s without a beat: still alive");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            m.alive().len(),
            2,
            "no read meanwhile (this gateway was busy): judged as of its last read"
        );
        m.apply(vec![rec("a", 1, 4), rec("b", 1, 1)]);
        let alive: Vec<String> = m.alive().into_iter().map(|x| x.id).collect();
        assert_eq!(alive, vec!["a"], "3 s without a beat: gone");
        assert!(m.get("b").is_none() && m.get("a").is_some());
        assert!(m.views().iter().any(|v| v.member.id == "b" && !v.alive));
        // Reads fail: after `ttl` of failures, nobody is alive until the next one succeeds.
        m.failed();
        tokio::time::advance(Duration::from_millis(2_999)).await;
        m.failed();
        assert_eq!(m.alive().len(), 1, "a failed read or two are not an outage");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(m.alive().is_empty());
        // Its key expires in Redis: forgotten.
        m.apply(vec![rec("a", 1, 4)]);
        assert_eq!(m.views().len(), 1);
        // Beating again: alive at once.
        m.apply(vec![rec("a", 1, 5), rec("b", 1, 2)]);
        assert_eq!(m.alive().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_choice_follows_membership_changes() {
        let ttl = Duration::from_secs(3);
        let me = rec("t2", 2, 0).member;
        let mut m = Membership::new("t2", ttl);
        m.apply(vec![]);
        assert_eq!(
            plan("s", &me, &m.alive(), 1, 1.25, &[]),
            Plan::Node,
            "alone: from the node"
        );
        m.apply(vec![rec("t1-a", 1, 1), rec("t1-b", 1, 1)]);
        let Plan::Gateways(order) = plan("s", &me, &m.alive(), 1, 1.25, &[]) else {
            panic!("tier 1 is up: through it")
        };
        let chosen = order[0].clone();
        let other = if chosen == "t1-a" { "t1-b" } else { "t1-a" };
        // The chosen one stops beating; the other goes on.
        for beat in 2..=4 {
            tokio::time::advance(Duration::from_secs(1)).await;
            m.apply(vec![rec(&chosen, 1, 1), rec(other, 1, beat)]);
        }
        assert_eq!(
            plan("s", &me, &m.alive(), 1, 1.25, &[]),
            Plan::Gateways(vec![other.to_string()]),
            "after the ttl, only the survivor"
        );
        // Redis unreachable for the ttl: back to the node.
        m.failed();
        tokio::time::advance(ttl).await;
        assert_eq!(plan("s", &me, &m.alive(), 1, 1.25, &[]), Plan::Node);
    }
}
