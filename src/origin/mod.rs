//! `streamgate origin`: a real media node for demos, tests and benchmarks.
//!
//! It serves a directory two ways:
//! - `/files/<path>`: static files with ranges and conditional requests ([`files`]);
//! - `/live/NAME.flv`: every `NAME.flv` at the top of the directory, replayed forever in real
//!   time as an HTTP-FLV live stream with a GOP cache, shared by all its viewers ([`live`]).
//!
//! plus `/stats` (viewer counts and file requests the tests and benchmarks read, [`stats`]) and
//! `/healthz`. A `.m3u8` asked with LL-HLS `_HLS_msn` is held until the file holds that
//! segment ([`blocking`]).
//! Serving itself (listeners, limits, shutdown) is [`crate::server`]'s.

pub mod blocking;
pub mod files;
pub mod live;
pub mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::body::RequestBody;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::body::{full, json_response, Body};
use crate::flv::FlvError;
use crate::server::{self, Handler, Running, ServeOptions};

/// Settings of one origin node.
#[derive(Clone, Debug)]
pub struct OriginOptions {
    /// Directory whose files are served at `/files/…` and whose `NAME.flv` are live at `/live/NAME.flv`.
    pub media: PathBuf,
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Node name reported by `/stats`.
    pub name: String,
}

impl OriginOptions {
    /// Options listening on an ephemeral loopback port, named "origin".
    pub fn new(media: impl Into<PathBuf>) -> Self {
        Self {
            media: media.into(),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            name: "origin".into(),
        }
    }
}

/// Limits of one origin that rarely need changing; [`start`] uses the defaults,
/// [`start_with`] takes them explicitly.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Bytes a live viewer may have queued (beyond its start-up burst) before it skips to the
    /// next keyframe; still backed up there, it is cut off. A viewer that cannot keep up
    /// must never slow the stream or the other viewers; past this it is disconnected.
    pub live_queue_bytes: usize,
    /// Most bytes kept in a stream's GOP cache. A GOP longer than this is not cached: new
    /// viewers then wait for the next keyframe instead of the node holding unbounded memory.
    pub gop_cache_bytes: usize,
    /// How long a live stream keeps running after its last viewer left, so a viewer that
    /// reconnects (or a gateway that retries) finds it warm.
    pub live_linger: Duration,
    /// Largest FLV file replayed as a live stream (it is held in memory while live).
    pub max_live_file_bytes: u64,
    /// Most live streams running at once (one reader task and one file in memory each).
    pub max_live_streams: usize,
    /// Size of the reads a `/files/` body makes; large enough that a 1 GiB download is a few
    /// thousand reads, small enough that a slow client does not pin much memory.
    pub file_chunk_bytes: usize,
    /// How live answers are delimited: chunked (default) or close-delimited HTTP/1.0, as some
    /// media servers do (tests kill such a node to check the gateway's failover).
    pub live_framing: live::LiveFraming,
    /// Connection limits and timeouts.
    pub serve: ServeOptions,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            live_queue_bytes: 2 * 1024 * 1024,
            gop_cache_bytes: 16 * 1024 * 1024,
            live_linger: Duration::from_secs(3),
            max_live_file_bytes: 256 * 1024 * 1024,
            max_live_streams: 1024,
            file_chunk_bytes: 256 * 1024,
            live_framing: live::LiveFraming::Chunked,
            serve: ServeOptions::default(),
        }
    }
}

/// Why a request could not be served. Mapped to a status and JSON body in one place,
/// [`OriginError::to_response`].
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("not found")]
    NotFound,
    #[error("bad path: {0}")]
    BadPath(&'static str),
    /// The origin serves files and live streams to GET and HEAD only (the `Allow` header says
    /// so too).
    #[error("this path serves only GET, HEAD")]
    MethodNotAllowed,
    #[error("no live stream named {0:?}")]
    StreamNotFound(String),
    #[error("live stream {name:?} cannot be played: {source}")]
    BadStream { name: String, source: FlvError },
    #[error("live stream file {0:?} has no audio or video tags to replay")]
    EmptyStream(String),
    #[error("live stream file {0:?} is too large to replay")]
    StreamTooLarge(String),
    #[error("too many live streams running")]
    TooManyStreams,
    #[error("the node is shutting down")]
    ShuttingDown,
    /// An LL-HLS blocking reload whose segment or part did not appear in 3 × the target
    /// duration.
    #[error("the playlist did not reach the requested segment in time")]
    PlaylistNotReady,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl OriginError {
    /// The status and the stable code clients see.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::StreamNotFound(_) => (StatusCode::NOT_FOUND, "stream_not_found"),
            Self::BadStream { .. } | Self::EmptyStream(_) => {
                (StatusCode::BAD_GATEWAY, "bad_stream")
            }
            Self::StreamTooLarge(_) => (StatusCode::INSUFFICIENT_STORAGE, "stream_too_large"),
            Self::TooManyStreams | Self::ShuttingDown | Self::PlaylistNotReady => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            Self::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn to_response(&self) -> Response<Body> {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(error = %self, "origin request failed");
        }
        let mut resp = json_response(
            status,
            &json!({ "error": code, "message": self.to_string() }),
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

/// The origin's request handler: routes by path prefix.
struct Origin {
    name: String,
    files: files::Files,
    live: Arc<live::Live>,
    stats: Arc<stats::Stats>,
}

impl Handler for Origin {
    async fn call(
        &self,
        req: Request<RequestBody>,
        _conn: crate::server::ConnInfo,
    ) -> Response<Body> {
        let path = req.uri().path();
        let result = if path == "/healthz" {
            Ok(text(StatusCode::OK, "ok\n"))
        } else if path == "/stats" {
            Ok(json_response(
                StatusCode::OK,
                &self.stats.snapshot(&self.name),
            ))
        } else if let Some(rest) = path.strip_prefix("/files/") {
            self.files.serve(&req, rest).await
        } else if let Some(rest) = path.strip_prefix("/live/") {
            match *req.method() {
                Method::GET | Method::HEAD => {
                    self.live.play(rest, req.method() == Method::HEAD).await
                }
                _ => Err(OriginError::MethodNotAllowed),
            }
        } else {
            Err(OriginError::NotFound)
        };
        result.unwrap_or_else(|e| e.to_response())
    }
}

fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    let mut r = Response::new(full(s));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Binds and starts the origin in the background, with default [`Tuning`].
///
/// Fails if the media directory does not exist or an address cannot be bound. Live streams,
/// their reader tasks and every live body end when `shutdown` is cancelled.
pub async fn start(opts: OriginOptions, shutdown: CancellationToken) -> std::io::Result<Running> {
    start_with(opts, Tuning::default(), shutdown).await
}

/// [`start`] with explicit limits.
pub async fn start_with(
    opts: OriginOptions,
    tuning: Tuning,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let root = tokio::fs::canonicalize(&opts.media).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("media directory {:?}: {e}", opts.media))
    })?;
    if !tokio::fs::metadata(&root).await?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("media {:?} is not a directory", opts.media),
        ));
    }
    let stats = Arc::new(stats::Stats::new(tuning.max_live_streams));
    // Known streams show up in /stats with zero viewers before anyone watches them.
    for name in live::list_streams(&root).await {
        stats.stream(&name);
    }
    let live = live::Live::new(root.clone(), &tuning, stats.clone(), shutdown.clone());
    let handler = Origin {
        name: opts.name.clone(),
        files: files::Files::new(root, tuning.file_chunk_bytes, stats.clone()),
        live,
        stats,
    };
    server::start(&opts.listen, Arc::new(handler), tuning.serve, shutdown).await
}
