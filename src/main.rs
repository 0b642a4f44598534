//! The `streamgate` command line: parse arguments, load config, call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use streamgate::{auth, config, demo, gateway, origin, server};

#[derive(Parser)]
#[command(
    name = "streamgate",
    version,
    about = "The front door of a live and on-demand video cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file; exits non-zero naming the bad key.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Run a media node (files, looped live HTTP-FLV, /stats) for demos, tests and benchmarks.
    Origin {
        /// Directory of media to serve.
        #[arg(long)]
        media: PathBuf,
        /// Address to listen on (repeat for several).
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: Vec<SocketAddr>,
        /// Node name reported by /stats.
        #[arg(long, default_value = "origin")]
        name: String,
        /// How live answers are delimited: `chunked`, or `close` (HTTP/1.0, no length, the end
        /// is the connection closing).
        #[arg(long, default_value = "chunked", value_parser = ["chunked", "close"])]
        live_framing: String,
    },
    /// Print a signed URL for routes with `auth = "signed"` (see docs/security.md).
    Sign {
        /// The path to sign, as it appears in the URL (e.g. /vod/movie.mp4).
        #[arg(long)]
        path: String,
        /// Sign a path prefix instead: alone, the path itself; with a value, that prefix (which
        /// must cover the path).
        #[arg(long, num_args = 0..=1, value_name = "PREFIX")]
        prefix: Option<Option<String>>,
        /// How long the URL stays valid ("90s", "30m", "1h").
        #[arg(long)]
        ttl: String,
        /// Bind the URL to this client address.
        #[arg(long)]
        ip: Option<String>,
        /// Take the keys (newest first) and public_url from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The secret, instead of a config file (visible in `ps`: prefer --config).
        #[arg(long)]
        secret: Option<String>,
        /// The key id (with --secret; with --config, picks a key other than the newest).
        #[arg(long)]
        kid: Option<String>,
        /// Base URL to print in front of the path (default: the config's public_url, else none).
        #[arg(long)]
        base: Option<String>,
    },
    /// Start two origin nodes and a gateway in front of them, and print URLs to try.
    Demo {
        /// Gateway address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Sample media directory (defaults to the repository's media/).
        #[arg(long)]
        media: Option<PathBuf>,
    },
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn print_ready(role: &str, r: &server::Running) {
    for (i, a) in r.addrs.iter().enumerate() {
        let scheme = if r.secure.get(i).copied().unwrap_or(false) {
            "https"
        } else {
            "http"
        };
        println!("streamgate {role} listening on {scheme}://{a}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::CheckConfig { file } = &cli.cmd {
        return match config::load(&file.to_string_lossy()) {
            Ok(s) => {
                let listen: Vec<String> = s
                    .server
                    .listen
                    .iter()
                    .map(|l| {
                        let pp = if l.proxy_protocol {
                            ", PROXY protocol"
                        } else {
                            ""
                        };
                        match &l.tls {
                            Some(t) => format!(
                                "https://{} ({} certificates{pp})",
                                l.addr,
                                t.certificates.len()
                            ),
                            None if pp.is_empty() => format!("http://{}", l.addr),
                            None => format!("http://{} (PROXY protocol)", l.addr),
                        }
                    })
                    .collect();
                println!(
                    "{}: ok ({} routes, {} nodes, listening on {})",
                    file.display(),
                    s.routes.len(),
                    s.nodes.len(),
                    listen.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: error: {e}", file.display());
                ExitCode::from(2)
            }
        };
    }
    if let Cmd::Sign {
        path,
        prefix,
        ttl,
        ip,
        config,
        secret,
        kid,
        base,
    } = &cli.cmd
    {
        let args = auth::signed::SignArgs {
            path: path.clone(),
            prefix: prefix.clone(),
            ttl: ttl.clone(),
            ip: ip.clone(),
            config: config.as_ref().map(|c| c.to_string_lossy().into_owned()),
            secret: secret.clone(),
            kid: kid.clone(),
            base: base.clone(),
        };
        return match args.run() {
            Ok(url) => {
                println!("{url}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logs();
    // Every server command (gateway, origin, demo) holds a descriptor per viewer.
    streamgate::fd_limit::raise();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = CancellationToken::new();
    let running = match cmd {
        Cmd::Serve { config } => {
            let settings = config::load(&config.to_string_lossy())?;
            let r = gateway::start_from_file(settings, config, shutdown.clone()).await?;
            print_ready("gateway", &r);
            if let Some(a) = r.metrics_addr {
                println!("streamgate metrics listening on http://{a}");
            }
            r
        }
        Cmd::Origin {
            media,
            listen,
            name,
            live_framing,
        } => {
            let tuning = origin::Tuning {
                live_framing: if live_framing == "close" {
                    origin::live::LiveFraming::Close
                } else {
                    origin::live::LiveFraming::Chunked
                },
                ..origin::Tuning::default()
            };
            let r = origin::start_with(
                origin::OriginOptions {
                    media,
                    listen,
                    name,
                },
                tuning,
                shutdown.clone(),
            )
            .await?;
            print_ready("origin", &r);
            r
        }
        Cmd::Demo { listen, media } => demo::start(listen, media, shutdown.clone()).await?,
        Cmd::CheckConfig { .. } | Cmd::Sign { .. } => return Ok(()),
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server::shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = running.task.await;
    Ok(())
}
