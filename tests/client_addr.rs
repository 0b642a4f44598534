//! Real client addresses (issue 12) against a real gateway process: `X-Forwarded-For` believed
//! only from `server.trusted_proxies` (walked right to left), replaced from anyone else; the
//! resolved client used by the access log, per-IP limits, IP-bound signatures, `$remote_addr`
//! and the auth hook; PROXY protocol v1 and v2 honoured on the listener marked for it only,
//! and a bad, truncated or slow header there closing the connection within its bound.
//!
//! Everything runs on loopback: the addresses in PROXY headers and `X-Forwarded-For`
//! (192.0.2.x, 198.51.100.x, 2001:db8::x: documentation ranges) are just bytes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::flv::{expect_live_start, FlvStream};
use common::upstream::{echo, Reply, Seen, Upstream};
use common::{
    access_line, media_dir, origin, parse_response, spawn, wait_until, Proc, RawResponse,
};

const T: Duration = Duration::from_secs(20);

/// Starts a gateway with `toml` and waits for its `listeners` ready lines.
fn gateway(toml: &str, listeners: usize) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streamgate.toml");
    std::fs::write(&path, toml).expect("write config");
    let p = spawn(
        &["serve", "--config", path.to_str().expect("utf-8")],
        listeners,
    );
    (p, dir)
}

/// `GET path` with request id `rid` and extra header lines, as raw bytes.
fn get_req(path: &str, rid: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw.test\r\nX-Request-Id: {rid}\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `bytes` on a new connection to `addr` and reads until the gateway closes.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(bytes).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf
}

fn request(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let buf = exchange(addr, bytes);
    parse_response(&buf)
}

/// The node's echo of the forwarding headers it was sent.
fn forwarded(r: &RawResponse) -> (String, String, String, String) {
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    let s = |k: &str| h[k].as_str().unwrap_or("").to_string();
    (
        s("x-forwarded-for"),
        s("x-real-ip"),
        s("x-forwarded-proto"),
        s("x-forwarded-host"),
    )
}

/// The value of `key=` in an access-log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// A v1 header for a TCP4 connection.
fn v1(src: &str, sport: u16) -> Vec<u8> {
    format!("PROXY TCP4 {src} 192.0.2.1 {sport} 443\r\n").into_bytes()
}

/// A v2 header, built byte by byte from the spec (not with the gateway's own code): the
/// signature, version 2 / command PROXY, AF_INET + STREAM, the address block, then a TLV.
fn v2_inet(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
    h.push(0x21);
    h.push(0x11);
    let tlv = [0x04, 0x00, 0x02, 0x00, 0x00]; // PP2_TYPE_NOOP, two bytes
    h.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[192, 0, 2, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h.extend_from_slice(&tlv);
    h
}

/// A v2 header for AF_INET6 + STREAM.
fn v2_inet6(src: [u8; 16], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0x00, 36]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

/// A v2 LOCAL header (what a balancer's own health check sends).
fn v2_local() -> Vec<u8> {
    let mut h = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    h
}

fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b].concat()
}

#[test]
fn a_forged_forwarded_for_from_an_untrusted_peer_is_replaced_and_not_believed() {
    let node = Upstream::start(echo);
    let (gw, _d) = gateway(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [limits]\nrequests_per_second_per_ip = 1\nburst = 2\n\
             [[nodes]]\nid = \"a\"\nurl = \"{}\"\n\
             [[routes]]\npath = \"/p/{{*rest}}\"\naction = \"proxy\"\nto = \"a\"\n",
            node.url()
        ),
        1,
    );
    let forged = "X-Forwarded-For: 192.0.2.66, 198.51.100.66\r\nX-Real-IP: 192.0.2.66\r\n\
                  X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=192.0.2.66\r\n";
    let r = request(gw.addr(), &get_req("/p/x", "forged-1", forged));
    let (xff, real, proto, host) = forwarded(&r);
    assert_eq!(xff, "127.0.0.1", "replaced, not appended to");
    assert_eq!(real, "127.0.0.1");
    assert_eq!(proto, "http", "what the connection was");
    assert_eq!(host, "gw.test", "the Host the viewer sent");
    assert!(r.json()["headers"].get("forwarded").is_none());
    let line = access_line(&gw, "forged-1");
    assert_eq!(field(&line, "client"), "127.0.0.1", "{line}");
    assert!(field(&line, "peer").starts_with("127.0.0.1:"), "{line}");
    assert!(!line.contains("192.0.2.66"), "{line}");
    // Nor does a forged header buy a fresh rate budget: every request is 127.0.0.1's.
    let mut refused = false;
    for i in 0..10 {
        let r = request(
            gw.addr(),
            &get_req(
                "/p/x",
                &format!("forged-r{i}"),
                &format!("X-Forwarded-For: 192.0.2.{i}\r\n"),
            ),
        );
        if r.status == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "forged addresses shared one bucket");
}

/// `/p/` proxies to the echo node; `/s/` needs a native signed URL, `/sl/` an nginx
/// secure_link one, `/dl/` answers with a signed `Location`, `/h/{stream}/` asks the hook.
fn trusted_config(node: &Upstream, hook: &Upstream, limits: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]

[auth]
signing_keys = [{{ id = "k1", secret = "{SECRET}" }}]
secure_link_secret_expression = "$secure_link_expires$uri$remote_addr {SL_SECRET}"

[auth.hook]
url = "{hook}/check"
cache_size = 0

[limits]
{limits}

[[nodes]]
id = "a"
url = "{node}"

[[routes]]
path = "/p/{{*rest}}"
action = "proxy"
to = "a"

[[routes]]
path = "/s/{{*rest}}"
action = "proxy"
to = "a"
auth = "signed"

[[routes]]
path = "/sl/{{*rest}}"
action = "proxy"
to = "a"
auth = "secure_link"

[[routes]]
path = "/dl/{{*rest}}"
action = "redirect"
to = "http://127.0.0.1:9"
upstream = "/protected/{{*rest}}"
sign_location = true

[[routes]]
path = "/h/{{stream}}/{{*rest}}"
action = "proxy"
to = "a"
auth = "hook"
"#,
        node = node.url(),
        hook = hook.url(),
    )
}

const SECRET: &str = "client-addr-secret-0123456789";
const SL_SECRET: &str = "sl-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `printf '%s' INPUT | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =`: nginx's
/// secure_link value, computed outside our code.
fn secure_link_md5(input: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =")
        .arg("sh")
        .arg(input)
        .output()
        .expect("sh");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn allow_all(_: &Seen) -> Reply {
    Reply::Ok {
        headers: vec![],
        body: b"{}".to_vec(),
    }
}

#[test]
fn from_a_trusted_peer_the_forwarded_client_is_used_everywhere() {
    let node = Upstream::start(echo);
    let hook = Upstream::start(allow_all);
    let (gw, _d) = gateway(&trusted_config(&node, &hook, ""), 1);
    let addr = gw.addr();
    // 198.51.100.66 was written by the viewer; 192.0.2.10 by a proxy in 10/8 that we trust,
    // which is who handed the request to 127.0.0.1 (trusted too).
    let xff = "X-Forwarded-For: 198.51.100.66, 192.0.2.10, 10.1.2.3\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: tv.example\r\n";
    let r = request(addr, &get_req("/p/x", "trusted-1", xff));
    let (fwd, real, proto, host) = forwarded(&r);
    assert_eq!(
        fwd, "198.51.100.66, 192.0.2.10, 10.1.2.3, 127.0.0.1",
        "extended"
    );
    assert_eq!(real, "192.0.2.10");
    assert_eq!(proto, "https", "a trusted proxy's word is kept");
    assert_eq!(host, "tv.example");
    let line = access_line(&gw, "trusted-1");
    assert_eq!(field(&line, "client"), "192.0.2.10", "{line}");
    assert!(field(&line, "peer").starts_with("127.0.0.1:"), "{line}");

    // A native signed URL bound to 192.0.2.10 works for that client only.
    let out = Command::new(common::bin())
        .args([
            "sign", "--secret", SECRET, "--kid", "k1", "--path", "/s/a.mp4",
        ])
        .args(["--ttl", "10m", "--ip", "192.0.2.10"])
        .output()
        .expect("streamgate sign");
    assert!(out.status.success());
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let from = |client: &str| format!("X-Forwarded-For: {client}\r\n");
    let r = request(addr, &get_req(&url, "signed-1", &from("192.0.2.10")));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(addr, &get_req(&url, "signed-2", &from("192.0.2.11")));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "signature_invalid");
    let r = request(addr, &get_req(&url, "signed-3", ""));
    assert_eq!(r.status, 403, "127.0.0.1 itself is not 192.0.2.10");

    // nginx secure_link: `$remote_addr` is the client, verifying and signing.
    let expires = now() + 600;
    let md5 = secure_link_md5(&format!("{expires}/sl/b.mp4192.0.2.10 {SL_SECRET}"));
    let path = format!("/sl/b.mp4?md5={md5}&expires={expires}");
    let r = request(addr, &get_req(&path, "sl-1", &from("192.0.2.10")));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(addr, &get_req(&path, "sl-2", &from("192.0.2.12")));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = request(addr, &get_req("/dl/c.mp4", "dl-1", &from("192.0.2.10")));
    assert_eq!(r.status, 302, "{}", r.text());
    let loc = r.header("location").expect("Location").to_string();
    let q = loc.split_once('?').expect("a signed query").1;
    let arg = |k: &str| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {loc}"))
            .to_string()
    };
    let want = secure_link_md5(&format!(
        "{}/protected/c.mp4192.0.2.10 {SL_SECRET}",
        arg("expires")
    ));
    assert_eq!(arg("md5"), want, "signed for 192.0.2.10: {loc}");

    // The auth hook is told the client.
    let r = request(
        addr,
        &get_req("/h/cam1/x?token=t", "hook-1", &from("192.0.2.13")),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = hook.requests();
    let call: serde_json::Value =
        serde_json::from_slice(&calls.last().expect("a hook call").body).expect("json");
    assert_eq!(call["client_ip"], "192.0.2.13", "{call}");
}

#[test]
fn each_forwarded_client_gets_its_own_per_ip_budget() {
    let media = origin(&media_dir());
    let node = Upstream::start(echo);
    let hook = Upstream::start(allow_all);
    let mut toml = trusted_config(
        &node,
        &hook,
        "requests_per_second_per_ip = 1\nburst = 3\nlive_viewers_per_ip = 1",
    );
    toml.push_str(&format!(
        "\n[[nodes]]\nid = \"o\"\nurl = \"{}\"\n\
         [[routes]]\npath = \"/f/{{stream}}.flv\"\naction = \"live\"\nto = \"o\"\nstreams = [\"cam*\"]\nupstream = \"/live/{{stream}}.flv\"\n",
        media.url("")
    ));
    let (gw, _d) = gateway(&toml, 1);
    let addr = gw.addr();
    let as_client = |ip: &str, n: usize| {
        request(
            addr,
            &get_req(
                "/p/x",
                &format!("rate-{ip}-{n}"),
                &format!("X-Forwarded-For: {ip}\r\n"),
            ),
        )
        .status
    };
    // 192.0.2.1 spends its bucket…
    let mut refused = false;
    for n in 0..10 {
        if as_client("192.0.2.1", n) == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "192.0.2.1 reached its limit");
    // …and 192.0.2.2, behind the same proxy, still has a whole burst of its own (three in a
    // row: one shared bucket could not have refilled that fast).
    for n in 0..3 {
        assert_eq!(as_client("192.0.2.2", n), 200, "192.0.2.2 request {n}");
    }

    // Live viewers, one each: a second stream for 192.0.2.3 is refused, 192.0.2.4 may watch.
    let live = |ip: &str, stream: &str| {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(T)).expect("timeout");
        s.write_all(
            format!("GET /f/{stream}.flv HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {ip}\r\n\r\n")
                .as_bytes(),
        )
        .expect("write");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("head");
        (String::from_utf8_lossy(&head).to_string(), s)
    };
    let (h1, _held1) = live("192.0.2.3", "cam1");
    assert_eq!(h1, "HTTP/1.1 200");
    let (h2, _held2) = live("192.0.2.3", "cam2");
    assert_eq!(h2, "HTTP/1.1 429");
    let (h3, _held3) = live("192.0.2.4", "cam2");
    assert_eq!(h3, "HTTP/1.1 200");
    // And the TCP peer's own budget is untouched by all of that.
    let mut me = FlvStream::open(addr, "/f/cam1.flv");
    expect_live_start(&mut me, T);
}

/// Two listeners: `[0]` plain, `[1]` marked for the PROXY protocol, whose header must come
/// within `timeout`. 192.0.2.0/24 (where the PROXY sources below live) is trusted for XFF.
fn proxy_gateway(node: &Upstream, limits: &str, timeout: &str) -> (Proc, tempfile::TempDir) {
    gateway(
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\", {{ address = \"127.0.0.1:0\", proxy_protocol = true }}]\n\
             proxy_protocol_timeout = \"{timeout}\"\ntrusted_proxies = [\"192.0.2.0/24\"]\n\
             [limits]\n{limits}\n\
             [[nodes]]\nid = \"a\"\nurl = \"{}\"\n\
             [[routes]]\npath = \"/p/{{*rest}}\"\naction = \"proxy\"\nto = \"a\"\n",
            node.url()
        ),
        2,
    )
}

#[test]
fn proxy_headers_are_honoured_on_the_marked_listener_only() {
    let node = Upstream::start(echo);
    let (gw, _d) = proxy_gateway(&node, "", "5s");
    let (plain, marked) = (gw.addrs[0], gw.addrs[1]);

    // On the plain listener a PROXY header is just a bad request.
    for (name, hdr) in [
        ("v1", v1("192.0.2.20", 5555)),
        ("v2", v2_inet([192, 0, 2, 21], 6000)),
    ] {
        let buf = exchange(
            plain,
            &cat(&hdr, &get_req("/p/x", &format!("plain-{name}"), "")),
        );
        let r = parse_response(&buf);
        assert_eq!(r.status, 400, "{name}: {}", String::from_utf8_lossy(&buf));
    }
    assert!(node.requests().is_empty(), "nothing reached the node");

    // On the marked one, the header names the client: log, X-Forwarded-For, X-Real-IP.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("v1", v1("192.0.2.20", 5555), "192.0.2.20:5555"),
        ("v2", v2_inet([192, 0, 2, 21], 6000), "192.0.2.21:6000"),
        (
            "v2-inet6",
            v2_inet6(
                [
                    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x21,
                ],
                7000,
            ),
            "[2001:db8::21]:7000",
        ),
    ];
    for (name, hdr, src) in &cases {
        let rid = format!("marked-{name}");
        let r = request(marked, &cat(hdr, &get_req("/p/x", &rid, "")));
        let (xff, real, proto, _) = forwarded(&r);
        let ip = src
            .rsplit_once(':')
            .expect("port")
            .0
            .trim_matches(['[', ']']);
        assert_eq!(xff, ip, "{name}");
        assert_eq!(real, ip, "{name}");
        assert_eq!(proto, "http");
        let line = access_line(&gw, &rid);
        assert_eq!(field(&line, "client"), ip, "{line}");
        assert_eq!(field(&line, "peer"), *src, "{line}");
    }

    // UNKNOWN (v1) and LOCAL (v2) keep the TCP peer.
    for (name, hdr) in [
        ("unknown", b"PROXY UNKNOWN\r\n".to_vec()),
        ("local", v2_local()),
    ] {
        let rid = format!("keep-{name}");
        let r = request(marked, &cat(&hdr, &get_req("/p/x", &rid, "")));
        assert_eq!(forwarded(&r).0, "127.0.0.1", "{name}");
        assert_eq!(field(&access_line(&gw, &rid), "client"), "127.0.0.1");
    }

    // The header on its own, the request later, two requests on the connection: both are
    // the PROXY client's.
    let mut s = TcpStream::connect(marked).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(&v1("192.0.2.22", 1)).expect("header");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"GET /p/1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("first");
    s.write_all(b"GET /p/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("second");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(
        text.matches("\"x-forwarded-for\":\"192.0.2.22\"").count(),
        2,
        "{text}"
    );

    // trusted_proxies applies to X-Forwarded-For relative to the PROXY source: 192.0.2.30 is
    // trusted, so its XFF names the client; 203.0.113.5 is not, so its XFF is replaced.
    let xff = "X-Forwarded-For: 198.51.100.7\r\n";
    let r = request(
        marked,
        &cat(&v1("192.0.2.30", 2), &get_req("/p/x", "pp-trusted", xff)),
    );
    assert_eq!(forwarded(&r).0, "198.51.100.7, 192.0.2.30");
    assert_eq!(forwarded(&r).1, "198.51.100.7");
    assert_eq!(
        field(&access_line(&gw, "pp-trusted"), "client"),
        "198.51.100.7"
    );
    let r = request(
        marked,
        &cat(&v1("203.0.113.5", 3), &get_req("/p/x", "pp-untrusted", xff)),
    );
    assert_eq!(forwarded(&r).0, "203.0.113.5");
    assert_eq!(
        field(&access_line(&gw, "pp-untrusted"), "client"),
        "203.0.113.5"
    );

    // And on the plain listener, 127.0.0.1 is not trusted: a forged XFF is replaced.
    let r = request(plain, &get_req("/p/x", "plain-xff", xff));
    assert_eq!(forwarded(&r).0, "127.0.0.1");
}

/// Reads from `s` until the gateway closes it (bounded by `T`); returns what it sent.
fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("not closed: {e}"),
        }
    }
    buf
}

#[test]
fn a_missing_malformed_or_truncated_proxy_header_closes_the_connection() {
    let node = Upstream::start(echo);
    // A header timeout far past the read timeout: a close seen here is a refusal.
    let (gw, _d) = proxy_gateway(&node, "", "60s");
    let marked = gw.addrs[1];
    let req = get_req("/p/x", "bad", "");
    let mut v2_v1 = v2_inet([192, 0, 2, 1], 1);
    v2_v1[12] = 0x11; // version 1 in a v2 header
    let mut v2_huge = v2_inet([192, 0, 2, 1], 1);
    v2_huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    for (name, bytes) in [
        ("no header", req.clone()),
        (
            "bad v1 address",
            cat(b"PROXY TCP4 999.0.2.1 192.0.2.1 1 2\r\n", &req),
        ),
        (
            "v1 LF only",
            cat(b"PROXY TCP4 192.0.2.1 192.0.2.1 1 2\n", &req),
        ),
        (
            "v1 without CRLF",
            format!("PROXY UNKNOWN {}", "x".repeat(200)).into_bytes(),
        ),
        ("v2 version 1", cat(&v2_v1, &req)),
        ("v2 longer than the bound", cat(&v2_huge, &req)),
        ("binary", vec![0x16, 0x03, 0x01, 0x02, 0x00]),
    ] {
        let mut s = TcpStream::connect(marked).expect("connect");
        let _ = s.write_all(&bytes);
        let got = until_closed(&mut s);
        assert!(
            got.is_empty(),
            "{name}: answered {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // Truncated: the client stops half-way and closes its side.
    let mut s = TcpStream::connect(marked).expect("connect");
    s.write_all(b"PROXY TCP4 192.0.2.1 19").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let got = until_closed(&mut s);
    assert!(got.is_empty());
    assert!(node.requests().is_empty(), "nothing reached the node");
    wait_until("the refusals in the log", T, || {
        gw.logs().matches("PROXY protocol header refused").count() >= 8
    });
    let logs = gw.logs();
    assert!(logs.contains("no PROXY protocol header"), "{logs}");
    assert!(logs.contains("longer than 4096 bytes"), "{logs}");
    assert!(logs.contains("closed after 23 bytes"), "{logs}");
    // The listener still serves a good header.
    let r = request(
        marked,
        &cat(&v1("192.0.2.40", 4), &get_req("/p/x", "after", "")),
    );
    assert_eq!(forwarded(&r).0, "192.0.2.40");
}

#[test]
fn a_slow_proxy_header_is_cut_at_its_bound() {
    let node = Upstream::start(echo);
    let (gw, _d) = proxy_gateway(&node, "", "1s");
    let marked = gw.addrs[1];
    // Half a header, then silence: closed once the second is up (not before).
    let mut s = TcpStream::connect(marked).expect("connect");
    let start = Instant::now();
    s.write_all(b"PROXY TCP4 192.0.2.1").expect("write");
    let got = until_closed(&mut s);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // A byte every 200 ms: progress does not extend the bound. Never a whole header (the
    // 107-byte v1 limit is 21 s of this away), so only the bound can close the connection,
    // which shows as a failed write while still dripping.
    let mut s = TcpStream::connect(marked).expect("connect");
    let drip = format!("PROXY UNKNOWN {}", "x".repeat(90));
    let mut cut = false;
    for b in drip.bytes() {
        if s.write_all(&[b]).and_then(|_| s.flush()).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(cut, "the gateway kept a dripping header open");
    assert!(node.requests().is_empty());
    wait_until("the timeouts in the log", T, || {
        gw.logs()
            .matches("no complete PROXY protocol header within 1s")
            .count()
            >= 2
    });
}

#[test]
fn connections_per_ip_count_the_proxy_source() {
    let node = Upstream::start(echo);
    let (gw, _d) = proxy_gateway(&node, "connections_per_ip = 1", "5s");
    let marked = gw.addrs[1];
    // 192.0.2.50 holds one kept-alive connection through the balancer.
    let mut held = TcpStream::connect(marked).expect("connect");
    held.set_read_timeout(Some(T)).expect("timeout");
    held.write_all(&cat(
        &v1("192.0.2.50", 1),
        b"GET /p/x HTTP/1.1\r\nHost: t\r\n\r\n",
    ))
    .expect("write");
    let mut head = [0u8; 12];
    held.read_exact(&mut head).expect("head");
    assert_eq!(&head, b"HTTP/1.1 200");
    // A second connection of 192.0.2.50 is over its cap; 192.0.2.51, from the same balancer
    // (the same TCP peer, 127.0.0.1), is not.
    let r = request(
        marked,
        &cat(&v1("192.0.2.50", 2), &get_req("/p/x", "cap-1", "")),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    let r = request(
        marked,
        &cat(&v1("192.0.2.51", 3), &get_req("/p/x", "cap-2", "")),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    drop(held);
    wait_until("192.0.2.50's slot to come back", T, || {
        request(
            marked,
            &cat(&v1("192.0.2.50", 4), &get_req("/p/x", "cap-3", "")),
        )
        .status
            == 200
    });
}
