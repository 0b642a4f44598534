//! `live`: N HTTP-FLV viewers of one URL, ramped at a bounded rate, each parsing FLV tags.
//!
//! Timeline: baseline sample → warm-up (one viewer starts the stream and waits for its first
//! keyframe, so the N measured viewers are joiners of a running stream; its own times are the
//! stream's start-up, reported apart) → ramp (at most `ramp_rate` new viewers per second) → settle
//! (until every viewer has its first keyframe or failed, at most `settle`) → measurement window
//! (`window`; the warm-up viewer has left before it) → every viewer is stopped and joined. CPU of the process under test is read
//! at the window's edges, RSS and the origin's `live_clients` once a second inside it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use streamgate::flv::{Event, Parser};
use tokio_util::sync::CancellationToken;

use crate::client::{self, BoxError, Target};
use crate::procstat;
use crate::stats::{ms, percentile};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// HTTP-FLV URL (http://IP:PORT/path, loopback only).
    #[arg(long)]
    url: String,
    /// Concurrent viewers.
    #[arg(long, short = 'n', default_value_t = 50)]
    viewers: usize,
    /// New viewers per second at most while ramping.
    #[arg(long, default_value_t = 250.0)]
    ramp_rate: f64,
    /// Longest wait after the ramp for every viewer's first keyframe.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    settle: Duration,
    /// Measurement window.
    #[arg(long, short = 'w', default_value = "15s", value_parser = crate::parse_duration)]
    window: Duration,
    /// A gap between two reads longer than this, inside the window, counts as a stall.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    stall: Duration,
    /// Bitrate of the source in kbit/s (for the delivered/source ratio).
    #[arg(long)]
    source_kbps: Option<f64>,
    /// PID of the process under test (its direct children are included: nginx workers).
    #[arg(long)]
    pid: Option<u32>,
    /// PID of the origin, whose CPU is reported too.
    #[arg(long)]
    origin_pid: Option<u32>,
    /// The origin's /stats URL, sampled for `live_clients` (upstream connections it sees).
    #[arg(long)]
    origin_stats: Option<String>,
    /// The gateway's /api/v1/live URL, read after the window.
    #[arg(long)]
    gateway_api: Option<String>,
    /// Bearer token for --gateway-api.
    #[arg(long)]
    admin_token: Option<String>,
    /// Connect + response headers must arrive within this.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    connect_timeout: Duration,
    /// Start the stream with one viewer of its own before the ramp (`false`: the first measured
    /// viewer starts it, and its start-up counts in the first-keyframe percentiles).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    warmup: bool,
}

const MAX_VIEWERS: usize = 20_000;
/// Most bytes one viewer's connection buffers before the parser takes them: 5,000 viewers hold
/// bounded memory (the parser itself holds at most one tag beyond what it was given).
const VIEWER_READ_BUF: usize = 32 * 1024;
/// Most samples taken inside one window (one a second).
const MAX_WINDOW_SAMPLES: u64 = 3600;

/// What one viewer saw; written by its task, read by the coordinator.
#[derive(Default)]
struct Viewer {
    /// Response headers arrived with status 200.
    connected: AtomicBool,
    /// Could not connect, non-200, or the body failed before the end of the window.
    failed: AtomicBool,
    /// Body ended (or failed) while the run still wanted it.
    ended_early: AtomicBool,
    /// Body bytes received so far.
    bytes: AtomicU64,
    /// Time to response headers, µs (0 = not yet).
    ttfb_us: AtomicU64,
    /// Time to the first video keyframe tag, µs (0 = not yet).
    ttfk_us: AtomicU64,
    /// Gaps longer than `stall` while `measuring` is set.
    stalls: AtomicU64,
    /// Longest gap between two reads while `measuring` is set, µs.
    max_gap_us: AtomicU64,
    /// Tags parsed.
    tags: AtomicU64,
    /// FLV parse errors (corrupt stream).
    parse_errors: AtomicU64,
}

pub async fn run(a: Args) -> Result<Value, BoxError> {
    let target = Target::parse(&a.url)?;
    let n = a.viewers.clamp(1, MAX_VIEWERS);
    let ramp_rate = if a.ramp_rate.is_finite() {
        a.ramp_rate.clamp(1.0, 10_000.0)
    } else {
        250.0
    };
    let pids = a.pid.map(procstat::tree).unwrap_or_default();
    let origin_pids: Vec<u32> = a.origin_pid.into_iter().collect();
    let rss_base = procstat::rss_kib(&pids);
    let origin_clients_before = origin_clients(a.origin_stats.as_deref()).await;

    let stop = CancellationToken::new();
    let measuring = Arc::new(AtomicBool::new(false));
    // Warm-up: one viewer starts the stream (the gateway's pull, the origin's file) and waits,
    // at most `settle`, for its first keyframe; it leaves before the window.
    let warm_stop = CancellationToken::new();
    let warm = a.warmup.then(|| {
        let w = Arc::new(Viewer::default());
        let task = tokio::spawn(viewer(
            target.clone(),
            w.clone(),
            warm_stop.clone(),
            Arc::new(AtomicBool::new(false)),
            a.stall,
            a.connect_timeout,
        ));
        (w, task)
    });
    if let Some((w, _)) = &warm {
        let until = Instant::now() + a.settle;
        while Instant::now() < until && !w.failed.load(Relaxed) && w.ttfk_us.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let viewers: Vec<Arc<Viewer>> = (0..n).map(|_| Arc::new(Viewer::default())).collect();
    let mut tasks = Vec::with_capacity(n);
    let ramp_start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / ramp_rate);
    for v in &viewers {
        tasks.push(tokio::spawn(viewer(
            target.clone(),
            v.clone(),
            stop.clone(),
            measuring.clone(),
            a.stall,
            a.connect_timeout,
        )));
        tokio::time::sleep(gap).await;
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();

    // Settle: everyone has a keyframe or failed, bounded by `settle`.
    let settle_until = Instant::now() + a.settle;
    while Instant::now() < settle_until
        && !viewers
            .iter()
            .all(|v| v.failed.load(Relaxed) || v.ttfk_us.load(Relaxed) > 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let warm_times = match warm {
        Some((w, task)) => {
            warm_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
            let t = |x: u64| (x > 0).then(|| ms(x));
            (
                t(w.ttfb_us.load(Relaxed)),
                t(w.ttfk_us.load(Relaxed)),
                w.failed.load(Relaxed),
            )
        }
        None => (None, None, false),
    };

    // Window.
    let bytes_start: Vec<u64> = viewers.iter().map(|v| v.bytes.load(Relaxed)).collect();
    let cpu_start = procstat::cpu_seconds(&pids);
    let origin_cpu_start = procstat::cpu_seconds(&origin_pids);
    let win_start = Instant::now();
    measuring.store(true, Relaxed);
    let (mut rss_max, mut clients_max, mut clients_min) = (0u64, None::<u64>, None::<u64>);
    let mut samples = 0u64;
    while win_start.elapsed() < a.window && samples < MAX_WINDOW_SAMPLES {
        let left = a.window.saturating_sub(win_start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        samples += 1;
        rss_max = rss_max.max(procstat::rss_kib(&pids));
        if let Some(c) = origin_clients(a.origin_stats.as_deref()).await {
            clients_max = Some(clients_max.map_or(c, |m| m.max(c)));
            clients_min = Some(clients_min.map_or(c, |m| m.min(c)));
        }
    }
    measuring.store(false, Relaxed);
    let window_s = win_start.elapsed().as_secs_f64();
    let cpu_s = procstat::cpu_seconds(&pids) - cpu_start;
    let origin_cpu_s = procstat::cpu_seconds(&origin_pids) - origin_cpu_start;
    let bytes_end: Vec<u64> = viewers.iter().map(|v| v.bytes.load(Relaxed)).collect();
    let gateway = match &a.gateway_api {
        Some(u) => client::get_json(u, a.admin_token.as_deref()).await.ok(),
        None => None,
    };

    stop.cancel();
    for t in tasks {
        // Each viewer watches `stop`; a stuck one is abandoned after a short grace.
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }

    // Figures.
    let connected: Vec<&Arc<Viewer>> = viewers
        .iter()
        .filter(|v| v.connected.load(Relaxed))
        .collect();
    let failed = viewers.iter().filter(|v| v.failed.load(Relaxed)).count();
    let ended_early = viewers
        .iter()
        .filter(|v| v.ended_early.load(Relaxed))
        .count();
    let mut ttfb: Vec<u64> = connected.iter().map(|v| v.ttfb_us.load(Relaxed)).collect();
    let mut ttfk: Vec<u64> = viewers
        .iter()
        .map(|v| v.ttfk_us.load(Relaxed))
        .filter(|&x| x > 0)
        .collect();
    ttfb.sort_unstable();
    ttfk.sort_unstable();
    let mut kbps: Vec<u64> = viewers
        .iter()
        .enumerate()
        .filter(|(_, v)| v.connected.load(Relaxed))
        .map(|(i, _)| ((bytes_end[i] - bytes_start[i]) as f64 * 8.0 / 1000.0 / window_s) as u64)
        .collect();
    kbps.sort_unstable();
    let total_bytes: u64 = bytes_end.iter().zip(&bytes_start).map(|(e, s)| e - s).sum();
    let stalls: u64 = viewers.iter().map(|v| v.stalls.load(Relaxed)).sum();
    let stalled_viewers = viewers
        .iter()
        .filter(|v| v.stalls.load(Relaxed) > 0)
        .count();
    let max_gap = viewers
        .iter()
        .map(|v| v.max_gap_us.load(Relaxed))
        .max()
        .unwrap_or(0);
    let parse_errors: u64 = viewers.iter().map(|v| v.parse_errors.load(Relaxed)).sum();
    let viewer_seconds = connected.len() as f64 * window_s;
    let per_viewer = |x: f64| {
        if connected.is_empty() {
            0.0
        } else {
            x / connected.len() as f64
        }
    };
    let mean_kbps = per_viewer(total_bytes as f64 * 8.0 / 1000.0 / window_s);
    let p50_kbps = percentile(&kbps, 50.0);
    let v = json!({
        "kind": "live",
        "url": a.url,
        "viewers": n,
        "connected": connected.len(),
        "failed": failed,
        "ended_early": ended_early,
        "ramp_s": ramp_s,
        "window_s": window_s,
        "ttfb_p50_ms": ms(percentile(&ttfb, 50.0)),
        "ttfb_p99_ms": ms(percentile(&ttfb, 99.0)),
        "ttfk_viewers": ttfk.len(),
        "ttfk_p50_ms": ms(percentile(&ttfk, 50.0)),
        "ttfk_p99_ms": ms(percentile(&ttfk, 99.0)),
        "warmup": a.warmup,
        "stream_start_ttfb_ms": warm_times.0,
        "stream_start_ttfk_ms": warm_times.1,
        "warmup_failed": warm_times.2,
        "kbps_per_viewer_mean": mean_kbps,
        "kbps_per_viewer_p50": p50_kbps,
        "kbps_per_viewer_min": kbps.first().copied().unwrap_or(0),
        "source_kbps": a.source_kbps,
        "delivered_over_source": a.source_kbps.filter(|s| *s > 0.0).map(|s| mean_kbps / s),
        "stalls": stalls,
        "stalled_viewers": stalled_viewers,
        "max_gap_ms": ms(max_gap),
        "parse_errors": parse_errors,
        "proc_pids": pids,
        "proc_cpu_s": cpu_s,
        "proc_cpu_ms_per_viewer_s": if viewer_seconds > 0.0 { cpu_s * 1000.0 / viewer_seconds } else { 0.0 },
        "proc_cpu_s_per_viewer_min": if viewer_seconds > 0.0 { cpu_s * 60.0 / viewer_seconds } else { 0.0 },
        "proc_rss_base_kib": rss_base,
        "proc_rss_max_kib": rss_max,
        "proc_rss_kib_per_viewer": per_viewer(rss_max.saturating_sub(rss_base) as f64),
        "origin_cpu_s": origin_cpu_s,
        "origin_live_clients_before": origin_clients_before,
        "origin_live_clients_max": clients_max,
        "origin_live_clients_min": clients_min,
        "gateway_live": gateway,
    });
    eprintln!(
        "live {} x{}: connected {} failed {} | ttfb p50 {} ms | ttfk p50 {} p99 {} ms | {:.0} kbit/s per viewer | stalls {} | cpu {:.3} ms/viewer-s | rss {:.1} KiB/viewer | origin clients {:?}",
        a.url, n, connected.len(), failed, v["ttfb_p50_ms"], v["ttfk_p50_ms"], v["ttfk_p99_ms"],
        mean_kbps, stalls, v["proc_cpu_ms_per_viewer_s"].as_f64().unwrap_or(0.0),
        v["proc_rss_kib_per_viewer"].as_f64().unwrap_or(0.0), clients_max
    );
    Ok(v)
}

/// `live_clients` from an origin's /stats, if asked for and readable.
async fn origin_clients(url: Option<&str>) -> Option<u64> {
    let v = client::get_json(url?, None).await.ok()?;
    v.get("live_clients")?.as_u64()
}

/// One viewer: connect, then read and parse until `stop` (or the body ends).
async fn viewer(
    t: Target,
    v: Arc<Viewer>,
    stop: CancellationToken,
    measuring: Arc<AtomicBool>,
    stall: Duration,
    connect_timeout: Duration,
) {
    let start = Instant::now();
    let open = async {
        let mut send = client::connect_bounded(&t, connect_timeout, Some(VIEWER_READ_BUF)).await?;
        let resp = send.send_request(t.get(None)?).await?;
        Ok::<_, BoxError>((send, resp))
    };
    let (_send, resp) = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(connect_timeout, open) => match r {
            Ok(Ok(x)) => x,
            _ => {
                v.failed.store(true, Relaxed);
                return;
            }
        },
    };
    if resp.status() != http::StatusCode::OK {
        v.failed.store(true, Relaxed);
        return;
    }
    v.ttfb_us
        .store(start.elapsed().as_micros().max(1) as u64, Relaxed);
    v.connected.store(true, Relaxed);
    let mut body = resp.into_body();
    let mut parser = Parser::new();
    let mut last = Instant::now();
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return,
            f = body.frame() => f,
        };
        let now = Instant::now();
        if measuring.load(Relaxed) {
            let gap = now.duration_since(last);
            v.max_gap_us.fetch_max(gap.as_micros() as u64, Relaxed);
            if gap > stall {
                v.stalls.fetch_add(1, Relaxed);
            }
        }
        last = now;
        let data = match frame {
            None => {
                v.ended_early.store(true, Relaxed);
                return;
            }
            Some(Err(_)) => {
                v.ended_early.store(true, Relaxed);
                v.failed.store(true, Relaxed);
                return;
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
        };
        v.bytes.fetch_add(data.len() as u64, Relaxed);
        if v.parse_errors.load(Relaxed) > 0 {
            continue; // count bytes only once the stream is known corrupt
        }
        if parser.push_bytes(data).is_err() {
            v.parse_errors.fetch_add(1, Relaxed);
            continue;
        }
        // Drain every complete item; bounded by the bytes just pushed.
        loop {
            match parser.next_event() {
                Ok(Some(Event::Tag(tag))) => {
                    v.tags.fetch_add(1, Relaxed);
                    if tag.is_keyframe()
                        && !tag.is_sequence_header()
                        && v.ttfk_us.load(Relaxed) == 0
                    {
                        v.ttfk_us
                            .store(start.elapsed().as_micros().max(1) as u64, Relaxed);
                    }
                }
                Ok(Some(Event::Header(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    v.parse_errors.fetch_add(1, Relaxed);
                    break;
                }
            }
        }
    }
}
