//! The one response/request body type shared by the gateway and the origin, and the small
//! constructors every handler needs. A boxed body keeps handler signatures simple; the cost is
//! one virtual call per frame, which is noise next to a syscall.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Any error a body may yield; boxed so upstream (hyper) and local errors share one type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response we produce and every request we forward.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body that holds `data` in full (small, already-built payloads only).
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with no bytes.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response with the given status; `value` is serialized once here.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A request's body as the server hands it to a handler: hyper's, or none at all for the
/// requests streamgate's own HTTP/1.1 server parses (`crate::http1`), which only takes those
/// that declare no body. One type, so handlers are the same for both servers.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    Empty,
    /// hyper's streaming body (HTTP/2, TLS, uploads, anything the own server hands over).
    Hyper(hyper::body::Incoming),
}

impl From<hyper::body::Incoming> for RequestBody {
    fn from(b: hyper::body::Incoming) -> Self {
        Self::Hyper(b)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Empty => std::task::Poll::Ready(None),
            Self::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Empty => http_body::SizeHint::with_exact(0),
            Self::Hyper(b) => b.size_hint(),
        }
    }
}
