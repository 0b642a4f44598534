//! A minimal HTTP/1.1 client over one connection: loopback targets only, no pool, no redirects.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Any error of the load generator.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A parsed `http://IP:PORT/path?query` URL.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `IP:PORT` as given, for the Host header.
    pub host: String,
    pub path_and_query: String,
}

impl Target {
    /// Parses `url`, refusing anything but `http://` to a loopback IP address.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = host
            .parse()
            .map_err(|_| format!("{url:?}: the host must be IP:PORT"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{url:?}: only loopback targets are allowed"));
        }
        Ok(Self {
            addr,
            host: host.to_string(),
            path_and_query: path.to_string(),
        })
    }

    /// A GET request for this target, with an optional bearer token.
    pub fn get(&self, bearer: Option<&str>) -> Result<Request<Empty<Bytes>>, BoxError> {
        let mut b =
            Request::get(self.path_and_query.as_str()).header(header::HOST, self.host.as_str());
        if let Some(t) = bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        Ok(b.body(Empty::new())?)
    }
}

/// Opens one keep-alive connection to `t` within `timeout`. The connection's driver task ends
/// by itself when the returned sender is dropped or the peer closes.
pub async fn connect(t: &Target, timeout: Duration) -> Result<SendRequest<Empty<Bytes>>, BoxError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(t.addr))
        .await
        .map_err(|_| format!("connect to {} timed out", t.addr))??;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// GETs `url` and parses the body as JSON (small control documents: /stats, /api/v1/live).
pub async fn get_json(url: &str, bearer: Option<&str>) -> Result<serde_json::Value, BoxError> {
    let t = Target::parse(url)?;
    let work = async {
        let mut send = connect(&t, Duration::from_secs(2)).await?;
        let resp = send.send_request(t.get(bearer)?).await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 4 << 20)
            .collect()
            .await?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{url}: status {status}").into());
        }
        Ok::<_, BoxError>(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| format!("{url}: timed out"))?
}
