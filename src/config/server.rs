//! `[server]`: listeners, connection limits, the client-side timeouts, and which proxies in
//! front of us are believed about the client's address.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{duration, invalid, ConfigError};
use crate::client_addr::{Cidr, TrustedProxies};
use crate::upstream_path::BaseUrl;

/// One `listen` entry as written: `"127.0.0.1:8080"` or a table.
#[derive(Debug)]
pub enum RawListenEntry {
    Addr(String),
    Table(RawListener),
}

/// `{ address = "127.0.0.1:8443", proxy_protocol = true }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// `listen`: one entry or a list of them. Deserialized by hand rather than `untagged`, so a
/// mistyped key in a table is reported as such, with its line, not as "did not match".
#[derive(Debug)]
pub struct RawListen(pub Vec<RawListenEntry>);

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = RawListenEntry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an \"IP:port\" string or a table { address = \"IP:port\", … }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(RawListenEntry::Addr(v.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        RawListener::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(RawListenEntry::Table)
    }
}

impl<'de> Deserialize<'de> for RawListenEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListenVisitor;
        impl<'de> Visitor<'de> for ListenVisitor {
            type Value = RawListen;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an \"IP:port\" string, a { address = … } table, or a list of them")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                EntryVisitor.visit_str(v).map(|e| RawListen(vec![e]))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                EntryVisitor.visit_map(map).map(|e| RawListen(vec![e]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = seq.next_element()? {
                    v.push(e);
                }
                Ok(RawListen(v))
            }
        }
        d.deserialize_any(ListenVisitor)
    }
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from an L4 balancer,
    /// naming the client; without one the connection is closed. Off: such a header is just a
    /// bad request.
    pub proxy_protocol: bool,
}

impl ListenerSettings {
    /// A plain listener on `addr`.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            proxy_protocol: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<RawListen>,
    pub trusted_proxies: Option<Vec<String>>,
    pub proxy_protocol_timeout: Option<String>,
    pub public_url: Option<String>,
    pub drain_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub send_buffer: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<ListenerSettings>,
    /// Peers whose `X-Forwarded-For` (and `-Proto`, `-Host`) are believed; from anyone else
    /// those headers are replaced. Empty: nobody's are.
    pub trusted_proxies: TrustedProxies,
    /// How long a connection on a `proxy_protocol` listener may take to send its header.
    pub proxy_protocol_timeout: Duration,
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
            listen: vec![ListenerSettings::plain(SocketAddr::from((
                [127, 0, 0, 1],
                8080,
            )))],
            trusted_proxies: TrustedProxies::default(),
            proxy_protocol_timeout: Duration::from_secs(5),
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
    let listen = match &s.listen {
        None => d.listen.clone(),
        Some(RawListen(entries)) => {
            let mut listen = Vec::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                let (a, proxy_protocol, key) = match e {
                    RawListenEntry::Addr(a) => (a, false, format!("server.listen[{i}]")),
                    RawListenEntry::Table(t) => (
                        &t.address,
                        t.proxy_protocol,
                        format!("server.listen[{i}].address"),
                    ),
                };
                let addr: SocketAddr = a
                    .parse()
                    .map_err(|_| invalid(key, format!("{a:?} is not an IP:port address")))?;
                listen.push(ListenerSettings {
                    addr,
                    proxy_protocol,
                });
            }
            listen
        }
    };
    if listen.is_empty() {
        return Err(invalid("server.listen", "at least one address is needed"));
    }
    let mut trusted = Vec::new();
    for (i, c) in s.trusted_proxies.iter().flatten().enumerate() {
        trusted.push(
            Cidr::parse(c).map_err(|why| invalid(format!("server.trusted_proxies[{i}]"), why))?,
        );
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
        trusted_proxies: TrustedProxies::new(trusted),
        proxy_protocol_timeout: duration(
            "server.proxy_protocol_timeout",
            &s.proxy_protocol_timeout,
            d.proxy_protocol_timeout,
        )?,
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
    if server.proxy_protocol_timeout.is_zero() {
        return Err(invalid(
            "server.proxy_protocol_timeout",
            "must be greater than zero",
        ));
    }

    Ok(server)
}
