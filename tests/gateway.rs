//! End-to-end tests of the gateway core: a real `streamgate serve` process in front of real
//! upstream sockets, checked byte for byte as a viewer sees them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::upstream::{echo, After, Reply, Upstream};
use common::{gateway, get, raw_request, wait_until};

/// A config with one node `a` at `node_url` holding cam1/cam2, and the issue's routes.
fn config(node_url: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://gw.example:8080"
drain_timeout = "5s"

[upstream]
response_header_timeout = "3s"
connect_timeout = "2s"
body_idle_timeout = "3s"

[auth]
tokens = ["s3cret"]

[[nodes]]
id = "a"
url = "{node_url}"
streams = ["cam1", "cam2"]

[[routes]]
path = "/snap/{{*rest}}"
action = "redirect"
to = "a"
upstream = "/files/{{*rest}}"
status = 302

[[routes]]
path = "/cdn/{{*rest}}"
action = "redirect"
to = "https://cdn.example.com/base"
upstream = "/img/{{*rest}}"
status = 307

[[routes]]
path = "/vod/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"

[[routes]]
path = "/secure/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"
auth = "token"

[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"
auth = "token"

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
upstream = "/hls/{{stream}}/{{*rest}}"
{extra}
"#
    )
}

#[test]
fn redirect_builds_location_without_credentials_or_upstream_contact() {
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let r = get(gw.addr(), "/snap/cams/a.jpg?b=2&token=s3cret&a=1", "");
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("{}/files/cams/a.jpg?b=2&a=1", up.url()).as_str())
    );
    let r = get(gw.addr(), "/cdn/x.png?token=s3cret", "");
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some("https://cdn.example.com/base/img/x.png")
    );
    // Absolute-form target and a hostile Host change nothing about the origin.
    let r = raw_request(
        gw.addr(),
        "GET http://evil.example/snap/x.jpg HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("{}/files/x.jpg", up.url()).as_str())
    );
    let r = get(gw.addr(), "//evil.example/snap/x.jpg", "");
    assert_eq!(r.status, 404, "a path starting with // matches no route");
    assert!(
        up.requests().is_empty(),
        "a redirect never contacts the node"
    );
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn header_injection_attempts_are_refused() {
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    // Encoded CR/LF in the path: refused with a JSON 400.
    let r = get(gw.addr(), "/snap/a%0d%0aSet-Cookie:%20x=1", "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_path");
    assert!(r.header("set-cookie").is_none());
    // Encoded CR/LF in the query stays encoded: one Location header, no new header.
    let r = get(gw.addr(), "/snap/a.jpg?x=%0d%0aSet-Cookie:%20x=1", "");
    assert_eq!(r.status, 302);
    assert!(r.header("set-cookie").is_none());
    assert!(r
        .header("location")
        .is_some_and(|l| l.ends_with("?x=%0d%0aSet-Cookie:%20x=1")));
    // Raw CR in the request line never gets past the HTTP parser.
    let r = raw_request(
        gw.addr(),
        "GET /snap/a\r.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    // Dot segments and encoded separators cannot climb out of the upstream prefix.
    for p in [
        "/vod/../secret",
        "/vod/%2e%2e/secret",
        "/vod/a%2f..%2fsecret",
        "/vod/a%5csecret",
    ] {
        let r = get(gw.addr(), p, "");
        assert_eq!(r.status, 400, "{p}: {}", r.text());
    }
    assert!(up.requests().is_empty());
}

#[test]
fn proxy_forwards_and_cleans_headers_both_ways() {
    let up_url = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let loc = up_url.clone();
    let up = Upstream::start(move |req| {
        if req.target.starts_with("/files/moved") {
            let l = format!("{}/files/new?x=1", loc.lock().expect("lock"));
            return Reply::Status {
                status: 301,
                headers: vec![
                    ("Location".into(), l),
                    ("Connection".into(), "x-node-secret".into()),
                    ("X-Node-Secret".into(), "1".into()),
                    ("Keep-Alive".into(), "timeout=5".into()),
                ],
                body: vec![],
            };
        }
        echo(req)
    });
    *up_url.lock().expect("lock") = up.url();
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let r = get(
        gw.addr(),
        "/secure/a%20b.mp4?z=1&token=s3cret&a=2&z=0",
        "X-Forwarded-For: 10.1.2.3\r\nConnection: x-custom\r\nX-Custom: 1\r\nTE: trailers\r\nProxy-Authorization: x\r\nUpgrade: h2c\r\nRange: bytes=0-9\r\nX-Request-Id: rid-42\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-request-id"), Some("rid-42"));
    let seen = r.json();
    assert_eq!(
        seen["target"], "/files/a%20b.mp4?z=1&a=2&z=0",
        "token gone, rest in order"
    );
    let h = &seen["headers"];
    // The viewer is no trusted proxy: what it claimed is replaced (tests/client_addr.rs).
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "test");
    assert_eq!(h["via"], "1.1 streamgate");
    assert_eq!(h["range"], "bytes=0-9");
    assert_eq!(h["x-request-id"], "rid-42");
    assert_eq!(h["host"], up.addr.to_string());
    for gone in [
        "x-custom",
        "te",
        "proxy-authorization",
        "upgrade",
        "authorization",
    ] {
        assert!(h.get(gone).is_none(), "{gone} must not reach the node: {h}");
    }
    assert!(r.header("via").is_some());

    // Bearer credentials on a token route are checked and not forwarded.
    let r = get(gw.addr(), "/secure/x", "Authorization: Bearer s3cret\r\n");
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("authorization").is_none());

    // Downstream: hop-by-hop gone, a Location naming the node rewritten to public_url, and
    // the node's /files/… mapped back to this route's /vod/….
    let r = get(gw.addr(), "/vod/moved", "");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("http://gw.example:8080/vod/new?x=1")
    );
    assert!(r.header("x-node-secret").is_none());
    assert!(r.header("keep-alive").is_none());
}

#[test]
fn request_body_streams_to_the_node() {
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let body = "x".repeat(100_000);
    let r = raw_request(
        gw.addr(),
        &format!("POST /vod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 100_000);
    assert_eq!(r.json()["method"], "POST");
}

#[test]
fn live_route_auth_and_stream_lookup() {
    let up = Upstream::start(|_req| Reply::Endless {
        chunk: b"FLV\x01".to_vec(),
        every: Duration::from_millis(20),
    });
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let r = get(gw.addr(), "/flv/cam1.flv", "");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    let r = get(gw.addr(), "/flv/cam1.flv?token=wrong", "");
    assert_eq!(r.status, 401);
    assert!(up.requests().is_empty(), "no upstream contact before auth");

    let r = get(gw.addr(), "/flv/cam9.flv?token=s3cret", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "stream_not_found");
    assert_eq!(r.json()["stream"], "cam9");
    for bad in [
        "/flv/a..b.flv",
        "/flv/a%2Fb.flv",
        "/flv/%00.flv",
        &format!("/flv/{}.flv", "x".repeat(129)),
    ] {
        let r = get(gw.addr(), &format!("{bad}?token=s3cret"), "");
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"], "bad_stream_name");
    }
    assert!(
        up.requests().is_empty(),
        "refused requests never reach the node"
    );
    // Streaming itself (through the fan-out hub) is covered in tests/live.rs.
}

#[test]
fn upstream_failures_map_to_502_and_504_with_request_id() {
    // A port with nothing listening: bind then drop to get one.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (gw, _dir) = gateway(&config(&format!("http://{dead}"), ""));
    let r = get(gw.addr(), "/vod/x", "");
    assert_eq!(r.status, 502);
    let j = r.json();
    assert_eq!(j["error"], "upstream_unreachable");
    let rid = j["request_id"].as_str().expect("request id").to_string();
    assert_eq!(r.header("x-request-id"), Some(rid.as_str()));
    assert!(
        !j.to_string().contains(&dead.to_string()),
        "the node's address stays hidden"
    );
    wait_until("access log line", Duration::from_secs(5), || {
        gw.logs().contains(&rid)
    });
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains(&rid))
        .unwrap_or_default()
        .to_string();
    for needle in [
        "method=GET",
        "path=/vod/x",
        "status=502",
        "node=",
        "bytes=",
        "side=\"upstream\"",
    ] {
        assert!(line.contains(needle), "{needle} missing in {line}");
    }

    let stall = Upstream::start(|_| Reply::Stall);
    let (gw, _dir) = gateway(&config(&stall.url(), ""));
    let r = get(gw.addr(), "/vod/slow", "X-Request-Id: slow-1\r\n");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(r.json()["request_id"], "slow-1");
}

#[test]
fn viewer_disconnect_drops_the_upstream_request() {
    let up = Upstream::start(|_| Reply::Endless {
        chunk: vec![7u8; 1024],
        every: Duration::from_millis(10),
    });
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let (head, mut s, _) = common::open_stream(gw.addr(), "/vod/live.flv");
    assert_eq!(head.status, 200);
    let mut buf = [0u8; 4096];
    assert!(s.read(&mut buf).expect("read") > 0);
    assert!(!up.endless_closed.load(Ordering::SeqCst));
    drop(s);
    // The node notices on its next writes; a generous bound for a loaded machine.
    wait_until("node to see the close", Duration::from_secs(5), || {
        up.endless_closed.load(Ordering::SeqCst)
    });
}

#[test]
fn a_gigabyte_passes_with_flat_memory() {
    const LEN: u64 = 1 << 30;
    let up = Upstream::start(|_| Reply::Zeros(LEN));
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let (head, mut s, first) = common::open_stream(gw.addr(), "/vod/big.bin");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(LEN.to_string().as_str())
    );
    let mut total = first.len() as u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut max_rss = 0;
    let mut reads = 0u64;
    while total < LEN {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "ended early at {total}");
        total += n as u64;
        reads += 1;
        if reads.is_multiple_of(64) {
            max_rss = max_rss.max(gw.rss_kib());
        }
    }
    assert_eq!(total, LEN);
    max_rss = max_rss.max(gw.rss_kib());
    assert!(max_rss > 0, "RSS was sampled");
    eprintln!("gateway RSS peak {max_rss} KiB over {total} bytes");
    assert!(max_rss < 64 * 1024, "gateway RSS peaked at {max_rss} KiB");
}

#[test]
fn sigterm_drains_finite_requests_and_ends_live_streams() {
    let up = Upstream::start(|req| Reply::Delayed(Duration::from_millis(800), Box::new(echo(req))));
    let origin = common::origin(&common::media_dir());
    let extra = format!(
        "[[nodes]]\nid = \"o\"\nurl = \"{}\"\n[[routes]]\npath = \"/olive/{{stream}}.flv\"\naction = \"live\"\nto = \"o\"\nstreams = [\"cam1\"]\nupstream = \"/live/{{stream}}.flv\"\n",
        origin.url("")
    );
    let (mut gw, _dir) = gateway(&config(&up.url(), &extra));
    let addr = gw.addr();
    let mut live = common::flv::FlvStream::open(addr, "/olive/cam1.flv");
    common::flv::expect_live_start(&mut live, Duration::from_secs(20));
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /vod/slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    wait_until(
        "slow request to reach the node",
        Duration::from_secs(10),
        || up.requests().iter().any(|r| r.target == "/files/slow"),
    );
    gw.sigterm();
    // The finite request still completes.
    let mut out = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    slow.read_to_end(&mut out).expect("read");
    let r = common::parse_response(&out);
    assert_eq!(r.status, 200);
    // The live stream ends with a clean chunked terminator.
    let (_, ended) = live.tags_until_end(Duration::from_secs(10));
    assert!(ended && live.clean_end(), "clean end of the live body");
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("gateway exits");
    assert!(st.success(), "{st:?}");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        config("http://127.0.0.1:1", "").replace("status = 302", "status = 200"),
    )
    .expect("write");
    let out = std::process::Command::new(common::bin())
        .args(["check-config", p.to_str().expect("p")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0].status"), "{err}");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/streamgate.toml");
    let out = std::process::Command::new(common::bin())
        .args(["check-config", example.to_str().expect("p")])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pooled_connections_are_reused_and_conditional_answers_pass_through() {
    let up = Upstream::start(
        |req| match (req.header("range"), req.header("if-none-match")) {
            (Some("bytes=2-5"), _) => Reply::Status {
                status: 206,
                headers: vec![
                    ("Content-Range".into(), "bytes 2-5/10".into()),
                    ("Accept-Ranges".into(), "bytes".into()),
                ],
                body: b"2345".to_vec(),
            },
            (_, Some("\"v1\"")) => Reply::Status {
                status: 304,
                headers: vec![("ETag".into(), "\"v1\"".into())],
                body: vec![],
            },
            _ => Reply::Ok {
                headers: vec![("ETag".into(), "\"v1\"".into())],
                body: b"0123456789".to_vec(),
            },
        },
    );
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let r = get(gw.addr(), "/vod/f.bin", "Range: bytes=2-5\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(r.body, b"2345");
    let r = get(gw.addr(), "/vod/f.bin", "If-None-Match: \"v1\"\r\n");
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = get(gw.addr(), "/vod/f.bin", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"0123456789");
    // Each answer's end reaches the viewer only once the node connection is idle again, so
    // requests sent right after one another all find it (hyper-util's own pool raced here).
    for _ in 0..20 {
        let r = get(gw.addr(), "/vod/f.bin", "If-None-Match: \"v1\"\r\n");
        assert_eq!(r.status, 304);
        let r = get(gw.addr(), "/vod/f.bin", "");
        assert_eq!(r.body, b"0123456789");
    }
    assert_eq!(up.requests().len(), 43);
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one pooled keep-alive connection served them all"
    );
}

#[test]
fn viewer_credentials_never_reach_a_node_or_a_log() {
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    // A viewer token in Authorization is the viewer's credential even on an open route…
    let r = get(gw.addr(), "/vod/x", "Authorization: Bearer s3cret\r\n");
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("authorization").is_none());
    // …while other credentials (meant for the node) pass.
    let r = get(gw.addr(), "/vod/x", "Authorization: Bearer node-key\r\n");
    assert_eq!(r.json()["headers"]["authorization"], "Bearer node-key");
    // Tokens and hook secrets are kept out of the access log.
    let r = get(
        gw.addr(),
        "/vod/y?token=s3cret&a=1",
        "X-Request-Id: log-1\r\n",
    );
    assert_eq!(r.status, 200);
    let r = get(
        gw.addr(),
        "/hooks/srs?node=n&secret=h00k",
        "X-Request-Id: log-2\r\n",
    );
    assert_eq!(r.status, 405, "hooks take POST");
    wait_until("access lines", Duration::from_secs(5), || {
        gw.logs().contains("log-1") && gw.logs().contains("log-2")
    });
    let logs = gw.logs();
    assert!(!logs.contains("s3cret") && !logs.contains("h00k"), "{logs}");
    let line = logs
        .lines()
        .find(|l| l.contains("log-1"))
        .unwrap_or_default();
    assert!(
        line.contains("path=/vod/y?a=1") && line.contains("complete=true"),
        "{line}"
    );
}

#[test]
fn head_on_a_live_route_answers_without_starting_a_pull() {
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let r = raw_request(
        gw.addr(),
        "HEAD /flv/cam1.flv?token=s3cret HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("video/x-flv"));
    assert!(up.requests().is_empty(), "no pull for a HEAD");
}

#[test]
fn a_node_that_goes_silent_mid_body_is_cut_off() {
    let up = Upstream::start(|_| Reply::Chunks {
        pieces: vec![(Duration::ZERO, b"first bytes".to_vec())],
        then: After::Hang,
    });
    let (gw, _dir) = gateway(&config(&up.url(), ""));
    let (head, s, mut got) = common::open_stream(gw.addr(), "/vod/stuck.bin");
    assert_eq!(head.status, 200);
    let mut s = s;
    let mut buf = [0u8; 1024];
    while !got.windows(11).any(|w| w == b"first bytes") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed before the first bytes");
        got.extend_from_slice(&buf[..n]);
    }
    // After body_idle_timeout the response is aborted: no final chunk, the connection closes.
    let clean = common::drain_until_closed(s, Duration::from_secs(20));
    assert!(!clean, "a stalled node's body must not look complete");
}

/// Started with a soft open-files limit of 64 (hard 4096), the gateway raises the soft limit to
/// the hard one, so 300 viewers connected at once are all served; each would otherwise be a
/// descriptor past the limit, never accepted.
#[test]
fn a_low_soft_open_files_limit_is_raised_and_viewers_past_it_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streamgate.toml");
    std::fs::write(&path, config("http://127.0.0.1:9", "")).expect("write config");
    let gw = common::spawn_under(
        &["prlimit", "--nofile=64:4096"],
        &["serve", "--config", path.to_str().expect("utf-8")],
        1,
    );
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", gw.pid())).expect("read limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4096", "4096"],
        "{open_files}"
    );
    wait_until("the raise is logged", Duration::from_secs(10), || {
        gw.logs().contains("open files limit raised")
    });
    let mut conns: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(gw.addr()).expect("connect"))
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(format!("GET /snap/{i}.jpg HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = c
            .read(&mut buf)
            .expect("an answer, not a connection left unaccepted");
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 302"), "viewer {i}: {head}");
    }
}
