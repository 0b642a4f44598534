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
}

/// The node transport. Defaults mirror the Go design we replace.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub tcp_keepalive: Duration,
    pub max_idle_per_node: usize,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub response_header_timeout: Duration,
    /// A proxied body from a node that sends nothing for this long is aborted.
    pub body_idle_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            tcp_keepalive: Duration::from_secs(30),
            max_idle_per_node: 100,
            idle_timeout: Duration::from_secs(90),
            tls_handshake_timeout: Duration::from_secs(10),
            response_header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(60),
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
    };
    for (key, v) in [
        ("upstream.connect_timeout", upstream.connect_timeout),
        ("upstream.body_idle_timeout", upstream.body_idle_timeout),
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
