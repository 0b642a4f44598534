//! `[upstream]`: the one transport to nodes.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub connect_timeout: Option<String>,
    pub tcp_keepalive: Option<String>,
    pub max_idle_per_node: Option<usize>,
    pub idle_timeout: Option<String>,
    pub tls_handshake_timeout: Option<String>,
    pub response_header_timeout: Option<String>,
    pub body_idle_timeout: Option<String>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<String>,
}

/// The node transport (see docs/upstream.md for how the timeouts fit together).
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// One TCP connect attempt to one node. Short by default: a stopped or unreachable host
    /// stays silent rather than refusing, and failover to the next node waits this long.
    pub connect_timeout: Duration,
    pub tcp_keepalive: Duration,
    pub max_idle_per_node: usize,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// The node must send its response headers within this, counted from when the request
    /// (with its body, if any) has been sent.
    pub response_header_timeout: Duration,
    /// A proxied body that makes no progress for this long is aborted, in either direction:
    /// the node's answer, or an upload (the viewer stops sending, or the node stops reading).
    pub body_idle_timeout: Duration,
    /// Consecutive failures (connect error or timeout, header timeout, reset before headers)
    /// after which a node is skipped for `fail_timeout`; 0 turns passive health off.
    pub max_fails: u32,
    /// How long a node that reached `max_fails` is skipped.
    pub fail_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            tcp_keepalive: Duration::from_secs(30),
            max_idle_per_node: 100,
            idle_timeout: Duration::from_secs(90),
            tls_handshake_timeout: Duration::from_secs(10),
            response_header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(60),
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

/// Validates `[upstream]`.
pub(super) fn validate(u: &RawUpstream) -> Result<UpstreamSettings, ConfigError> {
    let d = UpstreamSettings::default();
    let upstream = UpstreamSettings {
        connect_timeout: duration(
            "upstream.connect_timeout",
            &u.connect_timeout,
            d.connect_timeout,
        )?,
        tcp_keepalive: duration("upstream.tcp_keepalive", &u.tcp_keepalive, d.tcp_keepalive)?,
        max_idle_per_node: u.max_idle_per_node.unwrap_or(d.max_idle_per_node),
        idle_timeout: duration("upstream.idle_timeout", &u.idle_timeout, d.idle_timeout)?,
        tls_handshake_timeout: duration(
            "upstream.tls_handshake_timeout",
            &u.tls_handshake_timeout,
            d.tls_handshake_timeout,
        )?,
        response_header_timeout: duration(
            "upstream.response_header_timeout",
            &u.response_header_timeout,
            d.response_header_timeout,
        )?,
        body_idle_timeout: duration(
            "upstream.body_idle_timeout",
            &u.body_idle_timeout,
            d.body_idle_timeout,
        )?,
        max_fails: u.max_fails.unwrap_or(d.max_fails),
        fail_timeout: duration("upstream.fail_timeout", &u.fail_timeout, d.fail_timeout)?,
    };
    for (key, v) in [
        ("upstream.connect_timeout", upstream.connect_timeout),
        ("upstream.body_idle_timeout", upstream.body_idle_timeout),
        ("upstream.fail_timeout", upstream.fail_timeout),
        (
            "upstream.response_header_timeout",
            upstream.response_header_timeout,
        ),
    ] {
        if v.is_zero() {
            return Err(invalid(key, "must be greater than zero"));
        }
    }

    Ok(upstream)
}
