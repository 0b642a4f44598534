//! `streamgate demo`: two origin nodes on loopback, each holding a different live stream from the
//! sample media, and a gateway in front of them, started with an embedded config through the same
//! code paths as `serve` and `origin`. Prints the dashboard's URL first (with the admin token to
//! log in with), then URLs ready to paste.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::origin::{self, OriginOptions};
use crate::server::Running;
use crate::{config, gateway};

/// The embedded gateway config; placeholders are filled at start.
const DEMO_TOML: &str = include_str!("demo.toml");

/// Which sample files each node gets: node a holds cam1 (and the VOD files), node b holds cam2.
const NODE_A_FILES: &[&str] = &["cam1.flv", "movie.mp4", "snapshot.jpg", "hls/cam1"];
const NODE_B_FILES: &[&str] = &["cam2.flv"];

/// Where the sample media is: the given directory, `./media`, or the source tree's `media/`.
fn media_dir(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let candidates = match given {
        Some(p) => vec![p],
        None => vec![
            PathBuf::from("media"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("media"),
        ],
    };
    candidates
        .into_iter()
        .find(|p| p.join("cam1.flv").is_file())
        .ok_or_else(|| {
            "sample media not found (expected media/cam1.flv; pass --media DIR)".to_string()
        })
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(dst)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src, dst)?;
    }
    Ok(())
}

/// A node's own media directory, holding only its share of the sample files.
fn node_dir(media: &Path, root: &Path, name: &str, files: &[&str]) -> std::io::Result<PathBuf> {
    let dir = root.join(name);
    for f in files {
        let src = media.join(f);
        if src.exists() {
            copy_tree(&src, &dir.join(f))?;
        }
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A fresh admin token for this run, so a demo left running on a shared machine is not open to
/// anyone who read the README.
fn admin_token() -> String {
    use std::io::Read;
    let mut b = [0u8; 12];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if random.is_err() {
        // No /dev/urandom: the time and process id still differ from run to run.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..8].copy_from_slice(&(t as u64 ^ u64::from(std::process::id())).to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts the demo cluster; the returned task ends once everything has shut down.
pub async fn start(
    listen: SocketAddr,
    media: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<Running, Box<dyn std::error::Error>> {
    let media = media_dir(media)?;
    let root = std::env::temp_dir().join(format!("streamgate-demo-{}", std::process::id()));
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let dir_a = node_dir(&media, &root, "a", NODE_A_FILES)?;
    let dir_b = node_dir(&media, &root, "b", NODE_B_FILES)?;
    let node = |dir: PathBuf, name: &str| OriginOptions {
        listen: vec![loopback],
        name: name.to_string(),
        ..OriginOptions::new(dir)
    };
    let a = origin::start(node(dir_a, "a"), shutdown.clone()).await?;
    let b = origin::start(node(dir_b, "b"), shutdown.clone()).await?;
    let toml = DEMO_TOML
        .replace("{LISTEN}", &listen.to_string())
        .replace("{NODE_A}", &format!("http://{}", a.addrs[0]))
        .replace("{NODE_B}", &format!("http://{}", b.addrs[0]))
        .replace("{ADMIN_TOKEN}", &admin_token());
    let settings = config::parse(&toml)?;
    let token = settings.admin.token.clone().unwrap_or_default();
    let players = crate::admin::ui::VendorDirs::new(settings.ui.vendor_dir.as_deref()).installed();
    let gw = gateway::start(settings, shutdown).await?;
    let base = format!("http://{}", gw.addrs[0]);
    println!("streamgate gateway listening on {base}");
    println!();
    println!("streamgate dashboard: {base}/ui/  (log in with admin token {token})");
    if players
        .as_object()
        .is_some_and(|m| m.values().any(|v| v != true))
    {
        println!(
            "  the player libraries are not installed: run `npm ci --prefix web` (or `bash scripts/demo.sh`)"
        );
    }
    println!();
    println!(
        "streamgate demo: node a http://{} holds cam1, node b http://{} holds cam2.",
        a.addrs[0], b.addrs[0]
    );
    println!("Nodes stay hidden behind the gateway; try these (Ctrl-C stops everything):");
    println!("  live HTTP-FLV, node a:  ffplay '{base}/flv/cam1.flv?token=demo'");
    println!("  live HTTP-FLV, node b:  ffprobe -hide_banner '{base}/flv/cam2.flv?token=demo'");
    println!("  without the token:      curl -i '{base}/flv/cam1.flv'");
    println!("  unknown stream:         curl -i '{base}/flv/cam9.flv?token=demo'");
    println!("  HLS:                    ffplay '{base}/hls/cam1/index.m3u8'");
    println!("  MP4 with Range:         curl -r 0-99 -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' '{base}/vod/movie.mp4'");
    println!("  snapshot redirect:      curl -i '{base}/snap/snapshot.jpg'");
    println!("  Prometheus metrics:     curl '{base}/metrics'");
    let listeners = gw.listeners.clone();
    let task = tokio::spawn(async move {
        let _ = gw.task.await;
        let _ = a.task.await;
        let _ = b.task.await;
        let _ = std::fs::remove_dir_all(&root);
    });
    Ok(Running {
        addrs: vec![],
        secure: vec![],
        reload: Default::default(),
        listeners,
        task,
        metrics_addr: None,
    })
}
