//! `GET /live/NAME.flv`: every `NAME.flv` at the top of the media directory replayed forever,
//! in real time, as an HTTP-FLV live stream.
//!
//! Each stream is the one fan-out engine (`crate::fanout::Core`) fed by a file looper
//! (`crate::fanout::looper`), started by its first viewer: the same start-up and GOP cache,
//! slow-viewer policy (skip to the next keyframe, then cut), timestamps and lifecycle as the
//! gateway's hubs. Cut-off viewers, departed viewers and ended streams are uncounted at once, so
//! `/stats` stays exact.
//!
//! A stream runs while it has viewers, lingers `live_linger` after the last one leaves, then
//! stops and frees its file. A corrupt file plays its valid prefix once, logs the error and
//! ends its viewers' responses; other streams are unaffected.
//!
//! With [`LiveFraming::Close`] the answer is HTTP/1.0-style close-delimited (no length, the end
//! of the body is the connection closing), as some media servers send it: tests kill such a node
//! to check that a gateway takes that EOF as a break, not an end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode, Version};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use super::{OriginError, Tuning};
use crate::body::{empty, Body};
use crate::fanout::looper::{self, FileError, FileSource};
use crate::fanout::{Core, LiveCounters, Settings};
use crate::router::valid_stream_name;

/// Most stream files listed at start-up (for `/stats`).
const MAX_LISTED: usize = 1024;
/// Media time a viewer may lag before it skips to the next keyframe (the gateway's default).
const VIEWER_QUEUE_DURATION: Duration = Duration::from_secs(10);

/// How a live answer's body is delimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LiveFraming {
    /// HTTP/1.1 chunked: the final chunk marks a clean end.
    #[default]
    Chunked,
    /// HTTP/1.0, no length: the body ends when the connection closes (so a crash and an end look
    /// the same to the reader).
    Close,
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the data
/// consistent before anything that could panic, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Names of the `NAME.flv` files at the top of `root`, at most `MAX_LISTED`.
pub async fn list_streams(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(mut dir) = tokio::fs::read_dir(root).await else {
        return out;
    };
    while let Ok(Some(entry)) = dir.next_entry().await {
        if out.len() >= MAX_LISTED {
            break;
        }
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".flv")) else {
            continue;
        };
        if valid_stream_name(name)
            && entry
                .file_type()
                .await
                .map(|t| t.is_file())
                .unwrap_or(false)
        {
            out.push(name.to_owned());
        }
    }
    out.sort();
    out
}

/// All live streams of one origin.
pub struct Live {
    /// Canonical media root.
    root: PathBuf,
    /// Running streams by name. Bounded by `max_streams`; an entry leaves when its looper stops.
    streams: Mutex<HashMap<String, Arc<Core>>>,
    /// What every stream's engine is held to.
    settings: Settings,
    /// Largest file replayed (it is held in memory while live).
    max_file: u64,
    max_streams: usize,
    framing: LiveFraming,
    /// Node-wide engine counters (the origin reports per-stream ones in `/stats`).
    counters: Arc<LiveCounters>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl Live {
    pub fn new(
        root: PathBuf,
        opts: &Tuning,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            root,
            streams: Mutex::new(HashMap::new()),
            settings: Settings {
                gop_cache: true,
                linger: opts.live_linger,
                viewer_queue_bytes: opts.live_queue_bytes.max(64 * 1024),
                viewer_queue_duration: VIEWER_QUEUE_DURATION,
                // Bounded by the server's connection limit (one viewer per connection).
                max_viewers: usize::MAX,
                max_gop_bytes: opts.gop_cache_bytes,
            },
            max_file: opts.max_live_file_bytes,
            max_streams: opts.max_live_streams.max(1),
            framing: opts.live_framing,
            counters: Arc::new(LiveCounters::default()),
            stats,
            shutdown,
        })
    }

    /// Answers `GET|HEAD /live/<rest>`.
    pub async fn play(
        self: &Arc<Self>,
        rest: &str,
        head: bool,
    ) -> Result<Response<Body>, OriginError> {
        let name = rest
            .strip_suffix(".flv")
            .filter(|n| valid_stream_name(n))
            .ok_or_else(|| OriginError::StreamNotFound(rest.to_owned()))?;
        if self.shutdown.is_cancelled() {
            return Err(OriginError::ShuttingDown);
        }
        let body = if head {
            self.check_exists(name).await?;
            empty()
        } else {
            self.subscribe(name).await?.boxed()
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::OK;
        if self.framing == LiveFraming::Close {
            // hyper sends an HTTP/1.0 answer of unknown length close-delimited.
            *resp.version_mut() = Version::HTTP_10;
        }
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("video/x-flv"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Browser players (flv.js) fetch cross-origin in demos.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        Ok(resp)
    }

    /// The stream's file, refusing anything that is not a regular file inside the root.
    async fn file_of(&self, name: &str) -> Result<(PathBuf, u64), OriginError> {
        let not_found = || OriginError::StreamNotFound(name.to_owned());
        let path = tokio::fs::canonicalize(self.root.join(format!("{name}.flv")))
            .await
            .map_err(|_| not_found())?;
        if !path.starts_with(&self.root) {
            return Err(not_found());
        }
        let meta = tokio::fs::metadata(&path).await.map_err(|_| not_found())?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok((path, meta.len()))
    }

    async fn check_exists(&self, name: &str) -> Result<(), OriginError> {
        if self.running(name).is_some() {
            return Ok(());
        }
        self.file_of(name).await.map(|_| ())
    }

    fn running(&self, name: &str) -> Option<Arc<Core>> {
        lock(&self.streams).get(name).cloned()
    }

    /// Joins the running stream `name`, starting it (loading and parsing its file) if needed.
    async fn subscribe(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<crate::fanout::ViewerBody, OriginError> {
        // Fast path: the stream is running. A stream that ended meanwhile (linger) answers
        // `Ended`, and a new one starts below.
        if let Some(core) = self.running(name) {
            if let Ok(v) = core.attach() {
                return Ok(v);
            }
        }
        let (path, len) = self.file_of(name).await?;
        if len > self.max_file {
            return Err(OriginError::StreamTooLarge(name.to_owned()));
        }
        let data = tokio::fs::read(&path).await?;
        let src = FileSource::parse(Bytes::from(data)).map_err(|e| {
            let err = match e {
                FileError::Bad(e) => e,
                FileError::Empty => return OriginError::EmptyStream(name.to_owned()),
            };
            tracing::error!(stream = name, error = %err, "live stream file has no playable tags");
            OriginError::BadStream {
                name: name.to_owned(),
                source: err,
            }
        })?;
        let stats = self.stats.stream(name).ok_or(OriginError::TooManyStreams)?;

        let mut streams = lock(&self.streams);
        // Another first viewer may have started it while we were loading: join theirs.
        if let Some(core) = streams.get(name).cloned() {
            if let Ok(v) = core.attach() {
                return Ok(v);
            }
            streams.remove(name); // ended: replaced below
        }
        if streams.len() >= self.max_streams {
            return Err(OriginError::TooManyStreams);
        }
        let core = Core::new(
            name,
            self.settings.clone(),
            self.counters.clone(),
            Some(stats),
        );
        looper::start(&core, &src);
        let viewer = core.attach().map_err(|_| OriginError::ShuttingDown)?;
        streams.insert(name.to_owned(), core.clone());
        drop(streams);
        tracing::info!(
            stream = name,
            tags = src.media_tags(),
            "live stream started"
        );
        let live = self.clone();
        tokio::spawn(async move {
            let reason = looper::run(core.clone(), src, live.shutdown.clone()).await;
            live.forget(&core);
            tracing::info!(stream = %core.name(), reason, "live stream stopped");
        });
        Ok(viewer)
    }

    /// Removes `core` from the running set if it is still the one registered under its name.
    fn forget(&self, core: &Arc<Core>) {
        let mut streams = lock(&self.streams);
        if streams
            .get(core.name())
            .is_some_and(|s| Arc::ptr_eq(s, core))
        {
            streams.remove(core.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_router() {
        assert!(valid_stream_name("cam1"));
        assert!(valid_stream_name("a.b-c_d"));
        assert!(!valid_stream_name(""));
        assert!(!valid_stream_name(".."));
        assert!(!valid_stream_name("a/b"));
        assert!(!valid_stream_name(&"x".repeat(129)));
    }
}
