//! The node leg of a zero-copy body: a [`PooledBody`](super::super::PooledBody) whose
//! connection is plain TCP and whose body is framed by a length or chunks hands its socket to
//! `splice(2)`. Bytes already read with the head (or around a chunk's framing) come out as
//! [`Step::Data`], the rest moves socket → pipe ([`Step::Spliced`]); the framing is read with
//! small reads so that little data passes through memory. Same promise as the copying body:
//! the connection is back in the pool before [`Step::End`] is returned.

use std::io;
use std::os::fd::BorrowedFd;
use std::task::{ready, Context, Poll};

use super::body::{Decoded, Decoder};
use crate::splice::{poll_socket_to_pipe, SpliceSource, Step};
use crate::upstream::pool::Lent;

/// Most bytes one read of framing takes (a chunk's CRLF and size line fit; chunk data that
/// comes along goes out as [`Step::Data`]).
const FRAMING_READ: usize = 64;

/// A node's answer body moving into a pipe.
pub(crate) struct SpliceBody {
    /// The connection, until the body is complete or has failed.
    lent: Option<Lent>,
    decoder: Decoder,
    /// The answer allows another request on the connection once it is read.
    reusable: bool,
}

impl SpliceBody {
    pub(crate) fn new(lent: Lent, decoder: Decoder, reusable: bool) -> Self {
        Self {
            lent: Some(lent),
            decoder,
            reusable,
        }
    }

    /// The body is complete: the connection back to the pool (or closed), then the end.
    fn end(&mut self) -> Poll<io::Result<Step>> {
        if let Some(lent) = self.lent.take() {
            if self.reusable && lent.conn.rbuf.is_empty() {
                lent.check_in();
            }
        }
        Poll::Ready(Ok(Step::End))
    }

    fn fail(&mut self, e: io::Error) -> Poll<io::Result<Step>> {
        self.lent = None;
        Poll::Ready(Err(e))
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the node closed the connection before the end of the body",
    )
}

impl SpliceSource for SpliceBody {
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        pipe: BorrowedFd<'_>,
        max: usize,
    ) -> Poll<io::Result<Step>> {
        loop {
            if self.decoder.is_done() {
                return self.end();
            }
            let Some(lent) = self.lent.as_mut() else {
                return Poll::Ready(Err(io::Error::other("the body has already failed")));
            };
            let conn = &mut lent.conn;
            if !conn.rbuf.is_empty() {
                match self.decoder.decode(&mut conn.rbuf) {
                    Err(e) => return self.fail(e),
                    Ok(Decoded::Data(data)) => {
                        if let Err(e) = self.decoder.skip_framing(&mut conn.rbuf) {
                            return self.fail(e);
                        }
                        if self.decoder.is_done() {
                            // The end is known: check in first, hand the last bytes on, and
                            // the next call says `End`.
                            if let Some(lent) = self.lent.take() {
                                if self.reusable && lent.conn.rbuf.is_empty() {
                                    lent.check_in();
                                }
                            }
                        }
                        return Poll::Ready(Ok(Step::Data(data)));
                    }
                    Ok(Decoded::Done) => return self.end(),
                    Ok(Decoded::NeedMore) => {}
                }
            }
            if let (Some(left), true) = (self.decoder.raw_left(), conn.rbuf.is_empty()) {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(max);
                if want == 0 {
                    return Poll::Ready(Ok(Step::Spliced(0)));
                }
                let n = match ready!(poll_socket_to_pipe(&conn.io, cx, pipe, want)) {
                    Ok(0) => return self.fail(cut_short()),
                    Ok(n) => n,
                    Err(e) => return self.fail(e),
                };
                self.decoder.consumed(n as u64);
                if self.decoder.is_done() {
                    if let Some(lent) = self.lent.take() {
                        if self.reusable && lent.conn.rbuf.is_empty() {
                            lent.check_in();
                        }
                    }
                }
                return Poll::Ready(Ok(Step::Spliced(n)));
            }
            // Framing to read (a chunk's CRLF, a size line, trailers): a small read.
            match ready!(conn.poll_fill_max(cx, FRAMING_READ)) {
                Ok(0) => return self.fail(cut_short()),
                Ok(_) => {}
                Err(e) => return self.fail(e),
            }
        }
    }

    fn remaining(&self) -> Option<u64> {
        match self.decoder {
            Decoder::Length(n) => Some(n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use crate::upstream::pool::{Connector, Pool};
    use crate::upstream::test_node::{keep_alive, Answer};
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn body_of(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn length_answer(body: &[u8]) -> Answer {
        let mut wire =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        wire.extend_from_slice(body);
        Answer { wire, close: false }
    }

    fn chunked_answer(chunks: &[&[u8]]) -> Answer {
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for c in chunks {
            wire.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
        Answer { wire, close: false }
    }

    /// Runs a source to its end (or error) through a real pipe, emptied after every step.
    /// Returns the bytes and how the source ended.
    async fn drain(
        src: &mut Box<dyn SpliceSource>,
        pool: &Pool,
        key: &str,
    ) -> (Vec<u8>, io::Result<()>) {
        let (out, _, end) = drain_counted(src, pool, key).await;
        (out, end)
    }

    /// [`drain`], also counting the bytes that went through the pipe.
    async fn drain_counted(
        src: &mut Box<dyn SpliceSource>,
        pool: &Pool,
        key: &str,
    ) -> (Vec<u8>, usize, io::Result<()>) {
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        let mut out = Vec::new();
        let mut spliced = 0;
        loop {
            let before = src.remaining();
            let step = std::future::poll_fn(|cx| src.poll_splice(cx, w.as_fd(), 65536)).await;
            match step {
                Ok(Step::Data(d)) => out.extend_from_slice(&d),
                Ok(Step::Spliced(n)) => {
                    if let Some(b) = before {
                        assert!(n as u64 <= b, "never more than the length");
                    }
                    let mut got = 0;
                    let mut buf = vec![0u8; n];
                    while got < n {
                        got += rustix::io::read(&r, &mut buf[got..]).expect("pipe read");
                    }
                    out.extend_from_slice(&buf);
                    spliced += n;
                }
                Ok(Step::End) => {
                    assert_eq!(pool.idle_count(key), 1, "checked in before the end");
                    return (out, spliced, Ok(()));
                }
                Err(e) => return (out, spliced, Err(e)),
            }
        }
    }

    async fn get(pool: &Pool, addr: std::net::SocketAddr) -> Box<dyn SpliceSource> {
        let req = http::Request::get(format!("http://{addr}/x"))
            .body(empty())
            .expect("req");
        let resp = pool.request(req).await.expect("answer");
        resp.into_body().into_splice().expect("spliceable")
    }

    #[tokio::test]
    async fn length_framed_bodies_of_any_size_reach_the_pipe_and_the_connection_goes_back() {
        let sizes = [1usize, 1000, 70_000, 300_000, 3 << 20];
        let bodies: Vec<Vec<u8>> = sizes.iter().map(|n| body_of(*n, *n as u8)).collect();
        let (addr, conns) = keep_alive(bodies.iter().map(|b| length_answer(b)).collect()).await;
        let pool = Pool::new(Connector::default(), 4, Duration::from_secs(60));
        let key = addr.to_string();
        for body in &bodies {
            let mut src = get(&pool, addr).await;
            assert_eq!(src.remaining(), Some(body.len() as u64));
            let (got, spliced, end) = drain_counted(&mut src, &pool, &key).await;
            end.expect("complete");
            assert_eq!(got.len(), body.len());
            if body.len() > 100_000 {
                assert!(spliced > 0, "the node's socket went through the pipe");
            }
            assert!(got == *body, "same bytes");
            assert_eq!(src.remaining(), Some(0));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one connection for all");
    }

    #[tokio::test]
    async fn chunked_bodies_splice_their_data_and_skip_their_framing() {
        let big = body_of(200_000, 7);
        let small = body_of(3, 9);
        let mid = body_of(4096, 1);
        let chunks: Vec<&[u8]> = vec![&small, &big, b"x", &mid, &big];
        let want: Vec<u8> = chunks.concat();
        let (addr, conns) =
            keep_alive(vec![chunked_answer(&chunks), chunked_answer(&[b"tail"])]).await;
        let pool = Pool::new(Connector::default(), 4, Duration::from_secs(60));
        let key = addr.to_string();
        let mut src = get(&pool, addr).await;
        assert_eq!(src.remaining(), None);
        let (got, spliced, end) = drain_counted(&mut src, &pool, &key).await;
        end.expect("complete");
        assert!(spliced >= 200_000, "chunk data went through the pipe");
        assert!(got == want, "same bytes ({} of {})", got.len(), want.len());
        let mut src = get(&pool, addr).await;
        let (got, end) = drain(&mut src, &pool, &key).await;
        end.expect("complete");
        assert_eq!(&got[..], b"tail");
        assert_eq!(conns.load(Ordering::SeqCst), 1, "the connection was reused");
    }

    #[tokio::test]
    async fn a_node_closing_mid_body_is_an_error_and_its_connection_is_not_reused() {
        for chunked in [false, true] {
            let body = body_of(100_000, 3);
            let mut a = if chunked {
                chunked_answer(&[&body])
            } else {
                length_answer(&body)
            };
            a.wire.truncate(a.wire.len() - 40_000);
            a.close = true;
            let (addr, _) = keep_alive(vec![a]).await;
            let pool = Pool::new(Connector::default(), 4, Duration::from_secs(60));
            let mut src = get(&pool, addr).await;
            let (_, end) = drain(&mut src, &pool, &addr.to_string()).await;
            assert_eq!(
                end.expect_err("cut short").kind(),
                io::ErrorKind::UnexpectedEof,
                "chunked: {chunked}"
            );
            assert_eq!(pool.idle_count(&addr.to_string()), 0);
        }
    }

    #[tokio::test]
    async fn unframed_or_finished_bodies_decline() {
        let (addr, _) = keep_alive(vec![Answer {
            wire: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close".to_vec(),
            close: true,
        }])
        .await;
        let pool = Pool::new(Connector::default(), 4, Duration::from_secs(60));
        let req = http::Request::get(format!("http://{addr}/x"))
            .body(empty())
            .expect("req");
        let resp = pool.request(req).await.expect("answer");
        assert!(resp.into_body().into_splice().is_err(), "read-to-close");
        let (addr, _) = keep_alive(vec![length_answer(b"")]).await;
        let req = http::Request::get(format!("http://{addr}/x"))
            .body(empty())
            .expect("req");
        let resp = pool.request(req).await.expect("answer");
        assert!(
            resp.into_body().into_splice().is_err(),
            "nothing left to read"
        );
    }
}
