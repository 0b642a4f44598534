//! Who a request really comes from. Resolved once per request by [`resolve`] and handed to
//! everything that asks (per-IP limits, the access log, auth, forwarding headers).
//!
//! The connection's peer is the TCP peer, or the client a PROXY protocol header named on a
//! listener marked for it (the L4 balancer is believed, see [`crate::proxy_protocol`]). When
//! that peer is in `server.trusted_proxies`, `X-Forwarded-For` is walked from the right,
//! skipping trusted hops, like nginx's `real_ip_recursive on`: the first address that is not
//! a trusted proxy is the client. Anyone else's forwarding headers are not believed (and are
//! replaced before the request goes to a node).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;

use crate::server::ConnInfo;

/// A network: an address and how many leading bits of it are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `::1/128`, or a bare address (one host). An IPv4-mapped IPv6 network
    /// (`::ffff:10.0.0.0/104`) is taken as the IPv4 one it maps. Host bits must be zero, so a
    /// typo such as `10.0.0.1/8` is caught rather than silently widened.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        let (net, prefix) = match net {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (net, prefix),
            },
            _ => (net, prefix),
        };
        let c = Self { net, prefix };
        if c.masked(net) != net {
            return Err(format!(
                "{s:?} has bits set past its /{prefix} prefix (did you mean {}/{prefix}?)",
                c.masked(net)
            ));
        }
        Ok(c)
    }

    /// `ip` with the bits past the prefix cleared.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v) & m).into())
            }
            IpAddr::V6(v) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v) & m))
            }
        }
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && self.masked(ip) == self.net
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// `server.trusted_proxies`: the networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(nets: Vec<Cidr>) -> Self {
        Self(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Who a request comes from, as everything past the listener sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The real client (IPv4-mapped IPv6 folded to IPv4): what per-IP limits count, what the
    /// access log, the auth hook, IP-bound signatures and `$remote_addr` are about.
    pub ip: IpAddr,
    /// The hop the gateway talks to: the TCP peer, or the PROXY header's source.
    pub peer: SocketAddr,
    /// `peer` is a trusted proxy: its `X-Forwarded-*` headers are believed and passed on.
    pub trusted_peer: bool,
    /// The connection to us is TLS (so, lacking a trusted proxy's word, the viewer used https).
    pub secure: bool,
}

/// Resolves the client of a request on `conn` with `headers`.
pub fn resolve(conn: ConnInfo, headers: &HeaderMap, trusted: &TrustedProxies) -> Client {
    let peer_ip = conn.peer.ip().to_canonical();
    let trusted_peer = !trusted.is_empty() && trusted.contains(peer_ip);
    let ip = if trusted_peer {
        from_forwarded_for(peer_ip, headers, trusted)
    } else {
        peer_ip
    };
    Client {
        ip,
        peer: conn.peer,
        trusted_peer,
        secure: conn.secure,
    }
}

/// Walks `X-Forwarded-For` (every line, in order, comma-separated) from the right: each
/// trusted address is a proxy that handed the request on; the first untrusted one is the
/// client. If every entry is trusted, the leftmost is. An entry that is not an address (a
/// trusted hop passed on garbage, or `unknown`) ends the walk at the last address reached.
fn from_forwarded_for(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer;
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for entry in line.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip.to_canonical();
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:5000`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:5000`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| Cidr::parse(n).expect("cidr")).collect())
    }

    fn conn(peer: &str) -> ConnInfo {
        ConnInfo::plain(SocketAddr::new(ip(peer), 40000))
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).expect("value"));
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").expect("v4");
        assert!(c.contains(ip("10.255.1.2")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "v4-mapped counts as v4");
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(
            !c.contains(ip("::a00:1")),
            "a v6 address is not in a v4 net"
        );
        let c = Cidr::parse("::1/128").expect("v6");
        assert!(c.contains(ip("::1")));
        assert!(!c.contains(ip("::2")));
        let host = Cidr::parse("192.0.2.7").expect("bare address");
        assert_eq!(host.to_string(), "192.0.2.7/32");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let all = Cidr::parse("0.0.0.0/0").expect("everything v4");
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        assert!(Cidr::parse("::/0")
            .expect("everything v6")
            .contains(ip("2001:db8::1")));
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").expect("mapped");
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(Cidr::parse("2001:db8::/32")
            .expect("v6 net")
            .contains(ip("2001:db8:ffff::1")));
    }

    #[test]
    fn cidr_refusals_say_why() {
        for (bad, why) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "0 to 32"),
            ("::/129", "0 to 128"),
            ("10.0.0.0/+8", "0 to 32"),
            ("10.0.0.0/", "0 to 32"),
            ("ten/8", "not an IP address"),
            ("", "not an IP address"),
            ("10.0.0.0/8/8", "0 to 32"),
        ] {
            let e = Cidr::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let c = resolve(
            conn("198.51.100.7"),
            &xff(&["192.0.2.1"]),
            &trusted(&["10.0.0.0/8"]),
        );
        assert_eq!(c.ip, ip("198.51.100.7"));
        assert!(!c.trusted_peer);
        // Nobody is trusted by default.
        let c = resolve(
            conn("127.0.0.1"),
            &xff(&["192.0.2.1"]),
            &TrustedProxies::default(),
        );
        assert_eq!(c.ip, ip("127.0.0.1"));
    }

    #[test]
    fn a_trusted_peer_walks_right_to_left_past_trusted_hops() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        let r = |lines: &[&str]| resolve(conn("127.0.0.1"), &xff(lines), &t).ip;
        assert_eq!(r(&[]), ip("127.0.0.1"), "no header: the peer");
        assert_eq!(r(&["192.0.2.1"]), ip("192.0.2.1"));
        // A forged entry on the left stays on the left: the rightmost untrusted one wins.
        assert_eq!(r(&["6.6.6.6, 192.0.2.1, 10.0.0.5"]), ip("192.0.2.1"));
        assert_eq!(
            r(&["6.6.6.6, 192.0.2.1", "10.0.0.5, 10.1.1.1"]),
            ip("192.0.2.1")
        );
        assert_eq!(r(&["6.6.6.6", "192.0.2.1 , 10.0.0.5"]), ip("192.0.2.1"));
        // All trusted: the leftmost.
        assert_eq!(r(&["10.0.0.9, 10.0.0.5"]), ip("10.0.0.9"));
        // Ports, brackets, IPv6, v4-mapped.
        assert_eq!(r(&["192.0.2.1:5555"]), ip("192.0.2.1"));
        assert_eq!(r(&["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(r(&["[2001:db8::1]"]), ip("2001:db8::1"));
        assert_eq!(r(&["2001:db8::1"]), ip("2001:db8::1"));
        assert_eq!(r(&["::ffff:192.0.2.1"]), ip("192.0.2.1"));
        // Garbage ends the walk at the last address reached.
        assert_eq!(r(&["192.0.2.1, unknown, 10.0.0.5"]), ip("10.0.0.5"));
        assert_eq!(r(&["192.0.2.1, nonsense"]), ip("127.0.0.1"));
        assert_eq!(
            r(&["192.0.2.1,, 10.0.0.5"]),
            ip("192.0.2.1"),
            "empty entries skipped"
        );
    }

    #[test]
    fn a_v4_mapped_peer_is_matched_and_reported_as_v4() {
        let t = trusted(&["127.0.0.0/8"]);
        let c = resolve(conn("::ffff:127.0.0.1"), &xff(&["192.0.2.9"]), &t);
        assert!(c.trusted_peer);
        assert_eq!(c.ip, ip("192.0.2.9"));
        let c = resolve(conn("::ffff:198.51.100.1"), &HeaderMap::new(), &t);
        assert_eq!(c.ip, ip("198.51.100.1"));
    }
}
