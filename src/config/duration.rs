//! Durations as written in the config: "500ms", "30s", "2m", "1h".

use std::time::Duration;

use super::{invalid, ConfigError};

/// Parses "30s", "500ms", "2m", "1h" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// The longest duration any setting accepts. Timers add durations to `Instant`s, which panics
/// on overflow: a typo such as an extra dozen digits must be a config error, not a crash.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The setting `key` as a duration, `default` when absent.
pub(super) fn duration(
    key: &str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(s) = v else {
        return Ok(default);
    };
    let d = parse_duration(s).ok_or_else(|| {
        invalid(
            key,
            format!("{s:?} is not a duration (use e.g. \"500ms\", \"30s\", \"2m\")"),
        )
    })?;
    if d > MAX_DURATION {
        return Err(invalid(key, format!("{s:?} is longer than 30 days")));
    }
    Ok(d)
}
