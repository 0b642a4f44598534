//! `http`: a fixed number of keep-alive connections, each sending GETs back to back for a
//! fixed time (or until a request budget is spent), reading every body to the end.

use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::client::{self, BoxError, Target};
use crate::stats::{ms, percentile};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// URL to GET (http://IP:PORT/path, loopback only).
    #[arg(long)]
    url: String,
    /// Connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, short = 'd', default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Most requests in total (the loop also stops at this count).
    #[arg(long, default_value_t = 50_000_000)]
    max_requests: u64,
    /// A request taking longer than this counts as an error.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

/// Hard caps that keep the loop bounded whatever the arguments say.
const MAX_CONCURRENCY: usize = 4096;
/// Latency samples kept per worker (memory bound; later samples are counted, not kept).
const MAX_SAMPLES_PER_WORKER: usize = 4_000_000;

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u64>,
    ok_2xx: u64,
    ok_3xx: u64,
    other_status: u64,
    errors: u64,
    bytes: u64,
}

pub async fn run(a: Args) -> Result<Value, BoxError> {
    let target = Target::parse(&a.url)?;
    let conc = a.concurrency.clamp(1, MAX_CONCURRENCY);
    let per_worker = (a.max_requests / conc as u64).max(1);
    let start = Instant::now();
    let deadline = start + a.duration;
    let mut tasks = Vec::with_capacity(conc);
    for _ in 0..conc {
        let t = target.clone();
        let timeout = a.timeout;
        tasks.push(tokio::spawn(worker(t, deadline, per_worker, timeout)));
    }
    let mut all = WorkerResult::default();
    for t in tasks {
        // A worker ends by its deadline plus one request timeout at most.
        let r = t.await.map_err(|e| format!("worker failed: {e}"))?;
        all.latencies_us.extend(r.latencies_us);
        all.ok_2xx += r.ok_2xx;
        all.ok_3xx += r.ok_3xx;
        all.other_status += r.other_status;
        all.errors += r.errors;
        all.bytes += r.bytes;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let done = all.ok_2xx + all.ok_3xx + all.other_status;
    let v = json!({
        "kind": "http",
        "url": a.url,
        "concurrency": conc,
        "duration_s": elapsed,
        "requests": done,
        "rps": done as f64 / elapsed,
        "status_2xx": all.ok_2xx,
        "status_3xx": all.ok_3xx,
        "status_other": all.other_status,
        "errors": all.errors,
        "bytes": all.bytes,
        "p50_ms": ms(percentile(&all.latencies_us, 50.0)),
        "p99_ms": ms(percentile(&all.latencies_us, 99.0)),
        "p999_ms": ms(percentile(&all.latencies_us, 99.9)),
        "max_ms": ms(all.latencies_us.last().copied().unwrap_or(0)),
    });
    eprintln!(
        "http {}: {:.0} req/s, p50 {} ms, p99 {} ms, p99.9 {} ms, {} errors, {} non-2xx/3xx",
        a.url,
        v["rps"].as_f64().unwrap_or(0.0),
        v["p50_ms"],
        v["p99_ms"],
        v["p999_ms"],
        all.errors,
        all.other_status
    );
    Ok(v)
}

async fn worker(t: Target, deadline: Instant, budget: u64, timeout: Duration) -> WorkerResult {
    let mut r = WorkerResult::default();
    let mut conn = None;
    let mut sent = 0u64;
    while sent < budget && Instant::now() < deadline {
        sent += 1;
        let mut send = match conn.take() {
            Some(s) => s,
            None => match client::connect(&t, timeout).await {
                Ok(s) => s,
                Err(_) => {
                    r.errors += 1;
                    // Back off a little so a refused port does not spin the loop.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let req = match t.get(None) {
            Ok(q) => q,
            Err(_) => {
                r.errors += 1;
                break;
            }
        };
        let begin = Instant::now();
        let one = async {
            let resp = send.send_request(req).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut n = 0u64;
            while let Some(f) = body.frame().await {
                if let Some(d) = f?.data_ref() {
                    n += d.len() as u64;
                }
            }
            Ok::<_, BoxError>((status, n))
        };
        match tokio::time::timeout(timeout, one).await {
            Ok(Ok((status, n))) => {
                if r.latencies_us.len() < MAX_SAMPLES_PER_WORKER {
                    r.latencies_us.push(begin.elapsed().as_micros() as u64);
                }
                r.bytes += n;
                if status.is_success() {
                    r.ok_2xx += 1;
                } else if status.is_redirection() {
                    r.ok_3xx += 1;
                } else {
                    r.other_status += 1;
                }
                if !send.is_closed() {
                    conn = Some(send);
                }
            }
            _ => r.errors += 1,
        }
    }
    r
}
