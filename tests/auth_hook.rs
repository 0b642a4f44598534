//! The auth hook (`auth = "hook"`) end to end: a real gateway process, a scripted hook service
//! and a scripted media node (both `common::upstream::Upstream`). Allow and deny, the decision
//! cache across an HLS player's segment requests, single-flight for concurrent viewers, a hook
//! that is down or slow (refused, or allowed with `fail_open`), the SRS answer format, and the
//! viewer's credential never reaching the node.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::upstream::{echo, Reply, Seen, Upstream};
use common::{gateway, get, RawResponse};

/// A gateway with `/hls/{stream}/{*rest}` proxied to `node` and `/go/{stream}/{*rest}`
/// redirected to it, both behind the hook at `hook_url`; `hook_extra` adds `[auth.hook]` keys.
fn config(hook_url: &str, node: &str, hook_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth.hook]
url = "{hook_url}/check"
{hook_extra}

[[nodes]]
id = "a"
url = "{node}"

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
to = "a"
auth = "hook"

[[routes]]
path = "/go/{{stream}}/{{*rest}}"
action = "redirect"
to = "a"
auth = "hook"
"#
    )
}

/// The JSON a hook call carried.
fn body(seen: &Seen) -> serde_json::Value {
    serde_json::from_slice(&seen.body).unwrap_or(serde_json::Value::Null)
}

/// A `format = "json"` hook: 200 for the token "good", 403 for anything else.
fn json_hook(req: &Seen) -> Reply {
    if body(req)["token"] == "good" {
        Reply::Ok {
            headers: vec![],
            body: b"{}".to_vec(),
        }
    } else {
        Reply::Status {
            status: 403,
            headers: vec![],
            body: b"no".to_vec(),
        }
    }
}

fn assert_refused(r: &RawResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
}

/// A loopback port with nothing listening on it: connections are refused.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[test]
fn the_hook_allows_and_denies_and_the_credential_stays_here() {
    let hook = Upstream::start(json_hook);
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&hook.url(), &node.url(), ""));

    // Allowed with ?token=: the node sees the other parameters, not the token.
    let r = get(
        gw.addr(),
        "/hls/cam1/index.m3u8?quality=hd&token=good",
        "Referer: https://player.example/\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/hls/cam1/index.m3u8?quality=hd");
    let calls = hook.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].target, "/check");
    assert_eq!(
        body(&calls[0]),
        serde_json::json!({
            "action": "play", "route": "/hls/", "stream": "cam1",
            "path": "/hls/cam1/index.m3u8", "client_ip": "127.0.0.1",
            "params": {"quality": "hd"}, "token": "good",
        })
    );

    // Allowed with a Bearer header: it does not reach the node either.
    let r = get(
        gw.addr(),
        "/hls/cam2/index.m3u8",
        "Authorization: Bearer good\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["headers"].get("authorization").is_none(),
        "{}",
        r.text()
    );
    assert_eq!(body(&hook.requests()[1])["token"], "good");

    // A redirect's Location carries no credential.
    let r = get(gw.addr(), "/go/cam1/a.ts?token=good&x=1", "");
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").expect("location");
    assert!(location.ends_with("/go/cam1/a.ts?x=1"), "{location}");

    // Denied: 403 with a credential, 401 without one; the node is not contacted.
    let before = node.requests().len();
    assert_refused(
        &get(gw.addr(), "/hls/cam1/index.m3u8?token=bad", ""),
        403,
        "forbidden",
    );
    assert_refused(
        &get(
            gw.addr(),
            "/hls/cam1/index.m3u8",
            "Authorization: Bearer bad\r\n",
        ),
        403,
        "forbidden",
    );
    let r = get(gw.addr(), "/hls/cam1/index.m3u8", "");
    assert_refused(&r, 401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(node.requests().len(), before);
    assert_eq!(
        body(hook.requests().last().expect("a call"))["token"],
        serde_json::Value::Null
    );

    // Nothing the node saw carries the credential, and neither does the access log.
    for seen in node.requests() {
        assert!(!seen.target.contains("token"), "{seen:?}");
        assert!(seen.header("authorization").is_none(), "{seen:?}");
    }
    common::wait_until("access lines", common::READY_TIMEOUT, || {
        gw.logs().matches(" status=").count() >= 6
    });
    assert!(!gw.logs().contains("token=good"), "{}", gw.logs());
}

#[test]
fn one_hook_call_covers_a_players_segment_requests() {
    let hook = Upstream::start(json_hook);
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&hook.url(), &node.url(), ""));
    let mut paths = vec!["/hls/cam1/index.m3u8".to_string()];
    paths.extend((0..24).map(|i| format!("/hls/cam1/seg{i}.ts")));
    for p in &paths {
        let r = get(gw.addr(), &format!("{p}?token=good"), "");
        assert_eq!(r.status, 200, "{p}: {}", r.text());
    }
    assert_eq!(
        hook.requests().len(),
        1,
        "one call for {} requests",
        paths.len()
    );
    assert_eq!(node.requests().len(), paths.len());
    // A denial is cached too (for the shorter deny_ttl).
    for _ in 0..5 {
        assert_refused(
            &get(gw.addr(), "/hls/cam1/seg1.ts?token=bad", ""),
            403,
            "forbidden",
        );
    }
    assert_eq!(hook.requests().len(), 2);
    // Another stream is another decision.
    assert_eq!(
        get(gw.addr(), "/hls/cam2/seg1.ts?token=good", "").status,
        200
    );
    assert_eq!(hook.requests().len(), 3);
}

#[test]
fn concurrent_identical_checks_share_one_hook_call() {
    // A slow hook: every viewer arrives while the first check is still being asked.
    let hook =
        Upstream::start(|req| Reply::Delayed(Duration::from_millis(700), Box::new(json_hook(req))));
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&hook.url(), &node.url(), ""));
    let addr = gw.addr();
    let n = 20;
    let start = Arc::new(Barrier::new(n));
    let viewers: Vec<_> = (0..n)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                get(addr, &format!("/hls/cam1/seg{i}.ts?token=good"), "").status
            })
        })
        .collect();
    for v in viewers {
        assert_eq!(v.join().expect("viewer thread"), 200);
    }
    assert_eq!(hook.requests().len(), 1);
    assert_eq!(node.requests().len(), n);
}

#[test]
fn a_hook_that_is_down_or_slow_refuses_unless_fail_open() {
    let node = Upstream::start(echo);
    let down = format!("http://{}", closed_port());

    // Down: refused, and the node is never contacted.
    let (gw, _dir) = gateway(&config(&down, &node.url(), ""));
    assert_refused(
        &get(gw.addr(), "/hls/cam1/seg1.ts?token=good", ""),
        403,
        "forbidden",
    );
    assert!(node.requests().is_empty());
    drop(gw);

    // Silent: refused once `timeout` has passed.
    let stalled = Upstream::start(|_| Reply::Stall);
    let (gw, _dir) = gateway(&config(&stalled.url(), &node.url(), "timeout = \"300ms\""));
    let t0 = Instant::now();
    assert_refused(
        &get(gw.addr(), "/hls/cam1/seg1.ts?token=good", ""),
        403,
        "forbidden",
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(stalled.requests().len(), 1);
    assert!(node.requests().is_empty());
    drop(gw);

    // fail_open: both let the viewer in.
    for url in [down.clone(), stalled.url()] {
        let (gw, _dir) = gateway(&config(
            &url,
            &node.url(),
            "timeout = \"300ms\"\nfail_open = true",
        ));
        let r = get(gw.addr(), "/hls/cam1/seg1.ts?token=good", "");
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        assert_eq!(r.json()["target"], "/hls/cam1/seg1.ts");
    }
    assert_eq!(node.requests().len(), 2);
}

#[test]
fn srs_format_accepts_only_a_zero_code() {
    let hook = Upstream::start(|req| {
        let b = body(req);
        let param = b["param"].as_str().unwrap_or("");
        let answer: &[u8] = if b["action"] == "on_play" && param.contains("token=good") {
            if b["stream"] == "cam1" {
                b"0"
            } else {
                br#"{"code":0}"#
            }
        } else {
            br#"{"code":1}"#
        };
        Reply::Ok {
            headers: vec![],
            body: answer.to_vec(),
        }
    });
    let node = Upstream::start(echo);
    let (gw, _dir) = gateway(&config(&hook.url(), &node.url(), "format = \"srs\""));
    let r = get(gw.addr(), "/hls/cam1/seg1.ts?token=good&x=1", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/hls/cam1/seg1.ts?x=1");
    let call = body(&hook.requests()[0]);
    assert_eq!(call["action"], "on_play");
    assert_eq!(call["app"], "hls");
    assert_eq!(call["stream"], "cam1");
    assert_eq!(call["param"], "?token=good&x=1");
    assert_eq!(call["ip"], "127.0.0.1");
    assert_eq!(call["vhost"], "__defaultVhost__");
    assert!(
        call["client_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{call}"
    );
    // `{"code":0}` is a yes too; `{"code":1}` (a 200!) is a no.
    assert_eq!(
        get(gw.addr(), "/hls/cam2/seg1.ts?token=good", "").status,
        200
    );
    assert_refused(
        &get(gw.addr(), "/hls/cam1/seg1.ts?token=bad", ""),
        403,
        "forbidden",
    );
    assert_eq!(node.requests().len(), 2);
}
