//! One timestamp rewriter per stream, applied once for all viewers.
//!
//! Arithmetic happens in a wide domain (`i64` input, `u64` output milliseconds); tags carry the
//! output modulo 2³² (the FLV extended timestamp byte holds bits 24..32), so the wire clock wraps
//! the way FLV demuxers expect after ~49.7 days instead of pinning at `u32::MAX`.
//!
//! - Input: node timestamps are unwrapped per connection (a small step across 2³² is a step,
//!   not a restart), so a node whose clock is about to wrap passes through it.
//! - Output: each track (audio, video, script) is monotonic on its own. Audio and video are not
//!   forced onto one clock: interleaving jitter between them is the node's A/V sync.
//! - A new connection (reconnect, failover) is re-anchored after the last output of any track,
//!   so no track's clock goes back. A jump within a connection (the node's clock restarts at 0 on
//!   republish, or leaps forward) is re-anchored the same way.

use crate::flv::TagKind;

/// Gap inserted at a splice, about one video frame, so the first new tag follows the last old one.
const SPLICE_GAP_MS: u64 = 40;

/// A node clock step bigger than these (backwards / forwards between two tags of one connection)
/// is a restart of the node's clock (republish), not jitter: re-anchor there.
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
    /// For the current connection: (first unwrapped input, output it maps to).
    anchor: Option<(i64, u64)>,
    /// Unwrapped input timestamp of the previous tag of this connection.
    last_in: Option<i64>,
}

impl Rewriter {
    /// A new upstream connection starts: its timestamps are re-anchored after the last output.
    pub fn splice(&mut self) {
        self.anchor = None;
        self.last_in = None;
    }

    /// The latest output of any track (where a new anchor starts after).
    fn latest(&self) -> Option<u64> {
        self.last_out.iter().flatten().copied().max()
    }

    /// The viewer timestamp (wide) for a `kind` tag with node timestamp `ts`. Write it to the tag
    /// as `out as u32`: the low 32 bits are what FLV carries.
    pub fn map(&mut self, kind: TagKind, ts: u32) -> u64 {
        let wide = match self.last_in {
            None => i64::from(ts),
            Some(prev) => {
                // The step as seen modulo 2³²: crossing the wrap is a small forward step.
                let step = i64::from(ts.wrapping_sub(prev as u32) as i32);
                if !(-MAX_BACK_MS..=MAX_FORWARD_MS).contains(&step) {
                    self.anchor = None;
                }
                prev + step
            }
        };
        self.last_in = Some(wide);
        let latest = self.latest();
        let (in0, out0) = *self.anchor.get_or_insert_with(|| match latest {
            // First connection: keep the node's own clock (no rewrite, no copy).
            None => (wide, wide.max(0) as u64),
            Some(last) => (wide, last + SPLICE_GAP_MS),
        });
        let out = (out0 as i64).saturating_add(wide - in0).max(0) as u64;
        let slot = &mut self.last_out[track(kind)];
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
