//! Access-log fields that mean what they say, against a real gateway: a redirect is complete, a
//! viewer gone before the answer is a 499, every way a response is cut says so in `closed=`;
//! JSON lines with the documented fields; a log file reopened on SIGUSR1.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::flv::{expect_live_start, FlvStream};
use common::upstream::{After, Reply, Upstream};
use common::{access_line, gateway, get, origin, wait_until, Proc};

const T: Duration = Duration::from_secs(20);

/// The fields of a JSON access line, as docs/operations.md lists them.
const FIELDS: [&str; 18] = [
    "ts",
    "client",
    "peer",
    "method",
    "path",
    "status",
    "bytes",
    "ms",
    "node",
    "request_id",
    "decision",
    "complete",
    "closed",
    "error",
    "side",
    "proto",
    "ws_close",
    "session",
];

/// A gateway in front of `node_url`: a proxy route, a redirect route and a live route.
fn config(node_url: &str, server: &str, live: &str, log: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "2s"
{server}

[upstream]
connect_timeout = "2s"
response_header_timeout = "10s"

[live]
{live}

[admin]
token = "adm1n"

[log]
{log}

[[nodes]]
id = "a"
url = "{node_url}"
streams = ["cam1"]

[[routes]]
path = "/vod/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"

[[routes]]
path = "/snap/{{*rest}}"
action = "redirect"
to = "a"
upstream = "/files/{{*rest}}"

[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"
"#
    )
}

/// The value of `key=` in a text access line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// The JSON access lines in `path` so far.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// The JSON line of request `rid` in `path`, once written.
fn json_line(path: &Path, rid: &str) -> serde_json::Value {
    let mut found = None;
    wait_until("the access line", T, || {
        found = json_lines(path)
            .into_iter()
            .find(|v| v["request_id"] == rid);
        found.is_some()
    });
    found.expect("line")
}

fn send_raw(gw: &Proc, raw: &str) -> TcpStream {
    let mut s = TcpStream::connect(gw.addr()).expect("connect");
    s.write_all(raw.as_bytes()).expect("write");
    s
}

#[test]
fn a_redirect_is_complete_and_a_viewer_gone_before_the_answer_is_a_499() {
    // The node answers /files/slow after 10 s; everything else at once.
    let up = Upstream::start(|seen| {
        if seen.target.contains("slow") {
            Reply::Delayed(
                Duration::from_secs(10),
                Box::new(Reply::Ok {
                    headers: vec![],
                    body: b"late".to_vec(),
                }),
            )
        } else {
            common::upstream::echo(seen)
        }
    });
    let (gw, _d) = gateway(&config(&up.url(), "", "", ""));
    let r = get(gw.addr(), "/snap/x.jpg", "X-Request-Id: redir-1\r\n");
    assert_eq!(r.status, 302);
    let line = access_line(&gw, "redir-1");
    assert_eq!(field(&line, "status"), "302", "{line}");
    assert_eq!(field(&line, "complete"), "true", "{line}");
    assert_eq!(field(&line, "closed"), "\"\"", "{line}");
    assert_eq!(field(&line, "decision"), "redirect", "{line}");

    // The viewer asks, the node is slow, the viewer leaves before any answer.
    let s = send_raw(
        &gw,
        "GET /vod/slow HTTP/1.1\r\nHost: t\r\nX-Request-Id: gone-1\r\n\r\n",
    );
    wait_until("the request to reach the node", T, || {
        up.requests().iter().any(|r| r.target.contains("slow"))
    });
    s.shutdown(Shutdown::Both).expect("close");
    drop(s);
    let line = access_line(&gw, "gone-1");
    assert_eq!(field(&line, "status"), "499", "{line}");
    assert_eq!(field(&line, "complete"), "false", "{line}");
    assert_eq!(field(&line, "closed"), "\"client\"", "{line}");
}

#[test]
fn a_send_timeout_and_a_broken_node_say_so() {
    let up = Upstream::start(|seen| {
        if seen.target.contains("forever") {
            Reply::Endless {
                chunk: vec![7u8; 64 * 1024],
                every: Duration::from_millis(5),
            }
        } else {
            Reply::Chunks {
                pieces: vec![(Duration::ZERO, b"some bytes".to_vec())],
                then: After::Close,
            }
        }
    });
    let (gw, _d) = gateway(&config(
        &up.url(),
        "send_timeout = \"1s\"\nsend_buffer = 16384",
        "",
        "",
    ));
    // A client that stops reading: the write stalls, send_timeout closes the connection.
    let _stalled = {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        sock.connect(&gw.addr().into()).expect("connect");
        let mut s: TcpStream = sock.into();
        s.write_all(b"GET /vod/forever HTTP/1.1\r\nHost: t\r\nX-Request-Id: stall-1\r\n\r\n")
            .expect("write");
        s
    };
    let line = access_line(&gw, "stall-1");
    assert_eq!(field(&line, "closed"), "\"send_timeout\"", "{line}");
    assert_eq!(field(&line, "complete"), "false", "{line}");
    assert_eq!(field(&line, "status"), "200", "{line}");

    // The node dies mid-body.
    let r = get(gw.addr(), "/vod/breaks", "X-Request-Id: broken-1\r\n");
    assert_eq!(r.status, 200);
    let line = access_line(&gw, "broken-1");
    assert_eq!(field(&line, "closed"), "\"upstream\"", "{line}");
    assert_eq!(field(&line, "complete"), "false", "{line}");
}

#[test]
fn a_slow_viewer_cut_a_stream_end_and_shutdown_say_so() {
    let mut o = origin(&common::media_dir());
    let (mut gw, _d) = gateway(&config(
        &format!("http://{}", o.addr()),
        "send_timeout = \"60s\"\nsend_buffer = 16384",
        "viewer_queue_bytes = 65536\nviewer_queue_duration = \"1s\"\nreconnect_window = \"1s\"",
        "",
    ));
    // A live viewer that stops reading is cut at a keyframe (long before send_timeout).
    let stalled = common::stalled_get(gw.addr(), "/flv/cam1.flv");
    wait_until("the slow viewer's cut", Duration::from_secs(60), || {
        get(gw.addr(), "/api/v1/live", common::api::ADMIN).json()["viewers_cut"] == 1
    });
    // Its connection ends once what hyper holds for it is read: without the final chunk.
    assert!(!common::drain_until_closed(stalled, T), "cut, not ended");
    wait_until("the slow viewer's line", T, || {
        gw.logs().contains("closed=\"slow_viewer\"")
    });
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("closed=\"slow_viewer\""))
        .expect("line")
        .to_string();
    assert_eq!(field(&line, "complete"), "false", "{line}");
    assert_eq!(field(&line, "decision"), "live", "{line}");

    // The only node dies: after the reconnect window the stream ends, cleanly.
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    expect_live_start(&mut v, T);
    let _ = o.child.kill();
    let _ = o.child.wait();
    let (_, ended) = v.tags_until_end(T);
    assert!(ended && v.clean_end());
    wait_until("the ended viewer's line", T, || {
        gw.logs().contains("closed=\"stream_end\"")
    });
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("closed=\"stream_end\""))
        .expect("line")
        .to_string();
    assert_eq!(field(&line, "complete"), "true", "{line}");

    // A viewer watching when the gateway shuts down.
    let o = origin(&common::media_dir());
    drop(gw);
    let (gw2, _d2) = gateway(&config(&format!("http://{}", o.addr()), "", "", ""));
    gw = gw2;
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    expect_live_start(&mut v, T);
    gw.sigterm();
    let (_, ended) = v.tags_until_end(T);
    assert!(ended, "the viewer gets an end at shutdown");
    let st = gw.wait_exit(T).expect("the gateway exits");
    assert!(st.success());
    assert!(
        gw.logs().contains("closed=\"shutdown\""),
        "the line is written before the process exits:\n{}",
        gw.logs()
    );
}

#[test]
fn json_lines_have_the_documented_fields_and_sigusr1_reopens_the_file() {
    let up = Upstream::start(common::upstream::echo);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let (gw, _d) = gateway(&config(
        &up.url(),
        "",
        "",
        &format!("format = \"json\"\naccess = \"{}\"", log.display()),
    ));
    let r = get(
        gw.addr(),
        "/vod/a?token=s3cret&x=1",
        "X-Request-Id: j-1\r\n",
    );
    assert_eq!(r.status, 200);
    let r = get(gw.addr(), "/snap/b", "X-Request-Id: j-2\r\n");
    assert_eq!(r.status, 302);
    let r = get(gw.addr(), "/nothing", "X-Request-Id: j-3\r\n");
    assert_eq!(r.status, 404);
    json_line(&log, "j-3");
    for v in json_lines(&log) {
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want, "{v}");
        assert!(
            v["ts"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
            "{v}"
        );
        assert!(v["status"].is_u64() && v["bytes"].is_u64() && v["ms"].is_u64());
        assert!(v["complete"].is_boolean());
        assert_eq!(v["client"], "127.0.0.1");
    }
    let proxied = json_line(&log, "j-1");
    assert_eq!(
        proxied["path"], "/vod/a?x=1",
        "credentials stay out of the log"
    );
    assert_eq!(proxied["node"], "a");
    assert_eq!(proxied["decision"], "proxy");
    assert_eq!(proxied["complete"], true);
    assert_eq!(proxied["closed"], serde_json::Value::Null);
    let missing = json_line(&log, "j-3");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["side"], "downstream");
    assert_eq!(missing["error"], "no route matches this path");
    assert!(
        !gw.logs().contains("j-1"),
        "access lines go to the file, not stderr"
    );

    // logrotate: rename, then SIGUSR1; later lines go to a new file at the path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    let _ = std::process::Command::new("kill")
        .args(["-USR1", &gw.pid().to_string()])
        .status();
    wait_until("the new file", T, || log.exists());
    let r = get(gw.addr(), "/vod/after", "X-Request-Id: j-4\r\n");
    assert_eq!(r.status, 200);
    json_line(&log, "j-4");
    assert!(json_lines(&rotated)
        .iter()
        .any(|v| v["request_id"] == "j-1"));
    assert!(!json_lines(&rotated)
        .iter()
        .any(|v| v["request_id"] == "j-4"));
    assert!(gw.logs().contains("access log reopened"));
}
