//! TLS and HTTP/2 for viewers, end to end: a real `streamgate serve` with TLS listeners in
//! front of a real origin, checked with curl (`--http2`, `--http1.1`) and with a Rust client
//! (tokio-rustls + hyper) that holds HTTP/2 streams and reads the certificate it was served.

mod common;

use std::time::Duration;

use common::tls::{curl, h2_connect, h2_get, read_at_least, served_leaf, tls_listen, Ca, Leaf};
use common::upstream::{echo, Upstream};
use common::{gateway, get, origin, spawn, wait_until, Proc};

const T: Duration = Duration::from_secs(30);

/// A gateway config: `listen` as given, node `a` = the origin, node `echo` = an echo upstream.
fn config(listen: &str, server_extra: &str, origin: &Proc, echo_url: &str) -> String {
    format!(
        r#"
[server]
listen = [{listen}]
drain_timeout = "2s"
{server_extra}

[admin]
token = "adm1n"

[auth]
tokens = ["s3cret"]

[[nodes]]
id = "a"
url = "http://{origin}"
streams = ["cam1", "cam2"]

[[nodes]]
id = "echo"
url = "{echo_url}"

[[routes]]
path = "/snap/{{*rest}}"
action = "redirect"
to = "a"
upstream = "/files/{{*rest}}"
status = 302

[[routes]]
path = "/vod/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"

[[routes]]
path = "/echo/{{*rest}}"
action = "proxy"
to = "echo"
upstream = "/{{*rest}}"

[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
upstream = "/live/{{stream}}.flv"
auth = "token"
"#,
        origin = origin.addr(),
    )
}

fn is_flv(b: &[u8]) -> bool {
    b.len() > 13 && b.starts_with(b"FLV")
}

/// Writes `leaf` again over `into`'s files: key first, then certificate (the certificate's
/// change is what a reload must pair with the new key).
fn install(leaf: &Leaf, into: &Leaf) {
    std::fs::copy(&leaf.key, &into.key).expect("copy key");
    std::fs::copy(&leaf.cert, &into.cert).expect("copy cert");
}

#[test]
fn every_route_kind_over_h2_and_http1_with_tls() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path());
    let leaf = ca.leaf(dir.path(), "gw", &["gw.test"], "gw");
    let o = origin(&common::media_dir());
    let up = Upstream::start(echo);
    let (gw, _d) = gateway(&config(&tls_listen(&[&leaf]), "", &o, &up.url()));
    let addr = gw.addr();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        // Redirect: answered by the gateway alone.
        let r = curl(&ca, "gw.test", addr, "/snap/snapshot.jpg", &[flag]);
        assert_eq!((r.code, r.status), (0, 302), "{flag}: {r:?}");
        assert_eq!(r.http_version, version, "{flag}");
        assert_eq!(
            r.header("location").as_deref(),
            Some(format!("http://{}/files/snapshot.jpg", o.addr()).as_str())
        );
        // Proxy with Range.
        let r = curl(
            &ca,
            "gw.test",
            addr,
            "/vod/movie.mp4",
            &[flag, "-r", "0-99"],
        );
        assert_eq!((r.code, r.status), (0, 206), "{flag}: {r:?}");
        assert_eq!(r.http_version, version, "{flag}");
        assert_eq!(r.body.len(), 100, "{flag}");
        let whole = std::fs::read(common::media_dir().join("movie.mp4")).expect("movie");
        assert_eq!(r.body, whole[..100], "{flag}");
        // The node is told the viewer used TLS, and which host it asked for.
        let r = curl(&ca, "gw.test", addr, "/echo/x", &[flag]);
        assert_eq!((r.code, r.status), (0, 200), "{flag}: {r:?}");
        let seen: serde_json::Value = serde_json::from_slice(&r.body).expect("echo json");
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{flag}");
        assert_eq!(
            seen["headers"]["x-forwarded-host"],
            format!("gw.test:{}", addr.port()),
            "{flag}"
        );
        // A request body crosses too.
        let r = curl(
            &ca,
            "gw.test",
            addr,
            "/echo/up",
            &[flag, "--data-binary", "hello"],
        );
        assert_eq!((r.code, r.status), (0, 200), "{flag}: {r:?}");
        let seen: serde_json::Value = serde_json::from_slice(&r.body).expect("echo json");
        assert_eq!(
            (seen["method"].as_str(), seen["body_len"].as_u64()),
            (Some("POST"), Some(5)),
            "{flag}"
        );
        // Live FLV through the origin: a body that never ends, cut by curl's --max-time.
        let r = curl(
            &ca,
            "gw.test",
            addr,
            "/flv/cam1.flv?token=s3cret",
            &[flag, "--max-time", "3"],
        );
        assert_eq!(r.code, 28, "{flag}: ended by --max-time: {r:?}");
        assert_eq!(
            (r.status, r.http_version.as_str()),
            (200, version),
            "{flag}"
        );
        assert!(
            is_flv(&r.body),
            "{flag}: FLV bytes ({} bytes)",
            r.body.len()
        );
        // Admin API.
        let r = curl(
            &ca,
            "gw.test",
            addr,
            "/api/v1/nodes",
            &[flag, "-H", "Authorization: Bearer adm1n"],
        );
        assert_eq!((r.code, r.status), (0, 200), "{flag}: {r:?}");
        assert_eq!(r.http_version, version, "{flag}");
        let nodes: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert!(nodes.to_string().contains("echo"), "{nodes}");
    }
}

#[test]
fn live_streams_multiplexed_on_one_h2_connection_and_a_stalled_one_stalls_nobody() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path());
    let leaf = ca.leaf(dir.path(), "gw", &["gw.test"], "gw");
    let o = origin(&common::media_dir());
    let up = Upstream::start(echo);
    let (gw, _d) = gateway(&config(&tls_listen(&[&leaf]), "", &o, &up.url()));
    let cfg = ca.client_config(&[b"h2"], true);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut send = h2_connect(cfg, gw.addr(), "gw.test").await;
        // Stream A is never read: its 64 KiB window closes and stays closed.
        let stalled = h2_get(&mut send, "gw.test", "/flv/cam1.flv?token=s3cret").await;
        assert_eq!(stalled.status(), 200);
        assert_eq!(stalled.version(), http::Version::HTTP_2);
        // Stream B, on the same connection, is read.
        let read = h2_get(&mut send, "gw.test", "/flv/cam2.flv?token=s3cret").await;
        assert_eq!(read.status(), 200);
        assert_eq!(read.headers()["content-type"], "video/x-flv");
        let mut body = read.into_body();
        let start = read_at_least(&mut body, 16, T).await;
        assert!(is_flv(&start), "stream B starts with an FLV header");
        // Far more than A's window: had A's stall blocked the connection, B would stop too.
        read_at_least(&mut body, 1 << 20, Duration::from_secs(60)).await;
        // And a third request on the connection is still answered while A sits stalled.
        let r = h2_get(&mut send, "gw.test", "/vod/snapshot.jpg").await;
        assert_eq!(r.status(), 200);
        drop(stalled);
    });
}

#[test]
fn the_certificate_is_chosen_by_sni() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"], "cert-a");
    let b = ca.leaf(dir.path(), "b", &["b.test", "*.b.test"], "cert-b");
    let o = origin(&common::media_dir());
    let up = Upstream::start(echo);
    let (gw, _d) = gateway(&config(&tls_listen(&[&a, &b]), "", &o, &up.url()));
    let with_sni = ca.client_config(&[b"h2", b"http/1.1"], true);
    assert_eq!(served_leaf(with_sni.clone(), gw.addr(), "a.test"), a.der);
    assert_eq!(served_leaf(with_sni.clone(), gw.addr(), "b.test"), b.der);
    assert_eq!(served_leaf(with_sni, gw.addr(), "cam.b.test"), b.der);
    // No SNI at all: the first certificate (verified here against its own name).
    let no_sni = ca.client_config(&[b"h2"], false);
    assert_eq!(served_leaf(no_sni, gw.addr(), "a.test"), a.der);
    // curl, by name, verifies each chain against the CA.
    for name in ["a.test", "b.test"] {
        let r = curl(&ca, name, gw.addr(), "/vod/snapshot.jpg", &["--http2"]);
        assert_eq!((r.code, r.status), (0, 200), "{name}: {r:?}");
        assert_eq!(r.http_version, "2");
    }
}

#[test]
fn certificates_swap_on_sighup_and_on_file_change_while_a_viewer_stays() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path());
    let live = ca.leaf(dir.path(), "live", &["gw.test"], "gen-1");
    let first = ca.leaf(dir.path(), "gen1", &["gw.test"], "gen-1");
    let second = ca.leaf(dir.path(), "gen2", &["gw.test"], "gen-2");
    let third = ca.leaf(dir.path(), "gen3", &["gw.test"], "gen-3");
    install(&first, &live);
    let o = origin(&common::media_dir());
    let up = Upstream::start(echo);
    // File watching off: only SIGHUP reloads this one.
    let (mut gw, _d) = gateway(&config(
        &tls_listen(&[&live]),
        "tls_watch_interval = \"0s\"",
        &o,
        &up.url(),
    ));
    let cfg = ca.client_config(&[b"h2"], true);
    let addr = gw.addr();
    assert_eq!(served_leaf(cfg.clone(), addr, "gw.test"), first.der);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let mut viewer = rt.block_on(async {
        let mut send = h2_connect(cfg.clone(), addr, "gw.test").await;
        let resp = h2_get(&mut send, "gw.test", "/flv/cam1.flv?token=s3cret").await;
        let mut body = resp.into_body();
        assert!(is_flv(&read_at_least(&mut body, 16, T).await));
        (send, body)
    });
    let hup = || {
        let st = std::process::Command::new("kill")
            .args(["-HUP", &gw.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    };

    // SIGHUP with new files: new connections get the new certificate…
    install(&second, &live);
    hup();
    wait_until("the new certificate after SIGHUP", T, || {
        served_leaf(cfg.clone(), addr, "gw.test") == second.der
    });
    // …and the viewer connected before it keeps receiving.
    rt.block_on(read_at_least(&mut viewer.1, 64 * 1024, T));

    // A bad file on SIGHUP: logged, the old certificate stays.
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\ntruncated\n").expect("write");
    hup();
    wait_until("the reload failure in the log", T, || {
        gw.logs().contains("TLS reload failed")
    });
    assert!(
        gw.logs()
            .contains("server.listen[0].tls.certificates[0].cert"),
        "the error names the key:\n{}",
        gw.logs()
    );
    assert_eq!(served_leaf(cfg.clone(), addr, "gw.test"), second.der);
    rt.block_on(read_at_least(&mut viewer.1, 64 * 1024, T));
    assert!(
        gw.child.try_wait().expect("wait").is_none(),
        "still running"
    );
    drop(viewer);

    // File watching on: a changed file is picked up without a signal.
    let watched = ca.leaf(dir.path(), "watched", &["gw.test"], "gen-1");
    let (gw2, _d2) = gateway(&config(
        &tls_listen(&[&watched]),
        "tls_watch_interval = \"200ms\"",
        &o,
        &up.url(),
    ));
    let addr2 = gw2.addr();
    let mut viewer = rt.block_on(async {
        let mut send = h2_connect(cfg.clone(), addr2, "gw.test").await;
        let resp = h2_get(&mut send, "gw.test", "/flv/cam2.flv?token=s3cret").await;
        let mut body = resp.into_body();
        assert!(is_flv(&read_at_least(&mut body, 16, T).await));
        (send, body)
    });
    install(&third, &watched);
    wait_until("the new certificate after a file change", T, || {
        served_leaf(cfg.clone(), addr2, "gw.test") == third.der
    });
    rt.block_on(read_at_least(&mut viewer.1, 64 * 1024, T));
}

#[test]
fn plain_http_is_redirected_to_https() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path());
    let leaf = ca.leaf(dir.path(), "gw", &["gw.test"], "gw");
    let o = origin(&common::media_dir());
    let up = Upstream::start(echo);
    let cfg_path = dir.path().join("gw.toml");
    std::fs::write(
        &cfg_path,
        config(
            &tls_listen(&[&leaf]),
            "https_redirect = \"127.0.0.1:0\"",
            &o,
            &up.url(),
        ),
    )
    .expect("write");
    // Two ready lines: the TLS listener, then the redirect listener.
    let gw = spawn(&["serve", "--config", cfg_path.to_str().expect("utf-8")], 2);
    let (tls, plain) = (gw.addrs[0], gw.addrs[1]);
    let r = common::raw_request(
        plain,
        "GET /vod/snapshot.jpg?x=1 HTTP/1.1\r\nHost: gw.test:80\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://gw.test:{}/vod/snapshot.jpg?x=1", tls.port()).as_str())
    );
    let r = common::raw_request(
        plain,
        "POST /api/v1/nodes HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 308, "other methods keep their method");
    // No Host (HTTP/1.0): nothing to send the viewer to.
    let r = common::raw_request(plain, "GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = get(plain, "/x", "");
    assert_eq!(
        r.header("location"),
        Some(format!("https://test:{}/x", tls.port()).as_str())
    );
    // curl follows it end to end: plain → https, HTTP/2.
    let resolve = [
        format!("gw.test:{}:127.0.0.1", plain.port()),
        format!("gw.test:{}:127.0.0.1", tls.port()),
    ];
    let out = std::process::Command::new("curl")
        .args(["-sS", "-L", "--http2", "--max-time", "20", "--cacert"])
        .arg(&ca.file)
        .args(["--resolve", &resolve[0], "--resolve", &resolve[1]])
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code} %{url_effective}",
        ])
        .arg(format!("http://gw.test:{}/vod/snapshot.jpg", plain.port()))
        .output()
        .expect("curl");
    let w = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        w,
        format!("2 200 https://gw.test:{}/vod/snapshot.jpg", tls.port()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_loads_the_certificates() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path());
    let leaf = ca.leaf(dir.path(), "gw", &["gw.test"], "gw");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\", {}]\n",
            tls_listen(&[&leaf])
        ),
    )
    .expect("write");
    let out = std::process::Command::new(common::bin())
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("https://127.0.0.1:0"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = [\"127.0.0.1:0\", { address = \"127.0.0.1:0\", tls = { certificates = [{ cert = \"/nonexistent/chain.pem\", key = \"/nonexistent/key.pem\" }] } }]\n",
    )
    .expect("write");
    let out = std::process::Command::new(common::bin())
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "server.listen[1].tls.certificates[0].cert: cannot read /nonexistent/chain.pem"
        ),
        "{err}"
    );
}

#[test]
fn the_per_ip_cap_answers_429_over_h2_and_closes() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path());
    let leaf = ca.leaf(dir.path(), "gw", &["gw.test"], "gw");
    let o = origin(&common::media_dir());
    let up = Upstream::start(echo);
    let toml = format!(
        "{}\n[limits]\nconnections_per_ip = 1\n",
        config(&tls_listen(&[&leaf]), "", &o, &up.url())
    );
    let (gw, _d) = gateway(&toml);
    let cfg = ca.client_config(&[b"h2"], true);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        // The first connection holds the address's one slot with a live stream.
        let mut first = h2_connect(cfg.clone(), gw.addr(), "gw.test").await;
        let live = h2_get(&mut first, "gw.test", "/flv/cam1.flv?token=s3cret").await;
        assert_eq!(live.status(), 200);
        let mut body = live.into_body();
        read_at_least(&mut body, 16, T).await;
        // The second is told why, over HTTP/2, then closed.
        let mut second = h2_connect(cfg.clone(), gw.addr(), "gw.test").await;
        let r = h2_get(&mut second, "gw.test", "/vod/snapshot.jpg").await;
        assert_eq!(r.status(), 429);
        drop(r);
        tokio::time::timeout(T, async {
            while !second.is_closed() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the refused connection is closed");
        // The first is untouched.
        read_at_least(&mut body, 64 * 1024, T).await;
    });
}

#[test]
fn an_h2_stream_that_gets_no_window_releases_its_node_connection_after_send_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path());
    let leaf = ca.leaf(dir.path(), "gw", &["gw.test"], "gw");
    let endless = Upstream::start(|_| common::upstream::Reply::Endless {
        chunk: vec![1u8; 4096],
        every: Duration::from_millis(5),
    });
    let up = Upstream::start(echo);
    let toml = format!(
        r#"
[server]
listen = [{}]
send_timeout = "1s"

[[nodes]]
id = "endless"
url = "{}"

[[nodes]]
id = "echo"
url = "{}"

[[routes]]
path = "/endless/{{*rest}}"
action = "proxy"
to = "endless"
upstream = "/{{*rest}}"

[[routes]]
path = "/echo/{{*rest}}"
action = "proxy"
to = "echo"
upstream = "/{{*rest}}"
"#,
        tls_listen(&[&leaf]),
        endless.url(),
        up.url()
    );
    let (gw, _d) = gateway(&toml);
    let cfg = ca.client_config(&[b"h2"], true);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut send = h2_connect(cfg, gw.addr(), "gw.test").await;
        // Never read: the stream's window closes and stays closed.
        let stalled = h2_get(&mut send, "gw.test", "/endless/x").await;
        assert_eq!(stalled.status(), 200);
        tokio::time::timeout(T, async {
            while !endless
                .endless_closed
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the node connection behind the stalled stream is closed");
        // The connection itself lives on: the client keeps reading it (PINGs, other streams).
        let r = h2_get(&mut send, "gw.test", "/echo/after").await;
        assert_eq!(r.status(), 200);
        drop(stalled);
    });
}
