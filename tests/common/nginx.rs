//! One nginx child process for tests, whatever its config: written into its own tempdir,
//! started in the foreground (`-p dir -c conf`), waited for until every port it should listen
//! on accepts (bounded), killed by its own PID on drop. The system nginx is never touched.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::READY_TIMEOUT;

pub struct NginxProc {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl NginxProc {
    /// Writes `conf` to `dir/nginx.conf`, starts nginx on it and waits until `ports` accept.
    /// Panics with nginx's error log if it exits or does not listen in time.
    pub fn start(dir: tempfile::TempDir, conf: &str, ports: &[u16], what: &str) -> Self {
        let d = dir.path();
        std::fs::write(d.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nginx (is {what} installed?): {e}"));
        let mut n = Self {
            child: Some(child),
            dir,
        };
        let start = Instant::now();
        for &port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(Ok(Some(st))) = n.child.as_mut().map(|c| c.try_wait()) {
                    panic!("nginx exited ({st}); error.log:\n{}", n.error_log());
                }
                if start.elapsed() > READY_TIMEOUT {
                    panic!(
                        "nginx did not listen on {port}; error.log:\n{}",
                        n.error_log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        n
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
