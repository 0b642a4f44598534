//! A body on its way out over HTTP/1.1, framed by its length or in chunks, for both sides
//! that write one: the server's answers ([`super`]) and the transport's uploads
//! (`crate::upstream::h1`). What goes out is a few pieces written with one vectored write: the
//! head (if still unsent), a chunk's size line, the data itself (never copied: a spliced body's
//! marker must reach the IO as its own slice, `crate::splice::link`), and a static suffix.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

/// How a body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a body does not fit its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    #[error("the body is longer than its Content-Length")]
    TooLong,
    #[error("the body is shorter than its Content-Length")]
    TooShort,
    #[error("a body where none was declared")]
    Unexpected,
}

/// The pieces not yet written, in wire order.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    /// A message head (the caller fills it), sent before anything else.
    pub(crate) head: Vec<u8>,
    head_sent: usize,
    /// A chunk's size line (`1f40\r\n`): at most 16 hex digits and CRLF.
    size_line: [u8; 18],
    size_start: u8,
    size_end: u8,
    data: Bytes,
    suffix: &'static [u8],
}

impl Outgoing {
    /// Nothing is waiting to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.head_sent == self.head.len()
            && self.size_start == self.size_end
            && self.data.is_empty()
            && self.suffix.is_empty()
    }

    /// A frame (a chunk's size line, data or a suffix) is queued; the head may be too.
    pub(crate) fn has_frame(&self) -> bool {
        self.size_start != self.size_end || !self.data.is_empty() || !self.suffix.is_empty()
    }

    /// Marks the head (filled into `head` by the caller) as to be sent.
    pub(crate) fn send_head(&mut self) {
        self.head_sent = 0;
    }

    /// Forgets the head once sent, giving its memory back when it grew past `keep` bytes
    /// (a live viewer's connection should not hold a head buffer for hours).
    pub(crate) fn release_head(&mut self, keep: usize) {
        self.head.clear();
        self.head_sent = 0;
        if self.head.capacity() > keep {
            self.head = Vec::new();
        }
    }

    /// Writes every piece, vectored; `Ready(Ok)` once all are out.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let size = &self.size_line[self.size_start as usize..self.size_end as usize];
            let slices = [
                IoSlice::new(&self.head[self.head_sent..]),
                IoSlice::new(size),
                IoSlice::new(&self.data),
                IoSlice::new(self.suffix),
            ];
            // Empty slices are skipped: a spliced body's IO looks at each slice it is given.
            let mut list: [IoSlice<'_>; 4] = [IoSlice::new(&[]); 4];
            let mut n = 0;
            for s in slices {
                if !s.is_empty() {
                    list[n] = s;
                    n += 1;
                }
            }
            let wrote = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &list[..n]))?;
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(wrote);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        let take = n.min(self.head.len() - self.head_sent);
        self.head_sent += take;
        n -= take;
        let take = n.min((self.size_end - self.size_start) as usize);
        self.size_start += take as u8;
        n -= take;
        let take = n.min(self.data.len());
        self.data.advance(take);
        n -= take;
        let take = n.min(self.suffix.len());
        self.suffix = &self.suffix[take..];
    }
}

/// Frames one body's data into an [`Outgoing`] and checks it against its declared length.
#[derive(Debug)]
pub(crate) struct Framer {
    framing: Framing,
    /// Bytes a declared length still expects.
    left: u64,
}

impl Framer {
    pub(crate) fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Self { framing, left }
    }

    /// Every byte a declared length promised has been framed (a chunked body ends only by
    /// [`Framer::end`]).
    pub(crate) fn is_full(&self) -> bool {
        match self.framing {
            Framing::None => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked => false,
        }
    }

    /// Queues `data` (non-empty) into `out`, which must be empty. With `last`, a chunked
    /// body's end goes in the same write.
    pub(crate) fn data(
        &mut self,
        data: Bytes,
        last: bool,
        out: &mut Outgoing,
    ) -> Result<(), FramingError> {
        debug_assert!(out.size_start == out.size_end && out.data.is_empty());
        match self.framing {
            Framing::None => return Err(FramingError::Unexpected),
            Framing::Length(_) => {
                let n = data.len() as u64;
                if n > self.left {
                    return Err(FramingError::TooLong);
                }
                self.left -= n;
                out.suffix = &[];
            }
            Framing::Chunked => {
                let len = write_hex(&mut out.size_line, data.len());
                out.size_start = 0;
                out.size_end = len as u8;
                out.suffix = if last { b"\r\n0\r\n\r\n" } else { b"\r\n" };
            }
        }
        out.data = data;
        Ok(())
    }

    /// The body has ended: queues a chunked body's last chunk, checks a declared length.
    /// Not needed after [`Framer::data`] with `last`.
    pub(crate) fn end(&mut self, out: &mut Outgoing) -> Result<(), FramingError> {
        match self.framing {
            Framing::Length(_) if self.left > 0 => Err(FramingError::TooShort),
            Framing::Chunked => {
                out.suffix = b"0\r\n\r\n";
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// `n` in hex followed by CRLF into `buf`; the length written.
fn write_hex(buf: &mut [u8; 18], n: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[digits - 1 - i] = HEX[(n >> (4 * i)) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    digits + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes everything queued into a Vec (which writes vectored, but only part at a time
    /// here, to exercise `advance`).
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn flush(out: &mut Outgoing, w: &mut Trickle) {
        std::future::poll_fn(|cx| out.poll_write(cx, w))
            .await
            .expect("write");
    }

    #[tokio::test]
    async fn chunked_bodies_are_framed_byte_exact() {
        let mut w = Trickle(Vec::new());
        let mut out = Outgoing::default();
        out.head.extend_from_slice(b"HEAD\r\n\r\n");
        out.send_head();
        let mut f = Framer::new(Framing::Chunked);
        f.data(Bytes::from(vec![b'a'; 300]), false, &mut out)
            .expect("data");
        flush(&mut out, &mut w).await;
        f.data(Bytes::from_static(b"xyz"), false, &mut out)
            .expect("data");
        flush(&mut out, &mut w).await;
        f.end(&mut out).expect("end");
        flush(&mut out, &mut w).await;
        let want = [
            &b"HEAD\r\n\r\n12c\r\n"[..],
            &[b'a'; 300],
            b"\r\n3\r\nxyz\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(w.0, want);
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_last_chunk_carries_the_end_in_the_same_write() {
        let mut w = Trickle(Vec::new());
        let mut out = Outgoing::default();
        let mut f = Framer::new(Framing::Chunked);
        f.data(Bytes::from_static(b"hello"), true, &mut out)
            .expect("data");
        flush(&mut out, &mut w).await;
        assert_eq!(w.0, b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn a_declared_length_is_held_to() {
        let mut out = Outgoing::default();
        let mut f = Framer::new(Framing::Length(4));
        assert!(!f.is_full());
        assert_eq!(
            f.data(Bytes::from_static(b"hello"), false, &mut out),
            Err(FramingError::TooLong)
        );
        f.data(Bytes::from_static(b"hel"), false, &mut out)
            .expect("fits");
        assert_eq!(f.end(&mut Outgoing::default()), Err(FramingError::TooShort));
        out = Outgoing::default();
        f.data(Bytes::from_static(b"l"), false, &mut out)
            .expect("fits");
        assert!(f.is_full());
        assert_eq!(f.end(&mut out), Ok(()));
        let mut none = Framer::new(Framing::None);
        assert_eq!(
            none.data(Bytes::from_static(b"x"), false, &mut Outgoing::default()),
            Err(FramingError::Unexpected)
        );
    }

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        let mut b = [0u8; 18];
        for (n, want) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0x1f40, "1f40\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let len = write_hex(&mut b, n);
            assert_eq!(&b[..len], want.as_bytes(), "{n}");
        }
    }
}
