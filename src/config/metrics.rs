//! `[metrics]`: where `/metrics` is served and how many series the bounded families keep.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<String>,
    pub allow: Option<Vec<String>>,
    pub top_streams: Option<usize>,
    pub max_nodes: Option<usize>,
}

/// Validated `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Its own plain-HTTP listener serving only `/metrics`, without credentials (bind it to an
    /// address only the scraper reaches). `None`: `/metrics` is on the main listener instead,
    /// behind the admin token or `allow`.
    pub listen: Option<SocketAddr>,
    /// Sources that may read `/metrics` on the main listener without the admin token.
    pub allow: Vec<Cidr>,
    /// Streams with the most viewers that get their own `stream` label; the rest are summed
    /// into `stream="_other"`.
    pub top_streams: usize,
    /// Nodes beyond `[[nodes]]` (registered through the API or hooks) that get their own
    /// `node` label, first come first served; the rest are `node="_other"`.
    pub max_nodes: usize,
}

/// Most `top_streams` and `max_nodes` may be: each label value is a series in several families.
pub const MAX_LABELLED: usize = 1000;

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: None,
            allow: Vec::new(),
            top_streams: 20,
            max_nodes: 50,
        }
    }
}

/// An address block (`10.0.0.0/8`, `::1/128`; a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/BITS` or a bare `ADDR`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/bits block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match bits {
            None => max,
            Some(b) => match b.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, from a
    /// dual-stack listener) is matched as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Validates `[metrics]`.
pub(super) fn validate(raw: &RawMetrics) -> Result<MetricsSettings, ConfigError> {
    let d = MetricsSettings::default();
    let listen =
        match &raw.listen {
            None => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid("metrics.listen", format!("{a:?} is not an IP:port address"))
            })?),
        };
    let mut allow = Vec::new();
    for (i, c) in raw.allow.iter().flatten().enumerate() {
        allow.push(Cidr::parse(c).map_err(|why| invalid(format!("metrics.allow[{i}]"), why))?);
    }
    if listen.is_some() && !allow.is_empty() {
        return Err(invalid(
            "metrics.allow",
            "applies to /metrics on the main listener, which is off when metrics.listen is set \
             (restrict who reaches that address instead)",
        ));
    }
    let bounded = |key: &str, v: Option<usize>, default: usize| match v {
        None => Ok(default),
        Some(n) if n <= MAX_LABELLED => Ok(n),
        Some(_) => Err(invalid(
            format!("metrics.{key}"),
            format!("at most {MAX_LABELLED}: every value is a series in several families"),
        )),
    };
    Ok(MetricsSettings {
        listen,
        allow,
        top_streams: bounded("top_streams", raw.top_streams, d.top_streams)?,
        max_nodes: bounded("max_nodes", raw.max_nodes, d.max_nodes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn err(text: &str) -> String {
        crate::config::parse(text)
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn metrics_keys() {
        let s = crate::config::parse("").expect("defaults");
        assert_eq!(s.metrics, MetricsSettings::default());
        let s = crate::config::parse(
            "[metrics]\nallow = [\"127.0.0.1/32\", \"::1\"]\ntop_streams = 5\nmax_nodes = 0\n",
        )
        .expect("valid");
        assert_eq!(s.metrics.allow.len(), 2);
        assert_eq!((s.metrics.top_streams, s.metrics.max_nodes), (5, 0));
        let s = crate::config::parse("[metrics]\nlisten = \"127.0.0.1:9100\"\n").expect("valid");
        assert_eq!(
            s.metrics.listen,
            Some("127.0.0.1:9100".parse().expect("addr"))
        );
        assert!(err("[metrics]\nlisten = \"nope\"\n").starts_with("metrics.listen:"));
        assert!(
            err("[metrics]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n")
                .starts_with("metrics.allow[1]:")
        );
        assert!(
            err("[metrics]\nlisten = \"127.0.0.1:9100\"\nallow = [\"10.0.0.0/8\"]\n")
                .starts_with("metrics.allow:")
        );
        assert!(err("[metrics]\ntop_streams = 5000\n").starts_with("metrics.top_streams:"));
        assert!(err("[metrics]\nmax_nodes = 5000\n").starts_with("metrics.max_nodes:"));
        let clash =
            "[server]\nlisten = \"127.0.0.1:9100\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n";
        assert!(err(clash).starts_with("metrics.listen:"));
        // Port 0 twice asks for two free ports: no clash.
        crate::config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        )
        .expect("valid");
        assert!(err("[metrics]\ntop = 3\n").contains("top"));
    }

    #[test]
    fn cidr_blocks() {
        let c = Cidr::parse("10.1.0.0/16").expect("valid");
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("::1")));
        let host = Cidr::parse("127.0.0.1").expect("bare address");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        assert!(host.contains(ip("::ffff:127.0.0.1")), "v4-mapped peer");
        let any = Cidr::parse("0.0.0.0/0").expect("valid");
        assert!(any.contains(ip("203.0.113.9")));
        let v6 = Cidr::parse("fd00::/8").expect("valid");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Cidr::parse("::/0")
            .expect("valid")
            .contains(ip("2001:db8::1")));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.0/", "/8"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
