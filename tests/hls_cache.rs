//! The HLS / VOD cache end to end (issue 13): a real gateway in front of real nodes, a stock
//! nginx (static files, `limit_rate` for a slow node, its access log counting what reached it),
//! nginx-rtmp writing live HLS from an ffmpeg push, and `streamgate origin` serving an LL-HLS
//! playlist with blocking reloads that a small writer (tests/common/ll_hls.rs) grows over time.
//! Every count is read from the node's own log or stats.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::ll_hls::LlHls;
use common::nginx_http::NginxHttp;
use common::nginx_rtmp::{push, NginxRtmp};
use common::upstream::{Reply, Upstream};
use common::{gateway, get, open_stream, raw_request, wait_until, Proc};

const ADMIN: &str = "Authorization: Bearer admin-secret\r\n";

/// A gateway with `routes` (TOML) and the admin API on.
fn gw(extra: &str, routes: &str) -> (Proc, tempfile::TempDir) {
    gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
token = "admin-secret"
[upstream]
response_header_timeout = "20s"
{extra}
{routes}
"#
    ))
}

fn cache_status(gw: &Proc) -> serde_json::Value {
    let r = get(gw.addr(), "/api/v1/cache", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn route_counter(gw: &Proc, route: &str, what: &str) -> u64 {
    let v = cache_status(gw);
    v["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["route"] == route)
        .and_then(|r| r[what].as_u64())
        .unwrap_or_else(|| panic!("no {what} for {route} in {v}"))
}

/// Deterministic bytes of `len`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[0] ^ seed)
        .collect()
}

#[test]
fn a_late_viewer_gets_the_first_bytes_while_the_slow_node_is_still_sending() {
    let seg = bytes(300_000, 1);
    let nginx = NginxHttp::start(
        "location / { root {root}; limit_rate 40k; }",
        &[("live/a/seg1.ts", &seg)],
    );
    let (gw, _d) = gw(
        "",
        &format!(
            "[[routes]]\npath = \"/hls/{{*rest}}\"\naction = \"proxy\"\nto = \"{}\"\nupstream = \"/{{*rest}}\"\ncache = \"hls\"\n",
            nginx.url()
        ),
    );
    let (head, mut first, mut got_first) = open_stream(gw.addr(), "/hls/live/a/seg1.ts");
    assert_eq!(head.status, 200);
    let mut buf = vec![0u8; 65536];
    while got_first.len() < 10_000 {
        let n = first.read(&mut buf).expect("read");
        assert!(n > 0);
        got_first.extend_from_slice(&buf[..n]);
    }
    // The second viewer arrives mid-fetch: it gets bytes at once, while nginx still sends
    // (nginx writes a request's access line when it has sent the whole answer).
    let (head2, mut second, mut got_second) = open_stream(gw.addr(), "/hls/live/a/seg1.ts");
    assert_eq!(head2.status, 200);
    while got_second.is_empty() {
        let n = second.read(&mut buf).expect("read");
        assert!(n > 0);
        got_second.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        nginx.gets("/live/a/seg1.ts"),
        0,
        "the node has not finished sending when the late viewer's first bytes arrive"
    );
    for (s, got) in [(&mut first, &mut got_first), (&mut second, &mut got_second)] {
        s.read_to_end(got).expect("rest");
    }
    // Content-Length bodies: everything after the head is the segment.
    assert_eq!(got_first, seg);
    assert_eq!(got_second, seg);
    wait_until("nginx logs the fetch", Duration::from_secs(10), || {
        nginx.gets("/live/a/seg1.ts") == 1
    });
    assert_eq!(route_counter(&gw, "/hls/{*rest}", "miss"), 1);
    assert_eq!(route_counter(&gw, "/hls/{*rest}", "collapsed"), 1);
}

#[test]
fn http_semantics_on_a_real_nginx() {
    let file = bytes(100_000, 2);
    let big = bytes(5 * 1024 * 1024, 3);
    let nginx = NginxHttp::start(
        r#"
        location / { root {root}; }
        location /nostore/ { root {root}; add_header Cache-Control no-store; }
        location /vary/ { root {root}; add_header Vary Origin; }
        location /reval/ { root {root}; add_header Cache-Control "max-age=1"; }
        location /err/ { return 503; }
        "#,
        &[
            ("a/f.ts", &file),
            ("nostore/f.ts", &file),
            ("vary/f.ts", &file),
            ("reval/f.ts", &file),
            ("vod/big.mp4", &big),
        ],
    );
    let (gw, _d) = gw(
        "[cache]\nnot_found_ttl = \"60s\"\nsegment_ttl = \"60s\"\nslice_bytes = 1048576\n",
        &format!(
            "[[routes]]\npath = \"/vod/{{*rest}}\"\naction = \"proxy\"\nto = \"{u}\"\nupstream = \"/vod/{{*rest}}\"\ncache = \"vod\"\n\
             [[routes]]\npath = \"/c/{{*rest}}\"\naction = \"proxy\"\nto = \"{u}\"\nupstream = \"/{{*rest}}\"\ncache = \"hls\"\n",
            u = nginx.url()
        ),
    );
    let a = gw.addr();

    // Range and HEAD from a cached object: the node sees one GET.
    assert_eq!(get(a, "/c/a/f.ts", "").body, file);
    let r = get(a, "/c/a/f.ts", "Range: bytes=1000-1999\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 1000-1999/100000"));
    assert_eq!(r.body, &file[1000..2000]);
    let h = raw_request(
        a,
        "HEAD /c/a/f.ts HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("100000"));
    assert!(h.header("age").is_some());
    assert_eq!(nginx.gets("/a/f.ts"), 1);

    // no-store and Vary: Origin are not kept: every request reaches the node.
    for p in ["nostore", "vary"] {
        for _ in 0..2 {
            assert_eq!(get(a, &format!("/c/{p}/f.ts"), "").body, file);
        }
        assert_eq!(nginx.gets(&format!("/{p}/f.ts")), 2, "{p}");
    }

    // 404 kept briefly (here 60 s), 5xx never.
    for _ in 0..2 {
        assert_eq!(get(a, "/c/missing.ts", "").status, 404);
        assert_eq!(get(a, "/c/err/x.ts", "").status, 503);
    }
    assert_eq!(nginx.gets("/missing.ts"), 1);
    assert_eq!(nginx.gets("/err/x.ts"), 2);

    // Revalidation: once max-age=1 has passed, the node answers the conditional GET with 304
    // and the cached body is served on.
    assert_eq!(get(a, "/c/reval/f.ts", "").body, file);
    wait_until(
        "a 304 revalidation at the node",
        Duration::from_secs(20),
        || {
            assert_eq!(get(a, "/c/reval/f.ts", "").body, file);
            nginx
                .access_log()
                .lines()
                .any(|l| l.contains("GET /reval/f.ts") && l.contains("\" 304 "))
        },
    );
    assert!(route_counter(&gw, "/c/{*rest}", "revalidated") >= 1);

    // Slices: a range in the middle of a 5 MiB file fetches only the slice it needs.
    let r = get(a, "/vod/big.mp4", "Range: bytes=2500000-2600000\r\n");
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(
        r.header("content-range"),
        Some("bytes 2500000-2600000/5242880")
    );
    assert_eq!(r.body, &big[2_500_000..=2_600_000]);
    assert_eq!(nginx.gets("/vod/big.mp4"), 1);
    // Spanning slices 0 to 2: slice 2 is cached, 0 and 1 are fetched.
    let r = get(a, "/vod/big.mp4", "Range: bytes=1000000-2100000\r\n");
    assert_eq!(r.body, &big[1_000_000..=2_100_000]);
    assert_eq!(nginx.gets("/vod/big.mp4"), 3);
    // The whole file: the two slices left.
    let r = get(a, "/vod/big.mp4", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());
    assert!(r.body == big);
    assert_eq!(nginx.gets("/vod/big.mp4"), 5);
}

#[test]
fn a_restarted_stream_with_the_same_names_serves_the_new_segments() {
    let nginx = NginxHttp::start("location / { root {root}; }", &[]);
    let dir = nginx.root().join("live/x");
    std::fs::create_dir_all(&dir).expect("dir");
    let playlist = |seq: u64, names: &[&str]| {
        let mut t = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{seq}\n");
        for n in names {
            t.push_str(&format!("#EXTINF:1.0,\n{n}\n"));
        }
        std::fs::write(dir.join("index.m3u8.tmp"), t).expect("write");
        std::fs::rename(dir.join("index.m3u8.tmp"), dir.join("index.m3u8")).expect("rename");
    };
    for i in 0..4 {
        std::fs::write(dir.join(format!("s{i}.ts")), format!("old-{i}")).expect("seg");
    }
    playlist(0, &["s0.ts", "s1.ts"]);
    let (gw, _d) = gw(
        "",
        &format!(
            "[[routes]]\npath = \"/hls/{{*rest}}\"\naction = \"proxy\"\nto = \"{}\"\nupstream = \"/{{*rest}}\"\ncache = \"hls\"\n",
            nginx.url()
        ),
    );
    let a = gw.addr();
    assert!(get(a, "/hls/live/x/index.m3u8", "")
        .text()
        .contains("s0.ts"));
    assert_eq!(get(a, "/hls/live/x/s0.ts", "").text(), "old-0");
    playlist(2, &["s2.ts", "s3.ts"]);
    wait_until("the playlist moves on", Duration::from_secs(20), || {
        get(a, "/hls/live/x/index.m3u8", "")
            .text()
            .contains("SEQUENCE:2")
    });
    // The publisher restarts: same names, new bytes, the sequence starts over.
    for i in 0..4 {
        std::fs::write(dir.join(format!("s{i}.ts")), format!("new-{i}")).expect("seg");
    }
    playlist(0, &["s0.ts", "s1.ts"]);
    wait_until("the restart is seen", Duration::from_secs(20), || {
        get(a, "/hls/live/x/index.m3u8", "")
            .text()
            .contains("SEQUENCE:0")
    });
    assert_eq!(get(a, "/hls/live/x/s0.ts", "").text(), "new-0");
    assert_eq!(nginx.gets("/live/x/s0.ts"), 2);
}

#[test]
fn memory_stays_under_the_bound_with_200_streams() {
    let seg = bytes(8 * 1024, 4);
    let names: Vec<String> = (0..200).map(|i| format!("s{i}/0.ts")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &seg[..])).collect();
    let nginx = NginxHttp::start("location / { root {root}; }", &files);
    let (gw, _d) = gw(
        "[cache]\nmemory_bytes = 262144\nmax_entries = 100\nmax_object_bytes = 65536\nslice_bytes = 65536\n",
        &format!(
            "[[routes]]\npath = \"/hls/{{*rest}}\"\naction = \"proxy\"\nto = \"{}\"\nupstream = \"/{{*rest}}\"\ncache = \"hls\"\n",
            nginx.url()
        ),
    );
    for n in &names {
        assert_eq!(get(gw.addr(), &format!("/hls/{n}"), "").body, seg);
        let v = cache_status(&gw);
        assert!(v["bytes"].as_u64().expect("bytes") <= 262_144, "{v}");
        assert!(v["entries"].as_u64().expect("entries") <= 100, "{v}");
    }
    let v = cache_status(&gw);
    assert_eq!(v["memory_bytes"], 262_144);
    assert_eq!(route_counter(&gw, "/hls/{*rest}", "miss"), 200);
    let m = get(gw.addr(), "/metrics", ADMIN).text();
    assert!(
        m.contains("streamgate_cache_requests_total{route=\"/hls/{*rest}\",result=\"miss\"} 200"),
        "{m}"
    );
    assert!(m.contains("streamgate_cache_bytes "), "{m}");
}

#[test]
fn ll_hls_blocking_reloads_and_parts_make_one_node_request_each() {
    let media = tempfile::tempdir().expect("media");
    let mut ll = LlHls::new(&media.path().join("ll"), 0);
    ll.add_part(b"p0.0");
    ll.add_part(b"p0.1");
    ll.add_part(b"p0.2");
    ll.add_part(b"p0.3");
    ll.finish_segment(b"segment-0");
    ll.add_part(b"p1.0");
    let origin = common::origin(media.path());
    let (gw, _d) = gw(
        "",
        &format!(
            "[[nodes]]\nid = \"o\"\nurl = \"{}\"\n[[routes]]\npath = \"/ll/{{*rest}}\"\naction = \"proxy\"\nto = \"o\"\nupstream = \"/files/ll/{{*rest}}\"\ncache = \"hls\"\n",
            origin.url("")
        ),
    );
    let a = gw.addr();
    let stats = || get(origin.addr(), "/stats", "").json();
    let requests = |target: &str| stats()["file_requests"][target].as_u64().unwrap_or(0);
    // Eight players block on part 1 of segment 1, each with its own session parameters.
    const VIEWERS: usize = 8;
    let target = "/ll/index.m3u8?_HLS_msn=1&_HLS_part=1";
    std::thread::scope(|s| {
        let waiting: Vec<_> = (0..VIEWERS)
            .map(|i| s.spawn(move || get(a, &format!("{target}&hls_s=viewer{i}"), "")))
            .collect();
        // Held at the node: exactly one request, and every viewer collapsed onto it.
        wait_until(
            "one held request at the node",
            Duration::from_secs(20),
            || {
                requests("ll/index.m3u8?_HLS_msn=1&_HLS_part=1") == 1
                    && route_counter(&gw, "/ll/{*rest}", "collapsed") as usize == VIEWERS - 1
            },
        );
        ll.add_part(b"p1.1");
        for w in waiting {
            let r = w.join().expect("viewer");
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(r.text().contains("s1.1.m4s"), "{}", r.text());
        }
    });
    assert_eq!(requests("ll/index.m3u8?_HLS_msn=1&_HLS_part=1"), 1);
    // Parts and segments: many viewers, one fetch each.
    std::thread::scope(|s| {
        for _ in 0..VIEWERS {
            s.spawn(|| {
                for p in ["s1.0.m4s", "s1.1.m4s", "s0.m4s"] {
                    assert_eq!(get(a, &format!("/ll/{p}"), "").status, 200);
                }
            });
        }
    });
    for p in ["ll/s1.0.m4s", "ll/s1.1.m4s", "ll/s0.m4s"] {
        assert_eq!(requests(p), 1, "{p}");
    }
}

#[test]
fn live_hls_from_nginx_rtmp_many_viewers_one_fetch_per_segment() {
    let hook = Upstream::start(|_| Reply::Ok {
        headers: vec![],
        body: b"ok".to_vec(),
    });
    let nginx = NginxRtmp::start(&format!("{}/publish", hook.url()));
    let mut pusher = push(&nginx.rtmp_url("cam1"), 30, Stdio::null());
    let playlist = nginx.hls_dir("cam1").join("index.m3u8");
    wait_until("nginx-rtmp's playlist", Duration::from_secs(30), || {
        std::fs::read_to_string(&playlist).is_ok_and(|t| t.matches(".ts").count() >= 2)
    });
    let (gw, _d) = gw(
        "[cache]\nignore_params = [\"session\"]\n",
        &format!(
            "[[routes]]\npath = \"/hls/{{stream}}/{{*rest}}\"\naction = \"proxy\"\nto = \"{}\"\ncache = \"hls\"\n",
            nginx.http_url()
        ),
    );
    let a = gw.addr();
    const VIEWERS: usize = 16;
    let start = Instant::now();
    let run = Duration::from_secs(6);
    std::thread::scope(|s| {
        for v in 0..VIEWERS {
            s.spawn(move || {
                let mut seen = HashSet::new();
                while start.elapsed() < run {
                    let r = get(a, &format!("/hls/cam1/index.m3u8?session={v}"), "");
                    assert_eq!(r.status, 200, "{}", r.text());
                    for seg in r.text().lines().filter(|l| l.ends_with(".ts")) {
                        if seen.insert(seg.to_string()) {
                            let s = get(a, &format!("/hls/cam1/{seg}"), "");
                            assert_eq!(s.status, 200);
                            assert!(!s.body.is_empty());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let _ = pusher.kill();
    let _ = pusher.wait();
    let log = std::fs::read_to_string(nginx.dir().join("access.log")).expect("access log");
    let mut per_segment = std::collections::HashMap::<String, usize>::new();
    let mut playlists = 0usize;
    for l in log.lines() {
        let Some(target) = l.split("\"GET ").nth(1).and_then(|r| r.split(' ').next()) else {
            continue;
        };
        if target.ends_with(".ts") {
            *per_segment.entry(target.to_string()).or_default() += 1;
        } else if target.contains("index.m3u8") {
            playlists += 1;
        }
    }
    assert!(!per_segment.is_empty());
    for (seg, n) in &per_segment {
        assert_eq!(*n, 1, "{seg} fetched {n} times from the node");
    }
    // The playlist: at most one fetch per cache period (½ × target duration, ≥ 0.5 s here).
    let text = std::fs::read_to_string(&playlist).unwrap_or_default();
    let td: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1.0);
    let allowed = (elapsed.as_secs_f64() / (td * 0.5)).ceil() as usize + 2;
    assert!(
        playlists <= allowed,
        "{playlists} playlist fetches in {elapsed:?} (target duration {td}s, allowed {allowed})"
    );
    assert!(route_counter(&gw, "/hls/{stream}/{*rest}", "hit") > 0);
}

#[test]
fn hls_sessions_on_a_cached_route_rewrite_one_cached_playlist_per_viewer() {
    const VOD: &str = "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nv0.ts\n#EXT-X-ENDLIST\n";
    let node = Upstream::start(|_| Reply::Ok {
        headers: vec![(
            "Content-Type".into(),
            "application/vnd.apple.mpegurl".into(),
        )],
        body: VOD.as_bytes().to_vec(),
    });
    let (gw, _d) = gw(
        "[auth]\ntokens = [\"good\"]\n",
        &format!(
            "[[routes]]\npath = \"/vod/{{*rest}}\"\naction = \"proxy\"\nto = \"{}\"\nupstream = \"/{{*rest}}\"\nauth = \"token\"\nhls_session = true\ncache = \"hls\"\n",
            node.url()
        ),
    );
    let mut sessions = HashSet::new();
    for _ in 0..3 {
        let r = get(gw.addr(), "/vod/movie/index.m3u8?token=good", "");
        assert_eq!(r.status, 200, "{}", r.text());
        let seg = r
            .text()
            .lines()
            .find(|l| l.starts_with("v0.ts?"))
            .unwrap_or_else(|| panic!("no signed segment in {}", r.text()))
            .to_string();
        let hls_s = seg
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("hls_s="))
            .expect("hls_s")
            .to_string();
        sessions.insert(hls_s);
    }
    assert_eq!(sessions.len(), 3, "each viewer its own session");
    let seen: Vec<String> = node.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(
        seen,
        vec!["/movie/index.m3u8".to_string()],
        "the node's playlist fetched once"
    );
    assert_eq!(route_counter(&gw, "/vod/{*rest}", "hit"), 2);
}

#[test]
fn vod_slices_evicted_from_memory_come_back_from_the_disk_tier() {
    let file = bytes(8 * 65_536, 5);
    let nginx = NginxHttp::start("location / { root {root}; }", &[("vod/f.mp4", &file)]);
    let disk = tempfile::tempdir().expect("disk dir");
    let (gw, _d) = gw(
        &format!(
            "[cache]\nmemory_bytes = 65536\nmax_object_bytes = 65536\nslice_bytes = 65536\ndisk_dir = \"{}\"\ndisk_bytes = 1048576\n",
            disk.path().display()
        ),
        &format!(
            "[[routes]]\npath = \"/vod/{{*rest}}\"\naction = \"proxy\"\nto = \"{}\"\nupstream = \"/vod/{{*rest}}\"\ncache = \"vod\"\n",
            nginx.url()
        ),
    );
    let r = get(gw.addr(), "/vod/f.mp4", "");
    assert!(r.body == file);
    assert_eq!(nginx.gets("/vod/f.mp4"), 8);
    wait_until("every slice on disk", Duration::from_secs(20), || {
        cache_status(&gw)["disk"]["entries"] == 8
    });
    assert!(cache_status(&gw)["bytes"].as_u64().expect("bytes") <= 65_536);
    let r = get(gw.addr(), "/vod/f.mp4", "Range: bytes=100000-300000\r\n");
    assert_eq!(r.body, &file[100_000..=300_000]);
    let r = get(gw.addr(), "/vod/f.mp4", "");
    assert!(r.body == file);
    assert_eq!(
        nginx.gets("/vod/f.mp4"),
        8,
        "no slice asked of the node again"
    );
    assert!(route_counter(&gw, "/vod/{*rest}", "disk") >= 7);
}
