//! `[limits]`: per-client (per IP address) limits. Every one is off unless set.

use std::num::NonZeroU32;

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub connections_per_ip: Option<u32>,
    pub requests_per_second_per_ip: Option<u32>,
    pub burst: Option<u32>,
    pub live_viewers_per_ip: Option<u32>,
}

/// Validated `[limits]`; `None` means "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// Connections one address may hold open; more are answered 429 and closed.
    pub connections_per_ip: Option<NonZeroU32>,
    /// Sustained requests per second per address, with `burst` requests allowed at once.
    pub rate: Option<RateSettings>,
    /// Live viewers (open live bodies) one address may hold.
    pub live_viewers_per_ip: Option<NonZeroU32>,
}

/// A token bucket per address: refills `per_second`, holds at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

fn positive(key: &str, v: Option<u32>) -> Result<Option<NonZeroU32>, ConfigError> {
    match v {
        None => Ok(None),
        Some(n) => NonZeroU32::new(n).map(Some).ok_or_else(|| {
            invalid(
                format!("limits.{key}"),
                "must be at least 1 (leave the key out for no limit)",
            )
        }),
    }
}

/// Validates `[limits]`.
pub(super) fn validate(raw: &RawLimits) -> Result<LimitSettings, ConfigError> {
    let per_second = positive("requests_per_second_per_ip", raw.requests_per_second_per_ip)?;
    let burst = positive("burst", raw.burst)?;
    let rate = match (per_second, burst) {
        (None, Some(_)) => {
            return Err(invalid(
                "limits.burst",
                "needs `requests_per_second_per_ip` (the burst is that limit's bucket size)",
            ))
        }
        (None, None) => None,
        (Some(per_second), burst) => Some(RateSettings {
            per_second,
            // A burst below the rate would refuse a client keeping to the rate.
            burst: burst.unwrap_or(per_second),
        }),
    };
    if let Some(r) = rate {
        if r.burst < r.per_second {
            return Err(invalid(
                "limits.burst",
                "must be at least requests_per_second_per_ip",
            ));
        }
    }
    Ok(LimitSettings {
        connections_per_ip: positive("connections_per_ip", raw.connections_per_ip)?,
        rate,
        live_viewers_per_ip: positive("live_viewers_per_ip", raw.live_viewers_per_ip)?,
    })
}
