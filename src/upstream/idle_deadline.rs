//! How long a node may stay silent while the gateway waits on it, as one small timer shared by
//! the bodies that read a node's answer: [`super::IdleTimeoutBody`] (the copying path) and
//! [`crate::splice::body::SpliceBody`] (the spliced path). The body resets it on every step
//! the node makes and polls it whenever the node has nothing; it runs only while polled, so a
//! slow viewer (who stops polling) is never the node's fault.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use crate::body::BoxError;

/// A deadline that starts when the node first has nothing for us, and starts again after
/// every [`reset`](IdleDeadline::reset).
#[derive(Debug)]
pub struct IdleDeadline {
    idle: Duration,
    /// Running while the node owes us data; `None` until the next wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleDeadline {
    pub fn new(idle: Duration) -> Self {
        Self { idle, timer: None }
    }

    /// The node made progress: the next wait gets the whole `idle` again.
    pub fn reset(&mut self) {
        self.timer = None;
    }

    /// The node has nothing for us now: starts the deadline if it is not running, and is
    /// ready with the error once it has passed (the deadline is then cleared, as by
    /// [`reset`](IdleDeadline::reset)). Registers `cx`'s waker for the deadline.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        let idle = self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timer = None;
        Poll::Ready(format!("node sent nothing for {idle:?}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::time::Instant;

    fn poll(d: &mut IdleDeadline) -> Poll<BoxError> {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        d.poll_expired(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn expires_idle_after_the_first_wait_and_again_after_a_reset() {
        let idle = Duration::from_secs(5);
        let mut d = IdleDeadline::new(idle);
        // Not running before the first wait: time passing before it does not count.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        let e = poll_fn(|cx| d.poll_expired(cx)).await;
        assert_eq!(
            start.elapsed(),
            idle,
            "expired exactly `idle` after the wait began"
        );
        assert_eq!(e.to_string(), "node sent nothing for 5s");

        // Expiry clears it: the next wait starts a whole new deadline.
        assert!(poll(&mut d).is_pending());
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(poll(&mut d).is_pending(), "4s of 5");
        // Progress: the 4s spent so far no longer count.
        d.reset();
        assert!(poll(&mut d).is_pending());
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(poll(&mut d).is_pending(), "4s since the reset");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(poll(&mut d).is_ready(), "5s since the reset");
    }
}
