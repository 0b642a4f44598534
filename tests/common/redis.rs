//! A real `redis-server` for tests: its own port, directory and config, no persistence, killed by
//! its own PID on drop. It can be killed and restarted on the same port to test outages.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::READY_TIMEOUT;

/// A free loopback port: bind :0, read the port, release it (the program we start cannot be
/// told to use :0 and report back).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind :0")
        .port()
}

/// A running (or deliberately stopped) redis-server.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Extra arguments (`--replicaof …` for a replica).
    extra: Vec<String>,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts redis-server with extra arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.launch();
        r
    }

    /// A replica of `master`.
    pub fn replica_of(master: &Redis) -> Self {
        Self::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()])
    }

    /// The server's PID (None once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn stop(&self) {
        assert!(self.signal("-STOP"), "SIGSTOP redis");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn cont(&self) {
        assert!(self.signal("-CONT"), "SIGCONT redis");
    }

    /// Sends a signal to this server only (by its PID); `false` if it could not.
    fn signal(&self, sig: &str) -> bool {
        self.pid().is_some_and(|pid| {
            Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// A synchronous client connection (redis-rs), for checks and direct commands.
    pub fn conn(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to redis")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn launch(&mut self) {
        let dir: PathBuf = self.dir.path().to_path_buf();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", dir.to_str().expect("utf-8 path")])
            .args(&self.extra)
            .args([
                "--logfile",
                dir.join("redis.log").to_str().expect("utf-8 path"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        let start = Instant::now();
        while self.command("PING").as_deref() != Some("+PONG") {
            if start.elapsed() > READY_TIMEOUT {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                panic!(
                    "redis-server did not answer PING on port {}; log:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one inline command and returns the first reply line (None if unreachable).
    pub fn command(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        Some(text.lines().next().unwrap_or("").to_string())
    }

    /// SIGKILLs the server (its own PID) and waits until the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// A real Redis Sentinel (`redis-sentinel`, or `redis-server --sentinel`) watching one master as
/// `mymaster`, with a quorum of 1 and short timeouts so a failover takes seconds.
pub struct Sentinel {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn start(master: &Redis) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {d}\nlogfile {d}/sentinel.log\n\
                 sentinel monitor mymaster 127.0.0.1 {m} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n\
                 sentinel parallel-syncs mymaster 1\n",
                d = dir.path().display(),
                m = master.port
            ),
        )
        .expect("write sentinel.conf");
        let child = if Command::new("redis-sentinel")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok()
        {
            Command::new("redis-sentinel").arg(&conf).spawn()
        } else {
            Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .spawn()
        }
        .expect("spawn redis-sentinel");
        let s = Sentinel {
            port,
            child,
            _dir: dir,
        };
        let start = Instant::now();
        while s.master_port().is_none() {
            assert!(start.elapsed() < READY_TIMEOUT, "sentinel did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// The port of the master the sentinel currently names.
    pub fn master_port(&self) -> Option<u16> {
        let mut c = ::redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        let (_, port): (String, String) = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query(&mut c)
            .ok()?;
        port.parse().ok()
    }

    /// The URL a gateway uses to find the master through this sentinel.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster", self.port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway on the Redis registry at `redis_url` (keys under `key_prefix`, hook secret `h00k`,
/// admin token `adm1n`) with one registry proxy route `/hls/{stream}/…`; `extra` goes into
/// `[registry]`. Shared by the registry tests that run several gateways on one Redis.
pub fn gateway_config(redis_url: &str, key_prefix: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[upstream]
connect_timeout = "1s"
response_header_timeout = "2s"

[registry]
backend = "redis"
url = "{redis_url}"
hook_secret = "h00k"
key_prefix = "{key_prefix}"
{extra}

[admin]
token = "adm1n"

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
upstream = "/hls/{{stream}}/{{*rest}}"
"#
    )
}

/// The status of a viewer's playlist request for `stream` through that route.
pub fn play(addr: std::net::SocketAddr, stream: &str) -> u16 {
    super::get(addr, &format!("/hls/{stream}/index.m3u8"), "").status
}
