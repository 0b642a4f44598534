//! `GET /metrics` against real processes: the output passes `promtool check metrics`, counts
//! what was sent, a real Prometheus server scrapes it, the main listener guards it, and 1,000
//! stream names keep the series bounded.

mod common;

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::flv::FlvStream;
use common::redis::free_port;
use common::upstream::{After, Reply, Upstream};
use common::{get, origin, spawn, wait_until, Proc};

const T: Duration = Duration::from_secs(30);

/// Writes `toml` and starts a gateway with a metrics listener: `addrs[1]` is that listener.
fn gateway_with_metrics_listener(toml: &str) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streamgate.toml");
    std::fs::write(&path, toml).expect("write config");
    let p = spawn(&["serve", "--config", path.to_str().expect("utf-8")], 2);
    (p, dir)
}

/// The metrics text from `addr` (the metrics listener, or the main one with `headers`).
fn scrape(addr: SocketAddr, headers: &str) -> String {
    let r = get(addr, "/metrics", headers);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

/// The value of `series` (name and labels exactly as printed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Sample lines (series), comments left out.
fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// `promtool check metrics` accepts `text` with no lint problem.
fn assert_promtool_clean(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (the test command installs the prometheus package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n---\n{text}",
        out.status
    );
}

/// An address where nothing listens (connections are refused).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

fn config(origin: &Proc, dead: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "2s"
[upstream]
connect_timeout = "2s"
[admin]
token = "adm1n"
{extra}
[[nodes]]
id = "o"
url = "http://{o}"
[[nodes]]
id = "dead"
url = "http://{dead}"
[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
to = "o"
streams = ["cam1", "cam2"]
upstream = "/live/{{stream}}.flv"
[[routes]]
path = "/vod/{{*rest}}"
action = "proxy"
to = "o"
upstream = "/files/{{*rest}}"
[[routes]]
path = "/snap/{{*rest}}"
action = "redirect"
to = "o"
upstream = "/files/{{*rest}}"
[[routes]]
path = "/gone/{{*rest}}"
action = "proxy"
to = "dead"
upstream = "/files/{{*rest}}"
"#,
        o = origin.addr()
    )
}

const LIVE_VIEWERS: &str = "streamgate_live_viewers";

#[test]
fn the_metrics_listener_counts_what_happened_and_passes_promtool() {
    let o = origin(&common::media_dir());
    let (gw, _d) = gateway_with_metrics_listener(&config(
        &o,
        dead_addr(),
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let m = gw.addrs[1];
    for _ in 0..3 {
        assert_eq!(get(gw.addr(), "/vod/movie.mp4", "").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(gw.addr(), "/snap/snapshot.jpg", "").status, 302);
    }
    // A credential in a query, on a path no route matches: neither may become a label.
    assert_eq!(
        get(gw.addr(), "/nowhere/secret-path?token=hunter2", "").status,
        404
    );
    assert_eq!(get(gw.addr(), "/gone/x", "").status, 502);
    let body = b"0123456789";
    let r = common::raw_request(
        gw.addr(),
        &format!(
            "POST /vod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            String::from_utf8_lossy(body)
        ),
    );
    assert_eq!(
        r.status, 405,
        "the origin refuses the upload, after reading it"
    );

    let mut a = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    let mut b = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    a.header(T);
    b.header(T);
    let text = scrape(m, "");
    assert_promtool_clean(&text);
    assert_eq!(must(&text, LIVE_VIEWERS), 2.0);
    assert_eq!(must(&text, "streamgate_live_streams"), 1.0);
    assert_eq!(
        must(&text, "streamgate_live_stream_viewers{stream=\"cam1\"}"),
        2.0
    );
    assert_eq!(
        must(&text, "streamgate_live_stream_viewers{stream=\"_other\"}"),
        0.0
    );
    assert_eq!(must(&text, "streamgate_live_pulls_total"), 1.0);
    let req = |route: &str, class: &str| {
        must(
            &text,
            &format!("streamgate_http_requests_total{{route=\"{route}\",status=\"{class}\"}}"),
        )
    };
    assert_eq!(req("/vod/{*rest}", "2xx"), 3.0);
    assert_eq!(req("/vod/{*rest}", "4xx"), 1.0, "the refused upload");
    assert_eq!(req("/snap/{*rest}", "3xx"), 2.0);
    assert_eq!(req("_none", "4xx"), 1.0);
    assert_eq!(req("/gone/{*rest}", "5xx"), 1.0);
    // Live viewers are counted when they leave.
    assert_eq!(req("/flv/{stream}.flv", "2xx"), 0.0);
    let movie = std::fs::metadata(common::media_dir().join("movie.mp4"))
        .expect("movie")
        .len() as f64;
    assert!(
        must(
            &text,
            "streamgate_http_response_bytes_total{route=\"/vod/{*rest}\"}"
        ) >= 3.0 * movie
    );
    assert_eq!(
        must(
            &text,
            "streamgate_http_request_bytes_total{route=\"/vod/{*rest}\"}"
        ),
        body.len() as f64
    );
    assert_eq!(
        must(
            &text,
            "streamgate_upstream_errors_total{node=\"dead\",kind=\"connect\"}"
        ),
        1.0
    );
    assert!(
        must(
            &text,
            "streamgate_upstream_connect_duration_seconds_count{node=\"o\"}"
        ) >= 1.0
    );
    assert!(
        must(
            &text,
            "streamgate_upstream_response_header_duration_seconds_count{node=\"o\"}"
        ) >= 5.0,
        "3 GETs, the upload and the pull"
    );
    assert_eq!(must(&text, "streamgate_registry_nodes{state=\"up\"}"), 2.0);
    assert!(value(&text, "streamgate_registry_redis_connected").is_none());
    assert_eq!(
        must(
            &text,
            &format!(
                "streamgate_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(
        must(&text, "streamgate_access_log_dropped_lines_total"),
        0.0,
        "the access log's overflow count is exported (its writer kept up)"
    );
    assert!(must(&text, "process_resident_memory_bytes") > 0.0);
    assert!(must(&text, "process_open_fds") > 0.0);
    assert!(value(&text, "process_cpu_seconds_total").is_some());
    // Label values are config patterns, ids and stream names: never a request path, a query
    // or a credential.
    for l in series(&text) {
        for bad in ["secret-path", "hunter2", "token=", "movie.mp4", "?"] {
            assert!(!l.contains(bad), "{bad:?} in {l}");
        }
    }
    // The main listener does not serve /metrics while the metrics listener does.
    assert_eq!(get(gw.addr(), "/metrics", "").status, 404);
    // Only /metrics on the metrics listener.
    assert_eq!(get(m, "/api/v1/live", "").status, 404);

    drop(a);
    drop(b);
    wait_until("the viewers are gone", T, || {
        value(&scrape(m, ""), LIVE_VIEWERS) == Some(0.0)
    });
    let text = scrape(m, "");
    assert_eq!(req_in(&text, "/flv/{stream}.flv", "2xx"), 2.0);
    assert!(
        must(
            &text,
            "streamgate_http_response_bytes_total{route=\"/flv/{stream}.flv\"}"
        ) > 0.0
    );
    // The OpenMetrics form, for scrapers that ask (Prometheus does).
    let r = get(
        m,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0\r\n",
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(r.text().ends_with("# EOF\n"));
}

fn req_in(text: &str, route: &str, class: &str) -> f64 {
    must(
        text,
        &format!("streamgate_http_requests_total{{route=\"{route}\",status=\"{class}\"}}"),
    )
}

#[test]
fn on_the_main_listener_metrics_need_the_admin_token_or_an_allowed_source() {
    let o = origin(&common::media_dir());
    let dead = dead_addr();
    let (gw, _d) = common::gateway(&config(&o, dead, ""));
    let r = get(gw.addr(), "/metrics", "");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(
        get(gw.addr(), "/metrics", "Authorization: Bearer wrong\r\n").status,
        401
    );
    let text = scrape(gw.addr(), "Authorization: Bearer adm1n\r\n");
    assert_promtool_clean(&text);
    // Refused and served scrapes are counted under the gateway's own route label.
    assert_eq!(req_in(&text, "_metrics", "4xx"), 2.0);

    // An allowed source needs no token; one outside the list does.
    let (gw2, _d2) = common::gateway(&config(&o, dead, "[metrics]\nallow = [\"127.0.0.0/8\"]\n"));
    scrape(gw2.addr(), "");
    let (gw3, _d3) = common::gateway(&config(&o, dead, "[metrics]\nallow = [\"10.0.0.0/8\"]\n"));
    assert_eq!(get(gw3.addr(), "/metrics", "").status, 401);
    scrape(gw3.addr(), "Authorization: Bearer adm1n\r\n");
}

/// A Prometheus server, killed (by its own PID) on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` every second.
    fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: streamgate\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (the test command installs the prometheus package)");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query's first sample, once Prometheus can answer it.
    fn query(&self, q: &str) -> Option<String> {
        let s = std::net::TcpStream::connect(self.addr()).ok()?;
        drop(s);
        let r = get(self.addr(), &format!("/api/v1/query?query={q}"), "");
        if r.status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_live_viewers() {
    let o = origin(&common::media_dir());
    let (gw, _d) = gateway_with_metrics_listener(&config(
        &o,
        dead_addr(),
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let mut a = FlvStream::open(gw.addr(), "/flv/cam1.flv");
    let mut b = FlvStream::open(gw.addr(), "/flv/cam2.flv");
    a.header(T);
    b.header(T);
    let prom = Prometheus::start(gw.addrs[1]);
    let start = Instant::now();
    loop {
        if prom.query(LIVE_VIEWERS).as_deref() == Some("2") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "Prometheus never answered streamgate_live_viewers = 2; its log:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The per-stream family, as Prometheus stored it.
    let q = "streamgate_live_stream_viewers%7Bstream%3D%22cam2%22%7D";
    wait_until("Prometheus has the per-stream series", T, || {
        prom.query(q).as_deref() == Some("1")
    });
}

#[test]
fn a_thousand_stream_names_keep_the_series_bounded() {
    // A scripted node that answers any stream with a second of FLV, then stays open: each pull
    // is cheap, and ends when the gateway lets go of it.
    let flv = common::flv::to_bytes(&common::flv::synthetic(1, 10, 1000));
    let node = Upstream::start(move |_| Reply::Chunks {
        pieces: vec![(Duration::ZERO, flv.clone())],
        then: After::Hang,
    });
    let top = 5;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[live]
linger = "0s"
[metrics]
listen = "127.0.0.1:0"
top_streams = {top}
[[nodes]]
id = "o"
url = "{url}"
[[routes]]
path = "/flv/{{stream}}.flv"
action = "live"
to = "o"
streams = ["s*"]
upstream = "/live/{{stream}}.flv"
"#,
        url = node.url()
    );
    let (gw, _d) = gateway_with_metrics_listener(&toml);
    let m = gw.addrs[1];
    // Series once every family has its rows: the bound below allows nothing per name.
    let mut open: VecDeque<(std::net::TcpStream, Vec<u8>)> = VecDeque::new();
    let mut counts = Vec::new();
    for i in 0..1000 {
        let (head, sock, rest) = common::open_stream(gw.addr(), &format!("/flv/s{i:04}.flv"));
        assert_eq!(head.status, 200, "s{i:04}");
        open.push_back((sock, rest));
        // About twenty streams live at once; the oldest go.
        if open.len() > 20 {
            open.pop_front();
        }
        // A distinct unmatched path each time, too.
        assert_eq!(get(gw.addr(), &format!("/x/{i}"), "").status, 404);
        if i % 100 == 99 {
            let text = scrape(m, "");
            let per_stream: Vec<&str> = series(&text)
                .into_iter()
                .filter(|l| l.contains("stream=\""))
                .collect();
            assert_eq!(
                per_stream.len(),
                2 * (top + 1),
                "top {top} + _other in each per-stream family:\n{per_stream:#?}"
            );
            assert!(
                value(&text, "streamgate_live_stream_viewers{stream=\"_other\"}")
                    .is_some_and(|v| v >= 1.0),
                "the tail is summed"
            );
            counts.push(series(&text).len());
        }
    }
    assert_promtool_clean(&scrape(m, ""));
    let (min, max) = (
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0),
    );
    eprintln!("series per scrape: {counts:?}");
    // Fixed families (routes × classes, one node's histograms, process, live totals) plus the
    // bounded per-stream rows: no series per stream name or per path.
    assert!(max < 150, "series per scrape: {counts:?}");
    assert!(
        max - min <= 10,
        "the count does not grow with the names pulled: {counts:?}"
    );
    drop(open);
}
