//! The head of a node's answer: parsed with `httparse`, bounded in size and header count, and
//! its body framing decided once, per RFC 9112 §6.3 and as nginx reads it.

use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

/// Most bytes a head may take (status line and headers); more is a broken node.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in one head (hyper's default).
pub(crate) const MAX_HEADERS: usize = 100;

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: ..., chunked`.
    Chunked,
    /// Until the node closes the connection (never reusable).
    Close,
}

/// One parsed final answer head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may take another request once this answer is read.
    pub reusable: bool,
}

/// What one parse attempt over the bytes read so far found.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) answer of this many bytes: skip it and read on.
    Interim(usize),
    /// A final head of this many bytes.
    Final(usize, Head),
}

/// Parses the head at the start of `buf`. `head_request`: the request was `HEAD` (no body
/// follows whatever the headers say).
pub fn parse(buf: &[u8], head_request: bool) -> Result<Parsed, String> {
    // Uninitialised slots: zeroing a hundred headers per answer cost more than parsing them.
    let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let n = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(format!("answer head larger than {MAX_HEAD} bytes"));
            }
            return Ok(Parsed::Partial);
        }
        Err(e) => return Err(format!("unparsable answer head: {e}")),
    };
    if n > MAX_HEAD {
        return Err(format!("answer head larger than {MAX_HEAD} bytes"));
    }
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("bad status code {code}"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("the node switched protocols, which the transport does not do".into());
        }
        return Ok(Parsed::Interim(n));
    }
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("bad header name {:?}", h.name))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| format!("bad value for header {name}"))?;
        headers.append(name, value);
    }
    let (framing, clean) = framing(&headers, status, head_request)?;
    let reusable = clean && framing != Framing::Close && keep_alive(&headers, version);
    Ok(Parsed::Final(
        n,
        Head {
            status,
            version,
            headers,
            framing,
            reusable,
        },
    ))
}

/// The body framing, and whether it leaves the connection clean for another request
/// (not when `Content-Length` came along with `Transfer-Encoding`: nginx closes those).
fn framing(
    h: &HeaderMap,
    status: StatusCode,
    head_request: bool,
) -> Result<(Framing, bool), String> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, true));
    }
    let has_length = h.contains_key(header::CONTENT_LENGTH);
    if h.contains_key(header::TRANSFER_ENCODING) {
        let last = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|c| !c.is_empty());
        let chunked = last.is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        return Ok((
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            },
            !has_length,
        ));
    }
    if has_length {
        return content_length(h).map(|n| (Framing::Length(n), true));
    }
    Ok((Framing::Close, false))
}

/// The one length all `Content-Length` values agree on (a repeated identical value is
/// tolerated, RFC 9110 §8.6); anything else is an error.
fn content_length(h: &HeaderMap) -> Result<u64, String> {
    let mut found: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err("invalid Content-Length".into());
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err("conflicting Content-Length values".into());
            }
            found = Some(n);
        }
    }
    found.ok_or_else(|| "invalid Content-Length".into())
}

/// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
fn keep_alive(h: &HeaderMap, version: Version) -> bool {
    let has = |token: &str| crate::http1::header_has_token(h, header::CONNECTION, token);
    if version == Version::HTTP_10 {
        has("keep-alive") && !has("close")
    } else {
        !has("close")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_request: bool) -> Head {
        match parse(raw.as_bytes(), head_request).expect("parses") {
            Parsed::Final(n, h) => {
                assert_eq!(n, raw.len());
                h
            }
            other => panic!("not final: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Length(12), true));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty);
        for s in ["204 No Content", "304 Not Modified"] {
            let h = head(&format!("HTTP/1.1 {s}\r\nContent-Length: 5\r\n\r\n"), false);
            assert_eq!((h.framing, h.reusable), (Framing::Empty, true));
        }
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, false));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Length(7));
        for bad in ["5, 6", "-1", "x", "", "+5", "99999999999999999999"] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(parse(raw.as_bytes(), false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!h.reusable);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!h.reusable);
        assert_eq!(h.version, Version::HTTP_10);
        let h = head(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(h.reusable);
    }

    #[test]
    fn interim_partial_and_bounds() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert!(matches!(parse(raw, false), Ok(Parsed::Interim(25))));
        assert!(matches!(parse(&raw[25..], false), Ok(Parsed::Partial)));
        assert!(parse(b"HTTP/1.1 101 Switching\r\n\r\n", false).is_err());
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert!(parse(&big, false).is_err());
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert!(parse(many.as_bytes(), false).is_err());
        assert!(parse(b"HTTP/1.1 2x0 OK\r\n\r\n", false).is_err());
    }
}
