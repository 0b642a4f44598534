//! Reading a live HTTP-FLV response as a player does: de-chunk the HTTP body incrementally and
//! parse it tag by tag with the crate's own FLV parser.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use streamgate::flv::{Event, Parser, Tag, TagKind};

/// How a stream read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The final zero-size chunk arrived: the server ended the stream on purpose.
    Clean,
    /// The connection closed without the final chunk (cut off, or the server died).
    Abrupt,
}

/// A live FLV response being read.
pub struct FlvStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    sock: TcpStream,
    /// Raw bytes not yet de-chunked.
    raw: Vec<u8>,
    /// Bytes left in the current chunk (`None`: expecting a size line).
    chunk_left: Option<usize>,
    chunked: bool,
    parser: Parser,
    pub header_seen: bool,
    pub end: Option<End>,
    /// Body bytes received so far.
    pub body_bytes: u64,
}

impl FlvStream {
    /// Sends `GET path` and reads the response head.
    pub fn open(addr: SocketAddr, path: &str) -> Self {
        let (head, sock, rest) = super::open_stream(addr, path);
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"));
        Self {
            status: head.status,
            headers: head.headers,
            sock,
            raw: rest,
            chunk_left: None,
            chunked,
            parser: Parser::new(),
            header_seen: false,
            end: None,
            body_bytes: 0,
        }
    }

    /// The socket, for tests that want to stall or drop it.
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Moves de-chunked body bytes from `raw` into the parser.
    fn dechunk(&mut self) {
        loop {
            if !self.chunked {
                let data = std::mem::take(&mut self.raw);
                self.feed(&data);
                return;
            }
            match self.chunk_left {
                None => {
                    let Some(pos) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&self.raw[..pos]).to_string();
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    self.raw.drain(..pos + 2);
                    if size == 0 {
                        self.end = Some(End::Clean);
                        return;
                    }
                    self.chunk_left = Some(size);
                }
                Some(0) => {
                    if self.raw.len() < 2 {
                        return;
                    }
                    assert_eq!(&self.raw[..2], b"\r\n", "chunk not followed by CRLF");
                    self.raw.drain(..2);
                    self.chunk_left = None;
                }
                Some(left) => {
                    if self.raw.is_empty() {
                        return;
                    }
                    let n = left.min(self.raw.len());
                    let data: Vec<u8> = self.raw.drain(..n).collect();
                    self.feed(&data);
                    self.chunk_left = Some(left - n);
                }
            }
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.body_bytes += data.len() as u64;
        self.parser
            .push(data)
            .expect("FLV parser accepts the stream");
    }

    /// The next tag, or `None` once the stream has ended; panics if nothing comes within `limit`.
    pub fn next_tag(&mut self, limit: Duration) -> Option<Tag> {
        let deadline = Instant::now() + limit;
        loop {
            match self.parser.next_event().expect("valid FLV") {
                Some(Event::Header(_)) => {
                    self.header_seen = true;
                    continue;
                }
                Some(Event::Tag(t)) => {
                    assert!(self.header_seen, "tag before the FLV header");
                    return Some(t);
                }
                None => {}
            }
            if self.end.is_some() {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no tag within {limit:?}");
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            let mut buf = [0u8; 64 * 1024];
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    self.end = Some(End::Abrupt);
                    return None;
                }
                Ok(n) => {
                    self.raw.extend_from_slice(&buf[..n]);
                    self.dechunk();
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    self.end = Some(End::Abrupt);
                    return None;
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Reads the start of the stream and checks it is what a player needs: header, metadata,
    /// sequence headers, then a video keyframe as the first video frame. Returns the tags read.
    pub fn expect_playable_start(&mut self, limit: Duration) -> Vec<Tag> {
        let mut tags = Vec::new();
        loop {
            let t = self
                .next_tag(limit)
                .expect("stream ended before its first keyframe");
            tags.push(t.clone());
            if t.kind() == TagKind::Video && !t.is_sequence_header() {
                assert!(t.is_keyframe(), "first video frame is not a keyframe");
                break;
            }
            assert!(tags.len() < 500, "no video frame in the first 500 tags");
        }
        assert!(self.header_seen);
        assert!(
            tags[0].is_metadata(),
            "metadata first, got {:?}",
            tags[0].kind()
        );
        let first_video = tags
            .iter()
            .position(|t| t.kind() == TagKind::Video)
            .expect("video");
        assert!(
            tags[first_video].is_sequence_header(),
            "AVC sequence header before frames"
        );
        let first_audio = tags.iter().position(|t| t.kind() == TagKind::Audio);
        if let Some(a) = first_audio {
            assert!(
                tags[a].is_sequence_header(),
                "AAC sequence header before audio frames"
            );
        }
        tags
    }

    /// Reads tags for `dur` of wall time; returns them (stops early if the stream ends).
    pub fn read_for(&mut self, dur: Duration) -> Vec<Tag> {
        let until = Instant::now() + dur;
        let mut out = Vec::new();
        while Instant::now() < until {
            match self.next_tag(Duration::from_secs(10)) {
                Some(t) => out.push(t),
                None => break,
            }
        }
        out
    }
}

/// Asserts timestamps never go back.
pub fn assert_monotonic(tags: &[Tag]) {
    for w in tags.windows(2) {
        assert!(
            w[1].timestamp() >= w[0].timestamp(),
            "timestamp went back: {} after {}",
            w[1].timestamp(),
            w[0].timestamp()
        );
    }
}
