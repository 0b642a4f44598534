//! A request head, parsed from the connection's buffer, or the decision to let hyper have the
//! connection: the own server takes only requests whose framing leaves nothing to judge (HTTP/1.1,
//! no body, no upgrade, no `Expect`), and hands every other one, malformed ones included, to
//! hyper, whose answers (400, 431, 417…) stay the reference.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::body::RequestBody;

/// Most header lines a request may have (hyper's default; past it hyper answers 431).
const MAX_HEADERS: usize = 100;

/// What the buffer holds.
#[derive(Debug)]
pub(crate) enum Head {
    /// Not a whole head yet.
    Partial,
    /// A request this server answers: its head took `len` bytes of the buffer; `close`: the
    /// client asked for the connection to close after it.
    Request {
        req: Request<RequestBody>,
        len: usize,
        close: bool,
    },
    /// hyper answers this one, and every later one on the connection.
    Handoff,
}

/// Parses the head at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Handoff,
    };
    if parsed.version != Some(1) {
        return Head::Handoff;
    }
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return Head::Handoff;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::Handoff;
    };
    if method == Method::CONNECT {
        return Head::Handoff;
    }
    let Ok(uri) = Uri::from_maybe_shared(Bytes::copy_from_slice(path.as_bytes())) else {
        return Head::Handoff;
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    let mut close = false;
    for h in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Head::Handoff;
        };
        // A body, a protocol switch or an expectation: hyper's framing and answers.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return Head::Handoff;
        }
        let Ok(value) = HeaderValue::from_bytes(h.value) else {
            return Head::Handoff;
        };
        if name == header::CONNECTION && has_token(h.value, b"close") {
            close = true;
        }
        map.append(name, value);
    }
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Head::Request { req, len, close }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> (Request<RequestBody>, usize, bool) {
        match parse(raw.as_bytes()) {
            Head::Request { req, len, close } => (req, len, close),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_parsed_with_its_headers_in_order() {
        let raw = "GET /live/a.flv?x=1 HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\nx-a: 2\r\n\r\nNEXT";
        let (req, len, close) = request(raw);
        assert_eq!(len, raw.len() - 4, "stops at the head's end");
        assert!(!close);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/live/a.flv");
        assert_eq!(req.uri().query(), Some("x=1"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "gw");
        let a: Vec<_> = req.headers().get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
    }

    #[test]
    fn connection_close_is_seen_among_other_tokens() {
        let (_, _, close) = request("GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, Close\r\n\r\n");
        assert!(close);
        let (_, _, close) = request("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        assert!(!close);
    }

    #[test]
    fn an_unfinished_head_waits_for_more() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Head::Partial
        ));
        assert!(matches!(parse(b""), Head::Partial));
    }

    #[test]
    fn what_hyper_must_judge_is_handed_over() {
        for raw in [
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse(raw.as_bytes()), Head::Handoff), "{raw:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(raw.as_bytes()), Head::Handoff), "too many");
    }
}
