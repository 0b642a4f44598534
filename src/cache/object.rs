//! One cached answer: the node's status and headers, its (possibly still growing) body, and
//! how long it stays fresh.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::buffer::{Buffer, End};
use crate::registry::Node;

#[derive(Debug)]
pub struct Object {
    pub status: StatusCode,
    /// The node's headers, cleaned for viewers (`proxy::headers::to_downstream`).
    pub headers: HeaderMap,
    pub body: Arc<Buffer>,
    /// The node that answered (an `hls_session` playlist is rewritten against it).
    pub node: Arc<Node>,
    /// When the node answered: `Age` counts from here.
    pub stored: Instant,
    /// Fresh lifetime from `stored`; `None` while it is not known yet (a playlist still
    /// arriving), which counts as fresh: the fill in flight is the newest there is.
    ttl: Mutex<Option<Duration>>,
    /// A shared cache may serve it to others (see `policy::refusal`). An answer that may not
    /// be is handed only to the request that fetched it.
    pub shareable: bool,
    /// Too large for the cache (`Content-Length` past `max_object_bytes`): the fill kept
    /// nothing, and every request that waited for it asks the node itself.
    pub pass: bool,
}

impl Object {
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Arc<Buffer>,
        node: Arc<Node>,
        stored: Instant,
        ttl: Option<Duration>,
        shareable: bool,
    ) -> Self {
        Self {
            status,
            headers,
            body,
            node,
            stored,
            ttl: Mutex::new(ttl),
            shareable,
            pass: false,
        }
    }

    pub fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner()) = Some(ttl);
    }

    pub fn ttl(&self) -> Option<Duration> {
        *self.ttl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether it may be served without asking the node at `now`.
    pub fn fresh(&self, now: Instant) -> bool {
        match self.ttl() {
            None => true,
            Some(t) => now < self.stored + t,
        }
    }

    /// Whole seconds since the node answered (the `Age` header).
    pub fn age(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.stored).as_secs()
    }

    /// Whether the body is still arriving.
    pub fn filling(&self) -> bool {
        self.body.end() == End::Open
    }

    /// The body's full length: the node's `Content-Length`, or what arrived once complete.
    pub fn length(&self) -> Option<u64> {
        self.headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| (self.body.end() == End::Complete).then(|| self.body.len()))
    }

    /// The same body and node with the headers and time of a `304` revalidation.
    pub fn revalidated(&self, fresh: &HeaderMap, now: Instant, ttl: Duration) -> Self {
        let mut headers = self.headers.clone();
        // RFC 9111 §4.3.4: the 304's header fields replace the stored ones of the same name.
        for name in fresh.keys() {
            if matches!(
                *name,
                http::header::CONTENT_LENGTH | http::header::TRANSFER_ENCODING
            ) {
                continue;
            }
            headers.remove(name);
            for v in fresh.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        Self::new(
            self.status,
            headers,
            self.body.clone(),
            self.node.clone(),
            now,
            Some(ttl),
            self.shareable,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Arc<Node> {
        Arc::new(Node {
            id: "n".into(),
            url: crate::upstream_path::BaseUrl::parse("http://127.0.0.1:1").expect("url"),
            expires: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_and_age_on_the_paused_clock() {
        let now = Instant::now();
        let o = Object::new(
            StatusCode::OK,
            HeaderMap::new(),
            Buffer::complete(bytes::Bytes::from_static(b"x")),
            node(),
            now,
            None,
            true,
        );
        assert!(o.fresh(now), "unknown lifetime: fresh");
        o.set_ttl(Duration::from_secs(3));
        tokio::time::advance(Duration::from_millis(2_900)).await;
        assert!(o.fresh(Instant::now()));
        assert_eq!(o.age(Instant::now()), 2);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!o.fresh(Instant::now()), "expired at exactly 3s");
        let mut h = HeaderMap::new();
        h.insert(http::header::ETAG, http::HeaderValue::from_static("\"v2\""));
        let r = o.revalidated(&h, Instant::now(), Duration::from_secs(3));
        assert!(r.fresh(Instant::now()));
        assert_eq!(r.headers[http::header::ETAG], "\"v2\"");
        assert_eq!(r.length(), Some(1));
    }
}
