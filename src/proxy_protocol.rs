//! The PROXY protocol (HAProxy's, v1 text and v2 binary): an L4 load balancer in front of the
//! gateway sends one header before the connection's own bytes, naming the client it accepted
//! the connection from. Only listeners marked `proxy_protocol = true` read it; there it must
//! come first, complete, within [`ServeOptions::proxy_protocol_timeout`] and [`MAX_HEADER`]
//! bytes, or the connection is closed.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>. What is honoured:
//! `TCP4`/`TCP6` (v1) and `PROXY` over `INET`/`INET6` `STREAM` (v2) name the client; `UNKNOWN`
//! (v1), `LOCAL` (v2, the balancer's own health checks) and the families we do not route
//! (`UNSPEC`, `UNIX`, `DGRAM`) keep the TCP peer, as the spec asks. v2 TLVs are skipped.
//!
//! [`ServeOptions::proxy_protocol_timeout`]: crate::server::ServeOptions::proxy_protocol_timeout

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The v2 signature: starts with `\r\n`, so no HTTP request (and no v1 header) looks like it.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header the spec allows, CRLF included (`PROXY UNKNOWN` with two full IPv6
/// addresses and ports).
pub const V1_MAX: usize = 107;
/// The longest v2 header we accept, 16-byte fixed part included. The addresses need at most
/// 16 + 216 bytes (`UNIX`); the rest is TLVs (TLS details, cloud endpoint ids), which real
/// balancers keep well under this. The bound caps what a connection can make us buffer.
pub const MAX_HEADER: usize = 4096;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client the balancer accepted the connection from; `None` when the header says to
    /// keep the TCP peer (`UNKNOWN`, `LOCAL`, a family we do not route).
    pub source: Option<SocketAddr>,
    /// The address the client connected to (on the balancer), when named.
    pub destination: Option<SocketAddr>,
    /// 1 (text) or 2 (binary).
    pub version: u8,
}

/// What [`parse`] made of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// So far a valid start: read more.
    Incomplete,
    /// A whole header, `len` bytes long; what follows is the connection's own data.
    Done { header: Header, len: usize },
}

/// Why a connection on a PROXY listener was closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The first bytes are neither a v1 nor a v2 header (a client talking to the balancer's
    /// listener directly, or a balancer not configured to send the header).
    #[error("no PROXY protocol header (the connection began with {0:?})")]
    Missing(String),
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    #[error("connection closed after {0} bytes, before the PROXY protocol header ended")]
    Truncated(usize),
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Parses a PROXY header at the start of `buf`. Never reads past what it needs: `Done.len`
/// says where the connection's own bytes start.
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    let sig = &V2_SIGNATURE[..buf.len().min(V2_SIGNATURE.len())];
    if buf.starts_with(sig) && !buf.is_empty() {
        return parse_v2(buf);
    }
    let pre = &V1_PREFIX[..buf.len().min(V1_PREFIX.len())];
    if buf.starts_with(pre) {
        return parse_v1(buf);
    }
    Err(Error::Missing(
        String::from_utf8_lossy(&buf[..buf.len().min(16)]).into_owned(),
    ))
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        // Refuse binary early rather than wait for a CRLF that will not make it valid.
        if window
            .iter()
            .any(|&b| !(b == b'\r' || (0x20..0x7f).contains(&b)))
        {
            return Err(Error::Malformed("a v1 header is printable ASCII"));
        }
        if window.len() >= V1_MAX {
            return Err(Error::TooLong(V1_MAX));
        }
        return Ok(Parsed::Incomplete);
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(Error::Malformed("a v1 header ends with CRLF"));
    }
    let line = std::str::from_utf8(&window[..lf - 1])
        .map_err(|_| Error::Malformed("a v1 header is printable ASCII"))?;
    if !line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::Malformed("a v1 header is printable ASCII"));
    }
    let len = lf + 1;
    let mut words = line.split(' ');
    words.next(); // "PROXY", checked by `parse`
    let header = match words.next() {
        // The rest of an UNKNOWN line may be anything; the receiver ignores it.
        Some("UNKNOWN") => Header {
            source: None,
            destination: None,
            version: 1,
        },
        Some(proto @ ("TCP4" | "TCP6")) => {
            let v6 = proto == "TCP6";
            let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
                words.next(),
                words.next(),
                words.next(),
                words.next(),
                words.next(),
            ) else {
                return Err(Error::Malformed(
                    "TCP4/TCP6 takes source, destination, source port, destination port",
                ));
            };
            let ip = |s: &str| -> Result<IpAddr, Error> {
                if v6 {
                    s.parse::<Ipv6Addr>()
                        .map(IpAddr::V6)
                        .map_err(|_| Error::Malformed("TCP6 needs IPv6 addresses"))
                } else {
                    s.parse::<Ipv4Addr>()
                        .map(IpAddr::V4)
                        .map_err(|_| Error::Malformed("TCP4 needs dotted-quad IPv4 addresses"))
                }
            };
            Header {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
                version: 1,
            }
        }
        _ => return Err(Error::Malformed("v1 protocol is TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Done { header, len })
}

/// A port as v1 writes it: 1 to 5 decimal digits, at most 65535 (no sign, no spaces).
fn port(s: &str) -> Result<u16, Error> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Malformed("a port is a decimal number"));
    }
    s.parse()
        .map_err(|_| Error::Malformed("a port is at most 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Error> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Error::Malformed("v2 header with a version other than 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Error::Malformed("v2 command is LOCAL or PROXY")),
    };
    let fam = buf[13];
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body_len;
    if len > MAX_HEADER {
        return Err(Error::TooLong(MAX_HEADER));
    }
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if family > 3 || transport > 2 {
        return Err(Error::Malformed("v2 address family or transport unknown"));
    }
    // The address block each family needs; a shorter length is a broken header.
    let need = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body_len < need && !local {
        return Err(Error::Malformed("v2 length shorter than its addresses"));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let a = &buf[16..len];
    let keep_peer = Header {
        source: None,
        destination: None,
        version: 2,
    };
    // LOCAL: the balancer speaking for itself (health checks): its own address stands.
    // UNSPEC, UNIX, DGRAM: nothing we route by; the spec says to use the real endpoints.
    let header = if local || transport != 1 {
        keep_peer
    } else {
        match family {
            1 => {
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                Header {
                    source: Some(SocketAddr::new(ip(0), be16(a, 8))),
                    destination: Some(SocketAddr::new(ip(4), be16(a, 10))),
                    version: 2,
                }
            }
            2 => {
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                Header {
                    source: Some(SocketAddr::new(ip(0), be16(a, 32))),
                    destination: Some(SocketAddr::new(ip(16), be16(a, 34))),
                    version: 2,
                }
            }
            _ => keep_peer,
        }
    };
    Ok(Parsed::Done { header, len })
}

fn be16(a: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([a[o], a[o + 1]])
}

/// Reads a PROXY header from the start of `io` within `timeout`. Returns the header and any
/// bytes read past it (the start of the connection's own data), to be served first: see
/// [`Rewind`].
pub async fn read<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> Result<(Header, Bytes), Error> {
    tokio::time::timeout(timeout, read_unbounded(io))
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

async fn read_unbounded<R: AsyncRead + Unpin>(io: &mut R) -> Result<(Header, Bytes), Error> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match parse(&buf)? {
            Parsed::Done { header, len } => {
                buf.advance(len);
                return Ok((header, buf.freeze()));
            }
            Parsed::Incomplete => {
                // `parse` refuses anything over MAX_HEADER, so this stays bounded.
                buf.reserve(512);
                if io.read_buf(&mut buf).await? == 0 {
                    return Err(Error::Truncated(buf.len()));
                }
            }
        }
    }
}

/// `inner` with `prefix` served first: the bytes read past a PROXY header belong to the
/// connection (an HTTP request, a TLS ClientHello).
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The stream below (writes go straight to it; `splice(2)` needs its socket).
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Puts `bytes` back in front of what is still to be read (the own HTTP/1.1 server hands
    /// hyper a connection with the head it read ahead, `crate::http1`).
    pub fn put_back(&mut self, bytes: Bytes) {
        self.prefix = if self.prefix.is_empty() {
            bytes
        } else {
            let mut joined = bytes::BytesMut::with_capacity(bytes.len() + self.prefix.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.prefix);
            joined.freeze()
        };
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Builds a v2 header (tests): `command` 0 (LOCAL) or 1 (PROXY), the family/transport byte,
/// then the address block and TLVs.
#[cfg(test)]
fn v2_header(command: u8, family_transport: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family_transport);
    let len = u16::try_from(addresses.len() + tlvs.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(addresses);
    out.extend_from_slice(tlvs);
    out
}

/// A v2 `PROXY` header for a TCP connection from `src` to `dst` (tests).
#[cfg(test)]
fn v2_tcp(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut a = Vec::new();
    let fam = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            a.extend_from_slice(&s.octets());
            a.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v) => v.to_ipv6_mapped(),
                IpAddr::V6(v) => v,
            };
            a.extend_from_slice(&v6(s).octets());
            a.extend_from_slice(&v6(d).octets());
            0x21
        }
    };
    a.extend_from_slice(&src.port().to_be_bytes());
    a.extend_from_slice(&dst.port().to_be_bytes());
    v2_header(1, fam, &a, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn done(buf: &[u8]) -> (Header, usize) {
        match parse(buf) {
            Ok(Parsed::Done { header, len }) => (header, len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn malformed(buf: &[u8]) -> String {
        match parse(buf) {
            Err(e @ (Error::Malformed(_) | Error::TooLong(_) | Error::Missing(_))) => e.to_string(),
            other => panic!(
                "{:?}: expected an error, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let line = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let (h, len) = done(line);
        assert_eq!(h.source, Some(sa("192.0.2.10:56324")));
        assert_eq!(h.destination, Some(sa("198.51.100.1:443")));
        assert_eq!(h.version, 1);
        assert_eq!(&line[len..], b"GET / HTTP/1.1\r\n", "stops at the CRLF");
        let (h, _) = done(b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n");
        assert_eq!(h.source, Some(sa("[2001:db8::1]:65535")));
        assert_eq!(h.destination, Some(sa("[2001:db8::2]:0")));
    }

    #[test]
    fn v1_unknown_keeps_the_peer() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        ] {
            let (h, len) = done(line);
            assert_eq!((h.source, h.destination), (None, None));
            assert_eq!(len, line.len());
        }
    }

    #[test]
    fn v1_longest_header_fits() {
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY UNKNOWN {ip} {ip} 65535 65535\r\n");
        assert_eq!(line.len(), V1_MAX, "the spec's worst case");
        assert_eq!(done(line.as_bytes()).1, V1_MAX);
        let line = format!("PROXY TCP6 {ip} {ip} 65535 65535\r\n");
        let (h, _) = done(line.as_bytes());
        assert_eq!(h.source.map(|s| s.port()), Some(65535));
    }

    #[test]
    fn v1_incomplete_until_the_crlf() {
        let line = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n";
        for n in 0..line.len() {
            assert_eq!(
                parse(&line[..n]).ok(),
                Some(Parsed::Incomplete),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\n"[..], // LF without CR
            b"PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",        // a port short
            b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443 x\r\n",  // a word too many
            b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",         // family mismatch
            b"PROXY TCP6 192.0.2.10 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.10  198.51.100.1 1 2\r\n", // double space
            b"PROXY TCP4 192.0.2.010 198.51.100.1 1 2\r\n", // octal-looking octet
            b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 +1 2\r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 2\r\n",
            b"PROXY UDP4 192.0.2.10 198.51.100.1 1 2\r\n",
            b"PROXY tcp4 192.0.2.10 198.51.100.1 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 192.0.2.10 198.51.100.1 1 2\x00\r\n",
            b"PROXY TCP4 \xff",
        ] {
            malformed(bad);
        }
        // No CRLF within 107 bytes.
        let long = format!("PROXY UNKNOWN {}", "x".repeat(200));
        assert!(malformed(long.as_bytes()).contains("longer than 107"));
    }

    #[test]
    fn anything_else_is_missing() {
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXX",
            b"\x16\x03\x01", // a TLS ClientHello
            b"\r\n\r\n\x00\r\nQUIX",
            b"proxy ",
        ] {
            assert!(malformed(other).contains("no PROXY"), "{other:?}");
        }
        assert_eq!(parse(b"").ok(), Some(Parsed::Incomplete));
        assert_eq!(parse(b"PRO").ok(), Some(Parsed::Incomplete));
        assert_eq!(parse(b"\r\n\r\n").ok(), Some(Parsed::Incomplete));
    }

    #[test]
    fn v2_inet_and_inet6() {
        let h4 = v2_tcp(sa("192.0.2.10:56324"), sa("198.51.100.1:443"));
        let mut buf = h4.clone();
        buf.extend_from_slice(b"GET /");
        let (h, len) = done(&buf);
        assert_eq!(len, h4.len());
        assert_eq!(h.source, Some(sa("192.0.2.10:56324")));
        assert_eq!(h.destination, Some(sa("198.51.100.1:443")));
        assert_eq!(h.version, 2);
        let h6 = v2_tcp(sa("[2001:db8::7]:1"), sa("[2001:db8::8]:2"));
        let (h, len) = done(&h6);
        assert_eq!(len, 16 + 36);
        assert_eq!(h.source, Some(sa("[2001:db8::7]:1")));
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut a = vec![192, 0, 2, 10, 198, 51, 100, 1];
        a.extend_from_slice(&1234u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        // PP2_TYPE_AUTHORITY "example.com", then a NOOP.
        let mut tlv = vec![0x02, 0, 11];
        tlv.extend_from_slice(b"example.com");
        tlv.extend_from_slice(&[0x04, 0, 2, 0, 0]);
        let hdr = v2_header(1, 0x11, &a, &tlv);
        let (h, len) = done(&hdr);
        assert_eq!(len, hdr.len());
        assert_eq!(h.source, Some(sa("192.0.2.10:1234")));
    }

    #[test]
    fn v2_local_unspec_and_unix_keep_the_peer() {
        let inet = v2_tcp(sa("192.0.2.10:1"), sa("192.0.2.11:2"));
        // LOCAL with addresses: ignored.
        let mut local = inet.clone();
        local[12] = 0x20;
        assert_eq!(done(&local).0.source, None);
        // LOCAL with nothing at all (what health checks send).
        assert_eq!(done(&v2_header(0, 0x00, &[], &[])).0.source, None);
        assert_eq!(done(&v2_header(1, 0x00, &[], &[])).0.source, None, "UNSPEC");
        assert_eq!(
            done(&v2_header(1, 0x31, &[0; 216], &[])).0.source,
            None,
            "UNIX"
        );
        let mut dgram = inet.clone();
        dgram[13] = 0x12;
        assert_eq!(done(&dgram).0.source, None, "UDP");
    }

    #[test]
    fn v2_incomplete_until_its_length() {
        let hdr = v2_tcp(sa("192.0.2.10:1"), sa("192.0.2.11:2"));
        for n in 0..hdr.len() {
            assert_eq!(parse(&hdr[..n]).ok(), Some(Parsed::Incomplete), "{n} bytes");
        }
    }

    #[test]
    fn v2_refusals() {
        let good = v2_tcp(sa("192.0.2.10:1"), sa("192.0.2.11:2"));
        let mut v1 = good.clone();
        v1[12] = 0x11; // version 1 in a v2 header
        assert!(malformed(&v1).contains("version"));
        let mut cmd = good.clone();
        cmd[12] = 0x22;
        assert!(malformed(&cmd).contains("command"));
        let mut fam = good.clone();
        fam[13] = 0x41;
        assert!(malformed(&fam).contains("family"));
        let mut proto = good.clone();
        proto[13] = 0x13;
        assert!(malformed(&proto).contains("family"));
        let short = v2_header(1, 0x11, &[0; 11], &[]);
        assert!(malformed(&short).contains("shorter"));
        let short6 = v2_header(1, 0x21, &[0; 12], &[]);
        assert!(malformed(&short6).contains("shorter"));
        // A length past the bound is refused from the fixed part alone.
        let mut huge = good[..16].to_vec();
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(malformed(&huge).contains("longer than 4096"));
    }

    #[tokio::test]
    async fn read_returns_what_follows_the_header() {
        let mut bytes = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET / HTTP/1.1\r\n\r\n".to_vec();
        let mut r = &bytes[..];
        let (h, rest) = read(&mut r, Duration::from_secs(1)).await.expect("header");
        assert_eq!(h.source, Some(sa("192.0.2.1:1")));
        let mut all = rest.to_vec();
        all.extend_from_slice(r);
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\n");
        // Rewind serves the rest first, then the stream.
        let mut rw = Rewind::new(Bytes::from_static(b"ab"), &b"cd"[..]);
        let mut out = String::new();
        rw.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "abcd");
        // Bytes put back come before what was still unread.
        let mut rw = Rewind::new(Bytes::from_static(b"cd"), &b"ef"[..]);
        rw.put_back(Bytes::from_static(b"ab"));
        let mut out = String::new();
        rw.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "abcdef");
        bytes.truncate(20);
        let mut r = &bytes[..];
        match read(&mut r, Duration::from_secs(1)).await {
            Err(Error::Truncated(20)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_header_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 192.0.2.1")
            .await
            .expect("write");
        match read(&mut server, Duration::from_secs(5)).await {
            Err(Error::Timeout(d)) => assert_eq!(d, Duration::from_secs(5)),
            other => panic!("{other:?}"),
        }
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        /// Bytes that start like a header more often than uniformly random bytes would.
        fn near_header() -> impl Strategy<Value = Vec<u8>> {
            let v1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n".to_vec();
            let v2 = v2_tcp(
                "192.0.2.1:1".parse().expect("addr"),
                "192.0.2.2:2".parse().expect("addr"),
            );
            (
                prop_oneof![Just(v1), Just(v2), Just(Vec::new())],
                proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
                proptest::collection::vec(any::<u8>(), 0..300),
                any::<prop::sample::Index>(),
            )
                .prop_map(|(mut base, flips, tail, cut)| {
                    base.extend_from_slice(&tail);
                    if !base.is_empty() {
                        for (i, b) in flips {
                            let at = i.index(base.len());
                            base[at] = b;
                        }
                        base.truncate(cut.index(base.len() + 1));
                    }
                    base
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn on_any_bytes(buf in near_header()) {
                match parse(&buf) {
                    Ok(Parsed::Done { len, .. }) => prop_assert!(len <= buf.len() && len <= MAX_HEADER),
                    Ok(Parsed::Incomplete) => prop_assert!(buf.len() < MAX_HEADER),
                    Err(_) => {}
                }
            }

            #[test]
            fn on_random_bytes(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse(&buf);
            }

            /// A prefix of a valid header is never an error, and the whole one parses the same
            /// however it was split.
            #[test]
            fn prefixes_are_incomplete(src in any::<[u8; 4]>(), sp in any::<u16>(), v2 in any::<bool>()) {
                let src = SocketAddr::from((src, sp));
                let dst: SocketAddr = "192.0.2.2:443".parse().expect("addr");
                let hdr = if v2 {
                    v2_tcp(src, dst)
                } else {
                    format!("PROXY TCP4 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port()).into_bytes()
                };
                for n in 0..hdr.len() {
                    prop_assert_eq!(parse(&hdr[..n]).ok(), Some(Parsed::Incomplete));
                }
                match parse(&hdr) {
                    Ok(Parsed::Done { header, len }) => {
                        prop_assert_eq!(len, hdr.len());
                        prop_assert_eq!(header.source, Some(src));
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
