//! The shared growing body behind request collapsing: one fill appends the node's chunks as
//! they arrive, any number of readers stream them. A reader that comes late gets what is
//! already there at once, then waits for more; nobody waits for the whole object (which is
//! what nginx's `proxy_cache_lock` does, and what breaks chunked CMAF and LL-HLS parts).
//!
//! Chunks are the node's own refcounted `Bytes`: never copied per reader. A fill that breaks
//! (the node fails mid-body) ends every reader with an error, so a viewer sees a broken
//! response, never a truncated success.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::body::BoxError;

/// How a fill ended, if it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Still arriving.
    Open,
    /// Every byte is here.
    Complete,
    /// The node's body failed; the reason.
    Broken(String),
}

#[derive(Debug)]
struct State {
    chunks: Vec<Bytes>,
    /// Offset of each chunk's first byte in the object.
    starts: Vec<u64>,
    len: u64,
    end: End,
    /// Readers waiting for more (one waker each, at most).
    wakers: Vec<Waker>,
}

/// One object's body, complete or still filling.
#[derive(Debug)]
pub struct Buffer {
    state: Mutex<State>,
}

impl Default for Buffer {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                chunks: Vec::new(),
                starts: Vec::new(),
                len: 0,
                end: End::Open,
                wakers: Vec::new(),
            }),
        }
    }
}

impl Buffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A body already whole (read back from the disk tier).
    pub fn complete(bytes: Bytes) -> Arc<Self> {
        let b = Arc::new(Self::default());
        b.push(bytes);
        b.finish();
        b
    }

    /// Appends a chunk and wakes the readers waiting for it.
    pub fn push(&self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let wakers = {
            let mut s = self.lock();
            if s.end != End::Open {
                return;
            }
            let at = s.len;
            s.starts.push(at);
            s.len += bytes.len() as u64;
            s.chunks.push(bytes);
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Marks the body complete.
    pub fn finish(&self) {
        self.end_with(End::Complete);
    }

    /// Marks the body broken: readers past what arrived get an error.
    pub fn abort(&self, why: impl Into<String>) {
        self.end_with(End::Broken(why.into()));
    }

    fn end_with(&self, end: End) {
        let wakers = {
            let mut s = self.lock();
            if s.end != End::Open {
                return;
            }
            s.end = end;
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Bytes arrived so far.
    pub fn len(&self) -> u64 {
        self.lock().len
    }

    pub fn end(&self) -> End {
        self.lock().end.clone()
    }

    /// The whole body, once complete (for parsing a playlist).
    pub fn bytes(&self) -> Option<Bytes> {
        let s = self.lock();
        if s.end != End::Complete {
            return None;
        }
        match s.chunks.len() {
            0 => Some(Bytes::new()),
            1 => Some(s.chunks[0].clone()),
            _ => {
                let mut v = Vec::with_capacity(s.len as usize);
                s.chunks.iter().for_each(|c| v.extend_from_slice(c));
                Some(Bytes::from(v))
            }
        }
    }

    /// A reader of bytes `start..end` (`end` exclusive; `None`: to the end of the object).
    pub fn reader(self: &Arc<Self>, start: u64, end: Option<u64>) -> Reader {
        Reader {
            buf: self.clone(),
            pos: start,
            end,
        }
    }
}

/// One viewer's view of a [`Buffer`]: an `http_body::Body` streaming from `pos`.
#[derive(Debug)]
pub struct Reader {
    buf: Arc<Buffer>,
    pos: u64,
    end: Option<u64>,
}

impl http_body::Body for Reader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let me = &mut *self;
        if me.end.is_some_and(|e| me.pos >= e) {
            return Poll::Ready(None);
        }
        let mut s = me.buf.lock();
        if me.pos < s.len {
            let i = s.starts.partition_point(|&st| st <= me.pos) - 1;
            let chunk = &s.chunks[i];
            let from = (me.pos - s.starts[i]) as usize;
            let mut to = chunk.len();
            if let Some(e) = me.end {
                let left = (e - me.pos) as usize;
                to = to.min(from + left);
            }
            let out = chunk.slice(from..to);
            me.pos += out.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(out))));
        }
        match &s.end {
            End::Complete => match me.end {
                Some(e) if me.pos < e => {
                    Poll::Ready(Some(Err("cached object is shorter than its length".into())))
                }
                _ => Poll::Ready(None),
            },
            End::Broken(why) => {
                Poll::Ready(Some(Err(format!("upstream body failed: {why}").into())))
            }
            End::Open => {
                if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end.is_some_and(|e| self.pos >= e)
    }

    fn size_hint(&self) -> SizeHint {
        match self.end {
            Some(e) => SizeHint::with_exact(e.saturating_sub(self.pos)),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_late_reader_gets_what_is_there_then_the_rest_live() {
        let b = Arc::new(Buffer::default());
        b.push(Bytes::from_static(b"abc"));
        let mut late = b.reader(0, None);
        let f = late.frame().await.expect("frame").expect("ok");
        assert_eq!(f.into_data().expect("data"), "abc");
        // Nothing more yet: the reader waits until the fill pushes.
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { late.collect().await.map(|c| c.to_bytes()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b2.push(Bytes::from_static(b"def"));
        b2.finish();
        assert_eq!(waiter.await.expect("join").expect("body"), "def");
    }

    #[tokio::test]
    async fn ranges_cross_chunks() {
        let b = Arc::new(Buffer::default());
        for c in ["0123", "4567", "89"] {
            b.push(Bytes::from(c));
        }
        b.finish();
        let r = b.reader(2, Some(7)).collect().await.expect("ok").to_bytes();
        assert_eq!(r, "23456");
        assert_eq!(b.bytes().expect("whole"), "0123456789");
    }

    #[tokio::test]
    async fn a_broken_fill_breaks_its_readers() {
        let b = Arc::new(Buffer::default());
        b.push(Bytes::from_static(b"half"));
        let r = b.reader(0, None);
        b.abort("node reset");
        assert!(
            r.collect().await.is_err(),
            "a broken fill is never a success"
        );
        assert!(b.bytes().is_none());
        // A reader with a declared length that the object cannot fill fails too.
        let c = Buffer::complete(Bytes::from_static(b"ab"));
        assert!(c.reader(0, Some(5)).collect().await.is_err());
    }
}
