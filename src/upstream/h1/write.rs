//! The request on its way out: the head written into the connection's reused buffer, then
//! the body (if any) streamed as the viewer sends it, framed by its length or in chunks.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, HeaderMap, Method};
use http_body::Body as HttpBody;
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};
use crate::http1::framing::{Framer, FramingError, Outgoing};

/// How the request body is delimited on the wire (the one framing both sides use).
pub(crate) use crate::http1::framing::Framing as ReqFraming;

/// How the request body goes out: the caller's `Content-Length` if set, else the body's
/// exact size, else chunks; none for a body that is already over.
pub(crate) fn framing(headers: &HeaderMap, body: &Body) -> Result<ReqFraming, String> {
    if let Some(v) = headers.get(header::CONTENT_LENGTH) {
        return v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(ReqFraming::Length)
            .ok_or_else(|| "invalid Content-Length on the request".into());
    }
    if body.is_end_stream() {
        return Ok(ReqFraming::None);
    }
    Ok(match body.size_hint().exact() {
        Some(n) => ReqFraming::Length(n),
        None => ReqFraming::Chunked,
    })
}

/// Writes the request head into `buf` (cleared first): `target` in origin form, the headers
/// as given except the framing ones, which `framing` writes.
pub(crate) fn encode_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: ReqFraming,
    buf: &mut Vec<u8>,
) {
    buf.clear();
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    match framing {
        ReqFraming::None => {}
        ReqFraming::Length(n) => {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(n.to_string().as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        ReqFraming::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.extend_from_slice(b"\r\n");
}

/// Why an upload stopped.
#[derive(Debug)]
pub(crate) enum UploadError {
    /// The viewer's body failed or did not match its declared length.
    Client(BoxError),
    /// Writing to the node failed.
    Io(io::Error),
}

/// A request body being written to the node, driven by whoever polls the exchange (the
/// request future, then the answer body if the node answered before taking all of it).
/// Framed by the same code as the server's answers ([`crate::http1::framing`]).
pub(crate) struct Uploader {
    body: Body,
    framer: Framer,
    /// Framed bytes not yet written.
    out: Outgoing,
    /// The body has yielded its end (its framing's end is queued).
    body_done: bool,
}

impl Uploader {
    pub(crate) fn new(body: Body, framing: ReqFraming) -> Self {
        Self {
            body,
            framer: Framer::new(framing),
            out: Outgoing::default(),
            body_done: framing == ReqFraming::None,
        }
    }

    /// Every byte of the body, framing included, has been written.
    pub(crate) fn is_complete(&self) -> bool {
        self.body_done && self.out.is_empty()
    }

    /// Moves the body to the node until it is all written or one side has to wait.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut TcpStream,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            if !self.out.is_empty() {
                ready!(self.out.poll_write(cx, io)).map_err(UploadError::Io)?;
                continue;
            }
            if self.body_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not forwarded
                    };
                    if data.is_empty() {
                        continue;
                    }
                    self.framer
                        .data(data, false, &mut self.out)
                        .map_err(|e| UploadError::Client(framing_error(e)))?;
                }
                Some(Err(e)) => return Poll::Ready(Err(UploadError::Client(e))),
                None => {
                    self.body_done = true;
                    self.framer
                        .end(&mut self.out)
                        .map_err(|e| UploadError::Client(framing_error(e)))?;
                }
            }
        }
    }
}

/// The viewer's body does not match what its request declared.
fn framing_error(e: FramingError) -> BoxError {
    format!("request body: {e}").into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{empty, full};
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    #[test]
    fn head_and_framing() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "n:1".parse().expect("v"));
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().expect("v"));
        let mut buf = Vec::new();
        let f = framing(&h, &empty()).expect("ok");
        assert_eq!(f, ReqFraming::None);
        encode_head(&Method::GET, "/a?b", &h, f, &mut buf);
        assert_eq!(buf, b"GET /a?b HTTP/1.1\r\nhost: n:1\r\n\r\n");
        let f = framing(&h, &full("abc")).expect("ok");
        assert_eq!(f, ReqFraming::Length(3));
        encode_head(&Method::POST, "/", &h, f, &mut buf);
        assert!(buf.ends_with(b"content-length: 3\r\n\r\n"));
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> =
            vec![Ok(http_body::Frame::data(Bytes::from_static(b"x")))];
        let stream = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let f = framing(&h, &stream).expect("ok");
        assert_eq!(f, ReqFraming::Chunked);
        encode_head(&Method::POST, "/", &h, f, &mut buf);
        assert_eq!(
            buf.windows(26)
                .filter(|w| w == b"transfer-encoding: chunked")
                .count(),
            1
        );
        h.insert(header::CONTENT_LENGTH, "x".parse().expect("v"));
        assert!(framing(&h, &full("abc")).is_err());
    }
}
