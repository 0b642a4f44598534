//! One viewer of a stream: a bounded queue of shared tags filled by the engine, and the response
//! body that drains it.
//!
//! The engine never waits for a viewer: it appends each tag to the viewer's queue under a short
//! lock. A viewer over its byte or media-time budget skips whole frames (audio and video alike)
//! until the next keyframe; one still backed up when that keyframe comes is cut off.
//!
//! The start-up burst a joiner gets (header, start-up tags, cached GOP) does not count against
//! the budget while it is still queued: the GOP cache is bounded by `max_gop_bytes` on its own,
//! and a long GOP must start whole instead of getting every newcomer skipped or cut at once.
//!
//! Waking is separate from queueing: the hub wakes a viewer's task only at flush points (see
//! `live.flush_interval`), so a viewer's connection writes everything queued since the last
//! flush in one vectored write instead of one write per tag. That, not the copying (tags are
//! shared `Bytes`), is what a fan-out's CPU per viewer is made of.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::engine::Core;
use super::LiveCounters;
use crate::body::BoxError;
use crate::flv::Tag;

/// Most tags a viewer queue holds, whatever their size (the byte budget usually binds first).
pub const QUEUE_TAGS: usize = 8192;

/// Slots a drained viewer queue keeps (a flush interval's tags fit) ...
const QUEUE_KEEP: usize = 16;
/// ... when it has grown past this many.
const QUEUE_KEEP_ABOVE: usize = 64;

/// No media tag consumed yet.
const NONE: u64 = u64::MAX;

/// The protocol of a viewer that reads the stream as a chunked HTTP-FLV body.
pub const HTTP_FLV: &str = "http-flv";
/// A WebSocket-FLV viewer's protocol name.
pub const WS_FLV: &str = "ws-flv";

/// Who a viewer is, given when it joins: the listings show it, nothing else reads it.
#[derive(Debug, Clone)]
pub struct ViewerInfo {
    /// The client's address (the TCP peer, or what a trusted PROXY header names).
    pub client: IpAddr,
    /// How the viewer reads the stream: [`HTTP_FLV`], or another transport's name.
    pub protocol: &'static str,
}

impl ViewerInfo {
    /// A viewer nobody will list (the origin's, tests').
    pub fn unknown() -> Self {
        Self {
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            protocol: HTTP_FLV,
        }
    }
}

/// Why the engine let go of a viewer (the access log's `closed=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EndReason {
    /// The stream ended (unpublished, gone from every node, or no media for the window).
    StreamEnd = 1,
    /// The gateway is shutting down.
    Shutdown = 2,
    /// The stream's source failed under it.
    Upstream = 3,
    /// Too slow: still backed up at a keyframe.
    SlowViewer = 4,
    /// An operator kicked it (`DELETE /api/v1/streams/{name}/viewers/{id}`).
    Kicked = 5,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StreamEnd => "stream_end",
            Self::Shutdown => "shutdown",
            Self::Upstream => "upstream",
            Self::SlowViewer => "slow_viewer",
            Self::Kicked => "kicked",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::StreamEnd,
            2 => Self::Shutdown,
            3 => Self::Upstream,
            4 => Self::SlowViewer,
            5 => Self::Kicked,
            _ => return None,
        })
    }
}

/// One viewer as the admin API lists it.
#[derive(Debug, Clone)]
pub struct ViewerStats {
    pub id: u64,
    pub client: IpAddr,
    pub protocol: &'static str,
    /// When it joined (wall clock).
    pub since: SystemTime,
    /// How long it has been attached.
    pub connected: std::time::Duration,
    /// Bytes handed to its connection.
    pub bytes: u64,
    /// Bytes queued for it and not yet handed to its connection.
    pub queue_bytes: u64,
    /// Media time queued ahead of what it has consumed.
    pub queue_lag_ms: u64,
    /// Dropping frames until the next keyframe (it fell behind).
    pub skipping: bool,
}

/// One queued piece of the stream.
#[derive(Debug)]
struct Item {
    bytes: Bytes,
    /// Media timestamp (wide), for media tags (start-up tags do not move the viewer's clock).
    ts: Option<u64>,
}

/// State both sides of a viewer share.
#[derive(Debug)]
pub(crate) struct Shared {
    queue: Mutex<VecDeque<Item>>,
    waker: AtomicWaker,
    /// Bytes queued and not yet handed to hyper.
    queued: AtomicUsize,
    /// Media timestamp of the last media tag handed to hyper (`NONE` before the first).
    consumed_ts: AtomicU64,
    /// Bytes handed to hyper since the viewer joined: how much of the start-up burst is gone.
    taken: AtomicU64,
    /// The hub let go of this viewer: the body ends once the queue is drained.
    closed: AtomicBool,
    /// ... and why ([`EndReason`] as `u8`; 0 until then). Too slow or a failed source end the
    /// body in an error (no final chunk: the player sees a broken stream), the others cleanly.
    /// The first reason set stays.
    end: AtomicU8,
    /// Tests: runs once right after the body found the queue empty, before it looks at
    /// `closed` (where the engine's last push and close can fall).
    #[cfg(test)]
    after_empty: Hook,
}

/// A test's code run at one point of the body's poll.
#[cfg(test)]
#[derive(Default)]
struct Hook(Mutex<Option<Box<dyn FnOnce() + Send>>>);

#[cfg(test)]
impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Item>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why the viewer ends, unless a reason is already recorded.
    fn set_end(&self, why: EndReason) {
        let _ = self
            .end
            .compare_exchange(0, why as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn end_reason(&self) -> Option<EndReason> {
        EndReason::from_u8(self.end.load(Ordering::Relaxed))
    }
}

/// A look at why a viewer's body ended, kept by whoever logs the request.
#[derive(Debug, Clone)]
pub struct EndWatch(Arc<Shared>);

impl EndWatch {
    /// Why the engine let go of the viewer; `None` while it has not (or if the viewer left by
    /// itself).
    pub fn reason(&self) -> Option<EndReason> {
        self.0.end_reason()
    }
}

/// What happened to an offered tag.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Sent,
    Dropped,
    /// Too slow: remove the viewer (its body then fails so the player sees a broken stream).
    Cut,
}

/// What a media tag is to a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaKind {
    /// A video keyframe: a skipping viewer resumes here, and video may follow it.
    VideoKey,
    /// A video frame that needs the keyframe before it: never a viewer's first video.
    VideoInter,
    /// An audio frame. `resume`: a skipping viewer may resume on it (the stream has shown no
    /// video on this connection, so there is no video keyframe to wait for).
    Audio { resume: bool },
    /// A script tag that is not a start-up tag (a cue point): in order, never a resume point.
    Data,
}

impl MediaKind {
    fn resume(self) -> bool {
        matches!(self, Self::VideoKey | Self::Audio { resume: true })
    }
}

/// Limits a slot is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub bytes: usize,
    pub media_ms: u64,
}

/// The hub's handle on one viewer. Dropping it ends the viewer's body.
#[derive(Debug)]
pub(crate) struct Slot {
    pub id: u64,
    shared: Arc<Shared>,
    /// Dropping frames until the next keyframe.
    pub skipping: bool,
    /// A video keyframe was queued since the viewer joined or last resumed: until then its
    /// video inter frames are dropped (a viewer that resumed on audio, or joined on a GOP of
    /// audio only, must not get P-frames without their IDR).
    pub video_ok: bool,
    /// Timestamp of the first media tag queued: the viewer's clock before it consumed any.
    first_ts: Option<u64>,
    /// Bytes of the start-up burst (exempt from the budget until consumed).
    burst: u64,
    /// Timestamp of the burst's last media tag: lag is measured from there at the earliest.
    burst_end_ts: Option<u64>,
    /// Timestamp of the last media tag queued.
    last_ts: Option<u64>,
    /// The source spliced (reconnect, failover): the next media tag offered starts the new
    /// connection's media.
    splice_pending: bool,
    /// The latest splice: (first media timestamp after it, media time between the last tag
    /// queued before it and that one). While the viewer has not consumed past the splice, that
    /// gap is not lag: the viewer never had it to consume.
    splice: Option<(u64, u64)>,
    /// The start-up tags this viewer has (metadata, video and audio sequence headers), so a
    /// changed one, or one from a node failed over to, reaches it exactly once.
    pub known: [Option<Tag>; 3],
    /// Items queued since the last wake.
    dirty: bool,
    /// Joined without a usable GOP and still waiting for its first resume point: that one is
    /// woken at once, not at the next flush point (a joiner must not wait for the flush).
    pub starting: bool,
    /// Who the viewer is (listings).
    info: ViewerInfo,
    /// When it joined: wall clock for listings, monotonic for its age.
    since: SystemTime,
    joined: tokio::time::Instant,
    /// `taken` at the last rate sample (see [`Slot::take_sent`]).
    sampled: u64,
}

impl Slot {
    /// A new viewer and the shared state its body will read.
    pub fn new(id: u64, info: ViewerInfo) -> (Self, Arc<Shared>) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            queued: AtomicUsize::new(0),
            consumed_ts: AtomicU64::new(NONE),
            taken: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            end: AtomicU8::new(0),
            #[cfg(test)]
            after_empty: Hook::default(),
        });
        let slot = Self {
            id,
            shared: shared.clone(),
            skipping: false,
            video_ok: false,
            first_ts: None,
            burst: 0,
            burst_end_ts: None,
            last_ts: None,
            splice_pending: false,
            splice: None,
            known: [None, None, None],
            dirty: false,
            starting: false,
            info,
            since: SystemTime::now(),
            joined: tokio::time::Instant::now(),
            sampled: 0,
        };
        (slot, shared)
    }

    /// The viewer as the admin API lists it.
    pub fn stats(&self) -> ViewerStats {
        let queued = self.shared.queued.load(Ordering::Relaxed);
        let lag = if queued == 0 {
            0
        } else {
            let base = match self.shared.consumed_ts.load(Ordering::Relaxed) {
                NONE => self.first_ts,
                c => Some(c),
            };
            match (self.last_ts, base) {
                (Some(last), Some(base)) => last.saturating_sub(base),
                _ => 0,
            }
        };
        ViewerStats {
            id: self.id,
            client: self.info.client,
            protocol: self.info.protocol,
            since: self.since,
            connected: self.joined.elapsed(),
            bytes: self.shared.taken.load(Ordering::Relaxed),
            queue_bytes: queued as u64,
            queue_lag_ms: lag,
            skipping: self.skipping,
        }
    }

    /// Bytes handed to the viewer's connection since the last call (for the stream's rate).
    pub fn take_sent(&mut self) -> u64 {
        let taken = self.shared.taken.load(Ordering::Relaxed);
        let d = taken.saturating_sub(self.sampled);
        self.sampled = taken;
        d
    }

    fn push(&mut self, bytes: &Bytes, ts: Option<u64>) -> bool {
        let mut q = self.shared.lock();
        if q.len() >= QUEUE_TAGS {
            return false;
        }
        q.push_back(Item {
            bytes: bytes.clone(),
            ts,
        });
        drop(q);
        self.shared.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        if let Some(t) = ts {
            self.first_ts.get_or_insert(t);
            self.last_ts = Some(t);
        }
        self.dirty = true;
        true
    }

    /// Queues the start-up burst (header, start-up tags, cached GOP): exempt from the budget
    /// until consumed. `false` if the tag-count bound stopped it (the viewer then waits for a
    /// keyframe).
    pub fn push_burst(&mut self, bytes: &Bytes, ts: Option<u64>) -> bool {
        if !self.push(bytes, ts) {
            return false;
        }
        self.burst += bytes.len() as u64;
        if ts.is_some() {
            self.burst_end_ts = ts;
        }
        true
    }

    /// Bytes queued that count against the budget, and media time queued ahead of what the
    /// viewer has consumed.
    fn backlog(&self, ts: u64) -> (usize, u64) {
        let queued = self.shared.queued.load(Ordering::Relaxed);
        if queued == 0 {
            return (0, 0); // nothing waiting: the viewer is not behind
        }
        let taken = self.shared.taken.load(Ordering::Relaxed);
        let burst_left = self.burst.saturating_sub(taken) as usize;
        let base = match self.shared.consumed_ts.load(Ordering::Relaxed) {
            NONE => self.first_ts.unwrap_or(ts),
            c => c,
        };
        let base = self.burst_end_ts.map_or(base, |b| base.max(b));
        let mut lag = ts.saturating_sub(base);
        if let Some((first, gap)) = self.splice {
            if base < first {
                lag = lag.saturating_sub(gap);
            }
        }
        (queued.saturating_sub(burst_left), lag)
    }

    /// The source spliced (reconnect, failover): the viewer resumes on the new connection's
    /// first keyframe, and the media time between the old connection's last tag and the new
    /// one's first does not count as lag (so a viewer that keeps up is never cut at a splice).
    pub fn splice(&mut self) {
        self.skipping = true;
        self.splice_pending = true;
    }

    /// Records where the new connection's media starts, at the first media tag after a splice.
    fn note_splice(&mut self, ts: u64) {
        if !std::mem::take(&mut self.splice_pending) {
            return;
        }
        let consumed = self.shared.consumed_ts.load(Ordering::Relaxed);
        // A previous splice the viewer has not consumed past yet: its gap still does not count.
        let carried = match self.splice {
            Some((first, gap)) if consumed == NONE || consumed < first => gap,
            _ => 0,
        };
        let gap = self.last_ts.map_or(0, |l| ts.saturating_sub(l));
        self.splice = Some((ts, gap + carried));
    }

    /// Start-up and codec-change tags: always delivered while there is room at all.
    pub fn offer_control(&mut self, bytes: &Bytes) -> Offer {
        if self.push(bytes, None) {
            Offer::Sent
        } else {
            self.cut()
        }
    }

    /// A media tag; `frame` tells where a skipping viewer may resume and which video frames it
    /// can decode.
    pub fn offer(&mut self, bytes: &Bytes, ts: u64, frame: MediaKind, budget: Budget) -> Offer {
        if frame != MediaKind::Data {
            // Media, not a cue point, marks where the new connection's media starts.
            self.note_splice(ts);
        }
        let (queued, lag) = self.backlog(ts);
        if self.skipping {
            if !frame.resume() {
                return Offer::Dropped;
            }
            if queued > budget.bytes / 2 || lag > budget.media_ms / 2 {
                return self.cut();
            }
            self.skipping = false;
            // Frames were skipped: video needs a keyframe again (this one, if it is one).
            self.video_ok = false;
        } else if queued + bytes.len() > budget.bytes || lag > budget.media_ms {
            self.skipping = true;
            return Offer::Dropped;
        }
        match frame {
            MediaKind::VideoKey => self.video_ok = true,
            MediaKind::VideoInter if !self.video_ok => return Offer::Dropped,
            _ => {}
        }
        if self.push(bytes, Some(ts)) {
            if std::mem::take(&mut self.starting) {
                // The joiner's first picture: out now, the flush batches only live tags.
                self.wake();
            }
            Offer::Sent
        } else {
            self.skipping = true;
            Offer::Dropped
        }
    }

    /// Wakes the viewer's task if anything was queued since the last wake.
    pub fn wake(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.shared.waker.wake();
        }
    }

    /// The stream failed: the body ends in an error after its queue, not a clean end.
    pub fn fail(&mut self) {
        self.shared.set_end(EndReason::Upstream);
    }

    /// The stream ends for `why` (the stream is over, or shutdown): a clean end after the queue.
    pub fn end(&mut self, why: EndReason) {
        self.shared.set_end(why);
    }

    /// An operator removes the viewer: what is queued is dropped, and once the slot is dropped
    /// the body ends cleanly at once.
    pub fn kick(&mut self) {
        self.shared.set_end(EndReason::Kicked);
        let mut q = self.shared.lock();
        let dropped: usize = q.iter().map(|i| i.bytes.len()).sum();
        q.clear();
        drop(q);
        self.shared.queued.fetch_sub(dropped, Ordering::Relaxed);
    }

    fn cut(&mut self) -> Offer {
        self.shared.set_end(EndReason::SlowViewer);
        Offer::Cut
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.waker.wake();
    }
}

/// The response body of one viewer.
pub struct ViewerBody {
    shared: Arc<Shared>,
    core: Arc<Core>,
    id: u64,
    counters: Arc<LiveCounters>,
}

impl ViewerBody {
    pub(crate) fn new(
        shared: Arc<Shared>,
        core: Arc<Core>,
        id: u64,
        counters: Arc<LiveCounters>,
    ) -> Self {
        Self {
            shared,
            core,
            id,
            counters,
        }
    }

    fn pop(&self) -> Option<Item> {
        let mut q = self.shared.lock();
        let item = q.pop_front();
        if item.is_none() && q.capacity() > QUEUE_KEEP_ABOVE {
            // The start-up burst (a whole GOP: a hundred tags and more) grew the queue; live
            // tags need a few slots per flush. Given back once drained, so thousands of viewers
            // do not each keep a GOP's worth of slots.
            q.shrink_to(QUEUE_KEEP);
        }
        item
    }

    /// The viewer's id (unique in the process), as the admin API lists it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A look at why this body ends, for the access log.
    pub fn end_watch(&self) -> EndWatch {
        EndWatch(self.shared.clone())
    }

    /// The hub cut this viewer off for being too slow (its body then ends in an error): a
    /// WebSocket viewer says so with its close code.
    pub(crate) fn was_cut(&self) -> bool {
        matches!(self.shared.end_reason(), Some(EndReason::SlowViewer))
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
        let mut item = this.pop();
        if item.is_none() {
            // Register before the second look so a push between the two cannot be missed.
            this.shared.waker.register(cx.waker());
            item = this.pop();
        }
        #[cfg(test)]
        if item.is_none() {
            let hook = this
                .shared
                .after_empty
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(f) = hook {
                f();
            }
        }
        let closed = item.is_none() && this.shared.closed.load(Ordering::Acquire);
        if closed {
            // The engine may have queued its last tags and let go between the look above and
            // this one: `closed` is stored (Release) after them, so one more look sees them.
            item = this.pop();
        }
        match item {
            Some(item) => {
                let len = item.bytes.len();
                this.shared.queued.fetch_sub(len, Ordering::Relaxed);
                this.shared.taken.fetch_add(len as u64, Ordering::Relaxed);
                if let Some(ts) = item.ts {
                    this.shared.consumed_ts.store(ts, Ordering::Relaxed);
                }
                this.counters
                    .bytes_out
                    .fetch_add(len as u64, Ordering::Relaxed);
                this.core.count_bytes_out(len);
                Poll::Ready(Some(Ok(Frame::data(item.bytes))))
            }
            None if closed => match this.shared.end_reason() {
                // An error, not an end: hyper then closes without the final chunk, so the
                // player knows the stream broke rather than ended.
                Some(EndReason::SlowViewer) => {
                    Poll::Ready(Some(Err("viewer too slow: cut off".into())))
                }
                Some(EndReason::Upstream) => {
                    Poll::Ready(Some(Err("the live source failed".into())))
                }
                _ => Poll::Ready(None),
            },
            None => Poll::Pending,
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
        self.core.detach(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        bytes: 100,
        media_ms: 1000,
    };

    /// What the body does with one item, without a hub.
    fn consume(shared: &Shared) -> Option<Item> {
        let item = shared.lock().pop_front()?;
        shared.queued.fetch_sub(item.bytes.len(), Ordering::Relaxed);
        shared
            .taken
            .fetch_add(item.bytes.len() as u64, Ordering::Relaxed);
        if let Some(ts) = item.ts {
            shared.consumed_ts.store(ts, Ordering::Relaxed);
        }
        Some(item)
    }

    #[test]
    fn slow_viewer_skips_to_keyframe_then_is_cut() {
        let (mut slot, _shared) = Slot::new(1, ViewerInfo::unknown());
        let tag = Bytes::from(vec![0u8; 40]);
        assert_eq!(
            slot.offer(&tag, 0, MediaKind::VideoKey, BUDGET),
            Offer::Sent
        );
        assert_eq!(
            slot.offer(&tag, 40, MediaKind::VideoInter, BUDGET),
            Offer::Sent
        );
        // Third tag would exceed 100 bytes: skip until a keyframe.
        assert_eq!(
            slot.offer(&tag, 80, MediaKind::VideoInter, BUDGET),
            Offer::Dropped
        );
        assert!(slot.skipping);
        assert_eq!(
            slot.offer(&tag, 120, MediaKind::VideoInter, BUDGET),
            Offer::Dropped
        );
        // Keyframe while still backed up (80 > 50): cut.
        assert_eq!(
            slot.offer(&tag, 160, MediaKind::VideoKey, BUDGET),
            Offer::Cut
        );
    }

    #[test]
    fn a_viewer_that_drains_resumes_on_a_keyframe() {
        let (mut slot, shared) = Slot::new(1, ViewerInfo::unknown());
        let tag = Bytes::from(vec![0u8; 40]);
        slot.offer(&tag, 0, MediaKind::VideoKey, BUDGET);
        slot.offer(&tag, 40, MediaKind::VideoInter, BUDGET);
        assert_eq!(
            slot.offer(&tag, 80, MediaKind::VideoInter, BUDGET),
            Offer::Dropped
        );
        while consume(&shared).is_some() {}
        assert_eq!(
            slot.offer(&tag, 120, MediaKind::VideoInter, BUDGET),
            Offer::Dropped,
            "still waits for a keyframe"
        );
        assert_eq!(
            slot.offer(&tag, 160, MediaKind::VideoKey, BUDGET),
            Offer::Sent
        );
        assert!(!slot.skipping);
    }

    #[test]
    fn media_time_budget_applies() {
        let (mut slot, _shared) = Slot::new(1, ViewerInfo::unknown());
        let tag = Bytes::from(vec![0u8; 1]);
        assert_eq!(
            slot.offer(&tag, 500, MediaKind::VideoKey, BUDGET),
            Offer::Sent
        );
        assert_eq!(
            slot.offer(&tag, 1500, MediaKind::VideoInter, BUDGET),
            Offer::Sent,
            "exactly 1 s behind"
        );
        assert_eq!(
            slot.offer(&tag, 1600, MediaKind::VideoInter, BUDGET),
            Offer::Dropped,
            "1.1 s behind a 1 s budget"
        );
    }

    #[test]
    fn a_newcomer_on_a_long_running_stream_is_not_behind() {
        // The node's clock is far from zero; the viewer has consumed nothing yet.
        let (mut slot, shared) = Slot::new(1, ViewerInfo::unknown());
        let small = Bytes::from(vec![0u8; 1]);
        assert_eq!(slot.offer_control(&small), Offer::Sent);
        slot.skipping = true; // waiting for a keyframe, as a joiner without GOP cache does
        assert_eq!(
            slot.offer(&small, 3_600_000, MediaKind::VideoKey, BUDGET),
            Offer::Sent
        );
        assert!(consume(&shared).is_some());
        assert_eq!(
            slot.offer(&small, 3_600_040, MediaKind::VideoInter, BUDGET),
            Offer::Sent
        );
    }

    #[test]
    fn the_start_up_burst_is_exempt_until_consumed() {
        let (mut slot, shared) = Slot::new(1, ViewerInfo::unknown());
        let big = Bytes::from(vec![0u8; 400]); // 4x the byte budget
        assert!(slot.push_burst(&big, Some(0)));
        assert!(slot.push_burst(&big, Some(2000))); // 2 s of GOP, over the 1 s budget too
        slot.video_ok = true; // the GOP started on a video keyframe
        let tag = Bytes::from(vec![0u8; 40]);
        assert_eq!(
            slot.offer(&tag, 2040, MediaKind::VideoInter, BUDGET),
            Offer::Sent
        );
        assert_eq!(
            slot.offer(&tag, 2080, MediaKind::VideoInter, BUDGET),
            Offer::Sent
        );
        assert_eq!(
            slot.offer(&tag, 2120, MediaKind::VideoInter, BUDGET),
            Offer::Dropped,
            "live tags beyond the burst are held to the budget"
        );
        while consume(&shared).is_some() {}
        assert_eq!(
            slot.offer(&tag, 2160, MediaKind::VideoKey, BUDGET),
            Offer::Sent
        );
    }

    #[test]
    fn a_splice_gap_is_not_lag_but_unconsumed_media_is() {
        let tag = Bytes::from(vec![0u8; 1]);
        // Keeping up: everything consumed; the new sequence header is queued, not yet read.
        let (mut slot, shared) = Slot::new(1, ViewerInfo::unknown());
        slot.offer(&tag, 0, MediaKind::VideoKey, BUDGET);
        slot.offer(&tag, 40, MediaKind::VideoInter, BUDGET);
        while consume(&shared).is_some() {}
        slot.splice();
        assert_eq!(slot.offer_control(&tag), Offer::Sent);
        assert_eq!(
            slot.offer(&tag, 8_040, MediaKind::VideoInter, BUDGET),
            Offer::Dropped,
            "resumes on a keyframe"
        );
        assert_eq!(
            slot.offer(&tag, 8_080, MediaKind::VideoKey, BUDGET),
            Offer::Sent,
            "an 8 s splice gap is not lag"
        );
        assert_eq!(
            slot.offer(&tag, 8_120, MediaKind::VideoInter, BUDGET),
            Offer::Sent
        );
        assert!(consume(&shared).is_some());
        assert!(consume(&shared).is_some());
        assert_eq!(
            slot.offer(&tag, 8_160, MediaKind::VideoInter, BUDGET),
            Offer::Sent
        );

        // Behind: 600 ms of the old connection unconsumed (over half the 1 s budget).
        let (mut slot, shared) = Slot::new(2, ViewerInfo::unknown());
        slot.offer(&tag, 0, MediaKind::VideoKey, BUDGET);
        assert!(consume(&shared).is_some());
        for ts in (40..=600).step_by(40) {
            slot.offer(&tag, ts, MediaKind::VideoInter, BUDGET);
        }
        slot.splice();
        assert_eq!(
            slot.offer(&tag, 9_000, MediaKind::VideoKey, BUDGET),
            Offer::Cut,
            "what it has not consumed still counts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tags_pushed_just_before_a_clean_end_are_delivered() {
        use crate::fanout::{LiveCounters, Settings, StreamCounters};
        use crate::flv::{Tag, TagKind};
        use http_body_util::BodyExt;

        let core = Core::new(
            "t",
            Settings {
                gop_cache: false,
                linger: std::time::Duration::from_secs(5),
                viewer_queue_bytes: 1 << 20,
                viewer_queue_duration: std::time::Duration::from_secs(10),
                max_viewers: 10,
                max_gop_bytes: 1 << 20,
            },
            Arc::new(LiveCounters::default()),
            Some(Arc::new(StreamCounters::default())),
        );
        core.begin(false, true, "n1");
        let mut body = core.attach().expect("attach");
        while body.shared.lock().pop_front().is_some() {} // the header: not what is tested
        body.shared.queued.store(0, Ordering::Relaxed);
        // The race: the body has found its queue empty; the engine then pushes its last tag
        // and ends the stream before the body looks at `closed`.
        let c = core.clone();
        *body.shared.after_empty.0.lock().expect("hook") = Some(Box::new(move || {
            c.push(Tag::new(TagKind::Video, 0, &[0x17, 1, 0, 0, 0, 5]).expect("tag"));
            c.end("test");
        }));
        let frame = body.frame().await;
        assert!(
            matches!(&frame, Some(Ok(f)) if f.data_ref().is_some()),
            "the last tag is delivered, not lost at the end: {frame:?}"
        );
        assert!(body.frame().await.is_none(), "then a clean end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_queue_gives_back_the_slots_of_its_start_up_burst() {
        use crate::fanout::{LiveCounters, Settings};
        use crate::flv::{Tag, TagKind};
        use futures_util::FutureExt;
        use http_body_util::BodyExt;

        let core = Core::new(
            "t",
            Settings {
                gop_cache: true,
                linger: std::time::Duration::from_secs(5),
                viewer_queue_bytes: 1 << 20,
                viewer_queue_duration: std::time::Duration::from_secs(10),
                max_viewers: 10,
                max_gop_bytes: 1 << 20,
            },
            Arc::new(LiveCounters::default()),
            None,
        );
        core.begin(false, true, "n1");
        for i in 0..200u32 {
            let first = if i == 0 { 0x17 } else { 0x27 };
            core.push(Tag::new(TagKind::Video, i * 10, &[first, 1, 0, 0, 0, 5]).expect("tag"));
        }
        let mut body = core.attach().expect("attach");
        assert!(body.shared.lock().capacity() >= 200, "the GOP is queued");
        let mut frames = 0;
        while let Some(Some(Ok(_))) = body.frame().now_or_never() {
            frames += 1;
        }
        assert_eq!(frames, 201, "the header and the GOP");
        assert!(
            body.shared.lock().capacity() <= QUEUE_KEEP_ABOVE,
            "{}",
            body.shared.lock().capacity()
        );
        // Live tags still flow through the smaller queue.
        core.push(Tag::new(TagKind::Video, 2000, &[0x27, 1, 0, 0, 0, 5]).expect("tag"));
        assert!(matches!(body.frame().now_or_never(), Some(Some(Ok(_)))));
    }

    #[test]
    fn dropping_the_slot_ends_the_body_after_the_queue() {
        let (mut slot, shared) = Slot::new(1, ViewerInfo::unknown());
        slot.offer_control(&Bytes::from_static(b"x"));
        drop(slot);
        assert!(shared.closed.load(Ordering::Acquire));
        assert!(
            consume(&shared).is_some(),
            "queued bytes are still delivered"
        );
        assert_eq!(shared.end_reason(), None);
    }
}
