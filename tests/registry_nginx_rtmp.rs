//! Real media-server hooks: nginx with libnginx-mod-rtmp announces publishes to a real gateway,
//! ffmpeg pushes a test pattern over RTMP, and a viewer fetches the stream's HLS (written by
//! nginx) through the gateway. A publisher with a wrong token is turned away by nginx because
//! the gateway said no.

mod common;

use common::api::{send, ADMIN};

use std::net::SocketAddr;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::nginx_rtmp::{push, NginxRtmp};
use common::{gateway, get, wait_until};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[upstream]
connect_timeout = "1s"
response_header_timeout = "5s"

[registry]
hook_secret = "h00k"
publish_tokens = ["pub1"]

[admin]
token = "adm1n"

[[routes]]
path = "/hls/{stream}/{*rest}"
action = "proxy"
upstream = "/hls/{stream}/{*rest}"
"#;

/// Waits (bounded) for ffmpeg to exit; kills it (its own PID) past the bound.
fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("ffmpeg still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn streams(addr: SocketAddr) -> serde_json::Value {
    get(addr, "/api/v1/streams", ADMIN).json()["streams"].clone()
}

#[test]
fn nginx_rtmp_publishes_are_routed_and_strangers_are_refused() {
    let (gw, _dir) = gateway(CONFIG);
    let hook = format!("http://{}/hooks/nginx-rtmp?node=n1&secret=h00k", gw.addr());
    let nginx = NginxRtmp::start(&hook);
    let r = send(
        gw.addr(),
        "PUT",
        "/api/v1/nodes/n1",
        ADMIN,
        format!(r#"{{"url":"{}"}}"#, nginx.http_url()).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A publisher with the right token: nginx's on_publish reaches the gateway, which routes
    // the stream's HLS to this node.
    let mut ffmpeg = push(&nginx.rtmp_url("cam1?token=pub1"), 8, Stdio::piped());
    let mut playlist = String::new();
    wait_until(
        "cam1's playlist through the gateway",
        Duration::from_secs(30),
        || {
            let r = get(gw.addr(), "/hls/cam1/index.m3u8", "");
            if r.status == 200 && r.text().contains(".ts") {
                playlist = r.text();
                true
            } else {
                assert!(
                    matches!(ffmpeg.try_wait(), Ok(None)),
                    "ffmpeg ended early; nginx log:\n{}",
                    nginx.error_log()
                );
                false
            }
        },
    );
    assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    assert_eq!(
        streams(gw.addr()),
        serde_json::json!([{
            "name": "cam1",
            "registered": true,
            "nodes": ["n1"],
            "up_nodes": ["n1"],
            "viewers": 0,
            "pulls": []
        }])
    );
    let segment = playlist
        .lines()
        .find(|l| l.ends_with(".ts"))
        .expect("a segment")
        .to_string();
    let r = get(gw.addr(), &format!("/hls/cam1/{segment}"), "");
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() > 1000 && r.body[0] == 0x47,
        "an MPEG-TS segment ({} bytes)",
        r.body.len()
    );

    // A stranger's push is refused by nginx because the gateway answered 403.
    let mut stranger = push(&nginx.rtmp_url("intruder?token=nope"), 5, Stdio::piped());
    let st = wait_exit(&mut stranger, Duration::from_secs(20));
    assert!(!st.success(), "nginx must drop the publisher");
    assert_eq!(
        get(gw.addr(), "/hls/intruder/index.m3u8", "").json()["error"],
        "stream_not_found"
    );
    assert!(!nginx.hls_dir("intruder").join("index.m3u8").exists());
    let mut anonymous = push(&nginx.rtmp_url("intruder"), 5, Stdio::piped());
    assert!(!wait_exit(&mut anonymous, Duration::from_secs(20)).success());

    // The publisher stops: on_publish_done withdraws the stream.
    let st = wait_exit(&mut ffmpeg, Duration::from_secs(30));
    assert!(st.success(), "the good publisher ran to the end");
    wait_until("cam1 withdrawn", Duration::from_secs(15), || {
        streams(gw.addr()) == serde_json::json!([])
    });
    let r = get(gw.addr(), "/hls/cam1/index.m3u8", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "stream_not_found");
}
