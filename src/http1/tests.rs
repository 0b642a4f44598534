//! The own server end to end: a real listener (`crate::server::run`) with a test handler, a
//! raw TCP client, and the bytes on the wire checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::{full, Body, BoxError, RequestBody};
use crate::server::{bind_all, run, ConnInfo, Handler, ServeOptions};

/// `/len/N`: N bytes with a known size; `/chunked/N`: N bytes in two frames, size unknown;
/// `/echo`: the request body's length; `/panic`; `/fail`: `abc`, then an error; `/wait`: never
/// answers (sets `dropped` when its future goes). Every answer says which server parsed the
/// request (`x-body`: `empty` for the own server, `hyper` for hyper).
struct Test {
    dropped: Arc<AtomicBool>,
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn stream(frames: Vec<Result<Bytes, BoxError>>) -> Body {
    let s = futures_util::stream::iter(frames.into_iter().map(|f| f.map(http_body::Frame::data)));
    StreamBody::new(s).boxed()
}

impl Handler for Test {
    async fn call(&self, req: Request<RequestBody>, _conn: ConnInfo) -> Response<Body> {
        let parser = match req.body() {
            RequestBody::Empty => "empty",
            RequestBody::Hyper(_) => "hyper",
        };
        let path = req.uri().path().to_string();
        let n = |p: &str| p.parse::<usize>().unwrap_or(0);
        let body = if let Some(len) = path.strip_prefix("/len/") {
            full(vec![b'x'; n(len)])
        } else if let Some(len) = path.strip_prefix("/chunked/") {
            let len = n(len);
            stream(vec![
                Ok(Bytes::from(vec![b'a'; len / 2])),
                Ok(Bytes::from(vec![b'b'; len - len / 2])),
            ])
        } else if path == "/echo" {
            let got = req.into_body().collect().await.map(|b| b.to_bytes().len());
            full(format!("{}", got.unwrap_or(usize::MAX)))
        } else if path == "/panic" {
            panic!("test handler panics");
        } else if path == "/fail" {
            stream(vec![
                Ok(Bytes::from_static(b"abc")),
                Err("node failed".into()),
            ])
        } else if path == "/wait" {
            let _flag = SetOnDrop(self.dropped.clone());
            std::future::pending::<()>().await;
            full("")
        } else {
            full("ok")
        };
        let mut resp = Response::new(body);
        resp.headers_mut()
            .insert("x-body", http::HeaderValue::from_static(parser));
        resp
    }
}

struct Server {
    addr: std::net::SocketAddr,
    dropped: Arc<AtomicBool>,
    shutdown: CancellationToken,
}

async fn server(opts: ServeOptions) -> Server {
    let dropped = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let listeners = bind_all(&["127.0.0.1:0".parse().expect("addr")])
        .await
        .expect("bind");
    let running = run(
        listeners,
        Arc::new(Test {
            dropped: dropped.clone(),
        }),
        opts,
        shutdown.clone(),
    )
    .expect("run");
    Server {
        addr: running.addrs[0],
        dropped,
        shutdown,
    }
}

/// One parsed answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one answer to a request made with `method` from `c`; `rest` keeps what follows it.
async fn answer(c: &mut TcpStream, rest: &mut Vec<u8>, method: &str) -> Option<Answer> {
    async fn more(c: &mut TcpStream, rest: &mut Vec<u8>) -> bool {
        let mut buf = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                rest.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }
    let end = loop {
        if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if !more(c, rest).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&rest[..end]).into_owned();
    rest.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut a = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if method == "HEAD" || status == 304 || status == 204 {
        return Some(a);
    }
    if let Some(len) = a.header("content-length") {
        let len: usize = len.parse().ok()?;
        while rest.len() < len {
            if !more(c, rest).await {
                return None;
            }
        }
        a.body = rest.drain(..len).collect();
        return Some(a);
    }
    // Chunked.
    loop {
        let line_end = loop {
            if let Some(e) = rest.windows(2).position(|w| w == b"\r\n") {
                break e;
            }
            if !more(c, rest).await {
                return None;
            }
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?, 16).ok()?;
        rest.drain(..line_end + 2);
        while rest.len() < size + 2 {
            if !more(c, rest).await {
                return None;
            }
        }
        a.body.extend(rest.drain(..size));
        rest.drain(..2);
        if size == 0 {
            return Some(a);
        }
    }
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes; what it sent meanwhile.
async fn until_closed(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut got)).await;
    got
}

/// A new connection with `raw` sent on it.
async fn send(addr: std::net::SocketAddr, raw: &[u8]) -> TcpStream {
    let mut c = connect(addr).await;
    c.write_all(raw).await.expect("write");
    c
}

/// Sends `raw` on a new connection and returns all the server sent until it closed, as text.
/// The write may fail (hyper may close before taking an oversized head): the answer counts.
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut c = connect(addr).await;
    let _ = c.write_all(raw).await;
    String::from_utf8_lossy(&until_closed(&mut c).await).into_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let s = server(ServeOptions::default()).await;
    let mut c = send(
        s.addr,
        b"GET /len/5 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /chunked/70001 HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /len/7 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /len/0 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let mut rest = Vec::new();
    let a = answer(&mut c, &mut rest, "GET").await.expect("first");
    assert_eq!((a.status, a.body.as_slice()), (200, &b"xxxxx"[..]));
    assert_eq!(a.header("content-length"), Some("5"));
    assert_eq!(
        a.header("x-body"),
        Some("empty"),
        "parsed by the own server"
    );
    assert!(a.header("date").is_some());
    let a = answer(&mut c, &mut rest, "GET").await.expect("second");
    assert_eq!(a.header("transfer-encoding"), Some("chunked"));
    assert_eq!(a.body.len(), 70001);
    assert_eq!(a.body[..35000], [b'a'; 35000]);
    assert_eq!(a.body[35000..], [b'b'; 35001]);
    let a = answer(&mut c, &mut rest, "HEAD").await.expect("third");
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-length"),
        Some("7"),
        "HEAD keeps the length"
    );
    let a = answer(&mut c, &mut rest, "GET").await.expect("fourth");
    assert_eq!(a.header("content-length"), Some("0"));
    assert!(rest.is_empty(), "no stray bytes: {rest:?}");
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_request_for_hyper_mid_connection_is_handed_over_with_its_bytes() {
    let s = server(ServeOptions::default()).await;
    // The upload arrives in the same write as the GET before it and the GET after it.
    let mut c = send(
        s.addr,
        b"GET /len/2 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world\
          GET /len/3 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let mut rest = Vec::new();
    let a = answer(&mut c, &mut rest, "GET").await.expect("get");
    assert_eq!((a.status, a.header("x-body")), (200, Some("empty")));
    let a = answer(&mut c, &mut rest, "POST").await.expect("post");
    assert_eq!(a.header("x-body"), Some("hyper"));
    assert_eq!(a.body, b"11", "hyper read the whole upload");
    let a = answer(&mut c, &mut rest, "GET").await.expect("get after");
    assert_eq!(a.body, b"xxx");
    assert_eq!(
        a.header("x-body"),
        Some("hyper"),
        "hyper keeps the connection"
    );
    s.shutdown.cancel();
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_hypers_answers() {
    let s = server(ServeOptions::default()).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "v".repeat(crate::server::CONNECTION_BUFFER + 10)
    );
    for (raw, status) in [
        (&b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"[..], "400"),
        // httparse takes this target, the URI parser does not.
        (b"GET /a<b HTTP/1.1\r\nHost: t\r\n\r\n", "400"),
        (big.as_bytes(), "431"),
    ] {
        let got = exchange(s.addr, raw).await;
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{got:?}");
    }
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_connection_goes_on() {
    let s = server(ServeOptions::default()).await;
    let mut c = send(
        s.addr,
        b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\nGET /len/1 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let mut rest = Vec::new();
    let a = answer(&mut c, &mut rest, "GET").await.expect("500");
    assert_eq!(a.status, 500);
    assert_eq!(a.body, br#"{"error":"internal"}"#);
    let a = answer(&mut c, &mut rest, "GET").await.expect("next");
    assert_eq!((a.status, a.body.as_slice()), (200, &b"x"[..]));
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_failing_body_sends_what_it_had_then_closes_without_an_end() {
    let s = server(ServeOptions::default()).await;
    let got = exchange(s.addr, b"GET /fail HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
    assert!(
        got.ends_with("\r\n\r\n3\r\nabc\r\n"),
        "abc, then no last chunk: {got:?}"
    );
    s.shutdown.cancel();
}

#[tokio::test]
async fn a_client_that_leaves_aborts_the_request_in_flight() {
    let s = server(ServeOptions::default()).await;
    let c = send(s.addr, b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n").await;
    // The handler is running once its connection is there; then the client goes.
    tokio::task::yield_now().await;
    drop(c);
    let dropped = s.dropped.clone();
    tokio::time::timeout(Duration::from_secs(20), async move {
        while !dropped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the handler's future was dropped");
    s.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_closes_at_the_header_timeout() {
    let s = server(ServeOptions {
        header_read_timeout: Duration::from_secs(5),
        ..ServeOptions::default()
    })
    .await;
    let mut c = send(s.addr, b"GET /len/1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut rest = Vec::new();
    answer(&mut c, &mut rest, "GET").await.expect("answer");
    let idle_from = tokio::time::Instant::now();
    let got = until_closed(&mut c).await;
    assert!(got.is_empty(), "nothing more was sent");
    let waited = idle_from.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(15),
        "closed at the header timeout: {waited:?}"
    );
    // A head that never completes is cut off the same way.
    let mut c = send(s.addr, b"GET /len/1 HTTP/1.1\r\nHo").await;
    let from = tokio::time::Instant::now();
    let got = until_closed(&mut c).await;
    assert!(got.is_empty());
    assert!(from.elapsed() >= Duration::from_secs(5));
    s.shutdown.cancel();
}

#[tokio::test]
async fn connection_close_closes_after_the_answer_and_says_so() {
    let s = server(ServeOptions::default()).await;
    let raw = b"GET /len/4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let got = exchange(s.addr, raw).await;
    assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nxxxx"), "{got}");
    s.shutdown.cancel();
}

#[tokio::test]
async fn shutdown_closes_an_idle_connection_at_once() {
    let s = server(ServeOptions::default()).await;
    let mut c = send(s.addr, b"GET /len/1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut rest = Vec::new();
    answer(&mut c, &mut rest, "GET").await.expect("answer");
    s.shutdown.cancel();
    let got = until_closed(&mut c).await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn with_the_own_server_off_hyper_parses_everything() {
    let s = server(ServeOptions {
        own_http1: false,
        ..ServeOptions::default()
    })
    .await;
    let mut c = send(s.addr, b"GET /len/2 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut rest = Vec::new();
    let a = answer(&mut c, &mut rest, "GET").await.expect("answer");
    assert_eq!(a.header("x-body"), Some("hyper"));
    s.shutdown.cancel();
}
