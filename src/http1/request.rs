//! A request head, parsed from the connection's buffer, or the decision to let hyper have the
//! connection: the own server takes only requests whose framing leaves nothing to judge (HTTP/1.1,
//! no body, no upgrade, no `Expect`), and hands every other one, malformed ones included, to
//! hyper, whose answers (400, 431, 417…) stay the reference.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

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
    let Some(len) = head_len(buf) else {
        // Not whole yet. A start that is already wrong goes to hyper now, for its 400.
        let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        return match parsed.parse_with_uninit_headers(buf, &mut slots) {
            Err(_) => Head::Handoff,
            Ok(_) => Head::Partial,
        };
    };
    let head = buf.split_to(len).freeze();
    match build(&head) {
        Some((req, close)) => Head::Request { req, close },
        // hyper judges this one: it reads the head again, whole.
        None => {
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Head::Handoff
        }
    }
}

/// Where the head ends: past its first empty line (CRLF, or a bare LF as httparse allows).
fn head_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i;
        match (buf.get(at + 1), buf.get(at + 2)) {
            (Some(b'\n'), _) => return Some(at + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(at + 3),
            (None, _) | (Some(b'\r'), None) => return None,
            _ => from = at + 1,
        }
    }
    None
}

/// The request of a complete head, and whether it asked to close; `None` for one this
/// server leaves to hyper (a body, an upgrade, `Expect`, not HTTP/1.1, `CONNECT`, or
/// anything malformed).
fn build(head: &Bytes) -> Option<(Request<RequestBody>, bool)> {
    // Uninitialised slots: zeroing a hundred headers per request cost more than parsing.
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, &mut slots) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(parsed.path?.as_bytes())).ok()?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    let mut close = false;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        // A body, a protocol switch or an expectation: hyper's framing and answers.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return None;
        }
        if name == header::CONNECTION && super::has_token(h.value, b"close") {
            close = true;
        }
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value)).ok()?;
        map.append(name, value);
    }
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Some((req, close))
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
    fn the_head_ends_at_its_first_empty_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_len(b"GET / HTTP/1.1\nA: b\n\nrest"), Some(21));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n\r"), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_len(b""), None);
    }

    #[test]
    fn an_unfinished_head_waits_for_more() {
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Head::Partial
        ));
        assert!(matches!(head(b""), Head::Partial));
        // Unless it is already wrong: hyper answers it at once.
        assert!(matches!(head(b"GET /a b HTTP/1.1\r\n"), Head::Handoff));
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
