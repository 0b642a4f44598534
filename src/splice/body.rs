//! The spliced answer body: fills the connection's pipe from the node and yields a marker for
//! what it put there (see [`super::link`]); the connection's IO splices it to the viewer.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::link::{marker, Link, MARK_LEN};
use super::pipe::Lease;
use super::{SpliceSource, Step};
use crate::body::BoxError;
use crate::upstream::IdleDeadline;

/// A node's answer moved through the connection's pipe. The pipe is filled only when empty
/// (so the source's "room for `max`" holds) and at most to its capacity; the next fill waits
/// until the IO has drained it. `idle` bounds how long the node may stay silent, with the
/// [`IdleDeadline`] that [`crate::upstream::IdleTimeoutBody`] uses on the copying path; a slow
/// viewer is `send_timeout`'s (the IO's writes stall, not this body).
pub struct SpliceBody {
    /// `None` once the body is complete (the node's connection went back to its pool). In a
    /// mutex only to be `Sync` (a boxed body must be): `poll_frame` has `&mut` and never locks.
    source: Option<std::sync::Mutex<Box<dyn SpliceSource>>>,
    link: Link,
    /// Reset by every step, and while the viewer side drains the pipe.
    idle: IdleDeadline,
}

impl SpliceBody {
    /// The body for `source` on the connection `link`, through the pipe `lease`, counted as a
    /// spliced body; or the source back when the connection's pipe still holds an earlier
    /// body's bytes (a pipelined request: hyper writes its answer after them).
    #[allow(clippy::result_large_err)]
    pub fn new(
        source: Box<dyn SpliceSource>,
        link: Link,
        lease: Lease,
        idle: Duration,
    ) -> Result<Self, Box<dyn SpliceSource>> {
        {
            let mut st = link.lock();
            if st.lease.is_some() {
                return Err(source);
            }
            lease.stats().bodies.fetch_add(1, Ordering::Relaxed);
            st.lease = Some(lease);
            st.body = true;
        }
        Ok(Self {
            source: Some(std::sync::Mutex::new(source)),
            link,
            idle: IdleDeadline::new(idle),
        })
    }
}

impl Drop for SpliceBody {
    fn drop(&mut self) {
        let mut st = self.link.lock();
        st.body = false;
        st.waker = None;
        if st.lease.as_ref().is_some_and(|l| l.held == 0) {
            // Drained: back to the pool now. Bytes still in it are the IO's to finish (and
            // give back), or closed with the connection.
            st.lease = None;
        }
    }
}

impl HttpBody for SpliceBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(source) = this.source.as_mut() else {
                return Poll::Ready(None);
            };
            let source = source.get_mut().unwrap_or_else(|p| p.into_inner());
            let step = {
                let mut st = this.link.lock();
                if st.flattened {
                    return Poll::Ready(Some(Err("connection without vectored writes".into())));
                }
                let Some(lease) = st.lease.as_mut() else {
                    return Poll::Ready(Some(Err("spliced body without a pipe".into())));
                };
                if lease.held > 0 {
                    // The viewer side's turn: the IO wakes us once the pipe is empty.
                    this.idle.reset();
                    st.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let Some(pipe) = lease.pipe() else {
                    return Poll::Ready(Some(Err("spliced body without a pipe".into())));
                };
                let max = pipe.capacity().min(MARK_LEN);
                match source.poll_splice(cx, pipe.write_end(), max) {
                    Poll::Ready(Ok(Step::Spliced(n))) => {
                        lease.held += n;
                        Poll::Ready(Ok(Step::Spliced(n)))
                    }
                    other => other,
                }
            };
            // The last bytes are out of the node (its connection already back in the pool):
            // say so with them, so the server ends the answer (and logs it complete) without
            // polling for an end it has no reason to ask for.
            let done = source.remaining() == Some(0);
            match step {
                Poll::Ready(r) => {
                    this.idle.reset();
                    if done && matches!(r, Ok(Step::Spliced(1..) | Step::Data(_))) {
                        this.source = None;
                    }
                    match r {
                        Ok(Step::Spliced(0)) => {
                            this.source = None;
                            return Poll::Ready(Some(Err(
                                "the node's answer spliced nothing".into()
                            )));
                        }
                        Ok(Step::Spliced(n)) => {
                            return Poll::Ready(Some(Ok(Frame::data(marker(n)))))
                        }
                        Ok(Step::Data(b)) if b.is_empty() => continue,
                        Ok(Step::Data(b)) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                        Ok(Step::End) => {
                            this.source = None;
                            return Poll::Ready(None);
                        }
                        // Right after `Step::Data`, the answer's edge holds the failure back
                        // one turn (`crate::upstream::DeferFailureBody`).
                        Err(e) => {
                            this.source = None;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                }
                Poll::Pending => {
                    let e = ready!(this.idle.poll_expired(cx));
                    this.source = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.source.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.source.as_ref() {
            None => SizeHint::with_exact(0),
            Some(s) => match s.lock().unwrap_or_else(|p| p.into_inner()).remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}
