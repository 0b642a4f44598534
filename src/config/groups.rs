//! `[[groups]]`: named pools of nodes a route's `to` may name instead of one node, and the
//! policy that spreads requests over them (see `crate::upstream::balance`).
//!
//! Node ids and group ids share one namespace (a route's `to` names either), so a clash is an
//! error naming the key.

use std::collections::HashSet;

use serde::Deserialize;

use super::{invalid, ConfigError, NodeSettings};

/// Most members in one group (the admin API lists each; every member has its counters).
pub const MAX_MEMBERS: usize = 256;
/// Largest weight; weights are relative, so 1..=100 expresses any useful ratio.
pub const MAX_WEIGHT: u32 = 100;
/// Largest sum of a group's weights: the ring holds
/// [`crate::upstream::ring::POINTS_PER_WEIGHT`] points per unit of weight.
pub const MAX_TOTAL_WEIGHT: u32 = 1000;
/// Bounded-load factor when `load_factor` is not set (Mirrokni et al. suggest 1.25).
pub const DEFAULT_LOAD_FACTOR: f64 = 1.25;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub id: String,
    /// `["a", "b"]` or `[{ node = "a", weight = 2 }, …]` (the two forms mix).
    #[serde(default)]
    pub members: Vec<RawMember>,
    /// `round_robin` (default), `least_conn` or `hash`.
    pub policy: Option<String>,
    /// `hash` only: `"path"` (default: the path sent to the node) or `"{stream}"`.
    pub key: Option<String>,
    /// `hash` only: a member takes a key while its load is under `ceil(load_factor × average)`.
    pub load_factor: Option<f64>,
}

/// A member as written: a node id, or a table with its weight.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawMember {
    Id(String),
    Weighted { node: String, weight: Option<i64> },
}

/// What a `hash` group hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey {
    /// The upstream path (no query): one file stays on one member, so its cache stays warm.
    Path,
    /// The `{stream}` capture: every viewer (and every file) of a stream on one member.
    Stream,
}

/// How a group picks a member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Consistent hashing with bounded loads.
    Hash { key: HashKey, load_factor: f64 },
}

impl Policy {
    /// The name the config and the API use.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastConn => "least_conn",
            Self::Hash { .. } => "hash",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSettings {
    /// A `[[nodes]]` id.
    pub node: String,
    /// 1..=[`MAX_WEIGHT`].
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupSettings {
    pub id: String,
    /// In the order written (round robin starts with the first).
    pub members: Vec<MemberSettings>,
    pub policy: Policy,
}

/// Validates `[[groups]]` against the nodes.
pub(super) fn validate(
    raw: &[RawGroup],
    nodes: &[NodeSettings],
) -> Result<Vec<GroupSettings>, ConfigError> {
    let node_ids: HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let mut ids = HashSet::new();
    let mut out = Vec::new();
    for (i, g) in raw.iter().enumerate() {
        let key = format!("groups[{i}]");
        if !crate::router::valid_stream_name(&g.id) {
            return Err(invalid(
                format!("{key}.id"),
                format!(
                    "{:?}: use 1 to 128 letters, digits, '_', '.', '-', without \"..\"",
                    g.id
                ),
            ));
        }
        if node_ids.contains(g.id.as_str()) {
            return Err(invalid(
                format!("{key}.id"),
                format!(
                    "{:?} is also a node id: nodes and groups share one namespace (a route's `to` names either)",
                    g.id
                ),
            ));
        }
        if !ids.insert(g.id.as_str()) {
            return Err(invalid(
                format!("{key}.id"),
                format!("duplicate group id {:?}", g.id),
            ));
        }
        if g.members.is_empty() {
            return Err(invalid(
                format!("{key}.members"),
                "empty: list at least one node id",
            ));
        }
        if g.members.len() > MAX_MEMBERS {
            return Err(invalid(
                format!("{key}.members"),
                format!("{} members; at most {MAX_MEMBERS}", g.members.len()),
            ));
        }
        let mut members = Vec::new();
        let mut seen = HashSet::new();
        for (j, m) in g.members.iter().enumerate() {
            let (node, weight) = match m {
                RawMember::Id(n) => (n, 1),
                RawMember::Weighted { node, weight } => {
                    let w = weight.unwrap_or(1);
                    if !(1..=i64::from(MAX_WEIGHT)).contains(&w) {
                        return Err(invalid(
                            format!("{key}.members[{j}].weight"),
                            format!("{w}: a weight is a whole number from 1 to {MAX_WEIGHT}"),
                        ));
                    }
                    (node, w as u32)
                }
            };
            if !node_ids.contains(node.as_str()) {
                return Err(invalid(
                    format!("{key}.members[{j}]"),
                    format!("no node with id {node:?} (members are [[nodes]] ids)"),
                ));
            }
            if !seen.insert(node.as_str()) {
                return Err(invalid(
                    format!("{key}.members[{j}]"),
                    format!("{node:?} is listed twice (give it a weight instead)"),
                ));
            }
            members.push(MemberSettings {
                node: node.clone(),
                weight,
            });
        }
        let total: u32 = members.iter().map(|m| m.weight).sum();
        if total > MAX_TOTAL_WEIGHT {
            return Err(invalid(
                format!("{key}.members"),
                format!("the weights add up to {total}; at most {MAX_TOTAL_WEIGHT} (weights are relative: divide them)"),
            ));
        }
        let policy = match g.policy.as_deref().unwrap_or("round_robin") {
            "round_robin" => Policy::RoundRobin,
            "least_conn" => Policy::LeastConn,
            "hash" => {
                let hkey = match g.key.as_deref().unwrap_or("path") {
                    "path" => HashKey::Path,
                    "{stream}" => HashKey::Stream,
                    other => {
                        return Err(invalid(
                            format!("{key}.key"),
                            format!("{other:?} is not one of \"path\", \"{{stream}}\""),
                        ))
                    }
                };
                let load_factor = g.load_factor.unwrap_or(DEFAULT_LOAD_FACTOR);
                if !load_factor.is_finite() || !(1.0..=100.0).contains(&load_factor) {
                    return Err(invalid(
                        format!("{key}.load_factor"),
                        format!(
                            "{load_factor}: from 1.0 (strict balance) to 100 (almost pure hashing)"
                        ),
                    ));
                }
                Policy::Hash {
                    key: hkey,
                    load_factor,
                }
            }
            other => {
                return Err(invalid(
                    format!("{key}.policy"),
                    format!("{other:?} is not one of round_robin, least_conn, hash"),
                ))
            }
        };
        if !matches!(policy, Policy::Hash { .. }) {
            for (field, set) in [
                ("key", g.key.is_some()),
                ("load_factor", g.load_factor.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        "only a policy = \"hash\" group takes it",
                    ));
                }
            }
        }
        out.push(GroupSettings {
            id: g.id.clone(),
            members,
            policy,
        });
    }
    Ok(out)
}

/// What a route naming group `g` in `to` (`key`) must satisfy: a `{stream}` key needs the
/// capture, and a live route needs one member per stream whatever the health ordering, so
/// that a stream is pulled once: `hash` on `{stream}`.
pub(super) fn check_route(
    key: &str,
    g: &GroupSettings,
    action: super::Action,
    pattern: &crate::router::Pattern,
) -> Result<(), ConfigError> {
    let by_stream = matches!(
        g.policy,
        Policy::Hash {
            key: HashKey::Stream,
            ..
        }
    );
    if by_stream && !pattern.has_stream() {
        return Err(invalid(
            key,
            format!(
                "group {:?} hashes on {{stream}}, which this route's path does not capture",
                g.id
            ),
        ));
    }
    if action == super::Action::Live && !by_stream {
        return Err(invalid(
            key,
            format!(
                "a live route's group must use policy = \"hash\" with key = \"{{stream}}\" (group {:?} is {}): one member per stream, so each stream is pulled once",
                g.id,
                g.policy.name()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = r#"
[[nodes]]
id = "a"
url = "http://127.0.0.1:9001"
[[nodes]]
id = "b"
url = "http://127.0.0.1:9002"
"#;

    fn err(extra: &str) -> String {
        match crate::config::parse(&format!("{NODES}{extra}")) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_group_parses_with_both_member_forms() {
        let s = crate::config::parse(&format!(
            "{NODES}[[groups]]\nid = \"vod\"\npolicy = \"hash\"\nload_factor = 1.5\n\
             members = [\"a\", {{ node = \"b\", weight = 3 }}]\n\
             [[routes]]\npath = \"/vod/{{*rest}}\"\naction = \"proxy\"\nto = \"vod\"\n"
        ))
        .expect("config");
        let g = &s.groups[0];
        assert_eq!(g.members[0].weight, 1);
        assert_eq!(g.members[1].weight, 3);
        assert_eq!(
            g.policy,
            Policy::Hash {
                key: HashKey::Path,
                load_factor: 1.5
            }
        );
        assert!(matches!(&s.routes[0].target, crate::config::Target::Group(id) if id == "vod"));
        let s = crate::config::parse(&format!(
            "{NODES}[[groups]]\nid = \"g\"\nmembers = [\"a\", \"b\"]\n"
        ))
        .expect("config");
        assert_eq!(s.groups[0].policy, Policy::RoundRobin);
    }

    #[test]
    fn every_mistake_names_its_key() {
        let g = |body: &str| format!("[[groups]]\nid = \"g\"\n{body}\n");
        for (extra, key) in [
            (g("members = [\"a\"]").replace("\"g\"", "\"a\""), "groups[0].id"),
            (g("members = []"), "groups[0].members"),
            (g("members = [\"zz\"]"), "groups[0].members[0]"),
            (g("members = [\"a\", \"a\"]"), "groups[0].members[1]"),
            (
                g("members = [{ node = \"a\", weight = 0 }]"),
                "groups[0].members[0].weight",
            ),
            (
                g("members = [{ node = \"a\", weight = 101 }]"),
                "groups[0].members[0].weight",
            ),
            (g("members = [\"a\"]\npolicy = \"random\""), "groups[0].policy"),
            (g("members = [\"a\"]\nkey = \"path\""), "groups[0].key"),
            (
                g("members = [\"a\"]\npolicy = \"hash\"\nkey = \"host\""),
                "groups[0].key",
            ),
            (
                g("members = [\"a\"]\npolicy = \"hash\"\nload_factor = 0.5"),
                "groups[0].load_factor",
            ),
            (
                format!("{}{}", g("members = [\"a\"]"), g("members = [\"b\"]")),
                "groups[1].id",
            ),
            (
                format!(
                    "{}[[routes]]\npath = \"/f/{{*rest}}\"\naction = \"proxy\"\nto = \"nope\"\n",
                    g("members = [\"a\"]")
                ),
                "routes[0].to",
            ),
            // A live route's group must hash on {stream}.
            (
                format!(
                    "{}[[routes]]\npath = \"/live/{{stream}}.flv\"\naction = \"live\"\nto = \"g\"\nstreams = [\"cam*\"]\n",
                    g("members = [\"a\"]")
                ),
                "routes[0].to",
            ),
            // {stream} as the key needs the capture.
            (
                format!(
                    "{}[[routes]]\npath = \"/f/{{*rest}}\"\naction = \"proxy\"\nto = \"g\"\n",
                    g("members = [\"a\"]\npolicy = \"hash\"\nkey = \"{stream}\"")
                ),
                "routes[0].to",
            ),
        ] {
            let e = err(&extra);
            assert!(e.starts_with(&format!("{key}:")), "{key}: {e}");
        }
    }

    #[test]
    fn a_live_route_takes_a_stream_hashed_group() {
        crate::config::parse(&format!(
            "{NODES}[[groups]]\nid = \"edges\"\npolicy = \"hash\"\nkey = \"{{stream}}\"\nmembers = [\"a\", \"b\"]\n\
             [[routes]]\npath = \"/live/{{stream}}.flv\"\naction = \"live\"\nto = \"edges\"\nstreams = [\"cam*\"]\n"
        ))
        .expect("config");
    }
}
