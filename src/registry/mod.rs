//! The stream registry: which node holds which stream.
//!
//! The request path only *asks* ([`Registry::resolve`]), and the answer comes from memory without
//! waiting on I/O, so a slow or absent shared store never stalls viewers. Writers (the config
//! file at start, the REST API, media-server hooks and node heartbeats) change the registry from
//! the side through the async write methods; a write may have to reach Redis first, and a failed
//! write leaves the local answer untouched.
//!
//! Two backends: [`MemoryRegistry`] (one gateway, the default) and [`RedisRegistry`] (several
//! gateways sharing one Redis; each keeps a `MemoryRegistry` snapshot that lookups read and
//! follows a change log, so a change costs each gateway one entry, not a re-read).
//!
//! A stream is known by its key: the stream name, or `app/stream` with `[registry] key =
//! "app/stream"` (routes then capture `{app}`). With `[registry] stream_lease`, records expire
//! unless renewed (node heartbeat, renew hook, new announcement), so a media server that crashed
//! without an unpublish hook does not keep its streams registered.

pub mod hooks;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{NodeSettings, RegistryBackend, Settings};
use crate::upstream_path::BaseUrl;

pub use memory::MemoryRegistry;
pub use redis::RedisRegistry;

/// A media node the gateway can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Stable id, as in `[[nodes]] id` or a hook's `?node=`.
    pub id: String,
    /// Where the node is reached.
    pub url: BaseUrl,
    /// When the node stops counting as up unless it heartbeats again (`None`: never expires,
    /// e.g. nodes from the config file).
    pub expires: Option<Instant>,
}

impl Node {
    /// Whether the node counts as up at `now`.
    pub fn is_up(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// The answer to "where is this stream?".
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Nodes holding the stream, up ones only, preferred first.
    Found(Vec<Arc<Node>>),
    /// The stream is known, but every node holding it is down.
    AllDown,
    /// No node holds the stream.
    NotFound,
}

/// One stream as listed by the API: every node holding it, preferred first, up or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub name: String,
    pub nodes: Vec<String>,
}

/// Why a registry write failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    #[error("registry is full ({0} entries)")]
    Full(usize),
    #[error("registry store unavailable: {0}")]
    Unavailable(String),
}

/// What a registry write returns: boxed so `dyn Registry` stays usable (the gateway and the
/// admin API hold an `Arc<dyn Registry>` chosen from config at start).
pub type WriteFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RegistryError>> + Send + 'a>>;

/// What every backend (embedded, Redis) provides.
pub trait Registry: Send + Sync + 'static {
    /// Nodes holding `stream`; answered from memory, never blocks on I/O.
    fn resolve(&self, stream: &str) -> Lookup;
    /// A node by id, up or not.
    fn node(&self, id: &str) -> Option<Arc<Node>>;
    /// Every known node (for Location rewriting, listings and the dashboard).
    fn nodes(&self) -> Vec<Arc<Node>>;
    /// Every known stream with the nodes holding it, sorted by name.
    fn streams(&self) -> Vec<StreamEntry>;
    /// One stream with the nodes holding it (up or not), looked up directly: never a listing.
    fn stream(&self, name: &str) -> Option<StreamEntry>;
    /// Adds a node or refreshes it (a heartbeat): it counts as up for `ttl` from now, or for
    /// ever with `None`.
    fn put_node<'a>(
        &'a self,
        id: &'a str,
        url: &'a BaseUrl,
        ttl: Option<Duration>,
    ) -> WriteFuture<'a, ()>;
    /// Forgets a node and every stream record pointing at it; `true` if it was known.
    fn remove_node<'a>(&'a self, id: &'a str) -> WriteFuture<'a, bool>;
    /// Records that `node` holds `stream` (idempotent; the first node announced stays preferred).
    fn announce<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, ()>;
    /// Records that `node` holds `stream` without a lease, whatever `stream_lease` says: a
    /// record from the config file (a hot reload adds it), which never expires.
    fn announce_fixed<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, ()>;
    /// Renews the lease of the record `stream` on `node` (a media server's periodic hook);
    /// `false` if there is no live record to renew (a renewal never creates one).
    fn renew<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, bool>;
    /// Records that `node` no longer holds `stream`; `true` if it did.
    fn withdraw<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, bool>;
    /// Whether the shared store (Redis) is reachable and in sync; `None` for a backend without
    /// one (the embedded registry).
    fn store_connected(&self) -> Option<bool> {
        None
    }
    /// The moment node liveness is judged at, as routing does: now, except while the Redis
    /// backend cannot reach Redis (then the moment it was lost). Listings use it so the admin
    /// API reports the nodes routing still uses.
    fn now(&self) -> Instant {
        memory::now()
    }
}

/// A base URL as text (`scheme://authority/prefix`), the form stored in Redis and listed by the
/// API.
pub fn url_text(u: &BaseUrl) -> String {
    format!("{}{}", u.origin(), u.prefix)
}

/// Loads the static `[[nodes]]` and their `streams` into `reg`. They never expire.
pub fn load_static(reg: &MemoryRegistry, nodes: &[NodeSettings]) -> Result<(), RegistryError> {
    for n in nodes {
        reg.put_node_now(&n.id, &n.url, None)?;
        for s in &n.streams {
            reg.announce_now(s, &n.id)?;
        }
    }
    Ok(())
}

/// Builds the backend `settings` ask for, with the static nodes loaded. The Redis backend starts
/// its background sync task here; it stops when `shutdown` is cancelled. Start-up does not wait
/// for Redis: a gateway whose Redis is down serves its static config and catches up later.
pub fn build(
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<Arc<dyn Registry>, RegistryError> {
    match &settings.registry.backend {
        RegistryBackend::Memory => {
            let reg = MemoryRegistry::default().with_lease(settings.registry.stream_lease);
            load_static(&reg, &settings.nodes)?;
            Ok(Arc::new(reg))
        }
        RegistryBackend::Redis {
            url,
            key_prefix,
            resync_interval,
        } => {
            let reg = RedisRegistry::start(
                redis::RedisOptions {
                    url: url.clone(),
                    key_prefix: key_prefix.clone(),
                    resync_interval: *resync_interval,
                    stream_lease: settings.registry.stream_lease,
                    statics: settings.nodes.clone(),
                },
                shutdown,
            )?;
            Ok(reg)
        }
    }
}
