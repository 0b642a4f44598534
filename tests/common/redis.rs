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
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir,
        };
        r.launch();
        r
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
        self.kill();
    }
}
