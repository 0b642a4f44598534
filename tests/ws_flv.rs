//! WebSocket-FLV against a real gateway and origin: the same live fan-out as HTTP-FLV (one
//! pull, GOP replay, slow-viewer cut), its auth before the upgrade, ping/pong, close codes, the
//! inbound bound, and mpegts.js in headless Chromium playing a `ws://` URL.

mod common;

use std::time::{Duration, Instant};

use common::flv::{assert_non_decreasing, expect_live_start, FlvStream};
use common::ws::{frame, WsClient};
use common::{gateway, get, origin, wait_until, Proc};

const T: Duration = Duration::from_secs(20);
const CAM: &str = "/flv/cam1.flv?token=s3cret";

fn config(o: &Proc, server: &str, live: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "3s"
{server}

[upstream]
connect_timeout = "2s"
response_header_timeout = "5s"

[auth]
tokens = ["s3cret"]

[admin]
token = "adm1n"

[live]
{live}

[[nodes]]
id = "a"
url = "http://{}"
streams = ["cam1", "cam2"]

[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"
auth = "token"

[[routes]]
path = "/r/{{stream}}.flv"
action = "redirect"
to = "a"
upstream = "/live/{{stream}}.flv"
"#,
        o.addr()
    )
}

fn live_status(gw: &Proc) -> serde_json::Value {
    let r = get(gw.addr(), "/api/v1/live", "Authorization: Bearer adm1n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn live_clients(o: &Proc) -> u64 {
    get(o.addr(), "/stats", "").json()["live_clients"]
        .as_u64()
        .expect("live_clients")
}

#[test]
fn a_ws_viewer_gets_the_flv_stream_and_shares_the_pull_with_http() {
    let o = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&o, "", ""));
    let mut ws = WsClient::try_connect(gw.addr(), CAM, "X-Request-Id: ws-view-1\r\n")
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    // Header, start-up tags and a keyframe first: the cached GOP, as an HTTP viewer gets it.
    let start = expect_live_start(&mut ws, T);
    let mut http = FlvStream::open(gw.addr(), CAM);
    expect_live_start(&mut http, T);
    let more = ws.tags_for(Duration::from_millis(1500));
    assert!(!more.is_empty());
    assert_non_decreasing(&[start, more].concat());
    assert!(ws.binary_messages > 0);
    // One upstream pull feeds both framings.
    let st = live_status(&gw);
    assert_eq!(st["viewers"], 2, "{st}");
    assert_eq!(st["pulls"], 1, "{st}");
    assert_eq!(
        live_clients(&o),
        1,
        "the origin serves only the gateway's pull"
    );
    // The client closes: its close is echoed and the viewer leaves the stream.
    ws.send_close(1000);
    assert_eq!(ws.until_closed(T), Some(Some(1000)));
    wait_until("the WS viewer to leave", T, || {
        live_status(&gw)["viewers"] == 1
    });
    http.tags_for(Duration::from_millis(300));
    let line = common::access_line(&gw, "ws-view-1");
    for want in ["status=101", "decision=live", "proto=ws", "ws_close=1000"] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert!(!line.contains("s3cret"), "the token is not logged: {line}");
    assert!(!line.contains("bytes=0 "), "bytes are counted: {line}");
    drop(http);
    wait_until("no viewers", T, || live_status(&gw)["viewers"] == 0);
}

#[test]
fn auth_and_limits_answer_before_any_upgrade() {
    let o = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&o, "", ""));
    for (i, path) in ["/flv/cam1.flv", "/flv/cam1.flv?token=wrong"]
        .iter()
        .enumerate()
    {
        let rid = format!("ws-refused-{i}");
        let r = WsClient::try_connect(gw.addr(), path, &format!("X-Request-Id: {rid}\r\n"))
            .err()
            .unwrap_or_else(|| panic!("{path} was upgraded"));
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error"], "unauthorized");
        assert!(r.header("upgrade").is_none());
        assert!(r.header("sec-websocket-accept").is_none());
        let line = common::access_line(&gw, &rid);
        assert!(
            line.contains("status=401") && line.contains("proto=ws"),
            "{line}"
        );
    }
    // The token may also travel as a header (non-browser clients).
    let ok = WsClient::try_connect(
        gw.addr(),
        "/flv/cam1.flv",
        "Authorization: Bearer s3cret\r\n",
    );
    assert!(ok.is_ok(), "a header token upgrades too");
    drop(ok);
    // A version other than 13 is refused with 426 naming the version spoken, not upgraded.
    let mut s = std::net::TcpStream::connect(gw.addr()).expect("connect");
    let req = common::ws::handshake(CAM, "")
        .replace("Connection: Upgrade\r\n", "Connection: Upgrade, close\r\n")
        .replace("Version: 13", "Version: 8");
    use std::io::{Read, Write};
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = common::parse_response(&raw);
    assert_eq!(r.status, 426, "{}", r.text());
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    assert_eq!(r.json()["error"], "upgrade_required");
    // A route that is not live answers an upgrade request as it answers any GET.
    let r = WsClient::try_connect(gw.addr(), "/r/cam1.flv", "")
        .err()
        .expect("a redirect route does not upgrade");
    assert_eq!(r.status, 302);
    // The per-address live viewer limit counts WebSocket viewers too.
    let toml = config(&o, "", "").replace("[live]", "[limits]\nlive_viewers_per_ip = 1\n\n[live]");
    let (gw2, _d2) = gateway(&toml);
    let first = WsClient::connect(gw2.addr(), CAM);
    let r = WsClient::try_connect(gw2.addr(), CAM, "")
        .err()
        .expect("a second viewer from the address is refused");
    assert_eq!(r.status, 429);
    drop(first);
    wait_until("the slot to be given back", T, || {
        WsClient::try_connect(gw2.addr(), CAM, "").is_ok()
    });
}

#[test]
fn pings_are_answered_and_a_silent_client_is_dropped() {
    let o = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&o, "", "websocket_ping_interval = \"1s\""));
    let mut ws = WsClient::connect(gw.addr(), CAM);
    ws.send_frame(0x89, b"are you there");
    let deadline = Instant::now() + T;
    while ws.pongs.is_empty() {
        ws.read_msg(deadline).expect("frames").expect("still open");
    }
    assert_eq!(ws.pongs[0], b"are you there");
    // The gateway pings every second; this client answers, so it stays.
    while ws.pings < 3 {
        ws.read_msg(deadline).expect("frames").expect("still open");
    }
    assert!(ws.close.is_none());
    // One that stops answering is dropped within two intervals, without a close frame.
    ws.answer_pings = false;
    let pings = ws.pings;
    assert_eq!(ws.until_closed(T), None);
    assert!(ws.pings > pings);
    wait_until("no viewers", T, || live_status(&gw)["viewers"] == 0);
}

#[test]
fn inbound_data_and_oversized_frames_close_the_session() {
    let o = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&o, "", ""));
    // A frame announcing 1 MiB: refused from its header (1009), its payload never read.
    let mut ws = WsClient::connect(gw.addr(), CAM);
    let mut big = vec![0x82, 0x80 | 127];
    big.extend_from_slice(&(1u64 << 20).to_be_bytes());
    big.extend_from_slice(&[1, 2, 3, 4]);
    big.extend_from_slice(&[0u8; 1024]);
    ws.send_raw(&big);
    assert_eq!(ws.until_closed(T), Some(Some(1009)));
    // A small data message: a live viewer only receives (1003).
    let mut ws = WsClient::connect(gw.addr(), CAM);
    ws.send_raw(&frame(0x81, b"hello"));
    assert_eq!(ws.until_closed(T), Some(Some(1003)));
    // An unmasked frame breaks the protocol (1002).
    let mut ws = WsClient::connect(gw.addr(), CAM);
    ws.send_raw(&[0x89, 0x00]);
    assert_eq!(ws.until_closed(T), Some(Some(1002)));
    wait_until("no viewers", T, || live_status(&gw)["viewers"] == 0);
}

#[test]
fn sigterm_closes_ws_viewers_with_going_away() {
    let o = origin(&common::media_dir());
    let (mut gw, _d) = gateway(&config(&o, "", ""));
    let mut ws = WsClient::connect(gw.addr(), CAM);
    expect_live_start(&mut ws, T);
    gw.sigterm();
    assert_eq!(ws.until_closed(T), Some(Some(1001)));
    let st = gw.wait_exit(T).expect("the gateway exits");
    assert!(st.success(), "{st:?}");
}

#[test]
fn a_stalled_ws_viewer_is_cut_while_another_keeps_pace() {
    let o = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(
        &o,
        "send_buffer = 16384\nsend_timeout = \"3s\"",
        "viewer_queue_bytes = 65536\nviewer_queue_duration = \"1s\"",
    ));
    let mut fast = WsClient::connect(gw.addr(), CAM);
    expect_live_start(&mut fast, T);
    // A client with a tiny receive buffer that never reads after the handshake.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&gw.addr().into()).expect("connect");
    let stalled = WsClient::handshake_on(sock.into(), CAM, "X-Request-Id: ws-stalled\r\n")
        .unwrap_or_else(|r| panic!("{}", r.status));
    wait_until("two viewers", T, || live_status(&gw)["viewers"] == 2);
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
    let st = live_status(&gw);
    assert_eq!(st["viewers"], 1, "{st}");
    let media = tags.last().expect("tags").timestamp() as i64 - tags[0].timestamp() as i64;
    assert!(
        media > wall / 2,
        "fast viewer got {media} ms of media in {wall} ms"
    );
    assert_non_decreasing(&tags);
    assert!(fast.close.is_none());
    // The stalled session ends while its client still reads nothing: the upgraded connection
    // is the server's StallTimeout socket, so `send_timeout` fails the blocked write.
    let line = common::access_line(&gw, "ws-stalled");
    assert!(line.contains("peer stopped reading"), "{line}");
    assert!(line.contains("proto=ws"), "{line}");
    let mut stalled = stalled;
    assert_eq!(
        stalled.until_closed(T),
        None,
        "dropped, no close frame after the stall"
    );
}

#[test]
fn mpegts_js_plays_a_ws_flv_url_in_chromium() {
    let o = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&o, "", ""));
    let url = format!("ws://{}{CAM}", gw.addr());
    let v = common::browser::run_script("ws_flv.mjs", &[&url], Duration::from_secs(120));
    println!("ws_flv.mjs: {v}");
    let advanced = v["advanced"].as_f64().unwrap_or(0.0);
    assert!(advanced >= 3.0, "playback advanced {advanced} s: {v}");
    assert_eq!(live_clients(&o), 1);
}
