//! The request on its way out: the head written into the connection's reused buffer, then
//! the body (if any) streamed as the viewer sends it, framed by its length or in chunks.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::{header, HeaderMap, Method};
use http_body::Body as HttpBody;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqFraming {
    /// No body.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

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
pub(crate) struct Uploader {
    body: Body,
    framing: ReqFraming,
    /// Bytes the declared length still expects.
    left: u64,
    /// Framed bytes not yet written.
    out: VecDeque<Bytes>,
    /// The body has yielded its end (its framing's end is queued).
    body_done: bool,
}

impl Uploader {
    pub(crate) fn new(body: Body, framing: ReqFraming) -> Self {
        let left = match framing {
            ReqFraming::Length(n) => n,
            _ => 0,
        };
        Self {
            body,
            framing,
            left,
            out: VecDeque::new(),
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
            if let Some(front) = self.out.front_mut() {
                let n =
                    ready!(Pin::new(&mut *io).poll_write(cx, front)).map_err(UploadError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(UploadError::Io(io::ErrorKind::WriteZero.into())));
                }
                front.advance(n);
                if front.is_empty() {
                    self.out.pop_front();
                }
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
                    match self.framing {
                        ReqFraming::Length(_) => {
                            let n = data.len() as u64;
                            if n > self.left {
                                return Poll::Ready(Err(UploadError::Client(
                                    "the request body is longer than its Content-Length".into(),
                                )));
                            }
                            self.left -= n;
                            self.out.push_back(data);
                        }
                        ReqFraming::Chunked => {
                            self.out
                                .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                            self.out.push_back(data);
                            self.out.push_back(Bytes::from_static(b"\r\n"));
                        }
                        ReqFraming::None => {
                            return Poll::Ready(Err(UploadError::Client(
                                "a request body where none was declared".into(),
                            )));
                        }
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(UploadError::Client(e))),
                None => {
                    self.body_done = true;
                    match self.framing {
                        ReqFraming::Length(_) if self.left > 0 => {
                            return Poll::Ready(Err(UploadError::Client(
                                "the request body is shorter than its Content-Length".into(),
                            )));
                        }
                        ReqFraming::Chunked => {
                            self.out.push_back(Bytes::from_static(b"0\r\n\r\n"));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{empty, full};
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
