//! A real nginx with libnginx-mod-rtmp for tests: one process (`master_process off`), its own
//! config, pid, logs and temp paths in a tempdir, RTMP and HTTP (HLS) on free loopback ports,
//! hooks pointing at a gateway. Killed by its own PID on drop; the system nginx is never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::nginx::NginxProc;
use super::redis::free_port;

/// Where Debian's libnginx-mod-rtmp installs the module.
pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub struct NginxRtmp {
    pub rtmp_port: u16,
    pub http_port: u16,
    proc: NginxProc,
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
        let proc = NginxProc::start(
            dir,
            &conf,
            &[rtmp_port, http_port],
            "nginx with libnginx-mod-rtmp",
        );
        NginxRtmp {
            rtmp_port,
            http_port,
            proc,
        }
    }

    pub fn dir(&self) -> &Path {
        self.proc.dir()
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
        self.proc.dir().join("hls").join(name)
    }

    pub fn error_log(&self) -> String {
        self.proc.error_log()
    }
}

/// ffmpeg pushing `secs` seconds of a 320x180 test pattern with a tone (H.264/AAC, one keyframe
/// a second, so nginx-rtmp cuts 1 s fragments) to `url`, in real time; `stderr` is where its
/// complaints go (piped when a test reads why a publish was refused).
pub fn push(url: &str, secs: u32, stderr: Stdio) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn ffmpeg")
}
