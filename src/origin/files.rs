//! `GET/HEAD /files/<path>`: static files with single ranges, validators and conditional
//! requests, streamed from disk.
//!
//! Safety first: the request path is decoded once, segment by segment, and refused if it could
//! name anything outside the media directory (dot segments, encoded separators, NUL); then the
//! resolved file is canonicalized and must still lie under the canonical media root, which
//! catches symlinks pointing out.
//!
//! Bodies are read in `chunk`-sized blocking reads, one read ahead of the network, so a large
//! download costs two chunks of memory and the disk and socket overlap.

use std::fs::Metadata;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use super::stats::Stats;
use super::OriginError;
use crate::body::{empty, Body, BoxError};

/// The static file service of one origin.
pub struct Files {
    /// Canonical media root; every served file must canonicalize to a path under it.
    root: PathBuf,
    /// Size of each disk read.
    chunk: usize,
    stats: Arc<Stats>,
}

impl Files {
    pub fn new(root: PathBuf, chunk: usize, stats: Arc<Stats>) -> Self {
        Self {
            root,
            chunk: chunk.clamp(4096, 16 * 1024 * 1024),
            stats,
        }
    }

    /// Answers a request for `rest`, the still percent-encoded path after `/files/`.
    pub async fn serve<B>(
        &self,
        req: &Request<B>,
        rest: &str,
    ) -> Result<Response<Body>, OriginError> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return Err(OriginError::MethodNotAllowed),
        };
        let rel = relative_path(rest)?;
        self.stats.file_request(rest, req.uri().query());
        if let Some(want) = super::blocking::wanted(req.uri().query()).filter(|_| {
            rel.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("m3u8"))
        }) {
            super::blocking::hold(&self.root.join(&rel), want)
                .await
                .map_err(|r| match r {
                    super::blocking::Refused::TooFarAhead => {
                        OriginError::BadPath("_HLS_msn is more than two segments ahead")
                    }
                    super::blocking::Refused::TimedOut => OriginError::PlaylistNotReady,
                })?;
        }
        let root = self.root.clone();
        // One trip to the blocking pool for resolve + open + stat.
        let (file, meta) = tokio::task::spawn_blocking(move || open_under(&root, &rel))
            .await
            .map_err(|e| OriginError::Io(std::io::Error::other(e)))??;

        let len = meta.len();
        let mtime = meta.modified().ok();
        let validators = Validators::new(len, mtime);
        let headers = req.headers();

        if validators.not_modified(headers) {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            validators.apply(resp.headers_mut());
            return Ok(resp);
        }

        let range = match headers.get(header::RANGE) {
            Some(r) if validators.if_range_allows(headers) => parse_range(r.as_bytes(), len),
            _ => RangeRequest::Full,
        };
        let (status, start, count) = match range {
            RangeRequest::Full => (StatusCode::OK, 0, len),
            RangeRequest::Single { start, end } => {
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            RangeRequest::Unsatisfiable => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                insert(
                    resp.headers_mut(),
                    header::CONTENT_RANGE,
                    format!("bytes */{len}"),
                );
                insert(resp.headers_mut(), header::ACCEPT_RANGES, "bytes".into());
                return Ok(resp);
            }
        };

        let body = if head || count == 0 {
            empty()
        } else {
            FileBody::new(file, start, count, self.chunk, self.stats.clone()).boxed()
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(Path::new(rest))),
        );
        insert(h, header::CONTENT_LENGTH, count.to_string());
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if status == StatusCode::PARTIAL_CONTENT {
            let end = start + count - 1;
            insert(
                h,
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{len}"),
            );
        }
        validators.apply(h);
        Ok(resp)
    }
}

fn insert(h: &mut HeaderMap, name: header::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}

/// Turns the encoded path after `/files/` into a relative path that cannot leave the root
/// lexically: no `.`/`..` segments, no empty segments, no encoded `/` or `\`, no NUL.
pub fn relative_path(encoded: &str) -> Result<PathBuf, OriginError> {
    if encoded.is_empty() {
        return Err(OriginError::NotFound);
    }
    let lower = encoded.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || encoded.contains('\\') {
        return Err(OriginError::BadPath("encoded separator"));
    }
    let mut out = PathBuf::new();
    for seg in encoded.split('/') {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(seg).collect();
        if bytes.contains(&0) {
            return Err(OriginError::BadPath("NUL in path"));
        }
        let seg =
            String::from_utf8(bytes).map_err(|_| OriginError::BadPath("path is not UTF-8"))?;
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\') {
            return Err(OriginError::BadPath("dot or empty segment"));
        }
        out.push(&seg);
    }
    // Belt and braces: the result must consist of plain names only.
    if !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(OriginError::BadPath("not a plain relative path"));
    }
    Ok(out)
}

/// Resolves `rel` under `root` (canonical), refusing anything that resolves outside it (a
/// symlink pointing out) and anything that is not a regular file.
fn open_under(root: &Path, rel: &Path) -> Result<(std::fs::File, Metadata), OriginError> {
    let canonical = std::fs::canonicalize(root.join(rel)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => OriginError::NotFound,
        _ => OriginError::Io(e),
    })?;
    if !canonical.starts_with(root) {
        tracing::warn!(path = %rel.display(), "refusing a path that resolves outside the media root");
        return Err(OriginError::NotFound);
    }
    let file = std::fs::File::open(&canonical)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(OriginError::NotFound);
    }
    Ok((file, meta))
}

/// The Content-Type for a file name's extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "flv" => "video/x-flv",
        "mp4" | "m4v" => "video/mp4",
        "m4s" => "video/iso.segment",
        "m3u8" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "ts" => "video/mp2t",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// ETag and Last-Modified of one file version, and the conditional-request logic using them.
struct Validators {
    /// Strong ETag from size and modification time: cheap, and changes whenever a rewrite
    /// changes either.
    etag: String,
    /// Modification time truncated to whole seconds (HTTP-date precision).
    mtime_secs: Option<u64>,
}

impl Validators {
    fn new(len: u64, mtime: Option<SystemTime>) -> Self {
        let since = mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let nanos = since.map_or(0, |d| d.as_nanos());
        Self {
            etag: format!("\"{len:x}-{nanos:x}\""),
            mtime_secs: since.map(|d| d.as_secs()),
        }
    }

    fn last_modified(&self) -> Option<String> {
        self.mtime_secs
            .map(|s| httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(s)))
    }

    fn apply(&self, h: &mut HeaderMap) {
        insert(h, header::ETAG, self.etag.clone());
        if let Some(lm) = self.last_modified() {
            insert(h, header::LAST_MODIFIED, lm);
        }
    }

    /// RFC 9110 §13.2.2: If-None-Match wins over If-Modified-Since when both are present.
    fn not_modified(&self, h: &HeaderMap) -> bool {
        if let Some(inm) = h.get(header::IF_NONE_MATCH) {
            let Ok(inm) = inm.to_str() else { return false };
            return inm
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == self.etag);
        }
        match (
            h.get(header::IF_MODIFIED_SINCE).and_then(parse_date),
            self.mtime_secs,
        ) {
            (Some(since), Some(mtime)) => mtime <= since,
            _ => false,
        }
    }

    /// If-Range: the range applies only if the client's validator still matches (strong
    /// comparison for an ETag, exact equality for a date).
    fn if_range_allows(&self, h: &HeaderMap) -> bool {
        let Some(v) = h.get(header::IF_RANGE) else {
            return true;
        };
        let Ok(s) = v.to_str() else { return false };
        let s = s.trim();
        if s.starts_with('"') {
            return s == self.etag;
        }
        if s.starts_with("W/") {
            return false;
        }
        matches!((parse_date(v), self.mtime_secs), (Some(d), Some(m)) if d == m)
    }
}

fn parse_date(v: &HeaderValue) -> Option<u64> {
    let t = httpdate::parse_http_date(v.to_str().ok()?).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// What a Range header asks for, resolved against the file length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send everything (also for syntax errors and multiple ranges, which
    /// RFC 9110 lets a server answer with the full representation).
    Full,
    /// One satisfiable range, inclusive bounds.
    Single { start: u64, end: u64 },
    /// A well-formed range that selects nothing: 416.
    Unsatisfiable,
}

/// Parses a `Range` header value for a representation of `len` bytes.
pub fn parse_range(value: &[u8], len: u64) -> RangeRequest {
    let Ok(s) = std::str::from_utf8(value) else {
        return RangeRequest::Full;
    };
    let Some(spec) = s.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |x: &str| -> Option<u64> {
        if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            x.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // "-n": the last n bytes.
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Single {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => RangeRequest::Full,
        },
        // "a-": from a to the end.
        (false, true) => match num(a) {
            Some(start) if start >= len => RangeRequest::Unsatisfiable,
            Some(start) => RangeRequest::Single {
                start,
                end: len - 1,
            },
            None => RangeRequest::Full,
        },
        // "a-b".
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= len {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Single {
                        start,
                        end: end.min(len - 1),
                    }
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

type ReadResult = (std::fs::File, std::io::Result<Bytes>);

/// Streams `remaining` bytes of a file, keeping one blocking read in flight ahead of the
/// consumer. Dropping the body (client gone) drops the file once the in-flight read returns.
struct FileBody {
    /// The file, while no read is in flight.
    file: Option<std::fs::File>,
    /// The read in flight, if any.
    pending: Option<JoinHandle<ReadResult>>,
    /// Bytes still to be read from disk (not yet requested).
    to_read: u64,
    /// Bytes still to be yielded.
    remaining: u64,
    chunk: usize,
    /// Seek target for the first read.
    start: Option<u64>,
    stats: Arc<Stats>,
}

impl FileBody {
    fn new(file: std::fs::File, start: u64, count: u64, chunk: usize, stats: Arc<Stats>) -> Self {
        Self {
            file: Some(file),
            pending: None,
            to_read: count,
            remaining: count,
            chunk,
            start: Some(start),
            stats,
        }
    }

    fn start_read(&mut self) {
        let Some(mut file) = self.file.take() else {
            return;
        };
        let want = self.to_read.min(self.chunk as u64) as usize;
        self.to_read -= want as u64;
        let seek = self.start.take();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let r = read_chunk(&mut file, seek, want);
            (file, r)
        }));
    }
}

fn read_chunk(file: &mut std::fs::File, seek: Option<u64>, want: usize) -> std::io::Result<Bytes> {
    if let Some(pos) = seek {
        file.seek(SeekFrom::Start(pos))?;
    }
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if filled < want {
        // The file shrank under us; the Content-Length already sent cannot be honoured.
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file shrank while being sent",
        ));
    }
    Ok(Bytes::from(buf))
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.pending.is_none() {
            self.start_read();
        }
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(Some(Err("file body lost its file".into())));
        };
        let (file, result) = match Pin::new(pending).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(x)) => x,
            Poll::Ready(Err(e)) => {
                self.pending = None;
                self.remaining = 0;
                return Poll::Ready(Some(Err(Box::new(e))));
            }
        };
        self.pending = None;
        match result {
            Ok(bytes) => {
                self.file = Some(file);
                self.remaining -= bytes.len() as u64;
                self.stats
                    .file_bytes_sent
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if self.to_read > 0 {
                    // Read ahead while this chunk goes out.
                    self.start_read();
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Err(e) => {
                self.remaining = 0;
                tracing::warn!(error = %e, "file read failed mid-body");
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(b"bytes=0-9", 100), Single { start: 0, end: 9 });
        assert_eq!(
            parse_range(b"bytes=90-200", 100),
            Single { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range(b"bytes=95-", 100),
            Single { start: 95, end: 99 }
        );
        assert_eq!(
            parse_range(b"bytes=-10", 100),
            Single { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range(b"bytes=-1000", 100),
            Single { start: 0, end: 99 }
        );
        assert_eq!(parse_range(b"bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-5", 0), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=5-1", 100), Full);
        assert_eq!(parse_range(b"bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range(b"items=0-1", 100), Full);
        assert_eq!(parse_range(b"bytes=a-b", 100), Full);
        assert_eq!(parse_range(b"bytes=+1-2", 100), Full);
        assert_eq!(parse_range(b"bytes=-", 100), Full);
    }

    #[test]
    fn safe_paths() {
        assert_eq!(relative_path("a/b.ts").unwrap(), PathBuf::from("a/b.ts"));
        assert_eq!(relative_path("a%20b.ts").unwrap(), PathBuf::from("a b.ts"));
        for bad in [
            "../Cargo.toml",
            "%2e%2e/Cargo.toml",
            "%2E%2E/x",
            "..%2fCargo.toml",
            "..%2FCargo.toml",
            "a/../../x",
            "a//b",
            "./a",
            "..\\x",
            "..%5cx",
            "a%00b",
            "",
            "%ff",
        ] {
            assert!(relative_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn conditional() {
        let v = Validators::new(
            10,
            Some(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)),
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&v.etag).unwrap(),
        );
        assert!(v.not_modified(&h));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        // An If-None-Match that fails decides alone, even with a matching If-Modified-Since.
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_str(&v.last_modified().unwrap()).unwrap(),
        );
        assert!(!v.not_modified(&h));
        h.remove(header::IF_NONE_MATCH);
        assert!(v.not_modified(&h));
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:01 GMT"),
        );
        assert!(!v.not_modified(&h));

        let mut h = HeaderMap::new();
        assert!(v.if_range_allows(&h));
        h.insert(header::IF_RANGE, HeaderValue::from_str(&v.etag).unwrap());
        assert!(v.if_range_allows(&h));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"stale\""));
        assert!(!v.if_range_allows(&h));
        h.insert(
            header::IF_RANGE,
            HeaderValue::from_str(&v.last_modified().unwrap()).unwrap(),
        );
        assert!(v.if_range_allows(&h));
    }
}
