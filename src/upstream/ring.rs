//! The consistent-hash ring of a `hash` group: each member owns [`POINTS_PER_WEIGHT`] points per
//! unit of weight, placed by hashing the member's id (never its position in the list), so
//! removing a member moves only the keys it owned and adding one takes only its own share.
//!
//! A key starts at the first point at or after its hash and walks clockwise; [`Ring::walk`]
//! yields each member once, in the order met. The balancer takes the first member on that walk
//! that is healthy and under its load bound (`balance`): a key stays on one member while it
//! can, and spills to the next one on the ring when not.
//!
//! The hash is FNV-1a (64 bit) followed by a splitmix64 finaliser: fixed, so a key lands on
//! the same member in every gateway process and across restarts (`std`'s hasher promises
//! neither), and well mixed, so near-identical paths do not cluster.

/// Ring points per unit of weight (ketama uses 160 per server): enough that each member's share
/// is within a few percent of its weight's.
pub const POINTS_PER_WEIGHT: u32 = 160;

/// The hash of a key or a ring point.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV alone leaves short keys' high bits poorly mixed.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Points sorted by hash, each naming a member by index.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, u32)>,
    members: usize,
}

impl Ring {
    /// A ring over `members` (id, weight), indices as given. Weights of 0 count as 1.
    pub fn new<'a>(members: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let mut points = Vec::new();
        let mut n = 0;
        for (i, (id, weight)) in members.into_iter().enumerate() {
            n += 1;
            for j in 0..weight.max(1) * POINTS_PER_WEIGHT {
                points.push((hash(format!("{id}#{j}").as_bytes()), i as u32));
            }
        }
        // Two members on one point (2^-64 odds) are ordered by index: still deterministic.
        points.sort_unstable();
        Self { points, members: n }
    }

    /// The members in the order `key_hash` meets them clockwise, each once.
    pub fn walk(&self, key_hash: u64) -> Walk<'_> {
        let start = self.points.partition_point(|(h, _)| *h < key_hash);
        Walk {
            ring: self,
            at: start,
            stepped: 0,
            seen: vec![false; self.members],
            left: self.members,
        }
    }

    /// The member `key_hash` lands on with nothing skipped.
    #[cfg(test)]
    pub fn owner(&self, key_hash: u64) -> Option<usize> {
        self.walk(key_hash).next()
    }
}

/// The iterator of [`Ring::walk`]: at most one lap of the ring.
pub struct Walk<'a> {
    ring: &'a Ring,
    at: usize,
    stepped: usize,
    seen: Vec<bool>,
    left: usize,
}

impl Iterator for Walk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let len = self.ring.points.len();
        while self.left > 0 && self.stepped < len {
            let (_, m) = self.ring.points[(self.at + self.stepped) % len];
            self.stepped += 1;
            let m = m as usize;
            if !self.seen[m] {
                self.seen[m] = true;
                self.left -= 1;
                return Some(m);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| hash(format!("/files/video-{i}.mp4").as_bytes()))
            .collect()
    }

    #[test]
    fn the_hash_is_fixed() {
        // Pinned: a key must land on the same member in every process and version.
        assert_eq!(hash(b"/files/a.mp4"), 0x388f_c5e2_8b0a_235e);
        assert_eq!(hash(b"/a"), hash(b"/a"));
        assert_ne!(hash(b"/a"), hash(b"/b"));
    }

    #[test]
    fn a_walk_meets_every_member_once() {
        let ring = Ring::new([("a", 1), ("b", 2), ("c", 1)]);
        for k in keys(200) {
            let mut seen: Vec<usize> = ring.walk(k).collect();
            assert_eq!(seen.len(), 3);
            seen.sort_unstable();
            assert_eq!(seen, [0, 1, 2]);
        }
        assert!(Ring::new(std::iter::empty()).walk(7).next().is_none());
    }

    #[test]
    fn shares_follow_the_weights() {
        let ring = Ring::new([("a", 1), ("b", 1), ("c", 1)]);
        let mut count = [0usize; 3];
        for k in keys(30_000) {
            count[ring.owner(k).expect("owner")] += 1;
        }
        for c in count {
            // 10,000 each ± 15 % (160 points per member).
            assert!((8_500..=11_500).contains(&c), "{count:?}");
        }
        let ring = Ring::new([("a", 1), ("b", 2), ("c", 3)]);
        let mut count = [0usize; 3];
        for k in keys(60_000) {
            count[ring.owner(k).expect("owner")] += 1;
        }
        for (i, c) in count.into_iter().enumerate() {
            let want = 10_000 * (i + 1);
            assert!(c.abs_diff(want) * 100 <= want * 15, "{count:?}");
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_keys() {
        let three = Ring::new([("a", 1), ("b", 1), ("c", 1)]);
        let two = Ring::new([("a", 1), ("c", 1)]); // "b" removed: "c" is now index 1
        let name3 = ["a", "b", "c"];
        let name2 = ["a", "c"];
        let (mut moved, mut of_b) = (0, 0);
        for k in keys(3_000) {
            let before = name3[three.owner(k).expect("owner")];
            let after = name2[two.owner(k).expect("owner")];
            if before == "b" {
                of_b += 1;
                assert_ne!(after, "b");
                moved += 1;
            } else {
                assert_eq!(before, after, "a key of a remaining member moved");
            }
        }
        // Exactly b's keys moved: about a third.
        assert_eq!(moved, of_b);
        assert!((800..=1_200).contains(&moved), "{moved}");
        // And b's keys went to the member next on the ring: its walk's second member.
        for k in keys(500) {
            let mut w = three.walk(k);
            if w.next() == Some(1) {
                let next = name3[w.next().expect("second")];
                assert_eq!(name2[two.owner(k).expect("owner")], next);
            }
        }
    }

    #[test]
    fn adding_a_member_takes_only_its_own_share() {
        let two = Ring::new([("a", 1), ("b", 1)]);
        let three = Ring::new([("a", 1), ("b", 1), ("new", 1)]);
        for k in keys(3_000) {
            let after = three.owner(k).expect("owner");
            if after != 2 {
                assert_eq!(two.owner(k), Some(after));
            }
        }
    }
}
