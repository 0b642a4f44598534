//! A client that sends forged credentials over and over must cost the gateway bounded memory,
//! whatever the route's auth mode: tokens, signed URLs and JWTs are checked without keeping
//! anything, and the auth hook's decision cache is bounded and keyed by a digest, never by the
//! credential itself. Each forged credential here is 4 KiB and distinct, so keeping them (or
//! one cache entry holding one) would grow the gateway by tens of MiB over the run.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::gateway;
use common::upstream::{echo, Reply, Upstream};

/// Forged requests per auth mode (four modes: 10,000 in all).
const PER_MODE: usize = 2_500;
/// Size of each forged credential.
const CREDENTIAL_BYTES: usize = 4096;

/// Sends `GET target` on a keep-alive connection and returns the answer's status (reading its
/// body by Content-Length so the connection can carry the next request).
fn exchange(r: &mut BufReader<TcpStream>, target: &str) -> u16 {
    let req = format!("GET {target} HTTP/1.1\r\nHost: gw\r\n\r\n");
    r.get_mut().write_all(req.as_bytes()).expect("write");
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("body");
    status
}

/// A distinct credential of `CREDENTIAL_BYTES` URL-safe characters.
fn forged(i: usize) -> String {
    let stem = format!("{i:08x}");
    stem.repeat(CREDENTIAL_BYTES / stem.len())
}

/// The route, and how a forged request for it looks, per auth mode; the status it must get.
fn target(mode: &str, i: usize) -> (String, u16) {
    let f = forged(i);
    match mode {
        "token" => (format!("/t/cam1/seg{i}.ts?token={f}"), 401),
        "signed" => (
            format!("/s/cam1/seg{i}.ts?expires=4102444800&kid=k1&sign={f}"),
            403,
        ),
        "jwt" => (format!("/j/cam1/seg{i}.ts?jwt={f}"), 401),
        _ => (format!("/h/cam1/seg{i}.ts?token={f}"), 403),
    }
}

#[test]
fn ten_thousand_forged_credentials_cost_bounded_memory() {
    let node = Upstream::start(echo);
    let hook = Upstream::start(|_| Reply::Status {
        status: 403,
        headers: vec![],
        body: b"no".to_vec(),
    });
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth]
tokens = ["the-real-token"]
signing_keys = [{{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }}]

[auth.jwt]
hs256_secret = "0123456789abcdef0123456789abcdef"

[auth.hook]
url = "{hook}/check"
cache_size = 1000

[[nodes]]
id = "a"
url = "{node}"

[[routes]]
path = "/t/{{stream}}/{{*rest}}"
action = "proxy"
to = "a"
auth = "token"

[[routes]]
path = "/s/{{*rest}}"
action = "proxy"
to = "a"
auth = "signed"

[[routes]]
path = "/j/{{stream}}/{{*rest}}"
action = "proxy"
to = "a"
auth = "jwt"

[[routes]]
path = "/h/{{stream}}/{{*rest}}"
action = "proxy"
to = "a"
auth = "hook"
"#,
        hook = hook.url(),
        node = node.url(),
    );
    let (gw, _dir) = gateway(&toml);
    let modes = ["token", "signed", "jwt", "hook"];
    let mut conns: Vec<BufReader<TcpStream>> = modes
        .iter()
        .map(|_| {
            let s = TcpStream::connect(gw.addr()).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            BufReader::new(s)
        })
        .collect();
    // Warm up first (allocator arenas, pools, the hook's connection), then measure.
    let warm = 200;
    for (m, c) in modes.iter().zip(conns.iter_mut()) {
        for i in 0..warm {
            let (t, want) = target(m, i);
            assert_eq!(exchange(c, &t), want, "{m} {i}");
        }
    }
    let before = gw.rss_kib();
    for (m, c) in modes.iter().zip(conns.iter_mut()) {
        for i in warm..warm + PER_MODE {
            let (t, want) = target(m, i);
            assert_eq!(exchange(c, &t), want, "{m} {i}");
        }
    }
    let after = gw.rss_kib();
    assert!(before > 0 && after > 0, "RSS readable");
    let kept_if_leaked = (4 * PER_MODE * CREDENTIAL_BYTES / 1024) as u64;
    let grew = after.saturating_sub(before);
    eprintln!(
        "gateway RSS {before} KiB -> {after} KiB over {} forged requests",
        4 * PER_MODE
    );
    assert!(
        grew < kept_if_leaked / 4,
        "RSS grew {grew} KiB over {} forged requests (keeping the credentials would be {kept_if_leaked} KiB)",
        4 * PER_MODE
    );
    assert!(
        node.requests().is_empty(),
        "no forged request reached the node"
    );
    // Every distinct forged credential on the hook route was a new question (no cache entry
    // matched), and the cache stayed within its bound: the hook saw each once.
    assert_eq!(hook.requests().len(), warm + PER_MODE);
}
