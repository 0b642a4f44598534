//! Header hygiene between viewer and node: hop-by-hop headers never cross, forwarding headers
//! are set (believed only from a trusted proxy), and a `Location` naming a node is rewritten so
//! nodes stay hidden.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::client_addr::Client;
use crate::error::GatewayError;
use crate::upstream_path::BaseUrl;

/// Our `Via` token.
pub const VIA: &str = "1.1 streamgate";

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Removes hop-by-hop headers: the fixed list, anything named in `Connection`, and `Proxy-*`.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    // Most requests and answers carry none (a `Connection` header is one of the list): one
    // look at each name decides, instead of a lookup per listed name.
    let any = h.keys().any(|k| {
        let k = k.as_str();
        HOP_BY_HOP.contains(&k) || k.starts_with("proxy-")
    });
    if !any {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
    let proxy: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for n in proxy {
        h.remove(n);
    }
}

/// Refuses a request whose framing or target is ambiguous, as nginx does (400): more than one
/// `Host`, none on HTTP/1.1, or a `Transfer-Encoding` other than one final `chunked` (hyper
/// accepts `gzip, chunked`, but then the node and we could disagree on where the body ends).
pub fn check_request(version: http::Version, h: &HeaderMap) -> Result<(), GatewayError> {
    let mut hosts = h.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(GatewayError::BadRequest("more than one Host header")),
        (None, _) if version == http::Version::HTTP_11 => {
            return Err(GatewayError::BadRequest(
                "an HTTP/1.1 request needs a Host header",
            ))
        }
        _ => {}
    }
    let mut te = h.get_all(header::TRANSFER_ENCODING).iter();
    match (te.next(), te.next()) {
        (None, _) => Ok(()),
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(GatewayError::BadRequest(
            "Transfer-Encoding other than a single \"chunked\"",
        )),
    }
}

/// An address as a header value, written without the formatting machinery (one allocation,
/// the value's own).
fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let mut buf = [0u8; 48];
    let n = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let digits = [o / 100, o / 10 % 10, o % 10];
                let skip = if o >= 100 {
                    0
                } else if o >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    buf[n] = b'0' + d;
                    n += 1;
                }
            }
            n
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write;
            let mut w = std::io::Cursor::new(&mut buf[..]);
            // 45 bytes at most: always fits.
            let _ = write!(w, "{ip}");
            w.position() as usize
        }
    };
    // Digits, dots, colons and hex: always a valid header value.
    HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Appends `item` to a list header, folding every existing instance of it into one value.
fn append_list(h: &mut HeaderMap, name: HeaderName, item: HeaderValue) {
    // The common case, no such header yet, needs no joining (and no allocation).
    if !h.contains_key(&name) {
        h.insert(name, item);
        return;
    }
    let Ok(item) = item.to_str() else {
        return;
    };
    let mut parts: Vec<&str> = h
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    parts.push(item);
    let joined = parts.join(", ");
    if let Ok(v) = HeaderValue::from_str(&joined) {
        h.insert(name, v);
    }
}

/// Prepares viewer request headers for the node.
///
/// Forwarding headers tell the node who the viewer is and what it used. From a trusted proxy
/// (`server.trusted_proxies`), its `X-Forwarded-For` is extended with its own address, and its
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` are kept. From anyone else they are
/// replaced: `X-Forwarded-For` is the peer alone, proto and host are what the connection and
/// its `Host` say, and `Forwarded` goes, so a viewer cannot make a node believe it is someone
/// else. `X-Real-IP` is always the resolved client.
pub fn to_upstream(h: &mut HeaderMap, client: &Client, node: &BaseUrl, strip_auth: bool) {
    let original_host = h.get(header::HOST).cloned();
    remove_hop_by_hop(h);
    if strip_auth {
        h.remove(header::AUTHORIZATION);
    }
    let peer_ip = client.peer.ip().to_canonical();
    let hop = ip_value(peer_ip);
    if client.trusted_peer {
        append_list(h, X_FORWARDED_FOR, hop.clone());
    } else {
        h.insert(X_FORWARDED_FOR, hop.clone());
    }
    if !client.trusted_peer {
        h.remove(header::FORWARDED);
    }
    // Usually the peer itself: the same bytes, shared.
    let real = if client.ip == peer_ip {
        hop
    } else {
        ip_value(client.ip)
    };
    h.insert(X_REAL_IP, real);
    if !(client.trusted_peer && h.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if client.secure { "https" } else { "http" };
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(client.trusted_peer && h.contains_key(&X_FORWARDED_HOST)) {
        match original_host {
            Some(v) => {
                h.insert(X_FORWARDED_HOST, v);
            }
            None => {
                h.remove(&X_FORWARDED_HOST);
            }
        }
    }
    append_list(h, header::VIA, HeaderValue::from_static(VIA));
    if let Ok(v) = HeaderValue::from_str(&node.authority) {
        h.insert(header::HOST, v);
    }
}

/// Prepares node response headers for the viewer.
/// How a route maps paths: the upstream path prefix and the public one it stands for, so a
/// node's `Location` can be turned back into a path the gateway serves.
#[derive(Debug, Clone, Copy)]
pub struct PathMap<'a> {
    pub upstream: &'a str,
    pub public: &'a str,
}

pub fn to_downstream(
    h: &mut HeaderMap,
    node: &BaseUrl,
    public: &BaseUrl,
    map: Option<PathMap<'_>>,
) {
    remove_hop_by_hop(h);
    append_list(h, header::VIA, HeaderValue::from_static(VIA));
    let rewritten = h
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|loc| rewrite_location(loc, node, public, map));
    if let Some(new) = rewritten.and_then(|s| HeaderValue::from_str(&s).ok()) {
        h.insert(header::LOCATION, new);
    }
}

/// `Some(new)` when `loc` points at the node's origin: the public URL, with the route's
/// upstream prefix mapped back to its public one where the path has it, else the same path.
pub fn rewrite_location(
    loc: &str,
    node: &BaseUrl,
    public: &BaseUrl,
    map: Option<PathMap<'_>>,
) -> Option<String> {
    let origin = node.origin();
    if loc.len() < origin.len() || !loc[..origin.len()].eq_ignore_ascii_case(&origin) {
        return None;
    }
    let rest = &loc[origin.len()..];
    if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
        return None; // e.g. http://node:80 vs http://node:8080
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    let mapped = map.and_then(|m| {
        let tail = rest
            .strip_prefix(node.prefix.as_str())?
            .strip_prefix(m.upstream)?;
        Some(format!("{}{tail}", m.public))
    });
    let path = mapped.as_deref().unwrap_or(rest);
    Some(format!("{}{}{}", public.origin(), public.prefix, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> BaseUrl {
        BaseUrl::parse(s).expect("url")
    }

    #[test]
    fn framing_checks() {
        use http::Version;
        let mut h = HeaderMap::new();
        assert!(
            check_request(Version::HTTP_10, &h).is_ok(),
            "1.0 without Host"
        );
        assert!(
            check_request(Version::HTTP_11, &h).is_err(),
            "1.1 without Host"
        );
        h.insert("host", HeaderValue::from_static("a"));
        assert!(check_request(Version::HTTP_11, &h).is_ok());
        h.append("host", HeaderValue::from_static("a"));
        assert!(check_request(Version::HTTP_11, &h).is_err(), "two Host");
        assert!(
            check_request(Version::HTTP_10, &h).is_err(),
            "two Host on 1.0"
        );
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        for (te, ok) in [
            ("chunked", true),
            (" Chunked", true),
            ("gzip, chunked", false),
            ("chunked, chunked", false),
            ("identity", false),
        ] {
            h.insert("transfer-encoding", HeaderValue::from_static(te));
            assert_eq!(check_request(Version::HTTP_11, &h).is_ok(), ok, "{te}");
        }
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.append("transfer-encoding", HeaderValue::from_static("chunked"));
        assert!(check_request(Version::HTTP_11, &h).is_err(), "two lines");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.7",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("ip");
            assert_eq!(ip_value(ip), ip.to_string().as_str());
        }
    }

    #[test]
    fn hop_by_hop_goes() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "x"),
            ("proxy-foo", "x"),
            ("range", "bytes=0-1"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("range"));
    }

    fn client(peer: &str, ip: &str, trusted_peer: bool, secure: bool) -> Client {
        Client {
            ip: ip.parse().expect("ip"),
            peer: peer.parse().expect("addr"),
            trusted_peer,
            secure,
        }
    }

    /// What a viewer sent, forwarding headers of its own included.
    fn viewer_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("gw.example"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("cdn.example"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        h
    }

    #[test]
    fn a_trusted_proxys_forwarding_headers_are_kept_and_extended() {
        let mut h = viewer_headers();
        let c = client("127.0.0.9:5555", "10.0.0.1", true, false);
        to_upstream(&mut h, &c, &base("http://node:9001"), true);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "cdn.example");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=6.6.6.6");
        assert_eq!(h["host"], "node:9001");
        assert_eq!(h["via"], VIA);
        assert!(!h.contains_key("authorization"));
        // A trusted proxy that did not say: the connection's own.
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("gw.example"));
        to_upstream(&mut h, &c, &base("http://node:9001"), false);
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        assert_eq!(h["x-forwarded-host"], "gw.example");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn anyone_elses_forwarding_headers_are_replaced() {
        let mut h = viewer_headers();
        let c = client("[::ffff:198.51.100.4]:5555", "198.51.100.4", false, true);
        to_upstream(&mut h, &c, &base("http://node:9001"), true);
        assert_eq!(
            h["x-forwarded-for"], "198.51.100.4",
            "replaced, v4-mapped folded"
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-real-ip"], "198.51.100.4");
        assert_eq!(h["x-forwarded-host"], "gw.example");
        assert_eq!(h["x-forwarded-proto"], "https", "the connection was TLS");
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h["host"], "node:9001");
    }

    #[test]
    fn location_rewrite() {
        let node = base("http://127.0.0.1:9001");
        let public = base("https://gw.example");
        assert_eq!(
            rewrite_location("http://127.0.0.1:9001/files/x?a=1", &node, &public, None).as_deref(),
            Some("https://gw.example/files/x?a=1")
        );
        assert_eq!(
            rewrite_location("HTTP://127.0.0.1:9001", &node, &public, None).as_deref(),
            Some("https://gw.example/")
        );
        assert_eq!(
            rewrite_location("http://127.0.0.1:90011/x", &node, &public, None),
            None
        );
        assert_eq!(rewrite_location("/relative", &node, &public, None), None);
        assert_eq!(
            rewrite_location("http://other/x", &node, &public, None),
            None
        );
        // With the route's mapping, the node's path becomes the gateway's.
        let map = Some(PathMap {
            upstream: "/files/",
            public: "/vod/",
        });
        assert_eq!(
            rewrite_location("http://127.0.0.1:9001/files/new?x=1", &node, &public, map).as_deref(),
            Some("https://gw.example/vod/new?x=1")
        );
        assert_eq!(
            rewrite_location("http://127.0.0.1:9001/other", &node, &public, map).as_deref(),
            Some("https://gw.example/other"),
            "a path outside the route keeps its own"
        );
    }
}
