//! One timestamp rewriter per hub, applied once for all viewers: a viewer's clock never goes
//! back, also across an upstream reconnect or a switch to another node (which restart at
//! arbitrary timestamps).

/// Gap inserted at a splice, about one video frame, so the first new tag follows the last old one.
const SPLICE_GAP_MS: u32 = 40;

/// A node clock jump bigger than these (backwards / forwards between two tags of one connection)
/// is a restart of the node's clock (republish, wrap), not jitter: re-anchor there.
const MAX_BACK_MS: u32 = 1_000;
const MAX_FORWARD_MS: u32 = 10_000;

/// Maps node timestamps to viewer timestamps.
#[derive(Debug, Default)]
pub struct Rewriter {
    /// Output timestamp of the last tag sent to viewers.
    last_out: Option<u32>,
    /// For the current upstream connection: (first input timestamp, output timestamp it maps to).
    anchor: Option<(u32, u32)>,
    /// Input timestamp of the previous tag of this connection.
    last_in: Option<u32>,
}

impl Rewriter {
    /// A new upstream connection starts: its timestamps are re-anchored after the last output.
    pub fn splice(&mut self) {
        self.anchor = None;
        self.last_in = None;
    }

    /// The viewer timestamp for a tag with node timestamp `ts`.
    pub fn map(&mut self, ts: u32) -> u32 {
        if let Some(prev) = self.last_in {
            let jumped =
                ts.saturating_add(MAX_BACK_MS) < prev || ts > prev.saturating_add(MAX_FORWARD_MS);
            if jumped {
                self.anchor = None;
            }
        }
        self.last_in = Some(ts);
        let (in0, out0) = *self.anchor.get_or_insert_with(|| match self.last_out {
            // First connection: keep the node's own clock (no rewrite, no copy).
            None => (ts, ts),
            Some(last) => (ts, last.saturating_add(SPLICE_GAP_MS)),
        });
        let out = out0.saturating_add(ts.saturating_sub(in0));
        // Small jitter (audio and video interleaving) never moves the clock back.
        let out = self.last_out.map_or(out, |last| out.max(last));
        self.last_out = Some(out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_connection_is_unchanged_and_splices_continue() {
        let mut r = Rewriter::default();
        assert_eq!(r.map(5000), 5000);
        assert_eq!(r.map(5040), 5040);
        assert_eq!(r.map(5030), 5040, "never backwards");
        r.splice();
        assert_eq!(
            r.map(0),
            5080,
            "new node starting at 0 continues after the last tag"
        );
        assert_eq!(r.map(40), 5120);
        r.splice();
        assert_eq!(r.map(900_000), 5160);
    }

    #[test]
    fn a_node_clock_restart_within_one_connection_re_anchors() {
        let mut r = Rewriter::default();
        assert_eq!(r.map(7000), 7000);
        assert_eq!(r.map(7040), 7040);
        // Republish: the node's clock starts again at 0.
        assert_eq!(r.map(0), 7080);
        assert_eq!(r.map(40), 7120, "the clock moves on instead of freezing");
        // A forward leap of an hour is re-anchored too.
        assert_eq!(r.map(3_600_000), 7160);
        assert_eq!(r.map(3_600_040), 7200);
        // Small jitter is clamped, not re-anchored.
        assert_eq!(r.map(3_600_020), 7200);
        assert_eq!(r.map(3_600_080), 7240);
    }
}
