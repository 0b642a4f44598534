//! `[server]`: listeners, connection limits and the client-side timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, ConfigError};
use crate::upstream_path::BaseUrl;

/// `listen` may be one address or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<OneOrMany>,
    pub public_url: Option<String>,
    pub drain_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub send_buffer: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    /// Base URL viewers reach us at; upstream `Location`s pointing at a node are rewritten to it.
    /// `None` means "derive from the first bound address" (resolved at start).
    pub public_url: Option<BaseUrl>,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// A write to a viewer that makes no progress for this long closes the connection.
    pub send_timeout: Duration,
    /// `SO_SNDBUF` for client sockets; `None` leaves the kernel's autotuning on.
    pub send_buffer: Option<usize>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            public_url: None,
            drain_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            send_buffer: None,
        }
    }
}

/// Validates `[server]`.
pub(super) fn validate(s: &RawServer) -> Result<ServerSettings, ConfigError> {
    let d = ServerSettings::default();
    let listen_raw = match &s.listen {
        None => d.listen.iter().map(ToString::to_string).collect(),
        Some(OneOrMany::One(a)) => vec![a.clone()],
        Some(OneOrMany::Many(v)) => v.clone(),
    };
    if listen_raw.is_empty() {
        return Err(invalid("server.listen", "at least one address is needed"));
    }
    let mut listen = Vec::new();
    for (i, a) in listen_raw.iter().enumerate() {
        let addr: SocketAddr = a.parse().map_err(|_| {
            invalid(
                format!("server.listen[{i}]"),
                format!("{a:?} is not an IP:port address"),
            )
        })?;
        listen.push(addr);
    }
    let public_url = match &s.public_url {
        None => None,
        Some(u) => Some(
            BaseUrl::parse(u)
                .map_err(|why| invalid("server.public_url", format!("{u:?}: {why}")))?,
        ),
    };
    let server = ServerSettings {
        listen,
        public_url,
        drain_timeout: duration("server.drain_timeout", &s.drain_timeout, d.drain_timeout)?,
        max_connections: match s.max_connections {
            Some(0) => return Err(invalid("server.max_connections", "must be at least 1")),
            Some(n) => n,
            None => d.max_connections,
        },
        header_read_timeout: duration(
            "server.header_read_timeout",
            &s.header_read_timeout,
            d.header_read_timeout,
        )?,
        send_timeout: duration("server.send_timeout", &s.send_timeout, d.send_timeout)?,
        send_buffer: match s.send_buffer {
            Some(n) if n < 4096 => {
                return Err(invalid("server.send_buffer", "must be at least 4096 bytes"))
            }
            other => other,
        },
    };
    if server.send_timeout.is_zero() {
        return Err(invalid("server.send_timeout", "must be greater than zero"));
    }

    Ok(server)
}
