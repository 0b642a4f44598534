//! One timestamp rewriter per stream, applied once for all viewers.
//!
//! Arithmetic happens in a wide domain (`i64` input, `u64` output milliseconds); tags carry the
//! output modulo 2³² (the FLV extended timestamp byte holds bits 24..32), so the wire clock wraps
//! the way FLV demuxers expect after ~49.7 days instead of pinning at `u32::MAX`.
//!
//! - Input: node timestamps are unwrapped per connection and per track (a small step across 2³²
//!   is a step, not a restart), so a node whose clock is about to wrap passes through it.
//! - Output: each track (audio, video, script) is monotonic on its own. Audio and video are not
//!   forced onto one clock: the offset between them is the node's A/V sync, and both tracks share
//!   one anchor per connection so that offset is kept.
//! - Only media (audio and video frames) sets the anchor. Script tags and sequence headers take
//!   the current output time: a node that sends them at 0 and its first keyframe at 8000 must not
//!   make the stream leap 8 s forward at a splice.
//! - A new connection (reconnect, failover) is re-anchored after the last output of any track,
//!   so no track's clock goes back. A jump within a connection (the node's clock restarts at 0 on
//!   republish, or leaps forward) is re-anchored the same way; a jump is judged on each track's
//!   own steps (audio against audio, video against video), never across tracks.

use crate::flv::TagKind;

/// Gap inserted at a splice, about one video frame, so the first new tag follows the last old one.
const SPLICE_GAP_MS: u64 = 40;

/// A node clock step bigger than these (backwards / forwards between two tags of one track of one
/// connection) is a restart of the node's clock (republish), not jitter: re-anchor there.
const MAX_BACK_MS: i64 = 1_000;
const MAX_FORWARD_MS: i64 = 10_000;

fn track(kind: TagKind) -> usize {
    match kind {
        TagKind::Audio => 0,
        TagKind::Video => 1,
        TagKind::Script => 2,
    }
}

/// Maps node timestamps to viewer timestamps.
#[derive(Debug, Default)]
pub struct Rewriter {
    /// Output timestamp of the last tag sent, per track.
    last_out: [Option<u64>; 3],
    /// A media tag has been mapped on some connection: later anchors continue after it (before
    /// that, the node's own clock is kept).
    media_seen: bool,
    /// For the current connection, shared by both media tracks: (unwrapped input, output it
    /// maps to). Set by the first media tag (and again at a jump).
    anchor: Option<(i64, u64)>,
    /// Per media track (audio, video): unwrapped input timestamp of its previous tag on this
    /// connection. Steps are judged per track: audio may run seconds behind video.
    last_in: [Option<i64>; 2],
}

impl Rewriter {
    /// A new upstream connection starts: its timestamps are re-anchored after the last output.
    pub fn splice(&mut self) {
        self.anchor = None;
        self.last_in = [None, None];
    }

    /// The latest output of any track (where a new anchor starts after).
    fn latest(&self) -> Option<u64> {
        self.last_out.iter().flatten().copied().max()
    }

    /// The viewer timestamp for a start-up or script tag (metadata, sequence header, cue point)
    /// of `kind`: the current output time, without touching the anchor or the unwrap state.
    /// Script tags take the latest output of any track; a sequence header takes its own track's
    /// (0 before that track's first tag), so each track stays monotonic.
    pub fn current(&mut self, kind: TagKind) -> u64 {
        match kind {
            TagKind::Script => {
                let out = self.latest().unwrap_or(0);
                self.last_out[2] = Some(out);
                out
            }
            TagKind::Audio | TagKind::Video => self.last_out[track(kind)].unwrap_or(0),
        }
    }

    /// The viewer timestamp (wide) for a media (audio or video frame) tag with node timestamp
    /// `ts`. Write it to the tag as `out as u32`: the low 32 bits are what FLV carries. A script
    /// `kind` is mapped as [`Rewriter::current`].
    pub fn map(&mut self, kind: TagKind, ts: u32) -> u64 {
        let t = track(kind);
        if t > 1 {
            return self.current(kind);
        }
        // The step as seen modulo 2³²: crossing the wrap is a small forward step.
        let step_from = |prev: i64| prev + i64::from(ts.wrapping_sub(prev as u32) as i32);
        let wide = match (self.last_in[t], self.anchor) {
            (Some(prev), _) => {
                let wide = step_from(prev);
                if !(-MAX_BACK_MS..=MAX_FORWARD_MS).contains(&(wide - prev)) {
                    // This track's own clock jumped: re-anchor every track together (the other
                    // track follows the new anchor from its next tag, keeping A/V sync).
                    self.anchor = None;
                    self.last_in = [None, None];
                }
                wide
            }
            // A track's first tag on this connection: unwrapped next to the other track's.
            (None, Some((in0, _))) => step_from(in0),
            (None, None) => i64::from(ts),
        };
        self.last_in[t] = Some(wide);
        let (in0, out0) = match self.anchor {
            Some(a) => a,
            None => {
                let a = match self.latest() {
                    Some(last) if self.media_seen => (wide, last + SPLICE_GAP_MS),
                    // First media: keep the node's own clock (no rewrite, no copy).
                    _ => (wide, wide.max(0) as u64),
                };
                self.anchor = Some(a);
                a
            }
        };
        self.media_seen = true;
        let out = (out0 as i64).saturating_add(wide - in0).max(0) as u64;
        let slot = &mut self.last_out[t];
        // Small jitter never moves a track's clock back.
        let out = slot.map_or(out, |last| out.max(last));
        *slot = Some(out);
        out
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    const V: TagKind = TagKind::Video;
    const A: TagKind = TagKind::Audio;

    #[test]
    fn first_connection_is_unchanged_and_splices_continue() {
        let mut r = Rewriter::default();
        assert_eq!(r.map(V, 5000), 5000);
        assert_eq!(r.map(V, 5040), 5040);
        assert_eq!(r.map(V, 5030), 5040, "never backwards within a track");
        r.splice();
        assert_eq!(
            r.map(V, 0),
            5080,
            "new node starting at 0 continues after the last tag"
        );
        assert_eq!(r.map(V, 40), 5120);
        r.splice();
        assert_eq!(r.map(V, 900_000), 5160);
    }

    #[test]
    fn tracks_are_monotonic_each_on_its_own() {
        let mut r = Rewriter::default();
        assert_eq!(r.map(V, 1000), 1000);
        assert_eq!(r.map(A, 990), 990, "audio keeps its own clock (A/V sync)");
        assert_eq!(r.map(A, 980), 990, "but never goes back");
        assert_eq!(r.map(V, 1040), 1040);
    }

    #[test]
    fn a_node_clock_restart_within_one_connection_re_anchors() {
        let mut r = Rewriter::default();
        assert_eq!(r.map(V, 7000), 7000);
        assert_eq!(r.map(V, 7040), 7040);
        // Republish: the node's clock starts again at 0.
        assert_eq!(r.map(V, 0), 7080);
        assert_eq!(r.map(V, 40), 7120, "the clock moves on instead of freezing");
        // A forward leap of an hour is re-anchored too.
        assert_eq!(r.map(V, 3_600_000), 7160);
        assert_eq!(r.map(V, 3_600_040), 7200);
        // Small jitter is clamped, not re-anchored.
        assert_eq!(r.map(V, 3_600_020), 7200);
        assert_eq!(r.map(V, 3_600_080), 7240);
    }

    #[test]
    fn start_up_tags_at_a_splice_take_the_current_time_and_media_anchors() {
        let mut r = Rewriter::default();
        assert_eq!(r.current(TagKind::Script), 0);
        assert_eq!(r.current(V), 0, "sequence header before any media");
        assert_eq!(
            r.map(V, 4960),
            4960,
            "the first media keeps the node's clock"
        );
        assert_eq!(r.map(A, 4990), 4990);
        assert_eq!(r.map(V, 5000), 5000);
        r.splice();
        // The new node: metadata and sequence headers at 0, its first keyframe at 8000.
        assert_eq!(r.current(TagKind::Script), 5000);
        assert_eq!(r.current(V), 5000);
        assert_eq!(r.current(A), 4990);
        assert_eq!(
            r.map(V, 8000),
            5040,
            "the keyframe follows the last tag, no 8 s leap"
        );
        assert_eq!(r.map(A, 8010), 5050);
        assert_eq!(r.map(V, 8040), 5080);
    }

    #[test]
    fn audio_behind_video_is_not_a_jump() {
        // Audio runs 1.5 s behind video, interleaved: 10 s of media.
        let mut r = Rewriter::default();
        let (mut first, mut last) = ([None::<u64>; 2], [0u64; 2]);
        for i in 0..250u32 {
            let v = 100_000 + i * 40;
            for (k, ts) in [(V, v), (A, v - 1500)] {
                let out = r.map(k, ts);
                let t = track(k);
                assert!(out >= last[t], "{k:?} went back: {} → {out}", last[t]);
                first[t].get_or_insert(out);
                last[t] = out;
            }
        }
        for t in 0..2 {
            let advanced = last[t] - first[t].unwrap_or(0);
            assert_eq!(advanced, 249 * 40, "track {t} advances with the media");
        }
        assert_eq!(last[1] - last[0], 1500, "A/V offset kept");
        assert_eq!(last[1], 100_000 + 249 * 40, "never re-anchored");
    }

    #[test]
    fn a_restart_of_both_tracks_re_anchors_them_together() {
        let mut r = Rewriter::default();
        r.map(V, 500_000);
        r.map(A, 500_010);
        r.map(V, 500_040);
        // Republish: both clocks restart at 0.
        assert_eq!(r.map(V, 0), 500_080);
        assert_eq!(r.map(A, 10), 500_090, "audio follows the same anchor");
        assert_eq!(r.map(V, 40), 500_120);
        assert_eq!(r.map(A, 50), 500_130);
    }

    #[test]
    fn the_wrap_is_passed_not_saturated() {
        let mut r = Rewriter::default();
        let start = u32::MAX - 5000;
        let mut last = 0;
        for i in 0..300u32 {
            let out = r.map(V, start.wrapping_add(i * 40));
            assert!(out >= last);
            last = out;
        }
        assert_eq!(last, u64::from(start) + 299 * 40);
        assert!(last > u64::from(u32::MAX), "the wide clock passed 2^32");
        // On the wire: the node's own bits, wrapped.
        assert_eq!(last as u32, start.wrapping_add(299 * 40));
        r.splice();
        assert_eq!(
            r.map(V, 0),
            last + SPLICE_GAP_MS,
            "splices continue past the wrap"
        );
    }
}
