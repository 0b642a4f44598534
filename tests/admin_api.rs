//! The admin API against a real gateway and real origin nodes: docs/openapi.json describes
//! exactly the routes the router serves and the answers they give; kicking a viewer ends that
//! viewer only; draining a node sends the next join elsewhere.

mod common;
#[path = "common/schema.rs"]
mod schema;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use common::api::{send, ADMIN};
use common::flv::{assert_non_decreasing, expect_live_start, FlvStream};
use common::{gateway, get, origin, wait_until, Proc, RawResponse};

const T: Duration = Duration::from_secs(20);

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("the spec is JSON")
}

/// A gateway in front of `nodes` (each holding cam1 and cam2): a token-free live route, a
/// registry redirect route, the admin API.
fn config(nodes: &[(&str, &Proc)], live: &str) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"2s\"\n[upstream]\nconnect_timeout = \"2s\"\nresponse_header_timeout = \"5s\"\n[admin]\ntoken = \"adm1n\"\n[live]\n{live}\n"
    );
    for (id, p) in nodes {
        s.push_str(&format!(
            "[[nodes]]\nid = \"{id}\"\nurl = \"http://{}\"\nstreams = [\"cam1\", \"cam2\"]\n",
            p.addr()
        ));
    }
    // A node group over the same nodes, for `GET /api/v1/groups`.
    let members: Vec<String> = nodes.iter().map(|(id, _)| format!("\"{id}\"")).collect();
    s.push_str(&format!(
        "[[groups]]\nid = \"pool\"\npolicy = \"hash\"\nmembers = [{}]\n",
        members.join(", ")
    ));
    s.push_str("[[routes]]\npath = \"/flv/{stream}.flv\"\naction = \"live\"\nupstream = \"/live/{stream}.flv\"\n");
    s.push_str("[[routes]]\npath = \"/snap/{stream}.jpg\"\naction = \"redirect\"\nupstream = \"/files/snapshot.jpg\"\n");
    s
}

fn api(addr: SocketAddr, method: &str, path: &str, body: &str) -> RawResponse {
    send(addr, method, path, ADMIN, body.as_bytes())
}

fn ok_json(r: RawResponse) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The origin's live viewers (the gateway's pulls), from its `/stats`.
fn live_clients(origin: &Proc) -> u64 {
    get(origin.addr(), "/stats", "").json()["live_clients"]
        .as_u64()
        .expect("live_clients")
}

/// The schema documented for `method path` answering `status`.
fn response_schema<'a>(spec: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let responses = &spec["paths"][path][method.to_ascii_lowercase()]["responses"];
    let r = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| panic!("{method} {path} answered {status}, which is not documented"));
    &r["content"]["application/json"]["schema"]
}

fn assert_valid(spec: &Value, path: &str, method: &str, r: &RawResponse) -> Value {
    let v = r.json();
    let errors = schema::check(spec, response_schema(spec, path, method, r.status), &v);
    assert!(
        errors.is_empty(),
        "{method} {path} → {} does not match the spec:\n{}\n{v:#}",
        r.status,
        errors.join("\n")
    );
    v
}

#[test]
fn the_spec_describes_exactly_the_real_routes_and_their_answers() {
    let spec = spec();
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    let a = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&[("a", &a)], ""));
    let addr = gw.addr();

    // The routes as the router lists them, against the spec's paths and methods.
    let index = ok_json(get(addr, "/api/v1", ADMIN));
    let real: BTreeSet<(String, String)> = index["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/api/v1")))
        .flat_map(|r| {
            let path = r["path"].as_str().expect("path").to_string();
            r["methods"]
                .as_array()
                .expect("methods")
                .iter()
                .map(move |m| (path.clone(), m.as_str().expect("method").to_string()))
        })
        .collect();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .map(move |m| (path.clone(), m.to_ascii_uppercase()))
        })
        .collect();
    assert_eq!(
        real.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes the spec does not describe"
    );
    assert_eq!(
        documented.difference(&real).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented routes the router does not serve"
    );

    // Something to list: a live stream with a viewer.
    let mut viewer = FlvStream::open(addr, "/flv/cam1.flv");
    expect_live_start(&mut viewer, T);
    wait_until("a bitrate sample", T, || {
        let s = ok_json(get(addr, "/api/v1/streams/cam1", ADMIN));
        s["pulls"][0]["bitrate_in_bps"].as_u64().unwrap_or(0) > 0
    });

    // Every documented route answers on the real gateway (not 404 `not_found`, not 405),
    // with an answer its documented schema accepts. Writes go to a node and a stream of
    // their own, created before they are read and removed last.
    let order = ["PUT", "GET", "POST", "DELETE"];
    let mut calls: Vec<&(String, String)> = documented.iter().collect();
    calls.sort_by_key(|(p, m)| (order.iter().position(|o| o == m), p.len()));
    for (path, method) in calls {
        let is_node = path.starts_with("/api/v1/nodes/");
        let concrete = path
            .replace("/nodes/{id}", "/nodes/probe")
            .replace("{name}", if method == "GET" { "cam1" } else { "probe-s" })
            .replace("/viewers/{id}", "/viewers/999999");
        let body = match (method.as_str(), is_node) {
            ("PUT", true) => r#"{"url":"http://127.0.0.1:9","ttl":"60s"}"#,
            ("PUT", false) => r#"{"node":"probe"}"#,
            _ => "",
        };
        let r = api(addr, method, &concrete, body);
        assert_ne!(r.status, 405, "{method} {concrete}: {}", r.text());
        assert!(
            !(r.status == 404 && r.json()["error"] == "not_found"),
            "{method} {concrete} is not routed"
        );
        assert_valid(&spec, path, method, &r);
    }

    // A few answers with everything in them, checked field by field against the spec.
    let v = assert_valid(
        &spec,
        "/api/v1/streams",
        "GET",
        &get(addr, "/api/v1/streams", ADMIN),
    );
    let cam1 = v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["name"] == "cam1")
        .expect("cam1 listed")
        .clone();
    assert_eq!(cam1["viewers"], 1);
    let pull = &cam1["pulls"][0];
    assert_eq!(pull["node"], "a");
    assert_eq!(pull["phase"], "live");
    // media/make.sh: 320x180 H.264 Main, AAC mono 44.1 kHz.
    assert_eq!(pull["video"]["codec"], "h264");
    assert_eq!(
        (
            pull["video"]["width"].as_u64(),
            pull["video"]["height"].as_u64()
        ),
        (Some(320), Some(180))
    );
    assert_eq!(pull["video"]["profile"], "Main");
    assert_eq!(pull["audio"]["codec"], "aac");
    assert_eq!(pull["audio"]["sample_rate"], 44100);
    assert_eq!(pull["audio"]["channels"], 1);
    let bitrate = pull["bitrate_in_bps"].as_u64().expect("bitrate");
    assert!(bitrate > 0, "media flows in: {bitrate}");
    assert!(pull["uptime_s"].as_f64().expect("uptime") > 0.0);
    let one = assert_valid(
        &spec,
        "/api/v1/streams/{name}",
        "GET",
        &get(addr, "/api/v1/streams/cam1", ADMIN),
    );
    assert_eq!(one["name"], "cam1");
    assert_eq!(one["pulls"][0]["upstream_path"], "/live/cam1.flv");
    let viewers = assert_valid(
        &spec,
        "/api/v1/streams/{name}/viewers",
        "GET",
        &get(addr, "/api/v1/streams/cam1/viewers", ADMIN),
    );
    let v0 = &viewers["viewers"][0];
    assert_eq!(v0["client"], "127.0.0.1");
    assert_eq!(v0["protocol"], "http-flv");
    assert!(v0["bytes"].as_u64().expect("bytes") > 0);
    assert_valid(
        &spec,
        "/api/v1/nodes",
        "GET",
        &get(addr, "/api/v1/nodes", ADMIN),
    );
    let node = assert_valid(
        &spec,
        "/api/v1/nodes/{id}",
        "GET",
        &get(addr, "/api/v1/nodes/a", ADMIN),
    );
    assert_eq!(
        (node["live_pulls"].as_u64(), node["live_viewers"].as_u64()),
        (Some(1), Some(1))
    );
    assert_valid(
        &spec,
        "/api/v1/live",
        "GET",
        &get(addr, "/api/v1/live", ADMIN),
    );
    // Errors are documented too.
    let r = get(addr, "/api/v1/streams/nope", ADMIN);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "stream_not_found");
    assert_valid(&spec, "/api/v1/streams/{name}", "GET", &r);
    let r = get(addr, "/api/v1/nodes", "Authorization: Bearer wrong\r\n");
    assert_eq!(r.status, 401);
    assert_valid(&spec, "/api/v1/nodes", "GET", &r);
    drop(viewer);
}

#[test]
fn a_405_names_the_methods_the_path_serves() {
    let a = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&[("a", &a)], ""));
    let r = api(gw.addr(), "PATCH", "/api/v1/nodes/a", "");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    assert_eq!(
        r.json()["message"],
        "this path serves only GET, HEAD, PUT, DELETE"
    );
    let r = api(gw.addr(), "GET", "/api/v1/nodes/a/drain", "");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = api(gw.addr(), "POST", "/flv/cam1.flv", "");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(r.json()["message"], "this path serves only GET, HEAD");
}

/// The id of the one viewer of cam1 not in `known`, once it is listed.
fn new_viewer(addr: SocketAddr, known: &[u64]) -> u64 {
    let mut id = None;
    wait_until("the viewer to be listed", T, || {
        let v = ok_json(get(addr, "/api/v1/streams/cam1/viewers", ADMIN));
        id = v["viewers"]
            .as_array()
            .expect("viewers")
            .iter()
            .filter_map(|v| v["id"].as_u64())
            .find(|i| !known.contains(i));
        id.is_some()
    });
    id.expect("listed")
}

#[test]
fn kicking_a_viewer_ends_exactly_that_viewer() {
    let a = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&[("a", &a)], ""));
    let addr = gw.addr();
    let mut first = FlvStream::open(addr, "/flv/cam1.flv");
    expect_live_start(&mut first, T);
    let first_id = new_viewer(addr, &[]);
    let mut second = FlvStream::open(addr, "/flv/cam1.flv");
    expect_live_start(&mut second, T);
    let second_id = new_viewer(addr, &[first_id]);

    let r = api(
        addr,
        "DELETE",
        &format!("/api/v1/streams/cam1/viewers/{first_id}"),
        "",
    );
    let v = ok_json(r);
    assert_eq!(
        (v["kicked"].as_bool(), v["id"].as_u64()),
        (Some(true), Some(first_id))
    );

    // The kicked viewer's response ends at once, cleanly.
    let (_, ended) = first.tags_until_end(Duration::from_secs(5));
    assert!(ended, "the kicked viewer's body ends");
    assert!(first.clean_end(), "with the final chunk");
    // The other keeps receiving.
    // (`tags_for` fails the test if the stream ends meanwhile.)
    let more = second.tags_for(Duration::from_millis(1500));
    assert!(!more.is_empty(), "the other viewer keeps receiving");
    assert_non_decreasing(&more);
    let left = ok_json(get(addr, "/api/v1/streams/cam1/viewers", ADMIN));
    let ids: Vec<u64> = left["viewers"]
        .as_array()
        .expect("viewers")
        .iter()
        .filter_map(|v| v["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![second_id]);
    assert_eq!(live_clients(&a), 1, "the pull goes on");
    // The access log says why, for that viewer only.
    wait_until("the kicked viewer's access line", T, || {
        gw.logs().contains("closed=\"kicked\"")
    });
    assert_eq!(gw.logs().matches("closed=\"kicked\"").count(), 1);

    // Kicking again, or a viewer of another stream, is a 404 naming the viewer.
    let r = api(
        addr,
        "DELETE",
        &format!("/api/v1/streams/cam1/viewers/{first_id}"),
        "",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "viewer_not_found");
    let r = api(
        addr,
        "DELETE",
        &format!("/api/v1/streams/cam2/viewers/{second_id}"),
        "",
    );
    assert_eq!(r.status, 404, "the id must belong to the stream named");
    let r = api(addr, "DELETE", "/api/v1/streams/cam1/viewers/x", "");
    assert_eq!(r.status, 400);
    // A refused admin request's access line says why.
    let r = send(
        addr,
        "DELETE",
        &format!("/api/v1/streams/cam1/viewers/{first_id}"),
        &format!("{ADMIN}X-Request-Id: kick-again\r\n"),
        b"",
    );
    assert_eq!(r.status, 404);
    let line = common::access_line(&gw, "kick-again");
    assert!(
        line.contains("status=404")
            && line.contains("error=\"no viewer")
            && line.contains("side=\"downstream\""),
        "{line}"
    );
    drop(second);
}

/// Joins `stream` with request id `rid` and returns the node its access line names (the
/// viewer is read until it starts, then dropped).
fn join_node(gw: &Proc, stream: &str, rid: &str) -> String {
    let (head, s, _) = common::open_stream_with(
        gw.addr(),
        &format!("/flv/{stream}.flv"),
        &format!("X-Request-Id: {rid}\r\n"),
    );
    assert_eq!(head.status, 200);
    drop(s);
    let line = common::access_line(gw, rid);
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("node="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn draining_the_node_in_use_moves_its_pull_and_sends_the_next_join_elsewhere() {
    let a = origin(&common::media_dir());
    let b = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(
        &[("a", &a), ("b", &b)],
        "reconnect_window = \"5s\"",
    ));
    let addr = gw.addr();
    let mut viewer = FlvStream::open(addr, "/flv/cam1.flv");
    let mut tags = expect_live_start(&mut viewer, T);
    tags.extend(viewer.tags_for(Duration::from_millis(500)));
    assert_eq!(
        (live_clients(&a), live_clients(&b)),
        (1, 0),
        "a is preferred"
    );

    let v = ok_json(api(addr, "POST", "/api/v1/nodes/a/drain", ""));
    assert_eq!(v["draining"], true);
    assert_eq!(v["drain_mode"], "move");
    // The pull moves to b at a keyframe; the viewer keeps its connection and its timeline.
    let t0 = std::time::Instant::now();
    while live_clients(&b) != 1 || live_clients(&a) != 0 {
        assert!(t0.elapsed() < T, "the pull never moved to b");
        tags.extend(viewer.tags_for(Duration::from_millis(100)));
    }
    let after = viewer.tags_for(Duration::from_millis(2000));
    assert!(
        after
            .iter()
            .any(|t| t.kind() == streamgate::flv::TagKind::Video && t.is_keyframe()),
        "media from b reaches the viewer"
    );
    tags.extend(after);
    assert_non_decreasing(&tags);
    let node = ok_json(get(addr, "/api/v1/nodes/a", ADMIN));
    assert_eq!(
        (node["live_pulls"].as_u64(), node["draining"].as_bool()),
        (Some(0), Some(true))
    );

    // New work goes to b: the next join of the stream, a join of another stream, a redirect.
    assert_eq!(join_node(&gw, "cam1", "join-cam1"), "b");
    assert_eq!(join_node(&gw, "cam2", "join-cam2"), "b");
    assert_eq!(live_clients(&a), 0);
    let r = get(addr, "/snap/cam1.jpg", "");
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .is_some_and(|l| l.contains(&b.addr().to_string())),
        "{:?}",
        r.header("location")
    );
    // With b drained too, nothing can serve a new request.
    ok_json(api(addr, "POST", "/api/v1/nodes/b/drain", ""));
    let r = get(addr, "/snap/cam1.jpg", "");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "node_draining");
    ok_json(api(addr, "POST", "/api/v1/nodes/b/undrain", ""));
    let v = ok_json(api(addr, "POST", "/api/v1/nodes/a/undrain", ""));
    assert_eq!(v["draining"], false);
    let r = get(addr, "/snap/cam1.jpg", "");
    assert!(r
        .header("location")
        .is_some_and(|l| l.contains(&a.addr().to_string())));
    drop(viewer);
}

#[test]
fn with_drain_stay_running_pulls_stay_and_new_ones_go_elsewhere() {
    let a = origin(&common::media_dir());
    let b = origin(&common::media_dir());
    let (gw, _d) = gateway(&config(&[("a", &a), ("b", &b)], "drain = \"stay\""));
    let addr = gw.addr();
    let mut viewer = FlvStream::open(addr, "/flv/cam1.flv");
    expect_live_start(&mut viewer, T);
    let v = ok_json(api(addr, "POST", "/api/v1/nodes/a/drain", ""));
    assert_eq!(v["drain_mode"], "stay");
    let more = viewer.tags_for(Duration::from_millis(1500));
    assert!(!more.is_empty());
    assert_eq!(
        (live_clients(&a), live_clients(&b)),
        (1, 0),
        "the running pull stays on a"
    );
    assert_eq!(
        join_node(&gw, "cam2", "stay-cam2"),
        "b",
        "a new pull goes to b"
    );
    let r = api(addr, "POST", "/api/v1/nodes/zz/drain", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "node_not_found");
    drop(viewer);
}
