//! Request ids: propagated from `X-Request-Id` when the caller sent a sane one, generated
//! otherwise. The id is in the access log line, the error body and the response header, so one
//! string ties a viewer's report to the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header carrying the id both ways. A `HeaderName`, not a `&str`: a string name is parsed
/// again by every `get` and `insert` that uses it.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

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

/// Sequence of generated ids.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Whether a caller's id is short and plain enough to be propagated.
fn is_plain(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// The caller's id if it is short and plain, else a fresh one: 16 hex digits of process prefix
/// and 8 of sequence. A propagated id shares the caller's bytes and a fresh one is formatted
/// without an intermediate `String`, so the id costs at most one allocation however many
/// headers and log fields carry it. Always ASCII, so `to_str` on it succeeds.
pub fn from_headers(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&HEADER).filter(|v| is_plain(v.as_bytes())) {
        return v.clone();
    }
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 24];
    let (hi, lo) = buf.split_at_mut(16);
    let p = prefix();
    for (i, b) in hi.iter_mut().enumerate() {
        *b = HEX[((p >> (60 - 4 * i)) & 0xf) as usize];
    }
    for (i, b) in lo.iter_mut().enumerate() {
        *b = HEX[((n >> (28 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
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
        let fresh = from_headers(&h);
        let s = fresh.to_str().expect("ascii");
        assert_eq!(s.len(), 24);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
        let next = from_headers(&h);
        assert_ne!(next, fresh);
        assert_eq!(
            next.as_bytes()[..16],
            fresh.as_bytes()[..16],
            "same process prefix"
        );
    }
}
