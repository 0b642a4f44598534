//! How long an answer stays fresh, by what it is. HLS rules follow the spec draft's advice to
//! caches: a blocking playlist reload's answer for 6 × the target duration, a 404 for 4 ×,
//! other media playlists for ½ × (`media_playlist_fraction`); the multivariant playlist and
//! ended playlists much longer; segments and parts, which never change once written, for
//! `segment_ttl`. `vod` routes keep everything for `vod_ttl`. An explicit `max-age` from the
//! node always wins (see [`super::policy`]).

use std::time::Duration;

use crate::config::{CacheMode, CacheSettings};
use crate::proxy::playlist;

/// What the cache needs to know about a playlist.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Playlist {
    /// Lists variants (`#EXT-X-STREAM-INF`): the multivariant playlist.
    pub multivariant: bool,
    /// `#EXT-X-ENDLIST` or `#EXT-X-PLAYLIST-TYPE:VOD`: it will not change.
    pub ended: bool,
    /// `#EXT-X-TARGETDURATION`.
    pub target_duration: Option<Duration>,
    /// `#EXT-X-MEDIA-SEQUENCE` (0 when absent, as the spec says).
    pub media_sequence: u64,
}

/// Reads a playlist body; `None` when it is not an M3U playlist.
pub fn playlist(body: &[u8]) -> Option<Playlist> {
    let text = std::str::from_utf8(body).ok()?;
    if !playlist::is_m3u(text) {
        return None;
    }
    let shape = playlist::shape(text);
    let mut p = Playlist {
        multivariant: shape.master,
        ended: shape.ended,
        target_duration: None,
        media_sequence: 0,
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|d| d.is_finite() && *d > 0.0 && *d < 3600.0)
                .map(Duration::from_secs_f64);
        } else if let Some(v) = t.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.trim().parse().unwrap_or(0);
        } else if t == "#EXT-X-PLAYLIST-TYPE:VOD" {
            p.ended = true;
        }
    }
    Some(p)
}

/// Whether a request is an LL-HLS blocking playlist reload (`_HLS_msn`, maybe `_HLS_part`).
pub fn is_blocking(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next().is_some_and(|k| k == "_HLS_msn"))
    })
}

/// Whether a path names a playlist by its extension.
pub fn is_playlist_path(path: &str) -> bool {
    let p = path.split('?').next().unwrap_or(path).as_bytes();
    (p.len() >= 5 && p[p.len() - 5..].eq_ignore_ascii_case(b".m3u8"))
        || (p.len() >= 4 && p[p.len() - 4..].eq_ignore_ascii_case(b".m3u"))
}

/// The target duration assumed for a live playlist that names none.
const DEFAULT_TARGET: Duration = Duration::from_secs(2);

/// What is being kept, for [`lifetime`].
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub mode: CacheMode,
    pub status: u16,
    /// The request was a blocking playlist reload.
    pub blocking: bool,
    /// The body, read as a playlist (`None`: not a playlist, or not read yet).
    pub playlist: Option<&'a Playlist>,
    /// The stream's target duration from its last media playlist, for answers that carry
    /// none (404s).
    pub stream_target: Option<Duration>,
}

/// How long an answer is fresh by the rules above (before the node's own `max-age`).
pub fn lifetime(s: &CacheSettings, a: &Answer<'_>) -> Duration {
    if a.status == 404 {
        return match (a.mode, a.stream_target) {
            (CacheMode::Hls, Some(td)) => td * 4,
            _ => s.not_found_ttl,
        };
    }
    match (a.mode, a.playlist) {
        (CacheMode::Vod, _) => s.vod_ttl,
        (CacheMode::Hls, None) => s.segment_ttl,
        (CacheMode::Hls, Some(p)) if p.multivariant => s.multivariant_ttl,
        (CacheMode::Hls, Some(p)) if p.ended => s.vod_playlist_ttl,
        (CacheMode::Hls, Some(p)) => {
            let td = p.target_duration.unwrap_or(DEFAULT_TARGET);
            if a.blocking {
                td * 6
            } else {
                td.mul_f64(s.media_playlist_fraction)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str =
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:17\n#EXTINF:4.0,\ns17.ts\n";

    #[test]
    fn reads_playlists() {
        let p = playlist(LIVE.as_bytes()).expect("m3u");
        assert_eq!(p.target_duration, Some(Duration::from_secs(4)));
        assert_eq!(p.media_sequence, 17);
        assert!(!p.multivariant && !p.ended);
        let m = playlist(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n").expect("m3u");
        assert!(m.multivariant);
        assert!(playlist(b"<html>").is_none());
        assert!(is_blocking(Some("a=1&_HLS_msn=4&_HLS_part=1")));
        assert!(!is_blocking(Some("x_HLS_msn=4")));
        assert!(is_playlist_path("/a/b.M3U8?x") && !is_playlist_path("/a/b.ts"));
    }

    #[test]
    fn spec_draft_lifetimes() {
        let s = CacheSettings::default();
        let p = playlist(LIVE.as_bytes()).expect("m3u");
        let a = |status, blocking, pl, td| Answer {
            mode: CacheMode::Hls,
            status,
            blocking,
            playlist: pl,
            stream_target: td,
        };
        assert_eq!(
            lifetime(&s, &a(200, false, Some(&p), None)),
            Duration::from_secs(2)
        );
        assert_eq!(
            lifetime(&s, &a(200, true, Some(&p), None)),
            Duration::from_secs(24)
        );
        let four = Some(Duration::from_secs(4));
        assert_eq!(
            lifetime(&s, &a(404, false, None, four)),
            Duration::from_secs(16)
        );
        assert_eq!(lifetime(&s, &a(404, false, None, None)), s.not_found_ttl);
        assert_eq!(lifetime(&s, &a(200, false, None, four)), s.segment_ttl);
        let vod = Answer {
            mode: CacheMode::Vod,
            ..a(200, false, None, None)
        };
        assert_eq!(lifetime(&s, &vod), s.vod_ttl);
    }
}
