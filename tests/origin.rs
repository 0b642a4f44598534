//! `streamgate origin` end to end: the real binary, real sockets, real media.
//!
//! Every wait is bounded; the only plain sleep is the scenario's own "second viewer joins 3 s
//! later". Each test runs its own origin on an ephemeral port, so tests run in parallel.

mod common;
// Test-side FLV reading/writing helpers (self-contained; also usable as `common::flv`).
use common::flv as flvh;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use flvh::{assert_non_decreasing, expect_live_start, FlvStream};
use streamgate::flv::TagKind;

const T10: Duration = Duration::from_secs(10);

fn stats(addr: SocketAddr) -> serde_json::Value {
    let r = common::get(addr, "/stats", "");
    assert_eq!(r.status, 200);
    r.json()
}

fn stream_clients(addr: SocketAddr, name: &str) -> u64 {
    stats(addr)["streams"][name]["clients"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

fn write_flv(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write flv");
}

fn cam1_tags() -> Vec<streamgate::flv::Tag> {
    flvh::read_file(&common::media_dir().join("cam1.flv")).1
}

#[test]
fn two_viewers_3s_apart_start_clean_and_timestamps_rise_across_loops() {
    // A 2 s loop, so both viewers cross loop boundaries quickly.
    let dir = tempfile::tempdir().expect("tempdir");
    write_flv(
        dir.path(),
        "short.flv",
        &flvh::to_bytes(&flvh::cut(&cam1_tags(), 2000)),
    );
    let o = common::origin(dir.path());
    let addr = o.addr();

    let first = thread::spawn(move || {
        let mut s = FlvStream::open(addr, "/live/short.flv");
        let mut tags = expect_live_start(&mut s, T10);
        tags.extend(s.tags_for(Duration::from_secs(6)));
        tags
    });
    thread::sleep(Duration::from_secs(3)); // the scenario, not a readiness wait
    let mut s = FlvStream::open(addr, "/live/short.flv");
    let mut second = expect_live_start(&mut s, T10);
    let second_key = second.last().expect("keyframe").timestamp();
    second.extend(s.tags_for(Duration::from_secs(3)));
    let first = first.join().expect("first viewer");

    for tags in [&first, &second] {
        assert_non_decreasing(tags);
        let last = tags.last().expect("tags").timestamp();
        assert!(
            last > 4000,
            "no loop boundary crossed: last timestamp {last}"
        );
        assert!(tags.iter().any(|t| t.kind() == TagKind::Audio));
    }
    // The late viewer starts on a recent keyframe from the GOP cache, not at the beginning.
    assert!(second_key >= 1000, "late viewer started at {second_key} ms");
    drop(s);
    common::wait_until("both viewers uncounted", T10, || {
        stream_clients(addr, "short") == 0
    });
}

#[test]
fn hundred_viewers_are_served_and_counted_exactly() {
    let o = common::origin(&common::media_dir());
    let addr = o.addr();
    let mut viewers: Vec<FlvStream> = (0..100)
        .map(|_| FlvStream::open(addr, "/live/cam2.flv"))
        .collect();
    for v in &mut viewers {
        expect_live_start(v, T10);
    }
    common::wait_until("100 viewers in /stats", T10, || {
        stream_clients(addr, "cam2") == 100
    });
    assert_eq!(stats(addr)["live_clients"], 100);
    drop(viewers);
    common::wait_until("0 viewers in /stats", T10, || {
        let s = stats(addr);
        s["live_clients"] == 0 && s["streams"]["cam2"]["clients"] == 0
    });
    assert!(
        stats(addr)["streams"]["cam2"]["bytes_sent"]
            .as_u64()
            .unwrap_or(0)
            > 100 * 13
    );
}

/// Connects with a tiny receive buffer, sends the request and never reads.
fn stalled_client(addr: SocketAddr, path: &str) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.set_recv_buffer_size(4096)?;
            sock.connect(addr).await?.into_std()
        })
        .expect("connect stalled client");
    s.set_nonblocking(false).expect("blocking");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .expect("write");
    s
}

#[test]
fn stalled_viewer_is_cut_off_while_another_keeps_pace() {
    // ~3.8 MB/s of synthetic video, so a stalled viewer overflows its 2 MiB queue (plus socket
    // and hyper buffers) within seconds. As on the gateway, it first skips to the next keyframe
    // and is cut only if still backed up there (the origin used to cut at once).
    let dir = tempfile::tempdir().expect("tempdir");
    write_flv(
        dir.path(),
        "fast.flv",
        &flvh::to_bytes(&flvh::synthetic(2, 25, 150_000)),
    );
    let o = common::origin(dir.path());
    let addr = o.addr();

    let mut good = FlvStream::open(addr, "/live/fast.flv");
    let start = expect_live_start(&mut good, T10);
    let (t0, ts0) = (Instant::now(), start.last().expect("keyframe").timestamp());
    let _stalled = stalled_client(addr, "/live/fast.flv");

    let limit = Duration::from_secs(30);
    let mut last_ts = ts0;
    loop {
        if let Some(t) = good.tags_for(Duration::from_millis(200)).last() {
            last_ts = t.timestamp();
        }
        if stream_clients(addr, "fast") == 1 && o.logs().contains("cut off") {
            eprintln!("stalled viewer cut off after {:?}", t0.elapsed());
            break;
        }
        assert!(
            t0.elapsed() < limit,
            "stalled viewer not cut off; logs:\n{}",
            o.logs()
        );
    }
    // The good viewer keeps receiving at the source's pace.
    let after = good.tags_for(Duration::from_secs(2));
    assert!(!after.is_empty(), "good viewer starved after the cut");
    last_ts = after.last().map_or(last_ts, |t| t.timestamp());
    let media = Duration::from_millis(u64::from(last_ts - ts0));
    let wall = t0.elapsed();
    let skew = media.abs_diff(wall);
    eprintln!("good viewer: media {media:?} in wall {wall:?}");
    assert!(
        skew < Duration::from_millis(1500),
        "media {media:?} vs wall {wall:?}"
    );
    assert_eq!(stream_clients(addr, "fast"), 1);
}

#[test]
fn files_ranges_validators_and_types() {
    let media = common::media_dir();
    let o = common::origin(&media);
    let addr = o.addr();
    let data = std::fs::read(media.join("snapshot.jpg")).expect("snapshot");
    let len = data.len();

    let full = common::get(addr, "/files/snapshot.jpg", "");
    assert_eq!(full.status, 200);
    assert_eq!(full.body, data);
    assert_eq!(full.header("content-type"), Some("image/jpeg"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        full.header("content-length"),
        Some(len.to_string().as_str())
    );
    let etag = full.header("etag").expect("etag").to_owned();
    let last_modified = full
        .header("last-modified")
        .expect("last-modified")
        .to_owned();

    let r = common::get(addr, "/files/snapshot.jpg", "Range: bytes=10-19\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-19/{len}").as_str())
    );
    let r = common::get(addr, "/files/snapshot.jpg", "Range: bytes=-5\r\n");
    assert_eq!((r.status, &r.body[..]), (206, &data[len - 5..]));
    let r = common::get(addr, "/files/snapshot.jpg", "Range: bytes=100-\r\n");
    assert_eq!((r.status, &r.body[..]), (206, &data[100..]));
    let r = common::get(
        addr,
        "/files/snapshot.jpg",
        &format!("Range: bytes={len}-\r\n"),
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // If-Range with a stale validator: the whole file.
    let r = common::get(
        addr,
        "/files/snapshot.jpg",
        "Range: bytes=0-1\r\nIf-Range: \"stale\"\r\n",
    );
    assert_eq!((r.status, r.body.len()), (200, len));
    let r = common::get(
        addr,
        "/files/snapshot.jpg",
        &format!("Range: bytes=0-1\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.len()), (206, 2));

    let head = common::raw_request(
        addr,
        "HEAD /files/snapshot.jpg HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(len.to_string().as_str())
    );
    assert!(head.body.is_empty());

    let r = common::get(
        addr,
        "/files/snapshot.jpg",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = common::get(
        addr,
        "/files/snapshot.jpg",
        &format!("If-Modified-Since: {last_modified}\r\n"),
    );
    assert_eq!(r.status, 304);
    let r = common::get(
        addr,
        "/files/snapshot.jpg",
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200);

    for (path, ct) in [
        ("/files/cam1.flv", "video/x-flv"),
        ("/files/movie.mp4", "video/mp4"),
        (
            "/files/hls/cam1/index.m3u8",
            "application/vnd.apple.mpegurl",
        ),
        ("/files/hls/cam1/seg000.ts", "video/mp2t"),
    ] {
        let r = common::get(addr, path, "Range: bytes=0-0\r\n");
        assert_eq!(
            (r.status, r.header("content-type")),
            (206, Some(ct)),
            "{path}"
        );
    }
    // A multi-megabyte body streams intact (several chunks).
    let big = std::fs::read(media.join("cam2.flv")).expect("cam2");
    assert_eq!(common::get(addr, "/files/cam2.flv", "").body, big);

    assert_eq!(common::get(addr, "/files/hls", "").status, 404);
    assert_eq!(common::get(addr, "/files/nope.txt", "").status, 404);
    let r = common::get(addr, "/live/nope.flv", "");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("stream_not_found"))
    );
    assert_eq!(common::get(addr, "/healthz", "").status, 200);
}

#[test]
fn path_escapes_are_refused() {
    // T/Cargo.toml is the secret next to the served directory T/media.
    let t = tempfile::tempdir().expect("tempdir");
    let media = t.path().join("media");
    std::fs::create_dir_all(media.join("sub")).expect("mkdir");
    std::fs::write(t.path().join("Cargo.toml"), "SECRET").expect("secret");
    std::fs::write(media.join("inside.txt"), "public").expect("inside");
    std::fs::write(media.join("sub/nested.txt"), "nested").expect("nested");
    std::os::unix::fs::symlink(t.path().join("Cargo.toml"), media.join("escape.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(t.path(), media.join("outdir")).expect("symlink dir");
    std::os::unix::fs::symlink(media.join("inside.txt"), media.join("alias.txt")).expect("alias");
    let o = common::origin(&media);
    let addr = o.addr();

    for path in [
        "/files/../Cargo.toml",
        "/files/%2e%2e/Cargo.toml",
        "/files/%2E%2E/Cargo.toml",
        "/files/..%2fCargo.toml",
        "/files/..%2FCargo.toml",
        "/files/sub/..%2f..%2fCargo.toml",
        "/files/sub/../../Cargo.toml",
        "/files/sub%2f..%2f..%2fCargo.toml",
        "/files/..%5cCargo.toml",
        "/files/..\\Cargo.toml",
        "/files/escape.txt",
        "/files/outdir/Cargo.toml",
        "/files/inside.txt%00.jpg",
        "/files//Cargo.toml",
        "/files/sub",
    ] {
        let r = common::get(addr, path, "");
        assert!(matches!(r.status, 400 | 404), "{path}: status {}", r.status);
        assert!(!r.text().contains("SECRET"), "{path} leaked the secret");
    }
    for (path, body) in [
        ("/files/inside.txt", "public"),
        ("/files/alias.txt", "public"),
        ("/files/sub/nested.txt", "nested"),
    ] {
        let r = common::get(addr, path, "");
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
    }
}

#[test]
fn garbage_flv_ends_its_stream_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tags = cam1_tags();
    write_flv(
        dir.path(),
        "good.flv",
        &flvh::to_bytes(&flvh::cut(&tags, 2000)),
    );
    let mut bad = flvh::to_bytes(&flvh::cut(&tags, 1000));
    // A video tag whose PreviousTagSize is wrong, then junk.
    bad.extend_from_slice(&[9, 0, 0, 2, 0, 0x03, 0xE8, 0, 0, 0, 0, 0x27, 1, 0, 0, 0, 99]);
    bad.extend_from_slice(b"this is not FLV at all");
    write_flv(dir.path(), "bad.flv", &bad);
    // Only init tags (nothing to pace) and no FLV at all: refused up front.
    write_flv(dir.path(), "empty.flv", &flvh::to_bytes(&tags[..3]));
    write_flv(dir.path(), "junk.flv", b"GIF89a not a video");
    let o = common::origin(dir.path());
    let addr = o.addr();

    let mut good = FlvStream::open(addr, "/live/good.flv");
    expect_live_start(&mut good, T10);
    let mut broken = FlvStream::open(addr, "/live/bad.flv");
    expect_live_start(&mut broken, T10);
    let (_, ended) = broken.tags_until_end(Duration::from_secs(15));
    assert!(ended, "the corrupt stream did not end");
    common::wait_until("corrupt stream logged", T10, || {
        o.logs().contains("corrupt")
    });
    common::wait_until("bad viewer uncounted", T10, || {
        stream_clients(addr, "bad") == 0
    });

    // The other stream and the node carry on.
    let more = good.tags_for(Duration::from_millis(1500));
    assert!(more.len() > 20, "good stream stalled: {} tags", more.len());
    assert_eq!(common::get(addr, "/healthz", "").status, 200);
    assert_eq!(stream_clients(addr, "good"), 1);
    for path in ["/live/empty.flv", "/live/junk.flv"] {
        let r = common::get(addr, path, "");
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (502, Some("bad_stream")),
            "{path}"
        );
    }

    // Once its last viewer leaves, a stream lingers, then stops.
    drop(good);
    common::wait_until("idle stream stopped", T10, || {
        o.logs()
            .contains("live stream stopped stream=good reason=\"idle\"")
    });
}

#[test]
fn ffprobe_reads_h264_and_aac_from_the_live_stream() {
    let o = common::origin(&common::media_dir());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("live.flv");
    common::capture(o.addr(), "/live/cam1.flv", Duration::from_secs(5), &path);
    common::assert_ffprobe_h264_aac(&path);
}
