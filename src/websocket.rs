//! WebSocket-FLV: a live viewer over a WebSocket (RFC 6455) instead of a chunked HTTP body.
//!
//! mpegts.js and flv.js play `ws://…/cam1.flv`; a page may hold many such streams, where
//! HTTP/1.1 allows six connections per host. The viewer is the one fan-out engine's
//! [`ViewerBody`], the very queue an HTTP viewer drains (GOP replay, skip-to-keyframe, cut):
//! only the framing on the wire differs. Auth, the per-address viewer limit and the hub join
//! all happen before the `101`, so a refused viewer gets the usual JSON error and no upgrade.
//!
//! Only what a live viewer needs, server side, and nothing that buffers for a client:
//! - outbound: the tags queued since the last wake go out as one unmasked binary message, the
//!   shared `Bytes` written vectored behind a small header (no copy per viewer);
//! - inbound: control frames only. Ping → pong, pong → alive, close → echoed, and the viewer
//!   ends. A data message closes with 1003; a frame longer than a control frame's 125 bytes is
//!   refused from its header alone (1009 for data, 1002 for control), so at most one small
//!   frame is ever buffered;
//! - a ping every `live.websocket_ping_interval`; a client that has not answered the previous
//!   one when the next is due is dropped without a close frame (it is not listening).
//!
//! Close codes the gateway sends: **1000** the stream ended; **1001** the gateway is shutting
//! down; **1008** the viewer fell too far behind and was cut (the slow-viewer rule every live
//! viewer has); **1011** the live source failed under the stream; 1002 / 1003 / 1009 for what a
//! client sent (protocol error, a data message, a frame too large).
//!
//! Written here rather than taken from a WebSocket crate: the server only sends binary
//! messages and reads control frames, and the crates copy each payload into their own buffer
//! (tungstenite) or want it as `Vec`/`BytesMut` (fastwebsockets), where the fan-out hands
//! refcounted `Bytes` shared by every viewer.

use std::io::{self, IoSlice};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::error::GatewayError;
use crate::fanout::ViewerBody;
use crate::server::ConnHold;

/// RFC 6455 section 1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Most bytes of queued tags sent as one message. Tags are taken from the viewer's queue only
/// as fast as they are written, like hyper's own buffer for an HTTP viewer, so the slow-viewer
/// rule sees the same backlog either way.
const BATCH_BYTES: usize = crate::server::CONNECTION_BUFFER;

/// Largest payload of a control frame (RFC 6455 section 5.5): the most a client frame may
/// carry here, since data frames are refused.
const MAX_CONTROL: usize = 125;

/// How long the gateway waits for the client's answer to its close frame before it closes the
/// connection anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Close codes (RFC 6455 section 7.4.1).
pub mod code {
    /// The stream ended.
    pub const NORMAL: u16 = 1000;
    /// The gateway is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol (unmasked, fragmented control, bad close payload).
    pub const PROTOCOL: u16 = 1002;
    /// The client sent a data message: a live viewer only receives.
    pub const UNSUPPORTED: u16 = 1003;
    /// The viewer was too slow and was cut off.
    pub const POLICY: u16 = 1008;
    /// A frame too large to accept.
    pub const TOO_BIG: u16 = 1009;
    /// The live source failed under the stream.
    pub const SOURCE_FAILED: u16 = 1011;
}

/// Frame opcodes.
mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Whether `req` asks to become a WebSocket: GET over HTTP/1.1 with `Upgrade: websocket` and
/// `Connection: upgrade` (tokens, case-insensitive). HTTP/2's extended CONNECT is not served.
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && crate::http1::header_has_token(req.headers(), header::UPGRADE, "websocket")
        && crate::http1::header_has_token(req.headers(), header::CONNECTION, "upgrade")
}

/// Checks the handshake's version and key and returns the `Sec-WebSocket-Accept` value.
pub(crate) fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, GatewayError> {
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes());
    if version != Some(b"13") {
        return Err(GatewayError::WebSocketVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes().trim_ascii())
        .ok_or(GatewayError::BadRequest("Sec-WebSocket-Key is missing"))?;
    // The key is 16 random bytes in base64 (section 4.1); it is hashed as sent.
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => {
            return Err(GatewayError::BadRequest(
                "Sec-WebSocket-Key is not 16 bytes",
            ))
        }
    }
    Ok(accept_for(key))
}

fn accept_for(key: &[u8]) -> HeaderValue {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    HeaderValue::from_str(&accept).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `101 Switching Protocols` answer.
pub(crate) fn switching(accept: HeaderValue) -> Response<Body> {
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

/// One WebSocket viewer, from the `101` to its close.
pub(crate) struct Session {
    /// The viewer's queue in the stream's fan-out.
    pub viewer: ViewerBody,
    /// The connection, once hyper has written the `101` and let go of it.
    pub upgrade: OnUpgrade,
    /// `live.websocket_ping_interval`.
    pub ping_interval: Duration,
    /// The gateway's shutdown: the viewer gets 1001.
    pub shutdown: CancellationToken,
    /// The connection's slots and drain accounting (see [`ConnHold`]); its drain deadline
    /// closes the connection wherever the session is.
    pub hold: Option<ConnHold>,
}

/// How a session ended, for the access log.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// FLV bytes written to the client.
    pub bytes: u64,
    /// The close code sent or echoed (`None`: the connection just ended).
    pub close: Option<u16>,
    /// Why it ended, when that was not a normal close.
    pub error: Option<String>,
}

/// What ends the main loop.
enum End {
    /// Send a close frame with this code, then wait (bounded) for the client's.
    Close(u16),
    /// The client sent its close (already echoed), or the connection is gone.
    Done,
}

impl Session {
    /// Runs the session until it closes; the connection is closed when this returns.
    pub async fn run(self) -> Outcome {
        let Session {
            viewer,
            upgrade,
            ping_interval,
            shutdown,
            hold,
        } = self;
        let force = hold.as_ref().map(|h| h.force_close()).unwrap_or_default();
        let upgraded = tokio::select! {
            u = upgrade => match u {
                Ok(u) => u,
                Err(e) => {
                    return Outcome {
                        error: Some(format!("upgrade failed: {e}")),
                        ..Outcome::default()
                    };
                }
            },
            _ = force.cancelled() => return Outcome::default(),
        };
        let out = serve(
            TokioIo::new(upgraded),
            viewer,
            ping_interval,
            &shutdown,
            &force,
        )
        .await;
        drop(hold);
        out
    }
}

/// The session on its connection: [`pump`], then the closing handshake; `force` (the drain
/// deadline) ends it wherever it is. The connection is dropped when this returns.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    viewer: ViewerBody,
    ping_interval: Duration,
    shutdown: &CancellationToken,
    force: &CancellationToken,
) -> Outcome {
    let mut out = Outcome::default();
    let end = tokio::select! {
        e = pump(&mut io, viewer, ping_interval, shutdown, &mut out) => e,
        _ = force.cancelled() => {
            out.error = Some("closed at the drain deadline".into());
            End::Done
        }
    };
    if let End::Close(c) = end {
        out.close = Some(c);
        tokio::select! {
            _ = close_handshake(&mut io, c) => {}
            _ = force.cancelled() => {}
        }
    }
    out
}

/// Sends tags and pings, answers control frames, until the session must end. The viewer is
/// dropped (detached from its stream) when this returns.
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    mut viewer: ViewerBody,
    ping_interval: Duration,
    shutdown: &CancellationToken,
    out: &mut Outcome,
) -> End {
    let mut inbound = Inbound::default();
    let mut rbuf = [0u8; 512];
    let start = tokio::time::Instant::now() + ping_interval;
    let mut ping = tokio::time::interval_at(start, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Close(code::GOING_AWAY),
            r = io.read(&mut rbuf) => {
                let n = match r {
                    Ok(0) => {
                        out.error = Some("the client closed the connection".into());
                        return End::Done;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        out.error = Some(format!("read: {e}"));
                        return End::Done;
                    }
                };
                inbound.buf.extend_from_slice(&rbuf[..n]);
                while let Some(frame) = inbound.next() {
                    let reply = match frame {
                        Frame::Ping(p) => control(op::PONG, &p),
                        Frame::Pong => {
                            awaiting_pong = false;
                            continue;
                        }
                        Frame::Close(c) => {
                            // Echo the client's code (section 5.5.1), and the viewer is done.
                            let payload = c.map(u16::to_be_bytes);
                            let payload = payload.as_ref().map_or(&[][..], |p| &p[..]);
                            let _ = write_parts(io, &mut [control(op::CLOSE, payload)]).await;
                            out.close = c.or(Some(code::NORMAL));
                            return End::Done;
                        }
                        Frame::Refuse(c, why) => {
                            out.error = Some(why.into());
                            return End::Close(c);
                        }
                    };
                    if let Err(e) = write_parts(io, &mut [reply]).await {
                        out.error = Some(format!("write: {e}"));
                        return End::Done;
                    }
                }
            }
            f = viewer.frame() => {
                let mut parts = vec![Bytes::new()];
                let mut size = 0usize;
                let mut next = Some(f);
                let mut end = None;
                // What is queued now goes out as one message, up to a batch.
                while let Some(f) = next.take() {
                    match f {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                size += data.len();
                                parts.push(data);
                            }
                        }
                        None if shutdown.is_cancelled() => end = Some(code::GOING_AWAY),
                        None => end = Some(code::NORMAL),
                        Some(Err(e)) => {
                            out.error = Some(e.to_string());
                            end = Some(if viewer.was_cut() {
                                code::POLICY
                            } else {
                                code::SOURCE_FAILED
                            });
                        }
                    }
                    if end.is_none() && size < BATCH_BYTES {
                        next = viewer.frame().now_or_never();
                    }
                }
                if size > 0 {
                    parts[0] = header(op::BINARY, size);
                    if let Err(e) = write_parts(io, &mut parts).await {
                        out.error = Some(format!("write: {e}"));
                        return End::Done;
                    }
                    out.bytes += size as u64;
                }
                if let Some(c) = end {
                    return End::Close(c);
                }
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    out.error = Some(format!("no pong within {ping_interval:?}"));
                    return End::Done;
                }
                awaiting_pong = true;
                if let Err(e) = write_parts(io, &mut [control(op::PING, b"")]).await {
                    out.error = Some(format!("write: {e}"));
                    return End::Done;
                }
            }
        }
    }
}

/// The gateway's side of the closing handshake: its close frame, then the client's (anything
/// else it sends meanwhile is discarded), bounded by [`CLOSE_WAIT`].
async fn close_handshake<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, c: u16) {
    if write_parts(io, &mut [control(op::CLOSE, &c.to_be_bytes())])
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let mut inbound = Inbound::default();
        let mut rbuf = [0u8; 512];
        loop {
            match io.read(&mut rbuf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => inbound.buf.extend_from_slice(&rbuf[..n]),
            }
            while let Some(f) = inbound.next() {
                if matches!(f, Frame::Close(_) | Frame::Refuse(..)) {
                    return;
                }
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(CLOSE_WAIT, io.shutdown()).await;
}

/// A frame header for a server frame (unmasked, final) carrying `len` bytes.
fn header(opcode: u8, len: usize) -> Bytes {
    let mut h = Vec::with_capacity(10);
    h.push(0x80 | opcode);
    if len <= 125 {
        h.push(len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        h.push(126);
        h.extend_from_slice(&l.to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    Bytes::from(h)
}

/// A whole control frame (payload at most 125 bytes).
fn control(opcode: u8, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    let mut f = header(opcode, payload.len()).to_vec();
    f.extend_from_slice(payload);
    Bytes::from(f)
}

/// Writes every part, vectored, then flushes.
async fn write_parts<W: AsyncWrite + Unpin>(w: &mut W, parts: &mut [Bytes]) -> io::Result<()> {
    let mut i = 0;
    loop {
        while i < parts.len() && parts[i].is_empty() {
            i += 1;
        }
        if i == parts.len() {
            break;
        }
        let slices: Vec<IoSlice<'_>> = parts[i..]
            .iter()
            .take(64)
            .map(|b| IoSlice::new(b))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let take = n.min(parts[i].len());
            parts[i].advance(take);
            n -= take;
            if parts[i].is_empty() {
                i += 1;
            }
        }
    }
    w.flush().await
}

/// One frame from the client, as far as a live viewer cares.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Ping(Vec<u8>),
    Pong,
    /// The client closes, with its status code if it sent one.
    Close(Option<u16>),
    /// Not acceptable: close with this code.
    Refuse(u16, &'static str),
}

/// Bytes read from the client and not yet a whole frame: never more than one control frame
/// (2 + 8 + 4 + 125 bytes) plus one read, since longer frames are refused from their header.
#[derive(Debug, Default)]
struct Inbound {
    buf: Vec<u8>,
}

impl Inbound {
    /// The next whole frame, if the buffer holds one. After a `Refuse` the rest is not read.
    fn next(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0F);
        let (masked, len7) = (b[1] & 0x80 != 0, (b[1] & 0x7F) as usize);
        let refuse = |c, why| Some(Frame::Refuse(c, why));
        if rsv != 0 {
            return refuse(
                code::PROTOCOL,
                "reserved bits set (no extension was agreed)",
            );
        }
        if !masked {
            return refuse(code::PROTOCOL, "client frames must be masked");
        }
        match opcode {
            op::TEXT | op::BINARY | op::CONTINUATION if len7 > MAX_CONTROL => {
                return refuse(code::TOO_BIG, "frame too large");
            }
            op::TEXT | op::BINARY | op::CONTINUATION => {
                return refuse(code::UNSUPPORTED, "a live viewer sends no data messages");
            }
            op::CLOSE | op::PING | op::PONG if !fin => {
                return refuse(code::PROTOCOL, "fragmented control frame");
            }
            op::CLOSE | op::PING | op::PONG if len7 > MAX_CONTROL => {
                return refuse(code::PROTOCOL, "control frame over 125 bytes");
            }
            op::CLOSE | op::PING | op::PONG => {}
            _ => return refuse(code::PROTOCOL, "unknown opcode"),
        }
        let total = 2 + 4 + len7;
        if b.len() < total {
            return None;
        }
        let mask = [b[2], b[3], b[4], b[5]];
        let payload: Vec<u8> = b[6..total]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ mask[i % 4])
            .collect();
        self.buf.drain(..total);
        Some(match opcode {
            op::PING => Frame::Ping(payload),
            op::PONG => Frame::Pong,
            _ => match payload.len() {
                0 => Frame::Close(None),
                1 => Frame::Refuse(code::PROTOCOL, "close payload of one byte"),
                _ => {
                    let c = u16::from_be_bytes([payload[0], payload[1]]);
                    let valid = matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999);
                    if valid && std::str::from_utf8(&payload[2..]).is_ok() {
                        Frame::Close(Some(c))
                    } else {
                        Frame::Refuse(code::PROTOCOL, "invalid close code or reason")
                    }
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![first, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn the_accept_key_matches_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(accept_key(&h).is_err(), "no version");
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(accept_key(&h).is_err(), "old version");
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        assert_eq!(
            accept_key(&h).expect("valid"),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("c2hvcnQ="),
        );
        assert!(accept_key(&h).is_err(), "not 16 bytes");
    }

    #[test]
    fn only_a_websocket_get_over_http_1_1_is_an_upgrade() {
        let req = |m: Method, v: Version, up: &str, conn: &str| {
            let mut r = Request::builder().method(m).version(v);
            r = r.header("upgrade", up).header("connection", conn);
            r.body(()).expect("request")
        };
        assert!(is_upgrade(&req(
            Method::GET,
            Version::HTTP_11,
            "websocket",
            "Upgrade"
        )));
        assert!(is_upgrade(&req(
            Method::GET,
            Version::HTTP_11,
            "WebSocket",
            "keep-alive, upgrade"
        )));
        assert!(!is_upgrade(&req(
            Method::POST,
            Version::HTTP_11,
            "websocket",
            "Upgrade"
        )));
        assert!(!is_upgrade(&req(
            Method::GET,
            Version::HTTP_2,
            "websocket",
            "Upgrade"
        )));
        assert!(!is_upgrade(&req(
            Method::GET,
            Version::HTTP_11,
            "h2c",
            "Upgrade"
        )));
        assert!(!is_upgrade(&req(
            Method::GET,
            Version::HTTP_11,
            "websocket",
            "close"
        )));
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(&header(op::BINARY, 5)[..], &[0x82, 5]);
        assert_eq!(&header(op::BINARY, 126)[..], &[0x82, 126, 0, 126]);
        assert_eq!(&header(op::BINARY, 65535)[..], &[0x82, 126, 0xFF, 0xFF]);
        assert_eq!(
            &header(op::BINARY, 65536)[..],
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(
            &control(op::CLOSE, &1000u16.to_be_bytes())[..],
            &[0x88, 2, 3, 0xE8]
        );
    }

    #[test]
    fn control_frames_are_parsed_across_reads() {
        let mut i = Inbound::default();
        let ping = masked(0x89, b"hi");
        i.buf.extend_from_slice(&ping[..3]);
        assert_eq!(i.next(), None, "incomplete");
        i.buf.extend_from_slice(&ping[3..]);
        i.buf.extend_from_slice(&masked(0x8A, b""));
        i.buf
            .extend_from_slice(&masked(0x88, &[0x03, 0xE8, b'o', b'k']));
        assert_eq!(i.next(), Some(Frame::Ping(b"hi".to_vec())));
        assert_eq!(i.next(), Some(Frame::Pong));
        assert_eq!(i.next(), Some(Frame::Close(Some(1000))));
        assert_eq!(i.next(), None);
        assert!(i.buf.is_empty());
    }

    #[test]
    fn what_a_client_may_not_send_is_refused_from_the_header() {
        let refused = |bytes: &[u8]| {
            let mut i = Inbound::default();
            i.buf.extend_from_slice(bytes);
            match i.next() {
                Some(Frame::Refuse(c, _)) => c,
                other => panic!("{other:?}"),
            }
        };
        // A 16 MiB binary frame: refused on its two-byte header, nothing else read.
        assert_eq!(refused(&[0x82, 0xFF]), code::TOO_BIG);
        assert_eq!(refused(&masked(0x82, b"data")), code::UNSUPPORTED);
        assert_eq!(refused(&masked(0x81, b"text")), code::UNSUPPORTED);
        assert_eq!(
            refused(&[0x89, 0xFE]),
            code::PROTOCOL,
            "ping over 125 bytes"
        );
        assert_eq!(refused(&[0x09, 0x80]), code::PROTOCOL, "fragmented ping");
        assert_eq!(refused(&[0x89, 0x00]), code::PROTOCOL, "unmasked");
        assert_eq!(refused(&[0xC9, 0x80]), code::PROTOCOL, "reserved bit");
        assert_eq!(refused(&[0x83, 0x80]), code::PROTOCOL, "unknown opcode");
        assert_eq!(
            refused(&masked(0x88, &[3])),
            code::PROTOCOL,
            "one-byte close"
        );
        assert_eq!(
            refused(&masked(0x88, &1005u16.to_be_bytes())),
            code::PROTOCOL,
            "a code never sent on the wire"
        );
    }

    mod session {
        use std::sync::Arc;

        use tokio::io::DuplexStream;

        use super::super::*;
        use crate::fanout::{Core, Failure, LiveCounters, Settings};
        use crate::flv::{Tag, TagKind};

        fn core() -> Arc<Core> {
            let core = Core::new(
                "t",
                Settings {
                    gop_cache: true,
                    linger: Duration::from_secs(5),
                    viewer_queue_bytes: 64 * 1024,
                    viewer_queue_duration: Duration::from_secs(10),
                    max_viewers: 10,
                    max_gop_bytes: 1 << 20,
                },
                Arc::new(LiveCounters::default()),
                None,
            );
            core.begin(false, true, "n1");
            core
        }

        fn video(ts: u32, key: bool, size: usize) -> Tag {
            let mut d = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            d.resize(size, 7);
            Tag::new(TagKind::Video, ts, &d).expect("tag")
        }

        /// Runs a session over an in-memory pipe of `pipe` bytes; returns the client's end.
        fn start(
            core: &Arc<Core>,
            pipe: usize,
            ping: Duration,
            shutdown: &CancellationToken,
        ) -> (DuplexStream, tokio::task::JoinHandle<Outcome>) {
            let viewer = core.attach().expect("attach");
            let (server, client) = tokio::io::duplex(pipe);
            let shutdown = shutdown.clone();
            let task = tokio::spawn(async move {
                serve(server, viewer, ping, &shutdown, &CancellationToken::new()).await
            });
            (client, task)
        }

        /// Server frames until EOF: (opcode, payload). Answers a close with a close.
        async fn frames(client: &mut DuplexStream) -> Vec<(u8, Vec<u8>)> {
            let mut raw = Vec::new();
            let mut out = Vec::new();
            let mut tmp = [0u8; 4096];
            loop {
                // Whole frames first.
                loop {
                    if raw.len() < 2 {
                        break;
                    }
                    let (len, at) = match raw[1] & 0x7F {
                        126 if raw.len() >= 4 => (u16::from_be_bytes([raw[2], raw[3]]) as usize, 4),
                        127 if raw.len() >= 10 => (
                            u64::from_be_bytes(raw[2..10].try_into().expect("8")) as usize,
                            10,
                        ),
                        126 | 127 => break,
                        n => (n as usize, 2),
                    };
                    if raw.len() < at + len {
                        break;
                    }
                    let opcode = raw[0] & 0x0F;
                    out.push((opcode, raw[at..at + len].to_vec()));
                    raw.drain(..at + len);
                    if opcode == op::CLOSE {
                        let payload = out.last().map(|f| f.1.clone()).unwrap_or_default();
                        let mut echo = vec![0x88, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                        echo.extend_from_slice(&payload);
                        let _ = client.write_all(&echo).await;
                    }
                }
                match client.read(&mut tmp).await {
                    Ok(0) | Err(_) => return out,
                    Ok(n) => raw.extend_from_slice(&tmp[..n]),
                }
            }
        }

        fn close_code(frames: &[(u8, Vec<u8>)]) -> Option<u16> {
            let (opcode, p) = frames.last()?;
            (*opcode == op::CLOSE).then(|| u16::from_be_bytes([p[0], p[1]]))
        }

        #[tokio::test(start_paused = true)]
        async fn the_stream_ending_sends_its_tags_then_1000() {
            let core = core();
            let (mut client, task) = start(
                &core,
                1 << 16,
                Duration::from_secs(30),
                &CancellationToken::new(),
            );
            core.push(video(0, true, 100));
            core.flush();
            core.end("test");
            let got = frames(&mut client).await;
            assert_eq!(close_code(&got), Some(code::NORMAL));
            let flv: Vec<u8> = got
                .iter()
                .filter(|(o, _)| *o == op::BINARY)
                .flat_map(|(_, p)| p.clone())
                .collect();
            assert_eq!(&flv[..3], b"FLV");
            assert_eq!(
                flv.len(),
                13 + 11 + 100 + 4,
                "header and the one tag, whole"
            );
            let out = task.await.expect("session");
            assert_eq!(out.bytes, flv.len() as u64);
            assert_eq!(out.close, Some(code::NORMAL));
            assert!(out.error.is_none());
        }

        #[tokio::test(start_paused = true)]
        async fn a_failed_source_closes_with_1011_and_shutdown_with_1001() {
            let core = core();
            let (mut client, task) = start(
                &core,
                1 << 16,
                Duration::from_secs(30),
                &CancellationToken::new(),
            );
            core.fail(Failure::Upstream {
                node: "n1".into(),
                msg: "gone".into(),
            });
            assert_eq!(
                close_code(&frames(&mut client).await),
                Some(code::SOURCE_FAILED)
            );
            task.await.expect("session");

            let core = self::core();
            let shutdown = CancellationToken::new();
            let (mut client, task) = start(&core, 1 << 16, Duration::from_secs(30), &shutdown);
            shutdown.cancel();
            assert_eq!(
                close_code(&frames(&mut client).await),
                Some(code::GOING_AWAY)
            );
            assert_eq!(task.await.expect("session").close, Some(code::GOING_AWAY));
            assert_eq!(core.viewers(), 0, "the viewer left the stream");
        }

        #[tokio::test(start_paused = true)]
        async fn a_client_that_answers_no_ping_is_dropped() {
            let core = core();
            let (mut client, task) = start(
                &core,
                1 << 16,
                Duration::from_secs(5),
                &CancellationToken::new(),
            );
            // Nothing answers: one ping, then the connection ends without a close frame.
            let got = frames(&mut client).await;
            assert_eq!(got.iter().filter(|(o, _)| *o == op::PING).count(), 1);
            assert_eq!(close_code(&got), None);
            let out = task.await.expect("session");
            assert!(out.error.is_some_and(|e| e.contains("no pong")));
            assert_eq!(core.viewers(), 0);
        }

        #[tokio::test(start_paused = true)]
        async fn a_viewer_that_stops_reading_is_cut_with_1008() {
            let core = core();
            // A 1 KiB pipe nobody reads: the session blocks in its first write.
            let (mut client, task) = start(
                &core,
                1024,
                Duration::from_secs(30),
                &CancellationToken::new(),
            );
            core.push(video(0, true, 20_000));
            core.flush();
            tokio::task::yield_now().await;
            for i in 1..=4 {
                core.push(video(i * 40, false, 20_000));
            }
            // Backed up past the budget, skipping: the next keyframe cuts it.
            core.push(video(200, true, 20_000));
            assert_eq!(core.viewers(), 0, "cut");
            let got = frames(&mut client).await;
            assert_eq!(close_code(&got), Some(code::POLICY));
            let out = task.await.expect("session");
            assert_eq!(out.close, Some(code::POLICY));
        }
    }

    #[tokio::test]
    async fn vectored_writes_resume_mid_part() {
        // A tiny duplex forces partial writes across part boundaries.
        let (mut a, mut b) = tokio::io::duplex(7);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.expect("read");
            got
        });
        let mut parts = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defghijklmnop"),
            Bytes::from_static(b"q"),
        ];
        write_parts(&mut a, &mut parts).await.expect("write");
        drop(a);
        assert_eq!(reader.await.expect("reader"), b"abcdefghijklmnopq");
    }
}
