//! `streamgate-bench`: the load generator behind `bench/run.sh`.
//!
//! Subcommands, each printing one JSON object on stdout (a human summary goes to stderr):
//! - `live`: N concurrent HTTP-FLV viewers of a URL, ramped at a bounded rate, each parsing
//!   tags; time to first byte / first video keyframe, delivered bitrate, stalls, and the CPU
//!   and RSS of the process under test;
//! - `http`: a fixed-concurrency keep-alive request loop (requests/s, latency percentiles);
//! - `download`: large-object throughput;
//! - `hls`: N hls.js-like viewers of a live HLS playlist: segment time to first byte, CPU per
//!   viewer-second, node requests per segment (from the origin's `/stats`);
//! - `report`: reads a results directory written by `bench/run.sh` and prints the table.
//!
//! Every loop here is bounded in count and in time and stops by itself. Only loopback
//! addresses are accepted as targets.
#![forbid(unsafe_code)]

mod client;
mod download;
mod hls;
mod http_loop;
mod live;
mod procstat;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator and report printer for the streamgate benchmarks.
#[derive(Parser)]
#[command(name = "streamgate-bench", version)]
struct Cli {
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2, global = true)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N concurrent HTTP-FLV viewers of one URL.
    Live(live::Args),
    /// Fixed-concurrency keep-alive request loop.
    Http(http_loop::Args),
    /// Large-object download throughput.
    Download(download::Args),
    /// N hls.js-like viewers of one live HLS media playlist.
    Hls(hls::Args),
    /// Print the side-by-side table from a results directory and write summary.json there.
    Report {
        /// Directory holding the per-measurement JSON files.
        dir: PathBuf,
    },
    /// Print a free loopback TCP port (for configs that need a fixed port).
    FreePort,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Report { dir } = &cli.cmd {
        return match report::run(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("streamgate-bench report: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Cmd::FreePort = &cli.cmd {
        return match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => {
                println!("{}", a.port());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("streamgate-bench free-port: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.clamp(1, 64))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamgate-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Live(a) => live::run(a).await,
            Cmd::Http(a) => http_loop::run(a).await,
            Cmd::Download(a) => download::run(a).await,
            Cmd::Hls(a) => hls::run(a).await,
            Cmd::Report { .. } | Cmd::FreePort => Ok(serde_json::Value::Null),
        }
    });
    // Viewer and worker tasks are all joined or cancelled by now; do not wait on stragglers.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses durations like `500ms`, `15s`, `2m` (plain numbers are seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    // The same syntax as the gateway's config ("500ms", "15s", "2m").
    streamgate::config::parse_duration(s).ok_or_else(|| format!("bad duration {s:?}"))
}
