//! Live failover against real processes: nodes killed with `kill -9` while serving close-delimited
//! and chunked bodies, a first node that is stopped (SIGSTOP) when the first viewer joins, the
//! same node restarted on its port, and a node that answers 404 after a break.
//!
//! Signals go only to processes these tests started (by their pid), and every stopped process is
//! continued again by a guard's `Drop`, before `Proc`'s own `Drop` kills it.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::flv::{assert_non_decreasing, expect_live_start, FlvStream};
use common::upstream::{After, Reply, Upstream};
use common::{gateway, get, Proc};
use streamgate::flv::{Tag, TagKind};

const T: Duration = Duration::from_secs(10);
/// The gateway's first reconnect wait is at most 100 ms (jittered backoff's first step).
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// Sends `sig` (e.g. "KILL", "STOP", "CONT") to a process this test started.
fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &p.pid().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {}", p.pid());
}

/// Kills a process with SIGKILL and reaps it.
fn kill9(p: &mut Proc) {
    signal(p, "KILL");
    let _ = p.child.wait();
}

/// A SIGSTOPped process, continued again when the guard is dropped (so `Proc`'s Drop can end it
/// and nothing is left stopped if the test fails).
struct Stopped<'a>(&'a Proc);

impl<'a> Stopped<'a> {
    fn new(p: &'a Proc) -> Self {
        signal(p, "STOP");
        Self(p)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.pid().to_string()])
            .status();
    }
}

/// An origin serving the sample media on `listen` with the given live framing.
fn origin_on(listen: &str, framing: &str) -> Proc {
    let media = common::media_dir();
    common::spawn(
        &[
            "origin",
            "--media",
            media.to_str().expect("utf-8 path"),
            "--listen",
            listen,
            "--live-framing",
            framing,
        ],
        1,
    )
}

fn gw_config(nodes: &[(&str, SocketAddr)], upstream: &str, live: &str) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"2s\"\n[upstream]\nconnect_timeout = \"1s\"\n{upstream}\n[admin]\ntoken = \"adm1n\"\n[live]\n{live}\n"
    );
    for (id, addr) in nodes {
        s.push_str(&format!(
            "[[nodes]]\nid = \"{id}\"\nurl = \"http://{addr}\"\nstreams = [\"cam1\"]\n"
        ));
    }
    s.push_str("[[routes]]\npath = \"/flv/{stream}.flv\"\naction = \"live\"\nupstream = \"/live/{stream}.flv\"\n");
    s
}

fn live_clients(addr: SocketAddr) -> u64 {
    let r = get(addr, "/stats", "");
    assert_eq!(r.status, 200);
    r.json()["live_clients"].as_u64().expect("live_clients")
}

/// Reads tags for `dur`, with each tag's arrival time.
fn timed_tags(v: &mut FlvStream, dur: Duration) -> Vec<(Instant, Tag)> {
    let until = Instant::now() + dur;
    let mut out = Vec::new();
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match v.next_event(Instant::now() + left) {
            Ok(Some(streamgate::flv::Event::Tag(t))) => out.push((Instant::now(), t)),
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => panic!("the stream ended: viewers must keep their connection"),
            Err(e) if e.contains("timed out") || e.contains("deadline") => break,
            Err(e) => panic!("{e}"),
        }
    }
    out
}

/// The longest wait between two tag arrivals, and between two video timestamps.
fn gaps(tags: &[(Instant, Tag)]) -> (Duration, u32) {
    let arrival = tags
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    let video: Vec<u32> = tags
        .iter()
        .filter(|(_, t)| t.kind() == TagKind::Video)
        .map(|(_, t)| t.timestamp())
        .collect();
    let ts = video
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]))
        .max()
        .unwrap_or(0);
    (arrival, ts)
}

/// Two nodes hold cam1; the one serving is killed with `kill -9`; the viewer goes on from the
/// other with monotonic timestamps and no gap longer than the reconnect delay plus a second.
fn killed_node_fails_over(framing: &str) {
    let mut a = origin_on("127.0.0.1:0", framing);
    let b = origin_on("127.0.0.1:0", framing);
    let (gw, _d) = gateway(&gw_config(
        &[("a", a.addr()), ("b", b.addr())],
        "",
        "reconnect_window = \"5s\"",
    ));
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    let mut tags: Vec<Tag> = expect_live_start(&mut v, T);
    let before = timed_tags(&mut v, Duration::from_millis(700));
    assert_eq!(live_clients(a.addr()), 1, "a serves first");
    let b_addr = b.addr();
    kill9(&mut a);
    let after = timed_tags(&mut v, Duration::from_secs(3));
    let joined: Vec<(Instant, Tag)> = before.into_iter().chain(after.clone()).collect();
    let (arrival, ts_gap) = gaps(&joined);
    assert!(
        arrival < RECONNECT_DELAY + Duration::from_secs(1),
        "{framing}: tags stopped for {arrival:?}"
    );
    assert!(
        ts_gap < 1100,
        "{framing}: video timestamps leapt by {ts_gap} ms"
    );
    assert!(
        after
            .iter()
            .any(|(_, t)| t.kind() == TagKind::Video && t.is_keyframe()),
        "{framing}: frames from b arrive"
    );
    tags.extend(joined.into_iter().map(|(_, t)| t));
    assert_non_decreasing(&tags);
    assert_eq!(live_clients(b_addr), 1);
    // The move shows in the metrics: one failover, at least one reconnect, one pull.
    let m = get(gw.addr(), "/metrics", "Authorization: Bearer adm1n\r\n").text();
    let value = |name: &str| {
        m.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert_eq!(value("streamgate_live_failovers_total"), 1.0, "{framing}");
    assert!(
        value("streamgate_live_reconnects_total") >= 1.0,
        "{framing}"
    );
    assert_eq!(value("streamgate_live_pulls_total"), 1.0, "{framing}");
}

#[test]
fn a_node_killed_while_serving_close_delimited_fails_over() {
    killed_node_fails_over("close");
}

#[test]
fn a_node_killed_while_serving_chunked_fails_over() {
    killed_node_fails_over("chunked");
}

#[test]
fn the_first_viewer_is_served_by_the_second_node_when_the_first_is_stopped() {
    let a = origin_on("127.0.0.1:0", "chunked");
    let b = origin_on("127.0.0.1:0", "chunked");
    let (gw, _d) = gateway(&gw_config(
        &[("a", a.addr()), ("b", b.addr())],
        "response_header_timeout = \"1s\"",
        "",
    ));
    let stopped = Stopped::new(&a);
    let t0 = Instant::now();
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    expect_live_start(&mut v, T);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "a was tried first ({waited:?})"
    );
    assert_eq!(live_clients(b.addr()), 1, "b serves the first viewer");
    assert!(!v.tags_for(Duration::from_millis(500)).is_empty());
    drop(stopped);
}

#[test]
fn the_same_node_restarted_within_the_window_resumes_viewers() {
    let mut a = origin_on("127.0.0.1:0", "close");
    let addr = a.addr();
    let (gw, _d) = gateway(&gw_config(&[("a", addr)], "", "reconnect_window = \"5s\""));
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    let mut tags = expect_live_start(&mut v, T);
    tags.extend(v.tags_for(Duration::from_millis(500)));
    kill9(&mut a);
    // A new process on the same port, well within the window.
    let a2 = origin_on(&addr.to_string(), "close");
    let after = timed_tags(&mut v, Duration::from_secs(3));
    assert!(
        after
            .iter()
            .any(|(_, t)| t.kind() == TagKind::Video && t.is_keyframe()),
        "the restarted node's frames arrive"
    );
    tags.extend(after.into_iter().map(|(_, t)| t));
    assert_non_decreasing(&tags);
    assert_eq!(live_clients(a2.addr()), 1);
}

#[test]
fn a_node_answering_404_after_a_break_ends_viewers_cleanly() {
    let flv = common::flv::to_bytes(&common::flv::cut(
        &common::flv::read_file(&common::media_dir().join("cam1.flv")).1,
        2000,
    ));
    let first = std::sync::atomic::AtomicBool::new(true);
    let node = Upstream::start(move |_| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // The node dies mid-stream (a break)…
            Reply::Chunks {
                pieces: vec![(Duration::ZERO, flv.clone())],
                then: After::Close,
            }
        } else {
            // …and, back, no longer has the stream.
            Reply::Status {
                status: 404,
                headers: vec![],
                body: b"not found".to_vec(),
            }
        }
    });
    let addr: SocketAddr = node
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let (gw, _d) = gateway(&gw_config(&[("s", addr)], "", "reconnect_window = \"30s\""));
    let t0 = Instant::now();
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    expect_live_start(&mut v, T);
    let (_, ended) = v.tags_until_end(T);
    assert!(
        ended && v.clean_end(),
        "a 404 at the re-pull ends the stream"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "ended by the 404, not by the 30 s window"
    );
    assert_eq!(node.requests().len(), 2);
}

#[test]
fn a_stream_withdrawn_from_the_registry_ends_at_the_next_break() {
    let flv = common::flv::to_bytes(&common::flv::cut(
        &common::flv::read_file(&common::media_dir().join("cam1.flv")).1,
        2000,
    ));
    // The node serves the start at once and the rest 800 ms later, then dies (a break). Asked
    // again it would still serve: only the registry can say the stream is over.
    let node = Upstream::start(move |_| Reply::Chunks {
        pieces: vec![
            (Duration::ZERO, flv[..flv.len() / 2].to_vec()),
            (Duration::from_millis(800), flv[flv.len() / 2..].to_vec()),
        ],
        then: After::Close,
    });
    let (gw, _d) = gateway(&gw_config(&[], "", "reconnect_window = \"30s\""));
    assert_eq!(
        common::api::put_node(gw.addr(), "s", &node.url(), "60").status,
        200
    );
    assert_eq!(common::api::put_stream(gw.addr(), "cam1", "s").status, 200);
    let t0 = Instant::now();
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    expect_live_start(&mut v, T);
    // Unpublished (as a hook or an operator would) while the pull is still running.
    let r = common::api::send(
        gw.addr(),
        "DELETE",
        "/api/v1/streams/cam1",
        common::api::ADMIN,
        b"",
    );
    assert!(r.status < 300, "withdraw: {} {}", r.status, r.text());
    let (_, ended) = v.tags_until_end(T);
    assert!(ended && v.clean_end(), "withdrawn and broken: a clean end");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "ended by the registry, not by the 30 s window"
    );
    assert_eq!(node.requests().len(), 1, "no re-pull of a withdrawn stream");
}
