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

/// Most frames queued for one write: a live viewer woken with several tags queued writes
/// them with one `writev` (as hyper's write queue did), not one each.
pub(crate) const MAX_FRAMES: usize = 8;

/// One framed piece of a body: a chunk's size line, its data, and a static suffix.
#[derive(Debug, Default)]
struct Piece {
    /// A chunk's size line (`1f40\r\n`): at most 16 hex digits and CRLF.
    size_line: [u8; 18],
    size_start: u8,
    size_end: u8,
    data: Bytes,
    suffix: &'static [u8],
}

impl Piece {
    fn is_empty(&self) -> bool {
        self.size_start == self.size_end && self.data.is_empty() && self.suffix.is_empty()
    }
}

/// The pieces not yet written, in wire order.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    /// A message head (the caller fills it), sent before anything else.
    pub(crate) head: Vec<u8>,
    head_sent: usize,
    /// Frames `first..queued` are waiting, inline: a connection allocates nothing for them.
    frames: [Piece; MAX_FRAMES],
    first: usize,
    queued: usize,
    /// Data bytes queued (what the caller bounds a burst by).
    bytes: usize,
}

impl Outgoing {
    /// Nothing is waiting to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.head_sent == self.head.len() && !self.has_frame()
    }

    /// A frame is queued; the head may be too.
    pub(crate) fn has_frame(&self) -> bool {
        self.first < self.queued
    }

    /// Another frame can be queued before the next write.
    pub(crate) fn has_room(&self) -> bool {
        self.queued < MAX_FRAMES
    }

    /// Data bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.bytes
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

    /// The next free frame (the caller checked [`Outgoing::has_room`]).
    fn push(&mut self) -> &mut Piece {
        let i = self.queued;
        self.queued += 1;
        &mut self.frames[i]
    }

    /// Writes every piece, vectored; `Ready(Ok)` once all are out.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            // Empty slices are left out: a spliced body's IO looks at each slice it is given.
            let mut list: [IoSlice<'_>; 1 + 3 * MAX_FRAMES] =
                [IoSlice::new(&[]); 1 + 3 * MAX_FRAMES];
            let mut n = 0;
            let pieces = self.frames[self.first..self.queued].iter().flat_map(|p| {
                [
                    &p.size_line[p.size_start as usize..p.size_end as usize],
                    &p.data[..],
                    p.suffix,
                ]
            });
            for s in std::iter::once(&self.head[self.head_sent..]).chain(pieces) {
                if !s.is_empty() {
                    list[n] = IoSlice::new(s);
                    n += 1;
                }
            }
            let slices: &[IoSlice<'_>] = &list[..n];
            let wrote = ready!(Pin::new(&mut *io).poll_write_vectored(cx, slices))?;
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
        while n > 0 && self.first < self.queued {
            let p = &mut self.frames[self.first];
            let take = n.min((p.size_end - p.size_start) as usize);
            p.size_start += take as u8;
            n -= take;
            let take = n.min(p.data.len());
            p.data.advance(take);
            self.bytes -= take;
            n -= take;
            let take = n.min(p.suffix.len());
            p.suffix = &p.suffix[take..];
            n -= take;
            if p.is_empty() {
                p.data = Bytes::new();
                self.first += 1;
            }
        }
        if self.first == self.queued {
            self.first = 0;
            self.queued = 0;
        }
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

    /// Queues `data` (non-empty) into `out`, which must have room. With `last`, a chunked
    /// body's end goes in the same write.
    pub(crate) fn data(
        &mut self,
        data: Bytes,
        last: bool,
        out: &mut Outgoing,
    ) -> Result<(), FramingError> {
        debug_assert!(out.has_room());
        let (size_line, size_end, suffix): ([u8; 18], usize, &'static [u8]) = match self.framing {
            Framing::None => return Err(FramingError::Unexpected),
            Framing::Length(_) => {
                let n = data.len() as u64;
                if n > self.left {
                    return Err(FramingError::TooLong);
                }
                self.left -= n;
                ([0; 18], 0, &[])
            }
            Framing::Chunked => {
                let mut line = [0; 18];
                let len = write_hex(&mut line, data.len());
                let suffix: &'static [u8] = if last { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                (line, len, suffix)
            }
        };
        out.bytes += data.len();
        let p = out.push();
        p.size_line = size_line;
        p.size_start = 0;
        p.size_end = size_end as u8;
        p.data = data;
        p.suffix = suffix;
        Ok(())
    }

    /// The body has ended: queues a chunked body's last chunk (`out` must have room), checks
    /// a declared length. Not needed after [`Framer::data`] with `last`.
    pub(crate) fn end(&mut self, out: &mut Outgoing) -> Result<(), FramingError> {
        match self.framing {
            Framing::Length(_) if self.left > 0 => Err(FramingError::TooShort),
            Framing::Chunked => {
                debug_assert!(out.has_room());
                let p = out.push();
                p.size_start = 0;
                p.size_end = 0;
                p.suffix = b"0\r\n\r\n";
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

    #[tokio::test]
    async fn queued_frames_go_out_in_order_in_one_flush() {
        let mut w = Trickle(Vec::new());
        let mut out = Outgoing::default();
        let mut f = Framer::new(Framing::Chunked);
        for (i, piece) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
            assert!(out.has_room());
            f.data(Bytes::from_static(piece), i == 2, &mut out)
                .expect("data");
        }
        assert_eq!(out.queued_bytes(), 11);
        flush(&mut out, &mut w).await;
        assert_eq!(w.0, b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n");
        assert!(out.is_empty() && out.queued_bytes() == 0);
        // A full queue says so.
        let mut f = Framer::new(Framing::Length(MAX_FRAMES as u64));
        for _ in 0..MAX_FRAMES {
            f.data(Bytes::from_static(b"x"), false, &mut out)
                .expect("data");
        }
        assert!(!out.has_room());
        flush(&mut out, &mut w).await;
        assert!(out.has_room());
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
