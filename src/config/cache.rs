//! `[cache]`: the HLS / VOD cache's bounds and lifetimes (routes opt in with
//! `cache = "hls"` or `cache = "vod"`). See docs/cache.md.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub memory_bytes: Option<u64>,
    pub max_entries: Option<usize>,
    pub max_object_bytes: Option<u64>,
    pub media_playlist_fraction: Option<f64>,
    pub multivariant_ttl: Option<String>,
    pub vod_playlist_ttl: Option<String>,
    pub segment_ttl: Option<String>,
    pub vod_ttl: Option<String>,
    pub not_found_ttl: Option<String>,
    pub slice_bytes: Option<u64>,
    pub ignore_params: Option<Vec<String>>,
    pub disk_dir: Option<std::path::PathBuf>,
    pub disk_bytes: Option<u64>,
}

/// Validated `[cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Most body bytes held in memory, in-flight fills included; least recently used objects
    /// go first.
    pub memory_bytes: u64,
    /// Most objects (and in-flight fills) held.
    pub max_entries: usize,
    /// An object growing past this stops being cached: its waiters still get it streamed, then
    /// it is forgotten. VOD files are cached as slices, so only unsliceable answers hit this.
    pub max_object_bytes: u64,
    /// A live media playlist is fresh for this fraction of its target duration (½ per the HLS
    /// spec draft).
    pub media_playlist_fraction: f64,
    /// How long a multivariant playlist is fresh (it changes when renditions do, rarely).
    pub multivariant_ttl: Duration,
    /// How long an ended (`#EXT-X-ENDLIST`) or VOD playlist is fresh.
    pub vod_playlist_ttl: Duration,
    /// How long a live segment or part is fresh: it never changes once written, and players
    /// stop asking once it leaves the playlist.
    pub segment_ttl: Duration,
    /// How long a `vod` route's object (slice) is fresh unless the node says otherwise.
    pub vod_ttl: Duration,
    /// How long a 404 is kept when no target duration says better (HLS routes use 4 × the
    /// stream's target duration).
    pub not_found_ttl: Duration,
    /// `vod` routes fetch and cache files in slices of this many bytes (nginx `slice`).
    pub slice_bytes: u64,
    /// Query parameters left out of the cache key and of the node's request, besides the
    /// credentials the gateway always strips (player session ids, cache busters).
    pub ignore_params: Vec<String>,
    /// The disk tier for VOD slices (`None`: memory only). Read at start only.
    pub disk_dir: Option<std::path::PathBuf>,
    /// Most bytes the disk tier holds.
    pub disk_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            memory_bytes: 256 * 1024 * 1024,
            max_entries: 20_000,
            max_object_bytes: 32 * 1024 * 1024,
            media_playlist_fraction: 0.5,
            multivariant_ttl: Duration::from_secs(30),
            vod_playlist_ttl: Duration::from_secs(300),
            segment_ttl: Duration::from_secs(120),
            vod_ttl: Duration::from_secs(600),
            not_found_ttl: Duration::from_secs(2),
            slice_bytes: 1024 * 1024,
            ignore_params: Vec::new(),
            disk_dir: None,
            disk_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

/// Validates `[cache]`.
pub(super) fn validate(raw: &RawCache) -> Result<CacheSettings, ConfigError> {
    let d = CacheSettings::default();
    let memory_bytes = raw.memory_bytes.unwrap_or(d.memory_bytes);
    if memory_bytes < 64 * 1024 {
        return Err(invalid("cache.memory_bytes", "must be at least 65536"));
    }
    let max_entries = raw.max_entries.unwrap_or(d.max_entries);
    if max_entries == 0 {
        return Err(invalid("cache.max_entries", "must be at least 1"));
    }
    let max_object_bytes = raw
        .max_object_bytes
        .unwrap_or(d.max_object_bytes.min(memory_bytes));
    if max_object_bytes == 0 || max_object_bytes > memory_bytes {
        return Err(invalid(
            "cache.max_object_bytes",
            "must be at least 1 and at most cache.memory_bytes",
        ));
    }
    let media_playlist_fraction = raw
        .media_playlist_fraction
        .unwrap_or(d.media_playlist_fraction);
    if !(media_playlist_fraction > 0.0 && media_playlist_fraction <= 1.0) {
        return Err(invalid(
            "cache.media_playlist_fraction",
            "must be above 0 and at most 1 (a playlist older than its target duration is stale)",
        ));
    }
    let slice_bytes = raw.slice_bytes.unwrap_or(d.slice_bytes);
    if slice_bytes < 4096 || slice_bytes > max_object_bytes {
        return Err(invalid(
            "cache.slice_bytes",
            "must be at least 4096 and at most cache.max_object_bytes",
        ));
    }
    Ok(CacheSettings {
        memory_bytes,
        max_entries,
        max_object_bytes,
        media_playlist_fraction,
        multivariant_ttl: duration(
            "cache.multivariant_ttl",
            &raw.multivariant_ttl,
            d.multivariant_ttl,
        )?,
        vod_playlist_ttl: duration(
            "cache.vod_playlist_ttl",
            &raw.vod_playlist_ttl,
            d.vod_playlist_ttl,
        )?,
        segment_ttl: duration("cache.segment_ttl", &raw.segment_ttl, d.segment_ttl)?,
        vod_ttl: duration("cache.vod_ttl", &raw.vod_ttl, d.vod_ttl)?,
        not_found_ttl: duration("cache.not_found_ttl", &raw.not_found_ttl, d.not_found_ttl)?,
        slice_bytes,
        ignore_params: validate_params(&raw.ignore_params)?,
        disk_dir: match &raw.disk_dir {
            Some(d) if d.as_os_str().is_empty() => {
                return Err(invalid("cache.disk_dir", "cannot be empty"))
            }
            d => d.clone(),
        },
        disk_bytes: match raw.disk_bytes {
            Some(_) if raw.disk_dir.is_none() => {
                return Err(invalid("cache.disk_bytes", "needs cache.disk_dir"))
            }
            Some(n) if n < slice_bytes => {
                return Err(invalid(
                    "cache.disk_bytes",
                    "must hold at least one slice (cache.slice_bytes)",
                ))
            }
            Some(n) => n,
            None => d.disk_bytes,
        },
    })
}

fn validate_params(raw: &Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let list = raw.clone().unwrap_or_default();
    for (i, p) in list.iter().enumerate() {
        let bad = |b: u8| matches!(b, b'&' | b'=' | b'?' | b'#') || b.is_ascii_whitespace();
        if p.is_empty() || p.bytes().any(bad) {
            return Err(invalid(
                format!("cache.ignore_params[{i}]"),
                format!("{p:?} is not a query parameter name"),
            ));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn defaults_and_errors_name_the_key() {
        let s = parse("").expect("empty config");
        assert_eq!(s.cache, super::CacheSettings::default());
        let s = parse("[cache]\nmemory_bytes = 1048576\nmax_entries = 10\nslice_bytes = 65536\nsegment_ttl = \"30s\"\n")
            .expect("valid");
        assert_eq!(s.cache.memory_bytes, 1 << 20);
        assert_eq!(s.cache.max_object_bytes, 1 << 20);
        assert_eq!(s.cache.segment_ttl, std::time::Duration::from_secs(30));
        for (text, key) in [
            ("memory_bytes = 10", "cache.memory_bytes"),
            ("max_entries = 0", "cache.max_entries"),
            (
                "media_playlist_fraction = 2.0",
                "cache.media_playlist_fraction",
            ),
            ("slice_bytes = 10", "cache.slice_bytes"),
            ("segment_ttl = \"soon\"", "cache.segment_ttl"),
            ("ignore_params = [\"a=b\"]", "cache.ignore_params[0]"),
            ("disk_bytes = 100000000", "cache.disk_bytes"),
            ("disk_dir = \"/tmp/x\"\ndisk_bytes = 10", "cache.disk_bytes"),
            ("disk_dir = \"\"", "cache.disk_dir"),
            (
                "memory_bytes = 100000\nmax_object_bytes = 200000",
                "cache.max_object_bytes",
            ),
        ] {
            let e = parse(&format!("[cache]\n{text}\n"))
                .expect_err(text)
                .to_string();
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn routes_opt_in_on_proxy_and_auto_only() {
        let base = "[[nodes]]\nid = \"a\"\nurl = \"http://127.0.0.1:9\"\n";
        let s = parse(&format!(
            "{base}[[routes]]\npath = \"/hls/{{*rest}}\"\naction = \"proxy\"\nto = \"a\"\ncache = \"hls\"\n"
        ))
        .expect("valid");
        assert_eq!(s.routes[0].cache, Some(crate::config::CacheMode::Hls));
        let e = parse(&format!(
            "{base}[[routes]]\npath = \"/x/{{*rest}}\"\naction = \"redirect\"\nto = \"a\"\ncache = \"vod\"\n"
        ))
        .expect_err("redirect")
        .to_string();
        assert!(e.starts_with("routes[0].cache"), "{e}");
        let e = parse(&format!(
            "{base}[[routes]]\npath = \"/x/{{*rest}}\"\naction = \"proxy\"\nto = \"a\"\ncache = \"all\"\n"
        ))
        .expect_err("bad mode")
        .to_string();
        assert!(e.starts_with("routes[0].cache"), "{e}");
    }
}
