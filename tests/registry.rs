//! The stream registry with the embedded backend, end to end: a real `streamgate serve` fed
//! through the REST API and the SRS / nginx-rtmp hook endpoints, in front of scripted nodes,
//! checked as an operator, a media server and a viewer see it.

mod common;

use common::api::{put_node, put_stream, send, ADMIN};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::upstream::{echo, Upstream};
use common::{gateway, get, raw_request, wait_until, RawResponse};

/// A gateway config with the admin API, hooks (secret `h00k`, publish token `pub1`), one static
/// node `s` (holding `static1`) and a registry-routed HLS route.
fn config(static_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstream]
connect_timeout = "1s"
response_header_timeout = "2s"

[registry]
hook_secret = "h00k"
publish_tokens = ["pub1"]

[admin]
token = "adm1n"

[[nodes]]
id = "s"
url = "{static_url}"
streams = ["static1"]

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
upstream = "/hls/{{stream}}/{{*rest}}"
"#
    )
}

fn stream_names(addr: SocketAddr) -> Vec<String> {
    let r = get(addr, "/api/v1/streams", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["streams"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect()
}

/// Which node served `GET /hls/{stream}/index.m3u8`, from the echo body's Host header.
fn play(addr: SocketAddr, stream: &str) -> RawResponse {
    get(addr, &format!("/hls/{stream}/index.m3u8"), "")
}

#[test]
fn rest_api_announces_lists_and_withdraws_streams() {
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let addr = gw.addr();

    let r = put_node(addr, "n1", &node.url(), "30");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["up"], true);
    assert_eq!(play(addr, "cam1").status, 404, "not announced yet");

    let r = put_stream(addr, "cam1", "n1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["nodes"], serde_json::json!(["n1"]));
    let r = play(addr, "cam1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/hls/cam1/index.m3u8");
    assert_eq!(node.requests().len(), 1);

    // Listings: the API node and the static one; the announced and the static stream.
    let r = get(addr, "/api/v1/nodes", ADMIN);
    assert_eq!(r.status, 200);
    let nodes = r.json()["nodes"].as_array().expect("array").clone();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["id"], "n1");
    assert_eq!(nodes[0]["url"], node.url());
    assert_eq!(nodes[0]["static"], false);
    assert!(nodes[0]["expires_in_ms"].as_u64().expect("ttl") > 20_000);
    assert_eq!(nodes[1]["id"], "s");
    assert_eq!(nodes[1]["static"], true);
    assert_eq!(stream_names(addr), vec!["cam1", "static1"]);
    let r = get(addr, "/api/v1/streams/cam1", ADMIN);
    assert_eq!(r.json()["up_nodes"], serde_json::json!(["n1"]));

    // Static nodes belong to the config file.
    let r = put_node(addr, "s", &node.url(), "5");
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        send(addr, "DELETE", "/api/v1/nodes/s", ADMIN, b"").status,
        409
    );

    // Announcing onto an unknown node is refused and changes nothing.
    let r = put_stream(addr, "cam2", "ghost");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "unknown_node");
    assert_eq!(stream_names(addr), vec!["cam1", "static1"]);

    let r = send(addr, "DELETE", "/api/v1/streams/cam1", ADMIN, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["removed_from"], serde_json::json!(["n1"]));
    let r = play(addr, "cam1");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "stream_not_found");
    assert_eq!(
        send(addr, "DELETE", "/api/v1/streams/cam1", ADMIN, b"").status,
        404
    );
    assert_eq!(get(addr, "/api/v1/nope", ADMIN).status, 404);
    assert_eq!(
        send(addr, "POST", "/api/v1/streams", ADMIN, b"").status,
        405
    );
}

#[test]
fn a_node_that_stops_heartbeating_is_down_until_it_comes_back() {
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let addr = gw.addr();
    assert_eq!(put_node(addr, "n1", &node.url(), r#""600ms""#).status, 200);
    assert_eq!(put_stream(addr, "cam1", "n1").status, 200);
    assert_eq!(play(addr, "cam1").status, 200);

    // No more heartbeats: within a bound, the stream answers 503 node_unavailable.
    let since = Instant::now();
    wait_until("the node's TTL to expire", Duration::from_secs(10), || {
        play(addr, "cam1").status == 503
    });
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "expired too early: {waited:?}"
    );
    let r = play(addr, "cam1");
    assert_eq!(r.json()["error"], "node_unavailable");
    assert_eq!(r.json()["stream"], "cam1");
    let r = get(addr, "/api/v1/nodes/n1", ADMIN);
    assert_eq!(r.json()["up"], false);

    // A heartbeat brings it back; deregistering makes the stream unknown (404).
    assert_eq!(put_node(addr, "n1", &node.url(), "30").status, 200);
    assert_eq!(play(addr, "cam1").status, 200);
    assert_eq!(
        send(addr, "DELETE", "/api/v1/nodes/n1", ADMIN, b"").status,
        200
    );
    let r = play(addr, "cam1");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "stream_not_found");
    assert_eq!(get(addr, "/api/v1/nodes/n1", ADMIN).status, 404);
}

#[test]
fn a_stream_on_two_nodes_is_served_by_a_live_one() {
    let b = Upstream::start(echo);
    // `a` is registered at an address where nothing listens.
    let dead = format!("http://127.0.0.1:{}", common::redis::free_port());
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let addr = gw.addr();
    assert_eq!(put_node(addr, "a", &dead, r#""800ms""#).status, 200);
    assert_eq!(put_node(addr, "b", &b.url(), "30").status, 200);
    assert_eq!(put_stream(addr, "cam1", "a").status, 200);
    assert_eq!(put_stream(addr, "cam1", "b").status, 200);
    let r = get(addr, "/api/v1/streams/cam1", ADMIN);
    assert_eq!(
        r.json()["nodes"],
        serde_json::json!(["a", "b"]),
        "both kept, first announced first"
    );
    // `a` is preferred but unreachable: the request goes on to `b`.
    assert_eq!(play(addr, "cam1").status, 200);
    // Once `a` expires, lookups name only `b`.
    wait_until("a to expire", Duration::from_secs(10), || {
        get(addr, "/api/v1/streams/cam1", ADMIN).json()["up_nodes"] == serde_json::json!(["b"])
    });
    assert_eq!(play(addr, "cam1").status, 200);
    assert_eq!(b.requests().len(), 2);
}

#[test]
fn writes_need_the_admin_token_or_the_hook_secret() {
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let addr = gw.addr();
    let body = format!(r#"{{"url":"{}","ttl":30}}"#, node.url());
    for headers in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Basic adm1n\r\n",
        "Authorization: Bearer adm1n2\r\n",
    ] {
        let r = send(addr, "PUT", "/api/v1/nodes/n1", headers, body.as_bytes());
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
        assert_eq!(r.json()["error"], "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(get(addr, "/api/v1/streams", headers).status, 401);
    }
    assert_eq!(
        get(addr, "/api/v1/nodes", ADMIN).json()["nodes"]
            .as_array()
            .expect("a")
            .len(),
        1,
        "only the static node"
    );

    assert_eq!(put_node(addr, "n1", &node.url(), "30").status, 200);
    let publish = br#"{"action":"on_publish","client_id":"x1","app":"live","stream":"cam1","param":"?token=pub1"}"#;
    for q in [
        "?node=n1",
        "?node=n1&secret=wrong",
        "?node=n1&secret=",
        "?secret=h00kh00k&node=n1",
    ] {
        let r = send(addr, "POST", &format!("/hooks/srs{q}"), "", publish);
        assert_eq!(r.status, 401, "{q}");
        assert_ne!(r.json()["code"], 0);
        let form = b"call=publish&name=cam1&app=live&addr=127.0.0.1&clientid=1&token=pub1";
        assert_eq!(
            send(addr, "POST", &format!("/hooks/nginx-rtmp{q}"), "", form).status,
            401,
            "{q}"
        );
    }
    assert_eq!(stream_names(addr), vec!["static1"], "nothing was announced");
    assert_eq!(play(addr, "cam1").status, 404);
}

#[test]
fn the_api_and_hooks_are_off_without_their_secrets() {
    let (gw, _dir) = gateway("[server]\nlisten = \"127.0.0.1:0\"\n");
    let r = get(gw.addr(), "/api/v1/streams", ADMIN);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "disabled");
    let r = send(
        gw.addr(),
        "POST",
        "/hooks/srs?node=n1&secret=h00k",
        "",
        b"{}",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "disabled");
}

/// The exact bodies SRS sends: SRS 4/5 (string `client_id`, extra keys) and SRS 3 (integer).
const SRS5_ON_PUBLISH: &str = r#"{"server_id":"vid-0xk989d","service_id":"lwzjf5v2","action":"on_publish","client_id":"341w361a","ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","tcUrl":"rtmp://127.0.0.1:1935/live","stream":"livestream","param":"?token=pub1","stream_url":"/live/livestream","stream_id":"vid-124q9y3"}"#;
const SRS5_ON_UNPUBLISH: &str = r#"{"server_id":"vid-0xk989d","service_id":"lwzjf5v2","action":"on_unpublish","client_id":"341w361a","ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","tcUrl":"rtmp://127.0.0.1:1935/live","stream":"livestream","param":"?token=pub1","stream_url":"/live/livestream","stream_id":"vid-124q9y3"}"#;
const SRS3_ON_PUBLISH: &str = r#"{"action":"on_publish","client_id":107,"ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","tcUrl":"rtmp://127.0.0.1:1935/live?token=pub1","stream":"cam3","param":"?token=pub1"}"#;
const SRS3_ON_UNPUBLISH: &str = r#"{"action":"on_unpublish","client_id":107,"ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","stream":"cam3","param":"?token=pub1"}"#;

#[test]
fn srs_hooks_announce_and_withdraw_in_both_payload_shapes() {
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let addr = gw.addr();
    assert_eq!(put_node(addr, "n1", &node.url(), "30").status, 200);
    let hook = "/hooks/srs?node=n1&secret=h00k";
    let json = "Content-Type: application/json\r\n";

    for (publish, unpublish, stream) in [
        (SRS5_ON_PUBLISH, SRS5_ON_UNPUBLISH, "livestream"),
        (SRS3_ON_PUBLISH, SRS3_ON_UNPUBLISH, "cam3"),
    ] {
        let r = send(addr, "POST", hook, json, publish.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), serde_json::json!({"code": 0}));
        assert_eq!(
            play(addr, stream).status,
            200,
            "{stream} routable after on_publish"
        );
        let r = send(addr, "POST", hook, json, unpublish.as_bytes());
        assert_eq!(r.json(), serde_json::json!({"code": 0}));
        assert_eq!(
            play(addr, stream).status,
            404,
            "{stream} gone after on_unpublish"
        );
    }

    // A stranger's publish (no token, wrong token) gets a non-zero code and is not announced.
    for param in ["", "?token=nope"] {
        let body = SRS5_ON_PUBLISH.replace("?token=pub1", param);
        let r = send(addr, "POST", hook, json, body.as_bytes());
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["code"], 403);
        assert_eq!(r.json()["error"], "publish_forbidden");
    }
    assert_eq!(play(addr, "livestream").status, 404);
    // Other SRS actions are accepted and ignored; an unknown node is refused.
    let play_hook = SRS5_ON_PUBLISH.replace("on_publish", "on_play");
    assert_eq!(
        send(addr, "POST", hook, json, play_hook.as_bytes()).json(),
        serde_json::json!({"code": 0})
    );
    let r = send(
        addr,
        "POST",
        "/hooks/srs?node=ghost&secret=h00k",
        json,
        SRS5_ON_PUBLISH.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert_ne!(r.json()["code"], 0);
    assert_eq!(stream_names(addr), vec!["static1"]);
}

#[test]
fn nginx_rtmp_notify_announces_withdraws_and_checks_the_publish_token() {
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let addr = gw.addr();
    assert_eq!(put_node(addr, "n1", &node.url(), "30").status, 200);
    let hook = "/hooks/nginx-rtmp?node=n1&secret=h00k";
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let publish = "call=publish&addr=127.0.0.1&clientid=12&app=live&flashver=FMLE%2F3.0&swfurl=&tcurl=rtmp%3A%2F%2F127.0.0.1%3A1935%2Flive&pageurl=&name=cam1&type=live&token=pub1";
    let r = send(addr, "POST", hook, form, publish.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(play(addr, "cam1").status, 200);
    let r = send(
        addr,
        "POST",
        hook,
        form,
        b"call=publish_done&addr=127.0.0.1&clientid=12&app=live&name=cam1&token=pub1",
    );
    assert_eq!(r.status, 200);
    assert_eq!(play(addr, "cam1").status, 404);

    let r = send(
        addr,
        "POST",
        hook,
        form,
        publish.replace("token=pub1", "token=bad").as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "publish_forbidden");
    let r = send(
        addr,
        "POST",
        hook,
        form,
        publish.replace("&token=pub1", "").as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert_eq!(play(addr, "cam1").status, 404);
}

#[test]
fn malformed_and_oversized_bodies_get_400_and_change_nothing() {
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let addr = gw.addr();
    assert_eq!(put_node(addr, "n1", &node.url(), "30").status, 200);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "PUT",
            "/api/v1/nodes/a..b",
            br#"{"url":"http://127.0.0.1:1","ttl":5}"#.to_vec(),
        ),
        ("PUT", "/api/v1/nodes/n2", b"{not json".to_vec()),
        ("PUT", "/api/v1/nodes/n2", b"".to_vec()),
        (
            "PUT",
            "/api/v1/nodes/n2",
            br#"{"url":"http://127.0.0.1:1","tll":5}"#.to_vec(),
        ),
        (
            "PUT",
            "/api/v1/nodes/n2",
            br#"{"url":"ftp://x","ttl":5}"#.to_vec(),
        ),
        (
            "PUT",
            "/api/v1/nodes/n2",
            br#"{"url":"http://127.0.0.1:1","ttl":-1}"#.to_vec(),
        ),
        (
            "PUT",
            "/api/v1/nodes/n2",
            br#"{"url":"http://127.0.0.1:1","ttl":"soon"}"#.to_vec(),
        ),
        (
            "PUT",
            "/api/v1/nodes/bad%20id",
            br#"{"url":"http://127.0.0.1:1"}"#.to_vec(),
        ),
        ("PUT", "/api/v1/streams/cam1", br#"{"node":5}"#.to_vec()),
        ("PUT", "/api/v1/streams/cam1", b"\xff\xfe".to_vec()),
        ("PUT", "/api/v1/streams/..", br#"{"node":"n1"}"#.to_vec()),
        (
            "POST",
            "/hooks/srs?node=n1&secret=h00k",
            b"{\"action\":".to_vec(),
        ),
        (
            "POST",
            "/hooks/srs?node=n1&secret=h00k",
            br#"{"action":"on_publish","param":"?token=pub1"}"#.to_vec(),
        ),
        (
            "POST",
            "/hooks/srs?secret=h00k",
            SRS5_ON_PUBLISH.as_bytes().to_vec(),
        ),
        (
            "POST",
            "/hooks/nginx-rtmp?node=n1&secret=h00k",
            b"name=cam1&token=pub1".to_vec(),
        ),
        ("POST", "/hooks/srs?node=n1&secret=h00k", vec![b' '; 20_000]),
        ("PUT", "/api/v1/streams/cam1", vec![b'{'; 1_000_000]),
    ];
    let auth = |path: &str| if path.starts_with("/api") { ADMIN } else { "" };
    for (method, path, body) in &cases {
        let r = send(addr, method, path, auth(path), body);
        assert_eq!(
            r.status,
            400,
            "{method} {path} {:?}: {}",
            String::from_utf8_lossy(&body[..body.len().min(40)]),
            r.text()
        );
        let j = r.json();
        assert!(
            j["message"].as_str().is_some_and(|m| !m.is_empty()),
            "a message says why: {j}"
        );
    }
    let r = send(
        addr,
        "PUT",
        "/api/v1/streams/cam1",
        ADMIN,
        &vec![b' '; 20_000],
    );
    assert_eq!(r.json()["error"], "body_too_large");
    // Oversized without Content-Length (chunked): refused once the limit is crossed.
    let chunk = "a".repeat(8000);
    let mut raw = "POST /hooks/srs?node=n1&secret=h00k HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_string();
    for _ in 0..4 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    let r = raw_request(addr, &raw);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "body_too_large");

    // Nothing changed, and the gateway is fine.
    assert_eq!(stream_names(addr), vec!["static1"]);
    assert_eq!(
        get(addr, "/api/v1/nodes", ADMIN).json()["nodes"]
            .as_array()
            .expect("a")
            .len(),
        2
    );
    assert_eq!(
        get(addr, "/hls/static1/x.m3u8", "").status,
        502,
        "static route still answers (node s is unreachable)"
    );
}

/// `[registry] key = "app/stream"`: hooks register `app/stream`, routes capture `{app}`, and one
/// stream name in two applications is two streams on two nodes.
#[test]
fn streams_are_namespaced_by_application_when_configured() {
    let live_node = Upstream::start(echo);
    let studio_node = Upstream::start(echo);
    let (gw, _d) = gateway(
        r#"
[server]
listen = "127.0.0.1:0"

[registry]
hook_secret = "h00k"
key = "app/stream"

[admin]
token = "adm1n"

[[routes]]
path = "/{app}/{stream}/{*rest}"
action = "proxy"
upstream = "/{app}/{stream}/{*rest}"
"#,
    );
    let a = gw.addr();
    assert_eq!(put_node(a, "n1", &live_node.url(), "60").status, 200);
    assert_eq!(put_node(a, "n2", &studio_node.url(), "60").status, 200);
    let r = send(
        a,
        "POST",
        "/hooks/srs?node=n1&secret=h00k",
        "",
        br#"{"action":"on_publish","client_id":1,"vhost":"__defaultVhost__","app":"live","stream":"cam1"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        a,
        "POST",
        "/hooks/nginx-rtmp?node=n2&secret=h00k",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        b"call=publish&app=studio&name=cam1&clientid=3",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(stream_names(a), vec!["live/cam1", "studio/cam1"]);
    assert_eq!(get(a, "/live/cam1/index.m3u8", "").status, 200);
    assert_eq!(live_node.requests().len(), 1);
    assert_eq!(get(a, "/studio/cam1/index.m3u8", "").status, 200);
    assert_eq!(studio_node.requests().len(), 1);
    let r = get(a, "/other/cam1/index.m3u8", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "stream_not_found");
    // The API takes a key as one percent-encoded segment.
    let r = get(a, "/api/v1/streams/live%2Fcam1", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["nodes"], serde_json::json!(["n1"]));
    // Names are checked, the application's too; a publish without one is refused.
    for body in [
        r#"{"action":"on_publish","client_id":1,"stream":"cam2"}"#,
        r#"{"action":"on_publish","client_id":1,"app":"a..b","stream":"cam2"}"#,
        r#"{"action":"on_publish","client_id":1,"app":"live/x","stream":"cam2"}"#,
    ] {
        let r = send(
            a,
            "POST",
            "/hooks/srs?node=n1&secret=h00k",
            "",
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    // Unpublish withdraws the namespaced record.
    let r = send(
        a,
        "POST",
        "/hooks/srs?node=n1&secret=h00k",
        "",
        br#"{"action":"on_unpublish","client_id":1,"app":"live","stream":"cam1"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(a, "/live/cam1/index.m3u8", "").status, 404);
    assert_eq!(stream_names(a), vec!["studio/cam1"]);
}

/// A namespaced live route: the hub is keyed by `app/stream`, the pull goes where the registry
/// says `app/stream` lives.
#[test]
fn a_live_route_with_an_application_pulls_the_namespaced_stream() {
    let o = common::origin(&common::media_dir());
    let (gw, _d) = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[registry]
key = "app/stream"

[admin]
token = "adm1n"

[[nodes]]
id = "a"
url = "http://{}"

[[routes]]
path = "/{{app}}/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"
"#,
        o.addr()
    ));
    let addr = gw.addr();
    let r = put_stream(addr, "live%2Fcam1", "a");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut s = common::flv::FlvStream::open(addr, "/live/cam1.flv");
    common::flv::expect_live_start(&mut s, Duration::from_secs(20));
    let r = get(addr, "/studio/cam1.flv", "");
    assert_eq!(
        r.status, 404,
        "another application's cam1 is another stream"
    );
    let live = get(addr, "/api/v1/live", ADMIN).json();
    assert!(live.to_string().contains("live/cam1"), "{live}");
    drop(s);
}
