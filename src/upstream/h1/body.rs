//! The answer body's framing, decoded from the connection's read buffer: a known length,
//! chunks (bounded size lines, trailers read and dropped), or everything until the node
//! closes. Data comes out as slices of the buffer, never copied.

use std::io;

use bytes::{Buf, Bytes, BytesMut};

use super::parse::Framing;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer section read (and dropped) after the last chunk.
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    /// Chunked, expecting a chunk-size line.
    ChunkSize,
    /// Chunked, inside a chunk's data: this many bytes left.
    ChunkData(u64),
    /// Chunked, expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked, after the last chunk: this many trailer bytes read so far.
    Trailers(usize),
    /// Until the node closes.
    Close,
    /// The whole body has been read.
    Done,
}

/// What one decoding step over the buffer gave.
#[derive(Debug)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no more of the body: read from the node.
    NeedMore,
    /// The body is complete.
    Done,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl Decoder {
    pub fn new(f: Framing) -> Self {
        match f {
            Framing::Empty | Framing::Length(0) => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::ChunkSize,
            Framing::Close => Self::Close,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }

    /// Bytes still to come when a length frames the body.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Done => Some(0),
            _ => None,
        }
    }

    /// Body bytes that may be taken straight from the socket now (a length's rest, a chunk's
    /// data); `None` when framing must be read first.
    pub fn raw_left(&self) -> Option<u64> {
        match self {
            Self::Length(n) | Self::ChunkData(n) => Some(*n),
            _ => None,
        }
    }

    /// `n` body bytes (at most [`Decoder::raw_left`]) were taken from the socket directly.
    pub fn consumed(&mut self, n: u64) {
        match self {
            Self::Length(left) => {
                *left -= n.min(*left);
                if *left == 0 {
                    *self = Self::Done;
                }
            }
            Self::ChunkData(left) => {
                *left -= n.min(*left);
                if *left == 0 {
                    *self = Self::ChunkEnd;
                }
            }
            _ => {}
        }
    }

    /// Takes the next piece of the body out of `buf`, framing consumed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        self.step(buf, true)
    }

    /// Consumes whatever framing `buf` holds before the next body bytes (a chunk's CRLF, the
    /// next size line, the last chunk and trailers), so that a body whose end is already
    /// buffered is known complete before its last bytes are handed on.
    pub fn skip_framing(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        self.step(buf, false).map(|_| ())
    }

    fn step(&mut self, buf: &mut BytesMut, data: bool) -> io::Result<Decoded> {
        loop {
            match *self {
                Self::Done => return Ok(Decoded::Done),
                Self::Length(_) | Self::ChunkData(_) | Self::Close => {
                    if buf.is_empty() || !data {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = match self.raw_left() {
                        Some(left) => usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()),
                        None => buf.len(),
                    };
                    let data = buf.split_to(take).freeze();
                    self.consumed(take as u64);
                    return Ok(Decoded::Data(data));
                }
                Self::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Self::Trailers(0)
                    } else {
                        Self::ChunkData(size)
                    };
                }
                Self::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("no CRLF after chunk data"));
                    }
                    buf.advance(2);
                    *self = Self::ChunkSize;
                }
                Self::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS.saturating_sub(seen))? else {
                        return Ok(Decoded::NeedMore);
                    };
                    *self = if line.is_empty() {
                        Self::Done
                    } else {
                        Self::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }

    /// The node closed the connection: the end of a read-to-close body, an error otherwise.
    pub fn eof(&mut self) -> io::Result<()> {
        match self {
            Self::Close | Self::Done => {
                *self = Self::Done;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the node closed the connection before the end of the body",
            )),
        }
    }
}

/// One line (without its CR LF) off the front of `buf`, if a whole one is there within
/// `limit` bytes.
fn take_line(buf: &mut BytesMut, limit: usize) -> io::Result<Option<BytesMut>> {
    let window = &buf[..buf.len().min(limit)];
    match window.iter().position(|b| *b == b'\n') {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() >= limit => Err(invalid("chunk-size line or trailers too long")),
        None => Ok(None),
    }
}

/// The hex size at the start of a chunk-size line; extensions after `;` are ignored.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(invalid("bad chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(invalid("bad chunk size"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("bad chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| invalid("bad chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; returns the body and whether it completed.
    fn run(framing: Framing, wire: &[u8], step: usize) -> io::Result<(Vec<u8>, bool)> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pieces = wire.chunks(step);
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::Done => return Ok((out, true)),
                Decoded::NeedMore => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Ok((out, false)),
                },
            }
        }
    }

    #[test]
    fn chunked_in_any_pieces() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..wire.len() {
            let (body, done) = run(Framing::Chunked, wire, step).expect("decodes");
            assert!(done, "step {step}");
            assert_eq!(&body[..], b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
        }
    }

    #[test]
    fn length_and_close() {
        let (body, done) = run(Framing::Length(5), b"hello", 2).expect("ok");
        assert_eq!((&body[..], done), (&b"hello"[..], true));
        let (body, done) = run(Framing::Length(5), b"hel", 2).expect("ok");
        assert_eq!((&body[..], done), (&b"hel"[..], false));
        let (body, done) = run(Framing::Close, b"abc", 1).expect("ok");
        assert_eq!((&body[..], done), (&b"abc"[..], false));
        let mut d = Decoder::new(Framing::Close);
        assert!(d.eof().is_ok() && d.is_done());
        let mut d = Decoder::new(Framing::Length(3));
        assert_eq!(
            d.eof().expect_err("short").kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(Decoder::new(Framing::Length(0)).is_done());
    }

    #[test]
    fn bad_chunking_is_an_error() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffff\r\n",
        ] {
            assert!(run(Framing::Chunked, wire, 3).is_err(), "{wire:?}");
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(run(Framing::Chunked, &long, 64).is_err());
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 100 {
            trailers.extend_from_slice(b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(run(Framing::Chunked, &trailers, 512).is_err());
    }
}
