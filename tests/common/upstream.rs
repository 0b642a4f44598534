//! A scriptable upstream node for gateway tests: a real HTTP/1.1 server on a loopback socket
//! (std threads, raw bytes) that records what it received and answers as the test says.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the node saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the node answers.
pub enum Reply {
    /// 200 with the given extra header lines and body.
    Ok {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Any status with headers and body.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Read the request, never answer (until the peer goes away).
    Stall,
    /// Answer after a delay.
    Delayed(Duration, Box<Reply>),
    /// 200 chunked, `chunk` every `every`, forever (until a write fails).
    Endless { chunk: Vec<u8>, every: Duration },
    /// 200 with Content-Length `len` of zero bytes, written in 256 KiB pieces.
    Zeros(u64),
    /// 200 chunked: each piece after its delay, then `then`.
    Chunks {
        pieces: Vec<(Duration, Vec<u8>)>,
        then: After,
    },
}

/// How a `Chunks` reply ends.
#[derive(Clone, Copy, Debug)]
pub enum After {
    /// The final zero-size chunk: a clean end.
    End,
    /// Close the connection without it: the node died.
    Close,
    /// Keep the connection open and send nothing more (until the peer goes away).
    Hang,
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A running scripted node.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Set when an `Endless` reply hit a write error (the gateway dropped the connection).
    pub endless_closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let endless_closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        {
            let (seen, connections, endless_closed, stop) = (
                seen.clone(),
                connections.clone(),
                endless_closed.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (seen, script, endless_closed) =
                        (seen.clone(), script.clone(), endless_closed.clone());
                    std::thread::spawn(move || serve_conn(conn, seen, script, endless_closed));
                }
            });
        }
        Self {
            addr,
            seen,
            connections,
            endless_closed,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut seen = Seen {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = seen
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        seen.body = body;
    } else if seen
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            seen.body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(seen)
}

fn head(status: u16, headers: &[(String, String)], len: Option<u64>) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    match len {
        Some(n) => s.push_str(&format!("Content-Length: {n}\r\n")),
        None => s.push_str("Transfer-Encoding: chunked\r\n"),
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// The head of a chunked live-stream response.
fn stream_head() -> Vec<u8> {
    head(200, &[("Content-Type".into(), "video/x-flv".into())], None)
}

/// `data` as one HTTP/1.1 chunk.
fn chunk_frame(data: &[u8]) -> Vec<u8> {
    [
        format!("{:x}\r\n", data.len()).into_bytes(),
        data.to_vec(),
        b"\r\n".to_vec(),
    ]
    .concat()
}

fn serve_conn(
    conn: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
    endless_closed: Arc<AtomicBool>,
) {
    let _ = conn.set_nodelay(true);
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        if let Ok(mut v) = seen.lock() {
            v.push(req.clone());
        }
        let mut reply = script(&req);
        while let Reply::Delayed(d, inner) = reply {
            std::thread::sleep(d);
            reply = *inner;
        }
        let ok = match reply {
            Reply::Ok { headers, body } => {
                w.write_all(&head(200, &headers, Some(body.len() as u64)))
                    .is_ok()
                    && (req.method == "HEAD" || w.write_all(&body).is_ok())
            }
            Reply::Status {
                status,
                headers,
                body,
            } => {
                w.write_all(&head(status, &headers, Some(body.len() as u64)))
                    .is_ok()
                    && (req.method == "HEAD" || w.write_all(&body).is_ok())
            }
            Reply::Stall => {
                let mut buf = [0u8; 1];
                let _ = r.get_mut().read(&mut buf); // returns when the peer closes
                false
            }
            Reply::Delayed(..) => false,
            Reply::Endless { chunk, every } => {
                if w.write_all(&stream_head()).is_err() {
                    return;
                }
                loop {
                    if w.write_all(&chunk_frame(&chunk))
                        .and_then(|_| w.flush())
                        .is_err()
                    {
                        endless_closed.store(true, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(every);
                }
            }
            Reply::Chunks { pieces, then } => {
                if w.write_all(&stream_head()).is_err() {
                    return;
                }
                for (delay, piece) in pieces {
                    std::thread::sleep(delay);
                    if w.write_all(&chunk_frame(&piece)).is_err() {
                        return;
                    }
                }
                match then {
                    After::End => w.write_all(b"0\r\n\r\n").is_ok(),
                    After::Close => return,
                    After::Hang => {
                        let mut buf = [0u8; 1];
                        let _ = r.get_mut().read(&mut buf);
                        false
                    }
                }
            }
            Reply::Zeros(len) => {
                let piece = vec![0u8; 256 * 1024];
                let mut left = len;
                let mut ok = w.write_all(&head(200, &[], Some(len))).is_ok();
                while ok && left > 0 {
                    let n = left.min(piece.len() as u64) as usize;
                    ok = w.write_all(&piece[..n]).is_ok();
                    left -= n as u64;
                }
                ok
            }
        };
        if !ok {
            return;
        }
    }
}

/// An `Ok` reply echoing the request as JSON (method, target, headers, body length).
pub fn echo(req: &Seen) -> Reply {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::String(v.clone())))
        .collect();
    let body = serde_json::json!({
        "method": req.method, "target": req.target, "headers": headers, "body_len": req.body.len(),
    });
    Reply::Ok {
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: serde_json::to_vec(&body).expect("json"),
    }
}
