//! The Redis registry at fleet scale, end to end with a real `redis-server` and real gateways:
//! one change costs every gateway a constant number of Redis reads whatever the registry's
//! size; racing writes from two gateways leave no orphan record; a crashed node's streams go
//! after their lease; a write that timed out never lands later; a gateway that missed part of
//! the change log reloads; a Sentinel failover is followed.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::{put_node, put_stream, send, ADMIN};
use common::redis::{play, Redis, Sentinel};
use common::upstream::{echo, Upstream};
use common::{gateway, get, wait_until, Proc};

const PREFIX: &str = "{fleet}";
const LIMIT: Duration = Duration::from_secs(15);

fn config(redis_url: &str, extra: &str) -> String {
    common::redis::gateway_config(redis_url, "fleet", extra)
}

/// Whether the gateway's registry (its local snapshot, no Redis involved) lists `stream`.
fn listed(addr: SocketAddr, stream: &str) -> bool {
    get(addr, &format!("/api/v1/streams/{stream}"), ADMIN).json()["registered"] == true
}

fn redis_connected(addr: SocketAddr) -> Option<f64> {
    let r = get(addr, "/metrics", ADMIN);
    r.text().lines().find_map(|l| {
        l.strip_prefix("streamgate_registry_redis_connected ")
            .and_then(|v| v.trim().parse().ok())
    })
}

fn wait_connected(gws: &[SocketAddr]) {
    for g in gws {
        wait_until("the gateway in sync with redis", LIMIT, || {
            redis_connected(*g) == Some(1.0)
        });
    }
}

fn srs_publish(addr: SocketAddr, node: &str, stream: &str) -> common::RawResponse {
    send(
        addr,
        "POST",
        &format!("/hooks/srs?node={node}&secret=h00k"),
        "",
        format!(r#"{{"action":"on_publish","client_id":1,"app":"live","stream":"{stream}"}}"#)
            .as_bytes(),
    )
}

fn nginx_rtmp(addr: SocketAddr, call: &str, name: &str) -> common::RawResponse {
    send(
        addr,
        "POST",
        "/hooks/nginx-rtmp?node=n1&secret=h00k",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        format!("call={call}&app=live&name={name}&clientid=9").as_bytes(),
    )
}

/// `INFO commandstats` as command → calls, plus `total_net_output_bytes`.
fn command_stats(redis: &Redis) -> (HashMap<String, u64>, u64) {
    let mut c = redis.conn();
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .expect("info");
    let calls = text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect();
    let stats: String = redis::cmd("INFO").arg("stats").query(&mut c).expect("info");
    let out = stats
        .lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_net_output_bytes");
    (calls, out)
}

/// Commands that read registry state (the scripts' reads included: Redis counts commands run
/// inside scripts too).
const READS: &[&str] = &[
    "xread",
    "xrange",
    "xinfo",
    "hgetall",
    "hget",
    "hexists",
    "hkeys",
    "hscan",
    "get",
    "mget",
    "smembers",
    "zrange",
    "zrangebyscore",
    "zscore",
    "pttl",
];

#[test]
fn one_announce_costs_each_gateway_a_constant_number_of_reads() {
    let redis = Redis::start();
    let node = Upstream::start(echo);
    // A long idle check, so that the only reads in the window are the ones the announces cause.
    let cfg = config(&redis.url(), r#"resync_interval = "60s""#);
    let gws: Vec<(Proc, tempfile::TempDir)> = (0..3).map(|_| gateway(&cfg)).collect();
    let addrs: Vec<SocketAddr> = gws.iter().map(|(g, _)| g.addr()).collect();
    wait_connected(&addrs);
    let (a, c) = (addrs[0], addrs[2]);
    wait_until("n1 registered", LIMIT, || {
        put_node(a, "n1", &node.url(), "600").status == 200
    });
    // A registry of 500 streams.
    const SIZE: usize = 500;
    for i in 0..SIZE {
        let r = put_stream(a, &format!("bulk{i}"), "n1");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_until("the last bulk stream on C", LIMIT, || {
        listed(c, &format!("bulk{}", SIZE - 1))
    });
    let (before, out_before) = command_stats(&redis);

    const N: usize = 30;
    for i in 0..N {
        let via = addrs[i % 3];
        let r = put_stream(via, &format!("cam{i}"), "n1");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for g in &addrs {
        wait_until("every announce on every gateway", LIMIT, || {
            (0..N).all(|i| listed(*g, &format!("cam{i}")))
        });
    }
    let (after, out_after) = command_stats(&redis);
    let delta = |c: &str| after.get(c).unwrap_or(&0) - before.get(c).unwrap_or(&0);
    let reads: u64 = READS.iter().map(|c| delta(c)).sum();
    let per_gateway_out = (out_after - out_before) / (N as u64 * 3);
    eprintln!(
        "{N} announces, 3 gateways, {SIZE} streams: {reads} reads (xread {}), {per_gateway_out} \
         bytes out per announce per gateway",
        delta("xread")
    );
    assert_eq!(delta("hgetall"), 0, "no gateway reloaded the registry");
    assert!(
        delta("xread") <= (N * 3) as u64 + 6,
        "one log read per change"
    );
    // The writer's script: HEXISTS, HGET, ZSCORE, GET ×2; each gateway: one XREAD.
    assert!(
        reads <= (N * 10) as u64,
        "reads per announce bounded by a constant: {reads}"
    );
    // A full reload of 500 records sends well over 10 kB; a log entry is ~150 bytes.
    assert!(
        per_gateway_out < 1_000,
        "{per_gateway_out} bytes per announce per gateway"
    );
}

#[test]
fn racing_node_removal_and_announces_leave_no_orphan_record() {
    let redis = Redis::start();
    let node = Upstream::start(echo);
    let cfg = config(&redis.url(), "");
    let (gw_a, _da) = gateway(&cfg);
    let (gw_b, _db) = gateway(&cfg);
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_connected(&[a, b]);
    let url = node.url();
    let mut refused = 0;
    for round in 0..25 {
        assert_eq!(put_node(a, "n", &url, "60").status, 200);
        let announcer = {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                for k in 0..6 {
                    codes.push(put_stream(b, &format!("r{round}s{k}"), "n").status);
                    if k == 3 {
                        // A heartbeat from the other side, racing the removal too.
                        codes.push(put_node(b, "n", &url, "60").status);
                    }
                }
                codes
            })
        };
        std::thread::sleep(Duration::from_millis(round % 5));
        let r = send(a, "DELETE", "/api/v1/nodes/n", ADMIN, b"");
        assert!(r.status == 200 || r.status == 404, "{}", r.text());
        for code in announcer.join().expect("announcer") {
            assert!(code == 200 || code == 400, "announce answered {code}");
            refused += usize::from(code == 400);
        }
    }
    // In Redis: every record, index entry and lease belongs to a registered node.
    let mut c = redis.conn();
    let nodes: HashSet<String> = redis::cmd("HKEYS")
        .arg(format!("{PREFIX}:nodes"))
        .query(&mut c)
        .expect("nodes");
    let records: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{PREFIX}:streams"))
        .query(&mut c)
        .expect("records");
    for r in &records {
        let (_, n) = r.rsplit_once('/').expect("STREAM/NODE");
        assert!(nodes.contains(n), "orphan record {r} (nodes: {nodes:?})");
    }
    let index: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{PREFIX}:node:*"))
        .query(&mut c)
        .expect("index");
    for k in &index {
        let n = k.rsplit(':').next().expect("id");
        assert!(nodes.contains(n), "orphan index {k}");
        let members: Vec<String> = redis::cmd("SMEMBERS").arg(k).query(&mut c).expect("m");
        for s in members {
            assert!(records.contains(&format!("{s}/{n}")), "index {k} lists {s}");
        }
    }
    // Both gateways converge on what Redis holds.
    let mut want: Vec<String> = records
        .iter()
        .map(|r| r.rsplit_once('/').expect("r").0.to_string())
        .collect();
    want.sort();
    want.dedup();
    for g in [a, b] {
        wait_until("the gateway agrees with redis", LIMIT, || {
            let v = get(g, "/api/v1/streams", ADMIN).json();
            let names: Vec<String> = v["streams"]
                .as_array()
                .expect("streams")
                .iter()
                .map(|s| s["name"].as_str().expect("name").to_string())
                .collect();
            names == want
        });
    }
    eprintln!(
        "{} records left on {} nodes; {refused} announces refused (node removed first)",
        records.len(),
        nodes.len()
    );
}

#[test]
fn a_crashed_node_stops_resolving_after_its_stream_lease() {
    let redis = Redis::start();
    let node = Upstream::start(echo);
    let cfg = config(&redis.url(), r#"stream_lease = "2s""#);
    let (gw_a, _da) = gateway(&cfg);
    let (gw_b, _db) = gateway(&cfg);
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_connected(&[a, b]);
    // The node's TTL is long: what ends its streams below is their lease, not the node.
    assert_eq!(put_node(a, "n1", &node.url(), "600").status, 200);
    let r = srs_publish(a, "n1", "cam1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(nginx_rtmp(b, "publish", "cam2").status, 200);
    wait_until("cam1 on B", LIMIT, || play(b, "cam1") == 200);
    wait_until("cam2 on A", LIMIT, || play(a, "cam2") == 200);
    // Heartbeats renew the node's streams: both outlive their lease while they come.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(put_node(b, "n1", &node.url(), "600").status, 200);
        for g in [a, b] {
            assert_eq!(play(g, "cam1"), 200, "renewed by the heartbeat");
            assert_eq!(play(g, "cam2"), 200, "renewed by the heartbeat");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The node agent stops; nginx-rtmp's `on_update` keeps renewing cam2 alone. cam1's lease
    // runs out: 404 everywhere, while cam2 stays.
    let start = Instant::now();
    loop {
        assert_eq!(nginx_rtmp(a, "update", "cam2").status, 200);
        for g in [a, b] {
            assert_eq!(play(g, "cam2"), 200, "renewed by on_update");
        }
        if play(a, "cam1") == 404 && play(b, "cam1") == 404 {
            break;
        }
        assert!(start.elapsed() < LIMIT, "cam1 never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = get(b, "/hls/cam1/index.m3u8", "");
    assert_eq!(r.json()["error"], "stream_not_found");
    // A renewal never brings an expired record back.
    assert_eq!(nginx_rtmp(a, "update", "cam1").status, 200);
    assert_eq!(play(a, "cam1"), 404);
    // The media server crashes: no unpublish, no renewal. After the lease, 404 everywhere.
    for g in [a, b] {
        wait_until("cam2 gone after its lease", LIMIT, || {
            play(g, "cam2") == 404
        });
        let r = get(g, "/hls/cam2/index.m3u8", "");
        assert_eq!(r.json()["error"], "stream_not_found");
    }
    // And the reaper removed the record from Redis.
    let mut c = redis.conn();
    wait_until("the record reaped in redis", LIMIT, || {
        redis::cmd("HLEN")
            .arg(format!("{PREFIX}:streams"))
            .query::<u64>(&mut c)
            .expect("hlen")
            == 0
    });
}

#[test]
fn a_write_that_timed_out_never_lands_and_liveness_is_reported_as_routed() {
    let redis = Redis::start();
    let node = Upstream::start(echo);
    let cfg = config(&redis.url(), "");
    let (gw_a, _da) = gateway(&cfg);
    let (gw_b, _db) = gateway(&cfg);
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_connected(&[a, b]);
    assert_eq!(put_node(a, "n1", &node.url(), "600").status, 200);
    // n2 heartbeats with a short TTL; Redis will freeze before its next heartbeat is due.
    let n2_put = Instant::now();
    assert_eq!(put_node(a, "n2", &node.url(), "10").status, 200);
    assert_eq!(put_stream(a, "cam1", "n2").status, 200);
    wait_until("cam1 on B", LIMIT, || play(b, "cam1") == 200);

    redis.stop();
    let started = Instant::now();
    let r = srs_publish(a, "n1", "ghost");
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_ne!(r.json()["code"], 0);
    assert!(
        took < Duration::from_secs(10),
        "answered within its timeout"
    );
    // During the outage, past n2's TTL: routing keeps using n2 (no heartbeat can arrive), and
    // the admin API says so.
    for g in [a, b] {
        wait_until("the gateway notices redis is gone", LIMIT, || {
            redis_connected(g) == Some(0.0)
        });
    }
    // Past n2's TTL (the gateways lost Redis before it ran out).
    std::thread::sleep(
        (n2_put + Duration::from_secs(11)).saturating_duration_since(Instant::now()),
    );
    for g in [a, b] {
        assert_eq!(play(g, "cam1"), 200, "routing still uses n2");
        let s = get(g, "/api/v1/streams/cam1", ADMIN).json();
        assert_eq!(s["up_nodes"], serde_json::json!(["n2"]), "{s}");
        let n = get(g, "/api/v1/nodes/n2", ADMIN).json();
        assert_eq!(n["up"], true, "{n}");
    }

    redis.cont();
    wait_connected(&[a, b]);
    // A later write through B reaches A: A has read the log past anything the frozen Redis
    // could have run when it woke up.
    assert_eq!(put_node(b, "n2", &node.url(), "600").status, 200);
    assert_eq!(put_stream(b, "after", "n1").status, 200);
    wait_until("the later write on A", LIMIT, || play(a, "after") == 200);
    for g in [a, b] {
        assert_eq!(
            play(g, "ghost"),
            404,
            "the failed publish never took effect"
        );
    }
    let mut c = redis.conn();
    let exists: bool = redis::cmd("HEXISTS")
        .arg(format!("{PREFIX}:streams"))
        .arg("ghost/n1")
        .query(&mut c)
        .expect("hexists");
    assert!(!exists, "no ghost record in redis");
}

/// The deadline check itself, on the script, with deadlines on Redis's own clock.
#[test]
fn the_write_script_refuses_to_run_past_its_deadline() {
    let redis = Redis::start();
    let mut c = redis.conn();
    let keys: Vec<String> = ["nodes", "streams", "leases", "log", "epoch", "last"]
        .iter()
        .map(|k| format!("{{t}}:{k}"))
        .collect();
    let (secs, _): (i64, i64) = redis::cmd("TIME").query(&mut c).expect("time");
    let run = |c: &mut redis::Connection, deadline: i64, op: &[&str]| -> Vec<String> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(streamgate::registry::redis::WRITE_LUA).arg(6);
        for k in &keys {
            cmd.arg(k);
        }
        cmd.arg(deadline).arg("{t}:").arg(100);
        for a in op {
            cmd.arg(*a);
        }
        cmd.query(c).expect("eval")
    };
    let later = (secs + 60) * 1000;
    assert_eq!(run(&mut c, later, &["seed", "e1", "0"])[0], "ok");
    assert_eq!(
        run(
            &mut c,
            later,
            &["node", "n1", "http://127.0.0.1:1", "0", "0"]
        )[0],
        "ok"
    );
    let past = (secs - 1) * 1000;
    assert_eq!(run(&mut c, past, &["ann", "late", "n1", "0"])[0], "late");
    assert_eq!(run(&mut c, later, &["ann", "s1", "n1", "0"])[0], "ok");
    assert_eq!(run(&mut c, later, &["ann", "s2", "zz", "0"])[0], "unknown");
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("{t}:streams")
        .query(&mut c)
        .expect("k");
    assert_eq!(fields, vec!["s1/n1"], "the late write changed nothing");
    // A node from the writer's config file is not in Redis: the writer says so.
    assert_eq!(run(&mut c, later, &["ann", "s3", "cfg", "0", "1"])[0], "ok");
    let _: u64 = redis::cmd("HDEL")
        .arg("{t}:streams")
        .arg("s3/cfg")
        .query(&mut c)
        .expect("hdel");
    let log_len: u64 = redis::cmd("XLEN")
        .arg("{t}:log")
        .query(&mut c)
        .expect("xlen");
    assert_eq!(
        log_len, 4,
        "seed, node, s1, s3: the late write logged nothing"
    );
}

#[test]
fn a_gateway_that_missed_trimmed_log_entries_reloads_and_converges() {
    let redis = Redis::start();
    let node = Upstream::start(echo);
    // A long idle check: what detects the gap here is the next entry's `prev`.
    let cfg = config(&redis.url(), r#"resync_interval = "60s""#);
    let (gw_a, _da) = gateway(&cfg);
    let (gw_b, _db) = gateway(&cfg);
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_connected(&[a, b]);
    assert_eq!(put_node(a, "n1", &node.url(), "600").status, 200);
    wait_until("n1 on B", LIMIT, || {
        get(b, "/api/v1/nodes/n1", ADMIN).status == 200
    });
    // B freezes: its pending XREAD gets at most the first of the next entries.
    signal(&gw_b, "-STOP");
    for i in 0..5 {
        assert_eq!(put_stream(a, &format!("missed{i}"), "n1").status, 200);
    }
    let mut c = redis.conn();
    let _: u64 = redis::cmd("XTRIM")
        .arg(format!("{PREFIX}:log"))
        .arg("MAXLEN")
        .arg(0)
        .query(&mut c)
        .expect("xtrim");
    signal(&gw_b, "-CONT");
    // The next change's `prev` is not B's last entry: B reloads in full and has everything.
    assert_eq!(put_stream(a, "next", "n1").status, 200);
    wait_until("B converged after the gap", LIMIT, || {
        (0..5).all(|i| listed(b, &format!("missed{i}"))) && listed(b, "next")
    });
    assert_eq!(play(b, "missed3"), 200);
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.pid().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn a_sentinel_failover_is_followed() {
    let mut master = Redis::start();
    let replica = Redis::replica_of(&master);
    let sentinel = Sentinel::start(&master);
    // The replica has caught up with the (empty) master before we rely on it.
    wait_until("replication link up", LIMIT, || {
        let mut c = replica.conn();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut c)
            .expect("info");
        info.contains("master_link_status:up")
    });
    let node = Upstream::start(echo);
    let cfg = config(&sentinel.url(), "");
    let (gw_a, _da) = gateway(&cfg);
    let (gw_b, _db) = gateway(&cfg);
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_connected(&[a, b]);
    assert_eq!(put_node(a, "n1", &node.url(), "600").status, 200);
    assert_eq!(put_stream(a, "before", "n1").status, 200);
    wait_until("before on B", LIMIT, || play(b, "before") == 200);
    // Let the replica have it, then kill the master by its PID.
    let mut c = master.conn();
    let _: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut c)
        .expect("wait");
    master.kill();
    wait_until(
        "sentinel promotes the replica",
        Duration::from_secs(30),
        || sentinel.master_port() == Some(replica.port),
    );
    // A write after the failover succeeds (on the new master) and both gateways see it.
    wait_until(
        "a write through A after failover",
        Duration::from_secs(30),
        || put_stream(a, "after", "n1").status == 200,
    );
    for g in [a, b] {
        wait_until("after on every gateway", LIMIT, || play(g, "after") == 200);
        assert_eq!(play(g, "before"), 200);
    }
}

#[test]
fn a_redis_cluster_holds_the_registry_in_one_slot() {
    // A one-node cluster owning every slot: enough to run the cluster client, its routing of
    // the scripts (by their first key) and the log reads.
    let redis = Redis::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]);
    let mut c = redis.conn();
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query(&mut c)
        .expect("addslots");
    wait_until("cluster ok", LIMIT, || {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut c)
            .expect("info");
        info.contains("cluster_state:ok")
    });
    let node = Upstream::start(echo);
    let cfg = config(&format!("redis+cluster://127.0.0.1:{}", redis.port), "");
    let (gw_a, _da) = gateway(&cfg);
    let (gw_b, _db) = gateway(&cfg);
    let (a, b) = (gw_a.addr(), gw_b.addr());
    wait_connected(&[a, b]);
    assert_eq!(put_node(a, "n1", &node.url(), "600").status, 200);
    assert_eq!(put_stream(a, "cam1", "n1").status, 200);
    wait_until("cam1 on B", LIMIT, || play(b, "cam1") == 200);
    assert_eq!(
        send(b, "DELETE", "/api/v1/streams/cam1", ADMIN, b"").status,
        200
    );
    wait_until("cam1 withdrawn on A", LIMIT, || play(a, "cam1") == 404);
    // Every key of the registry is in the slot of its hash tag.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("keys");
    assert!(!keys.is_empty());
    for k in keys {
        assert!(k.starts_with("{fleet}:"), "{k}");
    }
}
