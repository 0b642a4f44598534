//! Gateway tiers (`[fleet]`) as real processes on loopback: one origin node, one Redis, and
//! gateways that announce themselves there and pull each stream from the node at most
//! `node_pulls` times per region, the rest pulling from each other. Checks the pull count the
//! node sees, that every viewer plays, that viewers behind a killed tier-1 gateway keep
//! playing, that a pinned loop is cut by the hop count, and redirect affinity.

mod common;
#[path = "common/schema.rs"]
mod schema;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::flv::{expect_live_start, synthetic, to_bytes, FlvStream};
use common::redis::Redis;
use common::{gateway, get, origin, wait_until, Proc};
use streamgate::flv::Event;

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "fleet-test-secret-0123456789";
const ADMIN: &str = "Authorization: Bearer adm1n\r\n";

/// An origin whose media directory holds `n` short synthetic live streams `s00`…: small (a
/// few KB/s each) so hundreds of viewers stay cheap on a loaded machine.
fn origin_with_streams(n: usize) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flv = to_bytes(&synthetic(4, 10, 200));
    for i in 0..n {
        std::fs::write(dir.path().join(format!("s{i:02}.flv")), &flv).expect("write flv");
    }
    (origin(dir.path()), dir)
}

fn stream_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i:02}")).collect()
}

struct Gw {
    id: &'static str,
    tier: u8,
    fleet_extra: &'static str,
    route_extra: &'static str,
}

fn config(g: &Gw, redis: &Redis, origin: &Proc, streams: &[String]) -> String {
    let list = streams
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[server]
listen = "127.0.0.1:0"
drain_timeout = "1s"
[upstream]
connect_timeout = "1s"
response_header_timeout = "5s"
[auth]
tokens = ["v13wer"]
[admin]
token = "adm1n"
[live]
reconnect_window = "8s"
linger = "2s"
[fleet]
id = "{id}"
region = "lo"
tier = {tier}
redis = "{redis}"
secret = "{SECRET}"
heartbeat_interval = "250ms"
heartbeat_ttl = "2s"
{fleet_extra}
[[nodes]]
id = "origin"
url = "http://{origin}"
streams = [{list}]
[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"
auth = "token"
{route_extra}
"#,
        id = g.id,
        tier = g.tier,
        redis = redis.url(),
        fleet_extra = g.fleet_extra,
        origin = origin.addr(),
        route_extra = g.route_extra,
    )
}

fn start(
    gws: &[Gw],
    redis: &Redis,
    o: &Proc,
    streams: &[String],
) -> Vec<(Proc, tempfile::TempDir)> {
    gws.iter()
        .map(|g| gateway(&config(g, redis, o, streams)))
        .collect()
}

/// `GET /api/v1/fleet`, checked against its schema in docs/openapi.json.
fn fleet_status(addr: SocketAddr) -> serde_json::Value {
    static SPEC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("openapi.json")).expect("json")
    });
    let r = get(addr, "/api/v1/fleet", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let schema = &spec["paths"]["/api/v1/fleet"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    let errors = schema::check(spec, schema, &v);
    assert!(errors.is_empty(), "{}\n{v:#}", errors.join("\n"));
    v
}

/// Waits until every gateway sees every other one alive.
fn wait_members(gws: &[(Proc, tempfile::TempDir)]) {
    let n = gws.len() - 1;
    wait_until("every gateway sees the others", T, || {
        gws.iter().all(|(p, _)| {
            fleet_status(p.addr())["gateways"]
                .as_array()
                .is_some_and(|a| a.iter().filter(|g| g["alive"] == true).count() == n)
        })
    });
}

/// Node pulls per stream, from the origin's own counters.
fn node_clients(o: &Proc) -> HashMap<String, u64> {
    let r = get(o.addr(), "/stats", "");
    assert_eq!(r.status, 200);
    r.json()["streams"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["clients"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a gateway pulls each stream from (`gw:ID` or `node:ID`).
fn upstreams(addr: SocketAddr) -> HashMap<String, String> {
    fleet_status(addr)["pulls"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["stream"].as_str().unwrap_or("").to_string(),
                        p["upstream"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A viewer thread's progress: tags read so far, and whether its stream failed or ended.
#[derive(Default)]
struct Progress {
    tags: AtomicU64,
    broken: AtomicBool,
}

/// A small deterministic generator (the test's seed), instead of a dependency.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn four_gateways_in_two_tiers_pull_each_stream_once_and_survive_a_tier1_loss() {
    const STREAMS: usize = 20;
    const VIEWERS_PER_STREAM: usize = 30;
    let redis = Redis::start();
    let (o, _media) = origin_with_streams(STREAMS);
    let streams = stream_names(STREAMS);
    let plan = [("t1-a", 1u8), ("t1-b", 1), ("t2-a", 2), ("t2-b", 2)];
    let gws: Vec<Gw> = plan
        .iter()
        .map(|&(id, tier)| Gw {
            id,
            tier,
            fleet_extra: "node_pulls = 1",
            route_extra: "",
        })
        .collect();
    let mut procs = start(&gws, &redis, &o, &streams);
    wait_members(&procs);
    let addrs: Vec<SocketAddr> = procs.iter().map(|(p, _)| p.addr()).collect();

    // 600 viewers, each on a gateway drawn from a seeded generator.
    let mut rng = Lcg(0x5eed);
    let stop = Arc::new(AtomicBool::new(false));
    let mut viewers = Vec::new();
    for s in &streams {
        for _ in 0..VIEWERS_PER_STREAM {
            let gw = (rng.next() % addrs.len() as u64) as usize;
            let progress = Arc::new(Progress::default());
            let (addr, path, p, stop) = (
                addrs[gw],
                format!("/flv/{s}.flv?token=v13wer"),
                progress.clone(),
                stop.clone(),
            );
            let h = std::thread::spawn(move || {
                let mut f = FlvStream::open(addr, &path);
                expect_live_start(&mut f, T);
                p.tags.fetch_add(1, Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) {
                    match f.next_event(Instant::now() + Duration::from_millis(500)) {
                        Ok(Some(Event::Tag(_))) => {
                            p.tags.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.starts_with("timed out") => {}
                        _ => {
                            p.broken.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            });
            viewers.push((gw, s.clone(), progress, h));
        }
    }
    wait_until("every viewer got the FLV start and a keyframe", T, || {
        viewers
            .iter()
            .all(|(_, _, p, _)| p.tags.load(Ordering::Relaxed) > 0)
    });

    // The node sees exactly K = 1 pull per stream.
    let settled = Instant::now();
    while !{
        let c = node_clients(&o);
        streams.iter().all(|s| c.get(s) == Some(&1))
    } {
        if settled.elapsed() > T {
            let fleets: Vec<_> = addrs.iter().map(|a| fleet_status(*a)).collect();
            let logs: Vec<_> = procs.iter().map(|(p, _)| p.logs()).collect();
            panic!(
                "node pulls per stream {:?}\nfleet: {fleets:#?}\nlogs: {logs:#?}",
                node_clients(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = node_clients(&o);
    assert_eq!(c.values().sum::<u64>(), STREAMS as u64, "{c:?}");
    // Tier 2 pulls from tier 1 only.
    for t2 in &addrs[2..] {
        for (s, up) in upstreams(*t2) {
            assert!(
                up.starts_with("gw:t1-"),
                "{s} at a tier-2 gateway from {up}"
            );
        }
    }

    if std::env::var_os("FLEET_MEASURE").is_some() {
        measure(
            &redis,
            &procs,
            &viewers.iter().map(|v| v.0).collect::<Vec<_>>(),
        );
    }

    // Kill the tier-1 gateway that feeds the most tier-2 pulls (SIGKILL by its PID).
    let fed_by = |id: &str| {
        addrs[2..]
            .iter()
            .flat_map(|a| upstreams(*a).into_values())
            .filter(|u| u == &format!("gw:{id}"))
            .count()
    };
    let victim = if fed_by("t1-a") >= fed_by("t1-b") {
        0
    } else {
        1
    };
    let victim_id = plan[victim].0;
    assert!(
        fed_by(victim_id) > 0,
        "some tier-2 pull goes through {victim_id}"
    );
    let survivors: Vec<usize> = (0..4).filter(|&g| g != victim).collect();
    let before: Vec<u64> = viewers
        .iter()
        .map(|(_, _, p, _)| p.tags.load(Ordering::Relaxed))
        .collect();
    let _ = procs[victim].0.child.kill();
    let _ = procs[victim].0.child.wait();

    // Every viewer of a surviving gateway keeps playing: at least two more seconds of media
    // (20 tags a second) within the reconnect window and a margin.
    let took = common::poll_until(
        "viewers behind the dead gateway play on",
        Duration::from_secs(25),
        Duration::from_millis(20),
        || {
            viewers.iter().zip(&before).all(|((gw, _, p, _), b)| {
                !survivors.contains(gw) || p.tags.load(Ordering::Relaxed) >= b + 40
            })
        },
    );
    eprintln!("fleet: after the kill, every surviving viewer had 2 s more media within {took:?}");
    for (gw, s, p, _) in &viewers {
        if survivors.contains(gw) {
            assert!(
                !p.broken.load(Ordering::Relaxed),
                "a viewer of {s} at gateway {gw} lost its connection"
            );
        }
    }
    for t2 in &addrs[2..] {
        for (s, up) in upstreams(*t2) {
            assert_ne!(
                up,
                format!("gw:{victim_id}"),
                "{s} moved off the dead gateway"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for (_, _, _, h) in viewers {
        let _ = h.join();
    }
}

/// Figures for FLEET.md (`FLEET_MEASURE=1 cargo test --release --test fleet four -- --nocapture`):
/// Redis commands per second, and per gateway its CPU, RSS and viewers, over a 5 s window.
/// Printed, never asserted.
fn measure(redis: &Redis, procs: &[(Proc, tempfile::TempDir)], viewer_gw: &[usize]) {
    fn redis_commands(redis: &Redis) -> u64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(redis.addr()).expect("redis");
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        s.write_all(b"INFO stats\r\n").expect("write");
        let mut text = String::new();
        let mut buf = [0u8; 8192];
        while !text.contains("total_net_input_bytes") {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        text.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
    fn cpu_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the ")".
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    }
    let window = Duration::from_secs(5);
    let c0 = redis_commands(redis);
    let t0: Vec<u64> = procs.iter().map(|(p, _)| cpu_ticks(p.pid())).collect();
    let start = Instant::now();
    std::thread::sleep(window);
    let secs = start.elapsed().as_secs_f64();
    let c1 = redis_commands(redis);
    eprintln!(
        "fleet: Redis {:.1} commands/s for {} gateways ({:.1} per gateway)",
        (c1 - c0) as f64 / secs,
        procs.len(),
        (c1 - c0) as f64 / secs / procs.len() as f64
    );
    for (i, (p, _)) in procs.iter().enumerate() {
        let ticks = cpu_ticks(p.pid()) - t0[i];
        let viewers = viewer_gw.iter().filter(|g| **g == i).count();
        let served = fleet_status(p.addr())["serving"].as_u64().unwrap_or(0);
        eprintln!(
            "fleet: gateway {i}: {viewers} viewers + {served} gateway pulls served, CPU {:.1} ms/s, RSS {} KiB",
            ticks as f64 * 10.0 / secs,
            p.rss_kib()
        );
    }
}

/// The fleet's pass, as a gateway computes it (`fleet::signature`).
fn pass(id: &str, hop: u8, path: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mac = streamgate::auth::signed::mac(
        SECRET.as_bytes(),
        format!("{id}\n{now}\n{hop}\n{path}").as_bytes(),
    );
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("X-Streamgate-Hop: {hop}\r\nX-Streamgate-Fleet: {id}.{now}.{hex}\r\n")
}

#[test]
fn two_gateways_pinned_to_each_other_do_not_loop() {
    let redis = Redis::start();
    let (o, _media) = origin_with_streams(2);
    let streams = stream_names(2);
    // The misconfiguration: A's upstream is B and B's is A.
    let gws = [
        Gw {
            id: "a",
            tier: 1,
            fleet_extra: "upstreams = [\"b\"]\nmax_depth = 2",
            route_extra: "",
        },
        Gw {
            id: "b",
            tier: 1,
            fleet_extra: "upstreams = [\"a\"]\nmax_depth = 2",
            route_extra: "",
        },
    ];
    let procs = start(&gws, &redis, &o, &streams);
    wait_members(&procs);
    let (a, b) = (procs[0].0.addr(), procs[1].0.addr());

    // A viewer at A: A pulls from B at hop 2, which is the depth limit, so B takes it from the
    // node; the viewer plays.
    let mut v = FlvStream::open(a, "/flv/s00.flv?token=v13wer");
    expect_live_start(&mut v, T);
    assert!(!v.tags_for(Duration::from_millis(500)).is_empty());
    wait_until("the chain settles", T, || {
        upstreams(a).get("s00").map(String::as_str) == Some("gw:b")
            && upstreams(b).get("s00").map(String::as_str) == Some("node:origin")
    });
    assert_eq!(
        node_clients(&o).get("s00"),
        Some(&1),
        "one node pull, no loop"
    );
    let pulls = |addr| {
        fleet_status(addr)["pulls"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    assert_eq!((pulls(a), pulls(b)), (1, 1), "one pull on each gateway");

    // A gateway's request at the depth limit is served from the node, never passed on.
    let path = "/flv/s01.flv";
    let (head, sock, _) = common::open_stream_with(a, path, &pass("b", 2, path));
    assert_eq!(head.status, 200, "the pass stands in for the viewer token");
    wait_until("A pulls s01 from the node", T, || {
        upstreams(a).get("s01").map(String::as_str) == Some("node:origin")
    });
    assert!(!upstreams(b).contains_key("s01"), "B was not asked");
    drop(sock);

    // A forged pass is refused, not taken for a viewer without credentials.
    let r = get(
        a,
        "/flv/s00.flv",
        "X-Streamgate-Hop: 1\r\nX-Streamgate-Fleet: b.1.00\r\n",
    );
    assert_eq!(r.status, 401, "{}", r.text());
    // A hop header without a pass counts for nothing: viewer auth applies.
    let r = get(a, "/flv/s00.flv", "X-Streamgate-Hop: 2\r\n");
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn a_viewer_is_redirected_to_the_gateway_already_serving_the_stream() {
    let redis = Redis::start();
    let (o, _media) = origin_with_streams(1);
    let streams = stream_names(1);
    let gws = [
        Gw {
            id: "a",
            tier: 1,
            fleet_extra: "",
            route_extra: "affinity = \"redirect\"",
        },
        Gw {
            id: "b",
            tier: 1,
            fleet_extra: "",
            route_extra: "affinity = \"redirect\"",
        },
    ];
    let procs = start(&gws, &redis, &o, &streams);
    wait_members(&procs);
    let (a, b) = (procs[0].0.addr(), procs[1].0.addr());

    let mut v = FlvStream::open(a, "/flv/s00.flv?token=v13wer");
    expect_live_start(&mut v, T);
    // A announces its pull at its next heartbeat.
    wait_until("A's pull is announced", T, || {
        redis
            .command("HEXISTS {streamgate-fleet}:pulls:lo:s00 a")
            .as_deref()
            == Some(":1")
    });
    let r = get(b, "/flv/s00.flv?token=v13wer", "");
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location").unwrap_or_default(),
        format!("http://{a}/flv/s00.flv?token=v13wer&sg_hop=1"),
        "same path and query, marked as redirected"
    );
    // Following it: A serves (it never redirects a redirected viewer, nor to itself).
    let mut followed = FlvStream::open(a, "/flv/s00.flv?token=v13wer&sg_hop=1");
    expect_live_start(&mut followed, T);
    // With the hop parameter, B serves the viewer itself.
    let mut at_b = FlvStream::open(b, "/flv/s00.flv?token=v13wer&sg_hop=1");
    expect_live_start(&mut at_b, T);
    drop(v);
}

#[test]
fn a_pull_moves_from_the_node_to_a_gateway_that_joins_the_fleet() {
    let redis = Redis::start();
    let (o, _media) = origin_with_streams(1);
    let streams = stream_names(1);
    let edge = Gw {
        id: "edge",
        tier: 2,
        fleet_extra: "",
        route_extra: "",
    };
    let (edge, _d) = gateway(&config(&edge, &redis, &o, &streams));
    // Alone in the fleet: the tier-2 gateway pulls from the node.
    let mut v = FlvStream::open(edge.addr(), "/flv/s00.flv?token=v13wer");
    expect_live_start(&mut v, T);
    assert_eq!(
        upstreams(edge.addr()).get("s00").map(String::as_str),
        Some("node:origin")
    );
    // A tier-1 gateway joins: at its next keyframe the pull moves there, the viewer stays.
    let mid = Gw {
        id: "mid",
        tier: 1,
        fleet_extra: "",
        route_extra: "",
    };
    let (mid, _d2) = gateway(&config(&mid, &redis, &o, &streams));
    wait_until("the edge pulls through the tier-1 gateway", T, || {
        upstreams(edge.addr()).get("s00").map(String::as_str) == Some("gw:mid")
    });
    wait_until("the node serves only the tier-1 gateway", T, || {
        node_clients(&o).get("s00") == Some(&1)
            && upstreams(mid.addr()).get("s00").map(String::as_str) == Some("node:origin")
    });
    let more = v.tags_for(Duration::from_secs(2));
    assert!(
        more.iter().any(|t| t.is_keyframe()),
        "the viewer plays on across the move"
    );
}
