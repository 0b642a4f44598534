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
    // The joined string's own bytes become the value (`join` sizes it exactly, so no copy and
    // no second allocation); the same check as `from_str`.
    let loc = bytes::Bytes::from(base.join(path, query));
    let value = HeaderValue::from_maybe_shared(loc)
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

/// The `server.https_redirect` listener: every request, whatever its path, is sent to the same
/// path and query over HTTPS. GET and HEAD get a 301 (what browsers and crawlers remember);
/// other methods a 308, which keeps the method and body.
///
/// Where to: the `public_url` when it is an `https://` URL set in the config (one canonical
/// name); otherwise the host the client asked for (its `Host`, port removed) on the first TLS
/// listener's port. Redirecting to the client's own `Host` sends only that client where it
/// already meant to go, as `return 301 https://$host$request_uri` does in nginx.
pub struct HttpsRedirect {
    /// `public_url`, when it is set and says `https`.
    pub public: Option<BaseUrl>,
    /// The first TLS listener's port (left out of the URL when it is 443).
    pub tls_port: u16,
}

impl HttpsRedirect {
    /// The `Location` for a request, or `None` when it names no usable host.
    pub fn location(&self, req: &http::request::Parts) -> Option<String> {
        let path = req.uri.path();
        let query = req.uri.query();
        if let Some(base) = &self.public {
            return Some(base.join(path, query));
        }
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
        // Parsed as an authority: no user info, path, spaces or control bytes get through.
        let auth: http::uri::Authority = host.parse().ok()?;
        if auth.as_str().contains('@') {
            return None;
        }
        let name = auth.host();
        let mut loc = match self.tls_port {
            443 => format!("https://{name}"),
            p => format!("https://{name}:{p}"),
        };
        loc.push_str(path);
        if let Some(q) = query {
            loc.push('?');
            loc.push_str(q);
        }
        Some(loc)
    }
}

impl crate::server::Handler for HttpsRedirect {
    async fn call(
        &self,
        req: http::Request<crate::body::RequestBody>,
        _conn: crate::server::ConnInfo,
    ) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        let rid = crate::request_id::from_headers(&parts.headers);
        let status = if matches!(parts.method, http::Method::GET | http::Method::HEAD) {
            StatusCode::MOVED_PERMANENTLY
        } else {
            StatusCode::PERMANENT_REDIRECT
        };
        let mut resp = match self
            .location(&parts)
            .and_then(|l| HeaderValue::from_str(&l).ok())
        {
            Some(loc) => {
                let mut r = Response::new(empty());
                *r.status_mut() = status;
                r.headers_mut().insert(header::LOCATION, loc);
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                r
            }
            None => GatewayError::BadRequest("no usable Host to redirect to")
                .to_response(rid.to_str().unwrap_or_default()),
        };
        resp.headers_mut().insert(crate::request_id::HEADER, rid);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn https_redirect_targets() {
        let by_host = HttpsRedirect {
            public: None,
            tls_port: 8443,
        };
        assert_eq!(
            by_host
                .location(&parts("/flv/a.flv?token=x", Some("video.test:8080")))
                .as_deref(),
            Some("https://video.test:8443/flv/a.flv?token=x")
        );
        assert_eq!(
            by_host.location(&parts("/", Some("[::1]:80"))).as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(by_host.location(&parts("/", None)), None);
        assert_eq!(by_host.location(&parts("/", Some("a b"))), None);
        assert_eq!(by_host.location(&parts("/", Some("u@evil.test"))), None);
        let standard = HttpsRedirect {
            public: None,
            tls_port: 443,
        };
        assert_eq!(
            standard
                .location(&parts("/x", Some("video.test")))
                .as_deref(),
            Some("https://video.test/x")
        );
        let public = HttpsRedirect {
            public: Some(BaseUrl::parse("https://cdn.test/tv").expect("url")),
            tls_port: 8443,
        };
        assert_eq!(
            public.location(&parts("/x?a=1", Some("other"))).as_deref(),
            Some("https://cdn.test/tv/x?a=1")
        );
    }

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
