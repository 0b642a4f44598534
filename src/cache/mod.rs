//! The HLS / LL-HLS / VOD cache (routes with `cache = "hls"` or `"vod"`), in memory, bounded in
//! bytes and entries, with request collapsing that streams.
//!
//! A request looks its [`Key`] up. Fresh: answered from memory ([`respond`]). Absent or stale:
//! the first request starts ONE fill through the one transport (the gateway hands a [`Fetch`]
//! that calls `proxy::fetch`), and every request for the same key meanwhile joins it. The fill
//! runs on its own task, so a viewer leaving never cuts it for the others; as soon as the node's
//! headers arrive, the object is in the store with a growing body ([`buffer`]) and every
//! waiter streams from it: bytes reach them as they reach the gateway. An LL-HLS blocking
//! reload (`_HLS_msn`) is just such a fill, held until the node answers: many viewers, one held
//! request per key.
//!
//! What is kept and how long: [`policy`] (HTTP) and [`hls`] (HLS rules). A stream that restarts
//! under the same segment names gets a new publish epoch ([`key`]). VOD files are fetched and
//! kept in slices ([`slice`]). Counters per route: [`stats`]. See docs/cache.md.

pub mod buffer;
pub mod disk;
pub mod hls;
pub mod key;
pub mod object;
pub mod policy;
pub mod respond;
pub mod slice;
pub mod stats;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::Body;
use crate::config::{CacheMode, CacheSettings, RouteSettings};
use crate::error::GatewayError;
use crate::registry::Node;
use buffer::Buffer;
pub use key::Key;
use object::Object;
pub use stats::Counters;
use store::Store;

/// What the cache's fill calls to reach the node: the request as the first viewer sent it,
/// cleaned (`GET`, no `Range`, no conditionals, no `Accept-Encoding`), plus `extra` headers
/// (a slice's `Range`, a revalidation's `If-None-Match`), through the one transport.
pub type Fetch = Arc<dyn Fn(HeaderMap) -> FetchFuture + Send + Sync>;
pub type FetchFuture =
    Pin<Box<dyn Future<Output = Result<(Response<Body>, Arc<Node>), GatewayError>> + Send>>;

/// A [`Fetch`] built only when a fill needs one: most requests on a cached route are hits, and
/// a hit never pays for copying the request into a fill.
pub struct Fetcher<'a> {
    make: Option<&'a (dyn Fn() -> Fetch + Send + Sync)>,
    made: std::sync::OnceLock<Fetch>,
}

impl<'a> Fetcher<'a> {
    /// Calls `make` the first time a fill needs the fetch (at most once).
    pub fn lazy(make: &'a (dyn Fn() -> Fetch + Send + Sync)) -> Self {
        Self {
            make: Some(make),
            made: std::sync::OnceLock::new(),
        }
    }

    /// A fetch built already.
    pub fn ready(fetch: Fetch) -> Self {
        Self {
            make: None,
            made: std::sync::OnceLock::from(fetch),
        }
    }

    fn get(&self) -> &Fetch {
        self.made.get_or_init(|| match self.make {
            Some(make) => make(),
            // `ready` filled `made`: never reached.
            None => Arc::new(|_| {
                Box::pin(async { Err(GatewayError::Internal("no cache fetch".into())) })
            }),
        })
    }
}

/// An entry: a fill whose node has not answered yet, or an object (maybe still filling).
#[derive(Clone)]
enum Slot {
    Waiting(watch::Receiver<Option<Outcome>>),
    Ready(Arc<Object>),
}

/// What a fill's waiters get once the node answers.
type Outcome = Result<Arc<Object>, Arc<GatewayError>>;

/// The cache: one per gateway, kept across config reloads.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

pub struct Inner {
    settings: RwLock<CacheSettings>,
    store: Mutex<Store<Slot>>,
    epochs: key::Epochs,
    /// The disk tier for VOD slices (`[cache] disk_dir`; fixed at start).
    disk: Option<disk::Disk>,
    /// Counters by route path, for the routes of the config in use.
    routes: Mutex<Vec<(String, CacheMode, Arc<Counters>)>>,
}

impl Inner {
    fn store(&self) -> std::sync::MutexGuard<'_, Store<Slot>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn settings(&self) -> CacheSettings {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bytes and entries held.
    pub(crate) fn usage(&self) -> (u64, usize) {
        let s = self.store();
        (s.bytes(), s.len())
    }

    pub(crate) fn route_counters(&self) -> Vec<(String, Arc<Counters>)> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, _, c)| (p.clone(), c.clone()))
            .collect()
    }
}

/// One request the cache is asked to answer.
pub struct Ask<'a> {
    /// The route's configured path (part of the key, label of the counters).
    pub route: &'a str,
    pub mode: CacheMode,
    /// The route's `{stream}` capture, if it has one (the publish epoch's scope).
    pub stream: Option<&'a str>,
    /// Upstream path and credential-free query.
    pub target: &'a str,
    pub method: &'a Method,
    /// The viewer's headers (`Range`, conditionals).
    pub headers: &'a HeaderMap,
    pub counters: Arc<Counters>,
}

/// What a lookup found.
enum Got {
    /// A shareable object.
    Shared(Arc<Object>),
    /// An answer that may not be shared, fetched for this very request.
    Own(Arc<Object>),
    /// The fill this request joined got an answer that may not be shared: ask the node itself.
    Refetch,
}

/// What a fill needs to know beyond its key.
#[derive(Clone)]
struct FillCtx {
    mode: CacheMode,
    scope: Arc<str>,
    blocking: bool,
    playlist_path: bool,
    counters: Arc<Counters>,
}

impl Cache {
    pub fn new(s: &CacheSettings) -> Self {
        let disk = s
            .disk_dir
            .as_deref()
            .and_then(|dir| match disk::Disk::open(dir, s.disk_bytes) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cache disk tier unusable: memory only");
                    None
                }
            });
        Self {
            inner: Arc::new(Inner {
                settings: RwLock::new(s.clone()),
                store: Mutex::new(Store::new(s.memory_bytes, s.max_entries)),
                epochs: key::Epochs::default(),
                disk,
                routes: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Applies a (reloaded) config: bounds and lifetimes, and the routes' counters (kept for a
    /// path the new table still caches). Returns each route's counters by index.
    pub fn configure(
        &self,
        s: &CacheSettings,
        routes: &[RouteSettings],
    ) -> Vec<Option<Arc<Counters>>> {
        *self
            .inner
            .settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = s.clone();
        self.inner.store().set_limits(s.memory_bytes, s.max_entries);
        let mut table = self.inner.routes.lock().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::take(&mut *table);
        let out = routes
            .iter()
            .map(|r| {
                let mode = r.cache?;
                let c = table
                    .iter()
                    .chain(old.iter())
                    .find(|(p, _, _)| *p == r.path)
                    .map(|(_, _, c)| c.clone())
                    .unwrap_or_default();
                if !table.iter().any(|(p, _, _)| *p == r.path) {
                    table.push((r.path.clone(), mode, c.clone()));
                }
                Some(c)
            })
            .collect();
        out
    }

    /// The `/metrics` collector.
    pub fn collector(&self) -> stats::CacheCollector {
        stats::CacheCollector(Arc::downgrade(&self.inner))
    }

    /// `GET /api/v1/cache`.
    pub fn snapshot(&self) -> Value {
        let (bytes, entries) = self.inner.usage();
        let s = self.inner.settings();
        let routes: Vec<Value> = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(path, mode, c)| {
                let mut v = c.json();
                v["route"] = json!(path);
                v["mode"] = json!(match mode {
                    CacheMode::Hls => "hls",
                    CacheMode::Vod => "vod",
                });
                v
            })
            .collect();
        let disk = self.inner.disk.as_ref().map(|d| {
            let (bytes, entries) = d.usage();
            json!({ "bytes": bytes, "entries": entries, "max_bytes": s.disk_bytes })
        });
        json!({
            "disk": disk,
            "bytes": bytes,
            "entries": entries,
            "memory_bytes": s.memory_bytes,
            "max_entries": s.max_entries,
            "max_object_bytes": s.max_object_bytes,
            "slice_bytes": s.slice_bytes,
            "routes": routes,
        })
    }

    /// Answers `ask` from the cache, fetching through `fetch` what it lacks. Returns the answer
    /// and the node it came from.
    #[cfg(test)]
    pub async fn serve(
        &self,
        ask: Ask<'_>,
        fetch: Fetch,
    ) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
        self.serve_with(ask, &Fetcher::ready(fetch)).await
    }

    /// [`Cache::serve`], with the fetch built only if a fill needs it.
    pub async fn serve_with(
        &self,
        ask: Ask<'_>,
        fetch: &Fetcher<'_>,
    ) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
        let scope = key::scope(ask.stream, ask.target);
        let (epoch, route, scope) = self.inner.epochs.epoch_and_route(ask.route, scope);
        let query = ask.target.split_once('?').map(|(_, q)| q);
        let ctx = FillCtx {
            mode: ask.mode,
            blocking: ask.mode == CacheMode::Hls && hls::is_blocking(query),
            playlist_path: hls::is_playlist_path(ask.target),
            scope,
            counters: ask.counters.clone(),
        };
        if ask.mode == CacheMode::Vod {
            return slice::serve(self.clone(), &ask, epoch, ctx, fetch.get().clone()).await;
        }
        let key = Key::shared(route, epoch, ask.target.to_string(), None);
        self.answer(key, &ctx, fetch, ask.method, ask.headers).await
    }

    /// The whole-object answer for `key`.
    async fn answer(
        &self,
        key: Key,
        ctx: &FillCtx,
        fetch: &Fetcher<'_>,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(Response<Body>, Arc<Node>), GatewayError> {
        match self.object(key, ctx, fetch).await? {
            Got::Shared(o) | Got::Own(o) => Ok((
                respond::respond(&o, method, headers, Instant::now()),
                o.node.clone(),
            )),
            Got::Refetch => (fetch.get())(HeaderMap::new()).await,
        }
    }

    /// The object under `key`: fresh from the store, from the fill in flight, or from a new
    /// fill (which this call starts).
    async fn object(
        &self,
        key: Key,
        ctx: &FillCtx,
        fetch: &Fetcher<'_>,
    ) -> Result<Got, GatewayError> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Instant::now();
        let c = &ctx.counters;
        let (mut rx, leader) = {
            let mut store = self.inner.store();
            match store.get(&key) {
                Some((Slot::Ready(o), _)) if o.fresh(now) => {
                    if o.filling() {
                        c.collapsed.fetch_add(1, Relaxed);
                    } else {
                        c.hit.fetch_add(1, Relaxed);
                    }
                    return Ok(Got::Shared(o));
                }
                Some((Slot::Waiting(rx), _)) => {
                    c.collapsed.fetch_add(1, Relaxed);
                    (rx, false)
                }
                found => {
                    // Stale with validators: revalidate (304 keeps the body); otherwise fetch.
                    // Never a live playlist: rewritten within one second at the same size, its
                    // Last-Modified and nginx's ETag would not change, and a 304 would freeze it.
                    let old = match found {
                        Some((Slot::Ready(o), _))
                            if o.status == StatusCode::OK
                                && !(ctx.mode == CacheMode::Hls && ctx.playlist_path)
                                && !o.filling()
                                && policy::has_validators(&o.headers) =>
                        {
                            Some(o)
                        }
                        _ => None,
                    };
                    if old.is_none() {
                        c.miss.fetch_add(1, Relaxed);
                    }
                    let (tx, rx) = watch::channel(None);
                    let gen = store.insert(key.clone(), Slot::Waiting(rx.clone()));
                    let fill = Fill {
                        inner: self.inner.clone(),
                        key,
                        gen,
                        ctx: ctx.clone(),
                        old,
                    };
                    tokio::spawn(fill.run(tx, fetch.get().clone()));
                    (rx, true)
                }
            }
        };
        let outcome = loop {
            if let Some(o) = rx.borrow_and_update().clone() {
                break o;
            }
            if rx.changed().await.is_err() {
                return Err(GatewayError::Internal(
                    "cache fill ended without an answer".into(),
                ));
            }
        };
        match outcome {
            Ok(o) if o.pass => {
                c.bypass.fetch_add(1, Relaxed);
                Ok(Got::Refetch)
            }
            Ok(o) if o.shareable => Ok(Got::Shared(o)),
            Ok(o) if leader => Ok(Got::Own(o)),
            Ok(_) => {
                c.bypass.fetch_add(1, Relaxed);
                Ok(Got::Refetch)
            }
            Err(e) => Err(replay(&e)),
        }
    }
}

/// The same failure for another waiter of the fill (errors are not `Clone`; their status and
/// code are what matter).
fn replay(e: &GatewayError) -> GatewayError {
    match e {
        GatewayError::UpstreamConnect { node, source } => GatewayError::UpstreamConnect {
            node: node.clone(),
            source: source.to_string().into(),
        },
        GatewayError::UpstreamTimeout { node, secs } => GatewayError::UpstreamTimeout {
            node: node.clone(),
            secs: *secs,
        },
        GatewayError::Upstream { node, source } => GatewayError::Upstream {
            node: node.clone(),
            source: source.to_string().into(),
        },
        GatewayError::BadRequest(why) => GatewayError::BadRequest(why),
        GatewayError::Draining(s) => GatewayError::Draining(s.clone()),
        GatewayError::NodeUnavailable(s) => GatewayError::NodeUnavailable(s.clone()),
        other => GatewayError::Internal(other.to_string()),
    }
}

/// One fill: fetch from the node, publish the answer to the waiters, pump the body into the
/// shared buffer, then settle the object's lifetime.
struct Fill {
    inner: Arc<Inner>,
    key: Key,
    gen: u64,
    ctx: FillCtx,
    /// The stale object being revalidated.
    old: Option<Arc<Object>>,
}

impl Fill {
    async fn run(self, tx: watch::Sender<Option<Outcome>>, fetch: Fetch) {
        use std::sync::atomic::Ordering::Relaxed;
        let Fill {
            inner,
            key,
            gen,
            ctx,
            old,
        } = self;
        let settings = inner.settings();
        let mut extra = HeaderMap::new();
        if let Some(o) = &old {
            if let Some(v) = o.headers.get(header::ETAG) {
                extra.insert(header::IF_NONE_MATCH, v.clone());
            }
            if let Some(v) = o.headers.get(header::LAST_MODIFIED) {
                extra.insert(header::IF_MODIFIED_SINCE, v.clone());
            }
        }
        if let Some(i) = key.slice {
            let (a, b) = (i * settings.slice_bytes, (i + 1) * settings.slice_bytes - 1);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={a}-{b}")) {
                extra.insert(header::RANGE, v);
            }
        }
        if let (Some(disk), Some(_), None) = (&inner.disk, key.slice, &old) {
            if let Some((st, bytes)) = disk.get(&key).await {
                let n = bytes.len() as u64;
                let obj = Arc::new(Object::new(
                    st.status,
                    st.headers,
                    Buffer::complete(bytes),
                    st.node,
                    st.stored,
                    Some(st.ttl),
                    true,
                ));
                {
                    let mut store = inner.store();
                    if store.replace(&key, gen, Slot::Ready(obj.clone())) {
                        store.grow(&key, gen, n);
                    }
                }
                ctx.counters.disk.fetch_add(1, Relaxed);
                let _ = tx.send(Some(Ok(obj)));
                return;
            }
        }
        let (resp, node) = match fetch(extra).await {
            Ok(r) => r,
            Err(e) => {
                inner.store().remove(&key, gen);
                let _ = tx.send(Some(Err(Arc::new(e))));
                return;
            }
        };
        let (parts, mut body) = resp.into_parts();
        let now = Instant::now();
        let status = parts.status;
        let stream_target = inner.epochs.target_duration(&key.route, &ctx.scope);
        if let (StatusCode::NOT_MODIFIED, Some(o)) = (status, &old) {
            let rule = o.ttl().unwrap_or(settings.segment_ttl);
            let ttl = policy::lifetime(ctx.mode, &parts.headers, rule);
            let fresh = Arc::new(o.revalidated(&parts.headers, now, ttl));
            {
                let mut store = inner.store();
                if store.replace(&key, gen, Slot::Ready(fresh.clone())) {
                    store.grow(&key, gen, fresh.body.len());
                }
            }
            ctx.counters.revalidated.fetch_add(1, Relaxed);
            let _ = tx.send(Some(Ok(fresh)));
            return;
        }
        if old.is_some() {
            ctx.counters.miss.fetch_add(1, Relaxed);
        }
        let shareable =
            policy::refusal(status.as_u16(), &parts.headers, key.slice.is_some()).is_none();
        let playlist = ctx.mode == CacheMode::Hls
            && status == StatusCode::OK
            && (ctx.playlist_path
                || crate::proxy::playlist::is_playlist(&key.target, &parts.headers));
        fn answer<'a>(
            ctx: &FillCtx,
            status: StatusCode,
            p: Option<&'a hls::Playlist>,
            stream_target: Option<std::time::Duration>,
        ) -> hls::Answer<'a> {
            hls::Answer {
                mode: ctx.mode,
                status: status.as_u16(),
                blocking: ctx.blocking,
                playlist: p,
                stream_target,
            }
        }
        // A playlist's lifetime depends on its body: unknown (fresh) until it is read.
        let ttl = (!playlist).then(|| {
            policy::lifetime(
                ctx.mode,
                &parts.headers,
                hls::lifetime(&settings, &answer(&ctx, status, None, stream_target)),
            )
        });
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > settings.max_object_bytes) {
            // Too large to go through the cache's buffer: nothing is kept, and every waiter
            // (this fill's requester too) streams the node's answer on its own.
            inner.store().remove(&key, gen);
            let mut o = Object::new(
                status,
                parts.headers,
                Arc::new(Buffer::default()),
                node,
                now,
                Some(std::time::Duration::ZERO),
                false,
            );
            o.pass = true;
            let _ = tx.send(Some(Ok(Arc::new(o))));
            return;
        }
        let buffer = Arc::new(Buffer::default());
        let obj = Arc::new(Object::new(
            status,
            parts.headers,
            buffer.clone(),
            node,
            now,
            ttl,
            shareable,
        ));
        let mut cached = {
            let mut store = inner.store();
            if shareable {
                store.replace(&key, gen, Slot::Ready(obj.clone()))
            } else {
                store.remove(&key, gen);
                false
            }
        };
        let _ = tx.send(Some(Ok(obj.clone())));
        drop(tx);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    let Ok(data) = f.into_data() else { continue };
                    let n = data.len() as u64;
                    buffer.push(data);
                    if buffer.len() > settings.max_object_bytes {
                        // No length was declared (else it would have passed through): the
                        // buffer, which every reader shares, must not grow without bound.
                        buffer.abort(
                            "an answer without Content-Length grew past cache.max_object_bytes",
                        );
                        inner.store().remove(&key, gen);
                        return;
                    }
                    if cached {
                        let mut store = inner.store();
                        // Evicted meanwhile, or the store cannot hold it: streams on uncached.
                        cached = store.grow(&key, gen, n);
                    }
                }
                Err(e) => {
                    // Never a truncated success: readers get an error, the entry goes.
                    buffer.abort(e.to_string());
                    inner.store().remove(&key, gen);
                    return;
                }
            }
        }
        buffer.finish();
        // Whether memory still holds it does not matter: a reader that had the last bytes (they
        // are pushed before they are counted) may already have asked for the next slice, whose
        // fill can evict this one before its last `grow`; the slice must still reach disk.
        if let (Some(disk), true, true) = (&inner.disk, shareable, ctx.mode == CacheMode::Vod) {
            if let Some(bytes) = buffer.bytes() {
                let ttl = obj.ttl().unwrap_or(settings.vod_ttl);
                let head = (status, obj.headers.clone(), obj.node.clone());
                disk.put(key.clone(), head, now, ttl, bytes).await;
            }
        }
        if playlist {
            let facts = buffer.bytes().and_then(|b| hls::playlist(&b));
            let rule = hls::lifetime(
                &settings,
                &answer(&ctx, status, facts.as_ref(), stream_target),
            );
            obj.set_ttl(policy::lifetime(ctx.mode, &obj.headers, rule));
            if let Some(p) = facts.filter(|p| !p.multivariant && !p.ended) {
                let restarted = inner.epochs.observe(
                    &key.route,
                    &ctx.scope,
                    key.epoch,
                    &key.target,
                    p.media_sequence,
                    p.target_duration,
                );
                if let Some(old_epoch) = restarted {
                    tracing::info!(route = %key.route, scope = %ctx.scope, "stream restarted (media sequence went back): its cached objects are dropped");
                    inner
                        .store()
                        .retain(|k| !(k.route == key.route && k.epoch == old_epoch));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use tokio::sync::mpsc;

    use super::*;
    use crate::body::BoxError;
    use crate::config::CacheSettings;

    type Chunk = Result<Frame<Bytes>, BoxError>;
    /// One scripted answer: status, headers, and the channel its body arrives through.
    type Script = (
        u16,
        Vec<(&'static str, String)>,
        mpsc::UnboundedReceiver<Chunk>,
    );

    /// A node scripted per test: counts fetches; each answer's body is fed through a channel
    /// the test holds (so it decides when bytes "arrive").
    struct Node_ {
        fetches: AtomicUsize,
        bodies: Mutex<mpsc::UnboundedReceiver<Script>>,
    }

    fn node() -> Arc<Node> {
        Arc::new(Node {
            id: "n1".into(),
            url: crate::upstream_path::BaseUrl::parse("http://127.0.0.1:1").expect("url"),
            expires: None,
        })
    }

    fn scripted() -> (Fetch, Arc<Node_>, mpsc::UnboundedSender<Script>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let n = Arc::new(Node_ {
            fetches: AtomicUsize::new(0),
            bodies: Mutex::new(rx),
        });
        let n2 = n.clone();
        let fetch: Fetch = Arc::new(move |_extra| {
            let n = n2.clone();
            Box::pin(async move {
                n.fetches.fetch_add(1, Ordering::SeqCst);
                let next = n.bodies.lock().expect("lock").try_recv();
                let Ok((status, headers, body)) = next else {
                    return Err(GatewayError::Internal("no scripted answer".into()));
                };
                let stream = futures_util::stream::unfold(body, |mut rx| async move {
                    rx.recv().await.map(|c| (c, rx))
                });
                let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                *r.status_mut() = StatusCode::from_u16(status).expect("status");
                for (k, v) in headers {
                    r.headers_mut()
                        .insert(k, HeaderValue::from_str(&v).expect("value"));
                }
                Ok((r, node()))
            })
        });
        (fetch, n, tx)
    }

    fn ask<'a>(target: &'a str, h: &'a HeaderMap, c: &Arc<Counters>) -> Ask<'a> {
        Ask {
            route: "/hls/{*rest}",
            mode: CacheMode::Hls,
            stream: None,
            target,
            method: &Method::GET,
            headers: h,
            counters: c.clone(),
        }
    }

    fn data(s: &str) -> Chunk {
        Ok(Frame::data(Bytes::from(s.to_string())))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_make_one_fetch_and_everyone_streams() {
        let cache = Cache::new(&CacheSettings::default());
        let (fetch, node, script) = scripted();
        let (body_tx, body_rx) = mpsc::unbounded_channel();
        script.send((200, vec![], body_rx)).expect("script");
        let c = Arc::new(Counters::default());
        let h = HeaderMap::new();
        let first = cache.serve(ask("/hls/a/1.ts", &h, &c), fetch.clone());
        let second = cache.serve(ask("/hls/a/1.ts", &h, &c), fetch.clone());
        let (a, b) = tokio::join!(first, second);
        let (mut a, mut b) = (a.expect("a").0.into_body(), b.expect("b").0.into_body());
        body_tx.send(data("part1")).expect("send");
        let f = a.frame().await.expect("frame").expect("ok");
        assert_eq!(f.into_data().expect("data"), "part1");
        // A viewer arriving mid-fetch gets what is there at once, before the node is done.
        let (late, _) = cache
            .serve(ask("/hls/a/1.ts", &h, &c), fetch.clone())
            .await
            .expect("late");
        let mut late = late.into_body();
        let f = late.frame().await.expect("frame").expect("ok");
        assert_eq!(f.into_data().expect("data"), "part1");
        body_tx.send(data("part2")).expect("send");
        drop(body_tx);
        let rest = late.collect().await.expect("rest").to_bytes();
        assert_eq!(rest, "part2");
        assert_eq!(
            b.frame()
                .await
                .expect("f")
                .expect("ok")
                .into_data()
                .expect("d"),
            "part1"
        );
        assert_eq!(node.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(c.miss.load(Ordering::SeqCst), 1);
        assert_eq!(c.collapsed.load(Ordering::SeqCst), 2);
        // Complete now: a hit, still no second fetch.
        let (r, _) = cache
            .serve(ask("/hls/a/1.ts", &h, &c), fetch.clone())
            .await
            .expect("hit");
        assert_eq!(
            r.into_body().collect().await.expect("b").to_bytes(),
            "part1part2"
        );
        assert_eq!(c.hit.load(Ordering::SeqCst), 1);
        assert_eq!(node.fetches.load(Ordering::SeqCst), 1);
        let snap = cache.snapshot();
        assert_eq!(snap["entries"], 1);
        assert_eq!(snap["bytes"], 10);
    }

    #[tokio::test(start_paused = true)]
    async fn aborted_fills_and_errors_are_never_kept() {
        let cache = Cache::new(&CacheSettings::default());
        let (fetch, node, script) = scripted();
        let c = Arc::new(Counters::default());
        let h = HeaderMap::new();
        // The node breaks mid-body: the viewer's body fails, and the next request refetches.
        let (tx, rx) = mpsc::unbounded_channel();
        script.send((200, vec![], rx)).expect("script");
        let (r, _) = cache
            .serve(ask("/hls/a/2.ts", &h, &c), fetch.clone())
            .await
            .expect("r");
        tx.send(data("half")).expect("send");
        tx.send(Err("reset".into())).expect("send");
        assert!(r.into_body().collect().await.is_err());
        // A 503: passed on, not kept.
        for _ in 0..2 {
            let (tx, rx) = mpsc::unbounded_channel();
            script.send((503, vec![], rx)).expect("script");
            drop(tx);
            let (r, _) = cache
                .serve(ask("/hls/a/2.ts", &h, &c), fetch.clone())
                .await
                .expect("r");
            assert_eq!(r.status(), 503);
            let _ = r.into_body().collect().await;
        }
        assert_eq!(node.fetches.load(Ordering::SeqCst), 3);
        assert_eq!(cache.snapshot()["entries"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn playlists_live_half_a_target_duration_and_404s_briefly() {
        let cache = Cache::new(&CacheSettings::default());
        let (fetch, node, script) = scripted();
        let c = Arc::new(Counters::default());
        let h = HeaderMap::new();
        let answer = |status, body: &str| {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(data(body)).expect("send");
            drop(tx);
            script.send((status, vec![], rx)).expect("script");
        };
        let get = |t: &'static str| {
            let (cache, fetch, c, h) = (cache.clone(), fetch.clone(), c.clone(), h.clone());
            async move {
                let (r, _) = cache.serve(ask(t, &h, &c), fetch).await.expect("r");
                let st = r.status();
                (st, r.into_body().collect().await.expect("b").to_bytes())
            }
        };
        answer(
            200,
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:9\n#EXTINF:4,\ns9.ts\n",
        );
        get("/hls/a/i.m3u8").await;
        tokio::time::advance(Duration::from_millis(1_900)).await;
        get("/hls/a/i.m3u8").await;
        assert_eq!(
            node.fetches.load(Ordering::SeqCst),
            1,
            "fresh for 2 s (½ × 4 s)"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        answer(
            200,
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:10\n#EXTINF:4,\ns10.ts\n",
        );
        let (_, b) = get("/hls/a/i.m3u8").await;
        assert!(String::from_utf8_lossy(&b).contains("s10.ts"));
        assert_eq!(node.fetches.load(Ordering::SeqCst), 2);
        // A 404 in a stream whose target duration is 4 s: kept 16 s.
        answer(404, "nope");
        assert_eq!(get("/hls/a/s99.ts").await.0, 404);
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(get("/hls/a/s99.ts").await.0, 404);
        assert_eq!(node.fetches.load(Ordering::SeqCst), 3);
        tokio::time::advance(Duration::from_secs(2)).await;
        answer(200, "seg");
        assert_eq!(get("/hls/a/s99.ts").await.0, 200);
        assert_eq!(node.fetches.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_stream_never_serves_its_old_segments() {
        let cache = Cache::new(&CacheSettings::default());
        let (fetch, node, script) = scripted();
        let c = Arc::new(Counters::default());
        let h = HeaderMap::new();
        let answer = |body: &str| {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(data(body)).expect("send");
            drop(tx);
            script.send((200, vec![], rx)).expect("script");
        };
        let get = |t: &'static str| {
            let (cache, fetch, c, h) = (cache.clone(), fetch.clone(), c.clone(), h.clone());
            async move {
                let (r, _) = cache.serve(ask(t, &h, &c), fetch).await.expect("r");
                r.into_body().collect().await.expect("b").to_bytes()
            }
        };
        answer("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:2,\ns5.ts\n");
        get("/live/x/i.m3u8").await;
        answer("old");
        assert_eq!(get("/live/x/s5.ts").await, "old");
        tokio::time::advance(Duration::from_secs(2)).await;
        // Restart: the sequence starts over.
        answer("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2,\ns5.ts\n");
        get("/live/x/i.m3u8").await;
        answer("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2,\ns5.ts\n");
        get("/live/x/i.m3u8").await;
        answer("new");
        assert_eq!(get("/live/x/s5.ts").await, "new");
        assert_eq!(node.fetches.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_and_entries_stay_bounded() {
        let s = CacheSettings {
            memory_bytes: 64 * 1024,
            max_entries: 50,
            max_object_bytes: 16 * 1024,
            slice_bytes: 4096,
            ..CacheSettings::default()
        };
        let cache = Cache::new(&s);
        let (fetch, _node, script) = scripted();
        let c = Arc::new(Counters::default());
        let h = HeaderMap::new();
        let targets: Vec<String> = (0..200).map(|i| format!("/hls/s{i}/0.ts")).collect();
        for t in &targets {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(data(&"x".repeat(3000))).expect("send");
            drop(tx);
            script.send((200, vec![], rx)).expect("script");
            let (r, _) = cache.serve(ask(t, &h, &c), fetch.clone()).await.expect("r");
            let _ = r.into_body().collect().await;
            let snap = cache.snapshot();
            assert!(snap["bytes"].as_u64().expect("n") <= 64 * 1024, "{snap}");
            assert!(snap["entries"].as_u64().expect("n") <= 50, "{snap}");
        }
        // Declared larger than an object may be: nothing buffered, the request asks the node
        // itself and streams its answer.
        for _ in 0..2 {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(data(&"y".repeat(20_000))).expect("send");
            drop(tx);
            let len = vec![("content-length", "20000".to_string())];
            script.send((200, len, rx)).expect("script");
        }
        let (r, _) = cache
            .serve(ask("/hls/big.ts", &h, &c), fetch.clone())
            .await
            .expect("r");
        let body = r.into_body().collect().await.expect("b").to_bytes();
        assert_eq!(body.len(), 20_000);
        assert_eq!(c.bypass.load(Ordering::SeqCst), 1);
        // Undeclared and growing past the bound: cut, never buffered without bound.
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(data(&"z".repeat(20_000))).expect("send");
        drop(tx);
        script.send((200, vec![], rx)).expect("script");
        let (r, _) = cache
            .serve(ask("/hls/big2.ts", &h, &c), fetch.clone())
            .await
            .expect("r");
        assert!(r.into_body().collect().await.is_err());
        assert!(cache.snapshot()["bytes"].as_u64().expect("n") <= 64 * 1024);
    }
}
