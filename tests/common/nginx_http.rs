//! A real, stock nginx (HTTP only, no extra modules) for tests: one process
//! (`master_process off`), its own config, pid, logs, temp paths and document root in a
//! tempdir, on a free loopback port. Killed by its own PID on drop; the system nginx is never
//! touched.

use std::net::SocketAddr;
use std::path::Path;

use super::nginx::NginxProc;
use super::redis::free_port;

pub struct NginxHttp {
    pub port: u16,
    proc: NginxProc,
}

impl NginxHttp {
    /// Starts nginx with `server_body` inside its `server { … }` block (after `listen`), and
    /// `files` (path relative to the document root, contents) written under the root, which
    /// `{root}` in `server_body` names.
    pub fn start(server_body: &str, files: &[(&str, &[u8])]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let root = d.join("www");
        for (rel, data) in files {
            let f = root.join(rel);
            std::fs::create_dir_all(f.parent().expect("file has a parent")).expect("mkdir");
            std::fs::write(&f, data).expect("write file");
        }
        std::fs::create_dir_all(d.join("tmp")).expect("tmp dir");
        let port = free_port();
        let p = |x: &Path| x.to_str().expect("utf-8 path").to_string();
        let body = server_body.replace("{root}", &p(&root));
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {err} info;
events {{ worker_connections 64; }}
http {{
    access_log {access};
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        {body}
    }}
}}
"#,
            pid = p(&d.join("nginx.pid")),
            err = p(&d.join("error.log")),
            access = p(&d.join("access.log")),
            tmp = p(&d.join("tmp")),
        );
        let proc = NginxProc::start(dir, &conf, &[port], "nginx");
        NginxHttp { port, proc }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn error_log(&self) -> String {
        self.proc.error_log()
    }

    /// The access log so far (a line per request, written when its answer is complete).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.proc.dir().join("access.log")).unwrap_or_default()
    }

    /// Access log lines of `GET`s whose target starts with `target` (path, maybe query).
    pub fn gets(&self, target: &str) -> usize {
        let needle = format!("\"GET {target}");
        self.access_log()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// The document root (files written here are served at once).
    pub fn root(&self) -> std::path::PathBuf {
        self.proc.dir().join("www")
    }
}
