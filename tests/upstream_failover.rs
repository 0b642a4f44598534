//! Failover between nodes and node health, against real processes: a `streamgate origin`
//! frozen with SIGSTOP (the kernel still accepts its connections, nothing answers), a socket
//! that is bound but never accepts, a port nobody listens on.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::api::ADMIN;
use common::upstream::{echo, Reply, Upstream};
use common::{gateway, get, raw_request, wait_until};

/// Freezes a process with SIGSTOP; thaws it (SIGCONT) when dropped, even if the test fails,
/// so the process can be killed and waited for normally.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Self {
        let ok = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid}");
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// A gateway with nodes `ids[i]` at `urls[i]`, all holding stream `cam1` (the first preferred),
/// a registry route `/hls/{stream}/{*rest}` → `/files/{*rest}`, and short upstream timers (the
/// header timeout leaves a loaded machine's healthy node room to answer).
fn config(nodes: &[(&str, String)], upstream_extra: &str, node_extra: &str) -> String {
    let mut s = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstream]
connect_timeout = "1s"
response_header_timeout = "2s"
body_idle_timeout = "2s"
{upstream_extra}

[admin]
token = "adm1n"

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
upstream = "/files/{{*rest}}"
"#
    );
    for (i, (id, url)) in nodes.iter().enumerate() {
        s.push_str(&format!(
            "\n[[nodes]]\nid = \"{id}\"\nurl = \"{url}\"\nstreams = [\"cam1\"]\n{}\n",
            if i == 0 { node_extra } else { "" }
        ));
    }
    s
}

/// The health object of node `id` in `GET /api/v1/nodes`.
fn health(gw: &common::Proc, id: &str) -> serde_json::Value {
    let r = get(gw.addr(), "/api/v1/nodes", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("node {id} listed"))["health"]
        .clone()
}

#[test]
fn a_stopped_node_fails_over_then_is_skipped_after_max_fails() {
    let media = common::media_dir();
    let a = common::origin(&media);
    let b = common::origin(&media);
    let (gw, _dir) = gateway(&config(
        &[("a", a.url("")), ("b", b.url(""))],
        "max_fails = 2\nfail_timeout = \"60s\"",
        "",
    ));
    // Both nodes serve the playlist while a runs.
    let r = get(
        gw.addr(),
        "/hls/cam1/hls/cam1/index.m3u8",
        "X-Request-Id: warm\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(common::access_line(&gw, "warm").contains("node=a"));

    let frozen = Frozen::new(a.pid());
    // a is silent (its kernel still accepts): the header timeout moves the GET on to b.
    for (i, rid) in ["f1", "f2"].iter().enumerate() {
        let r = get(
            gw.addr(),
            "/hls/cam1/hls/cam1/index.m3u8",
            &format!("X-Request-Id: {rid}\r\n"),
        );
        assert_eq!(r.status, 200, "{rid}: {}", r.text());
        assert!(r.text().starts_with("#EXTM3U"), "{}", r.text());
        assert!(common::access_line(&gw, rid).contains("node=b"));
        let h = health(&gw, "a");
        assert_eq!(h["consecutive_fails"], i + 1, "{h}");
    }
    let h = health(&gw, "a");
    assert_eq!(h["state"], "cooling_down", "{h}");
    assert!(
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no response headers within 2s")),
        "{h}"
    );
    assert_eq!(h["checked"], false);
    assert_eq!(health(&gw, "b")["state"], "up");

    // Cooling down, a is not tried at all: its failure count does not move.
    for rid in ["s1", "s2", "s3"] {
        let r = get(
            gw.addr(),
            "/hls/cam1/hls/cam1/index.m3u8",
            &format!("X-Request-Id: {rid}\r\n"),
        );
        assert_eq!(r.status, 200);
        assert!(common::access_line(&gw, rid).contains("node=b"));
    }
    assert_eq!(health(&gw, "a")["consecutive_fails"], 2);
    drop(frozen);
}

#[test]
fn silent_and_refusing_hosts_fail_over_and_bodies_are_never_replayed() {
    // Bound, never accepted: connects complete in the kernel's backlog, nothing answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    // Accepts and reads, never answers.
    let stall = Upstream::start(|_| Reply::Stall);
    // Nobody listens: refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("addr");
    let good = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(
        &[
            ("silent", silent_url),
            ("stall", stall.url()),
            ("dead", format!("http://{dead}")),
            ("good", good.url()),
        ],
        "max_fails = 0",
        "",
    ));
    let r = get(gw.addr(), "/hls/cam1/x.ts", "X-Request-Id: over\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/files/x.ts");
    assert!(common::access_line(&gw, "over").contains("node=good"));
    assert_eq!(good.requests().len(), 1);
    assert_eq!(
        stall.requests().len(),
        1,
        "the stalled node saw the GET once"
    );
    assert_eq!(health(&gw, "silent")["state"], "up", "max_fails = 0: off");

    // A request with a body goes to one node only: the silent one times out, nothing is
    // replayed on the others.
    let r = raw_request(
        gw.addr(),
        "POST /hls/cam1/up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nX-Request-Id: post1\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(good.requests().len(), 1, "the POST was not replayed");
    assert_eq!(stall.requests().len(), 1);
    let line = common::access_line(&gw, "post1");
    assert!(
        line.contains("side=\"upstream\"") && line.contains("node=silent"),
        "{line}"
    );
}

#[test]
fn every_candidate_cooling_down_is_still_tried() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("addr");
    let (gw, _dir) = gateway(&config(
        &[("dead", format!("http://{dead}"))],
        "max_fails = 1\nfail_timeout = \"60s\"",
        "",
    ));
    let r = get(gw.addr(), "/hls/cam1/x.ts", "");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert_eq!(health(&gw, "dead")["state"], "cooling_down");
    // The only candidate is cooling down: tried anyway (and counted), not refused unseen.
    let r = get(gw.addr(), "/hls/cam1/x.ts", "");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert_eq!(health(&gw, "dead")["consecutive_fails"], 2);
}

#[test]
fn an_active_health_check_marks_a_node_down_and_up() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let a = Upstream::start(move |req| {
        if req.target == "/healthz" {
            return if flag.load(Ordering::SeqCst) {
                Reply::Ok {
                    headers: vec![],
                    body: b"ok".to_vec(),
                }
            } else {
                Reply::Status {
                    status: 503,
                    headers: vec![],
                    body: b"draining".to_vec(),
                }
            };
        }
        echo(req)
    });
    let b = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(
        &[("a", a.url()), ("b", b.url())],
        "",
        "health = \"/healthz\"\nhealth_interval = \"100ms\"",
    ));
    wait_until("a marked down", Duration::from_secs(10), || {
        health(&gw, "a")["state"] == "down"
    });
    let h = health(&gw, "a");
    assert_eq!(h["checked"], true);
    assert!(
        h["last_error"].as_str().is_some_and(|e| e.contains("503")),
        "{h}"
    );
    let r = get(gw.addr(), "/hls/cam1/x.ts", "X-Request-Id: down1\r\n");
    assert_eq!(r.status, 200);
    assert!(common::access_line(&gw, "down1").contains("node=b"));
    assert!(
        a.requests().iter().all(|r| r.target == "/healthz"),
        "a down node is not sent viewers' requests"
    );
    healthy.store(true, Ordering::SeqCst);
    wait_until("a marked up", Duration::from_secs(10), || {
        health(&gw, "a")["state"] == "up"
    });
    let r = get(gw.addr(), "/hls/cam1/x.ts", "X-Request-Id: up1\r\n");
    assert_eq!(r.status, 200);
    assert!(common::access_line(&gw, "up1").contains("node=a"));
    assert_eq!(
        health(&gw, "b")["checked"],
        false,
        "no check configured for b"
    );
}
