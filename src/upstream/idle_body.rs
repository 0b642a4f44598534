//! A proxied response body that fails when the node stops sending.
//!
//! A node that keeps the connection open but sends nothing more (a hung process, a stalled
//! disk) would otherwise hold the viewer's request and the pooled connection forever. The timer
//! runs only while the gateway is waiting for the node: when the viewer is the slow side, hyper
//! does not poll the body and `server.send_timeout` is what applies.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::idle_deadline::IdleDeadline;
use super::pool::PooledBody;
use crate::body::BoxError;

/// A body from a node ([`PooledBody`] from the transport, or hyper's `Incoming`), with a bound
/// on how long it may stay silent.
pub struct IdleTimeoutBody<B = PooledBody> {
    inner: B,
    /// Reset by every frame.
    idle: IdleDeadline,
}

impl<B> IdleTimeoutBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle: IdleDeadline::new(idle),
        }
    }
}

impl<B> HttpBody for IdleTimeoutBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.idle.reset();
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => this.idle.poll_expired(cx).map(|e| Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
