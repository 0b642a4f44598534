//! The dashboard at `/ui/`, in Debian's headless Chromium driven by playwright-core
//! (`web/test/*.mjs`): log in, see the demo's streams and nodes, play them through the gateway
//! with the pinned player libraries, and watch the viewers and bitrate update.
//!
//! Screenshots go to `$STREAMGATE_TEST_OUTPUT` when set, else `target/test-output/` in the
//! source tree.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::run_script;
use common::{get, spawn};

/// The browser part's bound: each script keeps well inside it.
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

fn output_dir() -> PathBuf {
    std::env::var_os("STREAMGATE_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-output"))
}

/// The demo's `streamgate dashboard: URL  (log in with admin token TOKEN)` line, the first it
/// prints after the ready line.
fn dashboard_line(p: &common::Proc) -> (String, String) {
    let deadline = Instant::now() + common::READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = p
            .stdout_rx
            .recv_timeout(left)
            .expect("demo prints its dashboard URL");
        if line.trim().is_empty() {
            continue;
        }
        let rest = line
            .strip_prefix("streamgate dashboard: ")
            .unwrap_or_else(|| panic!("the dashboard URL is not printed first: {line:?}"));
        let url = rest.split_whitespace().next().expect("url").to_string();
        let token = rest
            .split("admin token ")
            .nth(1)
            .expect("admin token")
            .trim_end_matches(')')
            .to_string();
        return (url, token);
    }
}

#[test]
fn the_demo_dashboard_logs_in_lists_and_plays() {
    let demo = spawn(&["demo", "--listen", "127.0.0.1:0"], 1);
    let (url, token) = dashboard_line(&demo);
    assert_eq!(url, format!("http://{}/ui/", demo.addr()));
    assert!(token.len() >= 16, "{token:?}");

    // The page needs no credential; the API it calls does.
    let r = get(demo.addr(), "/ui/", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(get(demo.addr(), "/api/v1/ui", "").status, 401);

    let out = output_dir();
    let mut args = vec![
        url.as_str(),
        token.as_str(),
        out.to_str().expect("utf-8 path"),
    ];
    args.push("--file=/vod/movie.mp4");
    args.push("--ws");
    let v = run_script("dashboard.mjs", &args, SCRIPT_LIMIT);
    assert_eq!(v["streams"], serde_json::json!(["cam1", "cam2"]), "{v}");
    assert_eq!(v["nodes"], serde_json::json!(["a", "b"]), "{v}");
    for kind in ["flv", "hls", "file", "ws"] {
        let d = v["advanced"][kind].as_f64().unwrap_or(0.0);
        assert!(d >= 3.0, "{kind} advanced only {d} s: {v}");
    }
    assert!(v["viewers"].as_u64() >= Some(1), "{v}");
    assert!(v["viewer_rows"].as_u64() >= Some(1), "{v}");
    let shot = out.join("dashboard.png");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[..4], b"\x89PNG", "{}", shot.display());
}

/// Eight live streams on one page, all playing at once. Over HTTP/1.1 Chromium opens only six
/// connections per host, so this needs WebSocket-FLV on the live route.
#[test]
fn eight_live_streams_play_at_once_over_websocket() {
    let media = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (1..=8).map(|i| format!("s{i}")).collect();
    let src = common::media_dir();
    for (i, n) in names.iter().enumerate() {
        let from = src.join(if i % 2 == 0 { "cam1.flv" } else { "cam2.flv" });
        std::fs::copy(&from, media.path().join(format!("{n}.flv"))).expect("copy sample");
    }
    let node = common::origin(media.path());
    let list = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (gw, _dir) = common::gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
token = "admin-secret-for-tests"

[ui]
enabled = true

[[nodes]]
id = "n"
url = "http://{}"
streams = [{list}]

[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"
"#,
        node.addr()
    ));
    let url = gw.url("/ui/");
    let mut args = vec![url.as_str(), "admin-secret-for-tests", "ws"];
    args.extend(names.iter().map(String::as_str));
    let v = run_script("many.mjs", &args, SCRIPT_LIMIT);
    for n in &names {
        let d = v["advanced"][n].as_f64().unwrap_or(0.0);
        assert!(d >= 3.0, "{n} advanced only {d} s: {v}");
    }
}

/// The gateway's side without a browser: the page and the player libraries with their headers,
/// nothing else under `/ui/`, and the admin endpoints the page reads (routes, the player's
/// settings, a stream's viewers) behind the admin token.
#[test]
fn ui_files_and_the_admin_endpoints_the_page_reads() {
    use common::api::ADMIN;
    let node = common::origin(&common::media_dir());
    let config = |ui: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[auth]
tokens = ["view"]

[admin]
token = "adm1n"

[ui]
{ui}

[[nodes]]
id = "a"
url = "http://{}"
streams = ["cam1"]

[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"
auth = "token"

[[routes]]
path = "/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"
"#,
            node.addr()
        )
    };

    // Off (the default): /ui/ is an ordinary path for the route table.
    let (off, _d) = common::gateway(&config("enabled = false"));
    // Here the catch-all proxy route asks the node, which has no such file.
    let r = get(off.addr(), "/ui/index.html", "");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.header("content-security-policy").is_none());

    let (gw, _d2) = common::gateway(&config("enabled = true\nviewer_token = \"view\""));
    let a = gw.addr();
    let r = get(a, "/ui", "");
    assert_eq!((r.status, r.header("location")), (301, Some("/ui/")));
    for (path, ctype) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/vendor/mpegts.js", "text/javascript; charset=utf-8"),
        ("/ui/vendor/hls.min.js", "text/javascript; charset=utf-8"),
    ] {
        let r = get(a, path, "");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(r.header("cache-control").is_some(), "{path}");
        assert!(!r.body.is_empty(), "{path}");
    }
    // Only the listed names: no other file, however the path is spelled.
    for path in [
        "/ui/Cargo.toml",
        "/ui/../Cargo.toml",
        "/ui/vendor/../app.js",
        "/ui/vendor/..%2f..%2fCargo.toml",
        "/ui/vendor/hls.js/package.json",
        "/ui/%2e%2e/Cargo.toml",
    ] {
        let r = get(a, path, "");
        assert!(matches!(r.status, 400 | 404), "{path}: {}", r.status);
        assert!(!r.text().contains("[package]"), "{path}");
    }

    // The page's API calls need the admin token; the viewer token is not it.
    assert_eq!(get(a, "/api/v1/routes", "").status, 401);
    assert_eq!(
        get(a, "/api/v1/routes", "Authorization: Bearer view\r\n").status,
        401
    );
    let routes = get(a, "/api/v1/routes", ADMIN).json();
    assert_eq!(
        routes["routes"][0],
        serde_json::json!({"path": "/flv/{stream}.flv", "action": "live", "auth": "token", "stream": true})
    );
    assert_eq!(routes["routes"][1]["stream"], false);
    let ui = get(a, "/api/v1/ui", ADMIN).json();
    assert_eq!(ui["viewer_token"], "view");
    assert_eq!(
        ui["players"],
        serde_json::json!({"hls.js": true, "mpegts.js": true})
    );
}

/// Without the npm packages the dashboard still works, and its player says how to install them.
#[test]
fn without_the_player_libraries_the_page_says_how_to_install_them() {
    let node = common::origin(&common::media_dir());
    let empty = tempfile::tempdir().expect("tempdir");
    let (gw, _d) = common::gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
token = "adm1n"

[ui]
enabled = true
vendor_dir = "{}"

[[nodes]]
id = "a"
url = "http://{}"
streams = ["cam1"]

[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
upstream = "/files/hls/{{stream}}/{{*rest}}"
"#,
        empty.path().display(),
        node.addr()
    ));
    let r = get(gw.addr(), "/ui/vendor/mpegts.js", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_installed");
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("npm ci --prefix web")));
    let url = gw.url("/ui/");
    let v = run_script("no_vendor.mjs", &[&url, "adm1n", "cam1"], SCRIPT_LIMIT);
    let msg = v["flv"].as_str().unwrap_or_default();
    assert!(msg.contains("npm ci --prefix web"), "{v}");
}
