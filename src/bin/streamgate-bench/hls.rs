//! `hls`: N hls.js-like viewers of one live HLS media playlist. Each viewer keeps one
//! keep-alive connection, reloads the playlist (after a target duration when it changed, half
//! of one when it did not, as hls.js does), starts three segments from the live edge and fetches
//! every new segment to the end. Measures segment time to first byte, the CPU of the process
//! under test per viewer-second, and, from the origin's `/stats` `file_requests`, how many node
//! requests each segment cost.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::client::{self, BoxError, Target};
use crate::procstat;
use crate::stats::{ms, percentile};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The media playlist (http://IP:PORT/…/index.m3u8, loopback only).
    #[arg(long)]
    url: String,
    /// Viewers.
    #[arg(long, short = 'n', default_value_t = 500)]
    viewers: usize,
    /// How long every viewer plays after the ramp.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    window: Duration,
    /// Time over which viewers start (evenly spread).
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    ramp: Duration,
    /// PID of the process under test (its CPU, with its children's).
    #[arg(long)]
    pid: Option<u32>,
    /// The origin's `/stats` URL (node requests per segment).
    #[arg(long)]
    origin_stats: Option<String>,
}

/// Hard caps that keep the run bounded whatever the arguments say.
const MAX_VIEWERS: usize = 5000;
/// A request taking longer than this counts as an error.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Segment names a viewer remembers (it only needs the live window's).
const MAX_SEEN: usize = 256;
/// Latency samples kept per viewer.
const MAX_SAMPLES: usize = 100_000;

#[derive(Default)]
struct ViewerResult {
    ttfb_us: Vec<u64>,
    segments: u64,
    playlists: u64,
    errors: u64,
    bytes: u64,
    /// The first error's message (why a run failed).
    first_error: Option<String>,
}

impl ViewerResult {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// What a playlist says: target duration and segment URIs (relative to it, as written).
fn parse(text: &str) -> (Duration, Vec<String>) {
    let mut td = Duration::from_secs(2);
    let mut segs = Vec::new();
    for l in text.lines().map(str::trim) {
        if let Some(v) = l.strip_prefix("#EXT-X-TARGETDURATION:") {
            if let Ok(s) = v.trim().parse::<f64>() {
                if s.is_finite() && s > 0.0 && s < 60.0 {
                    td = Duration::from_secs_f64(s);
                }
            }
        } else if !l.is_empty() && !l.starts_with('#') {
            segs.push(l.to_string());
        }
    }
    (td, segs)
}

/// The path of `uri` relative to the playlist at `playlist` (path-absolute URIs as they are).
fn resolve(playlist: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let path = playlist.split('?').next().unwrap_or(playlist);
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{dir}{uri}")
}

async fn viewer(t: Target, start: Instant, deadline: Instant) -> ViewerResult {
    let mut r = ViewerResult::default();
    tokio::time::sleep_until(start.into()).await;
    let mut send = None;
    let mut seen: VecDeque<String> = VecDeque::new();
    let mut last_playlist = String::new();
    let mut first = true;
    while Instant::now() < deadline {
        if send.is_none() {
            match client::connect(&t, TIMEOUT).await {
                Ok(s) => send = Some(s),
                Err(e) => {
                    r.error(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let Some(s) = send.as_mut() else { continue };
        let text = match fetch(s, &t, &t.path_and_query, None).await {
            Ok((body, _)) => String::from_utf8_lossy(&body).into_owned(),
            Err(e) => {
                r.error(e);
                send = None;
                continue;
            }
        };
        r.playlists += 1;
        let (td, segs) = parse(&text);
        let skip = if first {
            segs.len().saturating_sub(3)
        } else {
            0
        };
        first = false;
        for seg in segs.iter().skip(skip) {
            if seen.contains(seg) {
                continue;
            }
            if seen.len() >= MAX_SEEN {
                seen.pop_front();
            }
            seen.push_back(seg.clone());
            let path = resolve(&t.path_and_query, seg);
            let began = Instant::now();
            match fetch(s, &t, &path, Some(began)).await {
                Ok((body, ttfb)) => {
                    r.segments += 1;
                    r.bytes += body.len() as u64;
                    if let Some(d) = ttfb {
                        if r.ttfb_us.len() < MAX_SAMPLES {
                            r.ttfb_us.push(d.as_micros() as u64);
                        }
                    }
                }
                Err(e) => {
                    r.error(e);
                    send = None;
                    break;
                }
            }
        }
        let changed = text != last_playlist;
        last_playlist = text;
        let wait = if changed { td } else { td / 2 };
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    r
}

/// GETs `path` on the connection; the body, and the time to its first byte from `began`.
async fn fetch(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    t: &Target,
    path: &str,
    began: Option<Instant>,
) -> Result<(Vec<u8>, Option<Duration>), BoxError> {
    let work = async {
        let mut target = t.clone();
        target.path_and_query = path.to_string();
        let resp = send.send_request(target.get(None)?).await?;
        if !resp.status().is_success() {
            return Err(format!("{path}: status {}", resp.status()).into());
        }
        let mut body = resp.into_body();
        let mut out = Vec::new();
        let mut ttfb = None;
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                if ttfb.is_none() && !d.is_empty() {
                    ttfb = began.map(|b| b.elapsed());
                }
                out.extend_from_slice(&d);
            }
        }
        Ok::<_, BoxError>((out, ttfb))
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| format!("{path}: timed out"))?
}

/// `.ts` / `.m4s` request counts by path from the origin's `/stats`.
async fn segment_requests(url: &Option<String>) -> Option<HashMap<String, u64>> {
    let v = client::get_json(url.as_ref()?, None).await.ok()?;
    let map = v["file_requests"].as_object()?;
    Some(
        map.iter()
            .filter(|(k, _)| {
                let p = k.split('?').next().unwrap_or(k);
                p.ends_with(".ts") || p.ends_with(".m4s")
            })
            .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
            .collect(),
    )
}

pub async fn run(a: Args) -> Result<Value, BoxError> {
    let t = Target::parse(&a.url)?;
    let n = a.viewers.clamp(1, MAX_VIEWERS);
    let before = segment_requests(&a.origin_stats).await;
    let pids = a.pid.map(procstat::tree).unwrap_or_default();
    let begin = Instant::now();
    let deadline = begin + a.ramp + a.window;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let start = begin + a.ramp.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(viewer(t.clone(), start, deadline)));
    }
    // CPU over the window after the ramp, when every viewer plays.
    tokio::time::sleep(a.ramp).await;
    let cpu0 = procstat::cpu_seconds(&pids);
    let w0 = Instant::now();
    tokio::time::sleep_until(deadline.into()).await;
    let cpu = procstat::cpu_seconds(&pids) - cpu0;
    let window = w0.elapsed().as_secs_f64();
    let mut all = ViewerResult::default();
    for task in tasks {
        let r = task.await.map_err(|e| format!("viewer failed: {e}"))?;
        all.ttfb_us.extend(r.ttfb_us);
        all.segments += r.segments;
        all.playlists += r.playlists;
        all.errors += r.errors;
        all.bytes += r.bytes;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    all.ttfb_us.sort_unstable();
    let after = segment_requests(&a.origin_stats).await;
    let per_segment = match (before, after) {
        (Some(b), Some(a)) => {
            let fetched: Vec<u64> = a
                .iter()
                .map(|(k, v)| v - b.get(k).copied().unwrap_or(0))
                .filter(|d| *d > 0)
                .collect();
            (!fetched.is_empty()).then(|| fetched.iter().sum::<u64>() as f64 / fetched.len() as f64)
        }
        _ => None,
    };
    let cpu_ms_per_viewer_s = (!pids.is_empty()).then(|| cpu * 1000.0 / (n as f64 * window));
    let v = json!({
        "kind": "hls",
        "url": a.url,
        "viewers": n,
        "window_s": window,
        "segments": all.segments,
        "playlists": all.playlists,
        "errors": all.errors,
        "first_error": all.first_error,
        "bytes": all.bytes,
        "segment_ttfb_p50_ms": ms(percentile(&all.ttfb_us, 50.0)),
        "segment_ttfb_p99_ms": ms(percentile(&all.ttfb_us, 99.0)),
        "node_requests_per_segment": per_segment,
        "cpu_ms_per_viewer_second": cpu_ms_per_viewer_s,
    });
    eprintln!(
        "  hls {n} viewers: {} segments, {} errors, ttfb p99 {:.1} ms, node requests/segment {:?}, cpu ms/viewer-s {:?}",
        all.segments,
        all.errors,
        ms(percentile(&all.ttfb_us, 99.0)),
        per_segment,
        cpu_ms_per_viewer_s
    );
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_and_uris() {
        let (td, segs) =
            parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na0.ts\n#EXTINF:2,\na1.ts\n");
        assert_eq!(td, Duration::from_secs(2));
        assert_eq!(segs, vec!["a0.ts", "a1.ts"]);
        assert_eq!(resolve("/hls/index.m3u8?x=1", "a0.ts"), "/hls/a0.ts");
        assert_eq!(resolve("/hls/index.m3u8", "/other/a0.ts"), "/other/a0.ts");
    }
}
