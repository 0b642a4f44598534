//! `[fleet]`: gateway tiers that keep one pull per stream (see `crate::fleet` and FLEET.md).
//!
//! Off unless the section names this gateway (`id`). Every gateway of a fleet shares one Redis,
//! one `secret` and the same live routes; each says where the others reach it (`url`), its
//! `region` and its `tier`.

use std::time::Duration;

use serde::Deserialize;

use super::registry::{RegistryBackend, RegistrySettings};
use super::{duration, invalid, ConfigError};
use crate::upstream_path::BaseUrl;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub id: Option<String>,
    pub url: Option<String>,
    pub region: Option<String>,
    pub tier: Option<u8>,
    pub redis: Option<String>,
    pub key_prefix: Option<String>,
    pub secret: Option<String>,
    pub node_pulls: Option<usize>,
    pub max_depth: Option<u8>,
    pub balance: Option<f64>,
    pub heartbeat_interval: Option<String>,
    pub heartbeat_ttl: Option<String>,
    pub max_gateways: Option<usize>,
    pub upstreams: Option<Vec<String>>,
}

/// `[fleet]` as the gateway runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// This gateway's id, unique in the fleet (`[A-Za-z0-9_.-]`).
    pub id: String,
    /// Where other gateways pull from this one (plain http, the live routes' listener);
    /// `None`: the gateway's public URL (`server.public_url`, else its first listener as bound).
    pub url: Option<BaseUrl>,
    /// Gateways only pull from, and redirect to, gateways of their own region.
    pub region: String,
    /// 1: may pull from the node (at most `node_pulls` per stream do); 2 and up: pull from the
    /// tier below.
    pub tier: u8,
    /// The Redis holding the membership (default: `[registry] url` when that is Redis).
    pub redis: String,
    /// Prefix of the fleet's keys (`P:gw:ID`, `P:gws:REGION`, `P:pulls:REGION:STREAM`).
    pub key_prefix: String,
    /// Shared by the fleet: signs gateway-to-gateway pulls (`X-Streamgate-Fleet`).
    pub secret: String,
    /// K: per stream and region, how many tier-1 gateways pull from the node.
    pub node_pulls: usize,
    /// Most gateway-to-gateway hops behind a viewer; a request at this depth is served from
    /// the node.
    pub max_depth: u8,
    /// Bounded load: an upstream gateway serving more than `balance` × the average of its
    /// tier's served pulls is passed over while another is below.
    pub balance: f64,
    pub heartbeat_interval: Duration,
    /// A gateway that has not renewed its record for this long is gone.
    pub heartbeat_ttl: Duration,
    /// Most gateways read per region (the membership snapshot's bound).
    pub max_gateways: usize,
    /// Pinned upstream gateways (ids, in order) instead of the hashed choice: a hand-built
    /// topology. Still bounded by `max_depth`.
    pub upstreams: Vec<String>,
}

fn valid_id(s: &str) -> bool {
    crate::router::valid_stream_name(s)
}

pub(super) fn validate(
    r: &RawFleet,
    registry: &RegistrySettings,
) -> Result<Option<FleetSettings>, ConfigError> {
    let Some(id) = r.id.clone() else {
        let set = r.url.is_some() || r.secret.is_some() || r.tier.is_some() || r.redis.is_some();
        if set {
            return Err(invalid(
                "fleet.id",
                "missing: a [fleet] section needs this gateway's id",
            ));
        }
        return Ok(None);
    };
    if !valid_id(&id) {
        return Err(invalid(
            "fleet.id",
            format!("{id:?}: use 1 to 128 letters, digits, '_', '.', '-'"),
        ));
    }
    let url = match &r.url {
        None => None,
        Some(text) => {
            let url = BaseUrl::parse(text)
                .map_err(|why| invalid("fleet.url", format!("{text:?}: {why}")))?;
            if url.scheme != "http" {
                return Err(invalid(
                    "fleet.url",
                    "gateways pull from each other over plain http (inside the fleet's network)",
                ));
            }
            Some(url)
        }
    };
    let region = r.region.clone().unwrap_or_else(|| "default".into());
    if !valid_id(&region) {
        return Err(invalid(
            "fleet.region",
            format!("{region:?}: use letters, digits, '_', '.', '-'"),
        ));
    }
    let tier = r.tier.unwrap_or(1);
    if tier == 0 || tier > 8 {
        return Err(invalid("fleet.tier", "must be between 1 and 8"));
    }
    let redis = match (&r.redis, &registry.backend) {
        (Some(u), _) => u.clone(),
        (None, RegistryBackend::Redis { url, .. }) => url.clone(),
        (None, _) => {
            return Err(invalid(
                "fleet.redis",
                "missing: set it, or use [registry] backend = \"redis\"",
            ))
        }
    };
    // The same endpoints as the registry's (single server, Sentinel, Cluster): one parser.
    if let Err(why) = crate::registry::redis::Endpoint::parse(&redis) {
        return Err(invalid("fleet.redis", format!("{redis:?}: {why}")));
    }
    let key_prefix = r
        .key_prefix
        .clone()
        .unwrap_or_else(|| "streamgate-fleet".into());
    if key_prefix.is_empty() || key_prefix.chars().any(|c| c.is_whitespace()) {
        return Err(invalid(
            "fleet.key_prefix",
            "must be non-empty, without spaces",
        ));
    }
    let secret = r.secret.clone().unwrap_or_default();
    if secret.len() < 16 {
        return Err(invalid(
            "fleet.secret",
            "missing or shorter than 16 bytes: it lets gateways pull without viewer auth",
        ));
    }
    let node_pulls = r.node_pulls.unwrap_or(2);
    if node_pulls == 0 || node_pulls > 64 {
        return Err(invalid("fleet.node_pulls", "must be between 1 and 64"));
    }
    let max_depth = r.max_depth.unwrap_or(3);
    if max_depth == 0 || max_depth > 8 {
        return Err(invalid("fleet.max_depth", "must be between 1 and 8"));
    }
    let balance = r.balance.unwrap_or(1.25);
    if !(1.0..=10.0).contains(&balance) {
        return Err(invalid("fleet.balance", "must be between 1.0 and 10.0"));
    }
    let heartbeat_interval = duration(
        "fleet.heartbeat_interval",
        &r.heartbeat_interval,
        Duration::from_secs(1),
    )?;
    if heartbeat_interval < Duration::from_millis(100)
        || heartbeat_interval > Duration::from_secs(60)
    {
        return Err(invalid(
            "fleet.heartbeat_interval",
            "must be between 100ms and 60s",
        ));
    }
    let heartbeat_ttl = duration(
        "fleet.heartbeat_ttl",
        &r.heartbeat_ttl,
        heartbeat_interval * 3,
    )?;
    if heartbeat_ttl < heartbeat_interval * 2 {
        return Err(invalid(
            "fleet.heartbeat_ttl",
            "must be at least twice heartbeat_interval (one lost beat must not drop a gateway)",
        ));
    }
    let max_gateways = r.max_gateways.unwrap_or(1024);
    if max_gateways == 0 || max_gateways > 100_000 {
        return Err(invalid(
            "fleet.max_gateways",
            "must be between 1 and 100000",
        ));
    }
    let upstreams = r.upstreams.clone().unwrap_or_default();
    for (i, u) in upstreams.iter().enumerate() {
        if !valid_id(u) || *u == id {
            return Err(invalid(
                format!("fleet.upstreams[{i}]"),
                format!("{u:?}: another gateway's id"),
            ));
        }
    }
    Ok(Some(FleetSettings {
        id,
        url,
        region,
        tier,
        redis,
        key_prefix,
        secret,
        node_pulls,
        max_depth,
        balance,
        heartbeat_interval,
        heartbeat_ttl,
        max_gateways,
        upstreams,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const OK: &str = "[fleet]\nid = \"gw1\"\nurl = \"http://127.0.0.1:8080\"\nredis = \"redis://127.0.0.1:6379\"\nsecret = \"0123456789abcdef\"\n";

    #[test]
    fn fleet_section() {
        assert!(
            parse("").expect("defaults").fleet.is_none(),
            "off by default"
        );
        let f = parse(OK).expect("valid").fleet.expect("on");
        assert_eq!((f.tier, f.node_pulls, f.max_depth), (1, 2, 3));
        assert_eq!(f.region, "default");
        assert_eq!(f.heartbeat_ttl, f.heartbeat_interval * 3);
        let e = |t: &str| parse(t).expect_err("must fail").to_string();
        assert!(e("[fleet]\nurl = \"http://x:1\"\n").starts_with("fleet.id:"));
        assert!(e(&OK.replace("http://", "https://")).starts_with("fleet.url:"));
        // Without `url`: the public URL, which must then be plain http.
        let no_url = OK.replace("url = \"http://127.0.0.1:8080\"\n", "");
        assert!(parse(&no_url)
            .expect("valid")
            .fleet
            .expect("on")
            .url
            .is_none());
        let https = format!("{no_url}[server]\npublic_url = \"https://tv.example\"\n");
        assert!(e(&https).starts_with("fleet.url:"));
        assert!(e(&OK.replace("0123456789abcdef", "short")).starts_with("fleet.secret:"));
        assert!(
            e(&OK.replace("redis = \"redis://127.0.0.1:6379\"\n", "")).starts_with("fleet.redis:")
        );
        assert!(e(&format!("{OK}tier = 0\n")).starts_with("fleet.tier:"));
        assert!(e(&format!("{OK}upstreams = [\"gw1\"]\n")).starts_with("fleet.upstreams[0]:"));
        assert!(e(&format!("{OK}heartbeat_ttl = \"1s\"\n")).starts_with("fleet.heartbeat_ttl:"));
        // The registry's Redis is the default.
        let via_registry = OK.replace("redis = \"redis://127.0.0.1:6379\"\n", "")
            + "[registry]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:7000\"\n";
        assert_eq!(
            parse(&via_registry)
                .expect("valid")
                .fleet
                .expect("on")
                .redis,
            "redis://127.0.0.1:7000"
        );
    }
}
