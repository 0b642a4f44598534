//! The auth hook (`auth = "hook"`): an external HTTP service decides whether a viewer may watch.
//!
//! For each request the gateway POSTs a small JSON document to `[auth.hook] url` (our own shape,
//! or SRS `on_play`'s) and reads the answer: `json`: any 2xx allows; `srs`: only 200 with body
//! `0` or `{"code":0}` allows ([`crate::registry::hooks::srs_accepts`]).
//!
//! Around the call:
//! - **cache**: a decision is remembered per (credential, stream — or path when the route has
//!   no `{stream}`) for `cache_ttl` (allow) or `deny_ttl` (deny, or a call that failed), so an
//!   HLS player's segment requests cost one call, not one each. Keys are SHA-256 digests: the
//!   map holds no credentials and every key has the same size. At most `cache_size` entries;
//!   past it the oldest goes first ([`Cache`]).
//! - **single-flight**: identical checks that arrive while one is being asked wait for its
//!   answer ([`watch`] channel per in-flight key) instead of calling again. The call runs in a
//!   task of its own, so a viewer that goes away does not cancel the others' answer. The
//!   in-flight map is bounded too ([`INFLIGHT_PER_SLOT`] × `max_concurrent`).
//! - **bounds**: at most `max_concurrent` calls at once (a semaphore); one check, including the
//!   wait for a slot, the call and reading the (size-bounded) answer, lasts at most `timeout`.
//!   A check that cannot be answered (down, timeout, over capacity, garbage) refuses, unless
//!   `fail_open = true`.
//!
//! The hook is not a media node: it goes through the one transport ([`Transport`]) but its
//! failures are not recorded as any node's health.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{header, HeaderValue, Request};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::config::{HookFormat, HookSettings};
use crate::error::GatewayError;
use crate::registry::hooks::srs_accepts;
use crate::registry::Node;
use crate::upstream::Transport;

/// Largest hook answer read; a longer one is a failed call (`fail_open` decides).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// In-flight distinct checks allowed per call slot (`max_concurrent`): beyond that the hook is
/// hopelessly behind, and a new check fails at once instead of queueing without bound.
pub const INFLIGHT_PER_SLOT: usize = 8;

/// What the hook is asked about one request.
#[derive(Debug, Clone, Default)]
pub struct HookQuery {
    /// The route's literal path prefix (`/hls/` for `/hls/{stream}/{*rest}`).
    pub route: String,
    /// The `{stream}` capture, when the route has one.
    pub stream: Option<String>,
    /// The request path (percent-encoded, as in the URL).
    pub path: String,
    pub client_ip: Option<IpAddr>,
    /// The query parameters without credentials (decoded; the first of repeated keys).
    pub params: Map<String, Value>,
    /// The raw query without credentials, for SRS's `param`.
    pub query: Option<String>,
    /// The viewer's credential (`?token=` or `Authorization: Bearer`).
    pub token: Option<String>,
    /// `Referer`, for SRS's `page_url`.
    pub referer: Option<String>,
    /// Our request id, for SRS's `client_id` and the hook's logs.
    pub request_id: String,
}

impl HookQuery {
    /// The cache and single-flight key: the credential (or, without one, the client address)
    /// and the stream (or, without one, the path), hashed.
    fn key(&self) -> Key {
        let mut h = Sha256::new();
        match &self.token {
            Some(t) => {
                h.update(b"t");
                h.update((t.len() as u64).to_be_bytes());
                h.update(t.as_bytes());
            }
            None => {
                h.update(b"a");
                let ip = self.client_ip.map(|i| i.to_canonical().to_string());
                h.update(ip.unwrap_or_default().as_bytes());
            }
        }
        match &self.stream {
            Some(s) => {
                h.update(b"\ns");
                h.update(s.as_bytes());
            }
            None => {
                h.update(b"\np");
                h.update(self.path.as_bytes());
            }
        }
        h.finalize().into()
    }

    fn client_ip_text(&self) -> String {
        self.client_ip
            .map(|i| i.to_canonical().to_string())
            .unwrap_or_default()
    }

    /// The body for `format = "json"`.
    pub fn json_body(&self) -> Value {
        json!({
            "action": "play",
            "route": self.route,
            "stream": self.stream,
            "path": self.path,
            "client_ip": self.client_ip_text(),
            "params": self.params,
            "token": self.token,
        })
    }

    /// The body for `format = "srs"`: SRS's `on_play`. `app` is the path up to the stream (or
    /// the first segment); `param` is the viewer's query as SRS forwards it, with the credential
    /// as `token=` (wherever the viewer put it) so an existing SRS hook server reads it as usual.
    pub fn srs_body(&self) -> Value {
        let mut param = String::new();
        if let Some(t) = &self.token {
            param.push_str("token=");
            param.extend(form_urlencoded::byte_serialize(t.as_bytes()));
        }
        if let Some(q) = &self.query {
            if !param.is_empty() {
                param.push('&');
            }
            param.push_str(q);
        }
        if !param.is_empty() {
            param.insert(0, '?');
        }
        let trimmed = self.path.trim_start_matches('/');
        let app = match &self.stream {
            Some(s) => match self.path.find(&format!("/{s}")) {
                Some(i) if i > 0 => self.path[1..i].to_string(),
                _ => trimmed.split('/').next().unwrap_or("").to_string(),
            },
            None => trimmed.split('/').next().unwrap_or("").to_string(),
        };
        let stream = self.stream.clone().unwrap_or_else(|| {
            trimmed
                .rsplit('/')
                .next()
                .unwrap_or("")
                .split('.')
                .next()
                .unwrap_or("")
                .to_string()
        });
        json!({
            "action": "on_play",
            "client_id": self.request_id,
            "ip": self.client_ip_text(),
            "vhost": "__defaultVhost__",
            "app": app,
            "stream": stream,
            "param": param,
            "pageUrl": self.referer.clone().unwrap_or_default(),
            "page_url": self.referer.clone().unwrap_or_default(),
        })
    }
}

type Key = [u8; 32];

/// The outcome of one call: `Ok(allowed)`, or why the hook gave no usable answer.
type CallResult = Result<bool, String>;
type CallFuture = Pin<Box<dyn Future<Output = CallResult> + Send>>;
/// Makes the call (HTTP in production, a counter in unit tests).
type Caller = Arc<dyn Fn(Arc<HookQuery>) -> CallFuture + Send + Sync>;

/// The remembered decisions, bounded; the oldest entry goes first when full.
struct Cache {
    cap: usize,
    /// Key → (allowed, expiry, insertion number).
    map: HashMap<Key, (bool, Instant, u64)>,
    /// Insertion number → key: the oldest first.
    order: BTreeMap<u64, Key>,
    next: u64,
}

impl Cache {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }

    fn get(&mut self, key: &Key, now: Instant) -> Option<bool> {
        let &(allowed, expires, seq) = self.map.get(key)?;
        if now < expires {
            return Some(allowed);
        }
        self.map.remove(key);
        self.order.remove(&seq);
        None
    }

    fn insert(&mut self, key: Key, allowed: bool, expires: Instant) {
        if self.cap == 0 {
            return;
        }
        if let Some((_, _, seq)) = self.map.remove(&key) {
            self.order.remove(&seq);
        }
        while self.map.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
        self.next += 1;
        self.map.insert(key, (allowed, expires, self.next));
        self.order.insert(self.next, key);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

struct Inner {
    timeout: Duration,
    cache_ttl: Duration,
    deny_ttl: Duration,
    fail_open: bool,
    max_inflight: usize,
    caller: Caller,
    /// Call slots: `max_concurrent`.
    slots: Semaphore,
    cache: Mutex<Cache>,
    /// Checks being asked now, by key; each waiter holds a receiver. Lock order: `inflight`
    /// before `cache`.
    inflight: Mutex<HashMap<Key, watch::Receiver<Option<bool>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The auth hook client: cache, single-flight and bounds around the call.
#[derive(Clone)]
pub struct AuthHook {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthHook")
            .field("timeout", &self.inner.timeout)
            .field("fail_open", &self.inner.fail_open)
            .finish_non_exhaustive()
    }
}

impl AuthHook {
    /// The hook at `s.url`, reached through `transport`.
    pub fn new(s: &HookSettings, transport: Transport) -> Self {
        // The id cannot be a node's (node ids have no ':' or '/'), and the transport does not
        // record this host's health anyway.
        let host = Arc::new(Node {
            id: format!("auth-hook:{}", s.url.origin()),
            url: s.url.clone(),
            expires: None,
        });
        let uri = if s.url.prefix.is_empty() {
            s.url.join("/", None)
        } else {
            s.url.join("", None)
        };
        let format = s.format;
        let caller: Caller = Arc::new(move |q: Arc<HookQuery>| {
            let (transport, host, uri) = (transport.clone(), host.clone(), uri.clone());
            Box::pin(async move { call_http(&transport, &host, &uri, format, &q).await })
        });
        Self::with_caller(s, caller)
    }

    fn with_caller(s: &HookSettings, caller: Caller) -> Self {
        Self {
            inner: Arc::new(Inner {
                timeout: s.timeout,
                cache_ttl: s.cache_ttl,
                deny_ttl: s.deny_ttl,
                fail_open: s.fail_open,
                max_inflight: s.max_concurrent.saturating_mul(INFLIGHT_PER_SLOT),
                caller,
                slots: Semaphore::new(s.max_concurrent),
                cache: Mutex::new(Cache::new(s.cache_size)),
                inflight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Ok when the hook allows `q`. A refusal is 401 `unauthorized` when the viewer presented
    /// no credential at all (a login may help), 403 `forbidden` otherwise.
    pub async fn check(&self, q: HookQuery) -> Result<(), GatewayError> {
        let anonymous = q.token.is_none();
        if self.decide(q).await {
            Ok(())
        } else if anonymous {
            Err(GatewayError::Unauthorized)
        } else {
            Err(GatewayError::Forbidden(
                "the auth service did not allow this request",
            ))
        }
    }

    /// The decision for `q`: cached, shared with an identical check in flight, or asked.
    async fn decide(&self, q: HookQuery) -> bool {
        let inner = &self.inner;
        let key = q.key();
        let mut rx = {
            let mut inflight = lock(&inner.inflight);
            if let Some(allowed) = lock(&inner.cache).get(&key, Instant::now()) {
                return allowed;
            }
            match inflight.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    if inflight.len() >= inner.max_inflight {
                        tracing::warn!(
                            in_flight = inflight.len(),
                            fail_open = inner.fail_open,
                            "auth hook: too many checks in flight"
                        );
                        return inner.fail_open;
                    }
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key, rx.clone());
                    tokio::spawn(ask(self.inner.clone(), key, Arc::new(q), tx));
                    rx
                }
            }
        };
        // The task answers within `timeout`; the extra second only guards against a bug.
        let wait = rx.wait_for(Option::is_some);
        let allowed = match tokio::time::timeout(inner.timeout + Duration::from_secs(1), wait).await
        {
            Ok(Ok(v)) => v.unwrap_or(inner.fail_open),
            _ => inner.fail_open,
        };
        allowed
    }

    /// Decisions remembered now (for tests and metrics).
    pub fn cached(&self) -> usize {
        lock(&self.inner.cache).len()
    }
}

/// Removes an in-flight entry if its task ends without answering (a panic in the caller);
/// disarmed once the answer is in, so it never removes a later check's entry for the key.
struct InflightGuard {
    inner: Arc<Inner>,
    key: Key,
    armed: bool,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.inner.inflight).remove(&self.key);
        }
    }
}

/// One call to the hook, in its own task; its answer goes to the cache and every waiter.
async fn ask(inner: Arc<Inner>, key: Key, q: Arc<HookQuery>, tx: watch::Sender<Option<bool>>) {
    let mut guard = InflightGuard {
        inner: inner.clone(),
        key,
        armed: true,
    };
    let outcome = tokio::time::timeout(inner.timeout, async {
        let _slot = inner
            .slots
            .acquire()
            .await
            .map_err(|_| "closed".to_string())?;
        (inner.caller)(q.clone()).await
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "no answer within {:?} (call slots busy or hook slow)",
            inner.timeout
        ))
    });
    let (allowed, ttl) = match outcome {
        Ok(true) => (true, inner.cache_ttl),
        Ok(false) => (false, inner.deny_ttl),
        Err(why) => {
            tracing::warn!(error = %why, fail_open = inner.fail_open, request_id = %q.request_id, "auth hook failed");
            (inner.fail_open, inner.deny_ttl)
        }
    };
    {
        let mut inflight = lock(&inner.inflight);
        lock(&inner.cache).insert(key, allowed, Instant::now() + ttl);
        inflight.remove(&key);
        guard.armed = false;
    }
    let _ = tx.send(Some(allowed));
}

/// POSTs `q` to the hook and reads its verdict.
async fn call_http(
    transport: &Transport,
    host: &Node,
    uri: &str,
    format: HookFormat,
    q: &HookQuery,
) -> CallResult {
    let body = match format {
        HookFormat::Json => q.json_body(),
        HookFormat::Srs => q.srs_body(),
    };
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let mut req = Request::post(uri)
        .body(crate::body::full(body))
        .map_err(|e| format!("bad hook request: {e}"))?;
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static("streamgate-auth-hook"),
    );
    if let Ok(v) = HeaderValue::from_str(&q.request_id) {
        h.insert(crate::request_id::HEADER, v);
    }
    let resp = transport
        .send_unrecorded(host, req)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read the (bounded) answer in full: SRS needs it, and a finished body lets the connection
    // go back to the pool.
    let answer = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("hook answer unreadable or over {MAX_ANSWER_BYTES} bytes: {e}"))?
        .to_bytes();
    Ok(match format {
        HookFormat::Json => status.is_success(),
        HookFormat::Srs => srs_accepts(status.as_u16(), &answer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream_path::BaseUrl;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn settings() -> HookSettings {
        HookSettings {
            url: BaseUrl::parse("http://127.0.0.1:9/check").expect("url"),
            format: HookFormat::Json,
            timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(30),
            deny_ttl: Duration::from_secs(5),
            cache_size: 100,
            max_concurrent: 64,
            fail_open: false,
        }
    }

    /// A hook that answers after `delay`: allow unless the token is "bad" (or errors with
    /// token "err"); counts its calls.
    fn counting(s: &HookSettings, delay: Duration) -> (AuthHook, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let caller: Caller = Arc::new(move |q: Arc<HookQuery>| {
            c.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                match q.token.as_deref() {
                    Some("bad") => Ok(false),
                    Some("err") => Err("boom".to_string()),
                    _ => Ok(true),
                }
            })
        });
        (AuthHook::with_caller(s, caller), calls)
    }

    fn q(token: &str, stream: &str) -> HookQuery {
        HookQuery {
            stream: Some(stream.into()),
            path: format!("/hls/{stream}/seg.ts"),
            token: Some(token.into()),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn decisions_are_cached_for_their_ttl() {
        let (hook, calls) = counting(&settings(), Duration::ZERO);
        for _ in 0..25 {
            assert!(hook.check(q("good", "cam1")).await.is_ok());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Another stream, another credential: their own calls.
        assert!(hook.check(q("good", "cam2")).await.is_ok());
        assert!(matches!(
            hook.check(q("bad", "cam1")).await,
            Err(GatewayError::Forbidden(_))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // The denial is remembered for deny_ttl (5s), the allow for cache_ttl (30s).
        tokio::time::advance(Duration::from_millis(4900)).await;
        assert!(hook.check(q("bad", "cam1")).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(hook.check(q("bad", "cam1")).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4, "denial expired after 5s");
        tokio::time::advance(Duration::from_millis(24_800)).await; // t = 29.9s
        assert!(hook.check(q("good", "cam1")).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        tokio::time::advance(Duration::from_millis(200)).await; // t = 30.1s
        assert!(hook.check(q("good", "cam1")).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 5, "allow expired after 30s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded_and_drops_the_oldest() {
        let mut s = settings();
        s.cache_size = 3;
        let (hook, calls) = counting(&s, Duration::ZERO);
        for stream in ["a", "b", "c"] {
            assert!(hook.check(q("good", stream)).await.is_ok());
        }
        assert_eq!((hook.cached(), calls.load(Ordering::SeqCst)), (3, 3));
        // At the limit: "d" evicts "a", the oldest.
        assert!(hook.check(q("good", "d")).await.is_ok());
        assert_eq!((hook.cached(), calls.load(Ordering::SeqCst)), (3, 4));
        for stream in ["b", "c", "d"] {
            assert!(hook.check(q("good", stream)).await.is_ok());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4, "b, c, d still cached");
        assert!(hook.check(q("good", "a")).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 5, "a was evicted");
        assert_eq!(hook.cached(), 3);
        // Many more keys than room: the map never grows past the limit.
        for i in 0..50 {
            assert!(hook.check(q("good", &format!("s{i}"))).await.is_ok());
            assert!(hook.cached() <= 3);
        }
        // No cache at all.
        s.cache_size = 0;
        let (hook, calls) = counting(&s, Duration::ZERO);
        for _ in 0..3 {
            assert!(hook.check(q("good", "a")).await.is_ok());
        }
        assert_eq!((hook.cached(), calls.load(Ordering::SeqCst)), (0, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn identical_concurrent_checks_share_one_call() {
        let (hook, calls) = counting(&settings(), Duration::from_millis(500));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let h = hook.clone();
            tasks.push(tokio::spawn(
                async move { h.check(q("good", "cam1")).await },
            ));
        }
        let mut other = Vec::new();
        for _ in 0..5 {
            let h = hook.clone();
            other.push(tokio::spawn(async move { h.check(q("bad", "cam1")).await }));
        }
        for t in tasks {
            assert!(t.await.expect("task").is_ok());
        }
        for t in other {
            assert!(t.await.expect("task").is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(lock(&hook.inner.inflight).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_viewer_leaving_does_not_cancel_the_shared_call() {
        let (hook, calls) = counting(&settings(), Duration::from_millis(500));
        let h = hook.clone();
        let first = tokio::spawn(async move { h.check(q("good", "cam1")).await });
        tokio::time::advance(Duration::from_millis(100)).await;
        first.abort();
        assert!(hook.check(q("good", "cam1")).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_and_timeouts_follow_fail_open() {
        let mut s = settings();
        s.timeout = Duration::from_millis(200);
        // A hook slower than the timeout, and one that errors: refused...
        let (slow, _) = counting(&s, Duration::from_secs(5));
        let start = Instant::now();
        assert!(matches!(
            slow.check(q("good", "cam1")).await,
            Err(GatewayError::Forbidden(_))
        ));
        assert!(start.elapsed() <= Duration::from_millis(250));
        let (failing, calls) = counting(&s, Duration::ZERO);
        assert!(failing.check(q("err", "cam1")).await.is_err());
        // ...and the failure is remembered only for deny_ttl.
        assert!(failing.check(q("err", "cam1")).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(failing.check(q("err", "cam1")).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Without a credential, a refusal is 401.
        let mut anon = q("x", "cam1");
        anon.token = None;
        assert!(matches!(
            slow.check(anon).await,
            Err(GatewayError::Unauthorized)
        ));
        // ...allowed with fail_open.
        s.fail_open = true;
        let (slow, _) = counting(&s, Duration::from_secs(5));
        assert!(slow.check(q("good", "cam1")).await.is_ok());
        let (failing, _) = counting(&s, Duration::ZERO);
        assert!(failing.check(q("err", "cam1")).await.is_ok());
        // A real "no" stays a no.
        assert!(failing.check(q("bad", "cam1")).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn call_slots_are_bounded() {
        let mut s = settings();
        s.max_concurrent = 2;
        s.timeout = Duration::from_millis(300);
        let (hook, calls) = counting(&s, Duration::from_millis(200));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let h = hook.clone();
            tasks.push(tokio::spawn(async move {
                h.check(q("good", &format!("s{i}"))).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.expect("task").is_ok() {
                ok += 1;
            }
        }
        // Two calls fit at once; the other two waited 200ms for a slot and then had 100ms
        // left for a 200ms call: refused (fail closed).
        assert_eq!(ok, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // The in-flight map is bounded: max_concurrent × INFLIGHT_PER_SLOT distinct checks.
        let (hook, calls) = counting(&s, Duration::from_secs(10));
        let mut tasks = Vec::new();
        for i in 0..(2 * INFLIGHT_PER_SLOT + 3) {
            let h = hook.clone();
            tasks.push(tokio::spawn(async move {
                h.check(q("good", &format!("s{i}"))).await
            }));
        }
        tokio::task::yield_now().await;
        for t in tasks {
            assert!(t.await.expect("task").is_err());
        }
        assert!(calls.load(Ordering::SeqCst) <= 2 * INFLIGHT_PER_SLOT);
    }

    #[test]
    fn bodies() {
        let mut params = Map::new();
        params.insert("quality".into(), json!("hd"));
        let q = HookQuery {
            route: "/live/".into(),
            stream: Some("cam1".into()),
            path: "/live/cam1.flv".into(),
            client_ip: Some("::ffff:10.0.0.7".parse().expect("ip")),
            params,
            query: Some("quality=hd".into()),
            token: Some("t k".into()),
            referer: Some("https://player.example/".into()),
            request_id: "rid1".into(),
        };
        assert_eq!(
            q.json_body(),
            json!({"action":"play","route":"/live/","stream":"cam1","path":"/live/cam1.flv",
                   "client_ip":"10.0.0.7","params":{"quality":"hd"},"token":"t k"})
        );
        let srs = q.srs_body();
        assert_eq!(srs["action"], "on_play");
        assert_eq!(srs["app"], "live");
        assert_eq!(srs["stream"], "cam1");
        assert_eq!(srs["param"], "?token=t+k&quality=hd");
        assert_eq!(srs["ip"], "10.0.0.7");
        assert_eq!(srs["client_id"], "rid1");
        assert_eq!(srs["page_url"], "https://player.example/");
        // Different credentials or streams never share a key; anonymous viewers are keyed by
        // their address.
        let mut other = q.clone();
        other.token = Some("t k2".into());
        assert_ne!(q.key(), other.key());
        other.token = None;
        let mut other_ip = other.clone();
        other_ip.client_ip = Some("10.0.0.8".parse().expect("ip"));
        assert_ne!(other.key(), other_ip.key());
        let mut seg = q.clone();
        seg.path = "/live/cam1/seg2.ts".into();
        assert_eq!(q.key(), seg.key(), "same stream, same key");
    }
}
