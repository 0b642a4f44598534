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
