//! A response head for the wire, framed as hyper frames its own (so the two servers answer
//! alike): the handler's `Content-Length` or `Transfer-Encoding` if it set one, else the body's
//! exact size, else chunks; no body for HEAD, 1xx, 204 and 304; a `Date` unless there is one.

use http::{header, response::Parts, Method, StatusCode};

use super::framing::Framing;

/// Writes `head` into `out` (cleared first) and says how its body goes out and whether the
/// connection must close after it. `end` is the body already over, `exact` its exact size if
/// known; `close` the connection closes after this answer anyway (it then says so).
pub(crate) fn encode(
    head: &Parts,
    method: &Method,
    end: bool,
    exact: Option<u64>,
    close: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    out.clear();
    let status = head.status;
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let head_request = method == Method::HEAD;
    // Neither a length nor chunks: 1xx, 204 and 304 (RFC 9110 §8.6); HEAD keeps a length.
    let no_length = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut framing = None;
    let mut close = close;
    let mut date = false;
    let mut said_close = false;
    for (name, value) in &head.headers {
        if name == header::CONTENT_LENGTH {
            if no_length || framing.is_some() {
                continue;
            }
            if head_request {
                framing = Some(Framing::None);
            } else if end {
                // hyper's rule: an empty body keeps only a length of 0.
                continue;
            } else {
                match parse_length(value.as_bytes()) {
                    Some(n) => framing = Some(Framing::Length(n)),
                    // A length we cannot frame by: the body goes chunked instead.
                    None => continue,
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            if no_length || head_request || framing.is_some() || end {
                continue;
            }
            if !value.as_bytes().eq_ignore_ascii_case(b"chunked") {
                continue;
            }
            framing = Some(Framing::Chunked);
        } else if name == header::CONNECTION {
            if super::has_token(value.as_bytes(), b"close") {
                close = true;
                said_close = true;
            }
        } else if name == header::DATE {
            date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match framing {
        Some(f) => f,
        None if no_length => Framing::None,
        // HEAD says the length a GET would have, when the body knows it (as hyper does).
        None if head_request => {
            if let (false, Some(n)) = (end, exact) {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Framing::None
        }
        None if end => {
            out.extend_from_slice(b"content-length: 0\r\n");
            Framing::None
        }
        None => match exact {
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
                Framing::Length(n)
            }
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        },
    };
    // HEAD, 1xx, 204, 304: whatever the body holds is not sent.
    let framing = if no_length || head_request {
        Framing::None
    } else {
        framing
    };
    if close && !said_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !date {
        out.extend_from_slice(b"date: ");
        super::date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, close)
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Response};

    fn head(status: u16, headers: &[(&'static str, &'static str)]) -> Parts {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        for (k, v) in headers {
            r.headers_mut().append(*k, HeaderValue::from_static(v));
        }
        r.into_parts().0
    }

    fn text(
        h: &Parts,
        method: Method,
        end: bool,
        exact: Option<u64>,
        close: bool,
    ) -> (String, Framing, bool) {
        let mut out = Vec::new();
        let (f, c) = encode(h, &method, end, exact, close, &mut out);
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.ends_with("\r\n\r\n"), "{s}");
        // The date is the only thing that changes; cut it out.
        let s = s
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n");
        (s, f, c)
    }

    #[test]
    fn a_known_size_is_a_length_and_an_unknown_one_is_chunked() {
        let h = head(200, &[("content-type", "video/x-flv")]);
        let (s, f, c) = text(&h, Method::GET, false, Some(5), false);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\ncontent-type: video/x-flv\ncontent-length: 5"
        );
        assert_eq!((f, c), (Framing::Length(5), false));
        let (s, f, _) = text(&h, Method::GET, false, None, false);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\ncontent-type: video/x-flv\ntransfer-encoding: chunked"
        );
        assert_eq!(f, Framing::Chunked);
        let (s, f, _) = text(&h, Method::GET, true, Some(0), false);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\ncontent-type: video/x-flv\ncontent-length: 0"
        );
        assert_eq!(f, Framing::None);
    }

    #[test]
    fn the_handlers_own_framing_headers_win() {
        let h = head(206, &[("content-length", "100")]);
        let (s, f, _) = text(&h, Method::GET, false, None, false);
        assert_eq!(s, "HTTP/1.1 206 Partial Content\ncontent-length: 100");
        assert_eq!(f, Framing::Length(100));
        let h = head(200, &[("transfer-encoding", "chunked")]);
        let (s, f, _) = text(&h, Method::GET, false, Some(3), false);
        assert_eq!(s, "HTTP/1.1 200 OK\ntransfer-encoding: chunked");
        assert_eq!(f, Framing::Chunked);
    }

    #[test]
    fn head_204_and_304_send_no_body() {
        let h = head(200, &[("content-length", "1234")]);
        let (s, f, _) = text(&h, Method::HEAD, true, Some(0), false);
        assert_eq!(
            s, "HTTP/1.1 200 OK\ncontent-length: 1234",
            "HEAD keeps its length"
        );
        assert_eq!(f, Framing::None);
        let (s, f, _) = text(&head(200, &[]), Method::HEAD, false, None, false);
        assert_eq!(s, "HTTP/1.1 200 OK");
        assert_eq!(f, Framing::None);
        let (s, f, _) = text(&head(200, &[]), Method::HEAD, false, Some(7), false);
        assert_eq!(
            s, "HTTP/1.1 200 OK\ncontent-length: 7",
            "the length a GET would have"
        );
        assert_eq!(f, Framing::None);
        let h = head(304, &[("content-length", "9"), ("etag", "\"x\"")]);
        let (s, f, _) = text(&h, Method::GET, true, Some(0), false);
        assert_eq!(s, "HTTP/1.1 304 Not Modified\netag: \"x\"");
        assert_eq!(f, Framing::None);
        let (s, f, _) = text(&head(204, &[]), Method::GET, false, None, false);
        assert_eq!(s, "HTTP/1.1 204 No Content");
        assert_eq!(f, Framing::None);
    }

    #[test]
    fn closing_is_said_once() {
        let (s, _, c) = text(&head(404, &[]), Method::GET, true, None, true);
        assert_eq!(
            s,
            "HTTP/1.1 404 Not Found\ncontent-length: 0\nconnection: close"
        );
        assert!(c);
        let h = head(429, &[("connection", "close")]);
        let (s, _, c) = text(&h, Method::GET, true, None, false);
        assert_eq!(
            s,
            "HTTP/1.1 429 Too Many Requests\nconnection: close\ncontent-length: 0"
        );
        assert!(c, "the handler's close is kept");
    }

    #[test]
    fn a_date_is_added_unless_present() {
        let mut out = Vec::new();
        encode(&head(200, &[]), &Method::GET, true, None, false, &mut out);
        let s = String::from_utf8(out).expect("utf8");
        let date = s
            .lines()
            .find_map(|l| l.strip_prefix("date: "))
            .expect("a date");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        let mut out = Vec::new();
        let h = head(200, &[("date", "Tue, 01 Dec 2026 00:00:00 GMT")]);
        encode(&h, &Method::GET, true, None, false, &mut out);
        assert_eq!(String::from_utf8_lossy(&out).matches("date: ").count(), 1);
    }
}
