//! A small WebSocket client over a std `TcpStream`, for WebSocket-FLV tests: the handshake
//! (checking `Sec-WebSocket-Accept`), masked client frames, and server frames read with
//! deadlines. Binary messages feed the crate's FLV parser, so a session reads like an HTTP-FLV
//! response ([`super::flv::LiveFlv`]). Written from RFC 6455, independently of the gateway's own
//! framing code; the browser test (mpegts.js in Chromium) checks the other side of it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::{Digest, Sha1};
use streamgate::flv::{Event, Header, Parser, Tag};

use super::RawResponse;

/// A sample `Sec-WebSocket-Key` (16 bytes, base64).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// One message (or control frame) from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The server's close frame, with its status code if it sent one.
    Close(Option<u16>),
}

/// An open WebSocket session.
pub struct WsClient {
    pub sock: TcpStream,
    /// Bytes read and not yet a whole frame.
    buf: Vec<u8>,
    parser: Parser,
    /// Answer the server's pings with pongs (browsers do).
    pub answer_pings: bool,
    /// Pings the server sent.
    pub pings: usize,
    /// Pongs the server sent.
    pub pongs: Vec<Vec<u8>>,
    /// Binary messages received.
    pub binary_messages: usize,
    /// The server's close frame, once received.
    pub close: Option<Option<u16>>,
    /// The connection ended (EOF or reset).
    pub eof: bool,
}

/// The handshake request for `path`, with extra header lines (each ending in \r\n).
pub fn handshake(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

/// What the server must answer to [`KEY`].
pub fn expected_accept(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

impl WsClient {
    /// Opens a session on `path`; panics unless the server switches protocols.
    pub fn connect(addr: SocketAddr, path: &str) -> Self {
        match Self::try_connect(addr, path, "") {
            Ok(c) => c,
            Err(r) => panic!("no upgrade: {} {}", r.status, r.text()),
        }
    }

    /// Opens a session, or returns the server's non-101 answer (its body read by length).
    pub fn try_connect(addr: SocketAddr, path: &str, extra: &str) -> Result<Self, RawResponse> {
        let sock = TcpStream::connect(addr).expect("connect");
        Self::handshake_on(sock, path, extra)
    }

    /// Runs the handshake on an already connected socket (one with a small receive buffer,
    /// for a stalled viewer).
    pub fn handshake_on(mut sock: TcpStream, path: &str, extra: &str) -> Result<Self, RawResponse> {
        sock.set_nodelay(true).ok();
        sock.set_read_timeout(Some(super::READY_TIMEOUT)).ok();
        sock.write_all(handshake(path, extra).as_bytes())
            .expect("write handshake");
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = sock.read(&mut tmp).expect("read response head");
            assert!(n > 0, "closed before the response head");
            buf.extend_from_slice(&tmp[..n]);
        };
        let mut head = super::parse_response(&buf[..end + 4]);
        let rest = buf[end + 4..].to_vec();
        if head.status != 101 {
            let len: usize = head
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = rest;
            while body.len() < len {
                let n = sock.read(&mut tmp).expect("read body");
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&tmp[..n]);
            }
            head.body = body;
            return Err(head);
        }
        assert_eq!(
            head.header("sec-websocket-accept"),
            Some(expected_accept(KEY).as_str()),
            "{head:?}"
        );
        assert!(head
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
        Ok(Self {
            sock,
            buf: rest,
            parser: Parser::new(),
            answer_pings: true,
            pings: 0,
            pongs: Vec::new(),
            binary_messages: 0,
            close: None,
            eof: false,
        })
    }

    /// Sends one masked frame (`first`: FIN, RSV and opcode bits).
    pub fn send_frame(&mut self, first: u8, payload: &[u8]) {
        self.send_raw(&frame(first, payload));
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("write frame");
    }

    /// Sends a close frame with `code`.
    pub fn send_close(&mut self, code: u16) {
        self.send_frame(0x88, &code.to_be_bytes());
    }

    /// The next message or control frame; `Ok(None)` once the connection ended. Pings are
    /// answered here when `answer_pings` is on (and still returned).
    pub fn read_msg(&mut self, deadline: Instant) -> Result<Option<Msg>, String> {
        loop {
            if let Some((msg, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                match &msg {
                    Msg::Ping(p) => {
                        self.pings += 1;
                        if self.answer_pings {
                            let p = p.clone();
                            self.send_frame(0x8A, &p);
                        }
                    }
                    Msg::Pong(p) => self.pongs.push(p.clone()),
                    Msg::Binary(_) => self.binary_messages += 1,
                    Msg::Close(c) => self.close = Some(*c),
                    Msg::Text(_) => {}
                }
                return Ok(Some(msg));
            }
            if self.eof {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out waiting for a frame".into());
            }
            self.sock
                .set_read_timeout(Some(left.min(Duration::from_secs(1))))
                .ok();
            let mut tmp = [0u8; 65536];
            match self.sock.read(&mut tmp) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
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

    /// Reads until the connection ends (bounded); returns the server's close code, if any.
    pub fn until_closed(&mut self, limit: Duration) -> Option<Option<u16>> {
        let deadline = Instant::now() + limit;
        loop {
            match self.read_msg(deadline) {
                Ok(Some(_)) => {}
                Ok(None) => return self.close,
                Err(e) => panic!("{e} (connection still open after {limit:?})"),
            }
        }
    }

    /// The next FLV header or tag from the binary messages; `Ok(None)` when the session ended.
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>, String> {
        loop {
            if let Some(ev) = self
                .parser
                .next_event()
                .map_err(|e| format!("invalid FLV: {e}"))?
            {
                return Ok(Some(ev));
            }
            match self.read_msg(deadline)? {
                Some(Msg::Binary(b)) => self
                    .parser
                    .push(&b)
                    .map_err(|e| format!("invalid FLV: {e}"))?,
                Some(Msg::Close(_)) | None => return Ok(None),
                Some(Msg::Text(_)) => return Err("a text message".into()),
                Some(_) => {}
            }
        }
    }

    /// Reads tags for `dur` (the session must not end meanwhile).
    pub fn tags_for(&mut self, dur: Duration) -> Vec<Tag> {
        let until = Instant::now() + dur;
        let mut out = Vec::new();
        while Instant::now() < until {
            match self.next_event(until) {
                Ok(Some(Event::Tag(t))) => out.push(t),
                Ok(Some(Event::Header(_))) => panic!("second FLV header"),
                Ok(None) => panic!("session ended after {} tags ({:?})", out.len(), self.close),
                Err(e) if e.starts_with("timed out") => break,
                Err(e) => panic!("{e}"),
            }
        }
        out
    }
}

impl super::flv::LiveFlv for WsClient {
    fn header(&mut self, timeout: Duration) -> Header {
        match self.next_event(Instant::now() + timeout) {
            Ok(Some(Event::Header(h))) => h,
            other => panic!("expected the FLV header, got {other:?}"),
        }
    }

    fn tag(&mut self, timeout: Duration) -> Tag {
        match self.next_event(Instant::now() + timeout) {
            Ok(Some(Event::Tag(t))) => t,
            other => panic!("expected a tag, got {other:?}"),
        }
    }
}

/// A masked client frame.
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5Au8, 0x13, 0xC7, 0x01];
    let mut f = vec![first];
    let n = payload.len();
    if n <= 125 {
        f.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// One whole server frame at the start of `b`, and its length. Server frames must be unmasked
/// and unfragmented (the gateway sends each message in one frame).
fn parse(b: &[u8]) -> Result<Option<(Msg, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x80 == 0 {
        return Err("fragmented server frame".into());
    }
    if b[0] & 0x70 != 0 {
        return Err("reserved bits set".into());
    }
    if b[1] & 0x80 != 0 {
        return Err("server frames must not be masked".into());
    }
    let (len, at) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(l) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if b.len() < at + len {
        return Ok(None);
    }
    let p = b[at..at + len].to_vec();
    let msg = match b[0] & 0x0F {
        0x1 => Msg::Text(p),
        0x2 => Msg::Binary(p),
        0x8 if p.len() >= 2 => Msg::Close(Some(u16::from_be_bytes([p[0], p[1]]))),
        0x8 => Msg::Close(None),
        0x9 => Msg::Ping(p),
        0xA => Msg::Pong(p),
        op => return Err(format!("unexpected opcode {op:#x}")),
    };
    Ok(Some((msg, at + len)))
}
