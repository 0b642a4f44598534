//! `report`: the side-by-side table from a results directory written by `bench/run.sh`.
//!
//! Files read (missing ones show as `-`): `meta.json`, `download_{direct,streamgate,nginx}.json`,
//! `small_{…}.json`, `redirect_{streamgate,nginx}.json`, `small-log_…` / `redirect-log_…` (the
//! same with access logs on at both sides), `group_{streamgate,nginx}.json` (small objects
//! through a 3-member node group), `curve-{small,redirect}-c{C}_{…}.json` (the scaling curve
//! over C connections), `hls_{…}.json`, `live_{N}_{…}.json` (2.1 Mbit/s source) and
//! `live1m_{N}_{…}.json` (1 Mbit/s source). Writes `summary.json` (every row with its ratios and
//! target verdicts, the verdict totals, plus the raw files).
//!
//! Targets (issue 15, and the live/HLS ones before it) are [`Goal`]s on rows: the table's
//! `verdict` column and the totals printed under it are the one place they are judged.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Map, Value};

const TARGETS: [&str; 3] = ["direct", "streamgate", "nginx"];
/// Most files read from a results directory.
const MAX_FILES: usize = 1000;
/// Live first keyframe p99 at every viewer count, ms ("a joiner must not wait for the next
/// flush").
const TTFK_P99_MS: f64 = 10.0;
/// The many-viewer target: this many viewers of the 1 Mbit/s stream ...
const MANY_VIEWERS: u64 = 5000;
/// ... in at most this much RSS each (KiB); other counts keep the older 32 KiB bound.
const MANY_RSS_KIB: f64 = 16.0;
const RSS_KIB: f64 = 32.0;

/// How a row's target is judged.
#[derive(Clone, Copy)]
enum Goal {
    /// streamgate / nginx ≥ x
    VsNginxAtLeast(f64),
    /// streamgate / nginx ≤ x
    VsNginxAtMost(f64),
    /// streamgate / direct ≥ x
    VsDirectAtLeast(f64),
    /// streamgate ≤ x
    AtMost(f64),
    /// streamgate == x
    Equals(f64),
}

impl Goal {
    fn describe(self) -> String {
        match self {
            Goal::VsNginxAtLeast(x) => format!("sg/nginx >= {x}"),
            Goal::VsNginxAtMost(x) => format!("sg/nginx <= {x:.2}"),
            Goal::VsDirectAtLeast(x) => format!("sg/direct >= {x}"),
            Goal::AtMost(x) => format!("sg <= {x}"),
            Goal::Equals(x) => format!("sg == {x}"),
        }
    }

    fn met(self, sg: Option<f64>, vs_direct: Option<f64>, vs_nginx: Option<f64>) -> Option<bool> {
        match self {
            Goal::VsNginxAtLeast(x) => vs_nginx.map(|r| r >= x),
            Goal::VsNginxAtMost(x) => vs_nginx.map(|r| r <= x),
            Goal::VsDirectAtLeast(x) => vs_direct.map(|r| r >= x),
            Goal::AtMost(x) => sg.map(|v| v <= x),
            Goal::Equals(x) => sg.map(|v| (v - x).abs() < 1e-9),
        }
    }
}

struct Row {
    metric: String,
    values: [Option<f64>; 3],
    goals: Vec<Goal>,
}

fn read(dir: &Path, name: &str) -> Option<Value> {
    let s = std::fs::read_to_string(dir.join(name)).ok()?;
    serde_json::from_str(&s).ok()
}

fn num(v: &Option<Value>, key: &str) -> Option<f64> {
    v.as_ref()?.get(key)?.as_f64()
}

pub fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let meta = read(dir, "meta.json").unwrap_or(Value::Null);
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |metric: String, prefix: &str, key: &str, goals: Vec<Goal>| {
        let values = TARGETS.map(|t| num(&read(dir, &format!("{prefix}_{t}.json")), key));
        rows.push(Row {
            metric,
            values,
            goals,
        });
    };
    row(
        "1 GiB download, Gbit/s (median)".into(),
        "download",
        "gbps_median",
        vec![Goal::VsNginxAtLeast(1.25), Goal::VsDirectAtLeast(0.9)],
    );
    // Small objects and redirects, with access logs off and on (both sides alike).
    for (prefix, what) in [("", ""), ("-log", ", access log on")] {
        let small = format!("small{prefix}");
        let redirect = format!("redirect{prefix}");
        row(
            format!("small object{what}, req/s"),
            &small,
            "rps",
            vec![Goal::VsNginxAtLeast(1.2)],
        );
        row(
            format!("small object{what}, p99 ms"),
            &small,
            "p99_ms",
            vec![Goal::VsNginxAtMost(1.0)],
        );
        row(
            format!("small object{what}, p99.9 ms"),
            &small,
            "p999_ms",
            vec![],
        );
        row(
            format!("redirect 302{what}, req/s"),
            &redirect,
            "rps",
            vec![Goal::VsNginxAtLeast(1.1)],
        );
        row(
            format!("redirect 302{what}, p99 ms"),
            &redirect,
            "p99_ms",
            vec![Goal::VsNginxAtMost(1.0)],
        );
        row(
            format!("redirect 302{what}, p99.9 ms"),
            &redirect,
            "p999_ms",
            vec![],
        );
    }
    row(
        "node group of 3 (hash), req/s".into(),
        "group",
        "rps",
        vec![Goal::VsNginxAtLeast(1.0)],
    );
    row(
        "node group of 3 (hash), p99 ms".into(),
        "group",
        "p99_ms",
        vec![],
    );
    row(
        "HLS: node requests per segment".into(),
        "hls",
        "node_requests_per_segment",
        vec![Goal::AtMost(1.0)],
    );
    row(
        "HLS: CPU ms per viewer-second".into(),
        "hls",
        "cpu_ms_per_viewer_second",
        vec![Goal::VsNginxAtMost(0.5)],
    );
    row(
        "HLS: segment first byte p99 ms".into(),
        "hls",
        "segment_ttfb_p99_ms",
        vec![Goal::VsNginxAtMost(1.0)],
    );
    // The scaling curve: small objects and redirects against connections.
    let names = file_names(dir)?;
    for c in counts_of(&names, "curve-small-c") {
        let p = format!("curve-small-c{c}");
        row(
            format!("curve: small object, {c} conns, req/s"),
            &p,
            "rps",
            vec![],
        );
        row(
            format!("curve: small object, {c} conns, p99 ms"),
            &p,
            "p99_ms",
            vec![],
        );
    }
    for c in counts_of(&names, "curve-redirect-c") {
        let p = format!("curve-redirect-c{c}");
        row(
            format!("curve: redirect 302, {c} conns, req/s"),
            &p,
            "rps",
            vec![],
        );
        row(
            format!("curve: redirect 302, {c} conns, p99 ms"),
            &p,
            "p99_ms",
            vec![],
        );
    }
    let live = counts_of(&names, "live_")
        .into_iter()
        .map(|n| ("live", "", n));
    let live1m = counts_of(&names, "live1m_")
        .into_iter()
        .map(|n| ("live1m", " (1 Mbit/s)", n));
    for (prefix, src, n) in live.chain(live1m) {
        let p = format!("{prefix}_{n}");
        let rss = if n >= MANY_VIEWERS {
            MANY_RSS_KIB
        } else {
            RSS_KIB
        };
        row(
            format!("live {n}{src}: viewers connected"),
            &p,
            "connected",
            vec![Goal::Equals(n as f64)],
        );
        row(
            format!("live {n}{src}: CPU ms per viewer-second"),
            &p,
            "proc_cpu_ms_per_viewer_s",
            vec![Goal::VsNginxAtMost(1.0 / 3.0)],
        );
        row(
            format!("live {n}{src}: RSS KiB per viewer"),
            &p,
            "proc_rss_kib_per_viewer",
            vec![Goal::AtMost(rss)],
        );
        row(
            format!("live {n}{src}: upstream conns at origin"),
            &p,
            "origin_live_clients_max",
            vec![Goal::Equals(1.0)],
        );
        row(
            format!("live {n}{src}: first keyframe p50 ms"),
            &p,
            "ttfk_p50_ms",
            vec![Goal::AtMost(100.0)],
        );
        row(
            format!("live {n}{src}: first keyframe p99 ms"),
            &p,
            "ttfk_p99_ms",
            vec![Goal::AtMost(TTFK_P99_MS)],
        );
        row(
            format!("live {n}{src}: stream start, first keyframe ms"),
            &p,
            "stream_start_ttfk_ms",
            vec![],
        );
        row(
            format!("live {n}{src}: first byte p50 ms"),
            &p,
            "ttfb_p50_ms",
            vec![],
        );
        row(
            format!("live {n}{src}: kbit/s per viewer (mean)"),
            &p,
            "kbps_per_viewer_mean",
            vec![],
        );
        row(
            format!("live {n}{src}: kbit/s per viewer (min)"),
            &p,
            "kbps_per_viewer_min",
            vec![],
        );
        row(
            format!("live {n}{src}: stalls (gaps > 1 s)"),
            &p,
            "stalls",
            vec![Goal::Equals(0.0)],
        );
        row(
            format!("live {n}{src}: origin CPU s in window"),
            &p,
            "origin_cpu_s",
            vec![],
        );
    }

    let fmt = |v: Option<f64>| match v {
        None => "-".to_string(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| metric | direct | streamgate | nginx | sg/direct | sg/nginx | target | verdict |\n|---|---:|---:|---:|---:|---:|---|---|"
    );
    let mut json_rows = Vec::new();
    let (mut met_n, mut missed, mut unknown) = (0usize, Vec::new(), 0usize);
    for r in &rows {
        let [d, s, n] = r.values;
        let (rd, rn) = (ratio(s, d), ratio(s, n));
        let target = r
            .goals
            .iter()
            .map(|g| g.describe())
            .collect::<Vec<_>>()
            .join(", ");
        let verdicts: Vec<Option<bool>> = r.goals.iter().map(|g| g.met(s, rd, rn)).collect();
        for (g, v) in r.goals.iter().zip(&verdicts) {
            match v {
                Some(true) => met_n += 1,
                Some(false) => missed.push(format!("{} ({})", r.metric, g.describe())),
                None => unknown += 1,
            }
        }
        let met = verdicts
            .iter()
            .map(|m| match m {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "?",
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.metric,
            fmt(d),
            fmt(s),
            fmt(n),
            rd.map_or("-".into(), |x| format!("{x:.2}")),
            rn.map_or("-".into(), |x| format!("{x:.2}")),
            target,
            met
        );
        json_rows.push(json!({
            "metric": r.metric, "direct": d, "streamgate": s, "nginx": n,
            "sg_over_direct": rd, "sg_over_nginx": rn, "target": target, "met": verdicts,
        }));
    }
    let _ = writeln!(
        out,
        "\ntargets: {met_n} met, {} missed, {unknown} not measured",
        missed.len()
    );
    for m in &missed {
        let _ = writeln!(out, "- missed: {m}");
    }
    print!("{out}");
    let mut raw = Map::new();
    for e in std::fs::read_dir(dir)?.take(MAX_FILES).flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && name != "summary.json" {
            if let Some(v) = read(dir, &name) {
                raw.insert(name, v);
            }
        }
    }
    let summary = json!({
        "meta": meta, "rows": json_rows, "table_markdown": out, "raw": raw,
        "targets": { "met": met_n, "missed": missed, "not_measured": unknown },
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(())
}

/// The file names in `dir` (at most [`MAX_FILES`]).
fn file_names(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .take(MAX_FILES)
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// The numbers N of files named `{prefix}{N}_…`, sorted, once each.
fn counts_of(names: &[String], prefix: &str) -> Vec<u64> {
    let mut v: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.split('_').next()?.parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_found_per_prefix() {
        let names: Vec<String> = [
            "live_50_direct.json",
            "live_200_nginx.json",
            "live1m_5000_streamgate.json",
            "live1m_50_nginx.json",
            "curve-small-c16_nginx.json",
            "curve-small-c1_direct.json",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(counts_of(&names, "live_"), vec![50, 200]);
        assert_eq!(counts_of(&names, "live1m_"), vec![50, 5000]);
        assert_eq!(counts_of(&names, "curve-small-c"), vec![1, 16]);
    }

    #[test]
    fn goals_judge_ratios_and_values() {
        assert_eq!(
            Goal::VsNginxAtMost(1.0).met(None, None, Some(0.9)),
            Some(true)
        );
        assert_eq!(
            Goal::VsDirectAtLeast(0.9).met(None, Some(0.89), None),
            Some(false)
        );
        assert_eq!(
            Goal::AtMost(TTFK_P99_MS).met(Some(10.0), None, None),
            Some(true)
        );
        assert_eq!(Goal::AtMost(MANY_RSS_KIB).met(None, None, None), None);
    }
}
