//! The spliced path in process, over real sockets on 127.0.0.1: a test node (a TCP socket
//! sending a Content-Length framed body), a real hyper HTTP/1 server connection over the real
//! IO stack (`StallTimeout<SpliceIo<TcpStream>>`), answering through [`offer`] and [`answer`],
//! and a raw viewer socket that checks every byte.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::stall_timeout::StallTimeout;

/// Body byte `i`: never zero, so a marker's zeros on the wire cannot pass for body bytes.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// Body bytes `from..to`, built a period at a time (fast in debug builds too).
fn pattern_bytes(from: usize, to: usize) -> Vec<u8> {
    let period: Vec<u8> = (0..251).map(pattern).collect();
    let mut out = Vec::with_capacity(to - from);
    let mut i = from;
    while i < to {
        let at = i % 251;
        let n = (251 - at).min(to - i);
        out.extend_from_slice(&period[at..at + n]);
        i += n;
    }
    out
}

/// A node's answer body: `prefix` (as read with the head), then `rest` bytes on `sock`.
struct TestBody {
    sock: TcpStream,
    prefix: Option<Bytes>,
    rest: u64,
    /// Hand over as a splice source (`false`: a transport that declines).
    spliceable: bool,
    /// Say no length (`remaining() == None`, no size hint).
    no_length: bool,
    dropped: Arc<AtomicBool>,
}

impl Drop for TestBody {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl http_body::Body for TestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    /// The copying path: reads the socket into memory.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(p) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        if this.rest == 0 {
            return Poll::Ready(None);
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut rb = ReadBuf::new(&mut buf);
        ready!(Pin::new(&mut this.sock).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
        }
        this.rest -= n as u64;
        buf.truncate(n);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }
}

impl Spliceable for TestBody {
    fn into_splice(self) -> Result<Box<dyn SpliceSource>, Self> {
        if !self.spliceable {
            return Err(self);
        }
        Ok(Box::new(TestSource(self)))
    }
}

/// [`TestBody`] as a splice source (Content-Length framed).
struct TestSource(TestBody);

impl SpliceSource for TestSource {
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        pipe: BorrowedFd<'_>,
        max: usize,
    ) -> Poll<io::Result<Step>> {
        let b = &mut self.0;
        if let Some(p) = b.prefix.take() {
            return Poll::Ready(Ok(Step::Data(p)));
        }
        if b.rest == 0 {
            return Poll::Ready(Ok(Step::End));
        }
        let max = max.min(usize::try_from(b.rest).unwrap_or(usize::MAX));
        let n = ready!(poll_socket_to_pipe(&b.sock, cx, pipe, max))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        b.rest -= n as u64;
        Poll::Ready(Ok(Step::Spliced(n)))
    }

    fn remaining(&self) -> Option<u64> {
        if self.0.no_length {
            return None;
        }
        Some(self.0.rest + self.0.prefix.as_ref().map_or(0, |p| p.len() as u64))
    }
}

/// What the test node sends for a request path `/<size>[/<prefix>][/cut][/copy]`.
struct Ask {
    size: usize,
    prefix: usize,
    /// The node closes after half the body.
    cut: bool,
    /// The source declines (the copying path).
    copy: bool,
    /// No length: the source's framing is unknown to hyper, which chunks the answer.
    chunked: bool,
    /// The node closes before sending anything past the prefix, and the gateway has seen the
    /// close before the answer starts: the prefix, then at once an error.
    gone: bool,
    /// The node sends half the body, then nothing more, holding the connection open; the
    /// body's node-idle timeout is short.
    silent: bool,
}

fn parse(path: &str) -> Ask {
    let mut parts = path.trim_start_matches('/').split('/');
    let size = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut ask = Ask {
        size,
        prefix: 0,
        cut: false,
        copy: false,
        chunked: false,
        gone: false,
        silent: false,
    };
    for p in parts {
        match p {
            "cut" => ask.cut = true,
            "copy" => ask.copy = true,
            "chunked" => ask.chunked = true,
            "gone" => ask.gone = true,
            "silent" => ask.silent = true,
            n => ask.prefix = n.parse().unwrap_or(0),
        }
    }
    ask
}

/// A node: a socket that sends body bytes `prefix..size` (half of them when cut), then holds
/// the connection open until the reader is gone (or closes, when cut).
async fn node(ask: &Ask) -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (from, to) = (ask.prefix, ask.size);
    let end = match (ask.gone, ask.cut) {
        (true, _) => from,
        (false, true) => from + (to - from) / 2,
        (false, false) if ask.silent => from + (to - from) / 2,
        (false, false) => to,
    };
    let body = pattern_bytes(from, end);
    let cut = ask.cut || ask.gone;
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        if s.write_all(&body).await.is_err() {
            return;
        }
        if cut {
            return;
        }
        let mut b = [0u8; 1];
        let _ = s.read(&mut b).await;
    });
    TcpStream::connect(addr).await.expect("connect")
}

/// The node-idle timeout of a `silent` answer.
const SILENT_IDLE: Duration = Duration::from_millis(500);

/// Answers `req` from a test node, through `offer` and `answer`.
async fn respond<B>(
    req: Request<B>,
    link: Option<&Link>,
    pipes: &Arc<Pipes>,
    dropped: Arc<AtomicBool>,
    secure: bool,
) -> Response<crate::body::Body> {
    let ask = parse(req.uri().path());
    let sock = node(&ask).await;
    if ask.gone {
        // The node's close has arrived (readable at end of stream).
        let _ = sock.readable().await;
    }
    let body = TestBody {
        sock,
        prefix: (ask.prefix > 0).then(|| pattern_bytes(0, ask.prefix).into()),
        rest: (ask.size - ask.prefix) as u64,
        spliceable: !ask.copy,
        no_length: ask.chunked,
        dropped,
    };
    let (mut head, ()) = Response::new(()).into_parts();
    if !ask.chunked {
        head.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(ask.size as u64),
        );
    }
    head.headers
        .insert("x-test", http::HeaderValue::from_static("spliced"));
    let offer = offer(super::Request {
        pipes: Some(pipes),
        link,
        secure,
        version: req.version(),
        method: req.method(),
        cached: false,
        playlist_path: None,
    });
    let idle = if ask.silent {
        SILENT_IDLE
    } else {
        Duration::from_secs(60)
    };
    let body = answer(offer, &head, body, idle);
    Response::from_parts(head, body)
}

struct Server {
    addr: std::net::SocketAddr,
    pipes: Arc<Pipes>,
    /// Set when a test body (a source or the copying body) is dropped.
    dropped: Arc<AtomicBool>,
}

/// A hyper HTTP/1 server (one task per connection) over the real IO stack, answering through
/// `offer` and `answer`. `writev = false` forces hyper to flatten (the guard's test).
async fn server(limit: usize, writev: bool, send_timeout: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pipes = Pipes::new(limit, pipe::PIPE_SIZE);
    let dropped = Arc::new(AtomicBool::new(false));
    let (p, d) = (pipes.clone(), dropped.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let link = Link::default();
            let io = StallTimeout::new(SpliceIo::new(tcp, link.clone()), send_timeout);
            let (p, d) = (p.clone(), d.clone());
            let svc = service_fn(move |req: Request<Incoming>| {
                let (p, d, link) = (p.clone(), d.clone(), link.clone());
                async move {
                    let resp = respond(req, Some(&link), &p, d, false).await;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.max_buf_size(crate::server::CONNECTION_BUFFER);
                if !writev {
                    b.writev(false);
                }
                let _ = b.serve_connection(TokioIo::new(io), svc).await;
            });
        }
    });
    Server {
        addr,
        pipes,
        dropped,
    }
}

/// Reads one response head: the status line and headers (lower-cased names).
async fn head(c: &mut TcpStream, rest: &mut Vec<u8>) -> Option<(String, Vec<(String, String)>)> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&rest[..end]).into_owned();
            rest.drain(..end + 4);
            let mut lines = text.split("\r\n");
            let status = lines.next().unwrap_or_default().to_string();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return Some((status, headers));
        }
        let n = c.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        rest.extend_from_slice(&buf[..n]);
    }
}

/// GETs `path` on `c` and reads the body as its Content-Length says: the status, the headers
/// and the body bytes (fewer if the connection closed first).
async fn get(c: &mut TcpStream, path: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut body = Vec::new();
    let Some((status, headers)) = head(c, &mut body).await else {
        return (String::new(), Vec::new(), body);
    };
    let mut buf = vec![0u8; 256 * 1024];
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let Some(len) = len else {
        // Chunked: read to the last chunk, then decode.
        while !body.ends_with(b"\r\n0\r\n\r\n") && body != b"0\r\n\r\n" {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
            }
        }
        return (status, headers, dechunk(&body));
    };
    while body.len() < len {
        match c.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    (status, headers, body)
}

/// Decodes a complete chunked body (no extensions, no trailers).
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..pos])
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .expect("chunk size line");
        data = &data[pos + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size]);
        assert_eq!(&data[size..size + 2], b"\r\n", "chunk end");
        data = &data[size + 2..];
    }
    out
}

fn check(body: &[u8], size: usize) {
    assert_eq!(body.len(), size, "body length");
    if let Some(i) = (0..size).find(|&i| body[i] != pattern(i)) {
        panic!(
            "body byte {i} of {size} is {} (want {})",
            body[i],
            pattern(i)
        );
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bodies_of_every_size_arrive_byte_exact_on_one_keep_alive_connection() {
    let s = server(4, true, Duration::from_secs(30)).await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    let sizes = [
        "/1",
        "/65535",
        "/65535/100",
        "/1048579",
        "/1048579/4096",
        "/20971520/7",
        "/3000001/chunked",
        "/1/chunked",
    ];
    for path in sizes {
        let size = parse(path).size;
        let (status, headers, body) = get(&mut c, path).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        let framing = if parse(path).chunked {
            ("transfer-encoding".to_string(), "chunked".to_string())
        } else {
            ("content-length".to_string(), size.to_string())
        };
        assert!(headers.contains(&framing), "{path}: {headers:?}");
        assert!(
            headers.contains(&("x-test".into(), "spliced".into())),
            "the head is written before the first marker: {headers:?}"
        );
        check(&body, size);
    }
    let st = &s.pipes.stats;
    assert_eq!(st.bodies.load(Ordering::Relaxed), sizes.len() as u64);
    let spliced: u64 = sizes
        .iter()
        .map(|p| {
            let a = parse(p);
            (a.size - a.prefix) as u64
        })
        .sum();
    assert_eq!(
        st.bytes.load(Ordering::Relaxed),
        spliced,
        "every socket byte was spliced"
    );
    wait_until("the pipe is back in the pool", || s.pipes.in_use() == 0).await;
    assert_eq!(s.pipes.idle(), 1, "one pipe, reused by every body");
}

#[tokio::test]
async fn a_declining_source_and_a_full_pool_take_the_copying_path() {
    let s = server(1, true, Duration::from_secs(30)).await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    let (_, _, body) = get(&mut c, "/300000/5/copy").await;
    check(&body, 300_000);
    assert_eq!(s.pipes.stats.fallbacks(Fallback::Source), 1);
    assert_eq!(s.pipes.stats.bodies.load(Ordering::Relaxed), 0);
    // The only pipe is taken: the next body is copied, and counted.
    let held = s.pipes.acquire().expect("the one pipe");
    let (_, _, body) = get(&mut c, "/300000").await;
    check(&body, 300_000);
    assert_eq!(s.pipes.stats.fallbacks(Fallback::Pipes), 1);
    drop(held);
    let (_, _, body) = get(&mut c, "/300000").await;
    check(&body, 300_000);
    assert_eq!(s.pipes.stats.bodies.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_viewer_leaving_mid_body_drops_the_source_and_its_pipe() {
    let s = server(4, true, Duration::from_secs(30)).await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    c.write_all(b"GET /20971520 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    head(&mut c, &mut got).await.expect("head");
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < 100_000 {
        let n = c.read(&mut buf).await.expect("read");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(c);
    wait_until("the source is dropped", || s.dropped.load(Ordering::SeqCst)).await;
    wait_until("the pipe is given back", || s.pipes.in_use() == 0).await;
    // Whatever pipe the pool kept is empty: a new viewer gets exactly its own bytes.
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    let (_, _, body) = get(&mut c, "/1048579/3").await;
    check(&body, 1_048_579);
}

#[tokio::test]
async fn a_node_closing_mid_body_breaks_the_viewers_response() {
    let s = server(4, true, Duration::from_secs(30)).await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    let (status, _, body) = get(&mut c, "/2000000/cut").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body.len() < 2_000_000,
        "the viewer sees the answer end short"
    );
    assert!(!body.is_empty(), "what the node sent arrived");
    let n = body.len();
    check(&body, n);
    // And the connection is closed: nothing can follow a broken body.
    let mut b = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(10), c.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed: {r:?}");
    wait_until("the pipe is given back", || s.pipes.in_use() == 0).await;
}

#[tokio::test]
async fn a_node_that_goes_silent_mid_body_is_cut_at_the_idle_timeout() {
    let s = server(4, true, Duration::from_secs(30)).await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(10), get(&mut c, "/200000/7/silent"))
            .await
            .expect("the answer ends at the idle timeout");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body.len(), 7 + (200_000 - 7) / 2, "all the node sent");
    check(&body, body.len());
    assert_eq!(s.pipes.stats.bodies.load(Ordering::Relaxed), 1, "spliced");
    // The node still holds its connection open: the body's idle timeout broke the answer.
    let mut b = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(10), c.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed: {r:?}");
    wait_until("the source is dropped", || s.dropped.load(Ordering::SeqCst)).await;
    wait_until("the pipe is given back", || s.pipes.in_use() == 0).await;
}

#[tokio::test]
async fn bytes_in_memory_reach_the_viewer_before_a_node_failure_right_behind_them() {
    let s = server(4, true, Duration::from_secs(30)).await;
    // Spliced and copied: both get the answer's edge (`DeferFailureBody`) from `answer`.
    for path in ["/1000/100/gone", "/1000/100/gone/copy"] {
        let mut c = TcpStream::connect(s.addr).await.expect("connect");
        let (status, _, body) = get(&mut c, path).await;
        assert_eq!(
            status, "HTTP/1.1 200 OK",
            "{path}: the head went out before the failure"
        );
        assert_eq!(
            body.len(),
            100,
            "{path}: the bytes read with the head arrived"
        );
        check(&body, 100);
    }
    assert_eq!(
        s.pipes.stats.bodies.load(Ordering::Relaxed),
        1,
        "one spliced"
    );
    assert_eq!(s.pipes.stats.fallbacks(Fallback::Source), 1, "one copied");
    wait_until("the pipe is given back", || s.pipes.in_use() == 0).await;
}

#[tokio::test]
async fn without_vectored_writes_no_marker_reaches_the_wire() {
    let s = server(4, false, Duration::from_secs(30)).await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    c.write_all(b"GET /1048579 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(r.is_ok(), "the connection is closed");
    let body = match got.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &got[end + 4..],
        None => &got[..0],
    };
    assert!(body.len() < 1_048_579, "no complete answer");
    assert!(!body.contains(&0), "no zeros from a marker");
}

#[tokio::test]
async fn a_viewer_that_stops_reading_is_closed_at_the_send_timeout() {
    let s = server(4, true, Duration::from_millis(300)).await;
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    socket2::SockRef::from(&c)
        .set_recv_buffer_size(4096)
        .expect("rcvbuf");
    c.write_all(b"GET /20971520 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Not reading: the server's spliced writes stall, and `send_timeout` ends the connection.
    wait_until("the stalled connection is closed", || {
        s.dropped.load(Ordering::SeqCst)
    })
    .await;
    wait_until("the pipe is given back", || s.pipes.in_use() == 0).await;
}

#[test]
fn only_plain_http1_gets_that_are_not_cached_are_offered() {
    let pipes = Pipes::new(1, pipe::PIPE_SIZE);
    let link = Link::default();
    let base = || super::Request {
        pipes: Some(&pipes),
        link: Some(&link),
        secure: false,
        version: http::Version::HTTP_11,
        method: &Method::GET,
        cached: false,
        playlist_path: None,
    };
    assert!(offer(base()).is_some());
    let cases: [(super::Request<'_>, Fallback); 4] = [
        (
            super::Request {
                secure: true,
                ..base()
            },
            Fallback::Tls,
        ),
        (
            super::Request {
                version: http::Version::HTTP_2,
                ..base()
            },
            Fallback::Http2,
        ),
        (
            super::Request {
                method: &Method::HEAD,
                ..base()
            },
            Fallback::Method,
        ),
        (
            super::Request {
                cached: true,
                ..base()
            },
            Fallback::Cache,
        ),
    ];
    for (r, why) in cases {
        assert!(offer(r).is_none());
        assert_eq!(pipes.stats.fallbacks(why), 1, "{why:?}");
    }
    let off = super::Request {
        pipes: None,
        ..base()
    };
    assert!(offer(off).is_none(), "splice = false");
}

/// The gateway's own server (`crate::server`): the own HTTP/1.1 server (`crate::http1`),
/// `Rewind`, `StallTimeout`, `SpliceIo`, the link in the connection's info.
struct Via {
    pipes: Arc<Pipes>,
    dropped: Arc<AtomicBool>,
}

impl crate::server::Handler for Via {
    async fn call(
        &self,
        req: Request<crate::body::RequestBody>,
        conn: crate::server::ConnInfo,
    ) -> Response<crate::body::Body> {
        let link = conn.splice.as_ref();
        respond(req, link, &self.pipes, self.dropped.clone(), conn.secure).await
    }
}

#[tokio::test]
async fn the_servers_plain_connections_queue_frames_and_splice_them() {
    for splice_on in [true, false] {
        let pipes = Pipes::new(4, pipe::PIPE_SIZE);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let opts = crate::server::ServeOptions {
            splice: splice_on,
            ..crate::server::ServeOptions::default()
        };
        let via = Via {
            pipes: pipes.clone(),
            dropped: Arc::new(AtomicBool::new(false)),
        };
        let running = crate::server::start(
            &[std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
            Arc::new(via),
            opts,
            shutdown.clone(),
        )
        .await
        .expect("start");
        let mut c = TcpStream::connect(running.addrs[0]).await.expect("connect");
        for path in ["/1048579/9", "/65535"] {
            let (status, _, body) = get(&mut c, path).await;
            assert_eq!(status, "HTTP/1.1 200 OK");
            check(&body, parse(path).size);
        }
        let spliced = pipes.stats.bodies.load(Ordering::Relaxed);
        assert_eq!(
            spliced,
            if splice_on { 2 } else { 0 },
            "splice = {splice_on}"
        );
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), running.task).await;
    }
}

#[tokio::test]
async fn the_connection_stack_says_it_writes_vectored() {
    use tokio::io::AsyncWrite;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tcp = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let rewind = crate::proxy_protocol::Rewind::new(Bytes::new(), tcp);
    let io = StallTimeout::new(
        SpliceIo::new(rewind, Link::default()),
        Duration::from_secs(1),
    );
    assert!(io.is_write_vectored(), "hyper's Queue strategy needs it");
}
