//! The live fan-out hub against real origin processes: one upstream pull per stream, instant
//! start on a keyframe, slow viewers isolated, failover, clean ends and limits.

mod common;

use std::time::{Duration, Instant};

use common::flv::{assert_non_decreasing, expect_live_start, FlvStream};
use common::upstream::{After, Reply, Upstream};
use common::{gateway, get, origin, wait_until, Proc};
use streamgate::flv::TagKind;

const T: Duration = Duration::from_secs(20);

fn gw_config(nodes: &[(&str, &Proc)], live: &str) -> String {
    gw_config_with(nodes, "", live)
}

fn gw_config_with(nodes: &[(&str, &Proc)], server: &str, live: &str) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"3s\"\n{server}\n[upstream]\nconnect_timeout = \"2s\"\nresponse_header_timeout = \"5s\"\n[auth]\ntokens = [\"s3cret\"]\n[admin]\ntoken = \"adm1n\"\n",
    );
    s.push_str(&format!("[live]\n{live}\n"));
    for (id, p) in nodes {
        s.push_str(&format!(
            "[[nodes]]\nid = \"{id}\"\nurl = \"http://{}\"\nstreams = [\"cam1\", \"cam2\"]\n",
            p.addr()
        ));
    }
    s.push_str("[[routes]]\npath = \"/flv/{stream}.flv\"\naction = \"live\"\nupstream = \"/live/{stream}.flv\"\nauth = \"token\"\n");
    s
}

fn live_clients(origin: &Proc) -> u64 {
    let r = get(origin.addr(), "/stats", "");
    assert_eq!(r.status, 200);
    r.json()["live_clients"].as_u64().expect("live_clients")
}

/// The gateway's live status (`GET /api/v1/live`).
fn live_status(gw: &Proc) -> serde_json::Value {
    let r = get(gw.addr(), "/api/v1/live", "Authorization: Bearer adm1n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn media() -> std::path::PathBuf {
    common::media_dir()
}

#[test]
fn many_viewers_share_one_upstream_pull() {
    let o = origin(&media());
    let (gw, _d) = gateway(&gw_config(&[("a", &o)], ""));
    let n = 200;
    let addr = gw.addr();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                // `open` checks for a 200 chunked video/x-flv response.
                let mut s = FlvStream::open(addr, "/flv/cam1.flv?token=s3cret");
                let tags = expect_live_start(&mut s, T);
                let more = s.tags_for(Duration::from_millis(300));
                assert_non_decreasing(&[tags, more].concat());
                s
            })
        })
        .collect();
    let streams: Vec<FlvStream> = handles
        .into_iter()
        .map(|h| h.join().expect("viewer thread"))
        .collect();
    assert_eq!(streams.len(), n);
    assert_eq!(
        live_clients(&o),
        1,
        "the origin serves exactly one connection, the gateway's pull"
    );
    drop(streams);
}

#[test]
fn a_late_joiner_starts_on_the_cached_keyframe() {
    let o = origin(&media());
    let (gw, _d) = gateway(&gw_config(&[("a", &o)], ""));
    let mut first = FlvStream::open(gw.addr(), "/flv/cam2.flv?token=s3cret");
    expect_live_start(&mut first, T);
    // Let the stream run past a keyframe so the GOP cache holds frames after it.
    let ran = first.tags_for(Duration::from_millis(1500));
    assert!(ran
        .iter()
        .any(|t| t.kind() == TagKind::Video && t.is_keyframe()));
    let mut late = FlvStream::open(gw.addr(), "/flv/cam2.flv?token=s3cret");
    let start = expect_live_start(&mut late, T);
    // By bytes order: the first video frame after the sequence header is a keyframe, and the
    // GOP behind it arrives in the same burst (before the next keyframe), as one cached read.
    let last = start.last().expect("tags");
    assert!(last.is_keyframe());
    let key_ts = last.timestamp();
    let latest = ran.last().expect("tags").timestamp();
    assert!(
        key_ts <= latest,
        "the cached keyframe is not newer than what is live"
    );
    assert!(
        latest - key_ts < 1100,
        "the cached keyframe is the latest one (GOP is 1 s)"
    );
    assert_eq!(live_clients(&o), 1);
}

#[test]
fn without_gop_cache_a_joiner_waits_for_the_next_keyframe() {
    let o = origin(&media());
    let (gw, _d) = gateway(&gw_config(&[("a", &o)], "gop_cache = false"));
    let mut first = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    expect_live_start(&mut first, T);
    let mut second = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    expect_live_start(&mut second, T);
}

#[test]
fn a_stalled_viewer_is_cut_while_a_fast_one_keeps_pace() {
    let o = origin(&media());
    let (gw, _d) = gateway(&gw_config_with(
        &[("a", &o)],
        "send_buffer = 16384",
        "viewer_queue_bytes = 65536\nviewer_queue_duration = \"1s\"",
    ));
    let mut fast = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    expect_live_start(&mut fast, T);
    let stalled = common::stalled_get(gw.addr(), "/flv/cam1.flv?token=s3cret");
    wait_until("two viewers", T, || live_status(&gw)["viewers"] == 2);
    let rss_start = gw.rss_kib();
    // Read the fast viewer until the stalled one is cut: its media time keeps up with the clock.
    let t0 = Instant::now();
    let mut tags = Vec::new();
    while live_status(&gw)["viewers_cut"] == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "stalled viewer never cut"
        );
        tags.extend(fast.tags_for(Duration::from_millis(250)));
    }
    tags.extend(fast.tags_for(Duration::from_millis(1000)));
    let wall = t0.elapsed().as_millis() as i64;
    let status = live_status(&gw);
    assert!(
        status["frames_dropped"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert_eq!(status["viewers"], 1);
    let media = tags.last().expect("tags").timestamp() as i64 - tags[0].timestamp() as i64;
    assert!(
        media > wall / 2,
        "fast viewer got {media} ms of media in {wall} ms"
    );
    assert_non_decreasing(&tags);
    // The stalled one was cut: draining its socket ends without the final chunk.
    let clean = common::drain_until_closed(stalled, T);
    assert!(!clean, "the stalled viewer is cut off, not ended cleanly");
    let rss_end = gw.rss_kib();
    assert!(
        rss_end < rss_start + 16 * 1024,
        "gateway memory stays bounded: {rss_start} → {rss_end} KiB"
    );
}

/// Two origins hold cam1; the one serving dies; viewers continue from the other.
#[test]
fn failover_to_a_second_node_keeps_timestamps_monotonic() {
    let mut a = origin(&media());
    let b = origin(&media());
    let (gw, _d) = gateway(&gw_config(
        &[("a", &a), ("b", &b)],
        "reconnect_window = \"10s\"",
    ));
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    let mut tags = expect_live_start(&mut v, T);
    tags.extend(v.tags_for(Duration::from_millis(500)));
    assert_eq!(live_clients(&a), 1);
    assert_eq!(live_clients(&b), 0);
    let _ = a.child.kill();
    let _ = a.child.wait();
    // Keep reading: the stream goes on from b.
    // `tags_for` fails the test if the stream ends meanwhile: the viewer keeps its connection.
    let after = v.tags_for(Duration::from_secs(3));
    assert!(
        after
            .iter()
            .any(|t| t.kind() == TagKind::Video && t.is_keyframe()),
        "frames from b arrive"
    );
    tags.extend(after);
    assert_non_decreasing(&tags);
    assert_eq!(live_clients(&b), 1);
}

#[test]
fn with_one_node_viewers_end_cleanly_after_the_window() {
    let mut a = origin(&media());
    let (gw, _d) = gateway(&gw_config(&[("a", &a)], "reconnect_window = \"1s\""));
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    expect_live_start(&mut v, T);
    let _ = a.child.kill();
    let _ = a.child.wait();
    let (_, ended) = v.tags_until_end(T);
    assert!(ended, "stream did not end");
    assert!(v.clean_end(), "viewers get a clean end after the window");
}

#[test]
fn limits_answer_503_and_linger_keeps_the_pull_briefly() {
    let o = origin(&media());
    let (gw, _d) = gateway(&gw_config(
        &[("a", &o)],
        "max_viewers_per_stream = 2\nmax_streams = 1\nlinger = \"1s\"",
    ));
    let mut v1 = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    expect_live_start(&mut v1, T);
    let v2 = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    let r = get(gw.addr(), "/flv/cam1.flv?token=s3cret", "");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "overloaded");
    let r = get(gw.addr(), "/flv/cam2.flv?token=s3cret", "");
    assert_eq!(r.status, 503, "one stream at most");
    drop(v1);
    drop(v2);
    wait_until("viewers to leave", T, || live_status(&gw)["viewers"] == 0);
    // Within linger a rejoin reuses the pull; after it the pull stops.
    let mut v3 = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    expect_live_start(&mut v3, T);
    assert_eq!(live_clients(&o), 1);
    drop(v3);
    wait_until("the pull to stop after linger", T, || live_clients(&o) == 0);
}

#[test]
fn ffprobe_reads_a_late_joiner_without_errors() {
    let o = origin(&media());
    let (gw, _d) = gateway(&gw_config(&[("a", &o)], ""));
    let mut first = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    expect_live_start(&mut first, T);
    first.tags_for(Duration::from_millis(700));
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("late.flv");
    common::capture(
        gw.addr(),
        "/flv/cam1.flv?token=s3cret",
        Duration::from_secs(5),
        &file,
    );
    common::assert_ffprobe_h264_aac(&file);
}

#[test]
fn unknown_streams_and_dead_nodes_answer_json() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let cfg = format!(
        "[[nodes]]\nid = \"a\"\nurl = \"http://{dead}\"\nstreams = [\"cam1\"]\n[[routes]]\npath = \"/flv/{{stream}}.flv\"\naction = \"live\"\nupstream = \"/live/{{stream}}.flv\"\n[server]\nlisten = \"127.0.0.1:0\"\n"
    );
    let (gw, _d) = gateway(&cfg);
    let r = get(gw.addr(), "/flv/cam1.flv", "");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_unreachable");
    let r = get(gw.addr(), "/flv/nope.flv", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["stream"], "nope");
    let r = common::raw_request(
        gw.addr(),
        "POST /flv/cam1.flv HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
}

/// A gateway whose only node is a scripted one holding `cam1`.
fn scripted_gateway(node: &Upstream, live: &str) -> (Proc, tempfile::TempDir) {
    gateway(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\ntoken = \"adm1n\"\n[live]\n{live}\n[[nodes]]\nid = \"s\"\nurl = \"{}\"\nstreams = [\"cam1\"]\n[[routes]]\npath = \"/flv/{{stream}}.flv\"\naction = \"live\"\nupstream = \"/live/{{stream}}.flv\"\n",
        node.url()
    ))
}

/// A node that sends the FLV header, then the tags 300 ms later (a viewer attaches in between),
/// then ends the response; asked again, it no longer has the stream (404). The end of a response
/// alone is only a break: the 404 at the re-pull is what ends the stream.
fn header_then_tags(flv: Vec<u8>) -> Upstream {
    let first = std::sync::atomic::AtomicBool::new(true);
    Upstream::start(move |_| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Reply::Chunks {
                pieces: vec![
                    (Duration::ZERO, flv[..13].to_vec()),
                    (Duration::from_millis(300), flv[13..].to_vec()),
                ],
                then: After::End,
            }
        } else {
            Reply::Status {
                status: 404,
                headers: vec![],
                body: b"gone".to_vec(),
            }
        }
    })
}

/// cam1's first two seconds, as tags.
fn cam1_head() -> Vec<streamgate::flv::Tag> {
    common::flv::cut(&common::flv::read_file(&media().join("cam1.flv")).1, 2000)
}

#[test]
fn routes_naming_different_nodes_never_share_a_pull() {
    let a = origin(&media());
    let b = origin(&media());
    let mut cfg = gw_config(&[("a", &a)], "");
    cfg.push_str(&format!(
        "[[nodes]]\nid = \"b\"\nurl = \"http://{}\"\n[[routes]]\npath = \"/bflv/{{stream}}.flv\"\naction = \"live\"\nto = \"b\"\nstreams = [\"cam*\"]\nupstream = \"/live/{{stream}}.flv\"\n",
        b.addr()
    ));
    let (gw, _d) = gateway(&cfg);
    let mut via_registry = FlvStream::open(gw.addr(), "/flv/cam1.flv?token=s3cret");
    expect_live_start(&mut via_registry, T);
    let mut via_b = FlvStream::open(gw.addr(), "/bflv/cam1.flv");
    expect_live_start(&mut via_b, T);
    assert_eq!(live_clients(&a), 1);
    assert_eq!(live_clients(&b), 1, "the route's own node serves it");
}

#[test]
fn a_newcomer_on_a_stream_whose_clock_is_far_from_zero_is_not_cut() {
    // The node has been live for an hour: its timestamps start at 3 600 000 ms, and its first
    // tags come a moment after the header (the viewer attaches in between).
    let tags: Vec<_> = cam1_head()
        .iter()
        .map(|t| t.with_timestamp(t.timestamp() + 3_600_000))
        .collect();
    let bytes = common::flv::to_bytes(&tags);
    let node = header_then_tags(bytes);
    let (gw, _d) = scripted_gateway(&node, "");
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    let start = expect_live_start(&mut v, T);
    assert!(start.last().expect("keyframe").timestamp() >= 3_600_000);
    let (_, ended) = v.tags_until_end(T);
    assert!(
        ended && v.clean_end(),
        "the node's end (response over, then 404) reaches the viewer cleanly"
    );
    assert_eq!(live_status(&gw)["viewers_cut"], 0);
}

#[test]
fn a_node_clock_crossing_2_pow_32_wraps_on_the_wire_without_saturating() {
    // The node has been up ~49.7 days: its clock crosses 2^32 a second into the stream.
    let start = u32::MAX - 1000;
    let tags: Vec<_> = cam1_head()
        .iter()
        .map(|t| t.with_timestamp(t.timestamp().wrapping_add(start)))
        .collect();
    let node = header_then_tags(common::flv::to_bytes(&tags));
    let (gw, _d) = scripted_gateway(&node, "");
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    let mut got = expect_live_start(&mut v, T);
    let (rest, ended) = v.tags_until_end(T);
    assert!(ended && v.clean_end());
    got.extend(rest);
    for kind in [TagKind::Audio, TagKind::Video] {
        let ts: Vec<u32> = got
            .iter()
            .filter(|t| t.kind() == kind && !t.is_sequence_header())
            .map(|t| t.timestamp())
            .collect();
        assert!(
            ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) < 1000),
            "{kind:?} steps forward across the wrap: {ts:?}"
        );
        assert!(
            ts.first().is_some_and(|&t| t >= start),
            "{kind:?} started near 2^32"
        );
        assert!(
            ts.last().is_some_and(|&t| t < 2000),
            "{kind:?} wrapped (not pinned at u32::MAX): {ts:?}"
        );
    }
    assert_eq!(live_status(&gw)["viewers_cut"], 0);
}

#[test]
fn audio_only_streams_play_even_when_the_header_claims_video() {
    // SRS-style: the header announces audio and video, only audio comes.
    let audio: Vec<_> = cam1_head()
        .into_iter()
        .filter(|t| t.kind() != TagKind::Video)
        .collect();
    let n_audio_frames = audio
        .iter()
        .filter(|t| t.kind() == TagKind::Audio && !t.is_sequence_header())
        .count();
    let bytes = common::flv::to_bytes(&audio);
    let node = header_then_tags(bytes);
    let (gw, _d) = scripted_gateway(&node, "");
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    v.header(T);
    let (tags, ended) = v.tags_until_end(T);
    assert!(ended);
    let got = tags
        .iter()
        .filter(|t| t.kind() == TagKind::Audio && !t.is_sequence_header())
        .count();
    assert_eq!(got, n_audio_frames, "every audio frame reaches the viewer");
}

#[test]
fn a_node_that_accepts_then_fails_cannot_hold_viewers_past_the_window() {
    let first = std::sync::atomic::AtomicBool::new(true);
    let good = common::flv::to_bytes(&cam1_head());
    let node = Upstream::start(move |_| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // A real stream that then dies…
            Reply::Chunks {
                pieces: vec![(Duration::ZERO, good.clone())],
                then: After::Close,
            }
        } else {
            // …and every reconnect is accepted, sends a header, and dies at once.
            Reply::Chunks {
                pieces: vec![(Duration::ZERO, good[..13].to_vec())],
                then: After::Close,
            }
        }
    });
    let (gw, _d) = scripted_gateway(&node, "reconnect_window = \"1s\"");
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    expect_live_start(&mut v, T);
    let (_, ended) = v.tags_until_end(T);
    assert!(
        ended && v.clean_end(),
        "viewers get a clean end once the window has passed"
    );
    let tries = node.requests().len();
    assert!(tries < 20, "reconnects back off ({tries} requests)");
}

#[test]
fn a_node_that_goes_silent_counts_as_broken() {
    let first = std::sync::atomic::AtomicBool::new(true);
    let good = common::flv::to_bytes(&cam1_head());
    let node = Upstream::start(move |_| {
        // The first connection delivers media and then goes quiet; later ones never start.
        let n = if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            good.len()
        } else {
            13
        };
        Reply::Chunks {
            pieces: vec![(Duration::ZERO, good[..n].to_vec())],
            then: After::Hang,
        }
    });
    let (gw, _d) = scripted_gateway(
        &node,
        "reconnect_window = \"1s\"\nupstream_idle_timeout = \"500ms\"",
    );
    let mut v = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    expect_live_start(&mut v, T);
    let (_, ended) = v.tags_until_end(T);
    assert!(
        ended && v.clean_end(),
        "a silent node does not leave viewers hanging"
    );
    assert!(live_status(&gw)["reconnects"].as_u64().unwrap_or(0) >= 1);
}
