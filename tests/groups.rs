//! Node groups (`[[groups]]`) against real processes: `streamgate origin` nodes (counted at the
//! origins, from their `/stats` or from which origin's file came back), and scripted nodes
//! where a test needs answers held open (bounded load, least_conn).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::api::{send, ADMIN};
use common::upstream::{After, Reply, Upstream};
use common::{gateway, get, open_stream, origin, wait_until, Proc, READY_TIMEOUT};

const T: Duration = Duration::from_secs(30);

/// A keep-alive HTTP/1.1 client: thousands of requests without a connection each.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(READY_TIMEOUT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        Self { s, buf: Vec::new() }
    }

    /// `GET path`: the status, the `Location` and the body.
    fn get(&mut self, path: &str) -> (u16, Option<String>, Vec<u8>) {
        self.s
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .expect("write");
        let mut tmp = [0u8; 16384];
        let end = loop {
            if let Some(e) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break e + 4;
            }
            let n = self.s.read(&mut tmp).expect("read");
            assert!(n > 0, "closed before the head");
            self.buf.extend_from_slice(&tmp[..n]);
        };
        let head = common::parse_response(&self.buf[..end]);
        let len: usize = head
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("a content length");
        while self.buf.len() < end + len {
            let n = self.s.read(&mut tmp).expect("read");
            assert!(n > 0, "closed in the body");
            self.buf.extend_from_slice(&tmp[..n]);
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        let location = head.header("location").map(str::to_string);
        (head.status, location, body)
    }
}

/// A media directory whose `/files/` hold `id.txt` saying `name`, and `k{i}.txt` (also saying
/// `name`) for `i` in `0..keys`: which origin answered shows in the body.
fn media(name: &str, keys: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("id.txt"), name).expect("write");
    for i in 0..keys {
        std::fs::write(d.path().join(format!("k{i}.txt")), name).expect("write");
    }
    d
}

/// Bytes of `/files/` bodies the origin has sent (its `/stats`).
fn file_bytes(o: &Proc) -> u64 {
    get(o.addr(), "/stats", "").json()["file_bytes_sent"]
        .as_u64()
        .expect("file_bytes_sent")
}

fn nodes_toml(nodes: &[(&str, String)]) -> String {
    nodes
        .iter()
        .map(|(id, url)| format!("[[nodes]]\nid = \"{id}\"\nurl = \"{url}\"\n"))
        .collect()
}

const HEAD: &str = "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"2s\"\n\
    [upstream]\nconnect_timeout = \"2s\"\nresponse_header_timeout = \"10s\"\nbody_idle_timeout = \"30s\"\n\
    [admin]\ntoken = \"adm1n\"\n[log]\naccess = \"off\"\n";

fn groups_api(addr: SocketAddr) -> serde_json::Value {
    let r = get(addr, "/api/v1/groups", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The group's member `node` as `GET /api/v1/groups` shows it.
fn member(addr: SocketAddr, group: &str, node: &str) -> serde_json::Value {
    groups_api(addr)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["id"] == group)
        .and_then(|g| {
            g["members"]
                .as_array()
                .expect("members")
                .iter()
                .find(|m| m["node"] == node)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no member {node} in {group}"))
}

fn in_flight(addr: SocketAddr, group: &str) -> u64 {
    groups_api(addr)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["id"] == group)
        .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
        .map(|m| m["in_flight"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn round_robin_spreads_evenly_and_by_weight_counted_at_the_origins() {
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| media(n, 0)).collect();
    let origins: Vec<Proc> = dirs.iter().map(|d| origin(d.path())).collect();
    let ids = ["a", "b", "c"];
    let nodes: Vec<(&str, String)> = ids
        .iter()
        .zip(&origins)
        .map(|(id, o)| (*id, format!("http://{}", o.addr())))
        .collect();
    let toml = format!(
        "{HEAD}{}\
         [[groups]]\nid = \"even\"\nmembers = [\"a\", \"b\", \"c\"]\n\
         [[groups]]\nid = \"weighted\"\nmembers = [{{ node = \"a\", weight = 1 }}, {{ node = \"b\", weight = 2 }}, {{ node = \"c\", weight = 3 }}]\n\
         [[routes]]\npath = \"/even/{{*rest}}\"\naction = \"proxy\"\nupstream = \"/files/{{*rest}}\"\nto = \"even\"\n\
         [[routes]]\npath = \"/w/{{*rest}}\"\naction = \"proxy\"\nupstream = \"/files/{{*rest}}\"\nto = \"weighted\"\n",
        nodes_toml(&nodes)
    );
    let (gw, _d) = gateway(&toml);
    // Each answer is `id.txt`: one byte, so an origin's file bytes are its request count.
    let mut client = Client::new(gw.addr());
    for (prefix, shares) in [("/even", [1u64, 1, 1]), ("/w", [1, 2, 3])] {
        let before: Vec<u64> = origins.iter().map(file_bytes).collect();
        for _ in 0..3000 {
            let (status, _, body) = client.get(&format!("{prefix}/id.txt"));
            assert_eq!(status, 200);
            assert_eq!(body.len(), 1);
        }
        let counts: Vec<u64> = origins
            .iter()
            .zip(&before)
            .map(|(o, b)| file_bytes(o) - b)
            .collect();
        assert_eq!(counts.iter().sum::<u64>(), 3000, "{counts:?}");
        let total: u64 = shares.iter().sum();
        for (c, s) in counts.iter().zip(shares) {
            let want = 3000 * s / total;
            // Within ±5 % of the share (smooth weighted round robin gives it exactly).
            assert!(c.abs_diff(want) * 20 <= want, "{prefix}: {counts:?}");
        }
    }
    // The admin API shows the picks per member.
    let picks: Vec<u64> = ids
        .iter()
        .map(|id| {
            member(gw.addr(), "weighted", id)["picks"]
                .as_u64()
                .expect("picks")
        })
        .collect();
    assert_eq!(picks, [500, 1000, 1500]);
    // And /metrics, one series per member.
    let m = get(gw.addr(), "/metrics", ADMIN).text();
    for (id, n) in [("a", 500), ("b", 1000), ("c", 1500)] {
        let line =
            format!("streamgate_group_member_picks_total{{group=\"weighted\",node=\"{id}\"}} {n}");
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
        let line = format!("streamgate_group_member_in_flight{{group=\"even\",node=\"{id}\"}} 0");
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }
}

#[test]
fn hash_keeps_each_path_on_one_member_and_a_removed_member_moves_only_its_keys() {
    const KEYS: usize = 3000;
    let names = ["a", "b", "c"];
    let dirs: Vec<_> = names.iter().map(|n| media(n, KEYS)).collect();
    let origins: Vec<Proc> = dirs.iter().map(|d| origin(d.path())).collect();
    let nodes: Vec<(&str, String)> = names
        .iter()
        .zip(&origins)
        .map(|(id, o)| (*id, format!("http://{}", o.addr())))
        .collect();
    let config = |members: &str| {
        format!(
            "{HEAD}{}\
             [[groups]]\nid = \"vod\"\npolicy = \"hash\"\nmembers = [{members}]\n\
             [[routes]]\npath = \"/vod/{{*rest}}\"\naction = \"proxy\"\nupstream = \"/files/{{*rest}}\"\nto = \"vod\"\n\
             [[routes]]\npath = \"/r/{{*rest}}\"\naction = \"redirect\"\nupstream = \"/files/{{*rest}}\"\nto = \"vod\"\n",
            nodes_toml(&nodes)
        )
    };
    let (gw, dir) = gateway(&config("\"a\", \"b\", \"c\""));
    let mut client = Client::new(gw.addr());
    let who = |client: &mut Client, i: usize| {
        let (status, _, body) = client.get(&format!("/vod/k{i}.txt"));
        assert_eq!(status, 200);
        String::from_utf8(body).expect("utf-8")
    };
    let first: Vec<String> = (0..KEYS).map(|i| who(&mut client, i)).collect();
    // Every request for a path goes to the same member.
    for i in (0..KEYS).step_by(10) {
        assert_eq!(who(&mut client, i), first[i], "k{i} moved");
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    for n in &first {
        *per.entry(n.as_str()).or_default() += 1;
    }
    for n in names {
        let c = per.get(n).copied().unwrap_or(0);
        assert!((700..=1300).contains(&c), "{per:?}");
    }
    // A redirect route over the same group sends the client to the member holding the file.
    let (status, location, _) = client.get("/r/k7.txt");
    assert_eq!(status, 302);
    let owner = names.iter().position(|n| *n == first[7]).expect("owner");
    assert_eq!(
        location.as_deref(),
        Some(format!("http://{}/files/k7.txt", origins[owner].addr()).as_str())
    );

    // Remove "b" by hot reload: its keys move, no other key does.
    std::fs::write(dir.path().join("streamgate.toml"), config("\"a\", \"c\"")).expect("write");
    let r = send(gw.addr(), "POST", "/api/v1/reload", ADMIN, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut client = Client::new(gw.addr());
    let mut moved = 0;
    for (i, before) in first.iter().enumerate() {
        let after = who(&mut client, i);
        if before == "b" {
            assert_ne!(after, "b");
            moved += 1;
        } else {
            assert_eq!(&after, before, "k{i} was not b's and moved");
        }
    }
    assert_eq!(moved, per["b"]);
    assert!((700..=1300).contains(&moved), "{moved}");
    let g = &groups_api(gw.addr())["groups"][0];
    assert_eq!(g["members"].as_array().map(Vec::len), Some(2));
}

/// A scripted node answering `/slow` with a body that starts and then waits (a long download
/// in progress), everything else with its name at once.
fn slow_node(name: &'static str) -> Upstream {
    Upstream::start(move |seen| {
        if seen.target.contains("/slow") {
            Reply::Chunks {
                pieces: vec![
                    (Duration::ZERO, name.as_bytes().to_vec()),
                    (Duration::from_secs(600), b"late".to_vec()),
                ],
                then: After::End,
            }
        } else {
            Reply::Ok {
                headers: Vec::new(),
                body: name.as_bytes().to_vec(),
            }
        }
    })
}

/// Opens `path` and reads until the first body bytes arrive; returns the connection (the
/// request stays in flight until it is dropped) and those bytes.
fn hold(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let (head, mut s, mut rest) = open_stream(addr, path);
    assert_eq!(head.status, 200);
    let mut tmp = [0u8; 1024];
    // Chunked: "<len>\r\n<name>\r\n".
    while rest.windows(2).filter(|w| w == b"\r\n").nth(1).is_none() {
        let n = s.read(&mut tmp).expect("read");
        assert!(n > 0);
        rest.extend_from_slice(&tmp[..n]);
    }
    let text = String::from_utf8_lossy(&rest).to_string();
    let name = text.split("\r\n").nth(1).unwrap_or_default().to_string();
    (s, name)
}

#[test]
fn a_hot_key_spills_to_the_next_member_once_its_member_is_over_the_bound() {
    let names = ["a", "b", "c"];
    let nodes_up: Vec<Upstream> = names.iter().map(|n| slow_node(n)).collect();
    let nodes: Vec<(&str, String)> = names
        .iter()
        .zip(&nodes_up)
        .map(|(id, u)| (*id, u.url()))
        .collect();
    let toml = format!(
        "{HEAD}{}\
         [[groups]]\nid = \"vod\"\npolicy = \"hash\"\nload_factor = 1.25\nmembers = [\"a\", \"b\", \"c\"]\n\
         [[routes]]\npath = \"/vod/{{*rest}}\"\naction = \"proxy\"\nto = \"vod\"\n",
        nodes_toml(&nodes)
    );
    let (gw, _d) = gateway(&toml);
    let addr = gw.addr();
    // Nothing in flight: the hot key's own member takes it.
    let (c, owner) = hold(addr, "/vod/slow/hot.mp4");
    drop(c);
    wait_until("the first download is over", T, || {
        in_flight(addr, "vod") == 0
    });
    // Six slow downloads of the hot key at once, each in flight before the next starts.
    let mut held = Vec::new();
    for l in 0..6u64 {
        let (c, name) = hold(addr, "/vod/slow/hot.mp4");
        wait_until("the download counts in flight", T, || {
            in_flight(addr, "vod") == l + 1
        });
        held.push((c, name));
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    for (_, n) in &held {
        *per.entry(n.as_str()).or_default() += 1;
    }
    // With 6 in flight the bound is ceil(1.25 × 6 / 3) = 3: the owner holds no more, and the
    // rest spilled to the other members.
    assert!(per[owner.as_str()] <= 3, "{per:?}");
    assert!(per.len() >= 2, "the hot key spilled: {per:?}");
    for n in names {
        assert!(per.get(n).copied().unwrap_or(0) <= 3, "{per:?}");
        let m = member(addr, "vod", n);
        assert_eq!(
            m["in_flight"].as_u64(),
            Some(per.get(n).copied().unwrap_or(0) as u64)
        );
    }
    // Counted at the nodes too: every slow request reached the member that answered it.
    let seen: usize = nodes_up
        .iter()
        .map(|u| {
            u.requests()
                .iter()
                .filter(|r| r.target.contains("/slow"))
                .count()
        })
        .sum();
    assert_eq!(seen, 7);
    // The viewers leave: the load goes, and the key is back on its member.
    drop(held);
    wait_until("the downloads are over", T, || in_flight(addr, "vod") == 0);
    let (c, again) = hold(addr, "/vod/slow/hot.mp4");
    assert_eq!(again, owner);
    drop(c);
}

#[test]
fn least_conn_sends_new_requests_to_the_member_with_fewer_in_flight() {
    let a = slow_node("a");
    let b = slow_node("b");
    let toml = format!(
        "{HEAD}{}\
         [[groups]]\nid = \"pool\"\npolicy = \"least_conn\"\nmembers = [\"a\", \"b\"]\n\
         [[routes]]\npath = \"/p/{{*rest}}\"\naction = \"proxy\"\nto = \"pool\"\n",
        nodes_toml(&[("a", a.url()), ("b", b.url())])
    );
    let (gw, _d) = gateway(&toml);
    let addr = gw.addr();
    // One long download holds a member.
    let (c1, busy) = hold(addr, "/p/slow/1");
    wait_until("one in flight", T, || in_flight(addr, "pool") == 1);
    let idle = if busy == "a" { "b" } else { "a" };
    // Every short request meanwhile goes to the other one.
    let mut client = Client::new(addr);
    for _ in 0..20 {
        let (status, _, body) = client.get("/p/x");
        assert_eq!(status, 200);
        assert_eq!(body, idle.as_bytes());
    }
    let fast = |u: &Upstream| u.requests().iter().filter(|r| r.target == "/p/x").count();
    let (on_idle, on_busy) = if idle == "a" {
        (fast(&a), fast(&b))
    } else {
        (fast(&b), fast(&a))
    };
    assert_eq!((on_idle, on_busy), (20, 0));
    // A second long download goes to the idle one; then both hold one and they alternate.
    let (c2, second) = hold(addr, "/p/slow/2");
    assert_eq!(second, idle);
    wait_until("two in flight", T, || in_flight(addr, "pool") == 2);
    let firsts: Vec<Vec<u8>> = (0..4).map(|_| client.get("/p/x").2).collect();
    assert_eq!(
        firsts.iter().filter(|b| b == &b"a").count(),
        2,
        "{firsts:?}"
    );
    drop((c1, c2));
}

#[test]
fn drained_and_stopped_members_are_skipped_without_a_viewer_error_and_none_left_is_503() {
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| media(n, 0)).collect();
    let mut origins: Vec<Option<Proc>> = dirs.iter().map(|d| Some(origin(d.path()))).collect();
    let nodes: Vec<(&str, String)> = ["a", "b", "c"]
        .iter()
        .zip(&origins)
        .map(|(id, o)| {
            (
                *id,
                format!("http://{}", o.as_ref().expect("origin").addr()),
            )
        })
        .collect();
    let toml = format!(
        "{}{}\
         [[groups]]\nid = \"pool\"\nmembers = [\"a\", \"b\", \"c\"]\n\
         [[routes]]\npath = \"/p/{{*rest}}\"\naction = \"proxy\"\nupstream = \"/files/{{*rest}}\"\nto = \"pool\"\n",
        HEAD.replace("[admin]", "max_fails = 1\nfail_timeout = \"60s\"\n[admin]"),
        nodes_toml(&nodes)
    );
    let (gw, _d) = gateway(&toml);
    let addr = gw.addr();
    let mut client = Client::new(addr);
    for _ in 0..6 {
        assert_eq!(client.get("/p/id.txt").0, 200);
    }
    // Drain c: nothing new goes to it while the mark stands.
    let r = send(addr, "POST", "/api/v1/nodes/c/drain", ADMIN, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..10 {
        let (status, _, body) = client.get("/p/id.txt");
        assert_eq!(status, 200);
        assert_ne!(body, b"c", "a drained member was picked");
    }
    assert_eq!(member(addr, "pool", "c")["draining"], true);
    let r = send(addr, "POST", "/api/v1/nodes/c/undrain", ADMIN, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // Stop b: every request still succeeds (the failed attempt moves on to the next member),
    // and once b is marked down it is no longer picked.
    drop(origins[1].take());
    let mut served = Vec::new();
    for _ in 0..30 {
        let (status, _, body) = client.get("/p/id.txt");
        assert_eq!(status, 200, "a viewer saw the stopped member");
        served.push(String::from_utf8(body).expect("utf-8"));
    }
    assert!(served.iter().all(|n| n != "b"));
    assert!(served.iter().any(|n| n == "a") && served.iter().any(|n| n == "c"));
    assert_eq!(member(addr, "pool", "b")["state"], "cooling_down");
    // Stop the others: once they are marked down, the route answers 503 node_unavailable.
    drop(origins[0].take());
    drop(origins[2].take());
    wait_until("503 node_unavailable", T, || {
        let r = get(addr, "/p/id.txt", "");
        r.status == 503 && r.json()["error"] == "node_unavailable"
    });
}

#[test]
fn a_live_group_hashed_on_stream_pulls_each_stream_from_exactly_one_member() {
    // Six streams, every one on every origin.
    let media = tempfile::tempdir().expect("tempdir");
    let sample = common::media_dir().join("cam1.flv");
    let streams: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for s in &streams {
        std::fs::copy(&sample, media.path().join(format!("{s}.flv"))).expect("copy");
    }
    let names = ["a", "b", "c"];
    let origins: Vec<Proc> = names.iter().map(|_| origin(media.path())).collect();
    let nodes: Vec<(&str, String)> = names
        .iter()
        .zip(&origins)
        .map(|(id, o)| (*id, format!("http://{}", o.addr())))
        .collect();
    let toml = format!(
        "{HEAD}{}\
         [[groups]]\nid = \"edges\"\npolicy = \"hash\"\nkey = \"{{stream}}\"\nmembers = [\"a\", \"b\", \"c\"]\n\
         [[routes]]\npath = \"/live/{{stream}}.flv\"\naction = \"live\"\nto = \"edges\"\nstreams = [\"s*\"]\n",
        nodes_toml(&nodes)
    );
    let (gw, _d) = gateway(&toml);
    let addr = gw.addr();
    // Three viewers per stream, opened one stream after another.
    let mut viewers = Vec::new();
    for s in &streams {
        for _ in 0..3 {
            let (head, conn, _) = open_stream(addr, &format!("/live/{s}.flv"));
            assert_eq!(head.status, 200);
            viewers.push(conn);
        }
    }
    let clients = |o: &Proc, s: &str| -> u64 {
        get(o.addr(), "/stats", "").json()["streams"][s]["clients"]
            .as_u64()
            .unwrap_or(0)
    };
    // Each stream is pulled once, from one member; the streams spread over the members.
    let mut used = std::collections::HashSet::new();
    for s in &streams {
        wait_until(&format!("{s} pulled"), T, || {
            origins.iter().map(|o| clients(o, s)).sum::<u64>() == 1
        });
        let on: Vec<usize> = (0..3).filter(|&i| clients(&origins[i], s) == 1).collect();
        assert_eq!(on.len(), 1, "{s} is pulled from {on:?}");
        used.insert(on[0]);
    }
    assert!(used.len() >= 2, "six streams on one member: {used:?}");
    drop(viewers);
}
