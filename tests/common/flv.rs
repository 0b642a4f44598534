//! Test-side FLV helpers: read a live HTTP-FLV response tag by tag from a real socket (with
//! deadlines), and build small FLV files for origins to replay. Parsing uses the crate's own
//! `streamgate::flv`, so these helpers also exercise it on real streams.
//!
//! Self-contained (std + streamgate only) so it can be used as `common::flv` or included with
//! `#[path = "common/flv.rs"]`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use streamgate::flv::{self, Event, Header, Parser, Tag, TagKind};

/// Incremental decoder for a chunked transfer-encoded body.
#[derive(Debug, Default)]
struct Dechunker {
    /// Raw bytes not yet decoded.
    raw: Vec<u8>,
    /// Bytes left in the current chunk's data; `None` while expecting a size line.
    in_chunk: Option<usize>,
    /// Expecting the CRLF that follows chunk data.
    want_crlf: bool,
    /// The terminating zero-size chunk was seen.
    done: bool,
}

impl Dechunker {
    /// Decodes as much of `self.raw` as possible into `out`.
    fn decode(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let mut pos = 0;
        loop {
            if self.done {
                break;
            }
            if self.want_crlf {
                if self.raw.len() - pos < 2 {
                    break;
                }
                if &self.raw[pos..pos + 2] != b"\r\n" {
                    return Err("missing CRLF after chunk data".into());
                }
                pos += 2;
                self.want_crlf = false;
            }
            match self.in_chunk {
                None => {
                    let Some(nl) = self.raw[pos..].windows(2).position(|w| w == b"\r\n") else {
                        if self.raw.len() - pos > 1024 {
                            return Err("chunk size line too long".into());
                        }
                        break;
                    };
                    let line = String::from_utf8_lossy(&self.raw[pos..pos + nl]).into_owned();
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .map_err(|e| format!("bad chunk size {line:?}: {e}"))?;
                    pos += nl + 2;
                    if size == 0 {
                        self.done = true;
                    } else {
                        self.in_chunk = Some(size);
                    }
                }
                Some(left) => {
                    let take = left.min(self.raw.len() - pos);
                    if take == 0 {
                        break;
                    }
                    out.extend_from_slice(&self.raw[pos..pos + take]);
                    pos += take;
                    if take == left {
                        self.in_chunk = None;
                        self.want_crlf = true;
                    } else {
                        self.in_chunk = Some(left - take);
                    }
                }
            }
        }
        self.raw.drain(..pos);
        Ok(())
    }
}

/// A live HTTP-FLV response being read from a socket.
pub struct FlvStream {
    sock: TcpStream,
    dechunk: Dechunker,
    parser: Parser,
    /// Socket hit EOF or the body's last chunk arrived.
    eof: bool,
    /// Body bytes received so far (after de-chunking).
    pub body_bytes: usize,
    /// The response head's headers.
    pub headers: Vec<(String, String)>,
    /// Read buffer, reused across reads.
    tmp: Vec<u8>,
}

impl FlvStream {
    /// Sends `GET path` and reads the response head; panics unless it is a 200 `video/x-flv`.
    pub fn open(addr: SocketAddr, path: &str) -> Self {
        Self::try_open(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn try_open(addr: SocketAddr, path: &str) -> Result<Self, String> {
        let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        sock.set_nodelay(true).ok();
        sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = Vec::new();
        let mut tmp = [0u8; 16384];
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out waiting for the response head".into());
            }
            sock.set_read_timeout(Some(left)).ok();
            let n = sock.read(&mut tmp).map_err(|e| format!("read head: {e}"))?;
            if n == 0 {
                return Err("closed before the response head".into());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        if !status.contains(" 200 ") {
            return Err(format!("status line {status:?}"));
        }
        let ct = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str());
        if ct != Some("video/x-flv") {
            return Err(format!("content-type {ct:?}"));
        }
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        if !chunked {
            return Err("live response is not chunked".into());
        }
        let mut dechunk = Dechunker::default();
        dechunk.raw.extend_from_slice(&buf[end + 4..]);
        Ok(Self {
            sock,
            dechunk,
            parser: Parser::new(),
            eof: false,
            body_bytes: 0,
            headers,
            tmp: vec![0u8; 64 * 1024],
        })
    }

    /// The next header or tag. `Ok(None)`: the body ended cleanly (last chunk or EOF on a tag
    /// boundary). `Err`: timeout at `deadline`, socket error, or invalid FLV.
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>, String> {
        loop {
            if let Some(ev) = self
                .parser
                .next_event()
                .map_err(|e| format!("invalid FLV: {e}"))?
            {
                return Ok(Some(ev));
            }
            let mut out = Vec::new();
            self.dechunk.decode(&mut out)?;
            if !out.is_empty() {
                self.body_bytes += out.len();
                self.parser
                    .push(&out)
                    .map_err(|e| format!("invalid FLV: {e}"))?;
                continue;
            }
            if self.dechunk.done || self.eof {
                return match self.parser.buffered() {
                    0 => Ok(None),
                    n => Err(format!("body ended inside a tag ({n} bytes left)")),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out waiting for the next tag".into());
            }
            self.sock
                .set_read_timeout(Some(left.min(Duration::from_secs(1))))
                .ok();
            match self.sock.read(&mut self.tmp) {
                Ok(0) => self.eof = true,
                Ok(n) => self.dechunk.raw.extend_from_slice(&self.tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => self.eof = true,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Whether the body ended with its final zero-size chunk: the server ended the stream on
    /// purpose (a connection that just closes means it was cut off or died).
    pub fn clean_end(&self) -> bool {
        self.dechunk.done
    }

    /// The FLV header, which must come first.
    pub fn header(&mut self, timeout: Duration) -> Header {
        match self.next_event(Instant::now() + timeout) {
            Ok(Some(Event::Header(h))) => h,
            other => panic!("expected the FLV header, got {other:?}"),
        }
    }

    /// The next tag (panics on header, end, timeout or error).
    pub fn tag(&mut self, timeout: Duration) -> Tag {
        match self.next_event(Instant::now() + timeout) {
            Ok(Some(Event::Tag(t))) => t,
            other => panic!("expected a tag, got {other:?}"),
        }
    }

    /// Reads tags for `dur` (the stream must not end or fail meanwhile).
    pub fn tags_for(&mut self, dur: Duration) -> Vec<Tag> {
        let until = Instant::now() + dur;
        let mut out = Vec::new();
        while Instant::now() < until {
            match self.next_event(until) {
                Ok(Some(Event::Tag(t))) => out.push(t),
                Ok(Some(Event::Header(_))) => panic!("second FLV header"),
                Ok(None) => panic!("stream ended after {} tags", out.len()),
                Err(e) if e.starts_with("timed out") => break,
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    /// Reads until the body ends; returns the tags and whether it ended (vs timed out).
    pub fn tags_until_end(&mut self, timeout: Duration) -> (Vec<Tag>, bool) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            match self.next_event(deadline) {
                Ok(Some(Event::Tag(t))) => out.push(t),
                Ok(Some(Event::Header(_))) => panic!("second FLV header"),
                Ok(None) => return (out, true),
                Err(e) if e.starts_with("timed out") => return (out, false),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

/// A live FLV byte stream read header first, then tag by tag: an HTTP-FLV response
/// ([`FlvStream`]) or a WebSocket-FLV session (`common::ws::WsClient`).
pub trait LiveFlv {
    /// The FLV header, which must come first.
    fn header(&mut self, timeout: Duration) -> Header;
    /// The next tag (panics on header, end, timeout or error).
    fn tag(&mut self, timeout: Duration) -> Tag;
}

impl LiveFlv for FlvStream {
    fn header(&mut self, timeout: Duration) -> Header {
        FlvStream::header(self, timeout)
    }
    fn tag(&mut self, timeout: Duration) -> Tag {
        FlvStream::tag(self, timeout)
    }
}

/// Checks the start every viewer must see: header, then onMetaData, the AVC and AAC sequence
/// headers (in any order among themselves), then a video keyframe as the first media tag.
/// Returns the tags read, keyframe last.
pub fn expect_live_start(s: &mut impl LiveFlv, timeout: Duration) -> Vec<Tag> {
    let h = s.header(timeout);
    assert_eq!(&h.bytes[..3], b"FLV");
    let mut tags = Vec::new();
    let (mut meta, mut vseq, mut aseq) = (false, false, false);
    loop {
        let t = s.tag(timeout);
        let init = t.is_metadata() || t.is_sequence_header();
        if !init {
            assert!(
                meta && vseq && aseq,
                "media before init tags (meta {meta}, avc {vseq}, aac {aseq})"
            );
            assert!(
                t.kind() == TagKind::Video && t.is_keyframe(),
                "first media tag is not a keyframe: {t:?}"
            );
            tags.push(t);
            return tags;
        }
        meta |= t.is_metadata();
        vseq |= t.is_sequence_header() && t.kind() == TagKind::Video;
        aseq |= t.is_sequence_header() && t.kind() == TagKind::Audio;
        tags.push(t);
    }
}

/// Asserts timestamps never go backwards.
pub fn assert_non_decreasing(tags: &[Tag]) {
    for w in tags.windows(2) {
        assert!(
            w[1].timestamp() >= w[0].timestamp(),
            "timestamp went back from {} to {} ({:?} -> {:?})",
            w[0].timestamp(),
            w[1].timestamp(),
            w[0].kind(),
            w[1].kind()
        );
    }
}

/// Reads a whole FLV file.
pub fn read_file(path: &Path) -> (Header, Vec<Tag>) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    let d = flv::demux(Bytes::from(data));
    assert!(d.error.is_none(), "{path:?}: {:?}", d.error);
    (d.header.expect("header"), d.tags)
}

/// Serializes `tags` after a standard audio+video header.
pub fn to_bytes(tags: &[Tag]) -> Vec<u8> {
    let mut out = flv::FLV_HEADER.to_vec();
    for t in tags {
        out.extend_from_slice(t.bytes());
    }
    out
}

/// The init tags plus every tag before `ms` of `src` (a short loop for tests).
pub fn cut(src: &[Tag], ms: u32) -> Vec<Tag> {
    src.iter().filter(|t| t.timestamp() < ms).cloned().collect()
}

/// An onMetaData script tag with an empty ECMA array.
pub fn metadata_tag() -> Tag {
    let mut d = vec![0x02, 0x00, 10];
    d.extend_from_slice(b"onMetaData");
    d.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 9]);
    Tag::new(TagKind::Script, 0, &d).expect("tag")
}

/// A synthetic, high-bitrate stream (not decodable): metadata, AVC and AAC sequence headers,
/// then `fps` video tags a second of `frame_bytes` each, keyframe every second, plus one small
/// audio tag per frame. For load and back-pressure tests, where bytes matter and pictures don't.
pub fn synthetic(seconds: u32, fps: u32, frame_bytes: usize) -> Vec<Tag> {
    let mut tags = vec![
        metadata_tag(),
        Tag::new(TagKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]).expect("tag"),
        Tag::new(TagKind::Audio, 0, &[0xAF, 0, 0x12, 0x10]).expect("tag"),
    ];
    let mut payload = vec![0u8; frame_bytes.max(5)];
    for i in 0..seconds * fps {
        let ts = i * 1000 / fps;
        payload[0] = if i % fps == 0 { 0x17 } else { 0x27 };
        payload[1] = 1;
        payload[5..]
            .iter_mut()
            .enumerate()
            .for_each(|(j, b)| *b = (i as usize + j) as u8);
        tags.push(Tag::new(TagKind::Video, ts, &payload).expect("tag"));
        tags.push(Tag::new(TagKind::Audio, ts, &[0xAF, 1, 0x21, 0x10]).expect("tag"));
    }
    tags
}
