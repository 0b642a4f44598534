//! The request body on its way to a node, watched: the transport learns when it has been sent
//! in full (the response-header timer starts then, not before: a slow upload is not a slow
//! node), whether it is still moving, and whose fault it is when it stops or breaks.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;

use super::error::ClientBodyError;
use crate::body::{Body, BoxError};

/// What the wrapper tells the transport; shared by the two.
#[derive(Debug, Default)]
pub(super) struct Upload {
    /// Frames handed to the connection so far: the upload is moving while this grows.
    frames: AtomicU64,
    /// The last poll found the viewer had nothing for us yet: a stall now is the viewer's.
    /// While false and not done, the connection is not polling us: it is waiting on the node's socket.
    waiting_on_client: AtomicBool,
    /// Every byte has been handed to the connection.
    done: AtomicBool,
    /// Woken once `done` is set.
    done_notify: Notify,
}

impl Upload {
    pub(super) fn frames(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }
    pub(super) fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Acquire)
    }
    /// Resolves once the whole body has been handed to the connection.
    pub(super) async fn sent(&self) {
        loop {
            let notified = self.done_notify.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.done_notify.notify_waiters();
    }
}

/// The viewer's request body, reporting into an [`Upload`].
pub(super) struct UploadBody {
    inner: Body,
    upload: Arc<Upload>,
}

impl UploadBody {
    pub(super) fn new(inner: Body) -> (Self, Arc<Upload>) {
        let upload = Arc::new(Upload::default());
        (
            Self {
                inner,
                upload: upload.clone(),
            },
            upload,
        )
    }
}

impl HttpBody for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let up = &this.upload;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                up.waiting_on_client.store(true, Ordering::Release);
                Poll::Pending
            }
            Poll::Ready(Some(Ok(f))) => {
                up.waiting_on_client.store(false, Ordering::Release);
                up.frames.fetch_add(1, Ordering::AcqRel);
                // A body that says it has ended (a known length reached) is not polled again.
                if this.inner.is_end_stream() {
                    up.finish();
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                up.waiting_on_client.store(false, Ordering::Release);
                Poll::Ready(Some(Err(Box::new(ClientBodyError(e.to_string())))))
            }
            Poll::Ready(None) => {
                up.waiting_on_client.store(false, Ordering::Release);
                up.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn reports_progress_end_and_client_failure() {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ];
        let inner = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let (body, up) = UploadBody::new(inner);
        let all = body.collect().await.expect("body").to_bytes();
        assert_eq!(&all[..], b"abcd");
        assert_eq!(up.frames(), 2);
        up.sent().await; // already done: returns at once

        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err("invalid chunk size".into()),
        ];
        let inner = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let (body, _) = UploadBody::new(inner);
        let e = body.collect().await.expect_err("broken");
        assert!(e.is::<ClientBodyError>());
    }
}
