//! Bytes already in memory reach the viewer before a node failure right behind them.
//!
//! When a response body fails, hyper aborts the answer and drops what it has not flushed yet:
//! a frame the body handed it on the previous poll would never reach the viewer, though the
//! node sent it. That is exactly what a node that sends its last bytes and closes at once (or
//! breaks mid-body) looks like: data, then an error on the very next poll. [`DeferFailureBody`]
//! holds such an error back one turn (pending, with an immediate wake-up), so hyper writes
//! the data first. An error with no frame just before it is not held.
//!
//! Applied once, where the proxied answer is assembled ([`crate::splice::answer`]), so the
//! copying and the spliced path both get it from there.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};

/// `inner`, with a failure found right after a frame reported one poll later.
pub struct DeferFailureBody<B: HttpBody> {
    inner: B,
    /// The last poll handed on a frame, which whoever polls us may not have written yet.
    fresh: bool,
    /// A failure held back one turn.
    deferred: Option<B::Error>,
}

impl<B: HttpBody> DeferFailureBody<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            fresh: false,
            deferred: None,
        }
    }
}

impl<B> HttpBody for DeferFailureBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        if let Some(e) = this.deferred.take() {
            return Poll::Ready(Some(Err(e)));
        }
        // Reset by any poll: a pending one gave whoever polls us the time to write.
        let fresh = std::mem::take(&mut this.fresh);
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Err(e)) if fresh => {
                this.deferred = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Ok(frame)) => {
                this.fresh = true;
                Poll::Ready(Some(Ok(frame)))
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.deferred.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A body that yields its `steps` in order, one a poll (`None`: pending, woken at once).
    struct Script(VecDeque<Option<Result<Frame<Bytes>, &'static str>>>);

    impl HttpBody for Script {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            match self.get_mut().0.pop_front() {
                None => Poll::Ready(None),
                Some(Some(r)) => Poll::Ready(Some(r)),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn data(s: &'static str) -> Option<Result<Frame<Bytes>, &'static str>> {
        Some(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))
    }

    /// What each poll gives, as text, with the wake-ups counted.
    fn run(steps: Vec<Option<Result<Frame<Bytes>, &'static str>>>) -> (Vec<String>, usize) {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut body = DeferFailureBody::new(Script(steps.into()));
        let mut seen = Vec::new();
        loop {
            let p = Pin::new(&mut body).poll_frame(&mut cx);
            let (text, end) = match p {
                Poll::Pending => ("pending".to_string(), false),
                Poll::Ready(None) => ("end".to_string(), true),
                Poll::Ready(Some(Err(e))) => (format!("error {e}"), true),
                Poll::Ready(Some(Ok(f))) => {
                    let d = f.into_data().unwrap_or_default();
                    (format!("data {}", String::from_utf8_lossy(&d)), false)
                }
            };
            seen.push(text);
            if end {
                assert!(body.is_end_stream(), "ended: {seen:?}");
                return (seen, wakes.0.load(Ordering::SeqCst));
            }
            if seen.len() > 20 {
                panic!("never ended: {seen:?}");
            }
        }
    }

    #[test]
    fn a_failure_right_after_data_waits_one_woken_turn() {
        let (seen, wakes) = run(vec![data("last bytes"), Some(Err("node closed"))]);
        assert_eq!(seen, ["data last bytes", "pending", "error node closed"]);
        assert_eq!(wakes, 1, "the pending turn wakes itself");
    }

    #[test]
    fn a_failure_without_data_before_it_errs_at_once() {
        let (seen, wakes) = run(vec![Some(Err("refused"))]);
        assert_eq!(seen, ["error refused"]);
        assert_eq!(wakes, 0);

        // Nor after a wait: the data before it has had its turn to be written.
        let (seen, wakes) = run(vec![data("a"), None, Some(Err("node closed"))]);
        assert_eq!(seen, ["data a", "pending", "error node closed"]);
        assert_eq!(wakes, 1, "the inner body's own wake-up only");
    }

    #[test]
    fn frames_and_the_end_pass_unchanged() {
        let (seen, wakes) = run(vec![data("a"), None, data("b"), data("c")]);
        assert_eq!(seen, ["data a", "pending", "data b", "data c", "end"]);
        assert_eq!(wakes, 1);
    }
}
