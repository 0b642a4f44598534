//! The fan-out core of one stream: whatever feeds it (an upstream pull, a file looper), it keeps
//! the start-up and GOP caches, rewrites timestamps once, offers each tag to every viewer's
//! bounded queue, and owns the stream's one lifecycle state.
//!
//! A source drives it: [`Core::begin`] when a connection (or file) delivers its FLV header,
//! [`Core::push`] per tag, [`Core::flush`] at flush points, [`Core::reconnecting`] when the
//! connection broke, and [`Core::end`] / [`Core::fail`] when the stream is over. Viewers join
//! with [`Core::attach`] and leave by dropping their body.
//!
//! Lifecycle, decided under the one lock (so a joiner sees exactly one answer):
//! Connecting → Live → (Reconnecting → Live)* → Ended | Failed. A stream that has ended takes no
//! viewer ([`AttachError::Ended`]: the caller starts a new one), never a spurious 503.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::gop::{init_index, GopCache, InitCache};
use super::timestamps::Rewriter;
use super::viewer::{
    Budget, EndReason, MediaKind, Offer, Slot, ViewerBody, ViewerInfo, ViewerStats,
};
use super::{Failure, LiveCounters, Settings, StreamCounters};
use crate::flv::codec::{AudioInfo, VideoInfo};
use crate::flv::{self, Tag, TagKind};

/// Viewer ids: unique in the process, so an id names one viewer whatever stream or pull it
/// watches (the admin API kicks by id).
static NEXT_VIEWER_ID: AtomicU64 = AtomicU64::new(1);

/// Up to the first five data bytes of a tag: codec flags, or an enhanced-RTMP FourCC.
type TagHead = ([u8; 5], u8);

fn tag_head(tag: &Tag) -> TagHead {
    let d = tag.data();
    let n = d.len().min(5);
    let mut h = [0u8; 5];
    h[..n].copy_from_slice(&d[..n]);
    (h, n as u8)
}

/// Where a stream is in its life.
#[derive(Debug, Clone)]
pub enum Phase {
    /// The source has not delivered an FLV header yet; joiners wait.
    Connecting,
    /// Media flows.
    Live,
    /// The source broke; it is reconnecting (or failing over) while viewers stay attached.
    Reconnecting,
    /// Over: every viewer got a clean end. A joiner starts a new stream.
    Ended,
    /// The first connection sequence failed; joiners get this error.
    Failed(Failure),
}

impl Phase {
    fn is_over(&self) -> bool {
        matches!(self, Self::Ended | Self::Failed(_))
    }

    /// The phase's name in listings.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::Reconnecting => "reconnecting",
            Self::Ended => "ended",
            Self::Failed(_) => "failed",
        }
    }
}

/// Why a stream could not take a viewer.
#[derive(Debug, PartialEq, Eq)]
pub enum AttachError {
    /// The stream has ended (or failed); start a new one.
    Ended,
    /// The per-stream viewer limit is reached.
    Full,
}

struct Inner {
    phase: Phase,
    /// Attached viewers, bounded by `max_viewers`.
    viewers: Vec<Slot>,
    init: InitCache,
    gop: GopCache,
    clock: Rewriter,
    /// A source connection delivered a header before: the next one is a splice.
    spliced: bool,
    /// What currently feeds the stream (node id, "file"), for listings.
    source: String,
    /// A video tag has been seen on this connection. Until then audio frames are resume points:
    /// header flags are not to be trusted (SRS announces video on audio-only streams), and a
    /// node failed over to may have no video. Viewers that resume on audio still drop video
    /// until a video keyframe (`Slot::video_ok`), so none gets P-frames without their IDR.
    seen_video: bool,
    /// Since when the stream has had no viewers (`None` while it has some).
    idle_since: Option<Instant>,
    /// Joins in flight (one [`Joining`] guard each): between finding the stream and attaching,
    /// a joiner waits for the first connection; the stream is not idle meanwhile.
    joiners: usize,
    /// The start of the latest video and audio tag, for the codec listings.
    video_head: Option<TagHead>,
    audio_head: Option<TagHead>,
}

/// A join in flight: while it lives, [`Core::idle`] does not end the stream. Dropped once the
/// joiner attached (or gave up); a joiner that gave up counts as a viewer leaving.
pub struct Joining {
    core: Arc<Core>,
}

impl Drop for Joining {
    fn drop(&mut self) {
        let mut inner = self.core.lock();
        inner.joiners = inner.joiners.saturating_sub(1);
        if inner.joiners == 0 && inner.viewers.is_empty() {
            inner.idle_since = Some(Instant::now());
            drop(inner);
            self.core.viewer_left.notify_waiters();
        }
    }
}

/// One stream's fan-out.
pub struct Core {
    name: String,
    settings: Settings,
    inner: Mutex<Inner>,
    /// Woken on every phase change, for joiners waiting on the first connection.
    changed: Notify,
    /// Woken when the last viewer leaves, so the source can start its linger timer.
    viewer_left: Notify,
    /// Process-wide counters.
    counters: Arc<LiveCounters>,
    /// This stream's viewer count and bytes sent (the origin's `/stats`); `None` where nobody
    /// reads them (the gateway), so viewers do not share one more contended counter.
    stream: Option<Arc<StreamCounters>>,
}

impl Core {
    pub fn new(
        name: &str,
        settings: Settings,
        counters: Arc<LiveCounters>,
        stream: Option<Arc<StreamCounters>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            settings,
            inner: Mutex::new(Inner {
                phase: Phase::Connecting,
                viewers: Vec::new(),
                init: InitCache::default(),
                gop: GopCache::default(),
                clock: Rewriter::default(),
                spliced: false,
                source: String::new(),
                seen_video: false,
                idle_since: Some(Instant::now()),
                joiners: 0,
                video_head: None,
                audio_head: None,
            }),
            changed: Notify::new(),
            viewer_left: Notify::new(),
            counters,
            stream,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase.clone()
    }

    pub fn is_over(&self) -> bool {
        self.lock().phase.is_over()
    }

    /// What feeds the stream now (node id).
    pub fn source(&self) -> String {
        self.lock().source.clone()
    }

    pub fn viewers(&self) -> usize {
        self.lock().viewers.len()
    }

    /// Every attached viewer, as the admin API lists it.
    pub fn viewer_stats(&self) -> Vec<ViewerStats> {
        self.lock().viewers.iter().map(Slot::stats).collect()
    }

    /// What the stream carries now, from its sequence headers and latest tags.
    pub fn media_info(&self) -> (Option<VideoInfo>, Option<AudioInfo>) {
        let (video_seq, audio_seq, video_head, audio_head) = {
            let inner = self.lock();
            (
                inner.init.video_seq.clone(),
                inner.init.audio_seq.clone(),
                inner.video_head,
                inner.audio_head,
            )
        };
        // Parsed outside the lock: the engine never waits on a listing.
        let video = video_head.and_then(|(h, n)| {
            flv::codec::video_info(&h[..usize::from(n)], video_seq.as_ref().map(Tag::data))
        });
        let audio = audio_head.and_then(|(h, n)| {
            flv::codec::audio_info(&h[..usize::from(n)], audio_seq.as_ref().map(Tag::data))
        });
        (video, audio)
    }

    /// Bytes handed to viewers' connections since the last call (for the stream's rate; what
    /// viewers that left took since the last call is not counted).
    pub fn take_bytes_out(&self) -> u64 {
        self.lock().viewers.iter_mut().map(Slot::take_sent).sum()
    }

    /// Removes viewer `id` at an operator's request: its queue is dropped and its body ends
    /// cleanly at once. `false` if no such viewer is attached.
    pub fn kick(&self, id: u64) -> bool {
        let mut inner = self.lock();
        let Some(pos) = inner.viewers.iter().position(|v| v.id == id) else {
            return false;
        };
        let before = inner.viewers.len();
        let mut slot = inner.viewers.remove(pos);
        slot.kick();
        drop(slot); // closed: the body ends
        tracing::info!(stream = %self.name, viewer = id, "viewer kicked");
        self.left(inner, before);
        true
    }

    /// Bookkeeping after viewers were removed from a list that had `before`.
    fn left(&self, mut inner: MutexGuard<'_, Inner>, before: usize) {
        self.count_viewers(before, inner.viewers.len());
        if inner.viewers.is_empty() && inner.idle_since.is_none() {
            inner.idle_since = Some(Instant::now());
            drop(inner);
            self.viewer_left.notify_waiters();
        }
    }

    fn budget(&self) -> Budget {
        Budget {
            bytes: self.settings.viewer_queue_bytes,
            media_ms: u64::try_from(self.settings.viewer_queue_duration.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// Keeps the per-stream viewer count exact after the viewer list changed size.
    fn count_viewers(&self, before: usize, after: usize) {
        let Some(stream) = &self.stream else {
            return;
        };
        if after > before {
            stream
                .clients
                .fetch_add((after - before) as u64, Ordering::Relaxed);
        } else if before > after {
            stream
                .clients
                .fetch_sub((before - after) as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_bytes_out(&self, n: usize) {
        if let Some(stream) = &self.stream {
            stream.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn set_phase(&self, inner: &mut Inner, phase: Phase) {
        inner.phase = phase;
        self.changed.notify_waiters();
    }

    /// Registers a join in flight, unless the stream is over (then `None`: start a new one).
    /// Hold the guard until [`Core::attach`] returned: the stream does not linger out meanwhile.
    pub fn joining(self: &Arc<Self>) -> Option<Joining> {
        let mut inner = self.lock();
        if inner.phase.is_over() {
            return None;
        }
        inner.joiners += 1;
        Some(Joining { core: self.clone() })
    }

    /// Waits until the stream is past `Connecting` and returns its phase. Unbounded on purpose:
    /// the source's connect sequence is bounded by its own per-attempt timeouts and ends in
    /// `Live` or `Failed`.
    pub async fn ready(&self) -> Phase {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let phase = self.phase();
            if !matches!(phase, Phase::Connecting) {
                return phase;
            }
            notified.await;
        }
    }

    /// [`Core::attach_viewer`] for a viewer nobody lists (the origin's, tests').
    pub fn attach(self: &Arc<Self>) -> Result<ViewerBody, AttachError> {
        self.attach_viewer(ViewerInfo::unknown())
    }

    /// Adds a viewer: it gets the header, start-up tags and the cached GOP (or waits for the next
    /// keyframe), then live tags. All under the lock, so it sees no gap and no duplicate.
    pub fn attach_viewer(self: &Arc<Self>, info: ViewerInfo) -> Result<ViewerBody, AttachError> {
        let mut inner = self.lock();
        if inner.phase.is_over() {
            return Err(AttachError::Ended);
        }
        if inner.viewers.len() >= self.settings.max_viewers {
            return Err(AttachError::Full);
        }
        let id = NEXT_VIEWER_ID.fetch_add(1, Ordering::Relaxed);
        let (mut slot, shared) = Slot::new(id, info);
        let inner = &mut *inner;
        if let Some(h) = &inner.init.header {
            slot.push_burst(h, None);
        }
        for (i, t) in [
            &inner.init.metadata,
            &inner.init.video_seq,
            &inner.init.audio_seq,
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(t) = t {
                slot.push_burst(t.bytes(), None);
                slot.known[i] = Some(t.clone());
            }
        }
        let gop = if self.settings.gop_cache {
            inner.gop.tags()
        } else {
            &[]
        };
        // Without a cached GOP the viewer starts on the next keyframe.
        slot.skipping = gop.is_empty();
        for (t, ts) in gop {
            if !slot.push_burst(t.bytes(), Some(*ts)) {
                slot.skipping = true;
                break;
            }
            // The GOP keeps no video inter frame before its keyframe (see `GopCache::push`).
            slot.video_ok |= t.kind() == TagKind::Video && t.is_keyframe();
        }
        // ... and that keyframe wakes it at once: the first viewers of a new pull attach
        // between the node's header and its first keyframe, and must not wait for the flush.
        slot.starting = slot.skipping;
        slot.wake();
        let before = inner.viewers.len();
        inner.viewers.push(slot);
        inner.idle_since = None;
        self.count_viewers(before, before + 1);
        Ok(ViewerBody::new(
            shared,
            self.clone(),
            id,
            self.counters.clone(),
        ))
    }

    /// Removes a viewer (its body was dropped).
    pub(crate) fn detach(&self, id: u64) {
        let mut inner = self.lock();
        let before = inner.viewers.len();
        inner.viewers.retain(|v| v.id != id);
        self.left(inner, before);
    }

    /// A source connection delivered its FLV header. The header flags new joiners get follow
    /// it; after a previous connection (reconnect, failover) timestamps are spliced, the caches
    /// are dropped (the new node sends its own start-up tags, which then reach every viewer that
    /// lacks them before any of its media) and viewers resume on its first keyframe.
    pub fn begin(&self, has_audio: bool, has_video: bool, source: &str) {
        let mut inner = self.lock();
        if inner.phase.is_over() {
            return;
        }
        inner.init.header = Some(Bytes::copy_from_slice(&flv::file_header(
            has_audio, has_video,
        )));
        if inner.spliced {
            inner.clock.splice();
            inner.gop.clear();
            inner.init.clear_tags();
            for v in inner.viewers.iter_mut() {
                v.splice();
            }
        }
        inner.spliced = true;
        inner.seen_video = false;
        inner.source = source.to_string();
        self.set_phase(&mut inner, Phase::Live);
    }

    /// The source broke; viewers stay while it reconnects.
    pub fn reconnecting(&self) {
        let mut inner = self.lock();
        if matches!(inner.phase, Phase::Live) {
            self.set_phase(&mut inner, Phase::Reconnecting);
        }
    }

    /// Ends the stream: every viewer gets what is queued, then a clean end.
    pub fn end(&self, why: &str) {
        self.end_for(EndReason::StreamEnd, why);
    }

    /// Ends the stream because the process is shutting down (viewers' logs say so).
    pub fn shut_down(&self) {
        self.end_for(EndReason::Shutdown, "shutdown");
    }

    fn end_for(&self, reason: EndReason, why: &str) {
        let mut inner = self.lock();
        if inner.phase.is_over() {
            return;
        }
        tracing::info!(stream = %self.name, why, "live stream ended");
        for v in inner.viewers.iter_mut() {
            v.end(reason);
        }
        self.close(&mut inner, Phase::Ended);
    }

    /// The first connection sequence failed: joiners get `f`.
    pub fn fail(&self, f: Failure) {
        let mut inner = self.lock();
        if inner.phase.is_over() {
            return;
        }
        self.close(&mut inner, Phase::Failed(f));
    }

    fn close(&self, inner: &mut Inner, phase: Phase) {
        if matches!(phase, Phase::Failed(_)) {
            // The stream broke rather than ended: players should see an error and retry.
            for v in inner.viewers.iter_mut() {
                v.fail();
            }
        }
        let before = inner.viewers.len();
        inner.viewers.clear(); // dropping a slot ends its body after its queue
        inner.gop.clear();
        self.count_viewers(before, 0);
        self.set_phase(inner, phase);
    }

    /// Resolves once the stream has had no viewers for `linger`, having ended it (decided under
    /// the lock, so no viewer can attach to a stream about to end). Never while a join is in
    /// flight ([`Core::joining`]): linger counts from the last viewer or joiner leaving.
    pub async fn idle(&self) {
        loop {
            let notified = self.viewer_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut inner = self.lock();
                if inner.phase.is_over() {
                    return;
                }
                match inner.idle_since {
                    _ if inner.joiners > 0 => None,
                    Some(t) if Instant::now() >= t + self.settings.linger => {
                        tracing::debug!(stream = %self.name, "no viewers for linger");
                        self.close(&mut inner, Phase::Ended); // no viewer to tell why
                        return;
                    }
                    Some(t) => Some(t + self.settings.linger),
                    None => None,
                }
            };
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => notified.await,
            }
        }
    }

    /// Wakes every viewer that has tags queued since its last wake (a flush point: what queued
    /// meanwhile leaves in one write per viewer).
    pub fn flush(&self) {
        for v in self.lock().viewers.iter_mut() {
            v.wake();
        }
    }

    fn count_cuts(&self, cut: u64) {
        if cut > 0 {
            tracing::info!(stream = %self.name, viewers = cut, "slow viewer cut off");
            self.counters.viewers_cut.fetch_add(cut, Ordering::Relaxed);
        }
    }

    /// Rewrites a tag's timestamp and offers it to every viewer.
    pub fn push(&self, tag: Tag) {
        let budget = self.budget();
        let mut inner = self.lock();
        if inner.phase.is_over() {
            return;
        }
        let inner = &mut *inner;
        // Script tags and sequence headers take the current time; only media sets the anchor.
        let ts = if tag.kind() == TagKind::Script || tag.is_sequence_header() {
            inner.clock.current(tag.kind())
        } else {
            inner.clock.map(tag.kind(), tag.timestamp())
        };
        let tag = if ts as u32 == tag.timestamp() {
            tag
        } else {
            tag.with_timestamp(ts as u32)
        };
        match tag.kind() {
            TagKind::Video => {
                inner.seen_video = true; // sequence headers count: they announce the track
                inner.video_head = Some(tag_head(&tag));
            }
            TagKind::Audio => inner.audio_head = Some(tag_head(&tag)),
            TagKind::Script => {}
        }
        let before = inner.viewers.len();
        if let Some(idx) = init_index(&tag) {
            let changed = inner.init.update(&tag) == Some(true);
            if changed && tag.is_sequence_header() {
                // New codec configuration: frames cached under the old one are useless.
                inner.gop.clear();
            }
            let mut cut = 0u64;
            inner.viewers.retain_mut(|v| {
                if v.known[idx]
                    .as_ref()
                    .is_some_and(|k| k.data() == tag.data())
                {
                    return true; // same start-up tag again (after a reconnect): it has it
                }
                v.known[idx] = Some(tag.clone());
                match v.offer_control(tag.bytes()) {
                    Offer::Cut => {
                        cut += 1;
                        false
                    }
                    Offer::Sent | Offer::Dropped => true,
                }
            });
            self.count_cuts(cut);
        } else {
            let frame = match tag.kind() {
                TagKind::Video if tag.is_keyframe() => MediaKind::VideoKey,
                TagKind::Video => MediaKind::VideoInter,
                TagKind::Audio => MediaKind::Audio {
                    resume: !inner.seen_video,
                },
                TagKind::Script => MediaKind::Data,
            };
            let key = matches!(
                frame,
                MediaKind::VideoKey | MediaKind::Audio { resume: true }
            );
            if self.settings.gop_cache && tag.kind() != TagKind::Script {
                inner.gop.push(&tag, ts, key, self.settings.max_gop_bytes);
            }
            let bytes = tag.bytes();
            let (mut dropped, mut cut) = (0u64, 0u64);
            inner
                .viewers
                .retain_mut(|v| match v.offer(bytes, ts, frame, budget) {
                    Offer::Sent => true,
                    Offer::Dropped => {
                        dropped += 1;
                        true
                    }
                    Offer::Cut => {
                        cut += 1;
                        false
                    }
                });
            if dropped > 0 {
                self.counters
                    .frames_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            self.count_cuts(cut);
        }
        let after = inner.viewers.len();
        self.count_viewers(before, after);
        if after == 0 && before > 0 && inner.idle_since.is_none() {
            inner.idle_since = Some(Instant::now());
            self.viewer_left.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The engine fed from a test source (tags pushed by hand), on tokio's paused clock.
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    fn settings() -> Settings {
        Settings {
            gop_cache: true,
            linger: Duration::from_secs(5),
            viewer_queue_bytes: 64 * 1024,
            viewer_queue_duration: Duration::from_secs(10),
            max_viewers: 100,
            max_gop_bytes: 16 << 20,
        }
    }

    fn core_with(s: Settings) -> Arc<Core> {
        Core::new(
            "t",
            s,
            Arc::new(LiveCounters::default()),
            Some(Arc::new(StreamCounters::default())),
        )
    }

    fn video(ts: u32, key: bool, size: usize) -> Tag {
        let mut d = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        d.resize(size.max(5), 7);
        Tag::new(TagKind::Video, ts, &d).expect("tag")
    }

    fn audio(ts: u32) -> Tag {
        Tag::new(TagKind::Audio, ts, &[0xAF, 1, 9, 9]).expect("tag")
    }

    fn avc_seq(v: u8) -> Tag {
        Tag::new(TagKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, v]).expect("tag")
    }

    fn aac_seq() -> Tag {
        Tag::new(TagKind::Audio, 0, &[0xAF, 0, 0x12, 0x10]).expect("tag")
    }

    /// Everything queued for a viewer now, parsed (the body is polled without waiting).
    async fn drain(v: &mut ViewerBody) -> (Vec<crate::flv::Event>, bool) {
        let mut bytes = Vec::new();
        let mut ended = false;
        loop {
            let f = tokio::time::timeout(Duration::from_millis(1), v.frame()).await;
            match f {
                Err(_) => break,
                Ok(None) => {
                    ended = true;
                    break;
                }
                Ok(Some(Err(_))) => break,
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        bytes.extend_from_slice(&d);
                    }
                }
            }
        }
        let mut out = Vec::new();
        // A later drain of the same viewer has no file header: parse it behind a synthetic one.
        let mut p = crate::flv::Parser::new();
        let synthetic = !bytes.starts_with(b"FLV");
        if synthetic {
            p.push(&crate::flv::FLV_HEADER).expect("header");
        }
        p.push(&bytes).expect("valid FLV");
        if synthetic {
            let _ = p.next_event();
        }
        while let Ok(Some(e)) = p.next_event() {
            out.push(e);
        }
        (out, ended)
    }

    fn tags(ev: &[crate::flv::Event]) -> Vec<Tag> {
        ev.iter()
            .filter_map(|e| match e {
                crate::flv::Event::Tag(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn join_gets_header_init_and_gop_then_live() {
        let core = core_with(settings());
        core.begin(true, true, "n1");
        core.push(avc_seq(1));
        core.push(aac_seq());
        core.push(video(0, true, 100));
        core.push(audio(10));
        core.push(video(40, false, 100));
        let mut v = core.attach().expect("attach");
        core.push(video(80, false, 100));
        core.flush();
        let (ev, ended) = drain(&mut v).await;
        assert!(!ended);
        assert!(matches!(ev[0], crate::flv::Event::Header(_)));
        let t = tags(&ev);
        assert!(t[0].is_sequence_header() && t[1].is_sequence_header());
        assert!(t[2].is_keyframe(), "GOP starts on its keyframe");
        assert_eq!(t.len(), 6);
        assert_eq!(core.viewers(), 1);
        drop(v);
        assert_eq!(core.viewers(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn linger_expiry_ends_and_a_joiner_at_expiry_never_gets_overloaded() {
        let core = core_with(settings());
        core.begin(true, true, "n1");
        core.push(video(0, true, 100));
        let v = core.attach().expect("attach");
        drop(v);
        let idle = {
            let c = core.clone();
            tokio::spawn(async move { c.idle().await })
        };
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!idle.is_finished(), "within linger");
        let v = core
            .attach()
            .expect("a rejoin within linger reuses the stream");
        drop(v);
        tokio::time::sleep(Duration::from_secs(5)).await;
        idle.await.expect("idle task");
        assert!(matches!(core.phase(), Phase::Ended));
        // Exactly at expiry the answer is "ended: start a new stream", never "full".
        assert_eq!(core.attach().err(), Some(AttachError::Ended));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_someone_is_joining_never_lingers_out() {
        let core = core_with(settings()); // linger 5 s
        let joiner = core.joining().expect("joining");
        let idle = {
            let c = core.clone();
            tokio::spawn(async move { c.idle().await })
        };
        // The first connection takes longer than linger (a silent first node).
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(!idle.is_finished(), "not idle while the first viewer waits");
        core.begin(true, true, "n1");
        // The joiner's task is slow to run after `ready()`.
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(!idle.is_finished());
        let v = core.attach().expect("the joiner attaches");
        drop(joiner);
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(!idle.is_finished(), "a viewer watches");
        drop(v);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!idle.is_finished(), "within linger of the last leave");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(idle.is_finished() && core.is_over());

        // A joiner that gives up counts as a leave: linger from then.
        let core = core_with(settings());
        let joiner = core.joining().expect("joining");
        let idle = {
            let c = core.clone();
            tokio::spawn(async move { c.idle().await })
        };
        tokio::time::sleep(Duration::from_secs(8)).await;
        drop(joiner);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!idle.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(idle.is_finished());
        assert!(core.joining().is_none(), "an ended stream takes no joiner");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_viewer_skips_to_the_keyframe_then_is_cut() {
        let mut s = settings();
        s.viewer_queue_bytes = 1000;
        let counters = Arc::new(LiveCounters::default());
        let core = Core::new(
            "t",
            s,
            counters.clone(),
            Some(Arc::new(StreamCounters::default())),
        );
        core.begin(false, true, "n1");
        core.push(video(0, true, 300));
        let slow = core.attach().expect("attach");
        let mut fast = core.attach().expect("attach");
        drain(&mut fast).await;
        for i in 1..10 {
            core.push(video(i * 40, false, 300));
            drain(&mut fast).await;
        }
        assert!(
            counters.frames_dropped.load(Ordering::Relaxed) > 0,
            "skipped"
        );
        assert_eq!(core.viewers(), 2, "not cut before the keyframe");
        core.push(video(400, true, 300));
        assert_eq!(core.viewers(), 1, "still backed up at the keyframe: cut");
        assert_eq!(counters.viewers_cut.load(Ordering::Relaxed), 1);
        assert_eq!(slow.end_watch().reason(), Some(EndReason::SlowViewer));
        assert_eq!(fast.end_watch().reason(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gop_larger_than_the_queue_budget_starts_whole() {
        // A 20 Mbit/s stream with a 2 s GOP: ~5 MiB, over a 4 MiB queue budget.
        let mut s = settings();
        s.viewer_queue_bytes = 4 << 20;
        let core = core_with(s);
        core.begin(true, true, "n1");
        core.push(avc_seq(1));
        let frame = 100_000;
        core.push(video(0, true, frame));
        for i in 1..50 {
            core.push(video(i * 40, false, frame));
        }
        let mut v = core.attach().expect("attach");
        // Live tags keep coming before the viewer reads anything.
        core.push(video(2000, false, frame));
        let (ev, _) = drain(&mut v).await;
        let t = tags(&ev);
        assert_eq!(
            t.len(),
            1 + 51,
            "seq header, the whole 2 s GOP and the live frame"
        );
        assert!(t[1].is_keyframe());
        assert_eq!(core.viewers(), 1, "not cut");
    }

    #[tokio::test(start_paused = true)]
    async fn timestamps_pass_the_wrap_monotonic_per_track() {
        let core = core_with(settings());
        core.begin(true, true, "n1");
        let mut v = core.attach().expect("attach");
        let start = u32::MAX - 5000;
        for i in 0..250u32 {
            core.push(video(start.wrapping_add(i * 40), i % 25 == 0, 50));
            core.push(audio(start.wrapping_add(i * 40 + 5)));
        }
        let (ev, _) = drain(&mut v).await;
        let t = tags(&ev);
        assert_eq!(t.len(), 500);
        for kind in [TagKind::Audio, TagKind::Video] {
            // Unwrap what a demuxer reads (32 bits with the extended byte): never back.
            let mut wide = 0u64;
            let mut prev: Option<u32> = None;
            for tag in t.iter().filter(|t| t.kind() == kind) {
                let ts = tag.timestamp();
                if let Some(p) = prev {
                    let step = ts.wrapping_sub(p);
                    assert!(step < 1000, "{kind:?} went back or leapt: {p} → {ts}");
                    wide += u64::from(step);
                } else {
                    wide = u64::from(ts);
                }
                prev = Some(ts);
            }
            assert!(wide > u64::from(u32::MAX), "{kind:?} passed 2^32");
            assert!(
                prev.is_some_and(|p| p < 10_000),
                "the wire value wrapped, not saturated"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_clock_restarting_at_zero_keeps_time_moving() {
        let core = core_with(settings());
        core.begin(false, true, "n1");
        let mut v = core.attach().expect("attach");
        core.push(video(500_000, true, 50));
        core.push(video(500_040, false, 50));
        core.push(video(0, true, 50));
        core.push(video(40, false, 50));
        let (ev, _) = drain(&mut v).await;
        let ts: Vec<u32> = tags(&ev).iter().map(Tag::timestamp).collect();
        assert_eq!(ts, vec![500_000, 500_040, 500_080, 500_120]);
    }

    #[tokio::test(start_paused = true)]
    async fn failover_to_a_node_with_other_tracks() {
        let core = core_with(settings());
        core.begin(true, true, "a");
        core.push(avc_seq(1));
        core.push(aac_seq());
        core.push(video(1000, true, 50));
        core.push(audio(1010));
        let mut old = core.attach().expect("attach");
        drain(&mut old).await;
        core.reconnecting();
        assert!(matches!(core.phase(), Phase::Reconnecting));
        // Node b: video only, another codec configuration.
        core.begin(false, true, "b");
        assert_eq!(core.source(), "b");
        core.push(avc_seq(2));
        core.push(video(0, true, 50));
        let (ev, _) = drain(&mut old).await;
        let t = tags(&ev);
        assert!(
            t[0].is_sequence_header() && t[0].data().last() == Some(&2),
            "b's sequence header reaches the attached viewer before b's first frame"
        );
        assert!(t[1].is_keyframe());
        assert!(t[1].timestamp() > 1010, "continues after a's last tag");
        // A newcomer gets b's header flags and b's start-up tags only.
        let mut new = core.attach().expect("attach");
        let (ev, _) = drain(&mut new).await;
        match &ev[0] {
            crate::flv::Event::Header(h) => assert!(h.has_video && !h.has_audio),
            other => panic!("expected a header, got {other:?}"),
        }
        let t = tags(&ev);
        assert!(t.iter().all(|t| t.kind() == TagKind::Video));
        assert_eq!(t[0].data().last(), Some(&2));
    }

    fn metadata() -> Tag {
        let mut d = vec![2, 0, 10];
        d.extend_from_slice(b"onMetaData");
        d.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 9]);
        Tag::new(TagKind::Script, 0, &d).expect("tag")
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_to_a_node_sending_start_up_tags_at_zero_cuts_nobody() {
        let core = core_with(settings());
        core.begin(true, true, "a");
        core.push(metadata());
        core.push(avc_seq(1));
        core.push(aac_seq());
        core.push(video(4960, true, 50));
        core.push(audio(4990));
        core.push(video(5000, false, 50));
        let mut v = core.attach().expect("attach");
        drain(&mut v).await;
        core.reconnecting();
        core.begin(true, true, "b");
        // Node b sends its start-up tags at 0 and its first keyframe at 8000. The viewer is
        // not woken in between (no flush point): its new sequence header is still queued.
        core.push(metadata());
        core.push(avc_seq(2));
        core.push(aac_seq());
        core.push(video(8000, true, 50));
        core.push(audio(8010));
        core.push(video(8040, false, 50));
        assert_eq!(
            core.viewers(),
            1,
            "a viewer that keeps up is never cut at a splice"
        );
        let (ev, _) = drain(&mut v).await;
        let t = tags(&ev);
        let media: Vec<(TagKind, u32)> = t
            .iter()
            .filter(|t| !t.is_sequence_header())
            .map(|t| (t.kind(), t.timestamp()))
            .collect();
        assert_eq!(
            media,
            vec![
                (TagKind::Video, 5040),
                (TagKind::Audio, 5050),
                (TagKind::Video, 5080)
            ],
            "b's media continues 40 ms after a's last tag"
        );
    }

    /// The kinds and keyframe flags of the media (not start-up) tags in `t`.
    fn media_of(t: &[Tag]) -> Vec<(TagKind, bool)> {
        t.iter()
            .filter(|t| init_index(t).is_none())
            .map(|t| (t.kind(), t.kind() == TagKind::Video && t.is_keyframe()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_splice_on_audio_no_viewer_gets_video_before_a_keyframe() {
        let core = core_with(settings());
        core.begin(true, true, "a");
        core.push(avc_seq(1));
        core.push(aac_seq());
        core.push(video(1000, true, 50));
        core.push(audio(1010));
        let mut old = core.attach().expect("attach");
        drain(&mut old).await;
        core.reconnecting();
        // Node b: audio first, then a P-frame (its IDR was before we joined), then an IDR.
        core.begin(true, true, "b");
        core.push(aac_seq());
        core.push(audio(2000));
        core.push(video(2020, false, 50));
        // A newcomer joins on b's GOP so far.
        let mut new = core.attach().expect("attach");
        core.push(audio(2030));
        core.push(video(2060, false, 50));
        core.push(video(2100, true, 50));
        core.push(video(2140, false, 50));
        for (who, v) in [("attached", &mut old), ("newcomer", &mut new)] {
            let (ev, _) = drain(v).await;
            let media = media_of(&tags(&ev));
            let first_video = media.iter().find(|(k, _)| *k == TagKind::Video);
            assert_eq!(
                first_video,
                Some(&(TagKind::Video, true)),
                "{who}: first video is a keyframe: {media:?}"
            );
            assert_eq!(
                media.first().map(|m| m.0),
                Some(TagKind::Audio),
                "{who}: {media:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_kick_ends_exactly_that_viewer_at_once_and_cleanly() {
        let core = core_with(settings());
        core.begin(true, true, "a");
        core.push(avc_seq(1));
        core.push(video(0, true, 100));
        let mut kept = core.attach().expect("attach");
        let mut kicked = core.attach().expect("attach");
        let watch = kicked.end_watch();
        assert_ne!(kept.id(), kicked.id());
        core.push(video(40, false, 100)); // queued for both, not yet read
        assert!(!core.kick(u64::MAX), "no such viewer");
        assert!(core.kick(kicked.id()));
        assert_eq!(core.viewers(), 1);
        assert_eq!(watch.reason(), Some(EndReason::Kicked));
        let (ev, ended) = drain(&mut kicked).await;
        assert!(ended, "a clean end");
        assert!(ev.is_empty(), "what was queued is dropped: {ev:?}");
        core.push(video(80, false, 100));
        core.flush();
        let (ev, ended) = drain(&mut kept).await;
        assert!(!ended);
        assert_eq!(tags(&ev).len(), 4, "the other viewer got everything");
        assert!(!core.kick(kicked.id()), "kicked once");
    }

    #[tokio::test(start_paused = true)]
    async fn listings_show_viewers_and_what_the_stream_carries() {
        let core = core_with(settings());
        core.begin(true, true, "a");
        let info = ViewerInfo {
            client: "192.0.2.7".parse().expect("ip"),
            protocol: "ws-flv",
        };
        let mut v = core.attach_viewer(info).expect("attach");
        // AVC sequence header with a real SPS (1280x720 Constrained Baseline) and AAC 48k stereo.
        let sps: [u8; 25] = [
            0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
            0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x24, 0x80,
        ];
        let mut d = vec![
            0x17,
            0,
            0,
            0,
            0,
            1,
            0x42,
            0xC0,
            0x1F,
            0xFF,
            0xE1,
            0,
            sps.len() as u8,
        ];
        d.extend_from_slice(&sps);
        core.push(Tag::new(TagKind::Video, 0, &d).expect("tag"));
        core.push(Tag::new(TagKind::Audio, 0, &[0xAF, 0, 0x11, 0x90]).expect("tag"));
        core.push(video(0, true, 100));
        core.push(video(40, false, 100));
        core.push(video(80, false, 100));
        let (video_info, audio_info) = core.media_info();
        let video_info = video_info.expect("video");
        assert_eq!(
            (video_info.codec, video_info.width, video_info.height),
            ("h264", Some(1280), Some(720))
        );
        let audio_info = audio_info.expect("audio");
        assert_eq!(
            (
                audio_info.codec,
                audio_info.sample_rate,
                audio_info.channels
            ),
            ("aac", Some(48000), Some(2))
        );
        let s = &core.viewer_stats()[0];
        assert_eq!(
            (s.client.to_string().as_str(), s.protocol),
            ("192.0.2.7", "ws-flv")
        );
        assert!(s.queue_bytes > 0 && s.queue_lag_ms == 80, "{s:?}");
        core.flush();
        drain(&mut v).await;
        let s = &core.viewer_stats()[0];
        assert_eq!((s.queue_bytes, s.queue_lag_ms), (0, 0));
        assert!(s.bytes > 300);
        assert_eq!(core.take_bytes_out(), s.bytes);
        assert_eq!(core.take_bytes_out(), 0, "counted once");
    }

    #[tokio::test(start_paused = true)]
    async fn viewers_learn_why_the_stream_left_them() {
        let core = core_with(settings());
        core.begin(true, true, "a");
        let v = core.attach().expect("attach");
        core.shut_down();
        assert_eq!(v.end_watch().reason(), Some(EndReason::Shutdown));
        let core = core_with(settings());
        core.begin(true, true, "a");
        let v = core.attach().expect("attach");
        core.end("unpublished");
        assert_eq!(v.end_watch().reason(), Some(EndReason::StreamEnd));
        let core = core_with(settings());
        core.begin(true, true, "a");
        let v = core.attach().expect("attach");
        core.fail(Failure::Unavailable("t".into()));
        assert_eq!(v.end_watch().reason(), Some(EndReason::Upstream));
        let w = {
            let core = core_with(settings());
            core.begin(true, true, "a");
            let v = core.attach().expect("attach");
            v.end_watch()
        };
        assert_eq!(w.reason(), None, "a viewer that left by itself");
    }

    #[tokio::test(start_paused = true)]
    async fn end_gives_viewers_a_clean_end_and_refuses_joiners() {
        let core = core_with(settings());
        core.begin(true, true, "a");
        core.push(video(0, true, 50));
        let mut v = core.attach().expect("attach");
        core.end("test");
        let (ev, ended) = drain(&mut v).await;
        assert!(ended, "clean end after the queue");
        assert!(!tags(&ev).is_empty());
        assert_eq!(core.attach().err(), Some(AttachError::Ended));
    }
}
