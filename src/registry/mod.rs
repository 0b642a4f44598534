//! The stream registry: which node holds which stream.
//!
//! The request path only *asks* ([`Registry::resolve`]), and the answer comes from memory without
//! waiting on I/O, so a slow or absent shared store never stalls viewers; writers (config today;
//! the REST API, media-server hooks, heartbeats and Redis next) change the registry from the side.

pub mod memory;

use std::sync::Arc;
use std::time::Instant;

use crate::upstream_path::BaseUrl;

pub use memory::MemoryRegistry;

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

/// What every backend (embedded, Redis) provides.
pub trait Registry: Send + Sync + 'static {
    /// Nodes holding `stream`; answered from memory, never blocks on I/O.
    fn resolve(&self, stream: &str) -> Lookup;
    /// A node by id, up or not.
    fn node(&self, id: &str) -> Option<Arc<Node>>;
    /// Every known node (for Location rewriting, listings and the dashboard).
    fn nodes(&self) -> Vec<Arc<Node>>;
    /// Adds or refreshes a node.
    fn put_node(&self, node: Node) -> Result<(), RegistryError>;
    /// Records that `node` holds `stream`.
    fn announce(&self, stream: &str, node: &str) -> Result<(), RegistryError>;
    /// Records that `node` no longer holds `stream`; `true` if it did.
    fn withdraw(&self, stream: &str, node: &str) -> bool;
}

/// Loads the static `[[nodes]]` and their `streams` into `reg`.
pub fn load_static(
    reg: &dyn Registry,
    nodes: &[crate::config::NodeSettings],
) -> Result<(), RegistryError> {
    for n in nodes {
        reg.put_node(Node { id: n.id.clone(), url: n.url.clone(), expires: None })?;
        for s in &n.streams {
            reg.announce(s, &n.id)?;
        }
    }
    Ok(())
}
