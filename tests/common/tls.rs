//! TLS test fixtures: a throwaway CA and leaf certificates (rcgen), curl over TLS, and a Rust
//! client (tokio-rustls + hyper) that can hold HTTP/2 streams and read the served certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA that signs the test's leaf certificates; curl and the Rust client trust it.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Where its certificate is written (for `curl --cacert`).
    pub file: PathBuf,
}

/// A leaf certificate and its key, written as PEM files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf's DER, to compare with what a server presented.
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "streamgate test CA");
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA");
        let file = dir.join("ca.pem");
        std::fs::write(&file, issuer.pem()).expect("write CA");
        Self { issuer, file }
    }

    /// Issues a leaf for `names` with common name `cn`, written to `dir/{file}.crt|.key`.
    pub fn leaf(&self, dir: &Path, file: &str, names: &[&str], cn: &str) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let leaf = Leaf {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        leaf
    }

    /// A rustls client config trusting this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]], sni: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.issuer.der().to_vec()))
            .expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg.enable_sni = sni;
        Arc::new(cfg)
    }
}

/// `listen` entry for a TLS listener on 127.0.0.1:0 serving `leaves` (first is the default).
pub fn tls_listen(leaves: &[&Leaf]) -> String {
    let certs: Vec<String> = leaves
        .iter()
        .map(|l| format!("{{ cert = {:?}, key = {:?} }}", l.cert, l.key))
        .collect();
    format!(
        "{{ address = \"127.0.0.1:0\", tls = {{ certificates = [{}] }} }}",
        certs.join(", ")
    )
}

/// Connects over TLS to `addr` naming `name`; the stream and the leaf the server presented.
pub async fn connect(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> (TlsStream<TcpStream>, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let server = ServerName::try_from(name.to_string()).expect("name");
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(cfg).connect(server, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a certificate");
    (tls, leaf)
}

/// The leaf a fresh connection is served for `name`.
pub fn served_leaf(cfg: Arc<rustls::ClientConfig>, addr: SocketAddr, name: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async { connect(cfg, addr, name).await.1 })
}

/// An HTTP/2 connection over TLS (ALPN h2) with a small per-stream window, so a stream nobody
/// reads fills its window quickly; the connection window stays large.
pub async fn h2_connect(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let (tls, _) = connect(cfg, addr, name).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN chose h2"
    );
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(16 << 20)
        .adaptive_window(false)
        .handshake(TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// `GET https://{name}{path}` on an h2 connection; the response with its body unread.
pub async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    name: &str,
    path: &str,
) -> http::Response<hyper::body::Incoming> {
    send.ready().await.expect("ready");
    let req = http::Request::get(format!("https://{name}{path}"))
        .body(Empty::new())
        .expect("request");
    tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
        .await
        .expect("response in time")
        .expect("response")
}

/// Reads `body` until `want` bytes have come (bounded by `limit`); returns what came.
pub async fn read_at_least(
    body: &mut hyper::body::Incoming,
    want: usize,
    limit: Duration,
) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < want {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} bytes in {limit:?}", got.len()));
        match frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    got.extend_from_slice(d);
                }
            }
            other => panic!("body ended after {} bytes: {other:?}", got.len()),
        }
    }
    got
}

/// What curl reported for one transfer.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (28: `--max-time` reached, as on a live stream).
    pub code: i32,
    /// `%{http_version} %{http_code} %{num_connects}`, whitespace-separated.
    pub http_version: String,
    pub status: u16,
    pub body: Vec<u8>,
    /// Response headers as curl printed them (`-D -` goes to a file here).
    pub headers: String,
    pub stderr: String,
}

/// Runs curl against `https://{name}:{port}{path}` resolving `name` to 127.0.0.1, trusting the
/// test CA. `extra` are more curl arguments (`--http2`, `-r 0-99`, `-H ...`).
pub fn curl(ca: &Ca, name: &str, addr: SocketAddr, path: &str, extra: &[&str]) -> Curl {
    let dir = tempfile::tempdir().expect("tmp");
    let body = dir.path().join("body");
    let headers = dir.path().join("headers");
    let url = format!("https://{name}:{}{path}", addr.port());
    let resolve = format!("{name}:{}:127.0.0.1", addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca.file)
        .args(["--resolve", &resolve, "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(extra)
        .arg(&url)
        .output()
        .expect("run curl");
    let w = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = w.split_whitespace();
    Curl {
        code: out.status.code().unwrap_or(-1),
        http_version: parts.next().unwrap_or_default().to_string(),
        status: parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        body: std::fs::read(&body).unwrap_or_default(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Curl {
    /// The last value of response header `name` (after any redirects curl followed).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .next_back()
    }
}
