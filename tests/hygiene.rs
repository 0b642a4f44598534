//! Request hygiene, byte for byte on the wire, each case as nginx 1.22 answers it: a slow
//! upload outlives the response-header timeout, a node answer with both `Content-Length` and
//! `Transfer-Encoding` is framed by the latter, the client's own broken body is a 400 on the
//! downstream side, ambiguous `Host` / `Transfer-Encoding` framing is refused, and no
//! `Authorization` line carrying a viewer token reaches a node.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::upstream::{echo, Upstream};
use common::{gateway, parse_response, raw_request};

fn config(node_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstream]
connect_timeout = "1s"
response_header_timeout = "1s"
body_idle_timeout = "1s"

[auth]
tokens = ["s3cret"]

[[nodes]]
id = "a"
url = "{node_url}"

[[routes]]
path = "/vod/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"
"#
    )
}

#[test]
fn a_slow_upload_outlives_the_header_timeout() {
    const LEN: usize = 8 << 20;
    const PIECES: usize = 16;
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url()));
    let mut s = TcpStream::connect(gw.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(
        format!("PUT /vod/up.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {LEN}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("head");
    // 8 MiB in 16 pieces of 512 KiB over ~2 s: twice the 1 s header timeout, with
    // 125 ms between pieces, well inside the 1 s body idle timeout.
    let piece = vec![b'u'; LEN / PIECES];
    let start = Instant::now();
    for _ in 0..PIECES {
        s.write_all(&piece).expect("piece");
        std::thread::sleep(Duration::from_millis(125));
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = parse_response(&out);
    assert!(
        start.elapsed() > Duration::from_secs(1),
        "slower than the header timeout"
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_len"], LEN);
}

#[test]
fn a_node_answer_with_length_and_chunked_is_framed_as_chunked() {
    // A raw node: `Content-Length: 5` and `Transfer-Encoding: chunked` on one answer.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5\r\nhello\r\n12\r\n, the whole answer\r\n0\r\n\r\n",
                );
                let _ = c.read(&mut buf);
            });
        }
    });
    let (gw, _dir) = gateway(&config(&url));
    let r = raw_request(
        gw.addr(),
        "GET /vod/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-length").is_none(),
        "never both headers: {:?}",
        r.headers
    );
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "hello, the whole answer");
}

#[test]
fn a_broken_client_body_is_a_400_on_the_downstream_side() {
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url()));
    // An invalid chunk size.
    let r = raw_request(
        gw.addr(),
        "POST /vod/up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nX-Request-Id: badchunk\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_body");
    let line = common::access_line(&gw, "badchunk");
    assert!(
        line.contains("status=400") && line.contains("side=\"downstream\""),
        "{line}"
    );

    // An upload that stops short of its Content-Length (the client half-closes).
    let mut s = TcpStream::connect(gw.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(
        b"POST /vod/up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nX-Request-Id: short\r\nConnection: close\r\n\r\nonly forty bytes of the hundred promised",
    )
    .expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let line = common::access_line(&gw, "short");
    assert!(
        line.contains("status=400") && line.contains("side=\"downstream\""),
        "{line}"
    );
    if !out.is_empty() {
        assert_eq!(parse_response(&out).status, 400);
    }
    assert!(
        !gw.logs().contains("status=502"),
        "never blamed on the node: {}",
        gw.logs()
    );
}

#[test]
fn ambiguous_host_and_transfer_encoding_are_refused() {
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url()));
    for (what, raw) in [
        (
            "duplicate Host",
            "GET /vod/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        ),
        (
            "HTTP/1.1 without Host",
            "GET /vod/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        (
            "gzip, chunked",
            "POST /vod/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "two Transfer-Encoding lines",
            "POST /vod/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        let r = raw_request(gw.addr(), raw);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request", "{what}");
    }
    assert!(up.requests().is_empty(), "none reached the node");
    // HTTP/1.0 without Host is fine.
    let r = raw_request(gw.addr(), "GET /vod/ok HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn no_authorization_line_with_a_viewer_token_reaches_the_node() {
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url()));
    let r = raw_request(
        gw.addr(),
        "GET /vod/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer node-key\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = up.requests();
    let auth: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(auth, ["Bearer node-key"], "the viewer's token stays here");
}

#[test]
fn a_stalled_upload_is_cut_by_the_idle_timeout_and_blamed_on_the_right_side() {
    // The viewer stops sending: 408 on the downstream side.
    let up = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&up.url()));
    let mut s = TcpStream::connect(gw.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(
        b"POST /vod/up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nX-Request-Id: idle-client\r\nConnection: close\r\n\r\nten bytes.",
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = parse_response(&out);
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.json()["error"], "request_timeout");
    assert!(common::access_line(&gw, "idle-client").contains("side=\"downstream\""));

    // The node stops reading (accepts, never reads): 504 on the upstream side.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let held = std::thread::spawn(move || l.accept().map(|(c, _)| c));
    let (gw, _dir) = gateway(&config(&url));
    let mut s = TcpStream::connect(gw.addr()).expect("connect");
    let s2 = s.try_clone().expect("clone");
    const LEN: usize = 32 << 20; // far more than the socket buffers on the way hold
    s.write_all(
        format!("POST /vod/up HTTP/1.1\r\nHost: t\r\nContent-Length: {LEN}\r\nX-Request-Id: idle-node\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("head");
    // Writes block once every buffer on the way is full; a side thread keeps pushing until
    // the gateway gives up (the socket is shut down below in any case).
    std::thread::spawn(move || {
        let piece = vec![b'x'; 1 << 20];
        for _ in 0..LEN / piece.len() {
            if s.write_all(&piece).is_err() {
                break;
            }
        }
    });
    let line = common::access_line(&gw, "idle-node");
    assert!(
        line.contains("status=504") && line.contains("side=\"upstream\""),
        "{line}"
    );
    let _ = s2.shutdown(Shutdown::Both);
    drop(held);
}
