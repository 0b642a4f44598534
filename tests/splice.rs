//! Zero-copy proxied bodies (issue 15) through a real gateway in front of a real origin: plain
//! HTTP/1.1 downloads arrive byte-exact and spliced (the transport's `PooledBody::into_splice`
//! hands its connection over), Range and HEAD answers are right, and a TLS viewer and a cached
//! route take the copying path, counted in `/metrics`.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::tls::{curl, tls_listen, Ca};
use common::{access_line, get, origin, raw_request, spawn, Proc};

/// Body byte `i` of the test files: never zero.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// The test files: name and size.
const FILES: [(&str, usize); 4] = [
    ("one.bin", 1),
    ("small.bin", 64 * 1024 - 1),
    ("mid.bin", 1024 * 1024 + 3),
    ("big.bin", 20 * 1024 * 1024),
];

fn write_files(dir: &Path) {
    for (name, size) in FILES {
        let data: Vec<u8> = (0..size).map(pattern).collect();
        std::fs::write(dir.join(name), data).expect("write media");
    }
}

/// A gateway with a plain and a TLS listener (`addrs[0]`, `addrs[1]`), a plain proxy route
/// (`/vod/`) and a cached one (`/c/`) in front of `o`; `/metrics` open to loopback.
fn gateway(o: &Proc, ca: &Ca, dir: &Path) -> Proc {
    let leaf = ca.leaf(dir, "gw", &["gw.test"], "gw");
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0", {tls}]

[metrics]
allow = ["127.0.0.0/8"]

[[nodes]]
id = "o"
url = "http://{origin}"

[[routes]]
path = "/vod/{{*rest}}"
action = "proxy"
to = "o"
upstream = "/files/{{*rest}}"

[[routes]]
path = "/c/{{*rest}}"
action = "proxy"
to = "o"
upstream = "/files/{{*rest}}"
cache = "vod"
"#,
        tls = tls_listen(&[&leaf]),
        origin = o.addr(),
    );
    let path = dir.join("streamgate.toml");
    std::fs::write(&path, toml).expect("write config");
    spawn(&["serve", "--config", path.to_str().expect("utf-8")], 2)
}

/// The files, an origin serving them, a test CA and a gateway in front (plain and TLS
/// listeners); the temp dir and the origin live as long as the caller holds them.
fn setup() -> (tempfile::TempDir, Proc, Ca, Proc) {
    let dir = tempfile::tempdir().expect("tmp");
    write_files(dir.path());
    let o = origin(dir.path());
    let ca = Ca::new(dir.path());
    let gw = gateway(&o, &ca, dir.path());
    (dir, o, ca, gw)
}

/// The value of `series` in the gateway's `/metrics` (0 when absent).
fn metric(addr: SocketAddr, series: &str) -> u64 {
    let r = get(addr, "/metrics", "");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

fn fallbacks(addr: SocketAddr, reason: &str) -> u64 {
    metric(
        addr,
        &format!("streamgate_splice_fallbacks_total{{reason=\"{reason}\"}}"),
    )
}

fn check(body: &[u8], from: usize, len: usize) {
    assert_eq!(body.len(), len, "body length");
    if let Some(i) = (0..len).find(|&i| body[i] != pattern(from + i)) {
        panic!(
            "byte {} is {} (want {})",
            from + i,
            body[i],
            pattern(from + i)
        );
    }
}

/// Plain downloads of every size, keep-alive, Range and HEAD: byte-exact and well framed,
/// whichever path the bodies took; every plain GET with a body is spliced or counted as a
/// fallback.
#[test]
fn plain_downloads_ranges_and_head_are_exact() {
    let (_dir, _o, _ca, gw) = setup();
    let addr = gw.addrs[0];
    for (name, size) in FILES {
        let r = get(addr, &format!("/vod/{name}"), "");
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
        check(&r.body, 0, size);
    }
    // Two answers on one keep-alive connection.
    let r = raw_request(
        addr,
        "GET /vod/mid.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /vod/small.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let (first, second) = r.body.split_at(FILES[2].1);
    check(first, 0, FILES[2].1);
    let second = common::parse_response(second);
    assert_eq!(second.status, 200);
    check(&second.body, 0, FILES[1].1);
    // Range: a 206 with exactly the asked bytes.
    let r = get(addr, "/vod/big.bin", "Range: bytes=1000-1049999\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-1049999/{}", FILES[3].1).as_str())
    );
    check(&r.body, 1000, 1_049_000);
    // HEAD: the length, no body; never offered (not a GET).
    let r = raw_request(
        addr,
        "HEAD /vod/big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(FILES[3].1.to_string().as_str())
    );
    assert!(r.body.is_empty());
    assert!(fallbacks(addr, "method") >= 1, "HEAD is counted");
    // Every plain GET with a body: spliced, or declined by the transport.
    let gets = FILES.len() as u64 + 3;
    let spliced = metric(addr, "streamgate_splice_bodies_total");
    // (A pipelined answer may find the pipe still busy with the one before it.)
    let copied = fallbacks(addr, "source") + fallbacks(addr, "busy");
    assert_eq!(spliced + copied, gets);
    assert_eq!(fallbacks(addr, "pipes"), 0);
}

/// A TLS viewer and a cached route take the copying path, byte-exact, and are counted.
#[test]
fn tls_viewers_and_cached_routes_are_copied() {
    let (_dir, _o, ca, gw) = setup();
    let (plain, tls) = (gw.addrs[0], gw.addrs[1]);
    for flag in ["--http1.1", "--http2"] {
        let r = curl(&ca, "gw.test", tls, "/vod/mid.bin", &[flag]);
        assert_eq!((r.code, r.status), (0, 200), "{flag}: {r:?}");
        check(&r.body, 0, FILES[2].1);
    }
    assert_eq!(fallbacks(plain, "tls"), 2);
    for _ in 0..2 {
        let r = get(plain, "/c/mid.bin", "");
        assert_eq!(r.status, 200);
        check(&r.body, 0, FILES[2].1);
    }
    assert_eq!(fallbacks(plain, "cache"), 2);
    assert_eq!(metric(plain, "streamgate_splice_bodies_total"), 0);
}

/// Plain downloads really take the spliced path (the transport hands its connection over),
/// nearly every body byte is spliced, and a spliced answer is logged complete.
#[test]
fn plain_downloads_are_spliced() {
    let (_dir, _o, _ca, gw) = setup();
    let addr = gw.addrs[0];
    for (name, size) in FILES {
        let r = get(addr, &format!("/vod/{name}"), "");
        assert_eq!(r.status, 200, "{name}");
        check(&r.body, 0, size);
    }
    assert_eq!(
        metric(addr, "streamgate_splice_bodies_total"),
        FILES.len() as u64
    );
    assert_eq!(fallbacks(addr, "source"), 0);
    // A spliced answer ends like a copied one: logged complete, not as a viewer who left.
    let (name, size) = FILES[FILES.len() - 1];
    let r = get(addr, &format!("/vod/{name}"), "X-Request-Id: spliced-1\r\n");
    check(&r.body, 0, size);
    let line = access_line(&gw, "spliced-1");
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("complete"), "true", "{line}");
    assert_eq!(field("closed"), "\"\"", "{line}");
    let total: usize = FILES.iter().map(|(_, s)| s).sum::<usize>() + size;
    // Bytes read with the node's head arrive as `Data`, not spliced: most, not all.
    let bytes = metric(addr, "streamgate_splice_bytes_total");
    assert!(
        bytes as usize > total - 64 * 1024 * (FILES.len() + 1) && bytes as usize <= total,
        "{bytes} of {total} bytes spliced"
    );
}
