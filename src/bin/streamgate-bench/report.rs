//! `report`: the side-by-side table from a results directory written by `bench/run.sh`.
//!
//! Files read (missing ones show as `-`): `meta.json`, `download_{direct,streamgate,nginx}.json`,
//! `small_{…}.json`, `redirect_{streamgate,nginx}.json`, `group_{streamgate,nginx}.json` (small
//! objects through a 3-member node group), `hls_{…}.json`, `live_{N}_{…}.json`. Writes
//! `summary.json` (every row with its ratios and target verdict, plus the raw files).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Map, Value};

const TARGETS: [&str; 3] = ["direct", "streamgate", "nginx"];
/// Most files read from a results directory.
const MAX_FILES: usize = 1000;

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
        vec![Goal::VsNginxAtLeast(1.25), Goal::VsDirectAtLeast(0.8)],
    );
    row(
        "small object, req/s".into(),
        "small",
        "rps",
        vec![Goal::VsNginxAtLeast(1.2)],
    );
    row("small object, p99 ms".into(), "small", "p99_ms", vec![]);
    row("small object, p99.9 ms".into(), "small", "p999_ms", vec![]);
    row(
        "redirect 302, req/s".into(),
        "redirect",
        "rps",
        vec![Goal::VsNginxAtLeast(1.0)],
    );
    row(
        "redirect 302, p99 ms".into(),
        "redirect",
        "p99_ms",
        vec![Goal::VsNginxAtMost(1.0)],
    );
    row(
        "redirect 302, p99.9 ms".into(),
        "redirect",
        "p999_ms",
        vec![],
    );
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
    let mut counts: Vec<u64> = std::fs::read_dir(dir)?
        .take(MAX_FILES)
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("live_")?.split('_').next()?.parse().ok()
        })
        .collect();
    counts.sort_unstable();
    counts.dedup();
    for n in counts {
        let p = format!("live_{n}");
        row(
            format!("live {n}: viewers connected"),
            &p,
            "connected",
            vec![Goal::Equals(n as f64)],
        );
        row(
            format!("live {n}: CPU ms per viewer-second"),
            &p,
            "proc_cpu_ms_per_viewer_s",
            vec![Goal::VsNginxAtMost(1.0 / 3.0)],
        );
        row(
            format!("live {n}: RSS KiB per viewer"),
            &p,
            "proc_rss_kib_per_viewer",
            vec![Goal::AtMost(32.0)],
        );
        row(
            format!("live {n}: upstream conns at origin"),
            &p,
            "origin_live_clients_max",
            vec![Goal::Equals(1.0)],
        );
        row(
            format!("live {n}: first keyframe p50 ms"),
            &p,
            "ttfk_p50_ms",
            vec![Goal::AtMost(100.0)],
        );
        row(
            format!("live {n}: first keyframe p99 ms"),
            &p,
            "ttfk_p99_ms",
            vec![],
        );
        row(
            format!("live {n}: first byte p50 ms"),
            &p,
            "ttfb_p50_ms",
            vec![],
        );
        row(
            format!("live {n}: kbit/s per viewer (mean)"),
            &p,
            "kbps_per_viewer_mean",
            vec![],
        );
        row(
            format!("live {n}: kbit/s per viewer (min)"),
            &p,
            "kbps_per_viewer_min",
            vec![],
        );
        row(
            format!("live {n}: stalls (gaps > 1 s)"),
            &p,
            "stalls",
            vec![Goal::Equals(0.0)],
        );
        row(
            format!("live {n}: origin CPU s in window"),
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
        "| metric | direct | streamgate | nginx | sg/direct | sg/nginx | target | met |\n|---|---:|---:|---:|---:|---:|---|---|"
    );
    let mut json_rows = Vec::new();
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
    let summary = json!({ "meta": meta, "rows": json_rows, "table_markdown": out, "raw": raw });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(())
}
