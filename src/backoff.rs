//! The one retry backoff: exponential with jitter.
//!
//! Every retry loop (the live pull's reconnects, the Redis registry's reconnects, node health
//! probes) waits through this type. Without jitter, every gateway restarted at once, or every
//! hub that lost the same node, would retry in lock-step and hit the node together; each wait
//! is therefore drawn uniformly from the upper half of the current step ("equal jitter"), so
//! waits stay bounded below (no hot loop) and spread out.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// An exponential backoff with jitter: `min`, doubling per failure, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First step, and the step after [`Backoff::reset`].
    min: Duration,
    /// Largest step.
    max: Duration,
    /// Current step: the next wait is drawn from `[step/2, step]`.
    step: Duration,
    /// xorshift state; seeded per instance so two loops never draw the same sequence.
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `min` and never waiting longer than `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::with_seed(min, max, seed)
    }

    /// Same as [`Backoff::new`] with a fixed seed, for deterministic tests.
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            step: min,
            rng: seed | 1,
        }
    }

    /// The next wait; the step doubles for the wait after it.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let span = (step - half).as_micros().max(1) as u64;
        half + Duration::from_micros(self.random() % (span + 1))
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.step = self.min;
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: plenty for spreading retries, and no dependency.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_and_caps() {
        let mut b = Backoff::with_seed(Duration::from_millis(100), Duration::from_secs(2), 7);
        let mut step = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(Duration::from_secs(2));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn two_loops_spread_out() {
        let mut a = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(1), 1);
        let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(1), 2);
        let same = (0..20).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 3, "jitter draws differ between instances");
    }
}
