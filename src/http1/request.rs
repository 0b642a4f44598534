//! A request head, parsed from the connection's buffer, or the decision to let hyper have the
//! connection: the own server takes only requests whose framing leaves nothing to judge (HTTP/1.1,
//! no body, no upgrade, no `Expect`), and hands every other one, malformed ones included, to
//! hyper, whose answers (400, 431, 417…) stay the reference.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::body::RequestBody;

/// Most header lines a request may have (hyper's default; past it hyper answers 431).
const MAX_HEADERS: usize = 100;

/// What the buffer holds.
// Returned once per request and moved straight into the handler: boxing the request would
// add an allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Head {
    /// Not a whole head yet.
    Partial,
    /// A request this server answers (its head is out of the buffer); `close`: the client
    /// asked for the connection to close after it.
    Request {
        req: Request<RequestBody>,
        close: bool,
    },
    /// hyper answers this one, and every later one on the connection.
    Handoff,
}

/// Parses the head at the start of `buf`; a request's head is taken out of it. Its target and
/// header values are slices of the head's bytes, not copies (as hyper does): the proxy clones
/// them into the node's request, and a clone of a slice is a reference count, where a clone
/// of a copied value allocates.
pub(crate) fn parse(buf: &mut BytesMut) -> Head {
    // Uninitialised slots: zeroing a hundred headers per request cost more than parsing.
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let (len, close) = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => match judge(&parsed) {
            Some(close) => (len, close),
            None => return Head::Handoff,
        },
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Handoff,
    };
    let head = buf.split_to(len).freeze();
    match build(&head) {
        Some(req) => Head::Request { req, close },
        // hyper judges a head we cannot build: it reads it again, whole.
        None => {
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Head::Handoff
        }
    }
}

/// Whether this server takes the request (and then whether it asked to close), from its
/// parsed head.
fn judge(parsed: &httparse::Request<'_, '_>) -> Option<bool> {
    if parsed.version != Some(1) || parsed.method == Some("CONNECT") {
        return None;
    }
    let mut close = false;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        // A body, a protocol switch or an expectation: hyper's framing and answers.
        if [
            &b"content-length"[..],
            b"transfer-encoding",
            b"upgrade",
            b"expect",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
        if name.eq_ignore_ascii_case(b"connection") && has_token(h.value, b"close") {
            close = true;
        }
    }
    Some(close)
}

/// The request of a complete head already judged (parsed again, in place: cheaper than
/// keeping where each piece lay).
fn build(head: &Bytes) -> Option<Request<RequestBody>> {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    parsed.parse_with_uninit_headers(head, &mut slots).ok()?;
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri = Uri::from_maybe_shared(head.slice_ref(parsed.path?.as_bytes())).ok()?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value)).ok()?;
        map.append(name, value);
    }
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Some(req)
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

    fn head(raw: &[u8]) -> Head {
        parse(&mut BytesMut::from(raw))
    }

    /// The request, what is left in the buffer, and `close`.
    fn request(raw: &str) -> (Request<RequestBody>, BytesMut, bool) {
        let mut buf = BytesMut::from(raw.as_bytes());
        match parse(&mut buf) {
            Head::Request { req, close } => (req, buf, close),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_parsed_with_its_headers_in_order() {
        let raw = "GET /live/a.flv?x=1 HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\nx-a: 2\r\n\r\nNEXT";
        let (req, rest, close) = request(raw);
        assert_eq!(&rest[..], b"NEXT", "stops at the head's end");
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
            head(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Head::Partial
        ));
        assert!(matches!(head(b""), Head::Partial));
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
            assert!(matches!(head(raw.as_bytes()), Head::Handoff), "{raw:?}");
        }
        // A head handed over stays in the buffer, whole, with what follows (this one is
        // judged good and fails only when built).
        let raw = b"GET /a<b HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        let mut buf = BytesMut::from(&raw[..]);
        assert!(matches!(parse(&mut buf), Head::Handoff));
        assert_eq!(&buf[..], &raw[..], "nothing lost");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(head(raw.as_bytes()), Head::Handoff), "too many");
    }
}
