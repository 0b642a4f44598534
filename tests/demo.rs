//! `streamgate demo` starts from the repository as the README says, and every URL it prints
//! works as printed.

mod common;

use std::time::{Duration, Instant};

use common::flv::{expect_live_start, FlvStream};
use common::{get, spawn};

/// The URLs the demo printed, in order (the text between single quotes).
fn printed_urls(p: &common::Proc) -> Vec<String> {
    let mut urls = Vec::new();
    let deadline = Instant::now() + common::READY_TIMEOUT;
    while urls.len() < 7 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = p
            .stdout_rx
            .recv_timeout(left)
            .expect("demo prints its URLs");
        if let Some(start) = line.find("'http://") {
            let rest = &line[start + 1..];
            let end = rest.find('\'').expect("closing quote");
            urls.push(rest[..end].to_string());
        }
    }
    urls
}

fn path_of(url: &str) -> &str {
    let after = url.trim_start_matches("http://");
    &after[after.find('/').expect("path")..]
}

#[test]
fn the_demo_runs_and_its_urls_work() {
    let mut demo = spawn(&["demo", "--listen", "127.0.0.1:0"], 1);
    let gw = demo.addr();
    let urls = printed_urls(&demo);
    assert!(
        urls.iter().all(|u| u.starts_with(&format!("http://{gw}/"))),
        "{urls:?}"
    );
    let find = |needle: &str| -> String {
        urls.iter()
            .find(|u| u.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} URL in {urls:?}"))
            .clone()
    };

    // Live streams from both nodes, through the gateway.
    for stream in ["cam1.flv?token", "cam2.flv?token"] {
        let url = find(stream);
        let mut s = FlvStream::open(gw, path_of(&url));
        expect_live_start(&mut s, Duration::from_secs(20));
    }
    // Without the token: 401; unknown stream: 404.
    let no_token = urls
        .iter()
        .find(|u| u.ends_with("/flv/cam1.flv"))
        .expect("URL without token");
    let r = get(gw, path_of(no_token), "");
    assert_eq!(r.status, 401);
    let r = get(gw, path_of(&find("cam9")), "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "stream_not_found");
    // HLS playlist and one of its segments.
    let r = get(gw, path_of(&find("index.m3u8")), "");
    assert_eq!(r.status, 200);
    let playlist = r.text();
    assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    let seg = playlist
        .lines()
        .find(|l| l.ends_with(".ts"))
        .expect("a segment");
    let r = get(gw, &format!("/hls/cam1/{seg}"), "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.first(), Some(&0x47), "MPEG-TS sync byte");
    // MP4 with Range.
    let r = get(gw, path_of(&find("movie.mp4")), "Range: bytes=0-99\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 100);
    assert_eq!(&r.body[4..8], b"ftyp");
    // Snapshot redirect to the node, which serves the JPEG.
    let r = get(gw, path_of(&find("snapshot.jpg")), "");
    assert_eq!(r.status, 302);
    let loc = r.header("location").expect("location").to_string();
    let node: std::net::SocketAddr = loc
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .parse()
        .expect("addr");
    let r = get(node, path_of(&loc), "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/jpeg"));

    // Ctrl-C (SIGINT) stops everything cleanly.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &demo.pid().to_string()])
        .status();
    let st = demo
        .wait_exit(Duration::from_secs(15))
        .expect("demo exits on Ctrl-C");
    assert!(st.success(), "{st:?}");
}
