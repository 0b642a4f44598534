//! `download`: GET one large object `runs` times, reading it to the end; reports Gbit/s.

use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::client::{self, BoxError, Target};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// URL of the object (http://IP:PORT/path, loopback only).
    #[arg(long)]
    url: String,
    /// Downloads, one after the other (the median and best are reported).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Longest one download may take.
    #[arg(long, default_value = "120s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

const MAX_RUNS: u32 = 100;

pub async fn run(a: Args) -> Result<Value, BoxError> {
    let target = Target::parse(&a.url)?;
    let mut gbps = Vec::new();
    let mut bytes_each = 0u64;
    for _ in 0..a.runs.clamp(1, MAX_RUNS) {
        let (bytes, secs) = tokio::time::timeout(a.timeout, once(&target))
            .await
            .map_err(|_| format!("{}: download took longer than {:?}", a.url, a.timeout))??;
        bytes_each = bytes;
        gbps.push(bytes as f64 * 8.0 / secs / 1e9);
    }
    let mut sorted = gbps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let best = sorted[sorted.len() - 1];
    eprintln!(
        "download {}: {bytes_each} bytes, median {median:.2} Gbit/s, best {best:.2} Gbit/s",
        a.url
    );
    Ok(json!({
        "kind": "download",
        "url": a.url,
        "bytes": bytes_each,
        "runs_gbps": gbps,
        "gbps_median": median,
        "gbps_best": best,
    }))
}

/// One download: (body bytes, seconds from sending the request to the last byte).
async fn once(t: &Target) -> Result<(u64, f64), BoxError> {
    let start = Instant::now();
    let mut send = client::connect(t, Duration::from_secs(5)).await?;
    let resp = send.send_request(t.get(None)?).await?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()).into());
    }
    let expected = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Some(d) = f?.data_ref() {
            n += d.len() as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(e) = expected {
        if e != n {
            return Err(format!("body was {n} bytes, Content-Length said {e}").into());
        }
    }
    if n == 0 {
        return Err("empty body".into());
    }
    Ok((n, secs))
}
