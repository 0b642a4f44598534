//! `[server]`: listeners, connection limits, the client-side timeouts, and which proxies in
//! front of us are believed about the client's address.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
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

/// `{ address = "127.0.0.1:8443", proxy_protocol = true, tls = { … } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    #[serde(default)]
    pub proxy_protocol: bool,
    pub tls: Option<RawTls>,
}

/// `tls = { certificates = [{ cert = "chain.pem", key = "key.pem" }, ...] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub certificates: Vec<RawCertificate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
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
    /// Serve TLS (HTTP/2 and HTTP/1.1 by ALPN) instead of plain HTTP/1.1.
    pub tls: Option<TlsSettings>,
}

impl ListenerSettings {
    /// A plain listener on `addr`.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            proxy_protocol: false,
            tls: None,
        }
    }
}

/// A TLS listener's certificates. The files are read (and checked) when the config is
/// validated, again when the listener starts, and again on every reload (SIGHUP, file change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// In order: the first is served when the client names no host (no SNI) or a host that no
    /// certificate covers; the others are chosen by the DNS names each certificate holds.
    pub certificates: Vec<CertificateFiles>,
    /// The config key of this block (`server.listen[1].tls`), so reload errors name it too.
    pub key: String,
}

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The leaf certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key.
    pub key: PathBuf,
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
    pub tls_handshake_timeout: Option<String>,
    pub tls_watch_interval: Option<String>,
    pub https_redirect: Option<String>,
    pub http2_max_concurrent_streams: Option<u32>,
    pub http2_max_header_list_size: Option<u32>,
    pub splice: Option<bool>,
    pub splice_pipes: Option<usize>,
    pub own_http1: Option<bool>,
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
    /// How long a TLS client may take to finish its handshake (a silent client holds a slot).
    pub tls_handshake_timeout: Duration,
    /// How often certificate files are checked for a change; `None` (`"0s"`): only SIGHUP
    /// reloads them.
    pub tls_watch_interval: Option<Duration>,
    /// A plain-HTTP listener that answers everything with a redirect to HTTPS.
    pub https_redirect: Option<SocketAddr>,
    /// HTTP/2: most streams (requests) one connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: largest header block (decoded, in bytes) a request may carry.
    pub http2_max_header_list_size: u32,
    /// Proxied bodies to plain HTTP/1.1 viewers move node socket -> pipe -> viewer socket with
    /// `splice(2)` where they can (`crate::splice`).
    pub splice: bool,
    /// Most pipes spliced bodies use at once; past it, bodies are copied (and counted).
    pub splice_pipes: usize,
    /// Plain HTTP/1.1 connections are served by streamgate's own HTTP/1.1 server
    /// (`crate::http1`), which hands hyper what it does not take; `false`: hyper serves all.
    pub own_http1: bool,
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
            tls_handshake_timeout: Duration::from_secs(10),
            tls_watch_interval: Some(Duration::from_secs(2)),
            https_redirect: None,
            http2_max_concurrent_streams: 128,
            http2_max_header_list_size: 16 * 1024,
            splice: true,
            splice_pipes: 256,
            own_http1: true,
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
                listen.push(listener(i, e)?);
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
    let https_redirect = match &s.https_redirect {
        None => None,
        Some(a) => {
            let addr: SocketAddr = a.parse().map_err(|_| {
                invalid(
                    "server.https_redirect",
                    format!("{a:?} is not an IP:port address"),
                )
            })?;
            if !listen.iter().any(|l| l.tls.is_some()) {
                return Err(invalid(
                    "server.https_redirect",
                    "needs a TLS listener in server.listen to send viewers to",
                ));
            }
            Some(addr)
        }
    };
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
        tls_handshake_timeout: duration(
            "server.tls_handshake_timeout",
            &s.tls_handshake_timeout,
            d.tls_handshake_timeout,
        )?,
        tls_watch_interval: {
            let every = duration(
                "server.tls_watch_interval",
                &s.tls_watch_interval,
                Duration::from_secs(2),
            )?;
            match every {
                d if d.is_zero() => None,
                d if d < Duration::from_millis(100) => {
                    return Err(invalid(
                        "server.tls_watch_interval",
                        "must be 0s (off) or at least 100ms",
                    ))
                }
                d => Some(d),
            }
        },
        https_redirect,
        http2_max_concurrent_streams: match s.http2_max_concurrent_streams {
            Some(0) => {
                return Err(invalid(
                    "server.http2_max_concurrent_streams",
                    "must be at least 1",
                ))
            }
            Some(n) => n,
            None => d.http2_max_concurrent_streams,
        },
        http2_max_header_list_size: match s.http2_max_header_list_size {
            Some(n) if n < 1024 => {
                return Err(invalid(
                    "server.http2_max_header_list_size",
                    "must be at least 1024 bytes",
                ))
            }
            Some(n) => n,
            None => d.http2_max_header_list_size,
        },
        splice: s.splice.unwrap_or(d.splice),
        splice_pipes: match s.splice_pipes {
            Some(0) => {
                return Err(invalid(
                    "server.splice_pipes",
                    "must be at least 1 (splice = false turns splicing off)",
                ))
            }
            Some(n) => n,
            None => d.splice_pipes,
        },
        own_http1: s.own_http1.unwrap_or(d.own_http1),
    };
    if server.tls_handshake_timeout.is_zero() {
        return Err(invalid(
            "server.tls_handshake_timeout",
            "must be greater than zero",
        ));
    }
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

/// Validates `server.listen[i]`; a TLS entry's certificates are loaded and checked now, so
/// `check-config` finds a missing file, a key that does not match, or a file with no PEM.
fn listener(i: usize, raw: &RawListenEntry) -> Result<ListenerSettings, ConfigError> {
    let (a, proxy_protocol, tls) = match raw {
        RawListenEntry::Addr(a) => (a, false, None),
        RawListenEntry::Table(t) => (&t.address, t.proxy_protocol, t.tls.as_ref()),
    };
    let key = match raw {
        RawListenEntry::Addr(_) => format!("server.listen[{i}]"),
        RawListenEntry::Table(_) => format!("server.listen[{i}].address"),
    };
    let addr: SocketAddr = a
        .parse()
        .map_err(|_| invalid(key, format!("{a:?} is not an IP:port address")))?;
    let tls = match tls {
        None => None,
        Some(t) => {
            let key = format!("server.listen[{i}].tls");
            if t.certificates.is_empty() {
                return Err(invalid(
                    format!("{key}.certificates"),
                    "at least one certificate is needed",
                ));
            }
            let tls = TlsSettings {
                certificates: t
                    .certificates
                    .iter()
                    .map(|c| CertificateFiles {
                        cert: PathBuf::from(&c.cert),
                        key: PathBuf::from(&c.key),
                    })
                    .collect(),
                key,
            };
            crate::tls::CertSet::load(&tls).map_err(|e| invalid(e.key(), e.why()))?;
            Some(tls)
        }
    };
    Ok(ListenerSettings {
        addr,
        proxy_protocol,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn err(text: &str) -> String {
        parse(text).expect_err("must fail").to_string()
    }

    #[test]
    fn splice_is_on_by_default_and_its_pipe_limit_is_checked() {
        let s = parse("").expect("defaults").server;
        assert!(s.splice);
        assert_eq!(s.splice_pipes, 256);
        let s = parse("[server]\nsplice = false\nsplice_pipes = 8\n")
            .expect("parses")
            .server;
        assert!(!s.splice);
        assert_eq!(s.splice_pipes, 8);
        let e = err("[server]\nsplice_pipes = 0\n");
        assert!(e.starts_with("server.splice_pipes:"), "{e}");
    }

    #[test]
    fn the_own_http1_server_is_on_by_default() {
        assert!(parse("").expect("defaults").server.own_http1);
        let s = parse("[server]\nown_http1 = false\n")
            .expect("parses")
            .server;
        assert!(!s.own_http1);
        let e = err("[server]\nown_http1 = \"yes\"\n");
        assert!(e.contains("own_http1"), "{e}");
    }

    /// A self-signed pair for `name` written under `dir`; returns (cert, key) paths.
    fn pair(dir: &std::path::Path, name: &str) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, ck.cert.pem()).expect("write");
        std::fs::write(&k, ck.signing_key.serialize_pem()).expect("write");
        (c.display().to_string(), k.display().to_string())
    }

    #[test]
    fn listen_entries_are_strings_or_tables() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, k) = pair(dir.path(), "a.test");
        let s = parse(&format!(
            "[server]\nlisten = [\"127.0.0.1:1\", {{ address = \"127.0.0.1:2\", tls = {{ certificates = [{{ cert = {c:?}, key = {k:?} }}] }} }}]\n"
        ))
        .expect("valid");
        assert_eq!(s.server.listen.len(), 2);
        assert!(s.server.listen[0].tls.is_none());
        let tls = s.server.listen[1].tls.as_ref().expect("tls");
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.key, "server.listen[1].tls");
        assert_eq!(s.server.tls_handshake_timeout.as_secs(), 10);
        assert_eq!(s.server.http2_max_concurrent_streams, 128);
        // A table without TLS is a plain listener.
        let s = parse("[server]\nlisten = { address = \"127.0.0.1:3\" }\n").expect("valid");
        assert!(s.server.listen[0].tls.is_none());
    }

    #[test]
    fn tls_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, k) = pair(dir.path(), "a.test");
        let (_, other_key) = pair(dir.path(), "b.test");
        let listen = |certs: &str| {
            format!("[server]\nlisten = [\"127.0.0.1:1\", {{ address = \"127.0.0.1:2\", tls = {{ certificates = [{certs}] }} }}]\n")
        };
        let e = err(&listen(&format!(
            "{{ cert = {c:?}, key = {k:?} }}, {{ cert = \"/nonexistent/x.pem\", key = {k:?} }}"
        )));
        assert!(
            e.starts_with(
                "server.listen[1].tls.certificates[1].cert: cannot read /nonexistent/x.pem"
            ),
            "{e}"
        );
        let e = err(&listen(&format!("{{ cert = {c:?}, key = {other_key:?} }}")));
        assert!(
            e.starts_with("server.listen[1].tls.certificates[0].key:"),
            "{e}"
        );
        let e = err(&listen(""));
        assert!(e.starts_with("server.listen[1].tls.certificates:"), "{e}");
        let e = err("[server]\nlisten = { address = \"nope\" }\n");
        assert!(e.starts_with("server.listen[0].address:"), "{e}");
        let e = err("[server]\nlisten = { address = \"127.0.0.1:1\", tlz = 1 }\n");
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn https_redirect_needs_a_tls_listener() {
        let e = err("[server]\nhttps_redirect = \"127.0.0.1:8081\"\n");
        assert!(e.starts_with("server.https_redirect:"), "{e}");
        let e = err("[server]\nhttps_redirect = \"x\"\n");
        assert!(e.starts_with("server.https_redirect:"), "{e}");
        let e = err("[server]\ntls_handshake_timeout = \"0s\"\n");
        assert!(e.starts_with("server.tls_handshake_timeout:"), "{e}");
        let e = err("[server]\nhttp2_max_concurrent_streams = 0\n");
        assert!(e.starts_with("server.http2_max_concurrent_streams:"), "{e}");
    }
}
