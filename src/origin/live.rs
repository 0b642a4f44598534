//! `GET /live/NAME.flv`: every `NAME.flv` at the top of the media directory replayed forever,
//! in real time, as an HTTP-FLV live stream.
//!
//! One reader task per stream, started by its first viewer: it holds the parsed file in memory
//! (tags are slices of one buffer), sleeps until each tag is due by its timestamp, rewrites
//! timestamps so they keep rising across loops, and hands each tag — one shared [`Bytes`] — to
//! every viewer's queue. Nothing is copied per viewer.
//!
//! A new viewer gets the FLV header, the cached metadata and sequence headers, then the GOP
//! cache (every tag since the latest keyframe), so its player starts at once on a keyframe.
//!
//! Each viewer's queue is bounded in bytes. The reader never waits for a viewer: one that falls
//! more than `live_queue_bytes` behind is cut off (its queue is freed and its body ends with an
//! error). Cut-off viewers, departed viewers (body dropped) and ended streams are uncounted at
//! once, so `/stats` stays exact.
//!
//! A stream runs while it has viewers, lingers `live_linger` after the last one leaves, then
//! stops and frees its file. A corrupt file plays its valid prefix once, logs the error and
//! ends its viewers' responses; other streams are unaffected.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::stats::{Stats, StreamStats};
use super::{OriginError, Tuning};
use crate::body::{empty, Body, BoxError};
use crate::flv::{self, FlvError, Tag, TagKind};

/// Frame duration assumed when a file's timestamps do not reveal one (25 fps).
const DEFAULT_FRAME_MS: u64 = 40;
/// Longest the reader sleeps without checking whether its stream has been abandoned.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// Most stream files listed at start-up (for `/stats`).
const MAX_LISTED: usize = 1024;

/// Locks a mutex, recovering from poisoning: every critical section here leaves the data
/// consistent before anything that could panic, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `name` may be a live stream name: `[A-Za-z0-9_.-]{1,128}`, not starting with a dot
/// (so no `..`, no hidden files).
pub fn valid_stream_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Names of the `NAME.flv` files at the top of `root`, at most [`MAX_LISTED`].
pub async fn list_streams(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(mut dir) = tokio::fs::read_dir(root).await else {
        return out;
    };
    while let Ok(Some(entry)) = dir.next_entry().await {
        if out.len() >= MAX_LISTED {
            break;
        }
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".flv")) else {
            continue;
        };
        if valid_stream_name(name)
            && entry
                .file_type()
                .await
                .map(|t| t.is_file())
                .unwrap_or(false)
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    out
}

/// Limits that apply to every stream.
#[derive(Clone, Debug)]
struct Limits {
    queue_bytes: usize,
    gop_bytes: usize,
    linger: Duration,
    max_file: u64,
    max_streams: usize,
}

/// All live streams of one origin.
pub struct Live {
    /// Canonical media root.
    root: PathBuf,
    /// Running streams by name. Bounded by `max_streams`; an entry leaves when its reader stops.
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl Live {
    pub fn new(
        root: PathBuf,
        opts: &Tuning,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            root,
            streams: Mutex::new(HashMap::new()),
            limits: Limits {
                queue_bytes: opts.live_queue_bytes.max(64 * 1024),
                gop_bytes: opts.gop_cache_bytes,
                linger: opts.live_linger,
                max_file: opts.max_live_file_bytes,
                max_streams: opts.max_live_streams.max(1),
            },
            stats,
            shutdown,
        })
    }

    /// Answers `GET|HEAD /live/<rest>`.
    pub async fn play(
        self: &Arc<Self>,
        rest: &str,
        head: bool,
    ) -> Result<Response<Body>, OriginError> {
        let name = rest
            .strip_suffix(".flv")
            .filter(|n| valid_stream_name(n))
            .ok_or_else(|| OriginError::StreamNotFound(rest.to_owned()))?;
        if self.shutdown.is_cancelled() {
            return Err(OriginError::ShuttingDown);
        }
        let body = if head {
            self.check_exists(name).await?;
            empty()
        } else {
            let (stream, sub) = self.subscribe(name).await?;
            LiveBody::new(stream, sub, self.shutdown.clone()).boxed()
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("video/x-flv"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Browser players (flv.js) fetch cross-origin in demos.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        Ok(resp)
    }

    /// The stream's file, refusing anything that is not a regular file inside the root.
    async fn file_of(&self, name: &str) -> Result<(PathBuf, u64), OriginError> {
        let not_found = || OriginError::StreamNotFound(name.to_owned());
        let path = tokio::fs::canonicalize(self.root.join(format!("{name}.flv")))
            .await
            .map_err(|_| not_found())?;
        if !path.starts_with(&self.root) {
            return Err(not_found());
        }
        let meta = tokio::fs::metadata(&path).await.map_err(|_| not_found())?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok((path, meta.len()))
    }

    async fn check_exists(&self, name: &str) -> Result<(), OriginError> {
        if self.running(name).is_some() {
            return Ok(());
        }
        self.file_of(name).await.map(|_| ())
    }

    fn running(&self, name: &str) -> Option<Arc<Stream>> {
        lock(&self.streams).get(name).cloned()
    }

    /// Joins the running stream `name`, starting it (loading and parsing its file) if needed.
    async fn subscribe(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<(Arc<Stream>, Subscriber), OriginError> {
        // Fast path: the stream is running.
        if let Some(s) = self.running(name) {
            if let Some(sub) = s.subscribe() {
                return Ok((s, sub));
            }
        }
        let (path, len) = self.file_of(name).await?;
        if len > self.limits.max_file {
            return Err(OriginError::StreamTooLarge(name.to_owned()));
        }
        let data = tokio::fs::read(&path).await?;
        let source = Source::parse(name, Bytes::from(data))?;
        let stats = self.stats.stream(name).ok_or(OriginError::TooManyStreams)?;

        let mut streams = lock(&self.streams);
        // Another first viewer may have started it while we were loading: join theirs.
        if let Some(s) = streams.get(name).cloned() {
            if let Some(sub) = s.subscribe() {
                return Ok((s, sub));
            }
        }
        if streams.len() >= self.limits.max_streams {
            return Err(OriginError::TooManyStreams);
        }
        let stream = Arc::new(Stream::new(name, &source, &self.limits, stats));
        let sub = stream.subscribe().ok_or(OriginError::ShuttingDown)?;
        streams.insert(name.to_owned(), stream.clone());
        drop(streams);
        tracing::info!(
            stream = name,
            tags = source.media.len(),
            "live stream started"
        );
        tokio::spawn(run_reader(self.clone(), stream.clone(), source));
        Ok((stream, sub))
    }

    /// Removes `stream` from the running set if it is still the one registered under its name.
    fn forget(&self, stream: &Arc<Stream>) {
        let mut streams = lock(&self.streams);
        if streams
            .get(&stream.name)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            streams.remove(&stream.name);
        }
    }
}

/// A stream file, parsed once, ready to replay.
struct Source {
    /// FLV header matching the tracks actually present.
    header: Bytes,
    metadata: Option<Tag>,
    video_seq: Option<Tag>,
    audio_seq: Option<Tag>,
    has_video: bool,
    /// Everything else, in file order (slices of the file buffer).
    media: Vec<Tag>,
    /// Timestamp of the first media tag; replay times are relative to it.
    base_ts: u32,
    /// Time from the first to the last media tag plus one frame: the offset added per loop.
    loop_ms: u64,
    /// Why the file ends early, if it does: the stream ends after one pass.
    error: Option<FlvError>,
}

impl Source {
    fn parse(name: &str, data: Bytes) -> Result<Self, OriginError> {
        let d = flv::demux(data);
        let bad = |source| OriginError::BadStream {
            name: name.to_owned(),
            source,
        };
        if d.header.is_none() || d.tags.is_empty() {
            let err = d.error.unwrap_or(FlvError::Truncated { buffered: 0 });
            tracing::error!(stream = name, error = %err, "live stream file has no playable tags");
            return Err(bad(err));
        }
        let mut s = Source {
            header: Bytes::new(),
            metadata: None,
            video_seq: None,
            audio_seq: None,
            has_video: false,
            media: Vec::with_capacity(d.tags.len()),
            base_ts: 0,
            loop_ms: 0,
            error: d.error,
        };
        let (mut has_audio, mut has_video) = (false, false);
        for t in d.tags {
            has_video |= t.kind() == TagKind::Video;
            has_audio |= t.kind() == TagKind::Audio;
            // The first metadata and sequence headers become the stream's cached init; later
            // identical copies are dropped, changed ones stay in the media (and update the cache
            // as they play).
            let slot = if t.is_metadata() {
                Some(&mut s.metadata)
            } else if t.is_sequence_header() {
                Some(if t.kind() == TagKind::Video {
                    &mut s.video_seq
                } else {
                    &mut s.audio_seq
                })
            } else {
                None
            };
            match slot {
                Some(slot @ None) => *slot = Some(t),
                Some(Some(cached)) if cached.data() == t.data() => {}
                _ => s.media.push(t),
            }
        }
        if s.media.is_empty() {
            // Nothing to pace: replaying would spin without ever sleeping.
            return Err(OriginError::EmptyStream(name.to_owned()));
        }
        s.has_video = has_video;
        s.header = Bytes::copy_from_slice(&flv::file_header(has_audio, has_video));
        s.base_ts = s.media.first().map_or(0, Tag::timestamp);
        let last = s
            .media
            .iter()
            .map(|t| t.timestamp().saturating_sub(s.base_ts))
            .max()
            .unwrap_or(0);
        s.loop_ms = u64::from(last) + frame_ms(&s.media);
        Ok(s)
    }
}

/// The smallest positive gap between consecutive video timestamps (else any tags): one frame.
fn frame_ms(tags: &[Tag]) -> u64 {
    let gap = |kind: Option<TagKind>| {
        let ts: Vec<u32> = tags
            .iter()
            .filter(|t| kind.is_none_or(|k| t.kind() == k))
            .map(Tag::timestamp)
            .collect();
        ts.windows(2)
            .filter_map(|w| w[1].checked_sub(w[0]))
            .filter(|&d| d > 0)
            .min()
    };
    gap(Some(TagKind::Video))
        .or_else(|| gap(None))
        .map_or(DEFAULT_FRAME_MS, |d| u64::from(d).min(1000))
}

/// One running stream: the caches a new viewer needs and the viewers' queues.
struct Stream {
    name: String,
    state: Mutex<StreamState>,
    stats: Arc<StreamStats>,
    /// Byte budget of each viewer's queue beyond its initial burst.
    queue_bytes: usize,
    gop_limit: usize,
}

struct StreamState {
    header: Bytes,
    metadata: Option<Bytes>,
    video_seq: Option<Bytes>,
    audio_seq: Option<Bytes>,
    has_video: bool,
    /// Tags since the latest video keyframe (the keyframe first), while `gop_bytes` stays within
    /// the limit; empty while no keyframe has been seen or after an oversized GOP.
    gop: Vec<Bytes>,
    gop_bytes: usize,
    /// Subscribed viewers. Bounded by the server's connection limit (one per connection).
    viewers: HashMap<u64, Viewer>,
    next_id: u64,
    /// Set once, when the reader stops; late subscribers then start a new stream.
    ended: bool,
    /// When the viewer count last dropped to zero, for the linger timer.
    idle_since: Option<Instant>,
}

struct Viewer {
    queue: Arc<Queue>,
    /// Joined while no GOP was cached: skip tags until the next keyframe.
    wait_keyframe: bool,
}

/// A viewer's membership in a stream; dropping it (with the body) unsubscribes.
struct Subscriber {
    id: u64,
    queue: Arc<Queue>,
}

impl Stream {
    fn new(name: &str, src: &Source, limits: &Limits, stats: Arc<StreamStats>) -> Self {
        let b = |t: &Option<Tag>| t.as_ref().map(|t| t.bytes().clone());
        Self {
            name: name.to_owned(),
            state: Mutex::new(StreamState {
                header: src.header.clone(),
                metadata: b(&src.metadata),
                video_seq: b(&src.video_seq),
                audio_seq: b(&src.audio_seq),
                has_video: src.has_video,
                gop: Vec::new(),
                gop_bytes: 0,
                viewers: HashMap::new(),
                next_id: 0,
                ended: false,
                idle_since: None,
            }),
            stats,
            queue_bytes: limits.queue_bytes,
            gop_limit: limits.gop_bytes,
        }
    }

    /// Adds a viewer whose queue starts with header, metadata, sequence headers and the GOP
    /// cache. All under the stream lock, so the viewer sees no gap and no duplicate.
    /// `None` if the stream has ended.
    fn subscribe(&self) -> Option<Subscriber> {
        let mut st = lock(&self.state);
        if st.ended {
            return None;
        }
        let mut initial: VecDeque<Bytes> = VecDeque::new();
        initial.push_back(st.header.clone());
        initial.extend(
            [&st.metadata, &st.video_seq, &st.audio_seq]
                .into_iter()
                .flatten()
                .cloned(),
        );
        let wait_keyframe = st.has_video && st.gop.is_empty();
        initial.extend(st.gop.iter().cloned());
        let initial_bytes: usize = initial.iter().map(Bytes::len).sum();
        // The initial burst does not count against the budget: a long GOP must not get every
        // new viewer cut off at once.
        let queue = Arc::new(Queue::new(
            initial,
            initial_bytes,
            self.queue_bytes + initial_bytes,
        ));
        let id = st.next_id;
        st.next_id += 1;
        st.viewers.insert(
            id,
            Viewer {
                queue: queue.clone(),
                wait_keyframe,
            },
        );
        st.idle_since = None;
        self.stats.clients.fetch_add(1, Ordering::Relaxed);
        Some(Subscriber { id, queue })
    }

    /// Removes viewer `id` if still subscribed, keeping the count exact.
    fn unsubscribe(&self, id: u64) {
        let mut st = lock(&self.state);
        if st.viewers.remove(&id).is_some() {
            self.stats.clients.fetch_sub(1, Ordering::Relaxed);
            if st.viewers.is_empty() {
                st.idle_since = Some(Instant::now());
            }
        }
    }

    /// Updates the caches with `tag` and queues it for every viewer; cuts off viewers whose
    /// queue would exceed its budget.
    fn broadcast(&self, tag: &Tag) {
        let mut st = lock(&self.state);
        let bytes = tag.bytes();
        if tag.is_metadata() {
            st.metadata = Some(bytes.clone());
        } else if tag.is_sequence_header() {
            match tag.kind() {
                TagKind::Video => st.video_seq = Some(bytes.clone()),
                _ => st.audio_seq = Some(bytes.clone()),
            }
        }
        let keyframe =
            tag.kind() == TagKind::Video && tag.is_keyframe() && !tag.is_sequence_header();
        if st.has_video {
            if keyframe {
                st.gop.clear();
                st.gop_bytes = 0;
            }
            if keyframe || !st.gop.is_empty() {
                if st.gop_bytes + bytes.len() > self.gop_limit {
                    // Too long to cache: new viewers wait for the next keyframe instead.
                    st.gop.clear();
                    st.gop_bytes = 0;
                } else {
                    st.gop_bytes += bytes.len();
                    st.gop.push(bytes.clone());
                }
            }
        }
        let mut cut = Vec::new();
        for (id, v) in st.viewers.iter_mut() {
            if v.wait_keyframe {
                if !keyframe {
                    continue;
                }
                v.wait_keyframe = false;
            }
            if !v.queue.push(bytes.clone()) {
                cut.push(*id);
            }
        }
        for id in cut {
            st.viewers.remove(&id);
            self.stats.clients.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(stream = %self.name, viewer = id, "viewer too slow; cut off");
        }
        if st.viewers.is_empty() && st.idle_since.is_none() {
            st.idle_since = Some(Instant::now());
        }
    }

    /// Ends the stream: viewers get what is queued, then the end of their response.
    fn end(&self) {
        let mut st = lock(&self.state);
        st.ended = true;
        for (_, v) in st.viewers.drain() {
            v.queue.finish();
            self.stats.clients.fetch_sub(1, Ordering::Relaxed);
        }
        st.gop.clear();
    }

    /// Whether the stream has had no viewers for `linger`.
    fn idle_for(&self, linger: Duration) -> bool {
        let st = lock(&self.state);
        st.viewers.is_empty() && st.idle_since.is_some_and(|t| t.elapsed() >= linger)
    }
}

/// Ends and unregisters `stream` if it has had no viewers for the linger time. Checked again
/// under the registry lock, so a viewer joining now finds either this stream still running or
/// no stream (and starts a new one).
fn stop_if_idle(live: &Live, stream: &Arc<Stream>) -> bool {
    if !stream.idle_for(live.limits.linger) {
        return false;
    }
    let mut streams = lock(&live.streams);
    if !stream.idle_for(live.limits.linger) {
        return false;
    }
    stream.end();
    if streams
        .get(&stream.name)
        .is_some_and(|s| Arc::ptr_eq(s, stream))
    {
        streams.remove(&stream.name);
    }
    true
}

/// The reader task of one stream: replays `src` forever, paced by its timestamps.
async fn run_reader(live: Arc<Live>, stream: Arc<Stream>, src: Source) {
    let start = Instant::now();
    let mut offset: u64 = 0;
    let reason = 'replay: loop {
        for tag in &src.media {
            let ts = offset + u64::from(tag.timestamp().saturating_sub(src.base_ts));
            // Sleep until the tag is due, waking at least every IDLE_CHECK so a long gap in
            // the file cannot keep an abandoned stream alive.
            let due = start + Duration::from_millis(ts);
            while Instant::now() < due {
                let wake = due.min(Instant::now() + IDLE_CHECK);
                tokio::select! {
                    _ = live.shutdown.cancelled() => break 'replay "shutdown",
                    _ = tokio::time::sleep_until(wake) => {}
                }
                if Instant::now() < due && stop_if_idle(&live, &stream) {
                    break 'replay "idle";
                }
            }
            // FLV timestamps are 32-bit milliseconds: they wrap after ~49 days, as in RTMP.
            let ts = ts as u32;
            if ts == tag.timestamp() {
                stream.broadcast(tag);
            } else {
                stream.broadcast(&tag.with_timestamp(ts));
            }
            if stop_if_idle(&live, &stream) {
                break 'replay "idle";
            }
        }
        if let Some(e) = &src.error {
            tracing::error!(stream = %stream.name, error = %e, "live stream file is corrupt after its valid part; ending the stream");
            break 'replay "corrupt source";
        }
        offset += src.loop_ms;
    };
    stream.end();
    live.forget(&stream);
    tracing::info!(stream = %stream.name, reason, "live stream stopped");
}

/// Why a viewer's queue ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The stream ended: drain, then end the response cleanly.
    Finished,
    /// The viewer fell too far behind: drop what is queued and fail the response so the
    /// connection is closed (the viewer sees a truncated stream, not a clean end).
    Overflow,
}

/// A viewer's queue of shared tag bytes, bounded in bytes. Written by the reader, read by the
/// viewer's body; the reader never blocks on it.
struct Queue {
    inner: Mutex<QueueInner>,
}

struct QueueInner {
    items: VecDeque<Bytes>,
    bytes: usize,
    limit: usize,
    end: Option<End>,
    waker: Option<Waker>,
}

impl Queue {
    fn new(items: VecDeque<Bytes>, bytes: usize, limit: usize) -> Self {
        Self {
            inner: Mutex::new(QueueInner {
                items,
                bytes,
                limit,
                end: None,
                waker: None,
            }),
        }
    }

    /// Queues `b`; `false` if that would exceed the budget, in which case the queue is emptied
    /// and marked overflowed.
    fn push(&self, b: Bytes) -> bool {
        let mut q = lock(&self.inner);
        if q.end.is_some() {
            return true;
        }
        if q.bytes + b.len() > q.limit {
            q.items.clear();
            q.bytes = 0;
            q.end = Some(End::Overflow);
        } else {
            q.bytes += b.len();
            q.items.push_back(b);
        }
        let ok = q.end.is_none();
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        ok
    }

    fn finish(&self) {
        let mut q = lock(&self.inner);
        if q.end.is_none() {
            q.end = Some(End::Finished);
        }
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
}

/// The response body of one viewer. Dropping it (client gone) unsubscribes the viewer.
struct LiveBody {
    stream: Arc<Stream>,
    sub: Subscriber,
    /// Ends the body cleanly on shutdown, so graceful shutdown need not wait out its drain
    /// timeout for never-ending live responses.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl LiveBody {
    fn new(stream: Arc<Stream>, sub: Subscriber, shutdown: CancellationToken) -> Self {
        Self {
            stream,
            sub,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            done: false,
        }
    }
}

impl Drop for LiveBody {
    fn drop(&mut self) {
        self.stream.unsubscribe(self.sub.id);
    }
}

impl http_body::Body for LiveBody {
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
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        let mut q = lock(&this.sub.queue.inner);
        if let Some(b) = q.items.pop_front() {
            q.bytes -= b.len();
            drop(q);
            this.stream
                .stats
                .bytes_sent
                .fetch_add(b.len() as u64, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match q.end {
            Some(End::Finished) => {
                this.done = true;
                Poll::Ready(None)
            }
            Some(End::Overflow) => {
                this.done = true;
                Poll::Ready(Some(Err(
                    "viewer fell too far behind the live stream".into()
                )))
            }
            None => {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert!(valid_stream_name("cam1"));
        assert!(valid_stream_name("a.b-c_d"));
        assert!(!valid_stream_name(""));
        assert!(!valid_stream_name(".."));
        assert!(!valid_stream_name(".hidden"));
        assert!(!valid_stream_name("a/b"));
        assert!(!valid_stream_name(&"x".repeat(129)));
    }

    #[test]
    fn queue_is_bounded_and_overflow_frees() {
        let q = Queue::new(VecDeque::new(), 0, 10);
        assert!(q.push(Bytes::from_static(b"12345")));
        assert!(q.push(Bytes::from_static(b"12345")));
        assert!(!q.push(Bytes::from_static(b"1")));
        let inner = lock(&q.inner);
        assert!(inner.items.is_empty());
        assert_eq!(inner.end, Some(End::Overflow));
    }

    #[test]
    fn frame_duration() {
        let t = |k, ts| Tag::new(k, ts, &[0x27, 1]).unwrap();
        let tags = [
            t(TagKind::Video, 0),
            t(TagKind::Audio, 10),
            t(TagKind::Video, 40),
            t(TagKind::Video, 80),
        ];
        assert_eq!(frame_ms(&tags), 40);
        assert_eq!(frame_ms(&[]), DEFAULT_FRAME_MS);
    }
}
