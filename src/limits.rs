//! Per-client limits (`[limits]`): open connections, live viewers and a request rate per IP
//! address. Every map here is bounded: the counters hold one entry per address with at least
//! one open connection or viewer (so never more than `server.max_connections`), removed when
//! the last guard drops; the rate limiter's buckets are pruned periodically and capped at
//! [`MAX_RATE_KEYS`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateSettings;
use crate::error::GatewayError;

/// The key of every per-client limit: the client's address (the connection's peer for the
/// connection cap, the resolved client of `client_addr` for the rest), IPv4-mapped IPv6 folded
/// to IPv4 so a dual-stack listener counts one client once.
pub fn client_key(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Counts something per address (open connections, live viewers) up to a cap.
#[derive(Debug)]
pub struct Counter {
    cap: NonZeroU32,
    /// What is counted, for the error message (`connections`, `live viewers`).
    what: &'static str,
    /// Only addresses with a live guard have an entry: bounded by the guards outstanding.
    map: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted thing; dropping it gives the slot back (and removes the entry at zero).
#[derive(Debug)]
pub struct CountGuard {
    counter: Arc<Counter>,
    ip: IpAddr,
}

impl Counter {
    pub fn new(cap: NonZeroU32, what: &'static str) -> Arc<Self> {
        Arc::new(Self {
            cap,
            what,
            map: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        // A panic while holding this lock cannot leave the counts half-updated (each update is
        // one statement), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `ip`, or says how long to wait when the address is at its cap.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<CountGuard, GatewayError> {
        let ip = client_key(ip);
        let mut map = self.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= self.cap.get() {
            return Err(GatewayError::TooManyRequests {
                what: self.what,
                retry_after: 1,
            });
        }
        *n += 1;
        Ok(CountGuard {
            counter: self.clone(),
            ip,
        })
    }

    /// Addresses currently holding at least one slot.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        let mut map = self.counter.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Most addresses the rate limiter tracks at once. Past it (more distinct clients within one
/// bucket-refill time than this), requests are refused with 429 until the next prune frees
/// entries: the limiter fails closed rather than growing without bound.
pub const MAX_RATE_KEYS: usize = 100_000;

/// How often idle buckets (refilled to full, so equal to a new one) are dropped. A bucket is
/// dropped at the first prune after `(burst + 1) / rate` seconds without a request.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// A token bucket per address (GCRA, from `governor`).
pub struct RateLimit<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    max_keys: usize,
}

impl RateLimit<DefaultClock> {
    pub fn new(settings: RateSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default(), MAX_RATE_KEYS)
    }
}

impl<C: Clock + Clone> RateLimit<C> {
    /// A limiter on `clock` tracking at most `max_keys` addresses (tests use a fake clock).
    pub fn with_clock(settings: RateSettings, clock: C, max_keys: usize) -> Self {
        let quota = Quota::per_second(settings.per_second).allow_burst(settings.burst);
        Self {
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
            max_keys,
        }
    }

    /// Spends one request of `ip`'s bucket, or says how long until one is free.
    pub fn check(&self, ip: IpAddr) -> Result<(), GatewayError> {
        if self.limiter.len() >= self.max_keys {
            return Err(GatewayError::TooManyRequests {
                what: "clients at once",
                retry_after: PRUNE_INTERVAL.as_secs().max(1),
            });
        }
        self.limiter
            .check_key(&client_key(ip))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.clock.now());
                // Round up: retrying after a truncated wait would be refused again.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                GatewayError::TooManyRequests {
                    what: "requests",
                    retry_after: secs.max(1),
                }
            })
    }

    /// Drops buckets that have refilled completely (they behave as new ones would).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn rate(per_second: u32, burst: u32) -> RateSettings {
        RateSettings {
            per_second: NonZeroU32::new(per_second).expect("nonzero"),
            burst: NonZeroU32::new(burst).expect("nonzero"),
        }
    }

    #[test]
    fn counter_caps_per_address_and_forgets_at_zero() {
        let c = Counter::new(NonZeroU32::new(2).expect("nonzero"), "connections");
        let a1 = c.acquire(ip(1)).expect("first");
        let a2 = c.acquire(ip(1)).expect("second");
        let e = c.acquire(ip(1)).expect_err("third is over the cap");
        assert_eq!(e.status_and_code().1, "too_many_requests");
        let b = c.acquire(ip(2)).expect("another address is not affected");
        assert_eq!(c.tracked(), 2);
        drop(a1);
        let a3 = c.acquire(ip(1)).expect("a slot came back");
        drop((a2, a3, b));
        assert_eq!(c.tracked(), 0, "entries go at zero");
    }

    #[test]
    fn a_v4_mapped_v6_peer_counts_as_its_v4_address() {
        let c = Counter::new(NonZeroU32::new(1).expect("nonzero"), "connections");
        let _g = c.acquire("127.0.0.9".parse().expect("ip")).expect("first");
        assert!(c.acquire("::ffff:127.0.0.9".parse().expect("ip")).is_err());
    }

    #[test]
    fn the_bucket_refills_on_the_clock_and_says_when() {
        let clock = FakeRelativeClock::default();
        let r = RateLimit::with_clock(rate(2, 4), clock.clone(), 10);
        for _ in 0..4 {
            r.check(ip(1)).expect("within the burst");
        }
        match r.check(ip(1)) {
            Err(GatewayError::TooManyRequests { retry_after, .. }) => assert_eq!(retry_after, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        r.check(ip(2)).expect("another address has its own bucket");
        // 2 per second: one token every 500 ms.
        clock.advance(Duration::from_millis(499));
        assert!(r.check(ip(1)).is_err(), "not refilled yet");
        clock.advance(Duration::from_millis(1));
        r.check(ip(1)).expect("one token back");
        assert!(r.check(ip(1)).is_err());
    }

    #[test]
    fn a_hundred_thousand_addresses_are_pruned_once_idle() {
        let clock = FakeRelativeClock::default();
        let r = RateLimit::with_clock(rate(10, 20), clock.clone(), MAX_RATE_KEYS + 1);
        for n in 0..100_000 {
            r.check(ip(n)).expect("first request");
        }
        assert_eq!(r.tracked(), 100_000);
        r.prune();
        assert_eq!(r.tracked(), 100_000, "buckets in use are kept");
        // One token spent, refilled after 100 ms; governor keeps a bucket one more refill
        // interval (100 ms at 10/s) before it counts as indistinguishable from a new one.
        clock.advance(Duration::from_millis(199));
        r.prune();
        assert_eq!(r.tracked(), 100_000, "not yet");
        clock.advance(Duration::from_millis(1));
        r.prune();
        assert_eq!(r.tracked(), 0, "full buckets are dropped");
        r.check(ip(7)).expect("a pruned address starts afresh");
    }

    #[test]
    fn at_the_key_cap_requests_are_refused_until_a_prune() {
        let clock = FakeRelativeClock::default();
        let r = RateLimit::with_clock(rate(1, 1), clock.clone(), 3);
        for n in 0..3 {
            r.check(ip(n)).expect("under the cap");
        }
        assert!(r.check(ip(99)).is_err(), "a 4th address is refused");
        assert_eq!(r.tracked(), 3, "the map did not grow");
        clock.advance(Duration::from_secs(2));
        r.prune();
        assert_eq!(r.tracked(), 0);
        r.check(ip(99)).expect("room again after the prune");
    }
}
