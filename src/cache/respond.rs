//! A viewer's answer from a cached object: `Age`, `HEAD`, conditional requests and single
//! byte ranges, all without the node. Ranges use the origin's own parser (one parser).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::object::Object;
use crate::body::{empty, Body};
use crate::origin::files::{parse_range, RangeRequest};

/// The viewer's answer from `obj` for a request with `method` and `req` headers.
pub fn respond(obj: &Object, method: &Method, req: &HeaderMap, now: Instant) -> Response<Body> {
    // Room made once for what may be added below (`Age`, `Content-Length`, `Accept-Ranges`,
    // `Content-Range`): a clone is full, and each addition would grow it.
    let mut headers = obj.headers.clone();
    headers.reserve(4);
    headers.insert(header::AGE, HeaderValue::from(obj.age(now)));
    let head = *method == Method::HEAD;
    let ok = obj.status == StatusCode::OK;
    if ok && not_modified(&obj.headers, req) {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::ETAG,
            header::LAST_MODIFIED,
            header::CACHE_CONTROL,
            header::AGE,
            header::VARY,
        ] {
            if let Some(v) = headers.get(&name) {
                r.headers_mut().insert(name, v.clone());
            }
        }
        return r;
    }
    let len = obj.length();
    let range = match (ok, len, req.get(header::RANGE)) {
        (true, Some(len), Some(r)) if if_range_allows(&obj.headers, req) => {
            parse_range(r.as_bytes(), len)
        }
        _ => RangeRequest::Full,
    };
    let (status, start, end) = match (range, len) {
        (RangeRequest::Single { start, end }, Some(_)) => {
            (StatusCode::PARTIAL_CONTENT, start, Some(end + 1))
        }
        (RangeRequest::Unsatisfiable, Some(len)) => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        _ => (obj.status, 0, len),
    };
    if status == StatusCode::PARTIAL_CONTENT {
        let total = len.unwrap_or(0);
        let last = end.unwrap_or(0).saturating_sub(1);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{last}/{total}")) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
    match end {
        // The stored length is usually the answer's already: kept as it is then.
        Some(e) if !is_only_value(&headers, header::CONTENT_LENGTH, e - start) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(e - start));
        }
        Some(_) => {}
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    if ok {
        headers
            .entry(header::ACCEPT_RANGES)
            .or_insert(HeaderValue::from_static("bytes"));
    }
    let body = if head {
        empty()
    } else {
        obj.body.reader(start, end).boxed()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// Whether `name` has exactly one value in `h`, and it is `n` in decimal as `HeaderValue::from`
/// writes it (no sign, no leading zeros or spaces).
fn is_only_value(h: &HeaderMap, name: header::HeaderName, n: u64) -> bool {
    let mut all = h.get_all(name).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return false;
    };
    v.as_bytes() == itoa::Buffer::new().format(n).as_bytes()
}

/// `If-None-Match` (wins) or `If-Modified-Since` says the viewer's copy is current.
pub(super) fn not_modified(stored: &HeaderMap, req: &HeaderMap) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm
            .split(',')
            .any(|t| t.trim() == "*" || weak(t) == weak(etag));
    }
    let date = |h: &HeaderMap, n| {
        h.get(n)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    // The stored date is parsed only for a viewer that asks (most send no conditional).
    let Some(since) = date(req, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    date(stored, header::LAST_MODIFIED).is_some_and(|modified| modified <= since)
}

/// `If-Range`: the range applies only when the viewer's validator is the stored one.
pub(super) fn if_range_allows(stored: &HeaderMap, req: &HeaderMap) -> bool {
    let Some(v) = req.get(header::IF_RANGE) else {
        return true;
    };
    let same = |n| stored.get(n).is_some_and(|s| s == v);
    same(header::ETAG) || same(header::LAST_MODIFIED)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::buffer::Buffer;

    fn obj(body: &'static [u8], headers: &[(&'static str, &'static str)]) -> Object {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        Object::new(
            StatusCode::OK,
            h,
            Buffer::complete(bytes::Bytes::from_static(body)),
            Arc::new(crate::registry::Node {
                id: "n".into(),
                url: crate::upstream_path::BaseUrl::parse("http://127.0.0.1:1").expect("url"),
                expires: None,
            }),
            Instant::now(),
            None,
            true,
        )
    }

    fn req(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    async fn text(r: Response<Body>) -> String {
        let b = r.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    #[test]
    fn a_stored_length_is_kept_only_when_it_is_written_as_ours() {
        let mut h = HeaderMap::new();
        assert!(!is_only_value(&h, header::CONTENT_LENGTH, 0), "none");
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("32229"));
        assert!(is_only_value(&h, header::CONTENT_LENGTH, 32229));
        assert!(!is_only_value(&h, header::CONTENT_LENGTH, 3222));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("032229"));
        assert!(
            !is_only_value(&h, header::CONTENT_LENGTH, 32229),
            "rewritten"
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(is_only_value(&h, header::CONTENT_LENGTH, 0));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!is_only_value(&h, header::CONTENT_LENGTH, 0), "two values");
    }

    #[tokio::test]
    async fn ranges_head_and_conditionals_from_the_cache() {
        let o = obj(b"0123456789", &[("etag", "\"e1\"")]);
        let now = Instant::now();
        let r = respond(&o, &Method::GET, &req(&[("range", "bytes=2-4")]), now);
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 2-4/10");
        assert_eq!(r.headers()["content-length"], "3");
        assert_eq!(text(r).await, "234");
        let r = respond(&o, &Method::HEAD, &req(&[]), now);
        assert_eq!(r.headers()["content-length"], "10");
        assert_eq!(r.headers()["age"], "0");
        assert_eq!(text(r).await, "");
        let r = respond(&o, &Method::GET, &req(&[("if-none-match", "\"e1\"")]), now);
        assert_eq!(r.status(), 304);
        let r = respond(&o, &Method::GET, &req(&[("range", "bytes=20-")]), now);
        assert_eq!(r.status(), 416);
        let r = respond(
            &o,
            &Method::GET,
            &req(&[("range", "bytes=0-1"), ("if-range", "\"old\"")]),
            now,
        );
        assert_eq!(r.status(), 200);
        assert_eq!(text(r).await, "0123456789");
    }
}
