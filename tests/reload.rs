//! Hot reload of the config file against a real gateway and origin: 50 live viewers stay
//! attached across 10 reloads (SIGHUP and `POST /api/v1/reload`, one of them an invalid file),
//! while added routes answer, removed ones 404, a changed token takes effect, static nodes come
//! and go in the registry, and `/metrics` counts every outcome.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::api::send;
use common::{bin, gateway, get, open_stream, origin, wait_until, Proc};

const T: Duration = Duration::from_secs(20);
const ADMIN: &str = "Authorization: Bearer adm1n\r\n";

/// Generation `g` of the config: viewer token `t{g}`, a route `/r{g}/…` that exists only in
/// this generation, and node `b` only in even generations.
fn config(origin: SocketAddr, g: usize) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"3s\"\n\
         [auth]\ntokens = [\"t{g}\"]\n[admin]\ntoken = \"adm1n\"\n\
         [[nodes]]\nid = \"a\"\nurl = \"http://{origin}\"\nstreams = [\"cam1\"]\n"
    );
    if g.is_multiple_of(2) {
        s.push_str(&format!(
            "[[nodes]]\nid = \"b\"\nurl = \"http://{origin}\"\n"
        ));
    }
    s.push_str(&format!(
        "[[routes]]\npath = \"/flv/{{stream}}.flv\"\naction = \"live\"\nupstream = \"/live/{{stream}}.flv\"\nauth = \"token\"\n\
         [[routes]]\npath = \"/r{g}/{{*rest}}\"\naction = \"redirect\"\nto = \"a\"\nupstream = \"/files/{{*rest}}\"\n\
         [[routes]]\npath = \"/tok/{{*rest}}\"\naction = \"redirect\"\nto = \"a\"\nupstream = \"/files/{{*rest}}\"\nauth = \"token\"\n"
    ));
    s
}

/// `streamgate_config_reloads_total{result="…"}` from `/metrics`.
fn reloads(gw: &Proc, result: &str) -> u64 {
    let r = get(gw.addr(), "/metrics", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text());
    let key = format!("streamgate_config_reloads_total{{result=\"{result}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics")) as u64
}

fn sighup(gw: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "SIGHUP sent");
}

/// Reads from every viewer until it has received bytes, bounded: none may have ended.
fn all_receive(viewers: &mut [TcpStream], when: &str) {
    let mut buf = [0u8; 65536];
    for (i, v) in viewers.iter_mut().enumerate() {
        match v.read(&mut buf) {
            Ok(0) => panic!("{when}: viewer {i} was disconnected"),
            Ok(_) => {}
            Err(e) => panic!("{when}: viewer {i} got nothing: {e}"),
        }
    }
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    get(addr, path, "").status
}

/// What `streamgate check-config` prints for `file` (after `FILE: error: `).
fn check_config_error(file: &Path) -> String {
    let out = Command::new(bin())
        .args(["check-config", file.to_str().expect("utf-8")])
        .output()
        .expect("check-config");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let prefix = format!("{}: error: ", file.display());
    err.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected check-config output {err:?}"))
        .to_string()
}

#[test]
fn fifty_viewers_stay_attached_across_ten_reloads() {
    let o = origin(&common::media_dir());
    let (gw, dir) = gateway(&config(o.addr(), 0));
    let file = dir.path().join("streamgate.toml");
    let addr = gw.addr();
    assert_eq!(reloads(&gw, "ok"), 0);
    assert_eq!(reloads(&gw, "error"), 0);

    let mut viewers: Vec<TcpStream> = (0..50)
        .map(|_| {
            let (head, s, _) = open_stream(addr, "/flv/cam1.flv?token=t0");
            assert_eq!(head.status, 200);
            s
        })
        .collect();
    all_receive(&mut viewers, "before any reload");
    wait_until("50 viewers attached", T, || {
        let r = get(addr, "/api/v1/streams/cam1", ADMIN);
        r.status == 200 && r.json()["viewers"] == 50
    });

    let (mut ok, mut errors) = (0, 0);
    let mut active: usize = 0; // the generation the gateway runs
    for round in 1..=10usize {
        if round == 5 {
            // An invalid file: refused with check-config's message; generation `active` stays.
            std::fs::write(
                &file,
                config(o.addr(), round).replace("[admin]", "[admin]\ntokne = 1\n"),
            )
            .expect("write");
            let want = check_config_error(&file);
            let r = send(addr, "POST", "/api/v1/reload", ADMIN, b"");
            assert_eq!(r.status, 422, "{}", r.text());
            let body = r.json();
            assert_eq!(body["error"], "config_invalid");
            let got = body["message"].as_str().expect("message").trim();
            assert_eq!(got, want, "the message check-config prints");
            errors += 1;
        } else {
            std::fs::write(&file, config(o.addr(), round)).expect("write");
            if !round.is_multiple_of(2) {
                sighup(&gw);
                wait_until("the SIGHUP reload is counted", T, || {
                    reloads(&gw, "ok") == ok + 1
                });
            } else {
                let r = send(addr, "POST", "/api/v1/reload", ADMIN, b"");
                assert_eq!(r.status, 200, "{}", r.text());
                let body = r.json();
                assert_eq!(body["reloaded"], true);
                assert_eq!(body["routes"], 3);
                // Node `b` exists in even generations: added now if the running one was odd.
                let added = if !active.is_multiple_of(2) {
                    vec!["b"]
                } else {
                    vec![]
                };
                assert_eq!(body["nodes_added"], serde_json::json!(added), "{body}");
                assert_eq!(body["needs_restart"], serde_json::json!([]), "{body}");
            }
            ok += 1;
            active = round;
        }
        assert_eq!(reloads(&gw, "ok"), ok);
        assert_eq!(reloads(&gw, "error"), errors);

        // Every viewer is still attached and receiving.
        all_receive(&mut viewers, &format!("after reload {round}"));
        // The running generation's route answers; the one before it is gone.
        assert_eq!(
            status(addr, &format!("/r{active}/x.jpg")),
            302,
            "round {round}"
        );
        if active > 0 && round != 5 {
            let prev = if round == 6 { 4 } else { round - 1 };
            assert_eq!(
                status(addr, &format!("/r{prev}/x.jpg")),
                404,
                "round {round}"
            );
        }
        // The running generation's token, and only it, opens token routes.
        assert_eq!(status(addr, &format!("/tok/x.jpg?token=t{active}")), 302);
        let old = if active == 0 { 99 } else { active - 1 };
        assert_eq!(status(addr, &format!("/tok/x.jpg?token=t{old}")), 401);
        // Static node `b` is in the registry exactly in even generations.
        let b = get(addr, "/api/v1/nodes/b", ADMIN).status;
        assert_eq!(
            b,
            if active.is_multiple_of(2) { 200 } else { 404 },
            "round {round}"
        );
    }
    assert_eq!((ok, errors), (9, 1));
    let r = get(addr, "/api/v1/streams/cam1", ADMIN);
    assert_eq!(r.json()["viewers"], 50, "zero viewers disconnected");
    all_receive(&mut viewers, "at the end");
    let logs = gw.logs();
    assert!(logs.contains("config reloaded"), "{logs}");
    assert!(logs.contains("config reload refused"), "{logs}");
    drop(viewers);
}

#[test]
fn a_reload_adds_and_removes_listeners() {
    let o = origin(&common::media_dir());
    let (gw, dir) = gateway(&config(o.addr(), 0));
    let file = dir.path().join("streamgate.toml");
    let addr = gw.addr();
    let (head, mut viewer, _) = open_stream(addr, "/flv/cam1.flv?token=t0");
    assert_eq!(head.status, 200);
    let two = config(o.addr(), 0).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]",
    );
    std::fs::write(&file, two).expect("write");
    let r = send(addr, "POST", "/api/v1/reload", ADMIN, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["needs_restart"], serde_json::json!([]), "{body}");
    assert_eq!(body["listeners_removed"], serde_json::json!([]), "{body}");
    let added = body["listeners_added"][0]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .expect("one listener added");
    let second: SocketAddr = added.parse().expect("address");
    assert_ne!(second, addr, "the running listener was kept, another bound");
    // The new listener serves the same gateway, with the same config.
    assert_eq!(status(second, "/r0/x.jpg"), 302);
    let (head, mut viewer2, _) = open_stream(second, "/flv/cam1.flv?token=t0");
    assert_eq!(head.status, 200);
    all_receive(
        &mut [
            viewer.try_clone().expect("clone"),
            viewer2.try_clone().expect("clone"),
        ],
        "after adding",
    );

    // Back to one listener: the added one is the one removed (the first is kept as bound).
    std::fs::write(&file, config(o.addr(), 0)).expect("write");
    let r = send(addr, "POST", "/api/v1/reload", ADMIN, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(
        body["listeners_removed"],
        serde_json::json!([format!("http://{second}")])
    );
    wait_until("the removed listener refuses connections", T, || {
        TcpStream::connect(second).is_err()
    });
    // The first listener and its viewer are untouched.
    assert_eq!(status(addr, "/r0/x.jpg"), 302);
    all_receive(std::slice::from_mut(&mut viewer), "after removing");
    // A live viewer that came through the removed listener is closed once drain_timeout (3 s
    // here) has passed, as the drain deadline closes what is left at shutdown.
    viewer2.set_read_timeout(Some(T)).expect("timeout");
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match viewer2.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the removed listener's viewer is still open: {e}"),
        }
    }
    all_receive(std::slice::from_mut(&mut viewer), "after the drain window");
    let logs = gw.logs();
    assert!(
        logs.contains("listener added") && logs.contains("listener removed"),
        "{logs}"
    );
}
