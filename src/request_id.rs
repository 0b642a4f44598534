//! Request ids: propagated from `X-Request-Id` when the caller sent a sane one, generated
//! otherwise. The id is in the access log line, the error body and the response header, so one
//! string ties a viewer's report to the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::HeaderMap;

/// The header carrying the id both ways.
pub const HEADER: &str = "x-request-id";

/// A per-process random prefix so ids from several gateways do not collide.
fn prefix() -> u64 {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish()
    })
}

/// A fresh id: 16 hex digits of process prefix and 8 of sequence.
pub fn generate() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:08x}", prefix(), n & 0xffff_ffff)
}

/// The caller's id if it is short and plain, else a new one.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(generate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagates_plain_ids_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, "abc-123".parse().expect("hv"));
        assert_eq!(from_headers(&h), "abc-123");
        h.insert(HEADER, "a b".parse().expect("hv"));
        assert_ne!(from_headers(&h), "a b");
        assert_ne!(generate(), generate());
    }
}
