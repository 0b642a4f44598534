//! `live`: N HTTP-FLV viewers of one URL, ramped at a bounded rate. Each joins (connects, reads
//! the head, parses up to its first keyframe) on a thread of its own, then watches on the main
//! runtime (parsing every tag, or counting bytes; see [`FULL_PARSE_VIEWERS`]).
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

use bytes::{Buf, BytesMut};
use clap::Args as ClapArgs;
use serde_json::{json, Value};
use streamgate::answer::{parse, Decoded, Decoder, Parsed};
use streamgate::flv::{Event, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
/// Bytes one viewer reads at a time: 5,000 viewers hold bounded memory (the parser itself holds
/// at most one tag beyond what it was given).
const VIEWER_READ_BUF: usize = 16 * 1024;
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
    let (joiners, _joiners_stop) = joiners()?;
    let watch = Watch {
        target: target.clone(),
        stop: stop.clone(),
        measuring: measuring.clone(),
        stall: a.stall,
        connect_timeout: a.connect_timeout,
        joiners,
    };
    let warm = a.warmup.then(|| {
        let w = Arc::new(Viewer::default());
        let mut ww = watch.clone();
        ww.stop = warm_stop.clone();
        ww.measuring = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(viewer(ww, w.clone(), true));
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
    for (i, v) in viewers.iter().enumerate() {
        tasks.push(tokio::spawn(viewer(
            watch.clone(),
            v.clone(),
            i < FULL_PARSE_VIEWERS,
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
        "full_parse_viewers": n.min(FULL_PARSE_VIEWERS),
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

/// Viewers (the first ones of a run) that parse every FLV tag for as long as they watch: a
/// corrupt stream shows in `parse_errors`. The others parse until their first keyframe, then
/// only count body bytes and read gaps, so that the load generator, which shares the machine,
/// spends its CPU on reading, not on checking thousands of copies of one stream.
const FULL_PARSE_VIEWERS: usize = 64;

/// What a viewer's tasks share: the target, the run's flags and limits.
#[derive(Clone)]
struct Watch {
    target: Target,
    stop: CancellationToken,
    measuring: Arc<AtomicBool>,
    stall: Duration,
    connect_timeout: Duration,
    /// Runs the joins (see [`joiners`]).
    joiners: tokio::runtime::Handle,
}

/// One viewer's connection between reads.
struct Conn {
    sock: TcpStream,
    buf: BytesMut,
    dec: Decoder,
    /// `Some` while the viewer parses tags.
    parser: Option<Parser>,
    /// When the last read returned.
    last: Instant,
}

/// The joiners' own thread and runtime: a viewer connects and reads up to its first keyframe
/// there, then moves to the main runtime to watch. Joins measured on the runtime that also
/// reads thousands of running streams wait behind those reads: at 5,000 viewers a separate
/// light client saw a first-keyframe p99 of 7.8 ms where the loaded one measured 23.4 ms
/// itself. A real joiner's machine is not busy with 4,999 other viewers. Ends when the
/// returned sender is dropped.
fn joiners() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let (done, wait) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("joiners".into())
        .spawn(move || {
            rt.block_on(async {
                let _ = wait.await;
            })
        })?;
    Ok((handle, done))
}

/// One viewer: joins on the joiners' runtime (connect, head, first keyframe), then reads (and
/// parses, see [`FULL_PARSE_VIEWERS`]) on this one until `stop` or the body ends.
async fn viewer(w: Watch, v: Arc<Viewer>, full_parse: bool) {
    let start = Instant::now();
    let join = w.joiners.spawn(join(w.clone(), v.clone(), start));
    let Ok(Some((sock, buf, dec, parser, last))) = join.await else {
        return;
    };
    // `into_std` left it non-blocking, as `from_std` needs.
    let sock = match TcpStream::from_std(sock) {
        Ok(s) => s,
        Err(_) => {
            v.failed.store(true, Relaxed);
            return;
        }
    };
    let mut c = Conn {
        sock,
        buf,
        dec,
        parser: parser.filter(|_| full_parse),
        last,
    };
    read(&w, &v, &mut c, start, false).await;
}

/// A joined viewer, handed from the joiners' runtime to the main one.
type Joined = (
    std::net::TcpStream,
    BytesMut,
    Decoder,
    Option<Parser>,
    Instant,
);

/// Connects, reads the head and up to the first keyframe; `None` if the viewer failed, ended
/// or was stopped first.
async fn join(w: Watch, v: Arc<Viewer>, start: Instant) -> Option<Joined> {
    let (sock, buf, dec) = tokio::select! {
        _ = w.stop.cancelled() => return None,
        r = tokio::time::timeout(w.connect_timeout, open(&w.target)) => match r {
            Ok(Ok(x)) => x,
            _ => {
                v.failed.store(true, Relaxed);
                return None;
            }
        },
    };
    v.ttfb_us
        .store(start.elapsed().as_micros().max(1) as u64, Relaxed);
    v.connected.store(true, Relaxed);
    let mut c = Conn {
        sock,
        buf,
        dec,
        parser: Some(Parser::new()),
        last: Instant::now(),
    };
    if !read(&w, &v, &mut c, start, true).await {
        return None;
    }
    match c.sock.into_std() {
        Ok(sock) => Some((sock, c.buf, c.dec, c.parser, c.last)),
        Err(_) => {
            v.failed.store(true, Relaxed);
            None
        }
    }
}

/// Reads `c` until `stop` or the body's end (`false`), or, with `until_keyframe`, until the
/// viewer has its first keyframe (`true`). Gaps between reads inside the window are stalls.
async fn read(w: &Watch, v: &Viewer, c: &mut Conn, start: Instant, until_keyframe: bool) -> bool {
    loop {
        // What is buffered: parsed while the viewer still parses, else counted.
        let end = match &mut c.parser {
            Some(p) => parse_buffered(v, p, &mut c.dec, &mut c.buf, start),
            None => count_buffered(v, &mut c.dec, &mut c.buf),
        };
        match end {
            Ok(false) => {}
            Ok(true) => {
                v.ended_early.store(true, Relaxed);
                return false;
            }
            Err(_) => {
                v.ended_early.store(true, Relaxed);
                v.failed.store(true, Relaxed);
                return false;
            }
        }
        if until_keyframe && v.ttfk_us.load(Relaxed) > 0 {
            return true;
        }
        c.buf.reserve(VIEWER_READ_BUF); // reuses the buffer once what was parsed is dropped
        let r = tokio::select! {
            _ = w.stop.cancelled() => return false,
            r = c.sock.read_buf(&mut c.buf) => r,
        };
        let now = Instant::now();
        if w.measuring.load(Relaxed) {
            let gap = now.duration_since(c.last);
            v.max_gap_us.fetch_max(gap.as_micros() as u64, Relaxed);
            if gap > w.stall {
                v.stalls.fetch_add(1, Relaxed);
            }
        }
        c.last = now;
        match r {
            Ok(0) => {
                v.ended_early.store(true, Relaxed);
                if c.dec.eof().is_err() {
                    v.failed.store(true, Relaxed); // closed mid-body
                }
                return false;
            }
            Ok(_) => {}
            Err(_) => {
                v.ended_early.store(true, Relaxed);
                v.failed.store(true, Relaxed);
                return false;
            }
        }
    }
}

/// Connects, sends the GET and reads the answer's head: the socket, what was read past the
/// head, and the body's decoder. Anything but a 200 is an error.
async fn open(t: &Target) -> Result<(TcpStream, BytesMut, Decoder), BoxError> {
    let mut sock = TcpStream::connect(t.addr).await?;
    sock.set_nodelay(true)?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        t.path_and_query, t.host
    );
    sock.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(VIEWER_READ_BUF);
    loop {
        match parse(&buf, false)? {
            Parsed::Partial => {}
            Parsed::Interim(n) => {
                buf.advance(n);
                continue;
            }
            Parsed::Final(n, head) => {
                if head.status != http::StatusCode::OK {
                    return Err(format!("status {}", head.status).into());
                }
                buf.advance(n);
                return Ok((sock, buf, Decoder::new(head.framing)));
            }
        }
        buf.reserve(VIEWER_READ_BUF);
        if sock.read_buf(&mut buf).await? == 0 {
            return Err("closed before the answer's head".into());
        }
    }
}

/// Feeds the buffered body to `p`, noting tags and the first keyframe. `Ok(true)`: the body
/// ended.
fn parse_buffered(
    v: &Viewer,
    p: &mut Parser,
    dec: &mut Decoder,
    buf: &mut BytesMut,
    start: Instant,
) -> Result<bool, BoxError> {
    loop {
        let data = match dec.decode(buf)? {
            Decoded::Data(d) => d,
            Decoded::NeedMore => return Ok(false),
            Decoded::Done => return Ok(true),
        };
        v.bytes.fetch_add(data.len() as u64, Relaxed);
        if v.parse_errors.load(Relaxed) > 0 {
            continue; // count bytes only once the stream is known corrupt
        }
        if p.push_bytes(data).is_err() {
            v.parse_errors.fetch_add(1, Relaxed);
            continue;
        }
        // Drain every complete item; bounded by the bytes just pushed.
        loop {
            match p.next_event() {
                Ok(Some(Event::Tag(tag))) => {
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

/// Counts the buffered body bytes and drops them (framing checked, nothing copied).
/// `Ok(true)`: the body ended.
fn count_buffered(v: &Viewer, dec: &mut Decoder, buf: &mut BytesMut) -> Result<bool, BoxError> {
    let mut n = 0u64;
    let end = loop {
        if *dec == Decoder::Close {
            n += buf.len() as u64;
            buf.clear();
            break false;
        }
        match dec.raw_left() {
            Some(_) if buf.is_empty() => break false,
            Some(left) => {
                let k = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                buf.advance(k);
                dec.consumed(k as u64);
                n += k as u64;
            }
            None => {
                let before = buf.len();
                dec.skip_framing(buf)?;
                if dec.is_done() {
                    break true;
                }
                if dec.raw_left().is_none() && buf.len() == before {
                    break false; // a framing line still incomplete
                }
            }
        }
    };
    v.bytes.fetch_add(n, Relaxed);
    Ok(end)
}

#[cfg(test)]
mod tests {
    use streamgate::answer::Framing;

    use super::*;

    /// Counts `wire` fed `step` bytes at a time: (bytes counted, the body ended).
    fn count(framing: Framing, wire: &[u8], step: usize) -> (u64, bool) {
        let v = Viewer::default();
        let mut dec = Decoder::new(framing);
        let mut buf = BytesMut::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            if count_buffered(&v, &mut dec, &mut buf).expect("valid body") {
                return (v.bytes.load(Relaxed), true);
            }
        }
        (v.bytes.load(Relaxed), false)
    }

    #[test]
    fn counting_skips_chunk_framing_however_the_reads_split_it() {
        let wire = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\n";
        for step in 1..=wire.len() {
            assert_eq!(
                count(Framing::Chunked, wire, step),
                (31, true),
                "step {step}"
            );
        }
        // A live body never ends: everything so far is counted, no end.
        let open = &wire[..wire.len() - 13];
        assert_eq!(count(Framing::Chunked, open, 4), (31, false));
    }

    #[test]
    fn counting_a_length_or_close_delimited_body() {
        assert_eq!(count(Framing::Length(10), b"0123456789", 3), (10, true));
        assert_eq!(count(Framing::Close, b"0123456789", 3), (10, false));
    }

    #[test]
    fn bad_chunk_framing_is_an_error_not_a_count() {
        let v = Viewer::default();
        let mut dec = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"zz\r\nhello\r\n"[..]);
        assert!(count_buffered(&v, &mut dec, &mut buf).is_err());
    }
}
