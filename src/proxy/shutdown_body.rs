//! A body that ends cleanly when the server shuts down. Live responses never end by themselves,
//! so without this a graceful shutdown would always wait out the whole drain timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::body::{Body, BoxError};

/// Wraps `inner`; once `token` is cancelled the body reports its end.
pub struct EndOnShutdown {
    inner: Body,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl EndOnShutdown {
    pub fn new(inner: Body, token: CancellationToken) -> Self {
        Self { inner, cancelled: Box::pin(token.cancelled_owned()), done: false }
    }
}

impl HttpBody for EndOnShutdown {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.cancelled.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
