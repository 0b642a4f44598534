//! Viewer access (issue 10) against a real gateway process: fixed-node live routes limited to
//! their stream list, CORS per route, per-client limits, and `action = "auto"`.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use common::flv::{expect_live_start, FlvStream};
use common::upstream::{echo, Reply, Upstream};
use common::{gateway, get, media_dir, origin, parse_response, raw_request, wait_until};

const T: Duration = Duration::from_secs(20);
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A TCP connection to `addr` from the local address `from` (Linux routes all of 127/8 to lo,
/// so 127.0.0.2 is a second client on the same machine).
fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::new(from, 0).into()).expect("bind");
    s.connect(&addr.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(T)).expect("timeout");
    s
}

/// Sends `raw` on `s` and reads the response to the close.
fn exchange(mut s: TcpStream, raw: &str) -> common::RawResponse {
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(raw.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

fn get_req(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n")
}

#[test]
fn a_fixed_node_live_route_serves_only_its_listed_names() {
    let media = origin(&media_dir());
    let node = Upstream::start(echo);
    let (gw, _d) = gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[nodes]]\nid = \"o\"\nurl = \"{}\"\n\
         [[nodes]]\nid = \"u\"\nurl = \"{}\"\n\
         [[routes]]\npath = \"/f/{{stream}}.flv\"\naction = \"live\"\nto = \"o\"\nstreams = [\"cam1\", \"lobby-*\"]\nupstream = \"/live/{{stream}}.flv\"\n\
         [[routes]]\npath = \"/u/{{stream}}.flv\"\naction = \"live\"\nto = \"u\"\nstreams = [\"cam1\", \"lobby-*\"]\nupstream = \"/live/{{stream}}.flv\"\n",
        media.url(""),
        node.url()
    ));
    // A listed name plays.
    let mut v = FlvStream::open(gw.addr(), "/f/cam1.flv");
    expect_live_start(&mut v, T);
    // Names off the list are refused without a word to the node, GET or HEAD.
    for name in ["cam2", "cam1x", "lobby", "other"] {
        let r = get(gw.addr(), &format!("/u/{name}.flv"), "");
        assert_eq!(r.status, 404, "{name}: {}", r.text());
        assert_eq!(r.json()["error"], "stream_not_found");
        assert_eq!(r.json()["stream"], name);
        let r = raw_request(
            gw.addr(),
            &format!("HEAD /u/{name}.flv HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 404, "HEAD {name}");
    }
    assert!(node.requests().is_empty(), "the node was never contacted");
    // cam2 exists on the media node, but the route does not list it.
    let r = get(gw.addr(), "/f/cam2.flv", "");
    assert_eq!(r.status, 404);
    let stats = get(media.addr(), "/stats", "").json();
    assert_eq!(stats["live_clients"], 1, "only the listed stream is pulled");
}

/// A node whose answers carry its own (too wide) CORS policy.
fn cors_node() -> Upstream {
    Upstream::start(|_| Reply::Ok {
        headers: vec![
            ("Access-Control-Allow-Origin".into(), "*".into()),
            ("Access-Control-Allow-Credentials".into(), "true".into()),
            ("Content-Type".into(), "text/plain".into()),
        ],
        body: b"media".to_vec(),
    })
}

fn cors_gateway(node: &Upstream) -> (common::Proc, tempfile::TempDir) {
    gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\ntokens = [\"s3cret\"]\n\
         [[nodes]]\nid = \"a\"\nurl = \"{}\"\n\
         [[routes]]\npath = \"/v/{{*rest}}\"\naction = \"proxy\"\nto = \"a\"\nauth = \"token\"\ncors = [\"https://a.example\", \"http://localhost:3000\"]\n\
         [[routes]]\npath = \"/open/{{*rest}}\"\naction = \"proxy\"\nto = \"a\"\n\
         [[routes]]\npath = \"/r/{{*rest}}\"\naction = \"redirect\"\nto = \"https://cdn.example\"\ncors = \"*\"\n\
         [[routes]]\npath = \"/l/{{stream}}.flv\"\naction = \"live\"\nto = \"a\"\nstreams = [\"cam1\"]\ncors = [\"https://a.example\"]\n",
        node.url()
    ))
}

const EXPOSE: &str = "Content-Length, Content-Range, Accept-Ranges, X-Request-Id";

#[test]
fn cors_preflights_are_answered_by_the_gateway() {
    let node = cors_node();
    let (gw, _d) = cors_gateway(&node);
    let pre = |origin: &str, path: &str| {
        raw_request(
            gw.addr(),
            &format!(
                "OPTIONS {path} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let r = pre("https://a.example", "/v/movie.mp4");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    let methods = r.header("access-control-allow-methods").expect("methods");
    assert!(
        methods.contains("GET") && methods.contains("HEAD"),
        "{methods}"
    );
    let allowed = r.header("access-control-allow-headers").expect("headers");
    assert!(allowed.contains("Range") && allowed.contains("Authorization"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert!(r.body.is_empty());
    // Unlisted origin: 403 JSON, no CORS headers.
    let r = pre("https://evil.example", "/v/movie.mp4");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "cors_forbidden");
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-allow-methods").is_none());
    // "*" route: any origin.
    let r = pre("https://whoever.example", "/r/x.jpg");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(node.requests().is_empty(), "no preflight reached the node");
    // A route without `cors` leaves OPTIONS to the node, as before.
    let r = pre("https://a.example", "/open/x");
    assert_eq!(r.status, 200);
    assert_eq!(node.requests().len(), 1);
}

#[test]
fn cors_headers_are_on_every_answer_of_the_route() {
    let node = cors_node();
    let (gw, _d) = cors_gateway(&node);
    let from_a = "Origin: https://a.example\r\n";
    // Proxied answer: the node's policy is replaced by the route's.
    let r = get(gw.addr(), "/v/movie.mp4?token=s3cret", from_a);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "media");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(r.header("access-control-expose-headers"), Some(EXPOSE));
    assert!(r.header("access-control-allow-credentials").is_none());
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v.contains("Origin")));
    // Origins compare case-insensitively (scheme and host are).
    let r = get(
        gw.addr(),
        "/v/movie.mp4?token=s3cret",
        "Origin: http://LOCALHOST:3000\r\n",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://LOCALHOST:3000")
    );
    // Errors too: 401 from auth, 404 from the stream list.
    let r = get(gw.addr(), "/v/movie.mp4", from_a);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(r.header("access-control-expose-headers"), Some(EXPOSE));
    let r = get(gw.addr(), "/l/nope.flv", from_a);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "stream_not_found");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    // Redirects.
    let r = get(gw.addr(), "/r/x.jpg", "Origin: https://b.example\r\n");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("location"), Some("https://cdn.example/r/x.jpg"));
    // An unlisted origin gets nothing, not even the node's own headers.
    let r = get(
        gw.addr(),
        "/v/movie.mp4?token=s3cret",
        "Origin: https://evil.example\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        !r.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-")),
        "{:?}",
        r.headers
    );
    // A route without `cors` passes the node's headers through untouched.
    let r = get(gw.addr(), "/open/x", from_a);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

/// Reads one response (head, then a Content-Length body) from a kept-alive connection.
fn read_one(s: &mut TcpStream) -> common::RawResponse {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_response(&buf[..end + 4]);
            let len: usize = head
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return parse_response(&buf[..end + 4 + len]);
            }
        }
        let n = s.read(&mut tmp).expect("read");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[test]
fn connections_over_the_per_ip_cap_are_answered_429_while_other_clients_are_served() {
    const CAP: usize = 20;
    const OPEN: usize = 2000;
    let (gw, _d) = gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[limits]\nconnections_per_ip = {CAP}\n\
         [[routes]]\npath = \"/r/{{*rest}}\"\naction = \"redirect\"\nto = \"https://cdn.example\"\n"
    ));
    let addr = gw.addr();
    let mut conns: Vec<TcpStream> = (0..OPEN)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Another address is not held back by 127.0.0.1's open connections.
    let r = exchange(connect_from(OTHER_CLIENT, addr), &get_req("/r/x", ""));
    assert_eq!(r.status, 302, "{}", r.text());
    // Keep-alive requests: the served connections stay open, so exactly CAP of the 2000 hold a
    // slot whatever order the gateway accepted them in.
    for c in &mut conns {
        c.set_read_timeout(Some(T)).expect("timeout");
        c.write_all(b"GET /r/x HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
    }
    let mut served = 0;
    let mut refused = 0;
    for c in &mut conns {
        let r = read_one(c);
        match r.status {
            302 => served += 1,
            429 => {
                assert_eq!(r.json()["error"], "too_many_requests");
                assert_eq!(r.header("retry-after"), Some("1"));
                assert_eq!(r.header("connection"), Some("close"));
                assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
                let mut rest = Vec::new();
                let _ = c.read_to_end(&mut rest);
                assert!(rest.is_empty(), "closed after the 429");
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((served, refused), (CAP, OPEN - CAP));
    // Slots come back when connections close: 127.0.0.1 is served again.
    drop(conns);
    let mut last = 0;
    wait_until("a slot to come back", T, || {
        last = get(addr, "/r/x", "").status;
        last == 302
    });
}

#[test]
fn the_request_rate_per_ip_answers_429_with_retry_after() {
    let (gw, _d) = gateway(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\ntoken = \"adm1n\"\n[limits]\nrequests_per_second_per_ip = 1\nburst = 3\n\
         [[routes]]\npath = \"/r/{*rest}\"\naction = \"redirect\"\nto = \"https://cdn.example\"\n",
    );
    let addr = gw.addr();
    let statuses: Vec<_> = (0..3).map(|_| get(addr, "/r/x", "")).collect();
    assert!(statuses.iter().all(|r| r.status == 302), "the burst passes");
    // One token a second: of the next requests, at most one a second gets through.
    let mut limited = None;
    for _ in 0..10 {
        let r = get(addr, "/r/x", "");
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the rate limit answered 429");
    assert_eq!(r.json()["error"], "too_many_requests");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    // Another address has its own bucket.
    let r = exchange(connect_from(OTHER_CLIENT, addr), &get_req("/r/x", ""));
    assert_eq!(r.status, 302);
    // The registry's writers are not viewers: not rate limited.
    for _ in 0..5 {
        let r = get(addr, "/api/v1/live", "Authorization: Bearer adm1n\r\n");
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[test]
fn live_viewers_per_ip_are_capped_and_slots_come_back() {
    let media = origin(&media_dir());
    let (gw, _d) = gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[limits]\nlive_viewers_per_ip = 1\n\
         [[nodes]]\nid = \"o\"\nurl = \"{}\"\n\
         [[routes]]\npath = \"/f/{{stream}}.flv\"\naction = \"live\"\nto = \"o\"\nstreams = [\"cam*\"]\nupstream = \"/live/{{stream}}.flv\"\n",
        media.url("")
    ));
    let addr = gw.addr();
    let mut first = FlvStream::open(addr, "/f/cam1.flv");
    expect_live_start(&mut first, T);
    let r = get(addr, "/f/cam2.flv", "");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_requests");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Another address may watch.
    let mut other = connect_from(OTHER_CLIENT, addr);
    other
        .write_all(b"GET /f/cam1.flv HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let mut head = [0u8; 12];
    other.read_exact(&mut head).expect("head");
    assert_eq!(&head, b"HTTP/1.1 200");
    // The slot is given back when the viewer goes.
    drop(first);
    wait_until("the viewer slot to come back", T, || {
        let (head, _conn, _) = common::open_stream(addr, "/f/cam2.flv");
        head.status == 200
    });
}

#[test]
fn auto_redirects_native_loads_and_proxies_fetch() {
    let node = Upstream::start(echo);
    let (gw, _d) = gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[nodes]]\nid = \"a\"\nurl = \"{}\"\n\
         [[routes]]\npath = \"/m/{{*rest}}\"\naction = \"auto\"\nto = \"a\"\nupstream = \"/files/{{*rest}}\"\n",
        node.url()
    ));
    let addr = gw.addr();
    for dest in ["video", "image", "audio", "document"] {
        let r = get(addr, "/m/a.mp4", &format!("Sec-Fetch-Dest: {dest}\r\n"));
        assert_eq!(r.status, 302, "{dest}");
        assert_eq!(
            r.header("location"),
            Some(format!("{}/files/a.mp4", node.url()).as_str())
        );
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v.contains("Sec-Fetch-Dest")));
    }
    assert!(node.requests().is_empty(), "redirects never reach the node");
    for extra in ["Sec-Fetch-Dest: empty\r\n", ""] {
        let r = get(addr, "/m/a.mp4", extra);
        assert_eq!(r.status, 200, "{extra:?}");
        assert_eq!(r.json()["target"], "/files/a.mp4");
    }
    assert_eq!(node.requests().len(), 2);
    wait_until("access lines with the decision", T, || {
        let logs = gw.logs();
        logs.matches("decision=redirect").count() >= 4
            && logs.matches("decision=proxy").count() >= 2
    });
}
