//! The `Date` header's value, formatted once a second per thread rather than per answer.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `Tue, 01 Dec 2026 03:04:05 GMT`.
const LEN: usize = 29;

struct Cached {
    second: u64,
    value: [u8; LEN],
}

thread_local! {
    static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, value: [b' '; LEN] }) };
}

/// Appends the current date to `out`.
pub(crate) fn extend(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != second {
            let s = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            if s.len() == LEN {
                c.value.copy_from_slice(s.as_bytes());
                c.second = second;
            } else {
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&c.value);
    });
}
