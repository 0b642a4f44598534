//! The origin's source: an FLV file replayed forever in real time, feeding a [`Core`].
//!
//! The file is parsed once and held in memory (tags are slices of one buffer). The looper sleeps
//! until each tag is due by its timestamp and pushes it; each loop adds the file's duration to
//! the timestamps so they keep rising across loops (the core then keeps them as they are, wide
//! inside and modulo 2³² on the wire). A corrupt file plays its valid prefix once, then ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::Core;
use crate::flv::{self, FlvError, Tag, TagKind};

/// Frame duration assumed when a file's timestamps do not reveal one (25 fps).
const DEFAULT_FRAME_MS: u64 = 40;

/// Why a file cannot be replayed.
#[derive(Debug)]
pub enum FileError {
    /// No FLV header or no tags at all.
    Bad(FlvError),
    /// Only start-up tags: nothing to pace.
    Empty,
}

/// A stream file, parsed once, ready to replay.
pub struct FileSource {
    has_audio: bool,
    has_video: bool,
    /// The first metadata and sequence headers, sent before the media.
    init: Vec<Tag>,
    /// Everything else, in file order (slices of the file buffer).
    media: Vec<Tag>,
    /// Timestamp of the first media tag; replay times are relative to it.
    base_ts: u32,
    /// Time from the first to the last media tag plus one frame: the offset added per loop.
    loop_ms: u64,
    /// Why the file ends early, if it does: the stream ends after one pass.
    error: Option<FlvError>,
}

impl FileSource {
    pub fn parse(data: Bytes) -> Result<Self, FileError> {
        let d = flv::demux(data);
        if d.header.is_none() || d.tags.is_empty() {
            return Err(FileError::Bad(
                d.error.unwrap_or(FlvError::Truncated { buffered: 0 }),
            ));
        }
        let mut s = FileSource {
            has_audio: false,
            has_video: false,
            init: Vec::new(),
            media: Vec::with_capacity(d.tags.len()),
            base_ts: 0,
            loop_ms: 0,
            error: d.error,
        };
        // The first metadata and sequence headers start the stream; later identical copies are
        // dropped, changed ones stay in the media (and update the cache as they play).
        let mut first: [Option<Tag>; 3] = [None, None, None];
        for t in d.tags {
            s.has_video |= t.kind() == TagKind::Video;
            s.has_audio |= t.kind() == TagKind::Audio;
            match super::gop::init_index(&t) {
                Some(i) => match &first[i] {
                    None => first[i] = Some(t),
                    Some(c) if c.data() == t.data() => {}
                    Some(_) => s.media.push(t),
                },
                None => s.media.push(t),
            }
        }
        s.init = first.into_iter().flatten().collect();
        if s.media.is_empty() {
            return Err(FileError::Empty);
        }
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

    pub fn media_tags(&self) -> usize {
        self.media.len()
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

/// Starts `core` on `src`: its header and start-up tags go in at once (so the core is live
/// before its first viewer attaches).
pub fn start(core: &Core, src: &FileSource) {
    core.begin(src.has_audio, src.has_video, "file");
    for t in &src.init {
        // At the replay's time zero, so the media that follows is a step, not a clock restart.
        core.push(if t.timestamp() == 0 {
            t.clone()
        } else {
            t.with_timestamp(0)
        });
    }
}

/// Replays `src` into `core` until shutdown, `linger` without viewers, or the end of a corrupt
/// file's valid part; ends the core and returns why.
pub async fn run(core: Arc<Core>, src: FileSource, shutdown: CancellationToken) -> &'static str {
    let start = Instant::now();
    let mut offset: u64 = 0;
    let reason = 'replay: loop {
        for (i, tag) in src.media.iter().enumerate() {
            let ts = offset + u64::from(tag.timestamp().saturating_sub(src.base_ts));
            let due = start + Duration::from_millis(ts);
            if Instant::now() < due {
                // A flush point: what is due now leaves in one write per viewer.
                core.flush();
                tokio::select! {
                    _ = shutdown.cancelled() => break 'replay "shutdown",
                    _ = core.idle() => break 'replay "idle",
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            // The wire carries 32 bits (the extended byte included); the core unwraps them.
            let wire = ts as u32;
            core.push(if wire == tag.timestamp() {
                tag.clone()
            } else {
                tag.with_timestamp(wire)
            });
            if i + 1 == src.media.len() {
                core.flush();
            }
        }
        if let Some(e) = &src.error {
            tracing::error!(stream = %core.name(), error = %e, "live stream file is corrupt after its valid part; ending the stream");
            break 'replay "corrupt source";
        }
        offset += src.loop_ms;
    };
    core.end(reason);
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::{LiveCounters, Settings, StreamCounters};
    use http_body_util::BodyExt;

    #[test]
    fn frame_duration() {
        let t = |k, ts| Tag::new(k, ts, &[0x27, 1]).expect("tag");
        let tags = [
            t(TagKind::Video, 0),
            t(TagKind::Audio, 10),
            t(TagKind::Video, 40),
            t(TagKind::Video, 80),
        ];
        assert_eq!(frame_ms(&tags), 40);
        assert_eq!(frame_ms(&[]), DEFAULT_FRAME_MS);
    }

    fn file(n: u32) -> Bytes {
        let mut out = flv::FLV_HEADER.to_vec();
        out.extend_from_slice(
            Tag::new(TagKind::Video, 0, &[0x17, 0, 0, 0, 0, 1])
                .expect("tag")
                .bytes(),
        );
        for i in 0..n {
            let key = if i % 10 == 0 { 0x17 } else { 0x27 };
            out.extend_from_slice(
                Tag::new(TagKind::Video, i * 40, &[key, 1, 0, 0, 0, 5])
                    .expect("tag")
                    .bytes(),
            );
        }
        Bytes::from(out)
    }

    #[tokio::test(start_paused = true)]
    async fn loops_in_real_time_with_rising_timestamps_then_lingers_out() {
        let src = FileSource::parse(file(20)).expect("parse");
        let settings = Settings {
            gop_cache: true,
            linger: Duration::from_secs(1),
            viewer_queue_bytes: 1 << 20,
            viewer_queue_duration: Duration::from_secs(10),
            max_viewers: 10,
            max_gop_bytes: 1 << 20,
        };
        let core = Core::new(
            "f",
            settings,
            Arc::new(LiveCounters::default()),
            Some(Arc::new(StreamCounters::default())),
        );
        start(&core, &src);
        let mut v = core.attach().expect("attach");
        let t0 = Instant::now();
        let task = tokio::spawn(run(core.clone(), src, CancellationToken::new()));
        let mut parser = flv::Parser::new();
        let mut ts = Vec::new();
        while ts.len() < 45 {
            let f = v.frame().await.expect("frame").expect("data");
            parser.push(&f.into_data().expect("data")).expect("push");
            while let Ok(Some(e)) = parser.next_event() {
                if let flv::Event::Tag(t) = e {
                    if !t.is_sequence_header() {
                        ts.push(t.timestamp());
                    }
                }
            }
        }
        assert!(
            ts.windows(2).all(|w| w[1] > w[0]),
            "rising across loops: {ts:?}"
        );
        assert_eq!(
            ts[20], 800,
            "the second loop follows the first by one frame"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(800),
            "paced in real time"
        );
        drop(v);
        assert_eq!(task.await.expect("task"), "idle");
    }
}
