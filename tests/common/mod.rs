//! Helpers shared by the integration tests: start real `streamgate` processes (gateway, origin)
//! on ephemeral loopback ports, wait for readiness with a bound, and stop them by PID on drop.
#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod ll_hls;
pub mod nginx;
pub mod nginx_http;
pub mod nginx_rtmp;
pub mod redis;
pub mod tls;
pub mod upstream;
pub mod ws;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Upper bound for any readiness wait; generous for a loaded 2-core CI machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Path to the built `streamgate` binary (one build shared by every test).
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_streamgate"))
}

/// The repository's committed sample media.
pub fn media_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("media")
}

/// A child process we started; killed (by its own PID) when dropped.
pub struct Proc {
    pub child: Child,
    /// Addresses printed as `listening on http://ADDR` (or `https://`), in order.
    pub addrs: Vec<SocketAddr>,
    /// Lines of stdout after the ready lines (demo URLs, for instance).
    pub stdout_rx: mpsc::Receiver<String>,
    /// Everything the process wrote to stderr (its logs), collected in the background.
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proc {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Sends SIGTERM to this process only.
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
    /// Waits up to `limit` for the process to exit; returns its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
    /// The logs so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `streamgate ARGS…` and waits until it has printed `expect_listeners` ready lines.
pub fn spawn(args: &[&str], expect_listeners: usize) -> Proc {
    spawn_under(&[], args, expect_listeners)
}

/// [`spawn`] under a wrapper command (`wrapper` then the binary, e.g. `prlimit --nofile=...`).
pub fn spawn_under(wrapper: &[&str], args: &[&str], expect_listeners: usize) -> Proc {
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    let mut child = cmd
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamgate");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let stderr = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Ok(mut s) = stderr.lock() {
                            s.push_str(&String::from_utf8_lossy(&buf[..n]));
                        }
                    }
                }
            }
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut addrs = Vec::new();
    while addrs.len() < expect_listeners {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let rest = line
                    .split("listening on http://")
                    .nth(1)
                    .or_else(|| line.split("listening on https://").nth(1));
                if let Some(rest) = rest {
                    let a = rest.split_whitespace().next().unwrap_or("");
                    addrs.push(
                        a.parse()
                            .unwrap_or_else(|_| panic!("bad ready line {line:?}")),
                    );
                }
            }
            Err(_) => {
                let _ = child.kill();
                let logs = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!("streamgate {args:?} did not become ready; stderr:\n{logs}");
            }
        }
    }
    Proc {
        child,
        addrs,
        stdout_rx: rx,
        stderr,
    }
}

/// Starts an origin node serving `media`.
pub fn origin(media: &Path) -> Proc {
    spawn(
        &[
            "origin",
            "--media",
            media.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ],
        1,
    )
}

/// Writes `toml` to a temp file and starts a gateway with it.
pub fn gateway(toml: &str) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streamgate.toml");
    std::fs::write(&path, toml).expect("write config");
    let p = spawn(&["serve", "--config", path.to_str().expect("utf-8")], 1);
    (p, dir)
}

/// A raw HTTP/1.1 response, as a user agent sees it.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` (a full request, `Connection: close` recommended) and reads the whole response.
pub fn raw_request(addr: SocketAddr, raw: &str) -> RawResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READY_TIMEOUT)).expect("timeout");
    s.write_all(raw.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

/// Parses a complete HTTP/1.1 response (Content-Length, chunked or read-to-close bodies).
pub fn parse_response(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..pos]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// `GET path` with `Connection: close` and optional extra header lines (each ending in \r\n).
pub fn get(addr: SocketAddr, path: &str, extra_headers: &str) -> RawResponse {
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra_headers}Connection: close\r\n\r\n"),
    )
}

/// Opens a connection, sends `GET path`, and returns the stream after the response head has
/// been read, with the head parsed; the body is left to the caller (live streams).
pub fn open_stream(addr: SocketAddr, path: &str) -> (RawResponse, TcpStream, Vec<u8>) {
    open_stream_with(addr, path, "")
}

/// [`open_stream`] with extra header lines (each ending in \r\n).
pub fn open_stream_with(
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
) -> (RawResponse, TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READY_TIMEOUT)).expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra_headers}\r\n").as_bytes())
        .expect("write");
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        let n = s.read(&mut tmp).expect("read head");
        assert!(n > 0, "closed before response head");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_response(&buf[..end + 4]);
            let rest = buf[end + 4..].to_vec();
            return (head, s, rest);
        }
    }
}

/// Waits (bounded) until `cond` holds, polling every 20 ms.
pub fn wait_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    poll_until(what, limit, Duration::from_millis(20), cond);
}

/// Waits (bounded by `limit`) until `cond` holds, polling every `every`; returns how long it
/// took, for tests that report a propagation time.
pub fn poll_until(
    what: &str,
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
    start.elapsed()
}

pub mod flv;

/// The access-log line of request `rid`, once the gateway has written it (bounded wait).
pub fn access_line(gw: &Proc, rid: &str) -> String {
    wait_until("access log line", Duration::from_secs(10), || {
        gw.logs().contains(&format!("request_id={rid}"))
    });
    gw.logs()
        .lines()
        .find(|l| l.contains(&format!("request_id={rid}")))
        .unwrap_or_default()
        .to_string()
}

/// Opens `GET path` with a tiny receive buffer and never reads: a stalled viewer.
pub fn stalled_get(addr: SocketAddr, path: &str) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&addr.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .expect("write");
    s
}

/// Reads everything until the server closes; tells whether the chunked body ended cleanly
/// (`true`) or the connection was just closed (`false`).
pub fn drain_until_closed(mut s: TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 64 {
                    tail.drain(..tail.len() - 64);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    tail.ends_with(b"0\r\n\r\n")
}

/// Saves `dur` of a live stream's body (de-chunked) to `file`.
pub fn capture(addr: SocketAddr, path: &str, dur: Duration, file: &Path) {
    let mut s = flv::FlvStream::open(addr, path);
    let mut out = s.header(dur).bytes.to_vec();
    for t in s.tags_for(dur) {
        out.extend_from_slice(t.bytes());
    }
    std::fs::write(file, out).expect("write capture");
}

/// ffprobe finds exactly one H.264 and one AAC stream in `file`, and prints no error.
pub fn assert_ffprobe_h264_aac(file: &Path) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs (the test command installs ffmpeg)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffprobe errors: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut codecs: Vec<String> = v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or("").to_string())
        .collect();
    codecs.sort();
    assert_eq!(codecs, vec!["aac", "h264"]);
}
