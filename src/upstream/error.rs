//! What went wrong in one attempt at one node, classified once: which side failed, and whether
//! the same request may be tried on another node. `error.rs` turns it into a status.

use std::time::Duration;

use crate::body::BoxError;
use crate::error::Source;

/// One failed attempt at `node`.
#[derive(Debug, thiserror::Error)]
#[error("node {node}: {kind}")]
pub struct UpstreamError {
    /// The node's id (as in the registry or `[[nodes]]`).
    pub node: String,
    pub kind: ErrorKind,
    /// The request carried no body and a safe method, so sending it again is harmless. Set by
    /// [`super::Transport::send`]; [`UpstreamError::retryable`] reads it.
    pub(super) replayable: bool,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The TCP connection could not be made (refused, unreachable, DNS).
    #[error("cannot connect: {0}")]
    Connect(BoxError),
    /// The TCP connection did not complete within `connect_timeout`.
    #[error("connect timed out")]
    ConnectTimeout,
    /// No response headers within `response_header_timeout` after the request was sent.
    #[error("no response headers within {0:?}")]
    HeaderTimeout(Duration),
    /// The connection was closed or reset before the response headers arrived.
    #[error("connection closed before the response headers: {0}")]
    Closed(BoxError),
    /// The node stopped reading the request body for `body_idle_timeout`.
    #[error("stopped reading the request body for {0:?}")]
    UploadStalled(Duration),
    /// Anything else on the node's side (an unparsable answer, for one).
    #[error("{0}")]
    Other(BoxError),
    /// The viewer's own request body broke (bad chunk, cut short): not the node's fault.
    #[error("the client's request body failed: {0}")]
    ClientBody(BoxError),
    /// The viewer stopped sending its request body for `body_idle_timeout`.
    #[error("the client sent no request body for {0:?}")]
    ClientBodyTimeout(Duration),
}

impl ErrorKind {
    /// A failure of the node itself (counted against its health, and worth trying another
    /// node for): it could not be reached or did not answer. A 4xx/5xx answer is not one.
    pub fn is_node_failure(&self) -> bool {
        matches!(
            self,
            Self::Connect(_)
                | Self::ConnectTimeout
                | Self::HeaderTimeout(_)
                | Self::Closed(_)
                | Self::UploadStalled(_)
        )
    }

    /// The `kind` label of `streamgate_upstream_errors_total`; `None` for the viewer's own
    /// failures, which are not the node's.
    pub fn metric_kind(&self) -> Option<&'static str> {
        Some(match self {
            Self::Connect(_) => "connect",
            Self::ConnectTimeout => "connect_timeout",
            Self::HeaderTimeout(_) => "header_timeout",
            Self::Closed(_) => "closed",
            Self::UploadStalled(_) => "upload_stalled",
            Self::Other(_) => "other",
            Self::ClientBody(_) | Self::ClientBodyTimeout(_) => return None,
        })
    }

    /// Every value [`ErrorKind::metric_kind`] can give.
    pub const METRIC_KINDS: [&'static str; 6] = [
        "connect",
        "connect_timeout",
        "header_timeout",
        "closed",
        "upload_stalled",
        "other",
    ];

    /// Which side failed.
    pub fn side(&self) -> Source {
        match self {
            Self::ClientBody(_) | Self::ClientBodyTimeout(_) => Source::Downstream,
            _ => Source::Upstream,
        }
    }

    /// A TCP connect that failed (a timeout reported by the socket counts as one).
    pub fn connect(e: std::io::Error) -> Self {
        Self::classify_error(&e, true, false)
    }

    /// An I/O error on a connection once the request is on its way: reset, broken pipe or
    /// an end of stream before the answer's head is the connection closing under us
    /// ([`ErrorKind::Closed`], worth another node); anything else is the node's failure too.
    pub fn io(e: std::io::Error) -> Self {
        Self::classify_error(&e, false, false)
    }

    /// An answer that is not valid HTTP/1 (a bad head, a bad or conflicting length): a 502,
    /// as nginx answers it.
    pub fn parse(msg: impl Into<String>) -> Self {
        Self::Other(msg.into().into())
    }

    /// Classifies a client error by walking its source chain. `client_body_failed` is what the
    /// request body wrapper recorded: hyper reports a failed outgoing body as its own error.
    pub fn classify(e: &hyper_util::client::legacy::Error, client_body_failed: bool) -> Self {
        Self::classify_error(e, e.is_connect(), client_body_failed)
    }

    /// [`ErrorKind::classify`] for any error: `connecting` says it came from making the TCP
    /// connection (the pool's connector) rather than from a request on one.
    pub fn classify_error(
        e: &(dyn std::error::Error + 'static),
        connecting: bool,
        client_body_failed: bool,
    ) -> Self {
        let msg = || -> BoxError { chain_text(e).into() };
        if client_body_failed || chain_has::<ClientBodyError>(e) {
            return Self::ClientBody(msg());
        }
        if connecting {
            if chain_io_kind(e) == Some(std::io::ErrorKind::TimedOut) {
                return Self::ConnectTimeout;
            }
            return Self::Connect(msg());
        }
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = src {
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                    return Self::Closed(msg());
                }
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                if matches!(
                    io.kind(),
                    K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
                ) {
                    return Self::Closed(msg());
                }
            }
            src = s.source();
        }
        Self::Other(msg())
    }
}

impl UpstreamError {
    pub fn new(node: impl Into<String>, kind: ErrorKind) -> Self {
        Self {
            node: node.into(),
            kind,
            replayable: false,
        }
    }

    /// Whether the same request may go to the next node: the node failed before answering, and
    /// the request had no body (a body already streamed to a node cannot be sent again).
    pub fn retryable(&self) -> bool {
        self.replayable && self.kind.is_node_failure()
    }

    /// Which side failed: `Upstream` (the node) or `Downstream` (the viewer's request body).
    pub fn side(&self) -> Source {
        self.kind.side()
    }
}

/// The error the request body wrapper yields when the viewer's body fails; found again in the
/// client error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientBodyError(pub String);

fn chain_has<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<T>() {
            return true;
        }
        src = s.source();
    }
    false
}

fn chain_io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        src = s.source();
    }
    None
}

/// "outer: inner: innermost", for logs (hyper's top-level messages say little alone).
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_and_side() {
        let mut e = UpstreamError::new("a", ErrorKind::ConnectTimeout);
        assert!(!e.retryable(), "a request with a body is never replayed");
        e.replayable = true;
        assert!(e.retryable());
        assert_eq!(e.side(), Source::Upstream);
        for kind in [
            ErrorKind::HeaderTimeout(Duration::from_secs(1)),
            ErrorKind::Closed("reset".into()),
            ErrorKind::Connect("refused".into()),
        ] {
            let mut e = UpstreamError::new("a", kind);
            e.replayable = true;
            assert!(e.retryable(), "{e}");
        }
        for kind in [
            ErrorKind::Other("bad header".into()),
            ErrorKind::ClientBody("bad chunk".into()),
            ErrorKind::ClientBodyTimeout(Duration::from_secs(1)),
        ] {
            let mut e = UpstreamError::new("a", kind);
            e.replayable = true;
            assert!(!e.retryable(), "{e}");
        }
        assert_eq!(ErrorKind::ClientBody("x".into()).side(), Source::Downstream);
        assert_eq!(
            ErrorKind::ClientBodyTimeout(Duration::ZERO).side(),
            Source::Downstream
        );
    }

    #[test]
    fn chain_search() {
        let inner = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        let outer = std::io::Error::other(inner);
        // `io::Error::other` keeps the inner error as its source.
        assert!(chain_io_kind(&outer).is_some());
        let body: BoxError = Box::new(ClientBodyError("bad chunk".into()));
        assert!(chain_has::<ClientBodyError>(body.as_ref()));
        assert!(!chain_has::<ClientBodyError>(&outer));
    }

    /// The real thing: a refused connect, a connect to a silent address, a reset before headers.
    #[tokio::test]
    async fn classifies_real_client_errors() {
        use crate::body::empty;
        use hyper_util::client::legacy::{connect::HttpConnector, Client};
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_millis(200)));
        let client: Client<_, crate::body::Body> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build(http);
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr");
        let req = http::Request::get(format!("http://{dead}/"))
            .body(empty())
            .expect("req");
        let e = client.request(req).await.expect_err("refused");
        assert!(matches!(
            ErrorKind::classify(&e, false),
            ErrorKind::Connect(_)
        ));

        // Accept, read, close without answering.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            }
        });
        let req = http::Request::get(format!("http://{addr}/"))
            .body(empty())
            .expect("req");
        let e = client.request(req).await.expect_err("closed");
        let k = ErrorKind::classify(&e, false);
        assert!(matches!(k, ErrorKind::Closed(_)), "{k:?}");
        assert!(matches!(
            ErrorKind::classify(&e, true),
            ErrorKind::ClientBody(_)
        ));
    }
}
