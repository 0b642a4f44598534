//! Test nodes for the transport's unit tests: TCP listeners on 127.0.0.1 that speak just
//! enough HTTP/1.1 to put the transport in one situation each.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a [`one_answer`] node does once it has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Closes at once: a node that dies right behind its last bytes.
    Close,
    /// Holds the connection until the client closes it.
    Hold,
}

/// A node that takes one connection, reads a request (one read) and sends `answer` as it is,
/// then does as `after` says. Returns its address.
pub(crate) async fn one_answer(answer: &'static [u8], after: After) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer).await;
            if after == After::Hold {
                let _ = s.read(&mut buf).await;
            }
        }
    });
    addr
}

/// A node that answers the first request on each connection (keep-alive) and closes the
/// connection on the next one without a word: every pooled connection turns out stale once
/// used again. Returns its address and how many connections it has taken.
pub(crate) async fn answering_once_per_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if !read_head(&mut s).await {
                    return;
                }
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if s.write_all(ok).await.is_err() {
                    return;
                }
                // The next request is read, and met with a close.
                let _ = read_head(&mut s).await;
            });
        }
    });
    (addr, conns)
}

/// Reads up to the end of a request head (a bodiless request); `false` if the client closed
/// first.
async fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    true
}

/// One answer of a [`keep_alive`] node.
pub(crate) struct Answer {
    /// The bytes, as sent.
    pub wire: Vec<u8>,
    /// The node closes the connection after them.
    pub close: bool,
}

impl Answer {
    /// `wire`, the connection kept open after it.
    pub fn keep(wire: impl Into<Vec<u8>>) -> Self {
        Self {
            wire: wire.into(),
            close: false,
        }
    }
}

/// A keep-alive node answering request `i` (counted across its connections) with
/// `answers[i % len]`, written in pieces of 50,000 bytes so that framing and data arrive
/// apart. Returns its address and how many connections it has taken.
pub(crate) async fn keep_alive(answers: Vec<Answer>) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    tokio::spawn(async move {
        let mut served = 0usize;
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            'conn: loop {
                while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    got.drain(..end + 4);
                    let a = &answers[served % answers.len()];
                    served += 1;
                    for piece in a.wire.chunks(50_000) {
                        if s.write_all(piece).await.is_err() {
                            break 'conn;
                        }
                        tokio::task::yield_now().await;
                    }
                    if a.close {
                        break 'conn;
                    }
                }
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                }
            }
        }
    });
    (addr, conns)
}
