//! `streamgate demo` (being written).

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::server::Running;

/// Starts the demo cluster.
pub async fn start(
    listen: SocketAddr,
    media: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<Running, Box<dyn std::error::Error>> {
    let _ = (listen, media, shutdown);
    Err("demo not built yet".into())
}
