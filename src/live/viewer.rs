//! One viewer of a hub: a bounded queue of shared tags on the hub's side, and the response body
//! that drains it on the viewer's side.
//!
//! The hub never waits for a viewer: it offers each tag with `try_send`. A viewer over its byte
//! or media-time budget skips whole frames (audio and video alike) until the next keyframe; one
//! still backed up when that keyframe comes is cut off. The memory a stalled viewer can pin is
//! therefore its budget plus hyper's write buffer.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;

use super::{Hub, LiveCounters};
use crate::body::BoxError;

/// Most tags a viewer queue holds, whatever their size (the byte budget usually binds first).
pub const QUEUE_TAGS: usize = 8192;

/// One queued piece of the stream.
#[derive(Debug)]
pub(crate) struct Item {
    pub bytes: Bytes,
    pub ts: u32,
}

/// State both sides of a viewer read.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Bytes queued and not yet handed to hyper.
    queued: AtomicUsize,
    /// Media timestamp of the last tag handed to hyper.
    consumed_ts: AtomicU32,
    /// Set when the hub cut this viewer off for being too slow.
    cut: AtomicBool,
}

/// What happened to an offered tag.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Sent,
    Dropped,
    /// Too slow: remove the viewer (its body then fails so the player sees a broken stream).
    Cut,
    /// The viewer is gone.
    Gone,
}

/// The hub's handle on one viewer.
#[derive(Debug)]
pub(crate) struct Slot {
    pub id: u64,
    tx: mpsc::Sender<Item>,
    shared: Arc<Shared>,
    /// Dropping frames until the next keyframe.
    pub skipping: bool,
}

/// Limits a slot is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub bytes: usize,
    pub media_ms: u32,
}

impl Slot {
    /// A new viewer; `start_ts` is where its media clock starts.
    pub fn new(id: u64, start_ts: u32) -> (Self, mpsc::Receiver<Item>, Arc<Shared>) {
        let (tx, rx) = mpsc::channel(QUEUE_TAGS);
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            consumed_ts: AtomicU32::new(start_ts),
            cut: AtomicBool::new(false),
        });
        (
            Self {
                id,
                tx,
                shared: shared.clone(),
                skipping: false,
            },
            rx,
            shared,
        )
    }

    fn push(&self, bytes: &Bytes, ts: u32) -> Offer {
        let len = bytes.len();
        match self.tx.try_send(Item {
            bytes: bytes.clone(),
            ts,
        }) {
            Ok(()) => {
                self.shared.queued.fetch_add(len, Ordering::Relaxed);
                Offer::Sent
            }
            Err(mpsc::error::TrySendError::Full(_)) => Offer::Dropped,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }

    fn backlog(&self, ts: u32) -> (usize, u32) {
        let queued = self.shared.queued.load(Ordering::Relaxed);
        let lag = ts.saturating_sub(self.shared.consumed_ts.load(Ordering::Relaxed));
        (queued, lag)
    }

    /// Start-up and codec-change tags: always delivered while there is room at all.
    pub fn offer_control(&mut self, bytes: &Bytes, ts: u32) -> Offer {
        match self.push(bytes, ts) {
            Offer::Dropped => self.cut(),
            other => other,
        }
    }

    /// A media tag; `keyframe` marks where a skipping viewer may resume.
    pub fn offer(&mut self, bytes: &Bytes, ts: u32, keyframe: bool, budget: Budget) -> Offer {
        let (queued, lag) = self.backlog(ts);
        if self.skipping {
            if !keyframe {
                return Offer::Dropped;
            }
            if queued > budget.bytes / 2 || lag > budget.media_ms / 2 {
                return self.cut();
            }
            self.skipping = false;
        } else if queued + bytes.len() > budget.bytes || lag > budget.media_ms {
            self.skipping = true;
            return Offer::Dropped;
        }
        match self.push(bytes, ts) {
            Offer::Dropped => {
                self.skipping = true;
                Offer::Dropped
            }
            other => other,
        }
    }

    fn cut(&mut self) -> Offer {
        self.shared.cut.store(true, Ordering::Relaxed);
        Offer::Cut
    }
}

/// The response body of one viewer.
pub struct ViewerBody {
    rx: mpsc::Receiver<Item>,
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    id: u64,
    counters: Arc<LiveCounters>,
}

impl ViewerBody {
    pub(crate) fn new(
        rx: mpsc::Receiver<Item>,
        shared: Arc<Shared>,
        hub: Arc<Hub>,
        id: u64,
        counters: Arc<LiveCounters>,
    ) -> Self {
        Self {
            rx,
            shared,
            hub,
            id,
            counters,
        }
    }
}

impl HttpBody for ViewerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                let len = item.bytes.len();
                this.shared.queued.fetch_sub(len, Ordering::Relaxed);
                this.shared.consumed_ts.store(item.ts, Ordering::Relaxed);
                this.counters
                    .bytes_out
                    .fetch_add(len as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(item.bytes))))
            }
            Poll::Ready(None) => {
                if this.shared.cut.load(Ordering::Relaxed) {
                    // An error, not an end: hyper then closes without the final chunk, so the
                    // player knows the stream broke rather than ended.
                    Poll::Ready(Some(Err("viewer too slow: cut off".into())))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for ViewerBody {
    fn drop(&mut self) {
        self.hub.detach(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        bytes: 100,
        media_ms: 1000,
    };

    #[test]
    fn slow_viewer_skips_to_keyframe_then_is_cut() {
        let (mut slot, mut rx, _shared) = Slot::new(1, 0);
        let tag = Bytes::from(vec![0u8; 40]);
        assert_eq!(slot.offer(&tag, 0, true, BUDGET), Offer::Sent);
        assert_eq!(slot.offer(&tag, 40, false, BUDGET), Offer::Sent);
        // Third tag would exceed 100 bytes: skip until a keyframe.
        assert_eq!(slot.offer(&tag, 80, false, BUDGET), Offer::Dropped);
        assert!(slot.skipping);
        assert_eq!(slot.offer(&tag, 120, false, BUDGET), Offer::Dropped);
        // Keyframe while still backed up (80 > 50): cut.
        assert_eq!(slot.offer(&tag, 160, true, BUDGET), Offer::Cut);
        let _ = rx.try_recv();
        drop(rx);
    }

    #[test]
    fn a_viewer_that_drains_resumes_on_a_keyframe() {
        let (mut slot, mut rx, shared) = Slot::new(1, 0);
        let tag = Bytes::from(vec![0u8; 40]);
        slot.offer(&tag, 0, true, BUDGET);
        slot.offer(&tag, 40, false, BUDGET);
        assert_eq!(slot.offer(&tag, 80, false, BUDGET), Offer::Dropped);
        // The viewer drains its queue.
        while let Ok(item) = rx.try_recv() {
            shared.queued.fetch_sub(item.bytes.len(), Ordering::Relaxed);
            shared.consumed_ts.store(item.ts, Ordering::Relaxed);
        }
        assert_eq!(
            slot.offer(&tag, 120, false, BUDGET),
            Offer::Dropped,
            "still waits for a keyframe"
        );
        assert_eq!(slot.offer(&tag, 160, true, BUDGET), Offer::Sent);
        assert!(!slot.skipping);
    }

    #[test]
    fn media_time_budget_applies() {
        let (mut slot, _rx, _shared) = Slot::new(1, 0);
        let tag = Bytes::from(vec![0u8; 1]);
        assert_eq!(slot.offer(&tag, 500, true, BUDGET), Offer::Sent);
        assert_eq!(
            slot.offer(&tag, 1500, false, BUDGET),
            Offer::Dropped,
            "1.5 s behind a 1 s budget"
        );
    }
}
