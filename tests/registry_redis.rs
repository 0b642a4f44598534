//! The Redis registry backend, end to end: a real `redis-server`, two real gateways sharing it,
//! and a scripted node. What one gateway learns, the other serves within a second; a Redis
//! outage leaves routing alone and fails writes with 503; a restarted Redis is caught up with.

mod common;

use common::api::{put_node, put_stream, send, ADMIN};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::{play, Redis};
use common::upstream::{echo, Upstream};
use common::{gateway, get, wait_until};

/// What the issue promises for propagation between gateways.
const PROPAGATION: Duration = Duration::from_secs(1);

fn config(redis_url: &str) -> String {
    common::redis::gateway_config(redis_url, "sgtest", "")
}

/// Polls every 5 ms, bounded by `limit`, until `cond` holds; returns how long it took.
fn time_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) -> Duration {
    common::poll_until(what, limit, Duration::from_millis(5), cond)
}

/// Both gateways have a working Redis link: a node registered through `a` is listed by `b`.
fn wait_linked(a: SocketAddr, b: SocketAddr, node: &Upstream, id: &str) {
    wait_until(
        "gateway A to write to redis",
        Duration::from_secs(15),
        || put_node(a, id, &node.url(), "60").status == 200,
    );
    wait_until("gateway B to see the node", Duration::from_secs(15), || {
        get(b, &format!("/api/v1/nodes/{id}"), ADMIN).status == 200
    });
}

/// `streamgate_registry_redis_connected` on a gateway's `/metrics` (main listener, admin token).
fn redis_connected(addr: SocketAddr) -> Option<f64> {
    let r = get(addr, "/metrics", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().lines().find_map(|l| {
        l.strip_prefix("streamgate_registry_redis_connected ")
            .and_then(|v| v.trim().parse().ok())
    })
}

#[test]
fn two_gateways_share_streams_through_redis_and_survive_its_outage() {
    let mut redis = Redis::start();
    let node = Upstream::start(echo);
    let (gw_a, _da) = gateway(&config(&redis.url()));
    let (gw_b, _db) = gateway(&config(&redis.url()));
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_linked(a, b, &node, "n1");
    wait_until(
        "A's metrics say redis is connected",
        Duration::from_secs(15),
        || redis_connected(a) == Some(1.0),
    );

    // Announced through A, playable through B within a second.
    assert_eq!(play(b, "cam1"), 404);
    let r = put_stream(a, "cam1", "n1");
    assert_eq!(r.status, 200, "{}", r.text());
    let took = time_until("cam1 on gateway B", PROPAGATION, || play(b, "cam1") == 200);
    eprintln!("propagation A → B: {took:?}");
    assert_eq!(play(a, "cam1"), 200);
    // And the other way round, for a withdrawal.
    assert_eq!(put_stream(b, "cam9", "n1").status, 200);
    time_until("cam9 on gateway A", PROPAGATION, || play(a, "cam9") == 200);
    assert_eq!(
        send(b, "DELETE", "/api/v1/streams/cam9", ADMIN, b"").status,
        200
    );
    let took = time_until("cam9 withdrawn on A", PROPAGATION, || {
        play(a, "cam9") == 404
    });
    eprintln!("withdrawal B → A: {took:?}");

    // Redis goes away: both keep routing what they know, for longer than the re-read period;
    // writes fail with 503 and change nothing.
    redis.kill();
    wait_until(
        "A's metrics say redis is gone",
        Duration::from_secs(15),
        || redis_connected(a) == Some(0.0),
    );
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(play(a, "cam1"), 200, "A routes cam1 without redis");
        assert_eq!(play(b, "cam1"), 200, "B routes cam1 without redis");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = put_stream(a, "cam2", "n1");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "registry_unavailable");
    assert_eq!(
        play(a, "cam2"),
        404,
        "a failed write leaves the registry alone"
    );
    let r = send(
        a,
        "POST",
        "/hooks/srs?node=n1&secret=h00k",
        "",
        br#"{"action":"on_publish","client_id":1,"stream":"cam3"}"#,
    );
    assert_eq!(r.status, 503);
    assert_ne!(r.json()["code"], 0);

    // Redis comes back (empty, no persistence): each gateway reconnects by itself, writes its
    // last known state back, and new announcements propagate again.
    redis.restart();
    wait_until(
        "gateway B to write to redis again",
        Duration::from_secs(15),
        || put_stream(b, "cam2", "n1").status == 200,
    );
    let took = time_until("cam2 on gateway A", Duration::from_secs(5), || {
        play(a, "cam2") == 200
    });
    eprintln!("propagation B → A after the restart: {took:?}");
    for (name, g) in [("A", a), ("B", b)] {
        wait_until(
            &format!("{name}'s metrics say redis is back"),
            Duration::from_secs(15),
            || redis_connected(g) == Some(1.0),
        );
    }
    assert_eq!(
        play(a, "cam1"),
        200,
        "known streams survive the empty restart"
    );
    assert_eq!(play(b, "cam1"), 200);
    let r = put_stream(a, "cam4", "n1");
    assert_eq!(r.status, 200, "{}", r.text());
    let took = time_until("cam4 on gateway B", PROPAGATION, || play(b, "cam4") == 200);
    eprintln!("propagation A → B after the restart: {took:?}");
    let listed = get(b, "/api/v1/streams", ADMIN).json();
    let names: Vec<&str> = listed["streams"]
        .as_array()
        .expect("a")
        .iter()
        .map(|s| s["name"].as_str().expect("n"))
        .collect();
    assert_eq!(names, vec!["cam1", "cam2", "cam4"]);
}

#[test]
fn a_node_missing_its_heartbeats_is_down_on_every_gateway() {
    let redis = Redis::start();
    let node = Upstream::start(echo);
    let (gw_a, _da) = gateway(&config(&redis.url()));
    let (gw_b, _db) = gateway(&config(&redis.url()));
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_linked(a, b, &node, "n1");
    assert_eq!(put_node(a, "n2", &node.url(), r#""1s""#).status, 200);
    assert_eq!(put_stream(a, "cam1", "n2").status, 200);
    time_until("cam1 on B", PROPAGATION, || play(b, "cam1") == 200);
    // No heartbeat: both gateways answer 503 node_unavailable once the TTL has run out.
    wait_until("n2 down on B", Duration::from_secs(10), || {
        play(b, "cam1") == 503
    });
    wait_until("n2 down on A", Duration::from_secs(10), || {
        play(a, "cam1") == 503
    });
    let r = get(b, "/hls/cam1/index.m3u8", "");
    assert_eq!(r.json()["error"], "node_unavailable");
    // The key really expired in Redis (a heartbeat through B revives it for A too).
    assert_eq!(
        redis.command("EXISTS {sgtest}:alive:n2").as_deref(),
        Some(":0")
    );
    assert_eq!(put_node(b, "n2", &node.url(), "30").status, 200);
    time_until("n2 up again on A", PROPAGATION, || play(a, "cam1") == 200);
    // Deregistering through A makes the stream unknown on B.
    assert_eq!(
        send(a, "DELETE", "/api/v1/nodes/n2", ADMIN, b"").status,
        200
    );
    time_until("cam1 gone on B", PROPAGATION, || play(b, "cam1") == 404);
}

#[test]
fn another_gateway_cannot_move_a_node_this_gateway_has_in_its_config() {
    let redis = Redis::start();
    let mine = Upstream::start(echo);
    let other = Upstream::start(echo);
    // Gateway A has node "s" (holding "fixed") in its config file; gateway B does not.
    let with_static = config(&redis.url()).replace(
        "[[routes]]",
        &format!(
            "[[nodes]]\nid = \"s\"\nurl = \"{0}\"\nstreams = [\"fixed\"]\n\n\
             [[nodes]]\nid = \"own\"\nurl = \"{0}\"\n\n[[routes]]",
            mine.url()
        ),
    );
    let (gw_a, _da) = gateway(&with_static);
    let (gw_b, _db) = gateway(&config(&redis.url()));
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_linked(b, a, &other, "probe");
    // B registers its own "s" elsewhere and announces a stream on it; A sees the stream…
    let r = put_node(b, "s", &other.url(), "60");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(put_stream(b, "moved", "s").status, 200);
    time_until("the stream on gateway A", PROPAGATION, || {
        play(a, "moved") == 200
    });
    // …but A still reaches "s" where its config file says, for every stream.
    assert_eq!(play(a, "fixed"), 200);
    assert!(
        other.requests().is_empty(),
        "A never sent a request to B's idea of node s"
    );
    assert_eq!(mine.requests().len(), 2);
    // A stream announced on A's config-file node through A's API (a media server's hook would
    // do the same) is recorded in Redis, though the node itself is not, and routes on A.
    let r = put_stream(a, "onstatic", "own");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(play(a, "onstatic"), 200);
    assert_eq!(mine.requests().len(), 3);
}
