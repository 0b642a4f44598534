//! What a newcomer needs before live tags: the FLV header, the latest metadata and sequence
//! headers, and (optionally) the tags since the latest keyframe so its player can decode a
//! picture at once.

use bytes::Bytes;

use crate::flv::{Tag, TagKind};

/// The stream's start-up tags, replaced as the node sends new ones.
#[derive(Debug, Default, Clone)]
pub struct InitCache {
    /// Our FLV file header for viewers (13 bytes), with the node's audio/video flags.
    pub header: Option<Bytes>,
    pub metadata: Option<Tag>,
    pub video_seq: Option<Tag>,
    pub audio_seq: Option<Tag>,
}

impl InitCache {
    /// Records `tag` if it is a start-up tag. Returns `Some(changed)` for start-up tags (changed:
    /// it differs from what was cached, so viewers must see it) and `None` for media tags.
    pub fn update(&mut self, tag: &Tag) -> Option<bool> {
        let slot = match init_index(tag)? {
            0 => &mut self.metadata,
            1 => &mut self.video_seq,
            _ => &mut self.audio_seq,
        };
        let changed = slot.as_ref().is_none_or(|old| old.data() != tag.data());
        *slot = Some(tag.clone());
        Some(changed)
    }

    /// Forgets the start-up tags (not the header): a new source connection (failover) sends its
    /// own, and a track the new node lacks must not be announced to newcomers.
    pub fn clear_tags(&mut self) {
        self.metadata = None;
        self.video_seq = None;
        self.audio_seq = None;
    }

    /// The start-up tags in the order a player expects them.
    #[cfg(test)]
    pub fn tags(&self) -> impl Iterator<Item = &Tag> {
        [&self.metadata, &self.video_seq, &self.audio_seq]
            .into_iter()
            .flatten()
    }
}

/// Which start-up slot `tag` fills: 0 metadata, 1 video sequence header, 2 audio sequence
/// header; `None` for media tags.
pub fn init_index(tag: &Tag) -> Option<usize> {
    if tag.is_metadata() {
        Some(0)
    } else if tag.is_sequence_header() {
        match tag.kind() {
            TagKind::Video => Some(1),
            TagKind::Audio => Some(2),
            TagKind::Script => None,
        }
    } else {
        None
    }
}

/// Tags from the latest video keyframe on, bounded in bytes (`max_gop_bytes`), each with its
/// wide output timestamp (the viewer queue measures lag in that domain).
#[derive(Debug, Default)]
pub struct GopCache {
    tags: Vec<(Tag, u64)>,
    bytes: usize,
    /// False while the current GOP outgrew the bound: newcomers then wait for a keyframe.
    valid: bool,
    /// The current GOP holds a video keyframe: video inter frames may follow. A GOP that
    /// started on audio (no video yet on the connection) keeps no video until a keyframe.
    video_key: bool,
}

impl GopCache {
    /// Adds a media tag. `keyframe` (a resume point: a video keyframe, or audio on a stream that
    /// has shown no video) starts a new GOP. A video inter frame is kept only after a video
    /// keyframe, so a newcomer's first video is always a keyframe.
    pub fn push(&mut self, tag: &Tag, ts: u64, keyframe: bool, max_bytes: usize) {
        if keyframe {
            self.tags.clear();
            self.bytes = 0;
            self.valid = true;
            self.video_key = false;
        }
        if !self.valid {
            return;
        }
        if tag.kind() == TagKind::Video {
            if tag.is_keyframe() {
                self.video_key = true;
            } else if !self.video_key {
                return;
            }
        }
        if self.bytes + tag.len() > max_bytes {
            self.tags.clear();
            self.bytes = 0;
            self.valid = false;
            return;
        }
        self.bytes += tag.len();
        self.tags.push((tag.clone(), ts));
    }

    /// The cached GOP, starting on a keyframe; empty if none is usable.
    pub fn tags(&self) -> &[(Tag, u64)] {
        if self.valid {
            &self.tags
        } else {
            &[]
        }
    }

    /// Forgets everything (the upstream changed: old frames must not precede new headers).
    pub fn clear(&mut self) {
        self.tags.clear();
        self.bytes = 0;
        self.valid = false;
        self.video_key = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(ts: u32, key: bool) -> Tag {
        let first = if key { 0x17 } else { 0x27 };
        Tag::new(TagKind::Video, ts, &[first, 1, 0, 0, 0, 9, 9]).expect("tag")
    }

    #[test]
    fn gop_starts_on_keyframe_and_is_bounded() {
        let mut g = GopCache::default();
        g.push(&video(0, false), 0, false, 1000);
        assert!(g.tags().is_empty(), "nothing before the first keyframe");
        g.push(&video(40, true), 40, true, 1000);
        g.push(&video(80, false), 80, false, 1000);
        assert_eq!(g.tags().len(), 2);
        assert!(g.tags()[0].0.is_keyframe());
        // Outgrowing the bound invalidates the GOP until the next keyframe.
        g.push(&video(120, false), 120, false, 30);
        assert!(g.tags().is_empty());
        g.push(&video(160, false), 160, false, 1000);
        assert!(g.tags().is_empty());
        g.push(&video(200, true), 200, true, 1000);
        assert_eq!(g.tags().len(), 1);
    }

    #[test]
    fn a_gop_started_on_audio_keeps_no_video_before_a_keyframe() {
        let audio = Tag::new(TagKind::Audio, 0, &[0xAF, 1, 9]).expect("tag");
        let mut g = GopCache::default();
        g.push(&audio, 0, true, 1000); // no video yet: audio is a resume point
        g.push(&video(40, false), 40, false, 1000);
        assert_eq!(g.tags().len(), 1, "a P-frame without its IDR is not cached");
        assert!(g.tags().iter().all(|(t, _)| t.kind() == TagKind::Audio));
        g.push(&video(80, true), 80, true, 1000);
        g.push(&video(120, false), 120, false, 1000);
        assert_eq!(g.tags().len(), 2);
    }

    #[test]
    fn init_cache_reports_changes() {
        let mut c = InitCache::default();
        let seq = Tag::new(TagKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, 2]).expect("tag");
        assert_eq!(c.update(&seq), Some(true));
        assert_eq!(
            c.update(&seq.with_timestamp(500)),
            Some(false),
            "same config, new timestamp"
        );
        let seq2 = Tag::new(TagKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, 3]).expect("tag");
        assert_eq!(c.update(&seq2), Some(true));
        assert_eq!(c.update(&video(0, true)), None);
        assert_eq!(c.tags().count(), 1);
    }
}
