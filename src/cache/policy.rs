//! HTTP caching semantics of a node's answer: may a shared cache keep it, and does the node
//! say for how long (RFC 9111).
//!
//! Kept: 200 (206 for a slice asked with `Range`), and 404 briefly. Never kept: anything else
//! (a 5xx is never cached as a success, nor at all), `no-store`, `private`, `Set-Cookie`, and a
//! `Vary` on anything but `Accept-Encoding` (fills are fetched without `Accept-Encoding`, so
//! that one variant is the only one there is). `no-cache` on a `vod` route means "revalidate
//! every time" (lifetime 0); on an `hls` route it is what nginx-rtmp and most packagers send
//! for every playlist, and the HLS rules decide instead, which is the point of the cache.

use std::time::Duration;

use http::header::{self, HeaderMap};

use crate::config::CacheMode;

/// The `Cache-Control` directives that matter to a shared cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub private: bool,
    pub no_cache: bool,
    /// `s-maxage`, else `max-age`.
    pub max_age: Option<Duration>,
}

/// Reads every `Cache-Control` line.
pub fn directives(h: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    let mut max_age = None;
    let mut s_maxage = None;
    for v in h.get_all(header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let secs = || {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                // `private="field"` limits only fields; treat it whole, to be safe.
                "private" => d.private = true,
                "no-cache" => d.no_cache = true,
                "max-age" => max_age = secs(),
                "s-maxage" => s_maxage = secs(),
                _ => {}
            }
        }
    }
    d.max_age = s_maxage.or(max_age);
    d
}

/// Why an answer is not kept, or `None` when it may be.
pub fn refusal(status: u16, h: &HeaderMap, slice: bool) -> Option<&'static str> {
    let wanted = if slice { 206 } else { 200 };
    if status != wanted && status != 404 {
        return Some("status");
    }
    let d = directives(h);
    if d.no_store {
        return Some("no-store");
    }
    if d.private {
        return Some("private");
    }
    if h.contains_key(header::SET_COOKIE) {
        return Some("set-cookie");
    }
    let vary_other = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|f| !f.is_empty() && !f.eq_ignore_ascii_case("accept-encoding"));
    if vary_other {
        return Some("vary");
    }
    None
}

/// How long the answer is fresh: the node's `max-age` when it gives one, else `rule`.
pub fn lifetime(mode: CacheMode, h: &HeaderMap, rule: Duration) -> Duration {
    let d = directives(h);
    match (d.max_age, mode, d.no_cache) {
        (Some(age), _, _) => age,
        (None, CacheMode::Vod, true) => Duration::ZERO,
        _ => rule,
    }
}

/// Whether the answer can be revalidated with a conditional request once stale.
pub fn has_validators(h: &HeaderMap) -> bool {
    h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn what_is_kept() {
        assert_eq!(refusal(200, &h(&[]), false), None);
        assert_eq!(refusal(404, &h(&[]), false), None);
        assert_eq!(refusal(503, &h(&[]), false), Some("status"));
        assert_eq!(refusal(206, &h(&[]), false), Some("status"));
        assert_eq!(refusal(206, &h(&[]), true), None);
        assert_eq!(refusal(200, &h(&[]), true), Some("status"));
        assert_eq!(
            refusal(200, &h(&[("cache-control", "public, no-store")]), false),
            Some("no-store")
        );
        assert_eq!(
            refusal(200, &h(&[("cache-control", "private")]), false),
            Some("private")
        );
        assert_eq!(refusal(200, &h(&[("vary", "Origin")]), false), Some("vary"));
        assert_eq!(
            refusal(200, &h(&[("vary", "Accept-Encoding")]), false),
            None
        );
        assert_eq!(
            refusal(200, &h(&[("set-cookie", "a=b")]), false),
            Some("set-cookie")
        );
    }

    #[test]
    fn lifetimes() {
        let rule = Duration::from_secs(7);
        let max = h(&[("cache-control", "max-age=30, s-maxage=60")]);
        assert_eq!(
            lifetime(CacheMode::Hls, &max, rule),
            Duration::from_secs(60)
        );
        let nc = h(&[("cache-control", "no-cache")]);
        assert_eq!(lifetime(CacheMode::Hls, &nc, rule), rule);
        assert_eq!(lifetime(CacheMode::Vod, &nc, rule), Duration::ZERO);
        assert_eq!(lifetime(CacheMode::Vod, &h(&[]), rule), rule);
    }
}
