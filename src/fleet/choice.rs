//! Who pulls a stream from where: rendezvous hashing with bounded load over the live gateways
//! of one region. Pure functions of the membership, so every gateway that sees the same
//! members makes the same choice, and a unit test can check what a membership change moves.
//!
//! - **Roots**: per stream, the `K` tier-1 gateways with the highest score
//!   `h(stream, gateway)`; only they pull from the node.
//! - **Everyone else** pulls from a gateway: a tier-1 non-root from one of the roots, a tier-t
//!   gateway (t ≥ 2) from the tier below (the nearest lower tier that has live gateways). The
//!   candidates are ranked by `h(stream/me, candidate)`: each downstream gateway has its own
//!   order, so a hot stream spreads over every candidate, and losing a candidate moves only
//!   the downstream gateways that ranked it first.
//! - **Bounded load**: candidates serving more than `balance` × the average of the candidates'
//!   served pulls go after the others (consistent hashing with bounded loads, Mirrokni et al.).

use serde::Serialize;

/// One gateway as the fleet sees it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Member {
    pub id: String,
    /// Base URL other gateways pull from.
    pub url: String,
    pub region: String,
    pub tier: u8,
    /// Gateway-to-gateway pulls it serves now (its load for the bounded-load choice).
    pub load: u64,
}

/// What a gateway does for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Pull from the node (a root, or no gateway to pull from).
    Node,
    /// Pull from these gateways (ids), preferred first.
    Gateways(Vec<String>),
}

/// A stable 64-bit hash (FNV-1a, then a splitmix64 finaliser for good high bits): the same on
/// every gateway and every build, unlike std's hasher.
pub fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `members` ranked for `key`, highest score first (ties by id, for a total order).
fn ranked<'a>(key: &str, members: impl Iterator<Item = &'a Member>) -> Vec<&'a Member> {
    let mut v: Vec<(u64, &Member)> = members.map(|m| (hash(&[key, &m.id]), m)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    v.into_iter().map(|(_, m)| m).collect()
}

/// The stream's roots in `region`: its `k` best-scored tier-1 gateways.
pub fn roots<'a>(stream: &str, region: &str, members: &'a [Member], k: usize) -> Vec<&'a Member> {
    let mut r = ranked(
        stream,
        members.iter().filter(|m| m.region == region && m.tier == 1),
    );
    r.truncate(k);
    r
}

/// Puts candidates above the load bound after the others, each group in rank order.
fn bounded(candidates: Vec<&Member>, balance: f64) -> Vec<&Member> {
    if candidates.len() < 2 {
        return candidates;
    }
    let total: u64 = candidates.iter().map(|m| m.load).sum();
    // The +1 counts the pull being placed, so an idle fleet never passes anyone over.
    let cap = (balance * (total + 1) as f64 / candidates.len() as f64).ceil() as u64;
    let (under, over): (Vec<&Member>, Vec<&Member>) =
        candidates.into_iter().partition(|m| m.load < cap.max(1));
    under.into_iter().chain(over).collect()
}

/// Where `me` pulls `stream` from, given the live `members` (with or without `me`).
/// `pinned`: configured upstream ids, used in their order instead of the hashed choice.
pub fn plan(
    stream: &str,
    me: &Member,
    members: &[Member],
    k: usize,
    balance: f64,
    pinned: &[String],
) -> Plan {
    let others = || {
        members
            .iter()
            .filter(|m| m.region == me.region && m.id != me.id && m.url != me.url)
    };
    if !pinned.is_empty() {
        let v: Vec<String> = pinned
            .iter()
            .filter(|p| others().any(|m| &m.id == *p))
            .cloned()
            .collect();
        return if v.is_empty() {
            Plan::Node
        } else {
            Plan::Gateways(v)
        };
    }
    let candidates: Vec<&Member> = if me.tier <= 1 {
        let mut all: Vec<Member> = members.iter().filter(|m| m.id != me.id).cloned().collect();
        all.push(me.clone());
        let roots = roots(stream, &me.region, &all, k);
        if roots.iter().any(|m| m.id == me.id) {
            return Plan::Node;
        }
        let ids: Vec<String> = roots.iter().map(|m| m.id.clone()).collect();
        others().filter(|m| ids.contains(&m.id)).collect()
    } else {
        // The nearest lower tier with live gateways.
        let below = others().filter(|m| m.tier < me.tier).map(|m| m.tier).max();
        match below {
            Some(t) => others().filter(|m| m.tier == t).collect(),
            None => Vec::new(),
        }
    };
    if candidates.is_empty() {
        return Plan::Node;
    }
    let key = format!("{stream}/{}", me.id);
    let order = bounded(ranked(&key, candidates.into_iter()), balance);
    Plan::Gateways(order.into_iter().map(|m| m.id.clone()).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn m(id: &str, tier: u8) -> Member {
        Member {
            id: id.into(),
            url: format!("http://{id}"),
            region: "r".into(),
            tier,
            load: 0,
        }
    }

    fn first(p: &Plan) -> Option<String> {
        match p {
            Plan::Node => None,
            Plan::Gateways(v) => v.first().cloned(),
        }
    }

    #[test]
    fn exactly_k_tier1_gateways_pull_each_stream_from_the_node() {
        let fleet: Vec<Member> = (0..5)
            .map(|i| m(&format!("t1-{i}"), 1))
            .chain((0..20).map(|i| m(&format!("t2-{i}"), 2)))
            .collect();
        for s in 0..200 {
            let stream = format!("s{s}");
            let at_node = fleet
                .iter()
                .filter(|me| plan(&stream, me, &fleet, 2, 1.25, &[]) == Plan::Node)
                .count();
            assert_eq!(at_node, 2, "{stream}");
            for me in fleet.iter().filter(|me| me.tier == 2) {
                let up = first(&plan(&stream, me, &fleet, 2, 1.25, &[])).expect("a gateway");
                assert!(up.starts_with("t1-"), "tier 2 pulls from tier 1");
            }
        }
    }

    #[test]
    fn a_gateway_never_plans_to_pull_from_itself_and_falls_back_to_the_node() {
        let me = m("t2-0", 2);
        assert_eq!(
            plan("s", &me, std::slice::from_ref(&me), 2, 1.25, &[]),
            Plan::Node
        );
        let same_url = Member {
            id: "alias".into(),
            tier: 1,
            ..me.clone()
        };
        assert_eq!(plan("s", &me, &[same_url], 2, 1.25, &[]), Plan::Node);
        let other_region = Member {
            region: "elsewhere".into(),
            ..m("t1-0", 1)
        };
        assert_eq!(plan("s", &me, &[other_region], 2, 1.25, &[]), Plan::Node);
        // Pinned upstreams: only live ones, never itself.
        let t1 = m("t1-0", 1);
        assert_eq!(
            plan(
                "s",
                &me,
                std::slice::from_ref(&t1),
                2,
                1.25,
                &["gone".into(), "t1-0".into()]
            ),
            Plan::Gateways(vec!["t1-0".into()])
        );
    }

    #[test]
    fn losing_an_upstream_moves_only_its_share() {
        let t1: Vec<Member> = (0..6).map(|i| m(&format!("t1-{i}"), 1)).collect();
        let t2: Vec<Member> = (0..40).map(|i| m(&format!("t2-{i}"), 2)).collect();
        let all: Vec<Member> = t1.iter().chain(&t2).cloned().collect();
        let before: HashMap<(String, String), String> = (0..50)
            .flat_map(|s| t2.iter().map(move |me| (format!("s{s}"), me)))
            .map(|(s, me)| {
                let up = first(&plan(&s, me, &all, 2, 10.0, &[])).expect("up");
                ((s, me.id.clone()), up)
            })
            .collect();
        let spread: std::collections::HashSet<&String> = before.values().collect();
        assert_eq!(
            spread.len(),
            6,
            "a stream's downstreams spread over every tier-1 gateway"
        );
        let without: Vec<Member> = all.iter().filter(|m| m.id != "t1-3").cloned().collect();
        let mut moved = 0;
        for ((s, me_id), up) in &before {
            let me = t2.iter().find(|m| &m.id == me_id).expect("me");
            let now = first(&plan(s, me, &without, 2, 10.0, &[])).expect("up");
            if up == "t1-3" {
                moved += 1;
                assert_ne!(now, "t1-3");
            } else {
                assert_eq!(&now, up, "{s} at {me_id} kept its upstream");
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn bounded_load_passes_over_an_overloaded_candidate() {
        let mut t1: Vec<Member> = (0..4).map(|i| m(&format!("t1-{i}"), 1)).collect();
        let me = m("t2-0", 2);
        let mut all = t1.clone();
        all.push(me.clone());
        let favourite = first(&plan("hot", &me, &all, 4, 1.25, &[])).expect("up");
        for c in t1.iter_mut() {
            c.load = if c.id == favourite { 100 } else { 10 };
        }
        let mut all = t1.clone();
        all.push(me.clone());
        let p = plan("hot", &me, &all, 4, 1.25, &[]);
        let Plan::Gateways(order) = p else {
            panic!("gateways")
        };
        assert_ne!(order[0], favourite, "over the bound: passed over");
        assert_eq!(order.last(), Some(&favourite), "but still a last resort");
    }

    #[test]
    fn the_hash_is_stable() {
        // Gateways of different builds must agree: the value is part of the protocol.
        assert_eq!(hash(&["a", "b"]), hash(&["a", "b"]));
        assert_ne!(hash(&["a", "b"]), hash(&["ab"]));
        assert_ne!(hash(&["a", "b"]), hash(&["b", "a"]));
    }
}
