//! A real nginx with libnginx-mod-rtmp for tests: one process (`master_process off`), its own
//! config, pid, logs and temp paths in a tempdir, RTMP and HTTP (HLS) on free loopback ports,
//! hooks pointing at a gateway. Killed by its own PID on drop; the system nginx is never touched.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;
use super::READY_TIMEOUT;

/// Where Debian's libnginx-mod-rtmp installs the module.
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub struct NginxRtmp {
    pub rtmp_port: u16,
    pub http_port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl NginxRtmp {
    /// Starts nginx whose `live` application announces publishes to `hook_base` (a gateway URL
    /// up to and including the query, e.g. `http://127.0.0.1:P/hooks/nginx-rtmp?node=n1&secret=s`)
    /// and writes nested HLS (`/hls/NAME/index.m3u8`) served over HTTP.
    pub fn start(hook_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("hls")).expect("hls dir");
        std::fs::create_dir_all(d.join("tmp")).expect("tmp dir");
        let (rtmp_port, http_port) = (free_port(), free_port());
        let p = |x: &str| d.join(x).to_str().expect("utf-8 path").to_string();
        let conf = format!(
            r#"load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {err} info;
events {{ worker_connections 128; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            hls on;
            hls_path {hls};
            hls_nested on;
            hls_fragment 1s;
            hls_playlist_length 6s;
            on_publish {hook_url};
            on_publish_done {hook_url};
        }}
    }}
}}
http {{
    access_log {access};
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }}
    server {{
        listen 127.0.0.1:{http_port};
        location /hls {{
            root {root};
            add_header Cache-Control no-cache;
        }}
    }}
}}
"#,
            pid = p("nginx.pid"),
            err = p("error.log"),
            hls = p("hls"),
            access = p("access.log"),
            tmp = p("tmp"),
            root = d.to_str().expect("utf-8 path"),
        );
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
            .expect("spawn nginx (is nginx with libnginx-mod-rtmp installed?)");
        let mut n = NginxRtmp {
            rtmp_port,
            http_port,
            child: Some(child),
            dir,
        };
        let start = Instant::now();
        for port in [rtmp_port, http_port] {
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

    /// The HTTP base URL serving `/hls/...` (the node's URL in the registry).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn rtmp_url(&self, name_and_query: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name_and_query}", self.rtmp_port)
    }

    /// Where nginx writes a stream's HLS.
    pub fn hls_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("hls").join(name)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
