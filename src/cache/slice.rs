//! VOD files in fixed slices (nginx `slice` style): each slice `i` is its own cached object,
//! fetched with `Range: bytes=i*S-(i+1)*S-1`, so a range in the middle of a 4 GiB MP4 fetches
//! only the slices it covers, and two viewers of the same part share them. The viewer's answer
//! is assembled from the slices as they arrive (each one streams while it fills).
//!
//! The first slice the range needs tells the file's length (`Content-Range: bytes a-b/LEN`);
//! every later slice must carry the same `ETag`, or the file changed under us and the answer
//! breaks off rather than splicing two versions. A node that ignores `Range` (answers 200) is
//! passed through uncached; a 404 is kept briefly like any other.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::time::Instant;

use super::buffer::Reader;
use super::object::Object;
use super::{respond, Ask, Cache, Fetch, Fetcher, FillCtx, Got, Key};
use crate::body::{empty, Body, BoxError};
use crate::error::GatewayError;
use crate::origin::files::{parse_range, RangeRequest};
use crate::registry::Node;

/// `LEN` of a `Content-Range: bytes a-b/LEN`.
fn total_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?
        .rsplit_once('/')?
        .1
        .trim()
        .parse()
        .ok()
}

/// The first byte a `Range: bytes=a-…` asks for (`None` for suffix or unusable ranges).
fn range_start(v: &HeaderValue) -> Option<u64> {
    let spec = v.to_str().ok()?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    spec.split_once('-')?.0.trim().parse().ok()
}

pub(super) async fn serve(
    cache: Cache,
    ask: &Ask<'_>,
    epoch: u64,
    ctx: FillCtx,
    fetch: Fetch,
) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
    let size = cache.inner.settings().slice_bytes;
    let key = |i| Key::new(ask.route, epoch, ask.target.to_string(), Some(i));
    let range = ask.headers.get(header::RANGE);
    let guess = range.and_then(range_start).map_or(0, |a| a / size);
    let obj = match cache
        .object(key(guess), &ctx, &Fetcher::ready(fetch.clone()))
        .await?
    {
        Got::Shared(o) | Got::Own(o) => o,
        Got::Refetch => return fetch(HeaderMap::new()).await,
    };
    let total = match (obj.status, total_length(&obj.headers)) {
        (StatusCode::PARTIAL_CONTENT, Some(t)) => t,
        // Not sliceable (404, a node ignoring ranges, …): the answer as it is.
        _ => {
            let r = respond::respond(&obj, ask.method, ask.headers, Instant::now());
            return Ok((r, obj.node.clone()));
        }
    };
    let wanted = match range {
        Some(r) if respond::if_range_allows(&obj.headers, ask.headers) => {
            parse_range(r.as_bytes(), total)
        }
        _ => RangeRequest::Full,
    };
    let (status, start, end) = match wanted {
        RangeRequest::Full => (StatusCode::OK, 0, total),
        RangeRequest::Single { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        RangeRequest::Unsatisfiable => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok((r, obj.node.clone()));
        }
    };
    let now = Instant::now();
    if respond::not_modified(&obj.headers, ask.headers) {
        let mut r = respond::respond(&obj, ask.method, ask.headers, now);
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok((r, obj.node.clone()));
    }
    let mut headers = obj.headers.clone();
    headers.remove(header::CONTENT_RANGE);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&obj.age(now).to_string()) {
        headers.insert(header::AGE, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1)) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
    let node = obj.node.clone();
    let body = if *ask.method == http::Method::HEAD || start == end {
        empty()
    } else {
        let state = Slices {
            cache,
            route: ask.route.to_string(),
            epoch,
            target: ask.target.to_string(),
            ctx,
            fetch,
            size,
            next: start / size,
            pos: start,
            end,
            have: Some((guess, obj.clone())),
            etag: obj.headers.get(header::ETAG).cloned(),
            reader: None,
        };
        let stream = futures_util::stream::unfold(state, |mut s| async move {
            let item = s.step().await?;
            Some((item, s))
        });
        BodyExt::boxed(StreamBody::new(stream.map(|r| r.map(Frame::data))))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Ok((r, node))
}

/// The viewer's body: bytes `pos..end`, slice after slice.
struct Slices {
    cache: Cache,
    route: String,
    epoch: u64,
    target: String,
    ctx: FillCtx,
    fetch: Fetch,
    size: u64,
    /// The next slice to open.
    next: u64,
    /// The next byte of the file to send.
    pos: u64,
    end: u64,
    /// A slice already looked up (the first one).
    have: Option<(u64, Arc<Object>)>,
    /// The first slice's `ETag`: every slice must be of that version.
    etag: Option<HeaderValue>,
    reader: Option<Reader>,
}

impl Slices {
    /// The next chunk, an error, or `None` at the end.
    async fn step(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            if let Some(r) = &mut self.reader {
                match r.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            self.pos += d.len() as u64;
                            return Some(Ok(d));
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.pos = self.end;
                        return Some(Err(e));
                    }
                    None => self.reader = None,
                }
            }
            if self.pos >= self.end {
                return None;
            }
            let i = self.next;
            self.next += 1;
            let obj = match self.have.take() {
                Some((j, o)) if j == i => o,
                _ => match self.open(i).await {
                    Ok(o) => o,
                    Err(e) => {
                        self.pos = self.end;
                        return Some(Err(e));
                    }
                },
            };
            let base = i * self.size;
            let from = self.pos - base;
            let to = (self.end - base).min(self.size);
            self.reader = Some(obj.body.reader(from, Some(to)));
        }
    }

    async fn open(&self, i: u64) -> Result<Arc<Object>, BoxError> {
        let key = Key::new(&self.route, self.epoch, self.target.clone(), Some(i));
        let o = match self
            .cache
            .object(key, &self.ctx, &Fetcher::ready(self.fetch.clone()))
            .await
        {
            Ok(Got::Shared(o) | Got::Own(o)) => o,
            Ok(Got::Refetch) => return Err("a slice could not be shared".into()),
            Err(e) => return Err(e.to_string().into()),
        };
        if o.status != StatusCode::PARTIAL_CONTENT {
            return Err(format!("slice {i}: node answered {}", o.status).into());
        }
        if o.headers.get(header::ETAG) != self.etag.as_ref() {
            return Err(format!("slice {i}: the file changed (ETag)").into());
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lengths_and_starts() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-1023/4096"),
        );
        assert_eq!(total_length(&h), Some(4096));
        assert_eq!(
            range_start(&HeaderValue::from_static("bytes=2048-")),
            Some(2048)
        );
        assert_eq!(range_start(&HeaderValue::from_static("bytes=-10")), None);
        assert_eq!(
            range_start(&HeaderValue::from_static("bytes=1-2,5-6")),
            None
        );
    }
}
