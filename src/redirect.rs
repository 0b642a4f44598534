//! Redirects: answer with a `Location` and never touch the node. The cheapest thing a gateway
//! can do, used for snapshots, images and downloads.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{empty, Body};
use crate::error::GatewayError;
use crate::upstream_path::BaseUrl;

/// A redirect to `base` + `path` + `query`. The origin is always `base`'s: `path` comes from a
/// template that starts with `/`, and `HeaderValue` refuses CR/LF and other control bytes.
pub fn respond(
    status: u16,
    base: &BaseUrl,
    path: &str,
    query: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    let loc = base.join(path, query);
    let value = HeaderValue::from_str(&loc)
        .map_err(|_| GatewayError::BadRequest("cannot build Location"))?;
    let status = StatusCode::from_u16(status)
        .map_err(|_| GatewayError::Internal("bad redirect status".into()))?;
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, value);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keeps_the_base_origin() {
        let base = BaseUrl::parse("http://127.0.0.1:9001").expect("url");
        let r = respond(302, &base, "//evil.example/x", Some("a=1")).expect("ok");
        assert_eq!(
            r.headers()["location"],
            "http://127.0.0.1:9001//evil.example/x?a=1"
        );
        assert!(respond(302, &base, "/x", Some("a=%0d%0aSet-Cookie:x\r\n")).is_err());
    }
}
