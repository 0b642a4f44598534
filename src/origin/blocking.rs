//! LL-HLS blocking playlist reload for `/files/…m3u8?_HLS_msn=M[&_HLS_part=P]`: the request is
//! held until the playlist on disk holds segment M (or part P of it), then served, as an LL-HLS
//! origin does (HLS spec §6.2.5.2). Held at most 3 × the target duration, then 503; an `M` more
//! than two segments ahead of the playlist is refused with 400 at once.
//!
//! The origin has no packager: a test (or a demo) writes the playlist and part files over time,
//! and this checks the file again every [`RECHECK`] while the request is held.

use std::path::Path;
use std::time::Duration;

use crate::upstream_path::query_param;

/// How often a held request reads the playlist again.
const RECHECK: Duration = Duration::from_millis(20);
/// Target duration assumed while the playlist names none.
const DEFAULT_TARGET: Duration = Duration::from_secs(2);

/// What a blocking request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub msn: u64,
    pub part: Option<u64>,
}

/// The blocking directives of a query, if it has them.
pub fn wanted(query: Option<&str>) -> Option<Want> {
    let msn = query_param(query, "_HLS_msn")?.parse().ok()?;
    let part = query_param(query, "_HLS_part").and_then(|p| p.parse().ok());
    Some(Want { msn, part })
}

/// Where a playlist stands: its last whole segment, the parts of the next, its target duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Media sequence number of the last complete segment (`None`: none yet).
    pub last_full: Option<u64>,
    /// Parts listed after the last complete segment (the segment in progress).
    pub parts: u64,
    pub target: Duration,
}

pub fn progress(text: &str) -> Progress {
    let mut seq = 0u64;
    let mut full = 0u64;
    let mut parts = 0u64;
    let mut target = DEFAULT_TARGET;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            if let Ok(s) = v.trim().parse::<u64>() {
                target = Duration::from_secs(s.clamp(1, 60));
            }
        } else if line.starts_with("#EXTINF:") {
            full += 1;
            parts = 0;
        } else if line.starts_with("#EXT-X-PART:") {
            parts += 1;
        }
    }
    Progress {
        last_full: full.checked_sub(1).map(|n| seq + n),
        parts,
        target,
    }
}

/// Whether the playlist satisfies the request.
pub fn satisfied(p: &Progress, w: &Want) -> bool {
    match p.last_full {
        Some(last) if w.msn <= last => true,
        _ => {
            let next = p.last_full.map_or(0, |l| l + 1);
            match w.part {
                Some(part) => w.msn == next && part < p.parts,
                None => false,
            }
        }
    }
}

/// Why a blocking request is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// More than two segments ahead: 400.
    TooFarAhead,
    /// Not there within 3 × the target duration: 503.
    TimedOut,
}

/// Holds until the playlist at `file` satisfies `w`.
pub async fn hold(file: &Path, w: Want) -> Result<(), Refused> {
    let mut deadline = None;
    loop {
        let text = tokio::fs::read_to_string(file).await.unwrap_or_default();
        let p = progress(&text);
        if satisfied(&p, &w) {
            return Ok(());
        }
        if w.msn > p.last_full.map_or(0, |l| l + 1) + 2 {
            return Err(Refused::TooFarAhead);
        }
        let d = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + p.target * 3);
        if tokio::time::Instant::now() >= d {
            return Err(Refused::TimedOut);
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
#EXT-X-PART:DURATION=0.5,URI=\"s10.0.m4s\"\n#EXTINF:2,\ns10.m4s\n#EXTINF:2,\ns11.m4s\n\
#EXT-X-PART:DURATION=0.5,URI=\"s12.0.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"s12.1.m4s\"\n";

    #[test]
    fn what_satisfies_a_blocking_reload() {
        let p = progress(PL);
        assert_eq!(p.last_full, Some(11));
        assert_eq!(p.parts, 2);
        assert_eq!(p.target, Duration::from_secs(2));
        let w = |msn, part| Want { msn, part };
        assert!(satisfied(&p, &w(11, None)));
        assert!(!satisfied(&p, &w(12, None)));
        assert!(satisfied(&p, &w(12, Some(1))));
        assert!(!satisfied(&p, &w(12, Some(2))));
        assert_eq!(
            wanted(Some("_HLS_msn=12&_HLS_part=1")),
            Some(w(12, Some(1)))
        );
        assert_eq!(wanted(Some("x=1")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn held_then_refused_after_three_target_durations() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("i.m3u8");
        std::fs::write(&f, PL).expect("write");
        assert_eq!(
            hold(
                &f,
                Want {
                    msn: 20,
                    part: None
                }
            )
            .await,
            Err(Refused::TooFarAhead)
        );
        let start = tokio::time::Instant::now();
        assert_eq!(
            hold(
                &f,
                Want {
                    msn: 13,
                    part: None
                }
            )
            .await,
            Err(Refused::TimedOut)
        );
        assert!(start.elapsed() >= Duration::from_secs(6));
        assert_eq!(
            hold(
                &f,
                Want {
                    msn: 12,
                    part: Some(0)
                }
            )
            .await,
            Ok(())
        );
    }
}
